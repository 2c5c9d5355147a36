from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from cdkit import output
from cdkit.config import Pipeline
from cdkit.events import Trigger, manual_trigger
from cdkit.ledger import Ledger
from cdkit.plan import stages_with_needs
from cdkit.report.console import ConsoleReporter, print_summary
from cdkit.runner import StageResult
from cdkit.session import (
    RunOutcome,
    Where,
    Workspace,
    choose_in_place,
    find_workspace,
    load_pipeline,
    open_ledger,
    run_trigger,
)


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
        cwd: str | os.PathLike[str] | None = None, report: str | None = None, token: str | None = None,
        max_wait: float | None = None, with_needs: bool = False) -> int:
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    if with_needs:
        stages = stages_with_needs(pipeline, stages)
    the_trigger = manual_trigger(ws.root, base=base, head=head, kind=trigger)
    # With --json, stdout carries only the JSON document; live output goes to stderr.
    stream = sys.stderr if as_json else sys.stdout
    console = ConsoleReporter(pipeline.stages, stream=stream)

    github: Any = None

    def announce(workdir: object, where: Where) -> None:
        output.write_line(f"cdkit: running {trigger} stages on {the_trigger.range_text} "
                          f"{where.describe(the_trigger.head_sha)}", stream=stream)
        if github is not None:
            github.workdir = workdir  # annotations name files relative to it

    with open_ledger(ws.repo) as ledger:
        github = _github_reporter(ws, pipeline, the_trigger, ledger, report=report, token=token, max_wait=max_wait,
                                  allow_dirty=head is None, environ=environ, stream=stream)
        outcome = run_trigger(ws, pipeline, the_trigger, ledger=ledger,
                              reporters=[console, *([github] if github is not None else [])], environ=environ,
                              jobs=jobs, only=stages, allow_dirty=head is None, on_workdir=announce)
        reported = github.finish() if github is not None else None
    for note in outcome.notes:
        output.write_line(f"cdkit: {note}", stream=stream)
    for line in reported.lines() if reported is not None else []:
        output.write_line(line, stream=stream)
    if not as_json:
        headline = f"run #{outcome.run_id} {outcome.status} on {the_trigger.head_sha[:12]}"
        print_summary(outcome.results, headline=headline, stream=stream)
    # Continuous deployment: a passing run of a clean HEAD on the release branch deploys by itself.
    from cdkit.commands.deploy import auto_release

    deployments = auto_release(ws, pipeline, run_id=outcome.run_id, sha=the_trigger.head_sha, ref=the_trigger.ref,
                               passed=outcome.status == "passed" and head is None, environ=environ, stream=stream)
    if as_json:
        output.write_line(json.dumps({**outcome_as_data(outcome), "deployments": deployments,
                                      "github": reported.as_data() if reported is not None else None}, indent=2))
    released = all(d["status"] in ("success", "unchanged") for d in deployments)
    return outcome.exit_code or (0 if released else 1)


def _github_reporter(ws: Workspace, pipeline: Pipeline, the_trigger: Trigger, ledger: Ledger, *, report: str | None,
                     token: str | None, max_wait: float | None, allow_dirty: bool, environ: Mapping[str, str],
                     stream: IO[str]) -> Any:
    """The check-run / status reporter when a token and a repository are known (and report is not none)."""
    mode = report or pipeline.report
    if mode == "none":
        return None
    if choose_in_place(ws, the_trigger, allow_dirty=allow_dirty)[1]:
        # The work tree has uncommitted changes: its results are not the commit's, so GitHub hears nothing.
        if mode != "auto" or token or any(environ.get(k) for k in ("GITHUB_TOKEN", "GH_TOKEN")):
            output.write_line("cdkit: not reporting to GitHub: uncommitted changes (results are not for "
                              f"{the_trigger.head_sha[:12]}); commit them or use --head", stream=stream)
        return None
    from cdkit.report.checks import make_reporter  # imports PyGithub only when reporting

    reporter, why_not = make_reporter(ledger=ledger, sha=the_trigger.head_sha, report=mode, token=token,
                                      environ=environ, cwd=ws.root, max_wait=max_wait)
    if why_not:
        output.write_line(f"cdkit: {why_not}", stream=stream)
    return reporter
