"""Releases end to end against the fake GitHub server (real git, real ledger, the real CLI).

Deployment mode deploys on the release branch and creates a GitHub deployment with
auto_merge=false; delivery via review refuses self-approval, stale, read-only,
dismissed and change-requested reviews, then deploys after a valid one; delivery via
environment fails closed on a missing or unprotected environment and records approvers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tests.fake_github_release  # noqa: F401 - registers the release endpoints
from tests import event_payloads as ev
from tests.fake_github import FakeGitHub
from tests.fake_github_release import (
    add_deployment, before_next_deployment, before_next_deployment_status, link_git, start_job_deployment,
)
from tests.helpers import adopt_new, cdkit, commit, config, delivery_pipeline, git, make_repo
from tests.test_action import run_action, run_workflow

ADA = {"login": "ada", "id": 1, "type": "User"}
BOB = {"login": "bob", "id": 2, "type": "User"}
CAROL = {"login": "carol", "id": 3, "type": "User"}
DAVE = {"login": "dave", "id": 4, "type": "User"}


def pipeline(via: str) -> str:
    return delivery_pipeline(via, url="https://prod.example.com")


def gh_env(server: FakeGitHub, sha: str) -> dict[str, str]:
    run_workflow(server, "acme/app", sha, run_id=77)
    return {"GITHUB_TOKEN": "ghs_faketoken", "GITHUB_REPOSITORY": "acme/app", "GITHUB_API_URL": server.url,
            "GITHUB_ACTOR": "ada", "GITHUB_RUN_ID": "77", "GITHUB_SHA": sha,
            "GITHUB_SERVER_URL": "https://github.com"}


def github_deployments(server: FakeGitHub) -> list[dict[str, Any]]:
    return list(server.state.extra.get("deployments", {}).values())


def test_deployment_mode_deploys_on_the_release_branch_with_auto_merge_false(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, {".cdkit.yml": config("""
        version: 1
        stages: [{name: build, run: "true"}]
        environments:
          - {name: staging, mode: deployment, deploy: "true", url: "https://staging.example.com"}
    """)})
    result = cdkit("run", "--deploy", "--json", cwd=repo, env=gh_env(fake_github, sha))
    assert result.returncode == 0, result.stderr
    assert [d["status"] for d in json.loads(result.stdout)["deployments"]] == ["success"]
    (deployment,) = github_deployments(fake_github)
    request = deployment["_request"]
    assert request["auto_merge"] is False and request["required_contexts"] == []
    assert request["ref"] == sha and request["environment"] == "staging"
    assert request["payload"]["rollback"] is False and request["payload"]["approval"] is None
    statuses = fake_github.state.extra["deployment_statuses"][deployment["id"]]
    assert [s["state"] for s in statuses] == ["success", "in_progress"]
    assert statuses[0]["environment_url"] == "https://staging.example.com"
    assert statuses[0]["log_url"] == "https://github.com/acme/app/actions/runs/77"


@pytest.fixture
def review_repo(tmp_path: Path, fake_github: FakeGitHub) -> tuple[Path, str]:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, {".cdkit.yml": pipeline("review")}, "add `$(rm -rf /)` @everyone [x](y)")
    assert cdkit("run", cwd=repo).returncode == 0
    extra = fake_github.state.extra
    extra["permissions"] = {"ada": "admin", "bob": "write", "carol": "read", "dave": "maintain"}
    adopt_new(repo, "prod")  # a new prod (recorded in this ledger only): the release holds the whole history
    opened = cdkit("release", "open", "--env", "prod", "--json", cwd=repo, env=gh_env(fake_github, sha))
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout)["pull_request"] == 1
    link_git(fake_github, repo, {"ada@example.com": ADA})  # Ada's email is verified on her account
    return repo, sha


def review(rid: int, user: dict[str, Any], state: str, sha: str, at: str = "2024-05-01T10:00:00Z") -> dict[str, Any]:
    return {"id": rid, "user": user, "state": state, "commit_id": sha, "submitted_at": at, "body": ""}


def check(repo: Path, server: FakeGitHub, sha: str) -> tuple[int, dict[str, Any]]:
    result = cdkit("release", "check", "--env", "prod", "--json", cwd=repo, env=gh_env(server, sha))
    return result.returncode, json.loads(result.stdout)


def test_release_pull_request_lists_the_commits_as_inert_text(
        review_repo: tuple[Path, str], fake_github: FakeGitHub) -> None:
    _, sha = review_repo
    pull = fake_github.state.extra["pulls"][1]
    assert (pull["head"]["ref"], pull["head"]["sha"]) == ("cdkit/release/prod", sha)
    assert pull["base"]["ref"] == "cdkit/deployed/prod"
    assert pull["head"]["repo"]["full_name"] == pull["base"]["repo"]["full_name"] == "acme/app"
    assert f"`{sha[:12]}` add \\`$\\(rm \\-rf /\\)\\` \\@everyone \\[x\\]\\(y\\)" in pull["body"]
    assert "| `build` | passed |" in pull["body"]


@pytest.mark.parametrize("reviews, reason", [
    (lambda sha: [review(1, ADA, "APPROVED", sha)],
     "ada's approval does not count: ada opened the pull request"),
    (lambda sha: [review(1, BOB, "APPROVED", "f" * 40)],
     "bob's approval does not count: bob approved ffffffffffff, not"),
    (lambda sha: [review(1, CAROL, "APPROVED", sha)],
     "carol's approval does not count: carol has read access; approving needs write, maintain or admin"),
    (lambda sha: [review(1, BOB, "DISMISSED", sha)],
     "bob's review was dismissed, so it does not count"),
    (lambda sha: [review(1, BOB, "APPROVED", sha), review(2, DAVE, "CHANGES_REQUESTED", sha)],
     "dave requested changes"),
], ids=["self-approval", "stale", "read-only", "dismissed", "changes-requested"])
def test_review_mode_refuses_invalid_approvals(review_repo: tuple[Path, str], fake_github: FakeGitHub,
                                               reviews: Any, reason: str) -> None:
    repo, sha = review_repo
    if reason.startswith("ada's"):
        # Ada authored the commits; make her the PR author too (she opened it by hand).
        fake_github.state.extra["pulls"][1]["user"] = ADA
    fake_github.state.extra["reviews"] = {1: reviews(sha)}
    code, data = check(repo, fake_github, sha)
    assert code == 1
    assert not data["deployable"] and not data["released"]
    assert any(reason in p for p in data["problems"]), data["problems"]
    assert github_deployments(fake_github) == []


def test_review_mode_commit_author_cannot_approve(review_repo: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, sha = review_repo
    fake_github.state.extra["reviews"] = {1: [review(1, ADA, "APPROVED", sha)]}
    code, data = check(repo, fake_github, sha)
    assert code == 1
    assert any("authored or committed a commit being released" in p for p in data["problems"])


def test_review_mode_deploys_after_a_valid_approval_reading_every_page(
        review_repo: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, sha = review_repo
    # 120 comments first (two pages), then Bob's approval, then a comment that keeps it approved.
    noise = [review(100 + n, DAVE, "COMMENTED", sha, "2024-05-01T09:00:00Z") for n in range(120)]
    fake_github.state.extra["reviews"] = {1: [*noise, review(1, BOB, "APPROVED", sha),
                                              review(2, BOB, "COMMENTED", sha, "2024-05-01T11:00:00Z")]}
    code, data = check(repo, fake_github, sha)
    assert code == 0, data
    assert data["released"] and data["deployment"]["status"] == "success"
    assert data["approval"]["counted"][0]["who"] == "bob"
    (deployment,) = github_deployments(fake_github)
    assert deployment["_request"]["auto_merge"] is False and deployment["_request"]["required_contexts"] == []
    assert deployment["_request"]["payload"]["approval"]["counted"][0]["who"] == "bob"
    assert [s["state"] for s in fake_github.state.extra["deployment_statuses"][deployment["id"]]] == \
        ["success", "in_progress"]
    reads = [r for r in fake_github.requests if r.path.endswith("/pulls/1/reviews")]
    assert len(reads) >= 2  # every page


def test_environment_mode_fails_closed_on_missing_or_unprotected_environment_then_records_approvers(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, {".cdkit.yml": pipeline("environment")})
    assert cdkit("run", cwd=repo).returncode == 0
    adopt_new(repo, "prod")
    link_git(fake_github, repo, {"ada@example.com": ADA})
    env = gh_env(fake_github, sha)

    missing = cdkit("deploy", "--env", "prod", cwd=repo, env=env)
    assert missing.returncode == 1
    assert "the GitHub environment 'prod' does not exist" in missing.stderr
    assert "Settings > Environments > prod and add required reviewers" in missing.stderr

    environments = fake_github.state.extra.setdefault("environments", {})
    environments["prod"] = {"id": 1, "name": "prod", "protection_rules": [{"id": 5, "type": "wait_timer",
                                                                            "wait_timer": 0}]}
    unprotected = cdkit("deploy", "--env", "prod", cwd=repo, env=env)
    assert unprotected.returncode == 1 and "has no required reviewers" in unprotected.stderr

    environments["prod"]["protection_rules"] = [{"id": 6, "type": "required_reviewers",
                                                 "reviewers": [{"type": "User", "reviewer": BOB}]}]
    nobody = cdkit("deploy", "--env", "prod", cwd=repo, env=env)
    assert nobody.returncode == 1 and "nobody approved this run for the environment prod" in nobody.stderr

    fake_github.state.extra["run_approvals"] = {"77": [
        {"state": "approved", "comment": "go", "user": BOB, "environments": [{"id": 1, "name": "prod"}]}]}
    done = cdkit("deploy", "--env", "prod", "--json", cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    approval = json.loads(done.stdout)["approval"]
    assert approval["via"] == "environment"
    assert approval["counted"] == [{"who": "bob", "via": "environment prod", "at": None, "comment": "go"}]
    assert github_deployments(fake_github)[0]["_request"]["auto_merge"] is False


def opened_release(tmp_path: Path, fake_github: FakeGitHub, policy: str) -> tuple[Path, str]:
    """A review-approved `prod` (`policy`: more approval keys), adopted, a passed change and its release PR open."""
    repo = make_repo(tmp_path / "repo")
    commit(repo, {".cdkit.yml": delivery_pipeline("review", policy, url="https://prod.example.com")}, "the pipeline")
    sha = commit(repo, {"app.txt": "v2"}, "a change")
    assert cdkit("run", cwd=repo).returncode == 0
    fake_github.state.extra["permissions"] = {"bob": "write"}
    adopt_new(repo, "prod")
    assert cdkit("release", "open", "--env", "prod", cwd=repo, env=gh_env(fake_github, sha)).returncode == 0
    link_git(fake_github, repo, {"ada@example.com": ADA})
    return repo, sha


def test_a_review_older_than_approval_expires_does_not_count(tmp_path: Path, fake_github: FakeGitHub) -> None:
    import datetime as dt

    repo, sha = opened_release(tmp_path, fake_github, ", expires: 7d")
    # Attack: an approval submitted long ago (GitHub's submitted_at) no longer counts.
    fake_github.state.extra["reviews"] = {1: [review(1, BOB, "APPROVED", sha, at="2024-05-01T10:00:00Z")]}
    code, data = check(repo, fake_github, sha)
    assert not data["released"], data
    assert any("bob's approval does not count: bob gave it at 2024-05-01 10:00 UTC, and it expired at "
               "2024-05-08 10:00 UTC (approval.expires: 7d)" in r for r in data["approval"]["reasons"]), data
    # Control: the same approval submitted just now counts, and releases.
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    fake_github.state.extra["reviews"] = {1: [review(1, BOB, "APPROVED", sha, at=now)]}
    code, data = check(repo, fake_github, sha)
    assert code == 0 and data["released"], data


@pytest.mark.parametrize("merge", [True, False])
def test_a_deployed_release_pull_request_is_merged_when_configured(tmp_path: Path, fake_github: FakeGitHub,
                                                                   merge: bool) -> None:
    repo, sha = opened_release(tmp_path, fake_github, f", merge: {str(merge).lower()}")
    fake_github.state.extra["reviews"] = {1: [review(1, BOB, "APPROVED", sha)]}
    code, data = check(repo, fake_github, sha)
    assert code == 0 and data["released"], data
    pull = fake_github.state.extra["pulls"][1]
    refs = fake_github.state.extra["refs"]
    if merge:
        assert refs["refs/heads/cdkit/deployed/prod"] == sha
        assert pull["state"] == "closed" and pull["merged"] is True
    else:
        assert refs["refs/heads/cdkit/deployed/prod"] != sha
        assert pull["state"] == "open"


# --- who triggered the run: a reviewer, a pusher, someone re-running ------------------------------------------


def review_event(sha: str, *, reviewer: str, **pull: Any) -> dict[str, Any]:
    """A `pull_request_review` payload for release PR #1 of acme/app at `sha`; `side__key=value` overrides."""
    payload = ev.event("pull_request_review.submitted.approved.json", {ev.PR_HEAD: sha})
    repository = {"id": 1296269, "full_name": "acme/app", "name": "app", "owner": {"login": "acme"}}
    payload["pull_request"]["number"] = 1
    payload["pull_request"]["head"].update(ref="cdkit/release/prod", sha=sha, repo=dict(repository))
    payload["pull_request"]["base"].update(ref="cdkit/deployed/prod", repo=dict(repository))
    for dotted, value in pull.items():
        side, key = dotted.split("__")
        payload["pull_request"][side][key] = value
    payload["review"]["user"]["login"] = reviewer
    return payload


