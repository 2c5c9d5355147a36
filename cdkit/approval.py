"""Approval policy evaluation: facts in, a decision with reasons out.

Pure: no git, no GitHub, no clock. Whoever gathers the facts (the ledger for
`via: local`, the REST API for `via: review`, a run's environment approvals for
`via: environment`) gathers them at decision time and calls `evaluate`, so the
same rules hold whatever the source:

- approvals are counted per person, and only each person's latest *decisive*
  review counts (a later COMMENTED review changes nothing, as on GitHub);
- an approval counts only for the exact SHA being released;
- the approver needs write, maintain or admin permission when permissions are
  known, and must be listed in `reviewers:` when that list is given;
- the people who wrote, brought in or started the change never count (`Excluded`:
  the accounts of each released commit's author, committer and `Co-authored-by:`
  people, the authors of the pull requests that brought them in, their direct
  pushers, the release PR's author, the run's actor and triggering actor), nor bots;
- a released commit that names nobody those rules can match (`Facts.unidentified`)
  blocks the release unless the policy allows it (`approval.unidentified_authors`),
  and a decision that relied on that allowance says so;
- a dismissed review counts for nothing; an outstanding change request from
  anyone blocks;
- with `approval.expires`, an approval given longer ago than that (by the time
  the source records: a local approval's, a review's `submitted_at`) no longer
  counts; the decision's time (`Facts.now`) is passed in, never read here.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED, PENDING = (
    "APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED", "PENDING",
)
# GitHub's environment approvals say approved/rejected; a rejection blocks like a change request.
REJECTED = "REJECTED"
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
# States that set a person's standing; COMMENTED and PENDING leave it as it was.
_DECISIVE = frozenset({APPROVED, CHANGES_REQUESTED, DISMISSED, REJECTED})
_BLOCKING = frozenset({CHANGES_REQUESTED, REJECTED})

# GitHub's no-reply commit emails carry the account: `12345+login@users.noreply.github.com`.
_NOREPLY_RE = re.compile(r"^(?:(\d+)\+)?([A-Za-z0-9-]+)@users\.noreply\.github\.com$", re.IGNORECASE)


@dataclass(frozen=True)
class Identity:
    """A person as each source knows them: a GitHub account, a git identity, or both.

    Two identities are the same person when any known key matches: user id,
    login (case-insensitive) or email (case-insensitive).
    """

    id: str | None = None
    login: str | None = None
    email: str | None = None
    name: str | None = None
    bot: bool = False

    def keys(self) -> frozenset[str]:
        keys = set()
        if self.id:
            keys.add(f"id:{self.id}")
        if self.login:
            keys.add(f"login:{self.login.casefold()}")
        if self.email:
            keys.add(f"email:{self.email.casefold()}")
            match = _NOREPLY_RE.match(self.email)
            if match:
                if match.group(1):
                    keys.add(f"id:{match.group(1)}")
                keys.add(f"login:{match.group(2).casefold()}")
        return frozenset(keys)

    def same_as(self, other: Identity) -> bool:
        return bool(self.keys() & other.keys())

    @property
    def is_bot(self) -> bool:
        # GitHub Apps act as `name[bot]`; the flag comes from the API's `type: Bot`.
        return self.bot or bool(self.login and self.login.lower().endswith("[bot]"))

    @property
    def display(self) -> str:
        if self.login:
            return self.login
        if self.name and self.email:
            return f"{self.name} <{self.email}>"
        return self.name or self.email or (f"user {self.id}" if self.id else "someone unknown")

    def matches_any(self, names: Iterable[str]) -> bool:
        """Whether this person is one of `names` (logins, emails or git names, as written in `reviewers:`)."""
        mine = {v.casefold() for v in (self.login, self.email, self.name) if v}
        return any(n.casefold() in mine for n in names)


@dataclass(frozen=True)
class Review:
    """One review or approval, in the order it was given (`submitted_at`, then `id`)."""

    reviewer: Identity
    state: str  # any case: webhook payloads say `approved`, the REST API `APPROVED`
    commit_id: str
    submitted_at: str | float = ""
    id: int = 0
    dismissed: bool = False
    comment: str = ""
    via: str = "review"

    @property
    def normalized_state(self) -> str:
        if self.dismissed:
            return DISMISSED
        return self.state.upper()


@dataclass(frozen=True)
class Excluded:
    """Someone who may not approve this release, and why (\"authored 1a2b3c4d5e6f\")."""

    person: Identity
    why: str


@dataclass(frozen=True)
class Facts:
    """Everything the decision depends on, gathered at decision time."""

    sha: str
    required: int
    reviews: tuple[Review, ...]
    reviewers: tuple[str, ...] = ()
    # Permission per reviewer key (see `permission_key`); None when the source has no
    # permissions (local approvals), in which case none are checked.
    permissions: Mapping[str, str] | None = field(default=None)
    pr_author: Identity | None = None
    commit_people: tuple[Identity, ...] = ()  # authors and committers of the released range
    actor: Identity | None = None
    triggering_actor: Identity | None = None
    excluded: tuple[Excluded, ...] = ()  # everyone else who wrote, brought in or pushed the released commits
    # Released commits nobody above identifies (`sha (Name <email>)`): who wrote them is unknown.
    unidentified: tuple[str, ...] = ()
    allow_unidentified: bool = False  # approval.unidentified_authors: allow
    expires: float | None = None  # approval.expires, seconds: an older approval no longer counts
    now: float | None = None  # when the decision is made (the ledger's or the remote's clock), for `expires`


@dataclass(frozen=True)
class Counted:
    """An approval that counted toward the decision."""

    who: str
    via: str
    at: str | float
    comment: str = ""

    def as_data(self) -> dict[str, object]:
        return {"who": self.who, "via": self.via, "at": self.at or None, "comment": self.comment}


@dataclass(frozen=True)
class Decision:
    approved: bool
    reasons: tuple[str, ...]
    counted: tuple[Counted, ...]
    # Released commits of unknown authorship this decision let through (approval.unidentified_authors: allow).
    unidentified_allowed: tuple[str, ...] = ()

    def as_data(self) -> dict[str, object]:
        data: dict[str, object] = {"approved": self.approved, "reasons": list(self.reasons),
                                   "counted": [c.as_data() for c in self.counted]}
        if self.unidentified_allowed:
            data["unidentified_authors_allowed"] = list(self.unidentified_allowed)
        return data


def permission_key(person: Identity) -> str:
    """The key `Facts.permissions` is looked up by: the user id when known, else the login."""
    if person.id:
        return f"id:{person.id}"
    return f"login:{(person.login or '').casefold()}"


def _person_key(person: Identity) -> str:
    if person.id:
        return f"id:{person.id}"
    if person.login:
        return f"login:{person.login.casefold()}"
    return f"email:{(person.email or '').casefold()}"


def _order(review: Review) -> tuple[str, int]:
    at = review.submitted_at
    # ISO timestamps sort as text; epoch floats are zero-padded so both kinds order the same way.
    return (f"{at:020.6f}" if isinstance(at, float | int) else at, review.id)


def latest_decisive(reviews: Iterable[Review]) -> dict[str, Review]:
    """Each person's latest review that sets their standing (approve, request changes, dismissed)."""
    latest: dict[str, Review] = {}
    for review in sorted(reviews, key=_order):
        if review.normalized_state in _DECISIVE:
            latest[_person_key(review.reviewer)] = review
    return latest


def _excluded_because(person: Identity, facts: Facts) -> str | None:
    """Why this person may not approve this release, or None."""
    if person.is_bot:
        return "is a bot"
    if facts.pr_author and person.same_as(facts.pr_author):
        return "opened the pull request"
    for committer in facts.commit_people:
        if person.same_as(committer):
            return "authored or committed a commit being released"
    for excluded in facts.excluded:
        if person.same_as(excluded.person):
            return excluded.why
    if facts.actor and person.same_as(facts.actor):
        return "triggered this run (actor)"
    if facts.triggering_actor and person.same_as(facts.triggering_actor):
        return "re-ran this run (triggering actor)"
    return None


def _epoch(at: str | float) -> float | None:
    """A review's time as epoch seconds: local approvals record floats, GitHub ISO 8601 text; None unknown."""
    if isinstance(at, float | int):
        return float(at)
    if not at:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def age_text(seconds: float) -> str:
    """`approval.expires` as written: 604800 -> 7d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _expired_because(review: Review, facts: Facts) -> str | None:
    """Why an approval is too old to count (approval.expires), or None.

    An approval without a time (a GitHub environment approval, given to the very run that
    waits for it) cannot be older than that run, so it does not expire.
    """
    at = _epoch(review.submitted_at)
    if facts.expires is None or facts.now is None or at is None or facts.now - at <= facts.expires:
        return None
    from datetime import datetime, timezone

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    return (f"gave it at {iso(at)}, and it expired at {iso(at + facts.expires)} (approval.expires: "
            f"{age_text(facts.expires)}); approve again")


def _not_counted_because(review: Review, facts: Facts) -> str | None:
    person = review.reviewer
    expired = _expired_because(review, facts)
    if expired:
        return expired
    if review.commit_id.lower() != facts.sha.lower():
        return (f"approved {review.commit_id[:12] or 'no commit'}, not {facts.sha[:12]} "
                "(a new commit needs a new approval)")
    excluded = _excluded_because(person, facts)
    if excluded:
        return f"{excluded}, so cannot approve it"
    if facts.reviewers and not person.matches_any(facts.reviewers):
        return f"is not listed in reviewers ({', '.join(facts.reviewers)})"
    if facts.permissions is not None:
        permission = facts.permissions.get(permission_key(person), "none")
        if permission not in WRITE_PERMISSIONS:
            return f"has {permission} access; approving needs write, maintain or admin"
    return None


UNIDENTIFIED_FIX = ("link each commit's author email to their GitHub account (GitHub: Settings > Emails), or, "
                    "to accept commits whose authors cdkit cannot tell apart from the approvers, set "
                    "`approval.unidentified_authors: allow` in .cdkit.yml")
_SHOWN_UNIDENTIFIED = 10


def unidentified_problem(unidentified: tuple[str, ...]) -> str:
    """Why released commits that name nobody block every approval, and how to fix it."""
    shown = ", ".join(unidentified[:_SHOWN_UNIDENTIFIED])
    more = f" and {len(unidentified) - _SHOWN_UNIDENTIFIED} more" if len(unidentified) > _SHOWN_UNIDENTIFIED else ""
    return (f"{len(unidentified)} released commit(s) name no GitHub account cdkit can exclude (email not linked "
            f"to an account, no pull request, no recorded pusher): {shown}{more}; their author could approve "
            f"their own change, so no approval counts: {UNIDENTIFIED_FIX}")


def evaluate(facts: Facts) -> Decision:
    """Decide whether `facts.sha` is approved, with one reason per review considered."""
    reasons: list[str] = []
    counted: dict[str, Counted] = {}
    blocked = False
    if facts.unidentified and not facts.allow_unidentified:
        blocked = True
        reasons.append(unidentified_problem(facts.unidentified))
    elif facts.unidentified:
        reasons.append(f"{len(facts.unidentified)} released commit(s) name no GitHub account "
                       f"({', '.join(facts.unidentified[:_SHOWN_UNIDENTIFIED])}); allowed by "
                       "approval.unidentified_authors: allow")
    for review in latest_decisive(facts.reviews).values():
        who = review.reviewer.display
        state = review.normalized_state
        if state in _BLOCKING:
            blocked = True
            verb = "rejected" if state == REJECTED else "requested changes"
            reasons.append(f"{who} {verb} (at {review.commit_id[:12] or '?'}); that blocks the release "
                           "until they approve or the review is dismissed")
        elif state == DISMISSED:
            reasons.append(f"{who}'s review was dismissed, so it does not count")
        else:
            why_not = _not_counted_because(review, facts)
            if why_not:
                reasons.append(f"{who}'s approval does not count: {who} {why_not}")
            else:
                counted[_person_key(review.reviewer)] = Counted(who, review.via, review.submitted_at, review.comment)
                reasons.append(f"{who}'s approval counts")
    have = len(counted)
    if have < facts.required and not blocked:
        reasons.append(f"needs {facts.required} approval(s) of {facts.sha[:12]}, has {have}")
    approved = not blocked and have >= facts.required
    allowed = facts.unidentified if facts.allow_unidentified else ()
    return Decision(approved=approved, reasons=tuple(reasons), counted=tuple(counted.values()),
                    unidentified_allowed=allowed)
