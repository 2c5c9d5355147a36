"""Workflow commands: escaping as @actions/core does, heredoc outputs, stop-commands, masks, no-ops outside Actions."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from cdkit.config import Stage
from cdkit.report.actions import (
    Actions,
    ActionsReporter,
    escape_data,
    escape_property,
    format_command,
    md_code,
    md_escape,
    summary_table,
)
from cdkit.runner import FAILED, PASSED, SKIPPED, StageResult


def actions_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "out").write_text("")
    (tmp_path / "summary").write_text("")
    return {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp_path / "out"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}


def parse_output_file(text: str) -> dict[str, str]:
    """Parse $GITHUB_OUTPUT the way the runner does (name<<DELIM ... DELIM, or name=value)."""
    lines = text.split("\n")
    values: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            values[name] = "\n".join(lines[i + 1:end])
            i = end + 1
        else:
            name, value = line.split("=", 1)
            values[name] = value
            i += 1
    return values


def test_escaping_matches_actions_core() -> None:
    assert escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    assert format_command("error", "bad\n::set-output name=x::y", {"title": "t:1,2", "file": None}) == \
        "::error title=t%3A1%2C2::bad%0A::set-output name=x::y"


def test_annotation_is_always_one_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    Actions(actions_env(tmp_path), stream).annotate("error", "line1\n::add-mask::x", title="a,b:c")
    assert stream.getvalue() == "::error title=a%2Cb%3Ac::line1%0A::add-mask::x\n"
    assert stream.getvalue().count("\n") == 1


def test_outputs_use_a_random_heredoc_delimiter(tmp_path: Path) -> None:
    env = actions_env(tmp_path)
    actions = Actions(env, io.StringIO())
    actions.set_output("stages", 'line one\nEOF\nresult<<EOF\ndeploy=true')
    actions.set_output("deploy", "false")
    text = Path(env["GITHUB_OUTPUT"]).read_text()
    delimiters = re.findall(r"^\w+<<(ghadelimiter_[0-9a-f]{32})$", text, re.M)
    assert len(delimiters) == 2 and delimiters[0] != delimiters[1]
    assert parse_output_file(text) == {"stages": "line one\nEOF\nresult<<EOF\ndeploy=true", "deploy": "false"}


def test_summary_is_appended(tmp_path: Path) -> None:
    env = actions_env(tmp_path)
    actions = Actions(env, io.StringIO())
    actions.append_summary("# one")
    actions.append_summary("two\n")
    assert Path(env["GITHUB_STEP_SUMMARY"]).read_text() == "# one\ntwo\n"


def test_everything_is_a_no_op_outside_actions(tmp_path: Path) -> None:
    env = actions_env(tmp_path)
    env["GITHUB_ACTIONS"] = "false"
    stream = io.StringIO()
    actions = Actions(env, stream)
    actions.add_mask("s3cr3t-value")
    actions.annotate("error", "boom")
    actions.set_output("deploy", "true")
    actions.append_summary("# hi")
    with actions.group("g"), actions.stop_commands():
        pass
    assert stream.getvalue() == ""
    assert Path(env["GITHUB_OUTPUT"]).read_text() == ""
    assert Path(env["GITHUB_STEP_SUMMARY"]).read_text() == ""


def test_masks_whole_value_and_each_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    actions = Actions(actions_env(tmp_path), stream)
    actions.add_mask("")
    actions.add_mask("first-line\nsecond-line")
    lines = set(stream.getvalue().splitlines())
    assert lines == {"::add-mask::first-line%0Asecond-line", "::add-mask::first-line", "::add-mask::second-line"}


def test_untrusted_text_is_fenced_by_a_fresh_random_token(tmp_path: Path) -> None:
    stream = io.StringIO()
    actions = Actions(actions_env(tmp_path), stream)
    evil = "::set-output name=deploy::true\n::add-mask::x\n::endgroup::"
    actions.print_untrusted(evil)
    actions.print_untrusted(evil)
    lines = stream.getvalue().splitlines()
    tokens = [line.split("::")[2] for line in lines if line.startswith("::stop-commands::")]
    assert len(tokens) == 2 and tokens[0] != tokens[1] and all(re.fullmatch(r"[0-9a-f]{32}", t) for t in tokens)
    for token in tokens:
        start, end = lines.index(f"::stop-commands::{token}"), lines.index(f"::{token}::")
        assert lines[start + 1:end] == evil.splitlines()


def test_markdown_escaping_leaves_no_html_links_or_mentions() -> None:
    text = md_escape("<img src=x onerror=alert(1)> [click](http://evil) @octocat |a|\n# title")
    assert "<" not in text.replace("\\<", "") and "](" not in text and "\n" not in text
    assert "\\@octocat" in text and "\\|a\\|" in text
    assert md_code("a`b|c\nd") == "`aˋb¦c d`"


def test_summary_table_rows(tmp_path: Path) -> None:
    results = [StageResult("lint", PASSED, started_at=1.0, finished_at=2.5),
               StageResult("test", FAILED, "exit code 1 <b>", exit_code=1, started_at=1.0, finished_at=4.0),
               StageResult("build", SKIPPED, "needs 'test', which failed")]
    table = summary_table(results, {"test": "https://github.com/o/r/runs/1", "lint": "javascript:alert(1)"})
    assert table.splitlines() == [
        "| Stage | Result | Duration | Details |",
        "|---|---|---|---|",
        "| `lint` | ✅ passed | 1.5s |  |",
        "| `test` | ❌ failed | 3.0s | exit code 1 \\<b\\> [details](https://github.com/o/r/runs/1) |",
        "| `build` | ⏭️ skipped |  | needs \\'test\\'\\, which failed |",
    ]


def _stage(name: str) -> Stage:
    return Stage(name=name, run="true")


def test_reporter_groups_stages_and_annotates_failures(tmp_path: Path) -> None:
    stream = io.StringIO()
    reporter = ActionsReporter(Actions(actions_env(tmp_path), stream))
    lint, test = _stage("lint"), _stage("test")
    log = tmp_path / "test.log"
    log.write_text("parallel output\n::set-output name=deploy::true\n")
    reporter.stage_started(lint, 1.0)
    reporter.stage_started(test, 1.0)  # runs beside lint: printed from its log once lint's group closes
    reporter.stage_output(lint, b"::add-mask::oops\n")
    reporter.stage_output(test, b"not live\n")
    reporter.stage_finished(test, StageResult("test", FAILED, "exit code 2", 2, 1.0, 2.0, str(log)))
    reporter.stage_finished(lint, StageResult("lint", PASSED, "", 0, 1.0, 3.0))
    out = stream.getvalue().splitlines()
    assert out[0] == "::group::lint"
    token = out[1].removeprefix("::stop-commands::")
    assert out[2:5] == ["::add-mask::oops", f"::{token}::", "cdkit: lint passed in 2.00s"]
    assert out[5:7] == ["::endgroup::", "::group::test"]
    token2 = out[7].removeprefix("::stop-commands::")
    assert token2 != token
    assert out[8:11] == ["parallel output", "::set-output name=deploy::true", f"::{token2}::"]
    assert out[11:] == ["cdkit: test failed in 1.00s: exit code 2", "::endgroup::",
                        "::error title=cdkit%3A test failed::stage test failed: exit code 2"]
    assert "not live" not in stream.getvalue()


@pytest.mark.parametrize("name", ["a\nb", "a\rb"])
def test_output_names_that_could_split_a_record_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        Actions(actions_env(tmp_path), io.StringIO()).set_output(name, "v")
