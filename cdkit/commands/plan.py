from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from cdkit import git, jsondoc, output
from cdkit.config import Pipeline
from cdkit.events import manual_trigger
from cdkit.plan import Plan, make_plan, parse_skip
from cdkit.session import find_workspace, load_pipeline


def plan_as_data(plan: Plan) -> dict[str, object]:
    t = plan.trigger
    return {
        "trigger": t.kind,
        "sha": t.head_sha,
        "base": t.base_sha,
        "ref": t.ref,
        "changed_files": len(t.changed_files),
        "stages": [
            jsondoc.stage(p.stage.name, "planned" if p.runs else "skipped", reason=p.reason, runs=p.runs,
                          needs=list(p.stage.needs))
            for p in plan.stages
        ],
    }


def window_holds(pipeline: Pipeline, now: float) -> list[dict[str, object]]:
    """Each environment a release would reach now that a window holds: name and verdict (`cdkit.windows`).

    Imports cdkit.windows (and croniter) only when some environment has windows.
    """
    if not any(e.windows for e in pipeline.environments):
        return []
    from cdkit import windows

    at = datetime.fromtimestamp(now, timezone.utc)
    held = []
    for env in pipeline.environments:
        if env.windows:
            verdict = windows.evaluate(env.windows, at)
            if not verdict.allowed:
                held.append({"environment": env.name, **verdict.as_data()})
    return held


def plan(*, config: str | None, base: str | None, head: str | None, trigger: str, as_json: bool,
         environ: Mapping[str, str] = os.environ, cwd: str | os.PathLike[str] | None = None,
         clock: Callable[[], float] = time.time) -> int:
    """`cdkit plan`; `clock` is for tests in this process only (no option or variable moves it)."""
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    the_trigger = manual_trigger(ws.root, base=base, head=head, kind=trigger)
    the_plan = make_plan(pipeline, the_trigger, skip=parse_skip(environ.get("CDKIT_SKIP")),
                         symlinks=lambda: git.symlinks(the_trigger.head_sha, ws.root))
    held = window_holds(pipeline, clock())
    if as_json:
        jsondoc.write("plan", {**plan_as_data(the_plan), "windows": held})
        return 0
    output.write_line(f"plan for {the_trigger.kind} on {the_trigger.range_text}, "
                      f"{len(the_trigger.changed_files)} changed file(s):")
    width = max(len(s.name) for s in pipeline.stages)
    for p in the_plan.stages:
        verb = "run " if p.runs else "skip"
        needs = f" (needs {', '.join(p.stage.needs)})" if p.runs and p.stage.needs else ""
        output.write_line(f"  {verb} {p.stage.name.ljust(width)}  {p.reason}{needs}")
    for hold in held:
        output.write_line(f"note: a release now would wait: {hold['environment']} is held: {hold['message']}")
    return 0
