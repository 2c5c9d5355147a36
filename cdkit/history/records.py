"""Deployments as the history shows them: one plain record per deployment, from the ledger or GitHub.

Outcomes are normalised for people and metrics, defensively: a status this code does
not know yet (a newer cdkit wrote it) is shown as it is, never dropped, and counts as
neither a success nor a failure.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

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


@dataclass(frozen=True)
class Deployment:
    """One deployment of one SHA to one environment."""

    key: str  # "ledger:12" or "github:345": unique across sources
    number: int  # the ledger's or GitHub's id
    environment: str
    sha: str
    status: str  # as recorded
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
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def outcome(self) -> str:
        return outcome_of(self.status)

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


def _flag(row: dict[str, Any], *names: str) -> bool:
    return any(bool(row.get(name)) for name in names)


def from_ledger_row(row: dict[str, Any]) -> Deployment:
    """A ledger `deployments` row (any schema version: unknown columns are kept in `extra`)."""
    raw_approval = row.get("approval")
    if isinstance(raw_approval, str):
        try:
            raw_approval = json.loads(raw_approval)
        except ValueError:
            raw_approval = None
    approvals, via = approvals_of(raw_approval)
    notes = tuple(str(row[k]) for k in ("reason", "force_reason", "break_glass_reason") if row.get(k))
    break_glass = _flag(row, "break_glass") or (isinstance(raw_approval, dict) and bool(raw_approval.get("break_glass")))
    known = {"id", "environment", "sha", "status", "rollback", "approval", "started_at", "finished_at",
             "deployed_by", "github_id", "log_path"}
    return Deployment(
        key=f"ledger:{row['id']}", number=int(row["id"]), environment=str(row["environment"]), sha=str(row["sha"]),
        status=str(row["status"]), started_at=float(row["started_at"]),
        finished_at=float(row["finished_at"]) if row.get("finished_at") is not None else None,
        rollback=bool(row.get("rollback")), deployed_by=row.get("deployed_by"), approvals=approvals,
        approval_via=via, forced=_flag(row, "forced", "force"), break_glass=break_glass, notes=notes,
        extra={k: v for k, v in row.items() if k not in known} | {"log": row.get("log_path"),
                                                                  "github_id": row.get("github_id")},
    )


def load_ledger(db: sqlite3.Connection, *, environment: str | None = None) -> list[Deployment]:
    """Every deployment in the ledger, oldest first, with each one's range base filled in (read only)."""
    query, args = "SELECT * FROM deployments", []
    if environment:
        query, args = query + " WHERE environment = ?", [environment]
    rows = db.execute(query + " ORDER BY id", args).fetchall()
    return with_previous(from_ledger_row(dict(r)) for r in rows)


def with_previous(deployments: Iterable[Deployment]) -> list[Deployment]:
    """Fill `previous_sha`: what each environment ran when the deployment started (its last live deployment).

    Deployments must come in the order they started.
    """
    running: dict[str, str] = {}
    filled = []
    for d in deployments:
        filled.append(replace(d, previous_sha=running.get(d.environment)) if d.previous_sha is None else d)
        if d.live or d.outcome == "baseline":
            running[d.environment] = d.sha
    return filled


def in_window(deployments: Sequence[Deployment], since: float | None, until: float | None) -> list[Deployment]:
    return [d for d in deployments
            if (since is None or d.started_at >= since) and (until is None or d.started_at < until)]
