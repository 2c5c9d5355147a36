"""GitHub event payloads -> decisions, with real payloads rewritten to a real repository's commits."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cdkit.errors import EXIT_FAILED, EXIT_USAGE
from cdkit.github_events import NOTHING, REFUSE, RELEASE, RUN, Decision, HistoryError, PayloadError, read_event
from tests import event_payloads as ev
from tests.helpers import commit, git, make_bare, make_repo

ZERO = "0" * 40


class Repo:
    """main: c0 -> c1 -> c2;  feature (from c1): f1;  a rewritten c2' on `rewritten`."""

    def __init__(self, root: Path) -> None:
        self.root = make_repo(root)
        self.c0 = commit(self.root, {"a.txt": "a", "b.txt": "b"}, "c0")
        self.c1 = commit(self.root, {"a.txt": "a1"}, "c1")
        self.c2 = commit(self.root, {"b.txt": "b2"}, "c2")
        git(self.root, "checkout", "-q", "-b", "feature", self.c1)
        self.f1 = commit(self.root, {"docs/x.md": "x"}, "f1")
        git(self.root, "checkout", "-q", "-b", "rewritten", self.c1)
        self.r2 = commit(self.root, {"c.txt": "c"}, "r2")
        git(self.root, "checkout", "-q", "main")


@pytest.fixture
def r(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


def decide(cwd: Path, name: str, payload: dict[str, Any] | str, *, sha: str | None = None,
           release_branch: str = "main", wants_release: bool = False) -> Decision:
    path = cwd.parent / "event.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    environ = {"GITHUB_EVENT_NAME": name, "GITHUB_EVENT_PATH": str(path), "GITHUB_REPOSITORY": "o/r",
               "GITHUB_ACTOR": "octocat"}
    if sha:
        environ["GITHUB_SHA"] = sha
    return read_event(environ, cwd=cwd, release_branch=release_branch, wants_release=wants_release)[1]


def push(r: Repo, *, before: str, after: str, ref: str = "refs/heads/main", **extra: Any) -> dict[str, Any]:
    return ev.event("push.5.json", {ev.PUSH_AFTER: after}, before=before, ref=ref,
                    repository__default_branch="main", **extra)


# --- push -----------------------------------------------------------------------------------------


def test_push_range_comes_from_git(r: Repo) -> None:
    d = decide(r.root, "push", push(r, before=r.c0, after=r.c2, created=False), sha=r.c2)
    assert d.action == RUN and d.trigger is not None
    assert (d.trigger.base_sha, d.trigger.head_sha, d.trigger.ref) == (r.c0, r.c2, "refs/heads/main")
    assert sorted(d.trigger.changed_files) == ["a.txt", "b.txt"]
    assert d.release_candidate and d.sha == r.c2 and d.trigger.kind == "ci" and d.trigger.actor == "octocat"


def test_push_with_head_commit_null_and_truncated_commits_still_uses_git(r: Repo) -> None:
    payload = push(r, before=r.c0, after=r.c2, head_commit=None, commits=[])  # as with > 2,048 commits
    d = decide(r.root, "push", payload, sha=r.c2)
    assert d.trigger is not None and sorted(d.trigger.changed_files) == ["a.txt", "b.txt"]


def test_new_branch_is_judged_against_its_fork_point_from_the_default_branch(r: Repo) -> None:
    d = decide(r.root, "push", push(r, before=ZERO, after=r.f1, ref="refs/heads/feature"), sha=r.f1)
    assert d.trigger is not None and d.trigger.base_sha == r.c1 and d.trigger.changed_files == ("docs/x.md",)
    assert not d.release_candidate and "not the release branch" in d.release_note


def test_new_default_branch_counts_every_file(r: Repo) -> None:
    d = decide(r.root, "push", push(r, before=ZERO, after=r.c2), sha=r.c2)
    assert d.trigger is not None and d.trigger.base_sha is None
    assert sorted(d.trigger.changed_files) == ["a.txt", "b.txt"]


def test_forced_push_is_judged_from_the_fork_point(r: Repo) -> None:
    d = decide(r.root, "push", push(r, before=r.c2, after=r.r2, forced=True), sha=r.r2)
    assert d.trigger is not None and d.trigger.base_sha == r.c1 and d.trigger.changed_files == ("c.txt",)


def test_forced_push_whose_old_tip_is_gone_falls_back_to_the_default_branch(r: Repo) -> None:
    gone = "1" * 40
    d = decide(r.root, "push", push(r, before=gone, after=r.f1, ref="refs/heads/feature", forced=True), sha=r.f1)
    assert d.trigger is not None and d.trigger.base_sha == r.c1


def test_unforced_push_whose_old_tip_is_missing_fails_closed(r: Repo) -> None:
    with pytest.raises(HistoryError) as info:
        decide(r.root, "push", push(r, before="2" * 40, after=r.c2), sha=r.c2)
    assert info.value.exit_code == EXIT_FAILED
    assert "the previous tip of refs/heads/main 2222222222222222222222222222222222222222 is not in this checkout" \
        in str(info.value)


