"""`cdkit metrics`: the four DORA keys per environment, from the ledger or GitHub."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from cdkit import jsondoc, output
from cdkit.commands.history import read_history, table
from cdkit.history.metrics import EnvironmentMetrics, band, compute
from cdkit.history.source import History
from cdkit.history.timeutil import iso, local, span

DEFAULT_SINCE = "90d"


def metrics_data(found: History, results: Mapping[str, EnvironmentMetrics], *, start: float | None,
                 now: float, environment: str | None) -> dict[str, Any]:
    """The `--json` document (the report embeds the same one)."""
    return jsondoc.document("metrics", {
        "source": found.source, "repository": found.repository,
        "generated_at": iso(now), "since": iso(start), "until": iso(now), "environment": environment,
        "github_requests": found.requests,
        "environments": {name: m.as_data() for name, m in results.items()},
    })


def compute_metrics(found: History, *, start: float | None, now: float) -> dict[str, EnvironmentMetrics]:
    return compute(found.deployments, found.changes, since=start, until=now, fix_detection=found.fix_detection)


def summary_lines(results: Mapping[str, EnvironmentMetrics]) -> list[str]:
    header = ("ENV", "DEPLOYS", "PER WEEK", "BAND", "LEAD TIME p50/p90", "FAILURE RATE", "RESTORE p50/p90")
    rows: list[tuple[object, ...]] = []
    for name, m in results.items():
        data = m.as_data()
        lead, restore = data["lead_time_for_changes"], data["time_to_restore"]
        rate = m.failure_rate
        failed = f"{rate:.0%} ({len(m.failures)}/{len(m.deployments)})" if rate is not None else "-"
        open_ = " +1 open" if restore["not_restored"] else ""
        rows.append((name, len(m.live), f"{m.per_day * 7:.1f}", band(m.per_day),
                     f"{span(lead['median_seconds'])} / {span(lead['p90_seconds'])} ({lead['changes']})",
                     failed, f"{span(restore['median_seconds'])} / {span(restore['p90_seconds'])}{open_}"))
    return table(header, rows)


def metrics(*, config: str | None, environment: str | None, since: str | None, source: str, token: str | None,
            as_json: bool, environ: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.time,
            cwd: str | os.PathLike[str] | None = None) -> int:
    now = clock()
    found, start = read_history(config=config, source=source, environment=environment,
                                since=since or DEFAULT_SINCE, token=token, environ=environ, now=now, cwd=cwd)
    results = compute_metrics(found, start=start, now=now)
    if as_json:
        output.write_line(json.dumps(metrics_data(found, results, start=start, now=now, environment=environment),
                                     indent=2))
        return 0
    where = f"GitHub ({found.repository}, {found.requests} requests)" if found.source == "github" else "the ledger"
    if not results:
        output.write_line(f"no deployments in {where}" + (f" for {environment}" if environment else ""))
        return 0
    output.write_line(f"DORA metrics since {local(start)} (local time), from {where}:")
    for line in summary_lines(results):
        output.write_line(line)
    if not found.fix_detection:
        output.write_line("note: some deployed commits are not in this clone: fix deployments could not all be "
                          "recognised, and their lead times are missing (git fetch the release branch)")
    return 0
