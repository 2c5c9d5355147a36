"""The approval policy, case by case (RELIABILITY.md §E): pure facts in, a decision with reasons out."""
from __future__ import annotations

from collections.abc import Mapping

import pytest

from cdkit.approval import Facts, Identity, Review, evaluate, latest_decisive, permission_key

SHA = "a" * 40
OLD = "b" * 40

ALICE = Identity(id="1", login="alice")
BOB = Identity(id="2", login="bob")
CAROL = Identity(id="3", login="carol")
AUTHOR = Identity(id="9", login="author")


def review(who: Identity, state: str = "APPROVED", *, sha: str = SHA, at: str = "2024-01-01T00:00:00Z",
           rid: int = 0, dismissed: bool = False) -> Review:
    return Review(reviewer=who, state=state, commit_id=sha, submitted_at=at, id=rid, dismissed=dismissed)


def writers(*people: Identity, level: str = "write") -> dict[str, str]:
    return {permission_key(p): level for p in people}


def facts(*reviews: Review, required: int = 1, permissions: Mapping[str, str] | None = None, **kw: object) -> Facts:
    perms = writers(ALICE, BOB, CAROL, AUTHOR) if permissions is None else permissions
    return Facts(sha=SHA, required=required, reviews=reviews, permissions=perms, pr_author=AUTHOR, **kw)  # type: ignore[arg-type]


def test_one_valid_approval_is_enough_by_default() -> None:
    decision = evaluate(facts(review(ALICE)))
    assert decision.approved
    assert [c.who for c in decision.counted] == ["alice"]
    assert decision.reasons == ("alice's approval counts",)


def test_no_review_is_not_an_approval() -> None:
    decision = evaluate(facts())
    assert not decision.approved
    assert decision.reasons == (f"needs 1 approval(s) of {SHA[:12]}, has 0",)


@pytest.mark.parametrize("state", ["approved", "APPROVED", "Approved"])
def test_webhook_lower_case_and_rest_upper_case_states(state: str) -> None:
    assert evaluate(facts(review(ALICE, state))).approved


def test_approvals_are_counted_per_user_id_not_per_review() -> None:
    decision = evaluate(facts(review(ALICE, rid=1), review(ALICE, rid=2), required=2))
    assert not decision.approved
    assert len(decision.counted) == 1
    # The same account renamed between reviews is still one person (counted by id).
    renamed = Identity(id="1", login="alice-new")
    assert len(evaluate(facts(review(ALICE, rid=1), review(renamed, rid=2), required=2,
                              permissions=writers(ALICE, renamed))).counted) == 1


def test_two_required_approvals_from_two_people() -> None:
    assert evaluate(facts(review(ALICE), review(BOB), required=2)).approved


def test_pr_author_cannot_approve() -> None:
    decision = evaluate(facts(review(AUTHOR)))
    assert not decision.approved
    assert "author's approval does not count: author opened the pull request, so cannot approve it" in decision.reasons


def test_commit_author_or_committer_of_the_range_cannot_approve_matched_by_email() -> None:
    alice_git = Identity(name="Alice", email="ALICE@example.com")
    alice_gh = Identity(id="1", login="alice", email="alice@example.com")
    decision = evaluate(facts(review(alice_gh), commit_people=(alice_git,), permissions=writers(alice_gh)))
    assert not decision.approved
    assert "authored or committed a commit being released" in decision.reasons[0]


def test_commit_people_matched_through_github_noreply_email() -> None:
    noreply = Identity(name="Alice", email="1+alice@users.noreply.github.com")
    assert not evaluate(facts(review(ALICE), commit_people=(noreply,))).approved
    legacy = Identity(name="Alice", email="alice@users.noreply.github.com")
    assert not evaluate(facts(review(ALICE), commit_people=(legacy,))).approved


def test_actor_and_triggering_actor_cannot_approve() -> None:
    by_actor = evaluate(facts(review(ALICE), actor=Identity(login="Alice")))
    assert not by_actor.approved
    assert "triggered this run (actor)" in by_actor.reasons[0]
    by_rerun = evaluate(facts(review(BOB), triggering_actor=Identity(login="bob")))
    assert not by_rerun.approved
    assert "re-ran this run (triggering actor)" in by_rerun.reasons[0]


