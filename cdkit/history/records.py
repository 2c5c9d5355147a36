"""Deployments as the history shows them: one plain record per deployment, from the ledger or GitHub.

Outcomes are normalised for people and metrics, defensively: a status this code does
not know yet (a newer cdkit wrote it) is shown as it is, never dropped, and counts as
neither a success nor a failure.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from cdkit.ledger import FORCED_REASON_PREFIX

# Ledger (and GitHub) statuses -> the outcome shown and counted.
OUTCOMES = {
    "success": "deployed",
    "deployed": "deployed",
    "verified": "verified",
    "failure": "failed",
    "failed": "failed",
    "error": "failed",
    "verification_failed": "failed verification",
    "failed_verification": "failed verification",
    "unverified": "failed verification",
    "rolled_back": "rolled back",
    "quarantined": "quarantined",
    "cancelled": "cancelled",
    "timed_out": "timed out",
    "crashed": "crashed",
    "in_progress": "in progress",
    "queued": "in progress",
    "pending": "in progress",
    "waiting": "in progress",
    "inactive": "deployed",  # GitHub: a successful deployment that a newer one replaced
    "refused": "refused",
    "baseline": "baseline",
    "adopted": "baseline",
}
# The environment ran the change (it was live, if only until a rollback).
LIVE = frozenset({"deployed", "verified", "rolled back"})
# The deployment itself went wrong (a live deployment can still count as failed: rolled back, fixed).
FAILED = frozenset({"failed", "failed verification", "quarantined", "cancelled", "timed out", "crashed"})
# Not a deployment attempt that finished: left out of the rates.
NOT_COUNTED = frozenset({"in progress", "refused", "baseline"})


EMPTY: Mapping[str, Any] = MappingProxyType({})


def is_adoption(deployment: Mapping[str, Any]) -> bool:
    """A GitHub deployment whose payload records an adoption (`cdkit adopt`): nothing was deployed or verified."""
    payload = deployment.get("payload")
    return isinstance(payload, Mapping) and payload.get("adopted") is True

F = TypeVar("F", bound=Callable[..., Any])


def without_gc(function: F) -> F:
    """Run `function` with CPython's cyclic garbage collector paused.

    Building 100,000 records (and their changes) is 100,000s of allocations, each batch of
    which triggers a collection that walks every object alive, the records themselves
    included: a third of the metrics' time (bench/bench_metrics.py). Nothing built here
    forms a reference cycle, so pausing loses nothing; reference counting still frees.
    """
    import functools
    import gc

    @functools.wraps(function)
    def paused(*args: Any, **kwargs: Any) -> Any:
        if not gc.isenabled():
            return function(*args, **kwargs)
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            gc.enable()

    return paused  # type: ignore[return-value]


def outcome_of(status: str) -> str:
    return OUTCOMES.get(status, status.replace("_", " "))


@dataclass(frozen=True)
class Approval:
    who: str
    via: str
    at: float | None = None
    comment: str = ""

    def as_data(self) -> dict[str, Any]:
        return {"who": self.who, "via": self.via, "at": self.at, "comment": self.comment}


class Deployment(NamedTuple):
    """One deployment of one SHA to one environment (a NamedTuple: a ledger can hold 100,000 of them)."""

    key: str  # "ledger:12" or "github:345": unique across sources
    number: int  # the ledger's or GitHub's id
    environment: str
    sha: str
    status: str  # as recorded
    outcome: str  # as shown and counted: outcome_of(status)
    started_at: float
    finished_at: float | None
    rollback: bool = False
    deployed_by: str | None = None
    approvals: tuple[Approval, ...] = ()
    approval_via: str | None = None
    forced: bool = False
    break_glass: bool = False
    notes: tuple[str, ...] = ()  # reasons for force / break-glass, GitHub descriptions
    previous_sha: str | None = None  # what the environment ran before (the range's base)
    source: str = "ledger"
    extra: Mapping[str, Any] = EMPTY

    @property
    def live(self) -> bool:
        return self.outcome in LIVE

    @property
    def done_at(self) -> float:
        return self.finished_at if self.finished_at is not None else self.started_at

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else max(0.0, self.finished_at - self.started_at)


def approvals_of(data: Any) -> tuple[tuple[Approval, ...], str | None]:
    """The approvals a deployment's recorded decision counted, and the policy's `via`."""
    if not isinstance(data, dict):
        return (), None
    raw = data.get("counted")
    counted: list[Any] = raw if isinstance(raw, list) else []
    approvals = tuple(
        Approval(who=str(c.get("who") or "?"), via=str(c.get("via") or data.get("via") or "?"),
                 at=c.get("at") if isinstance(c.get("at"), (int, float)) else None, comment=str(c.get("comment") or ""))
        for c in counted if isinstance(c, dict)
    )
    via = data.get("via")
    return approvals, str(via) if via else None


_KNOWN_COLUMNS = frozenset({"id", "environment", "sha", "status", "rollback", "approval", "started_at",
                            "finished_at", "deployed_by", "github_id", "log_path"})
_NOTE_COLUMNS = ("reason", "force_reason", "break_glass_reason")


def from_ledger_row(row: Mapping[str, Any], previous_sha: str | None = None) -> Deployment:
    """A ledger `deployments` row (any schema version: columns this code does not know are kept in `extra`)."""
    raw_approval = row.get("approval")
    if isinstance(raw_approval, str):
        try:
            raw_approval = json.loads(raw_approval)
        except ValueError:
            raw_approval = None
    approvals, via = approvals_of(raw_approval) if raw_approval else ((), None)
    notes = tuple(str(row[k]) for k in _NOTE_COLUMNS if row.get(k))
    break_glass = bool(row.get("break_glass")) or (isinstance(raw_approval, dict)
                                                   and bool(raw_approval.get("break_glass")))
    extra = {k: v for k, v in row.items() if k not in _KNOWN_COLUMNS and v is not None}
    if row.get("log_path") or row.get("github_id"):
        extra.update(log=row.get("log_path"), github_id=row.get("github_id"))
    status = str(row["status"])
    finished = row.get("finished_at")
    return Deployment(
        f"ledger:{row['id']}", int(row["id"]), str(row["environment"]), str(row["sha"]), status, outcome_of(status),
        float(row["started_at"]), float(finished) if finished is not None else None, bool(row.get("rollback")),
        row.get("deployed_by"), approvals, via,
        bool(row.get("forced") or row.get("force")) or str(row.get("reason") or "").startswith(FORCED_REASON_PREFIX),
        break_glass, notes,
        previous_sha, "ledger", extra or EMPTY,
    )


# The columns the fast path reads; a row whose every other column is empty (NULL, 0, '') needs nothing more.
_CORE_COLUMNS = ("id", "environment", "sha", "status", "rollback", "started_at", "finished_at", "deployed_by")


@without_gc
def load_ledger(db: sqlite3.Connection, *, environment: str | None = None) -> list[Deployment]:
    """Every deployment in the ledger, oldest first, with each one's range base filled in (read only).

    The common row (no approval, reason or log, nothing in columns from a newer schema) takes a
    fast path, straight from the row's tuple into the record: 100,000 deployments load in about
    0.15 s (bench/bench_metrics.py); any other row goes through `from_ledger_row`.
    """
    from operator import itemgetter

    query, args = "SELECT * FROM deployments", []
    if environment:
        query, args = query + " WHERE environment = ?", [environment]
    cursor = db.cursor()
    cursor.row_factory = None  # plain tuples: sqlite3.Row lookups by name cost more than the rest together
    rows = cursor.execute(query + " ORDER BY id", args)
    columns = [c[0] for c in cursor.description]
    at = {name: columns.index(name) for name in columns}
    i_id, i_env, i_sha, i_status, i_rollback, i_start, i_end = (at[n] for n in _CORE_COLUMNS[:7])
    i_by = at.get("deployed_by")
    others = [i for i, name in enumerate(columns) if name not in _CORE_COLUMNS]
    rest: Any = itemgetter(*others) if len(others) > 1 else (lambda values: (values[others[0]],) if others else ())
    live_or_baseline = LIVE | {"baseline"}
    running: dict[str, str] = {}
    found: list[Deployment] = []
    append = found.append
    new = tuple.__new__  # the NamedTuple without its keyword-handling constructor: one call less per row
    for values in rows:
        environment_name = values[i_env]
        if any(rest(values)):
            d = from_ledger_row(dict(zip(columns, values)), running.get(environment_name))
        else:
            status = values[i_status]
            d = new(Deployment, (f"ledger:{values[i_id]}", values[i_id], environment_name, values[i_sha], status,
                                 OUTCOMES.get(status) or outcome_of(status), values[i_start], values[i_end],
                                 bool(values[i_rollback]), values[i_by] if i_by is not None else None, (), None,
                                 False, False, (), running.get(environment_name), "ledger", EMPTY))
        append(d)
        if d.outcome in live_or_baseline and d.sha:  # "": adopted as running nothing
            running[environment_name] = d.sha
    return found


def with_previous(deployments: Iterable[Deployment]) -> list[Deployment]:
    """Fill `previous_sha`: what each environment ran when the deployment started (its last live deployment).

    Deployments must come in the order they started.
    """
    running: dict[str, str] = {}
    filled = []
    for d in deployments:
        filled.append(d._replace(previous_sha=running.get(d.environment)) if d.previous_sha is None else d)
        if (d.live or d.outcome == "baseline") and d.sha:
            running[d.environment] = d.sha
    return filled


def in_window(deployments: Sequence[Deployment], since: float | None, until: float | None) -> list[Deployment]:
    return [d for d in deployments
            if (since is None or d.started_at >= since) and (until is None or d.started_at < until)]