def test_tag_push_runs_on_every_file_and_is_not_a_release(r: Repo) -> None:
    payload = ev.event("push.json", {ev.PUSH_AFTER: r.c1})
    d = decide(r.root, "push", payload, sha=r.c1)
    assert d.action == RUN and d.trigger is not None and d.trigger.ref == "refs/tags/simple-tag"
    assert d.trigger.base_sha is None and not d.release_candidate


def test_deleting_push_does_nothing(r: Repo) -> None:
    d = decide(r.root, "push", ev.event("push.2.json", {ev.PUSH_AFTER: r.c1}))
    assert (d.action, d.message) == (NOTHING, "push deleted refs/tags/simple-tag: nothing to do")


def test_runner_sha_must_match_the_pushed_commit(r: Repo) -> None:
    with pytest.raises(PayloadError, match="GITHUB_SHA .* differs from the payload's after"):
        decide(r.root, "push", push(r, before=r.c0, after=r.c2), sha=r.c1)


# --- shallow checkouts ------------------------------------------------------------------------------


def shallow_clone(r: Repo, tmp_path: Path) -> Path:
    bare = make_bare(tmp_path / "remote.git")
    git(r.root, "push", "-q", str(bare), "main", "feature")
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "main", f"file://{bare}", str(clone)],
                   check=True)
    assert git(clone, "rev-parse", "--is-shallow-repository") == "true"
    return clone


def test_shallow_checkout_is_deepened_before_the_range_is_computed(r: Repo, tmp_path: Path) -> None:
    clone = shallow_clone(r, tmp_path)
    d = decide(clone, "push", push(r, before=r.c0, after=r.c2), sha=r.c2)
    assert d.trigger is not None and d.trigger.base_sha == r.c0 and sorted(d.trigger.changed_files) == ["a.txt", "b.txt"]
    assert git(clone, "rev-parse", "--is-shallow-repository") == "false"


