"""Change records for an audit (SOC 2 CC8.1, ISO 27001 A.8.32): one per deployment, from the ledger and git.

Each record answers what an auditor samples a change for: what was deployed (SHA, range,
its commits and the pull requests that brought them), which checks passed and where they
ran (the pre-push hook, CI, a local `cdkit run`), who approved it and whether any approver
wrote or committed part of it, who deployed it, whether it was verified, rolled back,
forced past a quarantine or deployed by break-glass, and with what reason.

Pull requests come from git, offline: GitHub's merge commits (`Merge pull request #12
from ...`) and squash merges (`subject (#12)`). The ledger keeps no pull request numbers,
and a rebase-merged pull request leaves no trace in git, so it is not listed.
"""
from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from cdkit import git
from cdkit.approval import Identity
from cdkit.history.records import Deployment
from cdkit.ledger import ABANDONED_REASON, FORCED_REASON_PREFIX, abandoned
from cdkit.history.source import History
from cdkit.history.timeutil import iso

MAX_COMMITS = 500  # per record: a first deployment "brings" the whole history; the count stays exact
_MERGE_PR = re.compile(r"^Merge pull request #(\d+) from (\S+)")
_SQUASH_PR = re.compile(r"\(#(\d+)\)\s*$")
_PERSON = re.compile(r"^(.*?)\s*<([^<>]*)>$")
_BREAK_GLASS_MARK = "break-glass into "  # cdkit.release writes the break-glass note into the deployment's reason


class StageSeen(NamedTuple):
    stage: str
    status: str
    reason: str
    run_id: int
    where: str
    host: str | None
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    log: str | None

    def as_data(self) -> dict[str, Any]:
        from cdkit.jsondoc import stage

        duration = None if self.started_at is None or self.finished_at is None else \
            max(0.0, self.finished_at - self.started_at)
        return stage(self.stage, self.status, reason=self.reason or None, duration=duration,
                     exit_code=self.exit_code, log=self.log, run=self.run_id, where=self.where, host=self.host,
                     finished_at=iso(self.finished_at))


def where_it_ran(event: str) -> str:
    """The ledger's run event as people say it: the hook, CI, or a local `cdkit run`."""
    if event == "pre-push":
        return "hook"
    if event == "run":
        return "local run"
    return f"CI ({event})"


def stage_results(db: sqlite3.Connection, shas: Iterable[str]) -> dict[str, list[StageSeen]]:
    """For each SHA, each stage's latest result over its clean runs (what a release gate looks at)."""
    wanted = sorted(set(shas))
    found: dict[str, dict[str, StageSeen]] = {}
    for start in range(0, len(wanted), 500):  # SQLite's bound on variables
        chunk = wanted[start:start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            "SELECT r.sha, r.id, r.event, r.host, s.stage, s.status, s.reason, s.started_at, s.finished_at,"
            " s.exit_code, s.log_path, r.status, r.pid FROM runs r"
            f" JOIN stage_results s ON s.run_id = r.id WHERE r.dirty = 0 AND r.sha IN ({marks})"  # noqa: S608
            " ORDER BY r.id, COALESCE(s.started_at, 1e18), s.rowid", chunk).fetchall()
        for sha, run_id, event, host, stage, status, reason, started, finished, exit_code, log, run_status, pid \
                in rows:
            if abandoned(status, run_status, pid, host):
                status, reason = "cancelled", ABANDONED_REASON
            found.setdefault(sha, {})[stage] = StageSeen(stage, status, reason, run_id, where_it_ran(event), host,
                                                          started, finished, exit_code, log)
    return {sha: list(stages.values()) for sha, stages in found.items()}


def latest_seals(db: sqlite3.Connection) -> dict[int, tuple[int, str]]:
    """Each deployment's latest seal in the audit chain: id -> (entry, hash)."""
    rows = db.execute("SELECT row_id, seq, hash FROM audit_chain WHERE kind = 'deployment' AND seq IN"
                      " (SELECT MAX(seq) FROM audit_chain WHERE kind = 'deployment' GROUP BY row_id)").fetchall()
    return {int(r[0]): (int(r[1]), str(r[2])) for r in rows}


def identity_of(text: str) -> Identity:
    """An approver as the ledger names them (`Name <email>`, or a GitHub login) as an identity to compare."""
    match = _PERSON.match(text.strip())
    if match:
        return Identity(name=match.group(1) or None, email=match.group(2) or None)
    return Identity(login=text.strip().lstrip("@") or None)


def pull_requests(commits: Sequence[git.CommitInfo]) -> list[dict[str, Any]]:
    """The pull requests git shows merged in `commits`: merge commits and squash-merge subjects."""
    found: dict[int, dict[str, Any]] = {}
    for c in commits:
        merge = _MERGE_PR.match(c.subject)
        squash = _SQUASH_PR.search(c.subject)
        if merge:
            found.setdefault(int(merge.group(1)), {"number": int(merge.group(1)), "commit": c.sha,
                                                   "title": c.subject, "how": "merge commit"})
        elif squash:
            found.setdefault(int(squash.group(1)), {"number": int(squash.group(1)), "commit": c.sha,
                                                    "title": c.subject, "how": "squash subject"})
    return sorted(found.values(), key=lambda pr: pr["number"])


