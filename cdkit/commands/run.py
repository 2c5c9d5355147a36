from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from cdkit import jsondoc, output
from cdkit.config import Pipeline
from cdkit.credentials import resolve_token
from cdkit.errors import UsageError
from cdkit.events import Trigger, manual_trigger
from cdkit.ledger import Ledger
from cdkit.plan import stages_with_needs
from cdkit.report.console import ConsoleReporter, not_countable, print_summary, run_headline
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
    return jsondoc.stage(r.stage, r.status, reason=r.reason, duration=r.duration, exit_code=r.exit_code,
                         log=r.log_path, started_at=jsondoc.when(r.started_at), finished_at=jsondoc.when(r.finished_at))


def outcome_as_data(outcome: RunOutcome) -> dict[str, Any]:
    t = outcome.plan.trigger
    return {
        "run_id": outcome.run_id, "result": outcome.status, "trigger": t.kind, "sha": t.head_sha,
        "base": t.base_sha, "ref": t.ref, "stages": [result_as_data(r) for r in outcome.results],
    }


def run(*, config: str | None, base: str | None, head: str | None, stages: Sequence[str], trigger: str,
        jobs: int | None, as_json: bool, environ: Mapping[str, str] = os.environ,
        cwd: str | os.PathLike[str] | None = None, report: str | None = None, token: str | None = None,
        max_wait: float | None = None, with_needs: bool = False, deploy: bool = False) -> int:
    ws = find_workspace(config, cwd)
    pipeline = load_pipeline(ws)
    if with_needs:
        stages = stages_with_needs(pipeline, stages)
    the_trigger = manual_trigger(ws.root, base=base, head=head, kind=trigger)
    releases_to = would_release(pipeline)
    # Asked only where the answer is used: two git processes (the branch, a status) a plain run need not pay.
    blockers = (release_blockers(ws, pipeline, head=head, stages=stages, trigger=trigger, environ=environ)
                if deploy or releases_to else [])
    if deploy and blockers:
        # The gates would refuse such a run anyway (its results do not count): say why without running it.
        raise UsageError("--deploy releases only a complete run of the clean release branch:\n"
                         + "\n".join(f"  - {p}" for p in blockers))
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
        record = ledger.run(outcome.run_id)
        dirty = record is not None and record.dirty
    for note in outcome.notes:
        output.write_line(f"cdkit: {note}", stream=stream)
    for line in reported.lines() if reported is not None else []:
        output.write_line(line, stream=stream)
    if not as_json:
        headline = run_headline(outcome.run_id, outcome.status, the_trigger.head_sha, outcome.results, dirty=dirty)
        print_summary(outcome.results, headline=headline, stream=stream)
    deployments: list[dict[str, Any]] = []
    would_deploy = releases_to if outcome.status == "passed" and not blockers else []
    if deploy:  # asked for: a passing, complete run of the clean release branch deploys through the chain
        from cdkit.commands.deploy import auto_release  # the release machinery, only for a run that may release

        deployments = auto_release(ws, pipeline, run_id=outcome.run_id, sha=the_trigger.head_sha,
                                   ref=the_trigger.ref, passed=outcome.status == "passed", environ=environ,
                                   stream=stream)
    elif would_deploy:
        output.write_line(f"cdkit: nothing deployed (a plain `cdkit run` never deploys); `cdkit run --deploy` on "
                          f"a clean {pipeline.release_branch} would deploy {the_trigger.head_sha[:12]} to "
                          f"{', then '.join(would_deploy)}, each gate checked again", stream=stream)
    if as_json:
        jsondoc.write("run", {**outcome_as_data(outcome), "deployments": deployments,
                              "would_deploy": [] if deploy else would_deploy,
                              "does_not_count": not_countable(outcome.results, dirty=dirty),
                              "github": reported.as_data() if reported is not None else None})
    return outcome.exit_code or max((d["exit_code"] for d in deployments), default=0)


def would_release(pipeline: Pipeline) -> list[str]:
    """The environments `--deploy` would deploy to, in order: deployment mode, up to the first delivery one."""
    names = []
    for env in pipeline.environments:
        if env.mode != "deployment":
            break
        names.append(env.name)
    return names


def release_blockers(ws: Workspace, pipeline: Pipeline, *, head: str | None, stages: Sequence[str], trigger: str,
                     environ: Mapping[str, str]) -> list[str]:
    """Why this run could not release (`--deploy` needs a complete, countable run of the clean release branch)."""
    from cdkit import git
    from cdkit.plan import parse_skip

    problems = []
    if stages:
        problems.append(f"--stage {' --stage '.join(stages)} runs part of the pipeline: drop --stage")
    skipped = sorted(parse_skip(environ.get("CDKIT_SKIP")))
    if skipped:
        problems.append(f"CDKIT_SKIP={','.join(skipped)} skips stages: unset CDKIT_SKIP")
    if trigger != "ci":
        problems.append(f"--trigger {trigger} runs the {trigger} stages, not those a release needs: drop --trigger")
    if head is not None:
        problems.append("--head runs another commit than the checked-out release branch: drop --head")
    ref = git.current_branch(cwd=ws.root)
    if ref != f"refs/heads/{pipeline.release_branch}":
        shown = ref.removeprefix("refs/heads/") if ref else "a detached HEAD"
        problems.append(f"the checked-out branch is {shown}, not the release branch {pipeline.release_branch}: "
                        f"git switch {pipeline.release_branch}")
    if not git.work_tree_state(ws.root)[1]:
        problems.append("the work tree has uncommitted changes, which are not the commit: commit or stash them")
    return problems


def _github_reporter(ws: Workspace, pipeline: Pipeline, the_trigger: Trigger, ledger: Ledger, *, report: str | None,
                     token: str | None, max_wait: float | None, allow_dirty: bool, environ: Mapping[str, str],
                     stream: IO[str]) -> Any:
    """The check-run / status reporter when a token and a repository are known (and report is not none)."""
    mode = report or pipeline.report
    if mode == "none":
        return None
    has_token = resolve_token(token, environ) is not None
    if mode == "auto" and not has_token:
        return None  # `auto` quietly means "when GitHub is configured": no PyGithub, no reporter
    if choose_in_place(ws, the_trigger, allow_dirty=allow_dirty)[1]:
        # The work tree has uncommitted changes: its results are not the commit's, so GitHub hears nothing.
        if mode != "auto" or has_token:
            output.write_line("cdkit: not reporting to GitHub: uncommitted changes (results are not for "
                              f"{the_trigger.head_sha[:12]}); commit them or use --head", stream=stream)
        return None
    from cdkit.report.checks import make_reporter  # imports PyGithub only when reporting

    reporter, why_not = make_reporter(ledger=ledger, sha=the_trigger.head_sha, report=mode, token=token,
                                      environ=environ, cwd=ws.root, max_wait=max_wait)
    if why_not:
        output.write_line(f"cdkit: {why_not}", stream=stream)
    return reporter
