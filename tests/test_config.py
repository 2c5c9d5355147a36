"""`.cdkit.yml` loading: every case of RELIABILITY §A, with its exact message and position."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from cdkit.config import SCHEMA_PATH, ConfigError, load, load_text, parse_duration
from tests.helpers import cdkit, commit, config

VALID = config("""
    version: 1
    stages:
      - name: lint
        run: ruff check .
      - name: test
        run: pytest
        timeout: 10m
""")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, ".cdkit.yml")
    return info.value.messages


def test_valid_pipeline_defaults() -> None:
    pipeline = load_text(VALID)
    lint, test = pipeline.stages
    assert lint.on == ("ci",) and lint.needs == () and lint.timeout == 1800
    assert test.needs == ("lint",), "each stage needs the one before it by default"
    assert test.timeout == 600
    assert pipeline.release_branch == "main" and pipeline.mode == "delivery"


def test_empty_needs_means_none() -> None:
    pipeline = load_text(VALID.replace("run: pytest", "run: pytest\n    needs: []"))
    assert pipeline.stages[1].needs == ()


def test_invalid_yaml_points_at_line_and_column() -> None:
    assert errors_of("version: 1\nstages:\n  - name: [a\n") == [
        ".cdkit.yml:3:11: invalid YAML: did not find expected ',' or ']': a flow sequence starts here and is "
        "never closed\n      - name: [a\n              ^"
    ]


def test_duplicate_key_names_both_lines() -> None:
    text = "version: 1\nstages:\n  - name: a\n    run: x\n    run: y\n"
    assert errors_of(text) == [
        ".cdkit.yml:5:5: stages[0].run: duplicate key 'run' (first defined on line 4); remove one of them"
    ]


def test_duplicate_stage_name_names_both_lines() -> None:
    text = "version: 1\nstages:\n  - name: a\n    run: x\n  - name: a\n    run: y\n"
    assert errors_of(text) == [
        ".cdkit.yml:5:11: stages[1].name: duplicate stage name 'a' (first defined on line 3); stage names must be unique"
    ]


def test_python_tags_are_rejected_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"version: 1\nstages:\n  - name: a\n    run: !!python/object/apply:os.system ['touch {marker}']\n"
    assert errors_of(text) == [
        ".cdkit.yml:4:10: stages[0].run: tag tag:yaml.org,2002:python/object/apply:os.system is not allowed "
        "(cdkit reads plain YAML data only)"
    ]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("mode: no", '.cdkit.yml:2:7: mode: "no" is not one of "delivery", "deployment"'),
        ("version: 1.10", None),
    ],
)
def test_yaml_11_coercions_at_top_level(line: str, message: str | None) -> None:
    if line.startswith("version"):
        text = "version: 1.10\nstages:\n  - {name: a, run: x}\n"
        assert errors_of(text) == [".cdkit.yml:1:10: version: expected an integer, got 1.10"]
    else:
        text = f"version: 1\n{line}\nstages:\n  - {{name: a, run: x}}\n"
        assert errors_of(text) == [message]


def test_on_yes_is_not_a_boolean() -> None:
    text = "version: 1\nstages:\n  - name: a\n    run: x\n    on: yes\n"
    assert errors_of(text) == ['.cdkit.yml:5:9: stages[0].on: "yes" is not one of "pre-push", "ci"']


def test_on_key_is_a_string_not_true() -> None:
    pipeline = load_text("version: 1\nstages:\n  - name: a\n    run: x\n    on: [pre-push]\n")
    assert pipeline.stages[0].on == ("pre-push",)


def test_timeout_in_scientific_notation_is_not_a_duration() -> None:
    text = "version: 1\nstages:\n  - name: a\n    run: x\n    timeout: 1e3\n"
    assert errors_of(text) == [".cdkit.yml:5:14: stages[0].timeout: 1e3 is not a duration (use e.g. 10m, 90s, 1h30m)"]


def test_timeout_in_words_is_not_a_duration() -> None:
    text = 'version: 1\nstages:\n  - name: a\n    run: x\n    timeout: "10 minutes"\n'
    assert errors_of(text) == [
        '.cdkit.yml:5:14: stages[0].timeout: "10 minutes" is not a duration (use e.g. 10m, 90s, 1h30m)'
    ]


def test_typo_gets_a_suggestion() -> None:
    text = "version: 1\nstages:\n  - {name: a, run: x}\nenvironments:\n  - name: prod\n    deploy: ./d\n" \
           "    approval:\n      requried_approvals: 2\n"
    assert errors_of(text) == [
        ".cdkit.yml:8:7: environments[0].approval.requried_approvals: unknown key 'requried_approvals'; "
        "did you mean 'required'?"
    ]


def test_typo_of_top_level_key() -> None:
    assert errors_of("version: 1\nstage:\n  - {name: a, run: x}\n") == [
        ".cdkit.yml:1:1: (top level): missing required key 'stages'",
        ".cdkit.yml:2:1: stage: unknown key 'stage'; did you mean 'stages'?",
    ]


def test_delivery_with_zero_approvals_is_refused() -> None:
    text = "version: 1\nstages:\n  - {name: a, run: x}\nenvironments:\n  - name: prod\n    deploy: ./d\n" \
           "    approval: {required: 0}\n"
    assert errors_of(text) == [
        ".cdkit.yml:7:26: environments[0].approval.required: 0 is less than the minimum of 1 "
        "(delivery mode needs at least one approval; use mode: deployment to release without one)"
    ]


def test_crlf_and_bom_are_handled(tmp_path: Path) -> None:
    path = tmp_path / ".cdkit.yml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.replace("\n", "\r\n").encode())
    pipeline = load(path)
    assert [s.run for s in pipeline.stages] == ["ruff check .", "pytest"]


def test_crlf_never_leaves_a_carriage_return_in_a_block_command(tmp_path: Path) -> None:
    path = tmp_path / ".cdkit.yml"
    path.write_bytes(b"version: 1\r\nstages:\r\n  - name: a\r\n    run: |\r\n      echo one\r\n      echo two\r\n")
    assert "\r" not in load(path).stages[0].run


def test_non_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / ".cdkit.yml"
    path.write_bytes(b"version: 1\nstages:\n  - {name: caf\xe9, run: x}\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.messages == [
        f"{path}:3:1: the file is not UTF-8 (byte 0xe9 at offset 33); save it as UTF-8"
    ]


def test_unknown_need_with_suggestion() -> None:
    text = "version: 1\nstages:\n  - {name: build, run: x}\n  - {name: test, run: y, needs: [biuld]}\n"
    assert errors_of(text) == [".cdkit.yml:4:34: stages[1].needs[0]: unknown stage 'biuld'; did you mean 'build'?"]


def test_needs_cycle() -> None:
    text = "version: 1\nstages:\n  - {name: a, run: x, needs: [b]}\n  - {name: b, run: y}\n"
    assert errors_of(text) == [".cdkit.yml:3:30: stages[0].needs: needs form a cycle: a -> b -> a"]


def test_inline_token_is_rejected_and_masked() -> None:
    token = "ghp_" + "A1b2C3d4" * 5
    text = f"version: 1\nstages:\n  - name: a\n    run: x\n    env:\n      GITHUB_TOKEN: {token}\n"
    messages = errors_of(text)
    assert messages == [
        ".cdkit.yml:6:21: stages[0].env.GITHUB_TOKEN: contains what looks like a GitHub token (ghp_****); "
        "never commit tokens: revoke it, and pass tokens through the environment (GITHUB_TOKEN) instead"
    ]
    assert token not in "\n".join(messages)


def test_config_newer_than_the_tool() -> None:
    text = 'version: 1\nminimum_version: "99.0"\nstages:\n  - {name: a, run: x}\n'
    assert errors_of(text) == [
        ".cdkit.yml:2:18: minimum_version: this file needs cdkit 99.0 or newer, but this is cdkit 0.1.0 "
        "(upgrade with: pip install -U cdkit)"
    ]


def test_version_must_be_one() -> None:
    assert errors_of("version: 2\nstages:\n  - {name: a, run: x}\n") == [
        ".cdkit.yml:1:10: version: 2 is not one of 1"
    ]


def test_empty_file() -> None:
    assert errors_of("") == [".cdkit.yml:1:1: the file is empty (start with `version: 1` and a `stages:` list)"]


def test_every_problem_is_reported_at_once() -> None:
    text = "version: 1\nstages:\n  - name: a\n    run: x\n    timeout: soon\n    colour: red\n"
    assert len(errors_of(text)) == 2


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_schema_is_valid_json_schema_and_accepts_the_example() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    import yaml

    jsonschema.validate(yaml.safe_load(VALID), schema)


def test_validate_command_exit_codes(repo: Path) -> None:
    commit(repo, {".cdkit.yml": VALID})
    ok = cdkit("validate", cwd=repo)
    assert ok.returncode == 0, ok.stderr
    assert "valid (2 stage(s))" in ok.stdout
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - name: a\n    run: x\n    timeout: 1e3\n"})
    bad = cdkit("validate", cwd=repo)
    assert bad.returncode == 2
    assert bad.stderr == f"{repo / '.cdkit.yml'}:5:14: stages[0].timeout: 1e3 is not a duration (use e.g. 10m, 90s, 1h30m)\n"
    assert "Traceback" not in bad.stderr


def test_missing_config_is_a_usage_error(repo: Path) -> None:
    result = cdkit("validate", cwd=repo)
    assert result.returncode == 2
    assert "no pipeline file here; create one with `cdkit init`, or pass --config PATH" in result.stderr


def test_several_approvals_via_environment_are_refused() -> None:
    text = "version: 1\nstages:\n  - {name: a, run: x}\nenvironments:\n  - name: prod\n    deploy: ./d\n" \
           "    approval: {via: environment, required: 2}\n"
    assert errors_of(text) == [
        ".cdkit.yml:7:44: environments[0].approval.required: 2 approvals cannot be had via environment: GitHub "
        "releases an environment after one of its required reviewers approves; use via: review for several approvals"
    ]


def test_an_alias_loop_is_an_error_not_a_crash() -> None:
    text = "version: 1\nstages: &s\n  - {name: a, run: x, needs: *s}\n"
    messages = errors_of(text)
    assert any("an alias refers to a value that contains it (a loop); remove the alias" in m for m in messages)


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines += ["stages: [{name: a, run: x}]"]
    (message,) = errors_of("\n".join(lines) + "\n")
    assert "the file expands to more than 20,000 values (YAML aliases repeating aliases?)" in message


def test_a_plain_alias_still_works() -> None:
    text = "version: 1\nx-env: &env {A: '1'}\nstages:\n  - {name: a, run: x, env: *env}\n"
    assert errors_of(text) == [".cdkit.yml:2:1: x-env: unknown key 'x-env' (allowed: version, minimum_version, "
                               "release_branch, mode, report, stages, environments, evidence, logs)"]


def test_an_invalid_glob_is_a_config_error() -> None:
    text = "version: 1\nstages:\n  - {name: a, run: x, paths: ['src/[z-a]*']}\n"
    assert errors_of(text) == ['.cdkit.yml:3:31: stages[0].paths[0]: "src/[z-a]*" is not a valid glob '
                               "(bad character range z-a)"]


def test_a_trailing_newline_does_not_pass_a_pattern() -> None:
    text = "version: 1\nstages:\n  - name: |\n      lint\n    run: x\n"
    (message,) = errors_of(text)
    assert "stages[0].name: " in message and "is not a valid name" in message