def test_bots_cannot_approve() -> None:
    bot = Identity(id="77", login="dependabot[bot]")
    flagged = Identity(id="78", login="helper", bot=True)
    for who in (bot, flagged):
        decision = evaluate(facts(review(who), permissions=writers(who, level="admin")))
        assert not decision.approved
        assert "is a bot" in decision.reasons[0]


def test_stale_approval_of_an_earlier_commit_does_not_count() -> None:
    decision = evaluate(facts(review(ALICE, sha=OLD)))
    assert not decision.approved
    assert decision.reasons[0] == (f"alice's approval does not count: alice approved {OLD[:12]}, not {SHA[:12]} "
                                   "(a new commit needs a new approval)")


def test_approval_must_be_for_the_exact_sha_even_after_a_rebase_or_merge() -> None:
    # Approved at A, then B pushed: only an approval whose commit_id is B counts for B.
    old = review(ALICE, sha=OLD, at="2024-01-01T00:00:00Z")
    assert not evaluate(facts(old)).approved
    new = review(ALICE, sha=SHA, at="2024-01-02T00:00:00Z")
    assert evaluate(facts(old, new)).approved


@pytest.mark.parametrize("level", ["read", "triage", "none"])
def test_approver_without_write_access_does_not_count(level: str) -> None:
    decision = evaluate(facts(review(ALICE), permissions=writers(ALICE, level=level)))
    assert not decision.approved
    assert decision.reasons[0] == (f"alice's approval does not count: alice has {level} access; "
                                   "approving needs write, maintain or admin")


@pytest.mark.parametrize("level", ["write", "maintain", "admin"])
def test_write_maintain_admin_count(level: str) -> None:
    assert evaluate(facts(review(ALICE), permissions=writers(ALICE, level=level))).approved


def test_outside_user_with_no_known_permission_does_not_count() -> None:
    outsider = Identity(id="404", login="outsider")
    decision = evaluate(facts(review(outsider)))
    assert not decision.approved
    assert "has none access" in decision.reasons[0]


def test_reviewers_list_restricts_who_counts() -> None:
    assert not evaluate(facts(review(ALICE), reviewers=("bob",))).approved
    assert evaluate(facts(review(BOB), reviewers=("Bob",))).approved


def test_dismissed_approval_does_not_count() -> None:
    for dismissed in (review(ALICE, dismissed=True), review(ALICE, "DISMISSED"), review(ALICE, "dismissed")):
        decision = evaluate(facts(dismissed))
        assert not decision.approved
        assert decision.reasons[0] == "alice's review was dismissed, so it does not count"


def test_approval_dismissed_later_no_longer_counts() -> None:
    approve = review(ALICE, at="2024-01-01T00:00:00Z", rid=1, dismissed=True)
    assert not evaluate(facts(approve)).approved


def test_changes_requested_after_an_approval_blocks() -> None:
    decision = evaluate(facts(review(ALICE, at="2024-01-01T00:00:00Z"),
                              review(ALICE, "CHANGES_REQUESTED", at="2024-01-02T00:00:00Z")))
    assert not decision.approved


def test_changes_requested_by_anyone_blocks_other_approvals() -> None:
    decision = evaluate(facts(review(ALICE), review(BOB), review(CAROL, "changes_requested"), required=1))
    assert not decision.approved
    assert any("carol requested changes" in r for r in decision.reasons)
    # Even from someone whose approval would not count, and on an older commit: fail closed.
    reader = Identity(id="5", login="reader")
    assert not evaluate(facts(review(ALICE), review(reader, "CHANGES_REQUESTED", sha=OLD))).approved


def test_dismissed_change_request_no_longer_blocks() -> None:
    decision = evaluate(facts(review(ALICE), review(CAROL, "CHANGES_REQUESTED", dismissed=True)))
    assert decision.approved


def test_change_request_then_approval_by_the_same_person_unblocks() -> None:
    decision = evaluate(facts(review(CAROL, "CHANGES_REQUESTED", at="2024-01-01T00:00:00Z"),
                              review(CAROL, at="2024-01-02T00:00:00Z")))
    assert decision.approved


