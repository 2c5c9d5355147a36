"""`cdkit action`: what the reusable Action runs inside a GitHub Actions job.

Reads the runner's environment and event payload, turns the event into a
decision (`cdkit.github_events`), runs the `ci` stages through `run_trigger`,
and reports them: one log group per stage, an error annotation per failed stage,
a Markdown job summary, step outputs, and (through the GitHub reporter) a check
run per stage. Releases are handed to `cdkit.release`.

Inputs arrive as environment variables set by action.yml (`INPUT_*`), never as
text spliced into a shell command. The token is masked before anything is printed
and removed from every stage's environment.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cdkit import output
from cdkit.config import Pipeline
from cdkit.errors import EXIT_FAILED, EXIT_OK, UsageError
from cdkit.github_events import NOTHING, REFUSE, RELEASE, RUN, Decision, RunnerEnv, read_event
from cdkit.plan import make_plan, parse_skip
from cdkit.report.actions import Actions, ActionsReporter, md_code, md_escape, safe_url, summary_table
from cdkit.report.console import ConsoleReporter
from cdkit.runner import Reporter, StageResult
from cdkit.secrets import SECRET_ENV_VARS, redact
from cdkit.session import RunOutcome, Workspace, find_workspace, load_pipeline, open_ledger, run_trigger

COMMANDS = ("auto", "run", "plan", "deploy")

# Files the runner reads back after the step: a stage writing to them could set this
# step's outputs or the job's environment, so stages never see where they are.
RUNNER_FILE_VARS = ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STATE")
# Credentials a job may carry besides the token: never near pull-request code.
PR_CODE_SECRET_VARS = ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_RUNTIME_TOKEN",
                       "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL")


@dataclass(frozen=True)
class ActionInputs:
    """The Action's inputs, as action.yml passes them (INPUT_*; CDKIT_* for use without the Action)."""

    command: str = "auto"
    config: str | None = None
    token: str | None = None
    environment: str | None = None
    working_directory: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ActionInputs:
        def get(name: str) -> str | None:
            value = environ.get(f"INPUT_{name}") or environ.get(f"CDKIT_{name}")
            return value.strip() if value and value.strip() else None

        command = (get("COMMAND") or "auto").lower()
        if command not in COMMANDS:
            raise UsageError(f"input command: {command[:40]!r} is not one of {', '.join(COMMANDS)}")
        return cls(
            command=command,
            config=get("CONFIG"),
            token=environ.get("INPUT_TOKEN") or environ.get("GITHUB_TOKEN") or None,
            environment=get("ENVIRONMENT"),
            working_directory=get("WORKING_DIRECTORY"),
        )

    @property
    def wants_release(self) -> bool:
        return self.command == "deploy" or self.environment is not None


@dataclass(frozen=True)
class Outcome:
    """What the step reports: outputs, exit code, and the summary's lines."""

    result: str
    exit_code: int
    sha: str = ""
    results: tuple[StageResult, ...] = ()
    deploy: bool = False
    environment: str = ""
    deployment_id: str = ""
    notes: tuple[str, ...] = ()
    links: Mapping[str, str] = field(default_factory=dict)

    def outputs(self) -> dict[str, str]:
        stages = [{"name": r.stage, "status": r.status, "reason": r.reason,
                   "duration": round(r.duration, 3) if r.duration is not None else None} for r in self.results]
        return {
            "result": self.result, "sha": self.sha, "stages": json.dumps(stages, separators=(",", ":")),
            "deploy": "true" if self.deploy else "false", "environment": self.environment,
            "deployment-id": self.deployment_id,
        }


def stage_environ(environ: Mapping[str, str], *, pr_code: bool) -> dict[str, str]:
    """The environment stages get: no token, no runner files, and for PR code no other credentials."""
    dropped = set(SECRET_ENV_VARS) | set(RUNNER_FILE_VARS) | (set(PR_CODE_SECRET_VARS) if pr_code else set())
    return {k: v for k, v in environ.items() if k not in dropped and not k.startswith("INPUT_")}


