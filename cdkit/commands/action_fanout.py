"""The Action's side of a fanned-out workflow (`cdkit workflow generate`).

- `command: fan-out` (the plan job): plans the stages for the event, outputs
  `run-stages` for the stage jobs' `if:`, reports each stage its paths skip as a
  skipped check (as a single job would), and checks the workflow file against the
  pipeline.
- `command: run` with `stage:` (a stage job): runs that one stage; with `shard:`,
  one shard of it, recorded and reported as a stage of its own, `cdkit/<stage> (shard i of N)`,
  so that no shard's result can stand for the whole stage.
- `command: aggregate` with `stage:` (after a sharded stage's matrix): the
  stage's one check, passed only when every shard's check passed.
- `command: release` (the release job): no stage runs; the stages' check runs on
  GitHub decide, with the same rules as a single job's release: a stage that
  failed, was cancelled or never ran refuses the release.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cdkit.config import Pipeline, Stage
from cdkit.errors import EXIT_FAILED, EXIT_OK, UsageError
from cdkit.github_events import Decision, RunnerEnv
from cdkit.plan import make_plan, parse_skip
from cdkit.runner import PASSED, StageResult
from cdkit.session import Workspace, open_ledger

if TYPE_CHECKING:
    from cdkit.commands.action import ActionInputs, Outcome
    from cdkit.report.actions import Actions

FAN_OUT_COMMANDS = ("fan-out", "aggregate", "release")
SHARD_INDEX_VAR, SHARD_TOTAL_VAR = "CDKIT_SHARD_INDEX", "CDKIT_SHARD_TOTAL"


def shard_name(stage: str, index: int, total: int) -> str:
    return f"{stage} (shard {index} of {total})"  # no "/": the name is also a log file's


def ci_stage(pipeline: Pipeline, name: str) -> Stage:
    for stage in pipeline.stages:
        if stage.name == name:
            if "ci" not in stage.on:
                raise UsageError(f"input stage: {name!r} does not run on ci (on: {', '.join(stage.on)})")
            return stage
    names = ", ".join(s.name for s in pipeline.stages if "ci" in s.on)
    raise UsageError(f"input stage: {name[:64]!r} is not a stage of {pipeline.path} (ci stages: {names})")


def parse_shard(text: str | None, stage: Stage) -> int | None:
    """The `shard:` input (1..N) of a sharded stage's matrix job, checked against the pipeline's `shards`."""
    if text is None:
        if stage.ci.shards > 1:
            raise UsageError(f"stage {stage.name!r} has ci.shards: {stage.ci.shards}: pass shard: 1..{stage.ci.shards}")
        return None
    if not text.isdigit() or not 1 <= int(text) <= stage.ci.shards:
        raise UsageError(f"input shard: {text[:20]!r} is not a shard of {stage.name!r} (1..{stage.ci.shards}; "
                         f"set ci.shards in the pipeline)")
    return int(text)


def shard_environ(environ: Mapping[str, str], index: int | None, total: int) -> dict[str, str]:
    if index is None:
        return dict(environ)
    return {**environ, SHARD_INDEX_VAR: str(index), SHARD_TOTAL_VAR: str(total)}


# --- the plan job -----------------------------------------------------------------------------------


def fan_out(actions: Actions, inputs: ActionInputs, ws: Workspace, pipeline: Pipeline, env: RunnerEnv,
            decision: Decision, environ: Mapping[str, str]) -> Outcome:
    from cdkit.commands.action import Outcome, _say, github_reporter, record_direct_push

    assert decision.trigger is not None
    drift = workflow_drift(ws, pipeline, environ)
    if drift is not None:
        title, message, diff = drift
        actions.annotate("error", message, title=title)
        _say(actions, diff)
        return Outcome("error", EXIT_FAILED, sha=decision.trigger.head_sha, notes=(message,))
    plan = make_plan(pipeline, decision.trigger, skip=parse_skip(environ.get("CDKIT_SKIP")))
    ci = [p for p in plan.stages if "ci" in p.stage.on]
    for p in ci:
        _say(actions, f"{'run ' if p.runs else 'skip'}  {p.stage.name}: {p.reason}")
    results = tuple(StageResult(p.stage.name, "planned" if p.runs else "skipped", p.reason) for p in ci)
    notes: list[str] = []
    skipped = [p for p in ci if not p.runs]
    if skipped or decision.event == "push":
        with open_ledger(ws.repo) as ledger:
            checks, why_not = github_reporter(ledger, ws, pipeline, env, decision, token=inputs.token,
                                              environ=environ)
            notes += [why_not] if why_not else []
            if checks is not None:
                record_direct_push(checks, pipeline, decision)
                for p in skipped:  # a check created completed, as the single job's runner reports it
                    checks.stage_finished(p.stage, StageResult(p.stage.name, "skipped", p.reason))
                notes += [line.removeprefix("cdkit: ") for line in checks.finish().lines()]
    return Outcome("planned", EXIT_OK, sha=decision.trigger.head_sha, results=results, notes=tuple(notes),
                   run_stages=tuple(p.stage.name for p in ci if p.runs))


def workflow_drift(ws: Workspace, pipeline: Pipeline, environ: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(title, message, diff) when this run's workflow was generated and no longer matches the pipeline."""
    from cdkit import workflow

    path = workflow_file(ws, environ)
    if path is None:
        return None
    committed = path.read_text(encoding="utf-8", errors="replace")
    shown = path.relative_to(ws.root).as_posix()
    stale = workflow.regenerated(pipeline._replace(path=_shown_config(ws, pipeline)), committed)
    if stale is None:
        return None  # up to date, or hand-written: nothing to compare it with
    options, generated = stale
    message = (f"{shown} no longer matches {_shown_config(ws, pipeline)}: run `cdkit workflow generate{options.args}` "
               "and commit the result (the diff is in this job's log)")
    return "cdkit: the workflow is out of date", message, workflow.diff(committed, generated, shown)


