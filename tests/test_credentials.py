"""One rule for credentials (issue 9 §6): no token reaches a stage or a deploy command unless the pipeline names it.

Every entry point that starts a command is tried as a user would: `cdkit run`,
`cdkit deploy`, the pre-push hook, `cdkit release check` and `cdkit action`. Each
command writes what it sees into a file; in every case one stage or environment names
a credential in `env_passthrough` and must see it (the control), the others must not.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import tests.fake_github_release  # noqa: F401 - registers the release endpoints
from tests import event_payloads as ev
from tests.fake_github import FakeGitHub
from tests.fake_github_release import link_git
from tests.helpers import cdkit, commit, config, git, make_bare, make_repo
from tests.test_action import run_action

GH_TOKEN = "ghp_" + "G" * 36
GITHUB_TOKEN = "ghs_" + "S" * 36
OIDC = "oidc-request-token-value"
SHOW = ('echo "$WHO GITHUB_TOKEN=${GITHUB_TOKEN:-unset} GH_TOKEN=${GH_TOKEN:-unset} '
        'OIDC=${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-unset}" >> "$SEEN"')


def pipeline(*, on: str = "[ci]", deploy_mode: str = "deployment", approval: str = "") -> str:
    return config(f"""
        version: 1
        report: none
        stages:
          - name: plain
            on: {on}
            run: 'WHO=plain; {SHOW}'
          - name: granted
            on: {on}
            env_passthrough: [GH_TOKEN]
            run: 'WHO=granted; {SHOW}'
        environments:
          - name: staging
            mode: {deploy_mode}
            deploy: 'WHO=staging; {SHOW}'{approval}
          - name: prod
            mode: {deploy_mode}
            env_passthrough: [GITHUB_TOKEN, ACTIONS_ID_TOKEN_REQUEST_TOKEN]
            deploy: 'WHO=prod; {SHOW}'{approval}
    """)


def seen(path: Path) -> dict[str, str]:
    """Who saw what: {"plain": "GITHUB_TOKEN=unset GH_TOKEN=unset OIDC=unset", ...}."""
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


NOTHING = "GITHUB_TOKEN=unset GH_TOKEN=unset OIDC=unset"
TOKENS = {"GITHUB_TOKEN": GITHUB_TOKEN, "GH_TOKEN": GH_TOKEN, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": OIDC}


@pytest.fixture
def seen_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "seen.txt"
    monkeypatch.setenv("SEEN", str(path))
    return path


def test_cdkit_run_and_cdkit_deploy_pass_only_the_named_credentials(tmp_path: Path, seen_file: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    commit(repo, {".cdkit.yml": pipeline()})
    run = cdkit("run", cwd=repo, env=TOKENS)
    assert run.returncode == 0, run.stdout + run.stderr
    assert seen(seen_file) == {"plain": NOTHING, "granted": f"GITHUB_TOKEN=unset GH_TOKEN={GH_TOKEN} OIDC=unset"}
    seen_file.unlink()
    for env in ("staging", "prod"):
        result = cdkit("deploy", "--env", env, cwd=repo, env=TOKENS)
        assert result.returncode == 0, result.stdout + result.stderr
    assert seen(seen_file) == {"staging": NOTHING, "prod": f"GITHUB_TOKEN={GITHUB_TOKEN} GH_TOKEN=unset OIDC={OIDC}"}


def test_the_pre_push_hook_passes_only_the_named_credentials(tmp_path: Path, seen_file: Path) -> None:
    remote = make_bare(tmp_path / "remote.git")
    repo = make_repo(tmp_path / "repo")
    commit(repo, {".cdkit.yml": pipeline(on="[pre-push]")})
    git(repo, "remote", "add", "origin", str(remote))
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    push = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=repo, env={**os.environ, **TOKENS},
                          capture_output=True, text=True, timeout=120)
    assert push.returncode == 0, push.stderr
    assert seen(seen_file) == {"plain": NOTHING, "granted": f"GITHUB_TOKEN=unset GH_TOKEN={GH_TOKEN} OIDC=unset"}


def test_the_action_passes_only_the_named_credentials(tmp_path: Path, seen_file: Path,
                                                       fake_github: FakeGitHub) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, {".cdkit.yml": pipeline()})
    payload = ev.event("push.5.json", {ev.PUSH_AFTER: sha}, ref="refs/heads/main",
                       repository__default_branch="main")
    # The Action's token arrives as its `token` input; the runner's OIDC variables are in the job.
    job = {"INPUT_TOKEN": GITHUB_TOKEN, "GH_TOKEN": GH_TOKEN, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": OIDC,
           "GITHUB_API_URL": fake_github.url}
    run = run_action(repo, "push", payload, sha=sha, env=job)  # the stages job
    assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
    for env in ("staging", "prod"):  # the deploy jobs
        run = run_action(repo, "push", payload, sha=sha, env={**job, "INPUT_COMMAND": "deploy",
                                                              "INPUT_ENVIRONMENT": env})
        assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
    assert seen(seen_file) == {
        "plain": NOTHING, "granted": f"GITHUB_TOKEN=unset GH_TOKEN={GH_TOKEN} OIDC=unset",
        "staging": NOTHING, "prod": f"GITHUB_TOKEN={GITHUB_TOKEN} GH_TOKEN=unset OIDC={OIDC}"}


def test_release_check_passes_only_the_named_credentials(tmp_path: Path, seen_file: Path,
                                                          fake_github: FakeGitHub) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, {".cdkit.yml": pipeline(deploy_mode="delivery", approval="\n            approval: {via: environment}")})
    assert cdkit("run", cwd=repo).returncode == 0
    bob = {"login": "bob", "id": 2, "type": "User"}
    link_git(fake_github, repo, {"ada@example.com": {"login": "ada", "id": 1, "type": "User"}})
    rules = [{"id": 6, "type": "required_reviewers", "reviewers": [{"type": "User", "reviewer": bob}]}]
    fake_github.state.extra["environments"] = {name: {"id": i, "name": name, "protection_rules": rules}
                                               for i, name in enumerate(("staging", "prod"), 1)}
    fake_github.state.extra["run_approvals"] = {"77": [{"state": "approved", "comment": "go", "user": bob,
                                                        "environments": [{"id": 1, "name": "staging"},
                                                                         {"id": 2, "name": "prod"}]}]}
    environ = {**TOKENS, "GITHUB_REPOSITORY": "acme/app", "GITHUB_API_URL": fake_github.url,
               "GITHUB_ACTOR": "ada", "GITHUB_RUN_ID": "77", "GITHUB_SHA": sha, "GITHUB_SERVER_URL": "https://github.com"}
    seen_file.unlink()
    for env in ("staging", "prod"):
        result = cdkit("release", "check", "--env", env, cwd=repo, env=environ)
        assert result.returncode == 0, result.stdout + result.stderr
    assert seen(seen_file) == {"staging": NOTHING, "prod": f"GITHUB_TOKEN={GITHUB_TOKEN} GH_TOKEN=unset OIDC={OIDC}"}


def test_an_unknown_name_in_env_passthrough_is_a_config_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: t, run: "true", env_passthrough: ["not a name"]}
    """)})
    result = cdkit("validate", cwd=repo)
    assert result.returncode == 2
    assert "stages[0].env_passthrough[0]" in result.stdout + result.stderr