def action_env(server: FakeGitHub, sha: str, *, actor: str, triggering_actor: str) -> dict[str, str]:
    return {**gh_env(server, sha), "INPUT_TOKEN": "ghs_faketoken", "GITHUB_ACTOR": actor,
            "GITHUB_TRIGGERING_ACTOR": triggering_actor, "GITHUB_RUN_ID": "77"}


def test_the_reviewer_who_triggered_the_review_run_is_counted_and_it_deploys(
        review_repo: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, sha = review_repo
    fake_github.state.extra["reviews"] = {1: [review(1, BOB, "APPROVED", sha)]}
    run = run_action(repo, "pull_request_review", review_event(sha, reviewer="bob"), sha=sha,
                     env=action_env(fake_github, sha, actor="bob", triggering_actor="bob"))
    assert run.proc.returncode == 0, run.proc.stderr + run.proc.stdout
    assert (run.outputs["result"], run.outputs["sha"]) == ("deployed", sha), run.summary
    (deployment,) = github_deployments(fake_github)
    assert deployment["_request"]["payload"]["approval"]["counted"][0]["who"] == "bob"


@pytest.mark.parametrize("event, actor, triggering, reason", [
    ("push", "bob", "bob", "bob triggered this run (actor), so cannot approve it"),
    ("workflow_dispatch", "dave", "bob", "bob re-ran this run (triggering actor), so cannot approve it"),
    ("pull_request_review", "dave", "bob", "bob re-ran this run (triggering actor), so cannot approve it"),
], ids=["pusher", "re-run of a dispatch", "re-run of a review"])
def test_whoever_started_a_release_still_cannot_approve_it(
        review_repo: tuple[Path, str], fake_github: FakeGitHub, event: str, actor: str, triggering: str,
        reason: str) -> None:
    repo, sha = review_repo
    fake_github.state.extra["reviews"] = {1: [review(1, BOB, "APPROVED", sha)]}
    env = {**gh_env(fake_github, sha), "GITHUB_EVENT_NAME": event, "GITHUB_ACTOR": actor,
           "GITHUB_TRIGGERING_ACTOR": triggering}
    result = cdkit("release", "check", "--env", "prod", "--json", cwd=repo, env=env)
    data = json.loads(result.stdout)
    assert result.returncode == 1 and not data["released"]
    assert any(f"bob's approval does not count: {reason}" in p for p in data["problems"]), data["problems"]
    assert github_deployments(fake_github) == []


# --- a review of a look-alike pull request ----------------------------------------------------------------------


FORK = {"id": 99, "full_name": "mallory/app", "name": "app", "owner": {"login": "mallory"}}


@pytest.mark.parametrize("pull", [{"head__repo": FORK}, {"head__repo": None}, {"base__ref": "main"}],
                         ids=["fork head", "deleted fork head", "another base"])
def test_a_review_of_a_look_alike_pull_request_deploys_nothing(
        review_repo: tuple[Path, str], fake_github: FakeGitHub, pull: dict[str, Any]) -> None:
    repo, sha = review_repo
    fake_github.state.extra["reviews"] = {1: [review(1, BOB, "APPROVED", sha)]}
    # Dave reviewed the look-alike; Bob's approval of the real release PR would count.
    run = run_action(repo, "pull_request_review", review_event(sha, reviewer="dave", **pull), sha=sha,
                     env=action_env(fake_github, sha, actor="dave", triggering_actor="dave"))
    assert run.proc.returncode == 0, run.proc.stderr + run.proc.stdout
    assert run.outputs["result"] == "skipped" and "nothing to release" in run.summary
    assert github_deployments(fake_github) == []


@pytest.mark.parametrize("change", ["base", "fork"])
def test_release_check_ignores_a_release_branch_pull_request_into_another_base_or_from_a_fork(
        review_repo: tuple[Path, str], fake_github: FakeGitHub, change: str) -> None:
    repo, sha = review_repo
    pull = fake_github.state.extra["pulls"][1]
    if change == "base":
        pull["base"]["ref"] = "main"
    else:
        pull["head"]["repo"] = FORK
    fake_github.state.extra["reviews"] = {1: [review(1, BOB, "APPROVED", sha)]}
    result = cdkit("release", "check", "--env", "prod", cwd=repo, env=gh_env(fake_github, sha))
    assert result.returncode == 1
    assert "there is no open release pull request for prod" in result.stderr
    assert github_deployments(fake_github) == []


# --- the deploy job's own GitHub deployment, and deploys started on two machines --------------------------------


@pytest.fixture
def environment_repo(tmp_path: Path, fake_github: FakeGitHub) -> tuple[Path, str]:
    repo = make_repo(tmp_path / "repo")
    sha = commit(repo, {".cdkit.yml": pipeline("environment")})
    assert cdkit("run", cwd=repo).returncode == 0
    link_git(fake_github, repo, {"ada@example.com": ADA})
    extra = fake_github.state.extra
    extra["environments"] = {"prod": {"id": 1, "name": "prod", "protection_rules": [
        {"id": 6, "type": "required_reviewers", "reviewers": [{"type": "User", "reviewer": BOB}]}]}}
    extra["run_approvals"] = {"77": [{"state": "approved", "comment": "go", "user": BOB,
                                      "environments": [{"id": 1, "name": "prod"}]}]}
    return repo, sha


def push_deploy(repo: Path, server: FakeGitHub, sha: str) -> Any:
    """The workflow's deploy job (`environment: prod`) running `cdkit action` with command: deploy."""
    payload = ev.event("push.5.json", {ev.PUSH_AFTER: sha}, ref="refs/heads/main")
    env = {**action_env(server, sha, actor="ada", triggering_actor="ada"),
           "INPUT_COMMAND": "deploy", "INPUT_ENVIRONMENT": "prod"}
    return run_action(repo, "push", payload, sha=sha, env=env)


@pytest.mark.parametrize("how", ["cdkit deploy", "cdkit action"])
def test_the_deploy_jobs_own_github_deployment_does_not_block_it(
        environment_repo: tuple[Path, str], fake_github: FakeGitHub, how: str) -> None:
    repo, sha = environment_repo
    job = start_job_deployment(fake_github, repo="acme/app", environment="prod", sha=sha, run_id="77")
    if how == "cdkit deploy":
        result = cdkit("deploy", "--env", "prod", "--json", cwd=repo, env=gh_env(fake_github, sha))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "success"
    else:
        run = push_deploy(repo, fake_github, sha)
        assert run.proc.returncode == 0, run.proc.stderr + run.proc.stdout
        assert run.outputs["result"] == "deployed"
    ours = [d for d in github_deployments(fake_github) if d["id"] != job]
    assert len(ours) == 1
    assert fake_github.state.extra["deployment_statuses"][ours[0]["id"]][0]["state"] == "success"


@pytest.mark.parametrize("run", [{"status": "in_progress"}, None])
def test_a_deployment_whose_workflow_run_still_runs_or_is_unknown_still_refuses(
        environment_repo: tuple[Path, str], fake_github: FakeGitHub, run: dict[str, Any] | None) -> None:
    repo, sha = environment_repo
    if run is not None:
        fake_github.state.extra["workflow_runs"] = {"771": run}
    other = start_job_deployment(fake_github, repo="acme/app", environment="prod", sha=sha, run_id="771")
    result = cdkit("deploy", "--env", "prod", cwd=repo, env=gh_env(fake_github, sha))
    assert result.returncode == 1
    assert f"in progress on GitHub (deployment {other} of {sha[:12]} is in_progress" in result.stderr
    if run is None:  # a run cdkit cannot read may still run: it says so, and fails closed
        assert "cdkit could not read its workflow run 771 (HTTP 404): with `actions: read`" in result.stderr
    assert fake_github.state.extra["deployment_statuses"][other][0]["state"] == "in_progress"


@pytest.mark.parametrize("created_by", ["github job", "cdkit"])
def test_a_deployment_left_in_progress_by_a_run_that_ended_is_marked_and_does_not_block(
        environment_repo: tuple[Path, str], fake_github: FakeGitHub, created_by: str) -> None:
    repo, sha = environment_repo
    fake_github.state.extra["workflow_runs"] = {"771": {"status": "completed", "conclusion": "cancelled"}}
    if created_by == "github job":
        stuck = start_job_deployment(fake_github, repo="acme/app", environment="prod", sha=sha, run_id="771")
    else:  # cdkit's own deployment, whose job was killed before it could post the final status
        stuck = add_deployment(fake_github, environment="prod", sha=sha, state="in_progress")
        fake_github.state.extra["deployments"][stuck]["payload"] = {"cdkit_token": "x", "cdkit_run_id": "771"}
    result = cdkit("deploy", "--env", "prod", "--json", cwd=repo, env=gh_env(fake_github, sha))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "success"
    latest = fake_github.state.extra["deployment_statuses"][stuck][0]
    assert (latest["state"], latest["description"]) == \
        ("error", "cdkit: abandoned, its workflow run 771 ended (cancelled)")
    (ours,) = [d for d in github_deployments(fake_github) if d["id"] != stuck]
    assert ours["payload"]["cdkit_run_id"] == "77"  # so a later deploy can tell if this one is abandoned


def staging_repo(tmp_path: Path) -> tuple[Path, str, Path]:
    """A deployment-mode repository whose HEAD passed its stages off the release branch (so nothing deployed it)."""
    marker = tmp_path / "deployed"
    repo = make_repo(tmp_path / "repo")
    commit(repo, {"README": "app"}, "start")
    git(repo, "checkout", "-q", "-b", "feature")
    sha = commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages: [{{name: build, run: "true"}}]
        environments:
          - {{name: staging, mode: deployment, deploy: "echo $CDKIT_SHA >> {marker}"}}
    """)})
    assert cdkit("run", cwd=repo).returncode == 0
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--ff-only", "feature")
    assert not marker.exists()
    return repo, sha, marker


def test_of_two_deploys_started_at_once_the_later_one_steps_back(tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo, sha, marker = staging_repo(tmp_path)
    rival: list[int] = []
    # Another machine passed its checks too and created its deployment just before ours.
    before_next_deployment(fake_github, lambda: rival.append(
        add_deployment(fake_github, environment="staging", sha=sha, state="in_progress")))
    result = cdkit("deploy", "--env", "staging", cwd=repo, env=gh_env(fake_github, sha))
    assert result.returncode == 1
    assert f"another deploy to staging started first on GitHub (deployment {rival[0]} of {sha[:12]} is in_progress)" \
        in result.stderr
    assert not marker.exists()  # nothing deployed
    (ours,) = [d for d in github_deployments(fake_github) if d["id"] != rival[0]]
    latest = fake_github.state.extra["deployment_statuses"][ours["id"]][0]
    assert (latest["state"], latest["description"]) == ("failure", "another deploy started first")
    status = cdkit("status", sha, "--json", cwd=repo)
    assert '"status": "refused"' in status.stdout, status.stdout  # the ledger records it as refused


def test_of_two_deploys_started_at_once_the_first_one_goes_on(tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo, sha, marker = staging_repo(tmp_path)
    later: list[int] = []
    # The other machine created its deployment right after ours: it is the one to step back.
    before_next_deployment_status(fake_github, lambda: later.append(
        add_deployment(fake_github, environment="staging", sha=sha, state="in_progress")))
    result = cdkit("deploy", "--env", "staging", cwd=repo, env=gh_env(fake_github, sha))
    assert result.returncode == 0, result.stderr
    assert marker.read_text().split() == [sha]
    (ours,) = [d for d in github_deployments(fake_github) if d["id"] != later[0]]
    assert ours["id"] < later[0]
    assert fake_github.state.extra["deployment_statuses"][ours["id"]][0]["state"] == "success"


@pytest.mark.parametrize("creator", ["github-actions[bot]", "octocat"])
def test_an_adoption_never_counts_as_a_deploy_in_progress_unless_a_writer_forged_it(
        environment_repo: tuple[Path, str], fake_github: FakeGitHub, creator: str) -> None:
    """cdkit's own adoption records what runs, never a deploy: even left without its final status it blocks
    nothing. A writer's deployment that only says it is an adoption still blocks."""
    repo, sha = environment_repo
    left = add_deployment(fake_github, environment="prod", sha=sha, state="in_progress", creator=creator,
                          payload={"cdkit_token": "x", "adopted": True})
    result = cdkit("deploy", "--env", "prod", "--json", cwd=repo, env=gh_env(fake_github, sha))
    if creator == "github-actions[bot]":
        assert result.returncode == 0 and json.loads(result.stdout)["status"] == "success", result.stderr
    else:
        assert result.returncode == 1
        assert f"in progress on GitHub (deployment {left} of {sha[:12]} is in_progress" in result.stdout


def test_release_branches_are_created_first_then_moved_and_leftover_ones_are_moved(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    """A first release creates its two branches at once; a later one moves them; branches a closed pull request
    left behind (the guess "first release" wrong) are moved after the creation is refused, never lost."""
    def ref_writes() -> list[str]:
        return [r.method for r in fake_github.requests if "/git/refs" in r.path]

    repo, sha = opened_release(tmp_path, fake_github, "")
    assert ref_writes() == ["POST", "POST"]  # no move tried first on a first release
    refs = fake_github.state.extra["refs"]
    assert refs["refs/heads/cdkit/release/prod"] == sha

    newer = commit(repo, {"app.txt": "v3"}, "another change")
    assert cdkit("run", cwd=repo).returncode == 0
    fake_github.requests.clear()
    moved = cdkit("release", "open", "--env", "prod", "--json", cwd=repo, env=gh_env(fake_github, newer))
    assert moved.returncode == 0 and json.loads(moved.stdout)["created"] is False, moved.stderr
    assert ref_writes() == ["PATCH", "PATCH"] and refs["refs/heads/cdkit/release/prod"] == newer

    fake_github.state.extra["pulls"][1]["state"] = "closed"  # closed by hand: its branches stay
    fake_github.requests.clear()
    again = cdkit("release", "open", "--env", "prod", "--json", cwd=repo, env=gh_env(fake_github, newer))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["created"] is True and json.loads(again.stdout)["pull_request"] == 2
    assert ref_writes() == ["POST", "PATCH", "POST", "PATCH"]  # refused as existing, then moved
    assert refs["refs/heads/cdkit/release/prod"] == newer