def author_exclusion(d: Deployment, commits: Sequence[git.CommitInfo] | None) -> dict[str, Any]:
    """Whether every counted approver is someone other than the authors and committers of what was deployed.

    Checked again here from git, independently of the gate that counted the approvals.
    """
    if not d.approvals:
        result = "not applicable" if d.approval_via is None else "no approvals counted"
        return {"result": result, "conflicts": []}
    if commits is None:
        return {"result": "unknown", "conflicts": [], "detail": "the deployed range is not in this clone"}
    people = [Identity(name=c.author_name, email=c.author_email) for c in commits] + \
        [Identity(name=c.committer_name, email=c.committer_email) for c in commits]
    conflicts = sorted({a.who for a in d.approvals if any(identity_of(a.who).same_as(p) for p in people)})
    return {"result": "failed" if conflicts else "passed", "conflicts": conflicts}


def verification(d: Deployment) -> str:
    return {"verified": "passed", "failed verification": "failed", "deployed": "not verified",
            "rolled back": "not verified"}.get(d.outcome, "not reached")


def approval_records(db: sqlite3.Connection) -> dict[int, dict[str, Any]]:
    """Each ledger deployment's recorded approval decision (policy, required count, every reason): id -> it."""
    import json

    found = {}
    for row_id, text in db.execute("SELECT id, approval FROM deployments WHERE approval IS NOT NULL").fetchall():
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict):
            found[int(row_id)] = data
    return found


def _approval_data(d: Deployment, commits: Sequence[git.CommitInfo] | None,
                   record: Mapping[str, Any]) -> dict[str, Any]:
    reasons = record.get("reasons")
    return {
        "via": d.approval_via, "required": record.get("required"), "approved": record.get("approved"),
        "approvals": [{**a.as_data(), "at": iso(a.at) if isinstance(a.at, (int, float)) else a.at}
                      for a in d.approvals],
        "not_counted": [str(r) for r in reasons if "does not count" in str(r)] if isinstance(reasons, list) else [],
        "author_exclusion": author_exclusion(d, commits),
    }


def _rolled_back_by(deployments: Sequence[Deployment]) -> dict[str, str]:
    """Deployment key -> the rollback that replaced it (the next live deployment of its environment)."""
    last_live: dict[str, Deployment] = {}
    found: dict[str, str] = {}
    for d in deployments:
        if not d.live:
            continue
        before = last_live.get(d.environment)
        if before is not None and d.rollback:
            found[before.key] = d.key
        last_live[d.environment] = d
    return found


def change_record(history: History, d: Deployment, *, stages: Mapping[str, list[StageSeen]],
                  seals: Mapping[int, tuple[int, str]], approvals: Mapping[int, Mapping[str, Any]],
                  rolled_back_by: Mapping[str, str]) -> dict[str, Any]:
    commits = _commits(history, d)
    forced_reason = next((n for n in d.notes if n.startswith(FORCED_REASON_PREFIX)), None)
    seal = seals.get(d.number) if d.source == "ledger" else None
    glass_reason = d.extra.get("break_glass_reason") or next(
        (n[n.index(_BREAK_GLASS_MARK):] for n in d.notes if _BREAK_GLASS_MARK in n), None) if d.break_glass else None
    return {
        "id": d.key, "environment": d.environment, "sha": d.sha or None, "previous_sha": d.previous_sha,
        "range": f"{d.previous_sha}..{d.sha}" if d.previous_sha else d.sha or "(nothing: adopted as empty)",
        "commits": None if commits is None else [
            {"sha": c.sha, "subject": c.subject, "author": f"{c.author_name} <{c.author_email}>",
             "committer": f"{c.committer_name} <{c.committer_email}>"} for c in commits[:MAX_COMMITS]],
        "commit_count": None if commits is None else len(commits),
        "pull_requests": [] if commits is None else pull_requests(commits),
        "stages": [s.as_data() for s in stages.get(d.sha, [])],
        "approval": _approval_data(d, commits, approvals.get(d.number, {}) if d.source == "ledger" else {}),
        "deployed_by": d.deployed_by, "status": d.status, "outcome": d.outcome,
        "started_at": iso(d.started_at), "finished_at": iso(d.finished_at),
        "verification": verification(d),
        "rollback": {"is_rollback": d.rollback, "automatic": bool(d.extra.get("automatic")),
                     "from": d.extra.get("rollback_from"), "rolled_back_by": rolled_back_by.get(d.key)},
        "forced": {"forced": d.forced or forced_reason is not None, "reason": forced_reason},
        "break_glass": {"break_glass": d.break_glass, "reason": str(glass_reason) if glass_reason else None},
        "reason": next(iter(d.notes), None),
        "governed_by": str(d.extra["governed_by"]) if d.extra.get("governed_by") else None,
        "seal": None if seal is None else {"entry": seal[0], "hash": seal[1]},
    }


def _commits(history: History, d: Deployment) -> list[git.CommitInfo] | None:
    """The commits `d` brought (or tried to): previous..sha; its whole history on a first deployment."""
    if history.root is None or d.sha not in history.graph:
        return None
    base = d.previous_sha if d.previous_sha and d.previous_sha in history.graph else None
    if d.previous_sha and base is None:
        return None
    return git.commits_in_range(base, d.sha, cwd=history.root)


def change_records(history: History, db: sqlite3.Connection | None, shown: Sequence[Deployment]) -> list[dict[str, Any]]:
    """The records of `shown` (oldest first); `db` is the ledger (stage results, seals), None for GitHub."""
    stages = stage_results(db, (d.sha for d in shown)) if db is not None else {}
    seals = latest_seals(db) if db is not None else {}
    approvals = approval_records(db) if db is not None else {}
    rolled_back_by = _rolled_back_by(history.deployments)
    return [change_record(history, d, stages=stages, seals=seals, approvals=approvals, rolled_back_by=rolled_back_by)
            for d in shown]
