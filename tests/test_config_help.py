"""A config that helps (issue 14 §3): both file names, plain YAML errors, forgiving where it is safe."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdkit.config import ConfigError, load_text
from tests.helpers import cdkit, commit

ONE_STAGE = "version: 1\nstages:\n  - name: a\n    run: 'true'\n"


def errors_of(text: str, root: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, ".cdkit.yml", root=root)
    return info.value.messages


# --- which file ---------------------------------------------------------------------------------


def test_cdkit_yaml_is_found(repo: Path) -> None:
    commit(repo, {".cdkit.yaml": ONE_STAGE})
    result = cdkit("validate", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{repo / '.cdkit.yaml'}: valid (1 stage(s))\n"
    ran = cdkit("run", cwd=repo)
    assert ran.returncode == 0, ran.stderr


def test_both_files_is_an_error_naming_both(repo: Path) -> None:
    (repo / ".cdkit.yml").write_text(ONE_STAGE)
    (repo / ".cdkit.yaml").write_text(ONE_STAGE)
    for command in (["validate"], ["run"], ["plan"]):
        result = cdkit(*command, cwd=repo)
        assert result.returncode == 2, command
        assert result.stderr == (
            f"{repo / '.cdkit.yml'} and {repo / '.cdkit.yaml'} both exist; cdkit reads one pipeline file: "
            "merge them into .cdkit.yml and delete .cdkit.yaml\n"
        )
    (repo / ".cdkit.yaml").unlink()  # the positive control: one file is fine
    assert cdkit("validate", cwd=repo).returncode == 0


# --- YAML mistakes in plain words, with a caret ------------------------------------------------------


def test_tab_indentation() -> None:
    assert errors_of("version: 1\nstages:\n\t- name: a\n") == [
        ".cdkit.yml:3:1: invalid YAML: tabs are not allowed for indentation in YAML; use spaces\n"
        "    \t- name: a\n"
        "    ^"
    ]


def test_tab_before_a_key_puts_the_caret_under_it() -> None:
    text = "version: 1\nstages:\n  - name: a\n    run: x\n\ton: [ci]\n"
    assert errors_of(text) == [
        ".cdkit.yml:5:1: invalid YAML: tabs are not allowed for indentation in YAML; use spaces\n"
        "    \ton: [ci]\n"
        "    ^"
    ]


def test_bad_indentation() -> None:
    text = "version: 1\nstages:\n  - name: a\n   run: x\n"
    assert errors_of(text) == [
        ".cdkit.yml:4:4: invalid YAML: the indentation here does not line up: keys of one mapping, and the `-` "
        "items of one list, must start in the same column as the ones above "
        "(the parser says: did not find expected '-' indicator)\n"
        "       run: x\n"
        "       ^"
    ]


@pytest.mark.parametrize("quote", ['"', "'"])
def test_unclosed_quote_points_at_the_opening_quote(quote: str) -> None:
    text = f"version: 1\nstages:\n  - name: a\n    run: {quote}pytest -q\n    on: [ci]\n"
    assert errors_of(text) == [
        ".cdkit.yml:4:10: invalid YAML: this quoted string is never closed; add the closing quote "
        "(or leave the value unquoted)\n"
        f"        run: {quote}pytest -q\n"
        "             ^"
    ]


def test_yaml_error_through_the_cli_has_no_traceback(repo: Path) -> None:
    (repo / ".cdkit.yml").write_text("version: 1\nstages:\n\t- name: a\n")
    result = cdkit("validate", cwd=repo)
    assert result.returncode == 2
    assert "tabs are not allowed for indentation in YAML; use spaces" in result.stderr
    assert "Traceback" not in result.stderr


# --- on: ---------------------------------------------------------------------------------------------


def test_on_single_value_is_a_list_of_one() -> None:
    pipeline = load_text(ONE_STAGE + "    on: pre-push\n")
    assert pipeline.stages[0].on == ("pre-push",)
    assert load_text(ONE_STAGE + "    on: [pre-push, ci]\n").stages[0].on == ("pre-push", "ci")


@pytest.mark.parametrize("value", ["push", "[push]", "pull_request", "[ci, workflow_dispatch]"])
def test_github_event_names_get_a_hint(value: str) -> None:
    (message,) = errors_of(ONE_STAGE + f"    on: {value}\n")
    event = value.strip("[]").split(", ")[-1]
    assert f'"{event}" is not one of "pre-push", "ci"; GitHub events (push, pull_request, ...) belong in the ' \
           "workflow's `on:` (.github/workflows/cdkit.yml); a stage's `on:` says where it runs: pre-push, ci, or " \
           "both" in message


def test_an_unknown_on_value_gets_no_github_hint() -> None:
    assert errors_of(ONE_STAGE + "    on: laptop\n") == [
        '.cdkit.yml:5:9: stages[0].on: "laptop" is not one of "pre-push", "ci"'
    ]


# --- env: ----------------------------------------------------------------------------------------------


def test_integers_in_env_are_passed_as_decimal_text(repo: Path) -> None:
    pipeline = load_text(ONE_STAGE + "    env: {RETRIES: 3, PORT: 0x50, NAME: x}\n")
    assert dict(pipeline.stages[0].env) == {"RETRIES": "3", "PORT": "80", "NAME": "x"}
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - name: a\n    run: test \"$RETRIES\" = 3\n"
                                "    env: {RETRIES: 3}\n"})
    result = cdkit("run", cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("value", "shown"), [("true", "true"), ("1.10", "1.10"), ("no", None)])
def test_booleans_and_floats_in_env_stay_errors_with_the_fix(value: str, shown: str | None) -> None:
    text = ONE_STAGE + f"    env: {{FLAG: {value}}}\n"
    if shown is None:  # `no` is a string under YAML 1.2: accepted as written
        assert dict(load_text(text).stages[0].env) == {"FLAG": "no"}
        return
    assert errors_of(text) == [
        f".cdkit.yml:5:17: stages[0].env.FLAG: expected a string or an integer, got {shown}; "
        f"quote it to pass the text as written: FLAG: {json.dumps(shown)}"
    ]


# --- working_directory ---------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", ["/tmp", "..", "../sibling", "sub/../../x"])
def test_working_directory_outside_the_repository_is_refused(directory: str) -> None:
    assert errors_of(ONE_STAGE + f"    working_directory: {directory}\n") == [
        f'.cdkit.yml:5:24: stages[0].working_directory: "{directory}" is outside the repository; give a directory '
        "relative to the repository root, inside it (e.g. services/api)"
    ]


def test_working_directory_inside_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for directory in ("sub", "sub/deeper", "sub/../sub", "./sub"):
        pipeline = load_text(ONE_STAGE + f"    working_directory: {directory}\n", root=tmp_path)
        assert pipeline.stages[0].working_directory == directory


def test_missing_working_directory_is_a_validate_error(repo: Path) -> None:
    (repo / ".cdkit.yml").write_text(ONE_STAGE + "    working_directory: services/api\n")
    result = cdkit("validate", cwd=repo)
    assert result.returncode == 2
    assert result.stderr == (
        f'{repo / ".cdkit.yml"}:5:24: stages[0].working_directory: "services/api" is not a directory in {repo}; '
        "create it, or fix the path (relative to the repository root)\n"
    )
    (repo / "services" / "api").mkdir(parents=True)
    assert cdkit("validate", cwd=repo).returncode == 0


def test_symlink_out_of_the_repository_is_refused(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (repo / "link").symlink_to(tmp_path / "elsewhere")
    (repo / ".cdkit.yml").write_text(ONE_STAGE + "    working_directory: link\n")
    result = cdkit("validate", cwd=repo)
    assert result.returncode == 2
    assert 'stages[0].working_directory: "link" leads outside the repository (through a symbolic link)' in result.stderr


def test_missing_working_directory_at_run_time_is_said_in_words(repo: Path) -> None:
    """The commit being checked lacks the directory the work tree has: the stage fails, with no Python repr."""
    pipeline = ONE_STAGE + "    working_directory: sub\n"
    sha = commit(repo, {".cdkit.yml": pipeline})
    commit(repo, {"sub/keep": "x\n"})
    result = cdkit("run", "--head", sha, cwd=repo)
    assert result.returncode == 1
    assert "could not start: working_directory sub does not exist in the tree being checked" in result.stdout
    assert "create and commit it, or fix working_directory in the pipeline" in result.stdout
    assert "Errno" not in result.stdout + result.stderr and "'" + str(repo) not in result.stdout
    assert cdkit("run", cwd=repo).returncode == 0  # positive control: at the commit that has it, it runs
