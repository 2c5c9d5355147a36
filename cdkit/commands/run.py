from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from cdkit import output
from cdkit.events import manual_trigger
from cdkit.report.console import ConsoleReporter, print_summary
from cdkit.runner import StageResult
from cdkit.session import RunOutcome, find_workspace, load_pipeline, open_ledger, run_trigger


def result_as_data(r: StageResult) -> dict[str, Any]:
    return {
        "name": r.stage, "status": r.status, "reason": r.reason, "exit_code": r.exit_code,
        "started_at": r.started_at, "finished_at": r.finished_at, "duration": r.duration, "log": r.log_path,
    }


def outcome_as_data(outcome: RunOutcome) -> dict[str, Any]:
    t = outcome.plan.trigger
    return {
        "run_id": outcome.run_id, "result": outcome.status, "trigger": t.kind, "sha": t.head_sha,
        "base": t.base_sha, "ref": t.ref, "stages": [result_as_data(r) for r in outcome.results],
    }


def run(*, config: str | None, base: str | None, head: str | None, stages: Sequence[str], trigger: str,
        jobs: int | None, as_json: bool, environ: Mapping[str, str] = os.environ,
        cwd: str | os.PathLike[str] | None = None) -> int:
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    the_trigger = manual_trigger(ws.root, base=base, head=head, kind=trigger)
    # With --json, stdout carries only the JSON document; live output goes to stderr.
    stream = sys.stderr if as_json else sys.stdout
    console = ConsoleReporter(pipeline.stages, stream=stream)

    def announce(workdir: object, in_place: bool) -> None:
        where = "in the work tree" if in_place else f"in a temporary worktree at {the_trigger.head_sha[:12]}"
        output.write_line(f"cdkit: running {trigger} stages on {the_trigger.range_text} {where}", stream=stream)

    with open_ledger(ws.repo) as ledger:
        outcome = run_trigger(ws, pipeline, the_trigger, ledger=ledger, reporters=[console], environ=environ,
                              jobs=jobs, only=stages, allow_dirty=head is None, on_workdir=announce)
    if not as_json:
        headline = f"run #{outcome.run_id} {outcome.status} on {the_trigger.head_sha[:12]}"
        print_summary(outcome.results, headline=headline, stream=stream)
    # Continuous deployment: a passing run of a clean HEAD on the release branch deploys by itself.
    from cdkit.commands.deploy import auto_release

    deployments = auto_release(ws, pipeline, run_id=outcome.run_id, sha=the_trigger.head_sha, ref=the_trigger.ref,
                               passed=outcome.status == "passed" and head is None, environ=environ, stream=stream)
    if as_json:
        output.write_line(json.dumps({**outcome_as_data(outcome), "deployments": deployments}, indent=2))
    released = all(d["status"] in ("success", "unchanged") for d in deployments)
    return outcome.exit_code or (0 if released else 1)