def action(*, environ: Mapping[str, str] = os.environ, cwd: str | os.PathLike[str] | None = None,
           stream: IO[str] | None = None) -> int:
    environ = dict(environ)
    actions = Actions(environ, stream)
    inputs = ActionInputs.from_environ(environ)
    actions.add_mask(inputs.token)  # before anything could print it
    ws = find_workspace(inputs.config, _working_directory(inputs, environ, cwd))
    pipeline = load_pipeline(ws)
    env, decision = read_event(environ, cwd=ws.root, release_branch=pipeline.release_branch,
                               wants_release=inputs.wants_release)
    _say(actions, f"cdkit: {decision.message}")
    outcome = _act(actions, inputs, ws, pipeline, env, decision, environ)
    actions.set_outputs(outcome.outputs())
    actions.append_summary(render_summary(outcome, env, decision, pipeline))
    return outcome.exit_code


def _working_directory(inputs: ActionInputs, environ: Mapping[str, str],
                       cwd: str | os.PathLike[str] | None) -> Path:
    base = Path(cwd) if cwd else Path(environ.get("GITHUB_WORKSPACE") or os.getcwd())
    if not inputs.working_directory:
        return base
    target = base / inputs.working_directory
    if not target.is_dir():
        raise UsageError(f"input working-directory: {inputs.working_directory!r} is not a directory under {base}")
    return target


def _say(actions: Actions, text: str) -> None:
    """A progress line; it may quote payload text, so in Actions it is fenced from command parsing."""
    if actions.active:
        actions.print_untrusted(redact(text, actions.environ))
    else:
        output.write_line(redact(text, actions.environ), stream=actions.stream or sys.stdout)


def _act(actions: Actions, inputs: ActionInputs, ws: Workspace, pipeline: Pipeline, env: RunnerEnv,
         decision: Decision, environ: Mapping[str, str]) -> Outcome:
    if decision.action == NOTHING:
        return Outcome("skipped", EXIT_OK, sha=env.sha or "", notes=(decision.message,))
    if decision.action == REFUSE:
        actions.annotate("error", decision.message, title="cdkit: refused")
        return Outcome("refused", EXIT_FAILED, sha=decision.sha or env.sha or "", notes=(decision.message,))
    if decision.action == RELEASE or inputs.command == "deploy":
        return release_step(actions, inputs, ws, pipeline, env, decision, stage_results=())
    assert decision.action == RUN and decision.trigger is not None
    if inputs.command == "plan":
        return _plan_only(actions, pipeline, decision, environ)
    outcome = _run_stages(actions, ws, pipeline, env, decision, environ, token=inputs.token)
    results = tuple(outcome.results)
    sha = decision.trigger.head_sha
    if outcome.status != "passed":
        return Outcome(outcome.status, outcome.exit_code, sha=sha, results=results,
                       notes=(f"run #{outcome.run_id} {outcome.status}: nothing is released",))
    if inputs.command == "auto" and decision.release_candidate and not decision.pr_code:
        return release_step(actions, inputs, ws, pipeline, env, decision, stage_results=results)
    note = decision.release_note or "stages only (command: run)"
    return Outcome("passed", EXIT_OK, sha=sha, results=results, notes=(f"not released: {note}",))


def _plan_only(actions: Actions, pipeline: Pipeline, decision: Decision, environ: Mapping[str, str]) -> Outcome:
    assert decision.trigger is not None
    plan = make_plan(pipeline, decision.trigger, skip=parse_skip(environ.get("CDKIT_SKIP")))
    lines = [f"{'run ' if p.runs else 'skip'}  {p.stage.name}: {p.reason}" for p in plan.stages]
    _say(actions, "\n".join(lines))
    results = tuple(StageResult(p.stage.name, "planned" if p.runs else "skipped", p.reason) for p in plan.stages)
    return Outcome("planned", EXIT_OK, sha=decision.trigger.head_sha, results=results)


