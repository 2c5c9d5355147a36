"""Who wrote, brought in or pushed the commits a release adds: the people who may not approve it.

Git author data is free text; approvals are GitHub accounts (or, for `via: local`,
signed git identities). So each released commit is described by everything that
can name a person (`CommitPeople`): its git author, committer and `Co-authored-by:`
people, the GitHub accounts the commits API links to its author and committer, the
authors of the pull requests that brought it in, and whoever pushed it directly
(recorded by cdkit's CI job, see `PUSH_RECORD_NAME`). `release_people` turns them
into the excluded people and the commits nobody identifies.

Pure: the git and GitHub reads are in `cdkit.release` and `cdkit.release_github`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cdkit.approval import Excluded, Identity

# The check run cdkit's CI job creates on a push to the release branch, naming the pusher
# (the push event's `sender`). Not `cdkit/<stage>`: it is no stage result.
PUSH_RECORD_NAME = "cdkit push"
_PUSH_RECORD_VERSION = "1"
_LOGIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?"
_PUSH_RECORD_RE = re.compile(
    rf"^cdkit-push:{_PUSH_RECORD_VERSION}:(?P<before>[0-9a-f]{{40}}|[0-9a-f]{{64}}):(?P<id>\d{{1,20}}):"
    rf"(?P<login>{_LOGIN})$")
_COAUTHOR_RE = re.compile(r"^[ \t]*co-authored-by:[ \t]*(?P<name>[^<\n]*?)[ \t]*<(?P<email>[^<>\s]+)>[ \t]*$",
                          re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class PullRequest:
    number: int
    author: Identity | None
    merged: bool  # only a merged pull request brought the commit in (an open one merely contains it)


@dataclass(frozen=True)
class CommitPeople:
    """Everything that names a person for one released commit."""

    sha: str
    author: Identity  # git's free text: name and email
    committer: Identity
    coauthors: tuple[Identity, ...] = ()
    author_account: Identity | None = None  # the commits API's `author`: the account the email is linked to
    committer_account: Identity | None = None
    pulls: tuple[PullRequest, ...] = ()
    pushers: tuple[Identity, ...] = ()  # recorded pushers of a direct push that brought it

    @property
    def label(self) -> str:
        return f"{self.sha[:12]} ({self.author.display})"


@dataclass(frozen=True)
class ReleasePeople:
    excluded: tuple[Excluded, ...] = ()
    unidentified: tuple[str, ...] = ()  # labels of released commits nobody identifies
    commits: int = 0  # how many released commits were read
    linked: tuple[tuple[str, Identity], ...] = ()  # (email, account) GitHub linked on these commits

    def account_of(self, person: Identity) -> Identity:
        """`person` with the GitHub account their email is linked to on a released commit, when one is."""
        accounts = dict(self.linked)
        account = accounts.get((person.email or "").casefold())
        return _with_git(account, person) if account is not None else person

    def as_data(self) -> dict[str, object]:
        return {"commits": self.commits, "excluded": sorted({e.person.display for e in self.excluded}),
                "unidentified": list(self.unidentified)}


def coauthors(message: str) -> tuple[Identity, ...]:
    """The people a commit message names in `Co-authored-by: Name <email>` trailers (any line, any case)."""
    return tuple(Identity(name=m.group("name") or None, email=m.group("email"))
                 for m in _COAUTHOR_RE.finditer(message))


def push_record_id(*, before: str, sender_id: int, sender_login: str) -> str:
    """The check run `external_id` that records a direct push: parsed back by `parse_push_record`."""
    return f"cdkit-push:{_PUSH_RECORD_VERSION}:{before}:{sender_id}:{sender_login}"


def parse_push_record(external_id: object) -> tuple[str, Identity] | None:
    """(the push's `before`, its pusher) from a push record's `external_id`; None for anything else."""
    if not isinstance(external_id, str):
        return None
    match = _PUSH_RECORD_RE.match(external_id)
    if match is None:
        return None
    return match.group("before"), Identity(id=match.group("id"), login=match.group("login"))


def linked_accounts(commits: Iterable[CommitPeople]) -> dict[str, Identity]:
    """Email (casefolded) -> the account GitHub linked it to, learned from the commits themselves."""
    linked: dict[str, Identity] = {}
    for c in commits:
        for git_side, account in ((c.author, c.author_account), (c.committer, c.committer_account)):
            if git_side.email and account is not None:
                linked.setdefault(git_side.email.casefold(), account)
    return linked


def _account_for(person: Identity, linked: dict[str, Identity]) -> Identity | None:
    """The GitHub account an email names: linked (seen on a commit), or a noreply address's own."""
    if person.email and person.email.casefold() in linked:
        return linked[person.email.casefold()]
    if any(key.startswith("login:") for key in person.keys()):
        return person  # `123+login@users.noreply.github.com` carries the account itself
    return None


def _with_git(account: Identity | None, git_side: Identity) -> Identity:
    """One identity matching both the account and the git name/email (local approvals compare emails)."""
    if account is None:
        return git_side
    return Identity(id=account.id, login=account.login, email=git_side.email, name=git_side.name, bot=account.bot)


@dataclass
class _Collector:
    excluded: dict[tuple[frozenset[str], str], Excluded] = field(default_factory=dict)

    def add(self, person: Identity | None, kind: str, why: str) -> None:
        if person is None or not person.keys():
            return
        self.excluded.setdefault((person.keys(), kind), Excluded(person, why))


def release_people(commits: Sequence[CommitPeople], *, accounts_known: bool) -> ReleasePeople:
    """The excluded people of these released commits, and (with `accounts_known`) the commits nobody identifies.

    A commit is identified when its author's email names a GitHub account (linked, or
    a noreply address), a merged pull request brought it in, or its direct push was
    recorded. Without GitHub (`accounts_known` False) only git identities are known,
    which local approvals compare by email, and nothing is called unidentified.
    """
    linked = linked_accounts(commits)
    out = _Collector()
    unidentified = []
    for c in commits:
        short = c.sha[:12]
        what = f"a commit being released ({short})"
        author_account = c.author_account or _account_for(c.author, linked)
        # One reason for authors and committers, whichever commit: as before cdkit read GitHub.
        out.add(_with_git(author_account, c.author), "author", "authored or committed a commit being released")
        out.add(_with_git(c.committer_account or _account_for(c.committer, linked), c.committer), "author",
                "authored or committed a commit being released")
        for person in c.coauthors:
            out.add(_with_git(_account_for(person, linked), person), "coauthor", f"co-authored {what}")
        for pull in c.pulls:
            out.add(pull.author, f"pull #{pull.number}", f"opened pull request #{pull.number}, which brought in {what}")
        for pusher in c.pushers:
            out.add(pusher, "pusher", f"pushed {what} directly to the release branch")
        identified = author_account is not None or any(p.merged and p.author for p in c.pulls) or bool(c.pushers)
        if accounts_known and not identified:
            unidentified.append(c.label)
    return ReleasePeople(tuple(out.excluded.values()), tuple(unidentified), len(commits), tuple(linked.items()))