def _shown_config(ws: Workspace, pipeline: Pipeline) -> str:
    try:
        return Path(pipeline.path).resolve().relative_to(ws.root.resolve()).as_posix()
    except ValueError:
        return pipeline.path


def workflow_file(ws: Workspace, environ: Mapping[str, str]) -> Path | None:
    """This run's workflow file, from GITHUB_WORKFLOW_REF (`owner/repo/.github/workflows/x.yml@ref`)."""
    ref = environ.get("GITHUB_WORKFLOW_REF", "")
    repository = environ.get("GITHUB_REPOSITORY", "")
    relative = ref.split("@", 1)[0].removeprefix(f"{repository}/") if ref and repository else ""
    if not relative.startswith(".github/workflows/") or ".." in relative.split("/"):
        relative = ".github/workflows/cdkit.yml"
    path = ws.root / relative
    return path if path.is_file() else None


# --- the shard aggregate and the release job ---------------------------------------------------------


def aggregate(actions: Actions, inputs: ActionInputs, ws: Workspace, pipeline: Pipeline, env: RunnerEnv,
              decision: Decision, environ: Mapping[str, str]) -> Outcome:
    """The stage's one check from its shards' checks: passed only when every shard's check passed."""
    from cdkit.commands.action import Outcome, _release_context, _say, github_reporter

    assert decision.trigger is not None and inputs.stage is not None
    stage = ci_stage(pipeline, inputs.stage)
    sha = decision.trigger.head_sha
    total = stage.ci.shards
    with open_ledger(ws.repo) as ledger:
        ctx = _release_context(actions, ws, pipeline, ledger, env, decision, environ, token=inputs.token)
        if ctx.remote is None:
            raise UsageError("command: aggregate reads the shards' check runs: it needs a token and GITHUB_REPOSITORY")
        verdicts = ctx.remote.stage_verdicts(sha)
        lines = []
        for index in range(1, total + 1):
            verdict = verdicts.get(shard_name(stage.name, index, total))
            status = verdict.status if verdict is not None else "missing"
            lines.append(f"shard {index} of {total}: {status}" + (f" ({verdict.reason})" if verdict and verdict.reason
                                                                and status != PASSED else ""))
        bad = [line for line in lines if not line.endswith(f": {PASSED}")]
        status = PASSED if not bad else "failed"
        reason = f"{total - len(bad)}/{total} shards passed" + (f"; {bad[0]}" if bad else "")
        now = time.time()
        result = StageResult(stage.name, status, reason, exit_code=0 if not bad else 1, started_at=now,
                             finished_at=now)
        checks, why_not = github_reporter(ledger, ws, pipeline, env, decision, token=inputs.token, environ=environ)
        notes = [why_not] if why_not else []
        if checks is not None:
            checks.stage_started(stage, now)
            for line in lines:
                checks.stage_output(stage, line.encode())
            checks.stage_finished(stage, result)
            notes += [line.removeprefix("cdkit: ") for line in checks.finish().lines()]
    for line in lines:
        _say(actions, f"cdkit: {stage.name} {line}")
    if bad:
        actions.annotate("error", f"{stage.name}: {reason}", title=f"cdkit: {stage.name} failed")
    return Outcome(status, EXIT_OK if not bad else EXIT_FAILED, sha=sha, results=(result,),
                   notes=(*notes, *lines))


def release(actions: Actions, inputs: ActionInputs, ws: Workspace, pipeline: Pipeline, env: RunnerEnv,
            decision: Decision, environ: Mapping[str, str]) -> Outcome:
    """The release job: the stages' check runs decide, then the same release step as a single job's."""
    from cdkit import release as gate
    from cdkit.commands.action import Outcome, _release_context, release_step

    assert decision.trigger is not None
    sha = decision.trigger.head_sha
    if not decision.release_candidate or decision.pr_code:
        note = decision.release_note or "this event does not release"
        return Outcome("skipped", EXIT_OK, sha=sha, notes=(f"not released: {note}",))
    with open_ledger(ws.repo) as ledger:
        ctx = _release_context(actions, ws, pipeline, ledger, env, decision, environ, token=inputs.token)
        verdicts = gate.combined_verdicts(ctx, sha, [s.name for s in gate.required_stages(pipeline)])
        problems = gate.stage_problems(pipeline, sha, verdicts, lambda stage: gate.paths_skip_problem(ctx, stage, sha))
    results = tuple(StageResult(s.name, verdicts[s.name].status, verdicts[s.name].reason)
                    for s in gate.required_stages(pipeline) if s.name in verdicts)
    if problems:
        actions.annotate("error", "; ".join(problems), title="cdkit: release refused")
        return Outcome("refused", EXIT_FAILED, sha=sha, results=results, notes=tuple(problems))
    return release_step(actions, inputs, ws, pipeline, env, decision, stage_results=results, environ=environ)