def _run_stages(actions: Actions, ws: Workspace, pipeline: Pipeline, env: RunnerEnv, decision: Decision,
                environ: Mapping[str, str], *, token: str | None) -> RunOutcome:
    assert decision.trigger is not None
    reporters: list[Reporter] = [ActionsReporter(actions)] if actions.active else [ConsoleReporter(pipeline.stages)]
    github = github_reporter(ws, pipeline, env, decision, token=token, environ=environ)
    if github is not None:
        reporters.append(github)
    with open_ledger(ws.repo) as ledger:
        return run_trigger(ws, pipeline, decision.trigger, ledger=ledger, reporters=reporters,
                           environ=stage_environ(environ, pr_code=decision.pr_code))


# --- seams to the GitHub reporting and release modules ------------------------------------------


def github_reporter(ws: Workspace, pipeline: Pipeline, env: RunnerEnv, decision: Decision, *,
                    token: str | None, environ: Mapping[str, str]) -> Reporter | None:
    """The reporter posting each stage as a check run or commit status (cdkit.report.checks).

    None when there is nothing to post with: no token, `report: none`, or a fork's
    pull request (its token is read-only; the job's own log and summary carry the results).
    """
    if not token or pipeline.report == "none" or decision.fork or not env.repository:
        return None
    try:
        from cdkit.report import checks  # noqa: F401 - provided by the GitHub reporting work
    except ImportError:
        return None
    return None  # SEAM: construct checks' reporter here once its API lands


def release_step(actions: Actions, inputs: ActionInputs, ws: Workspace, pipeline: Pipeline, env: RunnerEnv,
                 decision: Decision, *, stage_results: Sequence[StageResult]) -> Outcome:
    """Hand a release to cdkit.release; SEAM until it lands: refuse (fail closed) rather than deploy unchecked."""
    sha = decision.sha or env.sha or ""
    target = inputs.environment or decision.environment or (pipeline.environments[0].name
                                                           if pipeline.environments else "")
    message = "the release logic (cdkit.release) is not available in this version; nothing was deployed"
    results = tuple(stage_results)
    if decision.action == RUN and not inputs.wants_release:
        return Outcome("passed", EXIT_OK, sha=sha, results=results, environment=target, notes=(message,))
    actions.annotate("error", message, title="cdkit: release refused")
    return Outcome("refused", EXIT_FAILED, sha=sha, results=results, environment=target, notes=(message,))


# --- the job summary ---------------------------------------------------------------------------


def render_summary(outcome: Outcome, env: RunnerEnv, decision: Decision, pipeline: Pipeline) -> str:
    """Markdown for `$GITHUB_STEP_SUMMARY`: every untrusted value escaped or in code spans."""
    sha = outcome.sha
    commit_url = safe_url(env.commit_url(sha)) if sha else None
    commit = f"[{md_code(sha[:12])}]({commit_url})" if commit_url else md_code(sha[:12])
    lines = [f"## cdkit: {outcome.result}" + (f" on {commit}" if sha else ""), ""]
    trigger = decision.trigger
    where = md_code(trigger.ref) if trigger and trigger.ref else ""
    lines.append(f"**Event:** {md_code(decision.event)}" + (f" on {where}" if where else ""))
    if trigger is not None:
        lines.append(f"**Range:** {md_code(trigger.range_text)} ({len(trigger.changed_files)} changed file(s))")
    lines.append("")
    if outcome.results:
        lines.append(summary_table(outcome.results, outcome.links))
    if outcome.deploy or outcome.deployment_id:
        lines.append(f"**Release:** deploy {md_code(sha[:12])} to {md_code(outcome.environment)}"
                     + (f" (deployment {md_code(outcome.deployment_id)})" if outcome.deployment_id else ""))
        lines.append("")
    for note in outcome.notes:
        lines.append(f"- {md_escape(note, limit=1000)}")
    run_url = safe_url(env.run_url)
    if run_url:
        lines += ["", f"[Logs of this run]({run_url})"]
    return "\n".join(lines).rstrip() + "\n"
