from __future__ import annotations

import os
from collections.abc import Mapping

from cdkit import git, jsondoc, output
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


def plan(*, config: str | None, base: str | None, head: str | None, trigger: str, as_json: bool,
         environ: Mapping[str, str] = os.environ, cwd: str | os.PathLike[str] | None = None) -> int:
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    the_trigger = manual_trigger(ws.root, base=base, head=head, kind=trigger)
    the_plan = make_plan(pipeline, the_trigger, skip=parse_skip(environ.get("CDKIT_SKIP")),
                         symlinks=lambda: git.symlinks(the_trigger.head_sha, ws.root))
    if as_json:
        jsondoc.write("plan", plan_as_data(the_plan))
        return 0
    output.write_line(f"plan for {the_trigger.kind} on {the_trigger.range_text}, "
                      f"{len(the_trigger.changed_files)} changed file(s):")
    width = max(len(s.name) for s in pipeline.stages)
    for p in the_plan.stages:
        verb = "run " if p.runs else "skip"
        needs = f" (needs {', '.join(p.stage.needs)})" if p.runs and p.stage.needs else ""
        output.write_line(f"  {verb} {p.stage.name.ljust(width)}  {p.reason}{needs}")
    return 0
