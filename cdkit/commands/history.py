"""`cdkit history`: deployments newest first, from the ledger or GitHub."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from cdkit import jsondoc, output
from cdkit.history.records import Deployment, in_window
from cdkit.history.source import History, load
from cdkit.history.timeutil import iso, local, parse_when, span
from cdkit.session import find_workspace



def read_history(*, config: str | None, source: str, environment: str | None, since: str | None,
                 token: str | None, environ: Mapping[str, str], now: float,
                 cwd: str | os.PathLike[str] | None = None) -> tuple[History, float | None]:
    """The history the command asked for, and the window's start (None: all of it)."""
    start = parse_when(since, now=now) if since else None
    ws = find_workspace(config, cwd)
    return load(ws.root, ws.repo.cdkit_dir, source=source, environment=environment, since=start, token=token,
                environ=environ), start


def approvals_text(d: Deployment) -> str:
    if d.approvals:
        return ", ".join(f"{a.who} ({a.via})" for a in d.approvals)
    return f"none ({d.approval_via})" if d.approval_via else "-"


def flags(d: Deployment) -> list[str]:
    marks = []
    if d.rollback:
        marks.append("rollback")
    if d.forced:
        marks.append("FORCED")
    if d.break_glass:
        marks.append("BREAK-GLASS")
    return marks


def deployment_data(history: History, d: Deployment) -> dict[str, Any]:
    return {
        "id": d.key, "environment": d.environment, "sha": d.sha or None, "previous_sha": d.previous_sha,
        "commits": history.commit_count(d), "status": d.status, "outcome": d.outcome,
        "started_at": iso(d.started_at), "finished_at": iso(d.finished_at), "duration_seconds": d.duration,
        "rollback": d.rollback, "forced": d.forced, "break_glass": d.break_glass, "notes": list(d.notes),
        "approval_via": d.approval_via,
        "approvals": [{**a.as_data(), "at": iso(a.at)} for a in d.approvals],
        "deployed_by": d.deployed_by,
    }


def range_text(history: History, d: Deployment) -> str:
    count = history.commit_count(d)
    base = d.previous_sha[:8] if d.previous_sha else "(first)"
    return f"{base}..{d.sha[:8]}" + (f" ({count})" if count is not None else "")


def printable(text: object) -> str:
    """Text from the ledger or GitHub as one terminal line: control characters (escapes, newlines) shown as \\xNN."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(text))


def table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> list[str]:
    """Columns padded to their widest cell, every cell printable."""
    cells = [[printable(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]


def _table(history: History, shown: list[Deployment]) -> list[str]:
    header = ("WHEN", "ENV", "RANGE", "OUTCOME", "APPROVED BY", "DEPLOYED BY", "TOOK", "FLAGS")
    rows = [(local(d.started_at), d.environment, range_text(history, d), d.outcome, approvals_text(d),
             d.deployed_by or "-", span(d.duration), " ".join(flags(d))) for d in shown]
    return table(header, list(rows))


def history(*, config: str | None, environment: str | None, since: str | None, source: str, token: str | None,
            as_json: bool, environ: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.time,
            cwd: str | os.PathLike[str] | None = None) -> int:
    now = clock()
    found, start = read_history(config=config, source=source, environment=environment, since=since, token=token,
                                environ=environ, now=now, cwd=cwd)
    shown = list(reversed(in_window(found.deployments, start, None)))
    if as_json:
        jsondoc.write("history", {
            "source": found.source, "repository": found.repository,
            "generated_at": iso(now), "since": iso(start), "environment": environment,
            "github_requests": found.requests,
            "deployments": [deployment_data(found, d) for d in shown],
        })
        return 0
    where = f"GitHub ({found.repository}, {found.requests} requests)" if found.source == "github" else "the ledger"
    if not shown:
        output.write_line(f"no deployments in {where}" + (f" since {local(start)}" if start else "")
                          + (f" for {environment}" if environment else ""))
        return 0
    for line in _table(found, shown):
        output.write_line(line)
    output.write_line(f"{len(shown)} deployment(s) from {where}; times are local")
    return 0
