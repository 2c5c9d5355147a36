"""`cdkit history` and `cdkit metrics` with `--source github`, against the fake GitHub (issue 13 §1, §2).

GitHub lists deployments newest first, 100 a page at most; each deployment's outcome is
in its statuses (one more request each). Every page is read, paging stops at `--since`,
and the request count shown is the number of requests the fake received.
"""
from __future__ import annotations

import json
from pathlib import Path

import tests.fake_github_release  # noqa: F401 - registers the deployment endpoints
from tests.fake_github import FakeGitHub
from tests.fake_github_release import add_deployment, start_job_deployment
from tests.helpers import cdkit, commit, config, make_repo

DAY = 86400


def env_for(server: FakeGitHub) -> dict[str, str]:
    return {"GITHUB_TOKEN": "ghs_faketoken", "GITHUB_REPOSITORY": "acme/app", "GITHUB_API_URL": server.url}


def iso(day: int, hour: int = 0) -> str:
    return f"2026-01-{day:02d}T{hour:02d}:00:00Z"


def test_every_page_is_read_and_the_requests_are_counted(tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, {"a": "1"})
    for n in range(130):  # 130 deployments: two pages of deployments, one statuses request each
        add_deployment(fake_github, environment="prod", sha=sha, state="failure" if n % 10 == 0 else "success",
                       created_at=f"2026-01-01T{n // 60:02d}:{n % 60:02d}:00Z",
                       finished_at=f"2026-01-01T{n // 60:02d}:{n % 60:02d}:30Z", creator="deployer")
    before = fake_github.count()
    result = cdkit("history", "--source", "github", "--json", cwd=repo, env=env_for(fake_github))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert fake_github.count() - before == data["github_requests"] == 2 + 130
    pages = [r for r in fake_github.requests if r.path == "/repos/acme/app/deployments"]
    assert [r.query.get("page", "1") for r in pages] == ["1", "2"] and pages[0].query["per_page"] == "100"
    rows = data["deployments"]
    assert len(rows) == 130
    assert rows[0]["started_at"] == "2026-01-01T02:09:00Z" and rows[-1]["started_at"] == "2026-01-01T00:00:00Z"
    assert rows[0]["finished_at"] == "2026-01-01T02:09:30Z" and rows[0]["duration_seconds"] == 30.0
    assert [r["outcome"] for r in rows].count("failed") == 13
    assert rows[0]["deployed_by"] == "@deployer"

    table = cdkit("history", "--source", "github", cwd=repo, env=env_for(fake_github))
    assert table.stdout.splitlines()[-1] == "130 deployment(s) from GitHub (acme/app, 132 requests); times are local"


def test_paging_stops_at_since(tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, {"a": "1"})
    for day in range(1, 31):
        add_deployment(fake_github, environment="prod", sha=sha, state="success", created_at=iso(day))
    before = fake_github.count()
    result = cdkit("history", "--source", "github", "--since", "2026-01-26T00:00:00Z", "--json", cwd=repo,
                   env=env_for(fake_github))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["started_at"] for r in data["deployments"]] == [iso(d) for d in range(30, 25, -1)]
    assert data["github_requests"] == fake_github.count() - before == 1 + 5  # one page, five statuses


def test_a_cdkit_deploy_on_github_shows_with_its_payload_and_job_deployments_do_not(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, {".cdkit.yml": config("""
        version: 1
        stages: [{name: build, run: "true"}]
        environments:
          - {name: staging, mode: deployment, deploy: "true"}
    """)})
    env = {**env_for(fake_github), "GITHUB_RUN_ID": "77", "GITHUB_SERVER_URL": "https://github.com"}
    start_job_deployment(fake_github, repo="acme/app", environment="staging", sha=sha, run_id="77",
                         state="success")
    assert cdkit("run", "--deploy", cwd=repo, env=env).returncode == 0
    data = json.loads(cdkit("history", "--source", "github", "--json", cwd=repo, env=env).stdout)
    (row,) = data["deployments"]  # GitHub's deployment for the job describes the same release: left out
    assert (row["environment"], row["sha"], row["outcome"]) == ("staging", sha, "deployed")
    assert row["deployed_by"] == "Ada Author <ada@example.com>" and row["rollback"] is False

    metrics = json.loads(cdkit("metrics", "--source", "github", "--json", cwd=repo, env=env).stdout)
    assert metrics["environments"]["staging"]["deployment_frequency"]["deployments"] == 1
    assert metrics["github_requests"] == 1 + 2


def test_an_adoption_on_github_is_a_baseline_as_in_the_ledger_and_its_statuses_are_not_read(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo = make_repo(tmp_path / "repo")
    adopted = commit(repo, {"a": "1"})
    sha = commit(repo, {".cdkit.yml": config("""
        version: 1
        stages: [{name: build, run: "true"}]
        environments:
          - {name: staging, mode: deployment, deploy: "true"}
    """)})
    env = env_for(fake_github)
    adopt = cdkit("adopt", "--env", "staging", "--sha", adopted, cwd=repo, env=env)
    assert adopt.returncode == 0, adopt.stderr
    assert cdkit("run", "--deploy", cwd=repo, env=env).returncode == 0
    local = json.loads(cdkit("history", "--json", cwd=repo).stdout)["deployments"]
    data = json.loads(cdkit("history", "--source", "github", "--json", cwd=repo, env=env).stdout)
    rows = data["deployments"]
    assert [(r["sha"], r["outcome"]) for r in rows] == [(sha, "deployed"), (adopted, "baseline")]
    assert [(r["sha"], r["outcome"]) for r in local] == [(sha, "deployed"), (adopted, "baseline")]
    assert data["github_requests"] == 1 + 1  # the deployments, the statuses of the deploy (the control)
    metrics = json.loads(cdkit("metrics", "--source", "github", "--json", cwd=repo, env=env).stdout)
    assert metrics["environments"]["staging"]["deployment_frequency"]["deployments"] == 1


def test_github_source_without_a_token_is_a_usage_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    commit(repo, {"a": "1"})
    result = cdkit("history", "--source", "github", cwd=repo)
    assert result.returncode == 2
    assert result.stderr == "cdkit: --source github needs a token: set GITHUB_TOKEN (or GH_TOKEN), or pass --token\n"
    # the positive control: the ledger needs none
    assert cdkit("history", cwd=repo).returncode == 0
