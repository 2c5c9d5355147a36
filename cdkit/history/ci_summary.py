"""A release job's summary lines about delivery: this environment's last deployments and 30 days of DORA keys.

Read from GitHub (CI's ledger is thrown away after each job) with the history's own code,
bounded: one page of at most MAX_DEPLOYMENTS deployments and one request for each one's
statuses, with a short wait for rate limits. A release never fails because of it: when
GitHub cannot be read the summary says so in one line.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cdkit.history.metrics import band, compute
from cdkit.history.records import in_window
from cdkit.history.timeutil import iso, span
from cdkit.report.actions import md_code, md_escape

if TYPE_CHECKING:
    from cdkit.github import GitHubClient

WINDOW_DAYS = 30
MAX_DEPLOYMENTS = 30  # requests stay at most MAX_DEPLOYMENTS + 1
SHOWN = 5
MAX_WAIT = 10.0  # seconds of rate-limit or retry waits: the release is done, its summary must not hold the job


def delivery_lines(root: Path, environ: Mapping[str, str], *, environment: str, token: str | None,
                   now: float, client: GitHubClient | None = None) -> list[str]:
    """Markdown lines for `$GITHUB_STEP_SUMMARY`; every value from GitHub escaped or in a code span.

    `client`: the release's, so reads it made that are still current are not made again."""
    from cdkit.history.source import from_github

    since = now - WINDOW_DAYS * 86400.0
    try:
        found = from_github(root, environ, token=token, environment=environment, since=since, max_wait=MAX_WAIT,
                            limit=MAX_DEPLOYMENTS, client=client)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the release it follows stands
        return [f"**Delivery:** the deployment history could not be read from GitHub "
                f"({md_escape(str(exc) or type(exc).__name__, limit=300)}); the release is not affected"]
    deployments = in_window(found.deployments, since, None)
    if not deployments:
        return [f"**Delivery ({md_code(environment)}, {WINDOW_DAYS} days):** no deployments on GitHub yet"]
    oldest = deployments[0].started_at
    window = since if len(found.deployments) < MAX_DEPLOYMENTS else oldest
    metrics = compute(found.deployments, found.changes, since=window, until=now,
                      fix_detection=found.fix_detection).get(environment)
    lines = [f"**Delivery ({md_code(environment)}, {WINDOW_DAYS} days"
             + (f", newest {MAX_DEPLOYMENTS} deployments since {md_code(iso(oldest) or '')}"
                if window != since else "")
             + f"; {found.requests} GitHub requests):**"]
    if metrics is not None:
        data = metrics.as_data()
        lead, cfr, restore = (data["lead_time_for_changes"], data["change_failure_rate"], data["time_to_restore"])
        rate = "-" if cfr["rate"] is None else f"{cfr['rate']:.0%} ({cfr['failed']}/{cfr['deployments']})"
        lines.append(f"- DORA: {metrics.per_day * 7:.1f} deployments a week ({band(metrics.per_day)}); "
                     f"lead time p50 {span(lead['median_seconds'])}, p90 {span(lead['p90_seconds'])}; "
                     f"change failure rate {rate}; time to restore p50 {span(restore['median_seconds'])}")
    for d in reversed(deployments[-SHOWN:]):
        who = f" by {md_code(d.deployed_by)}" if d.deployed_by else ""
        lines.append(f"- {md_code(iso(d.started_at) or '')} {md_code(d.sha[:12])} {md_escape(d.outcome)}{who}"
                     + (" (rollback)" if d.rollback else ""))
    return lines
