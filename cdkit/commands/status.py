from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from cdkit import git, jsondoc, output
from cdkit.plan import NOT_JUDGED_PREFIXES
from cdkit.report.console import display_path, format_duration, mark
from cdkit.commands.deploy import chain_data, print_chain
from cdkit.errors import ConfigError
from cdkit.ledger import Ledger, StageRecord
from cdkit.session import Workspace, find_workspace, load_pipeline, open_ledger


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def status(*, rev: str, config: str | None, as_json: bool, cwd: str | os.PathLike[str] | None = None,
           clock: Callable[[], float] | None = None) -> int:
    """`cdkit status`; `clock` is for tests in this process only (windows are judged at the ledger's time)."""
    ws = find_workspace(config, cwd)
    sha = git.resolve_commit(rev, cwd=ws.root)
    with open_ledger(ws.repo, clock=clock) as ledger:
        latest = ledger.latest_stage_results(sha, include_dirty=True, ignore_reasons=NOT_JUDGED_PREFIXES)
        # What a release gate sees: runs of the committed tree only (cdkit.release.ledger_stage_verdicts).
        counted = ledger.latest_stage_results(sha, ignore_reasons=NOT_JUDGED_PREFIXES)
        runs = ledger.runs_for_sha(sha)
        outbox = ledger.outbox_counts()
        chain = _chain(ws, ledger, sha)
    if as_json:
        jsondoc.write("status", {
            "sha": sha,
            "runs": [{"id": r.id, "trigger": r.trigger, "status": r.status, "dirty": r.dirty} for r in runs],
            "stages": [_stage_data(name, s) for name, s in latest.items()],
            "counted": [_stage_data(name, s) for name, s in counted.items()],
            "outbox": outbox,
            "environments": chain,
        })
        return 0
    if not runs:
        output.write_line(f"{sha[:12]}: no runs recorded (run `cdkit run` or push through the hook)")
        print_chain(chain, sha)
        return 0
    output.write_line(f"{sha}: {len(runs)} run(s), latest #{runs[-1].id} {runs[-1].status}")
    uncounted = {name: s for name, s in latest.items() if counted.get(name) != s}
    missing = [name for name in _required_stages(ws) if name not in counted]
    width = max((len(n) for n in [*latest, *missing]), default=4)
    if counted or missing:
        output.write_line("results that count for a release (runs of the committed tree):")
        for name, s in counted.items():
            _print_stage(name, s, width)
        for name in missing:
            output.write_line(f"  {mark('skipped', sys.stdout, output.use_color(sys.stdout))} {name.ljust(width)}  "
                              "no result")
    if uncounted:
        output.write_line("not counted for a release (uncommitted changes: the work tree's results, not the commit's):")
        for name, s in uncounted.items():
            _print_stage(name, s, width)
    if outbox.get("pending"):
        output.write_line(f"{outbox['pending']} report(s) waiting in the outbox for GitHub (deliver with `cdkit sync`)")
    print_chain(chain, sha)
    return 0


def _stage_data(name: str, s: StageRecord) -> dict[str, Any]:
    return jsondoc.stage(name, s.status, reason=s.reason, duration=s.duration, exit_code=s.exit_code,
                         log=s.log_path, run_id=s.run_id)


def _print_stage(name: str, s: StageRecord, width: int) -> None:
    color = output.use_color(sys.stdout)
    reason = f"  {s.reason}" if s.reason and s.status != "passed" else ""
    output.write_line(f"  {mark(s.status, sys.stdout, color)} {name.ljust(width)}  {s.status:<9} "
                      f"{format_duration(s.duration):>8}  run #{s.run_id}{reason}".rstrip())
    if s.status in ("failed", "timed_out") and s.log_path:
        output.write_line(f"      log: {display_path(s.log_path)}")


def _required_stages(ws: Workspace) -> list[str]:
    """The stages a release needs (none when the pipeline file cannot be read)."""
    from cdkit.release import required_stages

    try:
        return [s.name for s in required_stages(load_pipeline(ws))]
    except ConfigError:
        return []


def _chain(ws: Workspace, ledger: Ledger, sha: str) -> list[dict[str, Any]]:
    """Approvals and deployments of `sha` per environment (none when the pipeline file cannot be read)."""
    try:
        pipeline = load_pipeline(ws)
    except ConfigError:
        return []
    return chain_data(ws, pipeline, ledger, sha)


def log(*, limit: int, config: str | None, as_json: bool, cwd: str | os.PathLike[str] | None = None) -> int:
    ws = find_workspace(config, cwd)
    with open_ledger(ws.repo) as ledger:
        runs = ledger.recent_runs(limit)
        rows = [(r, ledger.stage_results(r.id)) for r in runs]
    if as_json:
        jsondoc.write("log", {"runs": [
            {"id": r.id, "trigger": r.trigger, "event": r.event, "sha": r.sha, "base": r.base_sha, "ref": r.ref,
             "status": r.status, "dirty": r.dirty, "started_at": jsondoc.when(r.started_at),
             "finished_at": jsondoc.when(r.finished_at),
             "stages": [jsondoc.stage(s.stage, s.status, reason=s.reason, duration=s.duration,
                                      exit_code=s.exit_code, log=s.log_path) for s in stages]}
            for r, stages in rows
        ]})
        return 0
    if not runs:
        output.write_line("no runs recorded yet (run `cdkit run`)")
        return 0
    for r, stages in rows:
        counts: dict[str, int] = {}
        for s in stages:
            counts[s.status] = counts.get(s.status, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        ref = (r.ref or "").removeprefix("refs/heads/")
        dirty = " dirty" if r.dirty else ""
        output.write_line(f"#{r.id:<4} {_when(r.started_at)}  {r.trigger:<8} {r.sha[:12]} {ref:<16} "
                          f"{r.status:<11}{dirty} {summary}".rstrip())
    return 0
