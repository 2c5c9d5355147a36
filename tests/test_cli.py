"""The command line as a user meets it: help, version, exit codes, the demo, lean imports."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cdkit.cli import cli
from cdkit.ledger import SCHEMA_VERSION
from tests.conftest import DemoRun
from tests.helpers import ROOT, cdkit, commit


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append(prefix + (name,))
        if isinstance(command, click.Group):
            found += all_commands(command, prefix + (name,))
    return found


@pytest.mark.parametrize("words", [()] + all_commands(cli), ids=lambda w: " ".join(w) or "cdkit")
def test_every_command_has_help(words: tuple[str, ...], tmp_path: Path) -> None:
    result = cdkit(*words, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: cdkit")


def test_help_documents_exit_codes(tmp_path: Path) -> None:
    assert "Exit codes: 0 success, 1 a stage or gate failed, 2 usage or config error" in \
        cdkit("--help", cwd=tmp_path).stdout


def test_version(tmp_path: Path) -> None:
    result = cdkit("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "cdkit 0.1.0\n"


def test_usage_error_exit_code(tmp_path: Path) -> None:
    result = cdkit("run", "--jobs", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "Invalid value for '--jobs'" in result.stderr


def test_unknown_command(tmp_path: Path) -> None:
    assert cdkit("frobnicate", cwd=tmp_path).returncode == 2


def test_python_dash_m_works(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "cdkit", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout == "cdkit 0.1.0\n"


PROBE = """
import sys
from cdkit.cli import invoke, cli
code = invoke(cli, sys.argv[1:])
heavy = sorted(m for m in ("github", "git", "jsonschema", "requests") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--version"], ["validate"]])
def test_version_and_validate_import_neither_pygithub_nor_gitpython(args: list[str], repo: Path) -> None:
    (repo / ".cdkit.yml").write_text("version: 1\nstages:\n  - {name: a, run: 'true'}\n")
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=repo)
    assert "HEAVY=\n" in result.stderr, result.stderr


RUN_PROBE = PROBE.replace('("github", "git", "jsonschema", "requests")', '("yaml", "cdkit.github", "cdkit.release")')


def test_a_plain_run_imports_neither_yaml_nor_the_github_or_release_code(repo: Path) -> None:
    (repo / ".cdkit.yml").write_text("version: 1\nstages:\n  - {name: a, run: 'true'}\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=repo, check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "GH_TOKEN")}

    def heavy(*args: str, **extra: str) -> str:
        result = subprocess.run([sys.executable, "-c", RUN_PROBE, "run", *args], capture_output=True, text=True,
                                cwd=repo, env={**env, **extra})
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stderr.split("HEAVY=")[1].splitlines()[0]

    assert heavy() == "yaml"  # the first run parses the file (and caches the validated pipeline)
    assert heavy() == ""  # every later one reuses it: no PyYAML, no GitHub client, no release machinery
    # Positive controls: the probe sees each import where it is needed.
    assert heavy(GITHUB_TOKEN="not-a-real-token") == "cdkit.github"  # a token: a reporter is considered
    assert "cdkit.release" in heavy("--deploy")
    (repo / ".cdkit.yml").write_text("version: 1\nstages:\n  - {name: b, run: 'true'}\n")
    assert heavy() == "yaml"  # an edit is a cache miss, parsed and validated again


@pytest.mark.xdist_group("demo")
def test_demo_runs_offline_and_touches_nothing_here(demo_run: DemoRun) -> None:
    result = demo_run.result  # with no token in its environment
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✗ test" in result.stdout or "XX test" in result.stdout
    assert "run #2 passed" in result.stdout
    assert demo_run.cwd_after == demo_run.cwd_before
    # the stages show their commands as written in .cdkit.yml, and the demo says what becomes of its repository
    assert "it is deleted at the end; `cdkit demo --keep` keeps it" in result.stdout
    started = [line for line in result.stdout.splitlines() if "started:" in line]
    assert "lint    started: python3 -m py_compile calc.py" in result.stdout
    assert started and not any(sys.executable in line for line in started)


def test_internal_error_gives_a_crash_report_and_exit_3(repo: Path) -> None:
    # A ledger claiming the current schema without its tables: no user error explains that.
    (repo / ".cdkit.yml").write_text("version: 1\nstages:\n  - {name: a, run: 'true'}\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=repo, check=True)
    (repo / ".git" / "cdkit").mkdir()
    with sqlite3.connect(repo / ".git" / "cdkit" / "ledger.sqlite3") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    result = cdkit("run", cwd=repo)
    assert result.returncode == 3
    assert "cdkit hit an internal error (a bug, not your fault)" in result.stderr
    assert "cdkit 0.1.0, Python" in result.stderr


def test_readme_commands_are_the_ci_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install . && cdkit demo" in readme
    assert "pip install -e '.[test]' && pytest" in readme
    assert "pip install -e '.[test]' && pytest" in ci


def test_a_token_given_with_token_is_redacted_from_errors(repo: Path) -> None:
    token = "opaque-secret-value-123"
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: a, run: 'true'}\n"})
    result = cdkit("run", "--token", token, "--base", f"no-such-{token}", cwd=repo)
    assert result.returncode == 2
    assert token not in result.stderr and "no-such-***" in result.stderr


ENTRY_PROBE = """
import sys
from cdkit.entry import main
try:
    main()
finally:  # click's main leaves through sys.exit
    print("CLICK=" + str("click" in sys.modules), file=sys.stderr)
"""
CLICK_HELP = "import sys; from cdkit.cli import main; main()"


def _cli(code: str, *args: str, columns: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.parametrize("columns", [None, "80", "100", "160"])
def test_help_and_version_answer_without_click_and_say_what_click_would(columns: str | None, tmp_path: Path) -> None:
    for args in (["--help"], ["-h"], ["--version"]):
        fast = _cli(ENTRY_PROBE, *args, columns=columns, cwd=tmp_path)
        assert "CLICK=False" in fast.stderr, (args, fast.stderr)
        slow = _cli(CLICK_HELP, *args, columns=columns, cwd=tmp_path)
        assert fast.stdout == slow.stdout and slow.returncode == 0, (
            f"cdkit {' '.join(args)} (COLUMNS={columns}) differs from click's rendering: "
            "refresh the stored help with `python -m cdkit.entry --write-help`")


def test_other_widths_and_commands_go_to_click(tmp_path: Path) -> None:
    """The control: the stored text is never shown where click would render something else."""
    narrow = _cli(ENTRY_PROBE, "--help", columns="60", cwd=tmp_path)
    assert "CLICK=True" in narrow.stderr and narrow.stdout == _cli(CLICK_HELP, "--help", columns="60",
                                                                    cwd=tmp_path).stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60
    sub = _cli(ENTRY_PROBE, "run", "--help", columns="100", cwd=tmp_path)
    assert "CLICK=True" in sub.stderr and "Usage: cdkit run" in sub.stdout
