"""`cdkit doctor` as a user meets it: real repositories, the real hook, the fake GitHub at the HTTP boundary."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from cdkit.commands.doctor import first_program
from tests.fake_github import FakeGitHub, Reply, Request
from tests.helpers import cdkit, commit, git, make_bare

PIPELINE = "version: 1\nstages:\n  - name: check\n    run: 'true'\n    on: [pre-push, ci]\n"
TOKEN = "ghp_" + "d" * 36


SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "cdkit" / "schemas" / "doctor.schema.json").read_text())


def checks(result: subprocess.CompletedProcess[str]) -> dict[str, list[dict[str, str]]]:
    """The checks of `doctor --json`, by name, after validating the document against its JSON Schema."""
    data = json.loads(result.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["schema_version"] == 1 and data["ok"] is (result.returncode == 0)
    found: dict[str, list[dict[str, str]]] = {}
    for check in data["checks"]:
        found.setdefault(check["check"], []).append(check)
    return found


def statuses(result: subprocess.CompletedProcess[str], name: str) -> list[str]:
    return [c["status"] for c in checks(result).get(name, [])]


def test_all_well_is_exit_0(repo: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE})
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    result = cdkit("doctor", cwd=repo)
    assert result.returncode == 0, result.stdout
    assert result.stdout.endswith("\nall well\n")
    assert f"ok      config: pipeline file: {repo / '.cdkit.yml'}\n" in result.stdout
    assert "ok      hook: pre-push hook installed" in result.stdout
    assert "note    remote: no remote `origin`" in result.stdout


def test_problems_are_listed_with_fixes_and_exit_1(repo: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE.replace("'true'", "no-such-linter --strict")
                  + "environments:\n  - {name: prod, deploy: ./scripts/deploy.sh, mode: deployment}\n"})
    result = cdkit("doctor", cwd=repo)
    assert result.returncode == 1
    assert "PROBLEM hook: no pre-push hook is installed\n        fix: run `cdkit hook install`\n" in result.stdout
    assert ("PROBLEM tools: stage check runs `no-such-linter`, which is not on PATH\n"
            "        fix: install no-such-linter, or change the command in .cdkit.yml\n") in result.stdout
    assert (f"PROBLEM tools: environment prod (deploy) runs ./scripts/deploy.sh, which is not an executable file "
            f"in {repo}\n") in result.stdout
    assert "ok      environments: prod: deployment: every passing commit on main; deploys with " \
           "`./scripts/deploy.sh`" in result.stdout
    assert result.stdout.endswith("\n3 problem(s) to fix (exit 1)\n")
    # fixed, one by one: each problem goes away
    (repo / "scripts").mkdir()
    (repo / "scripts" / "deploy.sh").write_text("#!/bin/sh\n")
    (repo / "scripts" / "deploy.sh").chmod(0o755)
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    assert cdkit("doctor", cwd=repo).stdout.endswith("\n1 problem(s) to fix (exit 1)\n")


def test_both_config_files_and_a_stray_one(repo: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE, ".cdkit.yaml": PIPELINE, "services/api/.cdkit.yml": PIPELINE})
    result = cdkit("doctor", "--json", cwd=repo)
    assert result.returncode == 1
    config = checks(result)["config"]
    assert config[0] == {"check": "config", "status": "problem", "detail": f"both .cdkit.yml and .cdkit.yaml exist "
                         f"at {repo}", "fix": "merge them into .cdkit.yml and delete .cdkit.yaml"}
    assert config[1]["status"] == "note" and config[1]["detail"].startswith("services/api/.cdkit.yml is not read")
    git(repo, "rm", "-q", ".cdkit.yaml")
    assert statuses(cdkit("doctor", "--json", cwd=repo), "config") == ["ok", "note"]


def test_an_invalid_pipeline_is_a_schema_problem(repo: Path) -> None:
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n\t- name: a\n"})
    result = cdkit("doctor", "--json", cwd=repo)
    assert result.returncode == 1
    (schema,) = checks(result)["schema"]
    assert schema["status"] == "problem" and "tabs are not allowed for indentation in YAML" in schema["detail"]


def test_no_pipeline_file(repo: Path) -> None:
    commit(repo, {"README": "x\n"})
    result = cdkit("doctor", cwd=repo)
    assert result.returncode == 1
    assert "PROBLEM config: no pipeline file at" in result.stdout and "fix: create one with `cdkit init`" in result.stdout


def _serve_repository(server: FakeGitHub, scopes: str | None, *, private: bool = False) -> None:
    def get_repository(_: FakeGitHub, req: Request) -> Reply:
        owner, name = req.params["owner"], req.params["repo"]
        headers = {} if scopes is None else {"X-OAuth-Scopes": scopes}
        return Reply(200, {"id": 1, "name": name, "full_name": f"{owner}/{name}", "private": private}, headers)

    server.add_route("GET", "/repos/{owner}/{repo}", get_repository)


def _github_repo(repo: Path, fake_github: FakeGitHub) -> dict[str, str]:
    commit(repo, {".cdkit.yml": PIPELINE})
    git(repo, "remote", "add", "origin", "https://github.com/octo/calc.git")
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    return {"GITHUB_API_URL": fake_github.url, "GITHUB_TOKEN": TOKEN}


def test_token_scopes_as_github_says_them(repo: Path, fake_github: FakeGitHub) -> None:
    env = _github_repo(repo, fake_github)
    _serve_repository(fake_github, "read:org, gist")
    weak = cdkit("doctor", cwd=repo, env=env)
    assert weak.returncode == 1
    assert ("PROBLEM token: a personal access token with scopes read:org, gist: it cannot post commit statuses\n"
            "        fix: create a token with the `repo` scope") in weak.stdout
    assert "ok      remote: origin: https://github.com/octo/calc.git (GitHub repository octo/calc)" in weak.stdout
    assert TOKEN not in weak.stdout + weak.stderr
    assert fake_github.requests[-1].path == "/repos/octo/calc" and fake_github.requests[-1].token == TOKEN


def test_token_with_repo_scope_is_well(repo: Path, fake_github: FakeGitHub) -> None:
    env = _github_repo(repo, fake_github)
    _serve_repository(fake_github, "repo, workflow", private=True)
    result = cdkit("doctor", cwd=repo, env=env)
    assert result.returncode == 0, result.stdout
    assert "ok      token: a personal access token with scopes repo, workflow: enough for commit statuses on " \
           "octo/calc" in result.stdout


def test_a_token_without_scopes_header(repo: Path, fake_github: FakeGitHub) -> None:
    env = _github_repo(repo, fake_github)
    _serve_repository(fake_github, None)
    result = cdkit("doctor", cwd=repo, env={**env, "GITHUB_TOKEN": "ghs_" + "e" * 36})
    assert result.returncode == 0, result.stdout
    assert "GitHub lists no scopes for this kind of token" in result.stdout


def test_a_rejected_token_is_a_problem_and_is_not_printed(repo: Path, fake_github: FakeGitHub) -> None:
    env = _github_repo(repo, fake_github)
    fake_github.tokens[TOKEN] = "bad"
    result = cdkit("doctor", cwd=repo, env=env)
    assert result.returncode == 1
    assert "PROBLEM token:" in result.stdout and "401" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_credentials_in_the_remote_url_are_not_shown(repo: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE})
    git(repo, "remote", "add", "origin", f"https://octo:{TOKEN}@github.com/octo/calc.git")
    result = cdkit("doctor", cwd=repo)
    assert "remote: origin: https://github.com/octo/calc.git (GitHub repository octo/calc)" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_pending_outbox_then_sync(repo: Path, fake_github: FakeGitHub) -> None:
    env = _github_repo(repo, fake_github)
    _serve_repository(fake_github, "repo")
    fake_github.stop()  # GitHub unreachable during the run: its reports wait in the outbox
    ran = cdkit("run", "--max-wait", "0", cwd=repo, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    fake_github.start()
    waiting = cdkit("doctor", "--json", cwd=repo, env=env)
    assert waiting.returncode == 1
    (outbox,) = checks(waiting)["outbox"]
    assert outbox["status"] == "problem" and outbox["detail"].endswith("report(s) wait in the outbox: GitHub has "
                                                                       "not seen them")
    assert outbox["fix"] == "run `cdkit sync` (with GITHUB_TOKEN set)"
    assert cdkit("sync", cwd=repo, env=env).returncode == 0
    after = cdkit("doctor", "--json", cwd=repo, env=env)
    assert statuses(after, "outbox") == ["ok"] and after.returncode == 0, after.stdout


def test_an_interrupted_set_aside_is_a_problem_until_recovered(repo: Path) -> None:
    # The stage kills cdkit itself (its parent) while the user's work is set aside.
    killer = PIPELINE.replace("'true'", "kill -KILL $PPID")
    old = commit(repo, {".cdkit.yml": killer, "a.txt": "one\n"})
    commit(repo, {"a.txt": "two\n"})
    (repo / "a.txt").write_text("my uncommitted work\n")
    ran = cdkit("run", "--head", old, cwd=repo)
    assert ran.returncode != 0
    result = cdkit("doctor", "--json", cwd=repo)
    (setaside,) = checks(result)["setaside"]
    assert setaside["status"] == "problem" and setaside["fix"] == "run `cdkit hook recover`"
    assert cdkit("hook", "recover", cwd=repo).returncode == 0
    assert (repo / "a.txt").read_text() == "my uncommitted work\n"
    assert "setaside" not in checks(cdkit("doctor", "--json", cwd=repo))


def test_a_hook_whose_interpreter_is_gone(repo: Path, tmp_path: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE})
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    hook = repo / ".git" / "hooks" / "pre-push"
    text = hook.read_text()
    python = next(line.split("=", 1)[1].strip("'\"") for line in text.splitlines() if line.startswith("CDKIT_PYTHON="))
    hook.write_text(text.replace(python, str(tmp_path / "gone" / "python")))
    result = cdkit("doctor", "--json", cwd=repo)
    assert result.returncode == 1
    (problem,) = checks(result)["hook"]
    assert problem["status"] == "problem" and "is gone, so every push is blocked" in problem["detail"]
    assert problem["fix"] == "run `cdkit hook install` again"


def test_first_program_of_a_command() -> None:
    assert first_program("ruff check .") == "ruff"
    assert first_program("PYTHONWARNINGS=error python -m pytest") == "python"
    assert first_program("./scripts/deploy.sh prod") == "./scripts/deploy.sh"
    assert first_program("echo hi && make") is None  # the shell's own: not a tool to look for
    assert first_program("'unterminated") is None


def test_doctor_works_against_a_local_bare_remote(repo: Path, tmp_path: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE})
    git(repo, "remote", "add", "origin", str(make_bare(tmp_path / "remote.git")))
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    result = cdkit("doctor", cwd=repo)
    assert result.returncode == 0, result.stdout
    assert "not GitHub: stage results are not reported anywhere but the ledger" in result.stdout


def test_the_schema_rejects_a_wrong_document() -> None:
    """The control: the schema is not vacuous."""
    good = {"schema_version": 1, "command": "doctor", "ok": True, "checks": [{"check": "hook", "status": "ok", "detail": "x", "fix": ""}]}
    jsonschema.validate(good, SCHEMA)
    for bad in ({**good, "schema_version": 2}, {**good, "checks": [{"check": "hook", "status": "fine", "detail": "x",
                                                                        "fix": ""}]}, {"ok": True, "checks": []}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)