def test_comment_after_an_approval_keeps_it_approved() -> None:
    decision = evaluate(facts(review(ALICE, at="2024-01-01T00:00:00Z"),
                              review(ALICE, "commented", at="2024-01-02T00:00:00Z"),
                              review(ALICE, "PENDING", at="2024-01-03T00:00:00Z")))
    assert decision.approved


def test_only_each_users_latest_review_counts_whatever_the_input_order() -> None:
    later_change = review(ALICE, "CHANGES_REQUESTED", at="2024-01-03T00:00:00Z", rid=3)
    earlier_approve = review(ALICE, at="2024-01-02T00:00:00Z", rid=2)
    assert not evaluate(facts(later_change, earlier_approve)).approved
    latest = latest_decisive([later_change, earlier_approve])
    assert list(latest.values()) == [later_change]


def test_same_timestamp_ordered_by_review_id() -> None:
    a = review(ALICE, "CHANGES_REQUESTED", rid=10)
    b = review(ALICE, rid=11)
    assert evaluate(facts(b, a)).approved


def test_environment_rejection_blocks() -> None:
    decision = evaluate(facts(review(ALICE, "approved"), review(BOB, "rejected")))
    assert not decision.approved
    assert any("bob rejected" in r for r in decision.reasons)


def test_local_approvals_without_permissions_use_the_git_identity() -> None:
    ada = Identity(name="Ada Author", email="ada@example.com")
    bob = Identity(name="Bob", email="bob@example.com")
    base = dict(sha=SHA, required=1, commit_people=(ada,))
    self_approval = evaluate(Facts(reviews=(Review(ada, "APPROVED", SHA, via="local"),), **base))  # type: ignore[arg-type]
    assert not self_approval.approved
    assert "authored or committed" in self_approval.reasons[0]
    assert evaluate(Facts(reviews=(Review(bob, "APPROVED", SHA, via="local"),), **base)).approved  # type: ignore[arg-type]
    # `reviewers:` may name a local approver by email or git name.
    assert evaluate(Facts(reviews=(Review(bob, "APPROVED", SHA),), reviewers=("bob@example.com",), **base)).approved  # type: ignore[arg-type]
    assert not evaluate(Facts(reviews=(Review(bob, "APPROVED", SHA),), reviewers=("carol",), **base)).approved  # type: ignore[arg-type]


def test_epoch_timestamps_order_like_iso_ones() -> None:
    first = Review(ALICE, "CHANGES_REQUESTED", SHA, submitted_at=9.5)
    second = Review(ALICE, "APPROVED", SHA, submitted_at=10.0)
    assert evaluate(facts(second, first)).approved


def test_decision_as_data_is_json_ready() -> None:
    data = evaluate(facts(review(ALICE))).as_data()
    assert data == {"approved": True, "reasons": ["alice's approval counts"],
                    "counted": [{"who": "alice", "via": "review", "at": "2024-01-01T00:00:00Z", "comment": ""}]}


def test_an_unidentified_released_commit_blocks_every_approval_unless_allowed() -> None:
    from cdkit.approval import Excluded

    unknown = ("1234567890ab (Someone <someone@nowhere.example>)",)
    refused = evaluate(facts(review(ALICE), unidentified=unknown))
    assert not refused.approved and not refused.unidentified_allowed
    assert "name no GitHub account" in refused.reasons[0] and "unidentified_authors: allow" in refused.reasons[0]
    allowed = evaluate(facts(review(ALICE), unidentified=unknown, allow_unidentified=True))
    assert allowed.approved and allowed.as_data()["unidentified_authors_allowed"] == list(unknown)
    assert "unidentified_authors_allowed" not in evaluate(facts(review(ALICE))).as_data()
    pusher = evaluate(facts(review(ALICE), excluded=(Excluded(Identity(login="ALICE"), "pushed it directly"),)))
    assert not pusher.approved and pusher.reasons[0] == ("alice's approval does not count: alice pushed it "
                                                         "directly, so cannot approve it")
