"""`cdkit.people`: trailers, push records and who identifies a released commit (pure functions)."""
from __future__ import annotations

from cdkit.approval import Identity
from cdkit.people import (
    CommitPeople, PullRequest, coauthors, parse_push_record, push_record_id, release_people,
)

SHA = "a" * 40
ADA_GIT = Identity(name="Ada", email="ada@example.com")
ADA = Identity(id="1", login="ada")


def test_co_authored_by_trailers_in_any_case_and_line() -> None:
    found = coauthors("fix\n\nCo-authored-by: Bob B <bob@example.com>\nco-authored-by:carol <5+carol@users.noreply.github.com>\n"
                      "Co-authored-by: no email here\n")
    assert [(p.name, p.email) for p in found] == [("Bob B", "bob@example.com"),
                                                  ("carol", "5+carol@users.noreply.github.com")]


def test_push_records_round_trip_and_reject_anything_else() -> None:
    record = push_record_id(before="b" * 40, sender_id=4, sender_login="dave")
    before, pusher = parse_push_record(record) or ("", Identity())
    assert before == "b" * 40 and (pusher.id, pusher.login) == ("4", "dave")
    for forged in (None, 3, "", record + " ", record.replace("dave", "da ve"), record.replace(":1:", ":2:"),
                   f"cdkit-push:1:{'b' * 40}:4:dave$(id)", "cdkit:run-1:build"):
        assert parse_push_record(forged) is None


def test_a_commit_is_identified_by_its_linked_author_a_merged_pull_or_a_pusher_not_by_its_committer() -> None:
    stranger = Identity(name="S", email="s@nowhere.example")
    base = CommitPeople(SHA, author=stranger, committer=ADA_GIT, committer_account=ADA)
    assert release_people([base], accounts_known=True).unidentified == (f"{SHA[:12]} (S <s@nowhere.example>)",)
    assert release_people([base], accounts_known=False).unidentified == ()
    merged = CommitPeople(SHA, author=stranger, committer=ADA_GIT, pulls=(PullRequest(7, ADA, merged=True),))
    assert release_people([merged], accounts_known=True).unidentified == ()
    still_open = CommitPeople(SHA, author=stranger, committer=ADA_GIT, pulls=(PullRequest(8, ADA, merged=False),))
    people = release_people([still_open], accounts_known=True)
    assert people.unidentified and any(e.person.login == "ada" for e in people.excluded)  # excluded all the same
    pushed = CommitPeople(SHA, author=stranger, committer=ADA_GIT, pushers=(Identity(id="4", login="dave"),))
    assert release_people([pushed], accounts_known=True).unidentified == ()


def test_a_co_authors_email_is_matched_through_an_account_linked_on_another_commit() -> None:
    carol_git = Identity(name="Carol", email="carol@corp.example")
    carol = Identity(id="3", login="carol")
    hers = CommitPeople("b" * 40, author=carol_git, committer=carol_git, author_account=carol)
    paired = CommitPeople(SHA, author=ADA_GIT, committer=ADA_GIT, author_account=ADA,
                          coauthors=(Identity(name="C", email="CAROL@corp.example"),))
    excluded = release_people([paired, hers], accounts_known=True).excluded
    assert any(e.person.same_as(Identity(login="carol")) and e.why.startswith("co-authored") for e in excluded)
