"""Deployments from GitHub's Deployments API: where CI's history lives (each job's ledger is thrown away).

One request per page of deployments (100 each, newest first, stopping at `since`) and
one per deployment for its statuses; the client counts them. Deployments cdkit created
carry its payload (ledger id, rollback, approval, who deployed); GitHub's own
deployments for jobs that declare `environment:` are left out where cdkit's exist for
that environment, since they describe the same release twice.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from cdkit.github import GitHubClient
from cdkit.history.records import Deployment, approvals_of, is_adoption, outcome_of, with_previous
from cdkit.history.timeutil import parse_iso

_JOB_LINK = re.compile(r"/actions/runs/\d+/job/\d+")
TERMINAL = frozenset({"success", "failure", "error", "inactive"})


def _deployments(client: GitHubClient, repo: str, environment: str | None,
                 since: float | None, limit: int | None = None) -> Iterator[dict[str, Any]]:
    # Whole pages even for a bounded read (one request either way), so a page the release's
    # client just read for the gate answers it.
    params: dict[str, Any] = {"environment": environment} if environment else {}
    count = 0
    for item in client.request_all(f"/repos/{repo}/deployments", params=params or None,
                                   what=f"list the deployments of {repo}", scope="deployments: read"):
        created = parse_iso(item.get("created_at"))
        if since is not None and created is not None and created < since:
            return  # newest first: every later page is older still
        yield item
        count += 1
        if limit is not None and count >= limit:
            return  # before the loop asks for the next item: that could be one more page


def _statuses(client: GitHubClient, repo: str, deployment_id: int) -> list[dict[str, Any]]:
    return list(client.request_all(f"/repos/{repo}/deployments/{deployment_id}/statuses",
                                   what=f"read the statuses of deployment {deployment_id}",
                                   scope="deployments: read"))


def _is_adoption(item: Mapping[str, Any]) -> bool:
    """cdkit's record of what an environment ran before its first cdkit deployment (`cdkit adopt`): a
    baseline, as in the ledger, never a deployment of its own (whatever state GitHub gives it)."""
    return is_adoption(item) and "cdkit_deployment_id" in item["payload"]


def _is_job_deployment(item: Mapping[str, Any], statuses: list[dict[str, Any]]) -> bool:
    payload = item.get("payload")
    if isinstance(payload, Mapping) and "cdkit_token" in payload:
        return False
    return any(_JOB_LINK.search(str(s.get(k) or "")) for s in statuses for k in ("log_url", "target_url"))


def to_deployment(item: Mapping[str, Any], statuses: list[dict[str, Any]]) -> Deployment:
    """One GitHub deployment and its statuses (newest first) as a history record."""
    raw_payload = item.get("payload")
    payload: Mapping[str, Any] = raw_payload if isinstance(raw_payload, Mapping) else {}
    latest = statuses[0] if statuses else {}
    state = str(latest.get("state") or "pending")
    status = {"failure": "failure", "error": "failure", "success": "success", "inactive": "inactive"}.get(state, state)
    if _is_adoption(item):
        status = "adopted"
    if state in ("failure", "error") and "started first" in str(latest.get("description") or ""):
        status = "refused"  # cdkit set it to failure before deploying anything: another deploy started first
    started = parse_iso(item.get("created_at")) or 0.0
    finished = None
    if status == "adopted":
        finished = parse_iso(item.get("created_at"))  # as the ledger records it: over as it begins
    elif state in TERMINAL:
        # `inactive` comes later, when a newer deployment replaces this one: the finish was the success before it.
        finishing = next((s for s in statuses if s.get("state") in ("success", "failure", "error")), latest)
        finished = parse_iso(finishing.get("created_at"))
    approvals, via = approvals_of(payload.get("approval"))
    creator = (item.get("creator") or {}).get("login") if isinstance(item.get("creator"), Mapping) else None
    notes = tuple(str(s.get("description")) for s in statuses[:1] if s.get("description"))
    return Deployment(
        key=f"github:{item['id']}", number=int(item["id"]), environment=str(item.get("environment") or "?"),
        sha=str(item.get("sha") or ""), status=status, outcome=outcome_of(status), started_at=started,
        finished_at=finished,
        rollback=bool(payload.get("rollback")), approvals=approvals, approval_via=via,
        deployed_by=str(payload.get("deployed_by") or (f"@{creator}" if creator else "")) or None,
        forced=bool(payload.get("forced")), break_glass=bool(payload.get("break_glass")), notes=notes,
        source="github", extra={"ledger_id": payload.get("cdkit_deployment_id"),
                                "log": latest.get("log_url") or latest.get("target_url")},
    )


def load_github(client: GitHubClient, repo: str, *, environment: str | None,
                since: float | None, limit: int | None = None) -> list[Deployment]:
    """The repository's deployments (of one environment, or all), oldest first, with their range bases.

    `limit`: only the newest that many (one page and one request each for their statuses).
    """
    found = []
    for item in _deployments(client, repo, environment, since, limit):
        # An adoption deployed nothing, so its statuses say nothing the history uses.
        statuses = [] if _is_adoption(item) else _statuses(client, repo, int(item["id"]))
        found.append((item, statuses, _is_job_deployment(item, statuses)))
    with_cdkit = {str(item.get("environment")) for item, _s, job in found if not job}
    kept = [to_deployment(item, statuses) for item, statuses, job in found
            if not (job and str(item.get("environment")) in with_cdkit)]
    kept.sort(key=lambda d: (d.started_at, d.number))
    return with_previous(kept)