def test_shallow_checkout_that_cannot_fetch_fails_closed(r: Repo, tmp_path: Path) -> None:
    clone = shallow_clone(r, tmp_path)
    git(clone, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    with pytest.raises(HistoryError, match="shallow and `git fetch --unshallow` failed.*fetch-depth: 0"):
        decide(clone, "push", push(r, before=r.c0, after=r.c2), sha=r.c2)


# --- pull requests, merge queue, dispatch ------------------------------------------------------------


def pr(r: Repo, name: str = "pull_request.opened.2.json", **extra: Any) -> dict[str, Any]:
    return ev.event(name, {ev.PR_HEAD: r.f1, ev.PR_BASE: r.c2}, pull_request__base__ref="main", **extra)


def test_pull_request_is_judged_from_the_merge_base(r: Repo) -> None:
    d = decide(r.root, "pull_request", pr(r))
    assert d.action == RUN and d.trigger is not None and d.pr_code and not d.fork
    assert (d.trigger.base_sha, d.trigger.head_sha, d.trigger.ref) == (r.c1, r.f1, "refs/pull/2/head")
    assert d.trigger.changed_files == ("docs/x.md",) and not d.release_candidate


def test_synchronize_payload_works_too(r: Repo) -> None:
    d = decide(r.root, "pull_request", pr(r, "pull_request.synchronize.json"))
    assert d.trigger is not None and d.trigger.head_sha == r.f1


def test_pull_request_from_a_fork_is_marked(r: Repo) -> None:
    payload = pr(r)
    payload["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World"
    assert decide(r.root, "pull_request", payload).fork
    payload["pull_request"]["head"]["repo"] = None  # the fork was deleted
    assert decide(r.root, "pull_request", payload).fork


def test_closed_pull_request_does_nothing(r: Repo) -> None:
    d = decide(r.root, "pull_request", pr(r, "pull_request.closed.json"))
    assert d.action == NOTHING and "closed" in d.message


def test_merge_group(r: Repo) -> None:
    payload = ev.event("merge_group.checks_requested.json", {ev.GROUP_HEAD: r.c2, ev.GROUP_BASE: r.c1})
    d = decide(r.root, "merge_group", payload, sha=r.c2)
    assert d.trigger is not None and (d.trigger.base_sha, d.trigger.head_sha) == (r.c1, r.c2)
    assert d.trigger.changed_files == ("b.txt",) and not d.release_candidate


def test_workflow_dispatch_on_the_release_branch(r: Repo) -> None:
    payload = ev.event("workflow_dispatch.json", inputs={"environment": "production", "dry": True})
    d = decide(r.root, "workflow_dispatch", payload, sha=r.c1)
    assert d.trigger is not None and d.trigger.head_sha == r.c1 and d.trigger.base_sha is None
    assert d.release_candidate and d.environment == "production"
    assert d.trigger.extra["input.dry"] == "true"


def test_workflow_dispatch_of_a_sha_off_the_release_branch_is_never_released(r: Repo) -> None:
    payload = ev.event("workflow_dispatch.json", inputs={"sha": r.f1})
    d = decide(r.root, "workflow_dispatch", payload, sha=r.c2)
    assert d.trigger is not None and d.trigger.head_sha == r.f1
    assert not d.release_candidate and "not reachable from the release branch main" in d.release_note


# --- release events and the rest -------------------------------------------------------------------


def test_review_and_deployment_go_to_the_release_logic(r: Repo) -> None:
    review = ev.event("pull_request_review.submitted.approved.json", {ev.PR_HEAD: r.f1, ev.PR_BASE: r.c2})
    d = decide(r.root, "pull_request_review", review)
    assert (d.action, d.sha) == (RELEASE, r.f1)
    deployment = ev.event("deployment.created.json", {ev.PR_BASE: r.c2})
    d = decide(r.root, "deployment", deployment, sha=r.c2)
    assert (d.action, d.sha, d.environment) == (RELEASE, r.c2, "production")


def test_deployment_of_another_sha_is_refused(r: Repo) -> None:
    d = decide(r.root, "deployment", ev.event("deployment.created.json", {ev.PR_BASE: r.c2}), sha=r.c1)
    assert d.action == REFUSE and "differs from the commit being checked" in d.message


@pytest.mark.parametrize("name, file", [("pull_request_target", "pull_request.opened.2.json"),
                                        ("workflow_run", "workflow_run.completed.json")])
def test_untrusted_contexts_never_run_or_release(r: Repo, name: str, file: str) -> None:
    d = decide(r.root, name, ev.load(file))
    assert d.action == NOTHING and d.message.startswith(f"nothing to do for {name}: ")
    assert decide(r.root, name, ev.load(file), wants_release=True).action == REFUSE


def test_other_events_do_nothing_unless_a_release_is_at_stake(r: Repo) -> None:
    d = decide(r.root, "check_run", ev.load("check_run.rerequested.json"))
    assert (d.action, d.message) == (NOTHING, "nothing to do for check_run")
    assert decide(r.root, "check_run", ev.load("check_run.rerequested.json"), wants_release=True).action == REFUSE
    gate = decide(r.root, "deployment_protection_rule", ev.load("deployment_protection_rule.requested.json"))
    assert gate.action == REFUSE
    assert decide(r.root, "create", ev.load("create.tag.json")).action == NOTHING
    assert decide(r.root, "delete", ev.load("delete.branch.json")).action == NOTHING


# --- malformed payloads --------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"after": "abc"}, "field 'after': expected a 40 or 64 character lower-case hex SHA, got \"abc\""),
    ({"after": "A" * 40}, "field 'after': expected a 40 or 64 character lower-case hex SHA"),
    ({"after": "a" * 39}, "field 'after': expected a 40 or 64 character lower-case hex SHA"),
    ({"after": 12}, "field 'after': expected a 40 or 64 character lower-case hex SHA, got 12"),
    ({"forced": "yes"}, "field 'forced': expected true or false, got \"yes\""),
    ({"ref": None}, "field 'ref': expected a non-empty string, got null"),
])
def test_malformed_push_payloads_are_clear_errors(r: Repo, change: dict[str, Any], message: str) -> None:
    payload = {**push(r, before=r.c0, after=r.c2), **change}
    with pytest.raises(PayloadError) as info:
        decide(r.root, "push", payload)
    assert info.value.exit_code == EXIT_USAGE
    assert str(info.value).startswith("push event payload: ") and message in str(info.value)


def test_missing_field_is_named(r: Repo) -> None:
    payload = pr(r)
    del payload["pull_request"]["head"]["sha"]
    with pytest.raises(PayloadError, match="pull_request event payload: field 'pull_request.head.sha': "
                                           "expected a 40 or 64 character lower-case hex SHA, missing"):
        decide(r.root, "pull_request", payload)


def test_sha256_repositories_are_accepted_by_the_validator(r: Repo) -> None:
    payload = {**push(r, before=r.c0, after="b" * 64), "deleted": True}
    assert decide(r.root, "push", payload).action == NOTHING


@pytest.mark.parametrize("text, message", [("{not json", "is not valid JSON"), ("[1]", "is not a JSON object")])
def test_unreadable_payloads(r: Repo, text: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decide(r.root, "push", text)


def test_missing_event_path_and_bad_runner_sha(r: Repo) -> None:
    with pytest.raises(PayloadError, match="GITHUB_EVENT_PATH is not set"):
        read_event({"GITHUB_EVENT_NAME": "push"}, cwd=r.root, release_branch="main", wants_release=False)
    with pytest.raises(PayloadError, match="GITHUB_EVENT_NAME is not set"):
        read_event({}, cwd=r.root, release_branch="main", wants_release=False)
    with pytest.raises(PayloadError, match="GITHUB_SHA 'main;rm' is not a 40 or 64 character hex SHA"):
        read_event({"GITHUB_EVENT_NAME": "push", "GITHUB_SHA": "main;rm"}, cwd=r.root, release_branch="main",
                   wants_release=False)
