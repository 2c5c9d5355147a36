"""The people who may not approve a release (issue 9 §3), end to end against the fake GitHub with real git.

Excluded on every approval path: the accounts linked to each released commit's author and
committer, `Co-authored-by:` people, the authors of the pull requests that brought the
commits in, the recorded pusher of a direct push, the release PR's author, the run's actor.
A released commit none of these identify fails the approval closed. Each attack is paired
with a positive control that releases, so a refusal cannot pass vacuously.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import tests.fake_github_release  # noqa: F401 - registers the release endpoints
from tests import event_payloads as ev
from tests.fake_github import FakeGitHub
from tests.fake_github_release import add_deployment, brought_in_by, link_git
from tests.helpers import cdkit, commit, delivery_pipeline, empty_commits, git, make_repo, write
from tests.test_action import run_action, run_workflow

ADA = {"login": "ada", "id": 1, "type": "User"}
BOB = {"login": "bob", "id": 2, "type": "User"}
CAROL = {"login": "carol", "id": 3, "type": "User"}
DAVE = {"login": "dave", "id": 4, "type": "User"}
MALLORY = {"login": "mallory", "id": 5, "type": "User"}
LINKED = {"ada@example.com": ADA, "carol@corp.example": CAROL, "mal@corp.example": MALLORY}
REPO = "acme/app"


def commit_as(repo: Path, author: str, message: str = "a change", files: dict[str, str] | None = None) -> str:
    """A commit whose git author is `author` ("Name <email>"); the committer stays Ada."""
    write(repo, files or {f"{abs(hash(message)) % 10**8}.txt": message})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", f"--author={author}", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def gh_env(server: FakeGitHub, sha: str, **extra: str) -> dict[str, str]:
    run_workflow(server, REPO, sha, run_id=77)
    return {"GITHUB_TOKEN": "ghs_faketoken", "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": server.url,
            "GITHUB_ACTOR": "ada", "GITHUB_RUN_ID": "77", "GITHUB_SHA": sha,
            "GITHUB_SERVER_URL": "https://github.com", **extra}


def review(rid: int, user: dict[str, Any], sha: str) -> dict[str, Any]:
    return {"id": rid, "user": user, "state": "APPROVED", "commit_id": sha, "submitted_at": "2024-05-01T10:00:00Z",
            "body": ""}


class World:
    """A repository whose prod runs `base` (cdkit's deployment on GitHub), approved through `via`."""

    def __init__(self, tmp_path: Path, server: FakeGitHub, via: str = "review", policy: str = "") -> None:
        self.server, self.via = server, via
        self.repo = make_repo(tmp_path / "repo")
        self.base = commit(self.repo, {".cdkit.yml": delivery_pipeline(via, policy)}, "the pipeline")
        link_git(server, self.repo, LINKED)
        extra = server.state.extra
        extra["permissions"] = {login: "write" for login in ("ada", "bob", "carol", "dave", "mallory")}
        add_deployment(server, environment="prod", sha=self.base, state="success", payload={"cdkit_token": "t"},
                       creator="github-actions[bot]")
        extra["environments"] = {"prod": {"id": 1, "name": "prod", "protection_rules": [
            {"id": 6, "type": "required_reviewers", "reviewers": [{"type": "User", "reviewer": BOB}]}]}}

    def release(self, sha: str, approver: dict[str, Any], **env: str) -> tuple[int, dict[str, Any]]:
        """Stages pass on `sha`; `approver` approves it (a review, or the run's environment approval); release check."""
        assert cdkit("run", cwd=self.repo).returncode == 0
        if self.via == "review":
            opened = cdkit("release", "open", "--env", "prod", cwd=self.repo, env=gh_env(self.server, sha))
            assert opened.returncode == 0, opened.stderr
            self.server.state.extra["reviews"] = {1: [review(1, approver, sha)]}
        else:
            self.server.state.extra["run_approvals"] = {"77": [
                {"state": "approved", "comment": "go", "user": approver, "environments": [{"id": 1, "name": "prod"}]}]}
        result = cdkit("release", "check", "--env", "prod", "--json", cwd=self.repo,
                       env=gh_env(self.server, sha, **env))
        return result.returncode, json.loads(result.stdout)

    def deployments(self) -> list[dict[str, Any]]:
        return [d for d in self.server.state.extra.get("deployments", {}).values() if d["sha"] != self.base]


def refused_because(data: dict[str, Any], text: str) -> bool:
    return not data["released"] and any(text in p for p in data["problems"])


# --- a commit nobody can be told apart from the approvers ---------------------------------------------


@pytest.mark.parametrize("via", ["review", "environment"])
def test_a_commit_whose_email_is_linked_to_no_account_fails_the_approval_closed(
        tmp_path: Path, fake_github: FakeGitHub, via: str) -> None:
    world = World(tmp_path, fake_github, via)
    sha = commit_as(world.repo, "Bob Laptop <bob@laptop.local>", "bob's unlinked change")
    code, data = world.release(sha, BOB)  # Bob wrote it, from an email GitHub cannot tie to him
    assert code == 1
    assert refused_because(data, f"1 released commit(s) name no GitHub account cdkit can exclude (email not linked "
                                 f"to an account, no pull request, no recorded pusher): {sha[:12]} "
                                 "(Bob Laptop <bob@laptop.local>)")
    assert refused_because(data, "link each commit's author email to their GitHub account")
    assert refused_because(data, "`approval.unidentified_authors: allow` in .cdkit.yml")
    assert world.deployments() == []


@pytest.mark.parametrize("via", ["review", "environment"])
def test_control_the_same_commit_releases_once_its_email_is_linked(
        tmp_path: Path, fake_github: FakeGitHub, via: str) -> None:
    world = World(tmp_path, fake_github, via)
    sha = commit_as(world.repo, "Carol <carol@corp.example>", "carol's linked change")
    code, data = world.release(sha, BOB)
    assert code == 0 and data["released"], data
    assert data["approval"]["counted"][0]["who"] == "bob"


def test_control_unidentified_authors_allow_releases_and_every_decision_records_it(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github, "review", ", unidentified_authors: allow")
    sha = commit_as(world.repo, "Someone <someone@nowhere.example>", "an unlinked change")
    code, data = world.release(sha, BOB)
    assert code == 0 and data["released"], data
    label = f"{sha[:12]} (Someone <someone@nowhere.example>)"
    assert data["approval"]["unidentified_authors_allowed"] == [label]
    (deployment,) = world.deployments()
    assert deployment["payload"]["approval"]["unidentified_authors_allowed"] == [label]
    with sqlite3.connect(world.repo / ".git" / "cdkit" / "ledger.sqlite3") as db:  # the ledger's record too
        (recorded,) = db.execute("SELECT approval FROM deployments WHERE sha = ?", (sha,)).fetchone()
    assert json.loads(recorded)["unidentified_authors_allowed"] == [label]


# --- accounts linked to the author's email --------------------------------------------------------------


@pytest.mark.parametrize("via", ["review", "environment"])
def test_the_author_cannot_approve_through_an_email_that_is_not_their_login(
        tmp_path: Path, fake_github: FakeGitHub, via: str) -> None:
    world = World(tmp_path, fake_github, via)
    sha = commit_as(world.repo, "M. <mal@corp.example>", "mallory's change")  # linked to the account `mallory`
    code, data = world.release(sha, MALLORY)
    assert code == 1
    assert refused_because(data, "mallory's approval does not count: mallory authored or committed a commit being "
                                 "released, so cannot approve it")
    assert world.deployments() == []


def test_control_someone_else_approves_the_linked_authors_change(tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github)
    sha = commit_as(world.repo, "M. <mal@corp.example>", "mallory's change")
    code, data = world.release(sha, BOB)
    assert code == 0 and data["released"], data


# --- Co-authored-by --------------------------------------------------------------------------------------


@pytest.mark.parametrize("trailer, approver", [
    ("Co-authored-by: Carol <carol@corp.example>", CAROL),  # linked on another commit of the range
    ("co-authored-by: Dave <4+dave@users.noreply.github.com>", DAVE),  # GitHub's noreply address
], ids=["linked email", "noreply email"])
def test_a_co_author_cannot_approve(tmp_path: Path, fake_github: FakeGitHub, trailer: str,
                                    approver: dict[str, Any]) -> None:
    world = World(tmp_path, fake_github)
    commit_as(world.repo, "Carol <carol@corp.example>", "carol's earlier change")
    sha = commit_as(world.repo, "Ada Author <ada@example.com>", f"pairing\n\n{trailer}\n")
    code, data = world.release(sha, approver)
    assert code == 1
    assert refused_because(data, f"{approver['login']} co-authored a commit being released ({sha[:12]}), so cannot "
                                 "approve it")


def test_control_a_co_authored_change_is_approved_by_someone_else(tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github)
    sha = commit_as(world.repo, "Ada Author <ada@example.com>",
                    "pairing\n\nCo-authored-by: Dave <4+dave@users.noreply.github.com>\n")
    code, data = world.release(sha, BOB)
    assert code == 0 and data["released"], data


# --- the pull request that brought a commit in ------------------------------------------------------------


def test_the_author_of_the_pull_request_that_brought_a_commit_in_cannot_approve(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github)
    sha = commit_as(world.repo, "Dave Laptop <dave@laptop.local>", "dave's change")  # unlinked email
    brought_in_by(fake_github, sha, 7, DAVE)  # ... but his merged pull request #7 brought it in
    code, data = world.release(sha, DAVE)
    assert code == 1
    assert refused_because(data, f"dave's approval does not count: dave opened pull request #7, which brought in a "
                                 f"commit being released ({sha[:12]}), so cannot approve it")
    assert not refused_because(data, "name no GitHub account")  # the pull request identifies the commit


def test_control_a_pull_requests_commit_is_approved_by_someone_else(tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github)
    sha = commit_as(world.repo, "Dave Laptop <dave@laptop.local>", "dave's change")
    brought_in_by(fake_github, sha, 7, DAVE)
    code, data = world.release(sha, BOB)
    assert code == 0 and data["released"], data
    assert any(r.path == f"/repos/{REPO}/commits/{sha}/pulls" for r in fake_github.requests)


def test_an_open_pull_request_that_merely_contains_a_commit_does_not_identify_it(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github)
    sha = commit_as(world.repo, "Dave Laptop <dave@laptop.local>", "dave's change")
    brought_in_by(fake_github, sha, 8, CAROL, merged=False)  # Carol's open PR happens to contain it
    code, data = world.release(sha, DAVE)
    assert code == 1 and refused_because(data, "name no GitHub account")


# --- the pusher of a direct push, recorded by cdkit's CI job -------------------------------------------------


def push_record(world: World, before: str, sha: str, sender: dict[str, Any], **env: str) -> None:
    """cdkit's CI job on the push event (the real `cdkit action`), which records its sender."""
    payload = ev.event("push.5.json", {ev.PUSH_AFTER: sha}, before=before, ref="refs/heads/main",
                       sender={"login": sender["login"], "id": sender["id"], "type": "User"})
    run = run_action(world.repo, "push", payload, sha=sha,
                     env={"INPUT_TOKEN": "ghs_faketoken", "GITHUB_API_URL": world.server.url,
                          "GITHUB_REPOSITORY": REPO, "GITHUB_RUN_ID": "77", "INPUT_COMMAND": "run", **env})
    assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr


def test_the_direct_pusher_of_a_commit_cannot_approve_it(tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github)
    first = commit_as(world.repo, "Dave Laptop <dave@laptop.local>", "dave's first")
    sha = commit_as(world.repo, "Dave Laptop <dave@laptop.local>", "dave's second")
    run_workflow(fake_github, REPO, sha, run_id=77)  # the push's workflow run
    push_record(world, world.base, sha, DAVE)  # one push of both commits
    (record,) = [r for r in fake_github.check_runs(REPO, sha) if r["name"] == "cdkit push"]
    assert record["external_id"] == f"cdkit-push:1:{world.base}:4:dave" and record["conclusion"] == "neutral"
    code, data = world.release(sha, DAVE)
    assert code == 1
    assert refused_because(data, "dave's approval does not count: dave pushed a commit being released ")
    assert not refused_because(data, "name no GitHub account")  # both commits are identified by the push
    assert first != sha


def test_control_a_directly_pushed_commit_is_approved_by_someone_else(tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github)
    sha = commit_as(world.repo, "Dave Laptop <dave@laptop.local>", "dave's change")
    run_workflow(fake_github, REPO, sha, run_id=77)
    push_record(world, world.base, sha, DAVE)
    code, data = world.release(sha, BOB)
    assert code == 0 and data["released"], data


def test_a_push_record_from_another_app_is_not_counted(tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github)
    sha = commit_as(world.repo, "Dave Laptop <dave@laptop.local>", "dave's change")
    run_workflow(fake_github, REPO, sha, run_id=77)
    fake_github.app_ids["ghs_otherapp"] = 99  # another app installed on the repository writes a "record"
    push_record(world, world.base, sha, BOB, INPUT_TOKEN="ghs_otherapp")  # ... blaming Bob, so Dave may approve
    code, data = world.release(sha, DAVE)
    assert code == 1 and refused_because(data, "name no GitHub account")


# --- a range longer than a pull request's 250-commit list -------------------------------------------------------


@pytest.mark.parametrize("approver", [CAROL, BOB], ids=["root-author", "control"])
def test_a_first_release_of_the_whole_history_is_compared_from_its_root(
        tmp_path: Path, fake_github: FakeGitHub, approver: dict[str, Any]) -> None:
    """No base (adopted as running nothing): the accounts come from one compare, and only the root is read alone."""
    repo = make_repo(tmp_path / "repo")
    root = commit_as(repo, "Carol <carol@corp.example>", "carol's first commit")
    for n in range(4):
        git(repo, "commit", "-q", "--allow-empty", "-m", f"ada {n}")
    sha = commit(repo, {".cdkit.yml": delivery_pipeline("review", "")}, "the pipeline")
    link_git(fake_github, repo, LINKED)
    fake_github.state.extra["permissions"] = {login: "write" for login in ("ada", "bob", "carol")}
    env = gh_env(fake_github, sha)
    assert cdkit("adopt", "--env", "prod", "--empty", cwd=repo, env=env).returncode == 0
    assert cdkit("run", cwd=repo).returncode == 0
    assert cdkit("release", "open", "--env", "prod", cwd=repo, env=env).returncode == 0
    fake_github.state.extra["reviews"] = {1: [review(1, approver, sha)]}
    before = len(fake_github.requests)
    result = cdkit("release", "check", "--env", "prod", "--json", cwd=repo, env=env)
    data = json.loads(result.stdout)
    paths = [r.path for r in fake_github.requests[before:] if r.method == "GET"]
    assert [p for p in paths if "/compare/" in p] == [f"/repos/{REPO}/compare/{root}...{sha}"]
    assert [p for p in paths if p.startswith(f"/repos/{REPO}/commits/") and p.count("/") == 5] == \
        [f"/repos/{REPO}/commits/{root}"]  # the root alone; the 5 others came with the compare
    if approver is CAROL:  # she wrote the root commit, 6 commits deep: her approval does not count
        assert result.returncode == 1 and refused_because(data, "carol authored or committed a commit being released")
    else:
        assert result.returncode == 0 and data["released"], data


def test_a_release_of_more_than_250_commits_is_read_completely(tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github)
    carols = commit_as(world.repo, "Carol <carol@corp.example>", "carol's change, 270 commits deep")
    sha = empty_commits(world.repo, 269, "ada")
    code, data = world.release(sha, CAROL)
    assert code == 1
    assert refused_because(data, "carol's approval does not count: carol authored or committed a commit being "
                                 "released, so cannot approve it")
    pages = [r for r in fake_github.requests if r.path == f"/repos/{REPO}/compare/{world.base}...{sha}"]
    assert len(pages) >= 3  # 270 commits, 100 a page
    assert carols


def test_control_a_release_of_more_than_250_commits_is_approved_by_someone_else(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    world = World(tmp_path, fake_github)
    commit_as(world.repo, "Carol <carol@corp.example>", "carol's change")
    sha = empty_commits(world.repo, 269, "ada")
    code, data = world.release(sha, BOB)
    assert code == 0 and data["released"], data
