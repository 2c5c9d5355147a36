"""`cdkit adopt` (issue 10 §5, issue 9 §3's first-release baseline): real repositories, real processes.

An environment's first release has a range from a baseline: what it ran before cdkit
(`cdkit adopt --sha`), or nothing on purpose (`--empty`); never "the whole history" by
default. Adoption is recorded once, before any deployment, without running anything; on
GitHub it is a cdkit deployment too (the fake GitHub validates every request).
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

import tests.fake_github_release  # noqa: F401 - registers the release endpoints
from cdkit.ledger import LEDGER_NAME, MIGRATIONS, SCHEMA_VERSION, Ledger, _statements
from tests.fake_github import FakeGitHub
from tests.helpers import cdkit, commit, config, git, make_repo
from tests.test_action import run_workflow

PIPELINE = config("""
    version: 1
    stages:
      - name: build
        run: "true"
    environments:
      - name: staging
        mode: deployment
        deploy: 'echo "deployed $CDKIT_SHA" >> "$DEPLOY_LOG"'
      - name: prod
        mode: delivery
        deploy: 'echo "deployed $CDKIT_SHA" >> "$DEPLOY_LOG"'
        approval: {via: local, signed: false}
""")


def person(name: str) -> dict[str, str]:
    email = f"{name.lower()}@example.com"
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email}


def commit_as(repo: Path, who: str, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=repo, check=True, env={**os.environ, **person(who)})
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """Years of history before cdkit: Carol's old commit, Dave's (what prod runs), then Eve's and Ada's."""
    monkeypatch.setenv("DEPLOY_LOG", str(tmp_path / "deploys.txt"))
    repo = make_repo(tmp_path / "repo")
    shas = {"old": commit_as(repo, "Carol", {"a.txt": "1"}, "an old change by Carol"),
            "running": commit_as(repo, "Dave", {"a.txt": "2"}, "what prod runs today, by Dave"),
            "eve": commit_as(repo, "Eve", {"b.txt": "1"}, "after it, by Eve"),
            "head": commit_as(repo, "Ada", {".cdkit.yml": PIPELINE}, "adopt cdkit, by Ada")}
    assert cdkit("run", cwd=repo).returncode == 0
    return repo, shas


def approve(repo: Path, sha: str, who: str) -> subprocess.CompletedProcess[str]:
    return cdkit("approve", sha, "--env", "prod", cwd=repo, env=person(who))


def test_a_first_release_without_adoption_fails_closed_and_says_how_to_adopt(
        history: tuple[Path, dict[str, str]]) -> None:
    repo, shas = history
    deploy = cdkit("deploy", "--env", "prod", "--json", cwd=repo)
    assert deploy.returncode == 1
    problems = json.loads(deploy.stdout)["problems"]
    assert any("prod has no deployment and was never adopted" in p and "cdkit adopt --env prod --sha SHA" in p
               and "cdkit adopt --env prod --empty" in p for p in problems), problems
    refused = approve(repo, shas["head"], "Carol")  # no range, so no judgement of who may approve
    assert refused.returncode == 1 and "cdkit adopt --env prod" in refused.stderr
    assert "Traceback" not in refused.stderr + deploy.stderr
    assert "its first release needs `cdkit adopt`" in cdkit("environments", cwd=repo).stdout


def test_adopted_sha_is_the_range_base_authors_after_it_cannot_approve_older_ones_can(
        history: tuple[Path, dict[str, str]]) -> None:
    repo, shas = history
    adopted = cdkit("adopt", "--env", "prod", "--sha", shas["running"], "--reason", "its /version page", "--json",
                    cwd=repo)
    assert adopted.returncode == 0, adopted.stderr
    doc = json.loads(adopted.stdout)
    assert (doc["adopted"], doc["sha"], doc["empty"], doc["reason"]) == (True, shas["running"], False,
                                                                         "its /version page")
    assert not Path(os.environ["DEPLOY_LOG"]).exists()  # nothing ran
    # Attack: Eve wrote a commit after what prod runs, so she is in the range and cannot approve it.
    eve = approve(repo, shas["head"], "Eve")
    assert eve.returncode == 1 and "authored or committed a commit being released" in eve.stderr
    # Dave wrote what prod runs (the base, not in the range); Carol's commit is older still: both may.
    carol = approve(repo, shas["head"], "Carol")
    assert carol.returncode == 0, carol.stderr
    assert "1 of 1 approval(s); approved" in carol.stdout
    assert cdkit("deploy", "--env", "staging", cwd=repo).returncode == 0
    deploy = cdkit("deploy", "--env", "prod", "--json", cwd=repo)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert json.loads(deploy.stdout)["deployed"] is True
    envs = json.loads(cdkit("environments", "--json", cwd=repo).stdout)["environments"]
    prod = next(e for e in envs if e["name"] == "prod")
    assert prod["sha"] == shas["head"] and prod["adopted"]["sha"] == shas["running"]


def test_an_adopted_sha_runs_there_but_is_not_verified_for_the_next_environment(
        history: tuple[Path, dict[str, str]]) -> None:
    repo, shas = history
    assert cdkit("adopt", "--env", "staging", "--sha", shas["head"], cwd=repo).returncode == 0
    assert "ADOPTED" in cdkit("environments", cwd=repo).stdout
    assert cdkit("adopt", "--env", "prod", "--sha", shas["running"], cwd=repo).returncode == 0
    assert approve(repo, shas["head"], "Carol").returncode == 0
    refused = cdkit("deploy", "--env", "prod", cwd=repo)  # staging runs it, but cdkit never deployed it there
    assert refused.returncode == 1 and "staging, which has not run" in refused.stderr
    # Deploying the adopted SHA to staging runs it for real (not "already runs it"), then prod accepts it.
    redeploy = cdkit("deploy", "--env", "staging", "--sha", shas["head"], "--json", cwd=repo)
    assert json.loads(redeploy.stdout)["status"] == "success", redeploy.stdout
    assert cdkit("deploy", "--env", "prod", cwd=repo).returncode == 0


def test_adoption_is_refused_after_a_deployment_or_an_adoption(history: tuple[Path, dict[str, str]]) -> None:
    repo, shas = history
    assert cdkit("deploy", "--env", "staging", cwd=repo).returncode == 0  # control: a deploy (deployment mode)
    late = cdkit("adopt", "--env", "staging", "--sha", shas["running"], cwd=repo)
    assert late.returncode == 1 and "staging already has deployment #1" in late.stderr
    assert "Traceback" not in late.stderr
    assert cdkit("adopt", "--env", "prod", "--empty", cwd=repo).returncode == 0
    again = cdkit("adopt", "--env", "prod", "--sha", shas["running"], "--json", cwd=repo)
    assert again.returncode == 1
    doc = json.loads(again.stdout)
    assert doc["adopted"] is False and "prod already adopted (nothing)" in doc["problems"][0]
    neither = cdkit("adopt", "--env", "prod", cwd=repo)
    assert neither.returncode == 2 and "--sha SHA, or --empty" in neither.stderr


def test_empty_adoption_starts_the_range_at_the_root_knowingly(history: tuple[Path, dict[str, str]]) -> None:
    repo, shas = history
    assert cdkit("adopt", "--env", "prod", "--empty", cwd=repo).returncode == 0
    carol = approve(repo, shas["head"], "Carol")  # her old commit is in the whole history now
    assert carol.returncode == 1 and "authored or committed a commit being released" in carol.stderr
    assert approve(repo, shas["head"], "Bob").returncode == 0  # control: someone who wrote none of it


def test_adopt_on_github_creates_the_matching_deployment(history: tuple[Path, dict[str, str]],
                                                         fake_github: FakeGitHub) -> None:
    repo, shas = history
    run_workflow(fake_github, "acme/app", shas["head"], run_id=77)
    env = {"GITHUB_TOKEN": "ghs_faketoken", "GITHUB_REPOSITORY": "acme/app", "GITHUB_API_URL": fake_github.url,
           "GITHUB_SERVER_URL": "https://github.com"}
    adopted = cdkit("adopt", "--env", "prod", "--sha", shas["running"], "--json", cwd=repo, env=env)
    assert adopted.returncode == 0, adopted.stderr
    github_id = json.loads(adopted.stdout)["github_deployment_id"]
    deployment = fake_github.state.extra["deployments"][github_id]
    assert (deployment["sha"], deployment["environment"]) == (shas["running"], "prod")
    assert deployment["payload"]["adopted"] is True and isinstance(deployment["payload"]["cdkit_token"], str)
    statuses = fake_github.state.extra["deployment_statuses"][github_id]
    assert statuses[0]["state"] == "success"
    # A machine whose ledger knows nothing (a CI job) reads the adoption from GitHub: adopting again is refused.
    (repo / ".git" / "cdkit" / LEDGER_NAME).unlink()
    again = cdkit("adopt", "--env", "prod", "--sha", shas["head"], cwd=repo, env=env)
    assert again.returncode == 1 and "prod was adopted" in again.stderr and f"GitHub deployment {github_id}" in \
        again.stderr
    # Control: another environment GitHub knows nothing about is adopted there too (an empty one: inactive).
    empty = cdkit("adopt", "--env", "staging", "--empty", "--json", cwd=repo, env=env)
    assert empty.returncode == 0, empty.stderr
    empty_id = json.loads(empty.stdout)["github_deployment_id"]
    assert fake_github.state.extra["deployments"][empty_id]["payload"]["adopted_empty"] is True
    assert fake_github.state.extra["deployment_statuses"][empty_id][0]["state"] == "inactive"


def test_a_schema_9_ledger_migrates_to_adoptions_and_revocations(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_NAME
    db = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:9]:
        if callable(migration):
            migration(db, 0.0)
        else:
            for statement in _statements(migration):
                db.execute(statement)
    db.execute("PRAGMA user_version = 9")
    db.execute("INSERT INTO deployments (environment, sha, status, started_at) VALUES ('prod', ?, 'success', 1)",
               ("a" * 40,))
    db.close()
    with Ledger(path) as ledger:
        assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
        assert ledger.current_deployment("prod")["sha"] == "a" * 40  # type: ignore[index]
        assert ledger.adopt(environment="staging", sha="b" * 40, adopted_by="me", reason=None) == 2
        with pytest.raises(sqlite3.IntegrityError):  # once per environment, in the schema too
            ledger.db.execute("INSERT INTO deployments (environment, sha, status, started_at) "
                              "VALUES ('staging', '', 'adopted', 2)")
        first = ledger.add_approval(sha="c" * 40, environment="prod", approver="A <a@x>", via="local")
        ledger.add_approval(sha="c" * 40, environment="prod", approver="A <a@x>", via="revocation", revokes=first)
        assert ledger.standing_approvals(sha="c" * 40, environment="prod", via="local") == []
