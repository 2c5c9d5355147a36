"""Command line conventions (issue 14 §5): whole summaries, an example per command, completion, `run STAGE`."""
from __future__ import annotations

import os
from pathlib import Path

import click
import pytest

from cdkit.cli import cli
from cdkit.cli_help import EXAMPLES
from tests.helpers import cdkit, commit

PIPELINE = """version: 1
stages:
  - {name: lint, run: "echo linted > lint.out", allow_changes: true}
  - {name: test, run: "echo tested > test.out", allow_changes: true, needs: []}
  - {name: package, run: "echo packaged > package.out", needs: [test], allow_changes: true}
environments:
  - {name: production, deploy: "true"}
  - {name: staging, deploy: "true"}
"""


def every_command(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += every_command(command, path + " ")
    return found


def test_top_level_help_shows_every_summary_whole(tmp_path: Path) -> None:
    result = cdkit("--help", cwd=tmp_path, env={"COLUMNS": "80"})
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    for name, command in cli.commands.items():
        summary = (command.help or "").split("\n\n")[0]
        summary = " ".join(summary.split())
        assert f"{name} {summary}" in flat, name
    commands = result.stdout.split("Commands:", 1)[1]
    assert "..." not in commands, "a summary was cut short"


@pytest.mark.parametrize("path", [p for p, _ in every_command(cli)])
def test_every_command_has_an_example(path: str, tmp_path: Path) -> None:
    assert path in EXAMPLES, f"add an example for `cdkit {path}` to cdkit/cli_help.py"
    result = cdkit(*path.split(), "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert f"Example:\n  {EXAMPLES[path]}\n" in result.stdout


def complete(repo: Path, words: str) -> list[str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {"COMP_WORDS": words, "COMP_CWORD": str(cword), "_CDKIT_COMPLETE": "bash_complete"}
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", "from cdkit.cli import main; main()"], cwd=repo,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line.startswith("plain,")]


def test_stage_and_environment_names_complete_from_the_pipeline(repo: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE})
    assert complete(repo, "cdkit run --stage ") == ["lint", "test", "package"]
    assert complete(repo, "cdkit run te") == ["test"]
    assert complete(repo, "cdkit deploy --env s") == ["staging"]
    assert complete(repo, "cdkit approvals --env ") == ["production", "staging"]


def test_completion_outside_a_pipeline_offers_nothing_and_does_not_fail(tmp_path: Path) -> None:
    assert complete(tmp_path, "cdkit run --stage ") == []


def test_run_a_stage_by_name(repo: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE, ".gitignore": "*.out\n"})
    result = cdkit("run", "package", cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (repo / "package.out").exists()
    assert not (repo / "test.out").exists() and not (repo / "lint.out").exists()
    assert "not selected (--stage)" in result.stdout


def test_run_a_stage_with_its_needs(repo: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE, ".gitignore": "*.out\n"})
    result = cdkit("run", "package", "--with-needs", cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (repo / "package.out").exists() and (repo / "test.out").exists()
    assert not (repo / "lint.out").exists(), "lint is not needed by package"


def test_run_an_unknown_stage_by_name(repo: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE})
    result = cdkit("run", "pakage", "--with-needs", cwd=repo)
    assert result.returncode == 2
    assert "unknown stage(s) pakage" in result.stderr


def test_with_needs_alone_is_a_usage_error(repo: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE})
    result = cdkit("run", "--with-needs", cwd=repo)
    assert result.returncode == 2 and "--with-needs goes with named stages" in result.stderr
