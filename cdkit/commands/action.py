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

import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cdkit import output
from cdkit.commands.action_fanout import FAN_OUT_COMMANDS
from cdkit.config import Environment, Pipeline
from cdkit.errors import EXIT_FAILED, EXIT_OK, ConfigError, GateFailed, UsageError
from cdkit.github import MAX_WAIT_ENV, GitHubClient
from cdkit.github_events import DEFAULT_MAX_WAIT, NOTHING, REFUSE, RELEASE, RUN, Decision, RunnerEnv, read_event
from cdkit.plan import make_plan, parse_skip
from cdkit.report.actions import Actions, ActionsReporter, md_code, md_escape, safe_url, summary_table
from cdkit.report.console import ConsoleReporter
from cdkit.runner import Reporter, StageResult
from cdkit.secrets import redact
from cdkit.session import RunOutcome, Workspace, find_workspace, load_pipeline, load_pipeline_at, open_ledger, run_trigger

if TYPE_CHECKING:  # PyGithub and the release machinery load only when a run needs them
    from cdkit.ledger import Ledger
    from cdkit.release import DeployResult, ReleaseContext
    from cdkit.report.checks import ChecksReporter

COMMANDS = ("auto", "run", "plan", "deploy", *FAN_OUT_COMMANDS)

# Files the runner reads back after the step: a stage writing to them could set this
# step's outputs or the job's environment, so stages never see where they are.
RUNNER_FILE_VARS = ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STATE")


@dataclass(frozen=True)
class ActionInputs:
    """The Action's inputs, as action.yml passes them (INPUT_*; CDKIT_* for use without the Action)."""

    command: str = "auto"
    config: str | None = None
    token: str | None = None
    environment: str | None = None
    working_directory: str | None = None
    max_wait: float = DEFAULT_MAX_WAIT  # seconds GitHub requests and git fetches may lose, each in total
    stage: str | None = None  # a fanned-out workflow's stage job: run this one stage
    shard: str | None = None  # ... and this shard of it (1..ci.shards)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ActionInputs:
        def get(name: str) -> str | None:
            value = environ.get(f"INPUT_{name}") or environ.get(f"CDKIT_{name}")
            return value.strip() if value and value.strip() else None

        command = (get("COMMAND") or "auto").lower()
        if command not in COMMANDS:
            raise UsageError(f"input command: {command[:40]!r} is not one of {', '.join(COMMANDS)}")
        if get("STAGE") and command not in ("run", "aggregate"):
            raise UsageError(f"input stage: applies to command: run or aggregate (a stage job), not {command}")
        if get("SHARD") and not (get("STAGE") and command == "run"):
            raise UsageError("input shard: needs stage: and command: run (one shard of that stage)")
        if command == "aggregate" and not get("STAGE"):
            raise UsageError("command: aggregate needs stage: (the sharded stage whose check it posts)")
        return cls(
            command=command,
            config=get("CONFIG"),
            token=environ.get("INPUT_TOKEN") or environ.get("GITHUB_TOKEN") or None,
            environment=get("ENVIRONMENT"),
            working_directory=get("WORKING_DIRECTORY"),
            max_wait=_max_wait(get("MAX_WAIT")),
            stage=get("STAGE"),
            shard=get("SHARD"),
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
    run_stages: tuple[str, ...] = ()  # command fan-out: the stages whose jobs run
    github: GitHubClient | None = field(default=None, compare=False)  # the release's client, for the summary

    def outputs(self) -> dict[str, str]:
        stages = [{"name": r.stage, "status": r.status, "reason": r.reason,
                   "duration": round(r.duration, 3) if r.duration is not None else None} for r in self.results]
        return {
            "result": self.result, "sha": self.sha, "stages": json.dumps(stages, separators=(",", ":")),
            "deploy": "true" if self.deploy else "false", "environment": self.environment,
            "deployment-id": self.deployment_id,
            "run-stages": json.dumps(list(self.run_stages), separators=(",", ":")),
        }


def stage_environ(environ: Mapping[str, str], *, token: str | None) -> dict[str, str]:
    """The environment stages and deploy commands start from: no runner files, no inputs.

    Credentials stay in it (the token as GITHUB_TOKEN) only for the one rule every
    command cdkit starts follows: a stage or environment gets a credential when the
    pipeline names it in `env_passthrough`, and never otherwise
    (`cdkit.secrets.without_credentials`, applied where each command starts).
    """
    kept = {k: v for k, v in environ.items() if k not in RUNNER_FILE_VARS and not k.startswith("INPUT_")}
    return {**kept, **({"GITHUB_TOKEN": token} if token else {})}


def action(*, environ: Mapping[str, str] = os.environ, cwd: str | os.PathLike[str] | None = None,
           stream: IO[str] | None = None, clock: Callable[[], float] = time.time) -> int:
    environ = dict(environ)
    actions = Actions(environ, stream)
    for token in {environ.get("INPUT_TOKEN"), environ.get("GITHUB_TOKEN")}:
        actions.add_mask(token)  # before anything, even an input error, could print it
    inputs = ActionInputs.from_environ(environ)
    environ[MAX_WAIT_ENV] = f"{inputs.max_wait:g}"  # every GitHub client this run builds keeps to it
    ws = find_workspace(inputs.config, _working_directory(inputs, environ, cwd))
    try:
        pipeline = load_pipeline(ws)
        env, decision = read_event(environ, cwd=ws.root, release_branch=pipeline.release_branch,
                                   wants_release=inputs.wants_release, max_wait=inputs.max_wait)
        _say(actions, f"cdkit: {decision.message}")
        pipeline = _pipeline_for(actions, ws, pipeline, decision)
    except ConfigError as exc:
        report_invalid_pipeline(actions, ws, environ, exc)
        raise  # the CLI prints the errors and exits with the configuration error's code
    outcome = _act(actions, inputs, ws, pipeline, env, decision, environ)
    actions.set_outputs(outcome.outputs())
    summary = render_summary(outcome, env, decision, pipeline)
    if is_release(inputs, outcome):
        history = release_history_lines(ws, environ, outcome.environment, inputs.token, clock(), client=outcome.github)
        summary += "\n" + "\n".join(history) + "\n"
    actions.append_summary(summary)
    return outcome.exit_code


def is_release(inputs: ActionInputs, outcome: Outcome) -> bool:
    """A deploy that ran, was refused, or waits for its approval: its summary shows the environment's history."""
    return bool(outcome.environment) and (inputs.command == "deploy" or outcome.result == "waiting"
                                          or bool(outcome.deployment_id))


def release_history_lines(ws: Workspace, environ: Mapping[str, str], environment: str, token: str | None,
                          now: float, *, client: GitHubClient | None = None) -> list[str]:
    """The environment's last deployments and 30 days of DORA keys from GitHub, and this job's chain head."""
    from cdkit.history.chain import head
    from cdkit.history.ci_summary import delivery_lines

    lines = delivery_lines(ws.root, environ, environment=environment, token=token, now=now, client=client)
    try:
        with open_ledger(ws.repo) as ledger:
            lines.append(f"- Ledger audit chain head (this job): {md_code(head(ledger.db))}")
    except Exception:  # noqa: BLE001 - a line of the summary, never a reason to fail the release
        pass
    return lines


# `FILE:LINE:COL: text`, how every positioned configuration error starts (cdkit.config).
_POSITIONED = re.compile(r"(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): (?P<text>.*)", re.DOTALL)
_AT_REVISION = re.compile(r" at [0-9a-f]{7,40}$")  # load_pipeline_at names a committed file `PATH at SHA`


def _workspace_path(name: str, ws: Workspace, environ: Mapping[str, str]) -> str:
    """`name` (a pipeline file as an error names it) relative to GITHUB_WORKSPACE, where GitHub places annotations."""
    path = Path(_AT_REVISION.sub("", name))
    path = path if path.is_absolute() else ws.root / path
    workspace = Path(environ.get("GITHUB_WORKSPACE") or ws.root)
    try:
        return path.resolve().relative_to(workspace.resolve()).as_posix()
    except ValueError:  # outside the workspace: GitHub cannot place it on a file, the name still says where
        return str(path)


def report_invalid_pipeline(actions: Actions, ws: Workspace, environ: Mapping[str, str], exc: ConfigError) -> None:
    """An invalid pipeline file seen in CI: an error annotation at each FILE:LINE, outputs, and a job summary.

    Every output is defined (`result=error`), so `needs.*.outputs` and `if:` conditions of
    later jobs read a decision rather than an empty string.
    """
    title = "cdkit: invalid pipeline file"
    config_file = _workspace_path(str(ws.config_path), ws, environ)
    listed = []
    for message in exc.messages:
        found = _POSITIONED.fullmatch(message)
        if found:
            file = _workspace_path(found["file"], ws, environ)
            line, col, text = found["line"], found["col"], found["text"]
            actions.annotate("error", text, title=title, file=file, line=int(line), col=int(col))
            listed.append(f"- {md_code(f'{file}:{line}:{col}')}: {md_escape(text.splitlines()[0], limit=1000)}")
        else:
            actions.annotate("error", message, title=title, file=config_file)
            listed.append(f"- {md_escape(message.splitlines()[0], limit=1000)}")
    outcome = Outcome("error", exc.exit_code, sha=environ.get("GITHUB_SHA", ""), notes=tuple(exc.messages))
    actions.set_outputs(outcome.outputs())
    actions.append_summary("\n".join([
        "## cdkit: error", "", f"The pipeline file {md_code(config_file)} is invalid, so no stage ran and nothing "
        "was released. Fix it (`cdkit validate` says the same on your machine) and push again:", "", *listed, ""]))


def _pipeline_for(actions: Actions, ws: Workspace, pipeline: Pipeline, decision: Decision) -> Pipeline:
    """The pipeline that judges this event: for a pull request, the one its base branch has now.

    A pull request that edits `.cdkit.yml` (say, `run: "true"` for the tests) must not
    turn its own checks green, and its author picks its fork point, so neither its own
    file nor the merge-base's counts: the committed pipeline of the base branch's tip
    (`base.sha`) does. Its own edit is validated and shown, and takes effect once merged.
    A base without the file (the pull request adds it) has no gate to weaken, so the
    pull request's own file is used.
    """
    if decision.pipeline_sha is None or decision.trigger is None:
        return pipeline
    base, head = decision.pipeline_sha, decision.trigger.head_sha
    base_ref = decision.trigger.extra.get("base_ref") or "the base branch"
    proposed = load_pipeline_at(ws, head)  # a ConfigError here: the edit would break the base branch
    at_base = load_pipeline_at(ws, base)
    if at_base is None:
        _say(actions, f"cdkit: {base_ref} at {base[:12]} has no {pipeline.path}; this pull request adds it, "
                      "so its own pipeline is used")
        return proposed or pipeline
    _say(actions, f"cdkit: judged by the pipeline of {base_ref} at {base[:12]} (the current tip of the base "
                  "branch), not by the pull request's own")
    if proposed is not None and proposed._replace(path=at_base.path) != at_base:
        _say(actions, f"cdkit: this pull request changes {at_base.path.split(' at ')[0]}; its new pipeline is valid "
                      f"({describe_stages(proposed)}) and takes effect once merged")
    return at_base


def describe_stages(pipeline: Pipeline) -> str:
    """The stages and environments of a pipeline, one line, for showing a proposed one."""
    stages = ", ".join(f"{s.name}: {s.run[:60]!r}" for s in pipeline.stages)
    environments = ", ".join(f"{e.name} ({e.mode})" for e in pipeline.environments)
    return f"stages {stages}" + (f"; environments {environments}" if environments else "")


def _max_wait(value: str | None) -> float:
    from cdkit.github import parse_max_wait

    seconds = parse_max_wait(value, "input max-wait")
    return DEFAULT_MAX_WAIT if seconds is None else seconds


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
    if decision.action == RELEASE and inputs.command in ("run", "plan", *FAN_OUT_COMMANDS):
        note = f"a {decision.event} event is a release, and command: {inputs.command} never releases"
        return Outcome("skipped", EXIT_OK, sha=decision.sha or env.sha or "", notes=(note,))
    if inputs.command == "deploy" and decision.pr_code:
        message = f"command: deploy on a {decision.event} event: pull-request code is never deployed"
        actions.annotate("error", message, title="cdkit: refused")
        return Outcome("refused", EXIT_FAILED, sha=decision.sha or env.sha or "", notes=(message,))
    if decision.action == RELEASE or inputs.command == "deploy":
        return release_step(actions, inputs, ws, pipeline, env, decision, stage_results=(), environ=environ)
    assert decision.action == RUN and decision.trigger is not None
    if inputs.command == "plan":
        return _plan_only(actions, pipeline, decision, environ)
    if inputs.command in FAN_OUT_COMMANDS:
        from cdkit.commands import action_fanout

        handler = {"fan-out": action_fanout.fan_out, "aggregate": action_fanout.aggregate,
                   "release": action_fanout.release}[inputs.command]
        return handler(actions, inputs, ws, pipeline, env, decision, environ)
    outcome, links, notes = _run_stages(actions, ws, pipeline, env, decision, environ, token=inputs.token,
                                        stage=inputs.stage, shard=inputs.shard)
    results = tuple(outcome.results)
    sha = decision.trigger.head_sha
    if outcome.status != "passed":
        return Outcome(outcome.status, outcome.exit_code, sha=sha, results=results, links=links,
                       notes=(*notes, f"run #{outcome.run_id} {outcome.status}: nothing is released"))
    if inputs.command == "auto" and decision.release_candidate and not decision.pr_code:
        return release_step(actions, inputs, ws, pipeline, env, decision, stage_results=results, environ=environ,
                            notes=notes, links=links)
    note = decision.release_note or "stages only (command: run)"
    return Outcome("passed", EXIT_OK, sha=sha, results=results, links=links, notes=(*notes, f"not released: {note}"))


def _plan_only(actions: Actions, pipeline: Pipeline, decision: Decision, environ: Mapping[str, str]) -> Outcome:
    assert decision.trigger is not None
    plan = make_plan(pipeline, decision.trigger, skip=parse_skip(environ.get("CDKIT_SKIP")))
    lines = [f"{'run ' if p.runs else 'skip'}  {p.stage.name}: {p.reason}" for p in plan.stages]
    _say(actions, "\n".join(lines))
    results = tuple(StageResult(p.stage.name, "planned" if p.runs else "skipped", p.reason) for p in plan.stages)
    return Outcome("planned", EXIT_OK, sha=decision.trigger.head_sha, results=results)


def _run_stages(actions: Actions, ws: Workspace, pipeline: Pipeline, env: RunnerEnv, decision: Decision,
                environ: Mapping[str, str], *, token: str | None, stage: str | None = None,
                shard: str | None = None) -> tuple[RunOutcome, dict[str, str], list[str]]:
    """Run the stages (or the one `stage`, or one shard of it); returns the outcome, a link per stage
    (its check run) and notes on reporting."""
    from cdkit.commands import action_fanout

    assert decision.trigger is not None
    reporters: list[Reporter] = [ActionsReporter(actions)] if actions.active else [ConsoleReporter(pipeline.stages)]
    one = action_fanout.ci_stage(pipeline, stage) if stage else None
    shard_index = action_fanout.parse_shard(shard, one) if one else None
    total = one.ci.shards if one else 1
    rename = {one.name: action_fanout.shard_name(one.name, shard_index, total)} if one and shard_index else {}
    only = [rename.get(one.name, one.name)] if one else []
    with open_ledger(ws.repo) as ledger:
        checks, why_not = github_reporter(ledger, ws, pipeline, env, decision, token=token, environ=environ)
        notes = [why_not] if why_not else []
        if checks is not None:
            reporters.append(checks)
            if stage is None:  # a fanned-out workflow records it once, in its plan job
                record_direct_push(checks, pipeline, decision)
        outcome = run_trigger(ws, pipeline, decision.trigger, ledger=ledger, reporters=reporters, only=only,
                              rename=rename, pipeline_fixed=decision.pipeline_sha is not None,
                              environ=action_fanout.shard_environ(stage_environ(environ, token=token),
                                                                  shard_index, total))
        links: dict[str, str] = {}
        if checks is not None:
            report = checks.finish()
            notes += [line.removeprefix("cdkit: ") for line in report.lines()]
            links = _check_run_links(ledger, checks, env)
    for note in notes:
        _say(actions, f"cdkit: {note}")
    return outcome, links, notes


# --- GitHub reporting and releases ------------------------------------------------------------------


def github_reporter(ledger: Ledger, ws: Workspace, pipeline: Pipeline, env: RunnerEnv, decision: Decision, *,
                    token: str | None, environ: Mapping[str, str]) -> tuple[ChecksReporter | None, str | None]:
    """The reporter posting each stage as a check run (or commit status), with the Actions token.

    None for a fork's pull request: its token is read-only, so the job's own log and
    summary carry the results instead of a failing request per stage.
    """
    if decision.fork:
        return None, "pull request from a fork: its token cannot post checks; results are in this job's summary"
    from cdkit.report.checks import make_reporter

    assert decision.trigger is not None
    return make_reporter(ledger=ledger, sha=decision.trigger.head_sha, report=pipeline.report, token=token,
                         environ=environ, cwd=ws.root)


def record_direct_push(checks: ChecksReporter, pipeline: Pipeline, decision: Decision) -> None:
    """On a push to the release branch, record its pusher (the payload's `sender`) in a check run.

    The gate excludes whoever pushed released commits directly; GitHub keeps no record of a
    push's sender that a later job can read, so this job writes one (see `cdkit.people`).
    """
    from cdkit.people import parse_push_record, push_record_id

    payload = decision.payload
    sender = payload.get("sender") if isinstance(payload.get("sender"), Mapping) else None
    if decision.event != "push" or payload.get("ref") != f"refs/heads/{pipeline.release_branch}" or sender is None:
        return
    login, sender_id, before = sender.get("login"), sender.get("id"), payload.get("before")
    if not isinstance(login, str) or not isinstance(sender_id, int) or not isinstance(before, str):
        return
    if parse_push_record(push_record_id(before=before, sender_id=sender_id, sender_login=login)) is None:
        return  # a login or SHA GitHub would never send: record nothing rather than something unparseable
    checks.record_push(before=before, sender_id=sender_id, sender_login=login)


def _check_run_links(ledger: Ledger, checks: ChecksReporter, env: RunnerEnv) -> dict[str, str]:
    """Each stage's check run page, for the summary table (only those GitHub accepted)."""
    from cdkit.outbox import CHECK_RUN_CREATE

    links = {}
    for key in checks.keys:
        item = ledger.outbox_item(key)
        if item is not None and item.kind == CHECK_RUN_CREATE and item.remote_id and env.repository:
            links[str(item.payload.get("stage"))] = f"{env.server_url}/{env.repository}/runs/{item.remote_id}"
    return links


def _release_target(inputs: ActionInputs, pipeline: Pipeline, decision: Decision) -> Environment | None:
    name = inputs.environment or decision.environment
    if name is None:
        return pipeline.environments[0] if pipeline.environments else None
    from cdkit.release import find_environment

    return find_environment(pipeline, name)


def release_step(actions: Actions, inputs: ActionInputs, ws: Workspace, pipeline: Pipeline, env: RunnerEnv,
                 decision: Decision, *, stage_results: Sequence[StageResult], environ: Mapping[str, str],
                 notes: Sequence[str] = (), links: Mapping[str, str] | None = None) -> Outcome:
    """Hand the commit to cdkit.release: decide whether it may be deployed, or deploy it.

    `deployment` and `pull_request_review` events go to the release logic's event
    handlers. `command: deploy` deploys here (every gate checked again right before);
    for review approval it first opens or moves the release pull request, and an
    approval still missing means "waiting", not failure. Otherwise this decides the
    `deploy` output for a later job: in deployment mode when every gate holds now; for
    environment approval when the stages passed, since GitHub holds the deploy job until a
    required reviewer approves; never for review approval, whose release job decides.
    """
    sha = decision.sha or env.sha or ""
    results, links = tuple(stage_results), dict(links or {})
    passed = "passed" if stage_results else "skipped"
    target = _release_target(inputs, pipeline, decision)
    if target is None:
        note = f"no environments in {pipeline.path}: nothing to release"
        if inputs.wants_release or decision.action == RELEASE:
            actions.annotate("error", note, title="cdkit: release refused")
            return Outcome("refused", EXIT_FAILED, sha=sha, results=results, notes=(*notes, note), links=links)
        return Outcome(passed, EXIT_OK, sha=sha, results=results, notes=(*notes, note), links=links)
    deploy_now = inputs.command == "deploy"
    if _release_job_decides(inputs, decision, target):
        note = (f"{sha[:12]} passed; the release job (`command: deploy`) opens or moves {target.name}'s release "
                "pull request and checks every gate, and it deploys once the pull request is approved")
        return Outcome(passed, EXIT_OK, sha=sha, results=results, environment=target.name,
                       notes=(*notes, note), links=links)
    with open_ledger(ws.repo) as ledger:
        ctx = _release_context(actions, ws, pipeline, ledger, env, decision, environ, token=inputs.token)
        outcome = _judge_release(actions, ctx, env, decision, target, sha=sha, deploy_now=deploy_now,
                                 results=results, notes=notes, links=links)
    # The summary's history reads GitHub next: through the same client, it reuses what is still current.
    client = getattr(ctx.remote, "client", None)
    return dataclasses.replace(outcome, github=client if isinstance(client, GitHubClient) else None)


def _judge_release(actions: Actions, ctx: ReleaseContext, env: RunnerEnv, decision: Decision, target: Environment, *,
                   sha: str, deploy_now: bool, results: tuple[StageResult, ...], notes: Sequence[str],
                   links: dict[str, str]) -> Outcome:
    """`release_step` once the release context is built: the event handlers, a deploy, or the `deploy` output."""
    from cdkit import release

    passed = "passed" if results else "skipped"
    if decision.event in ("pull_request_review", "deployment"):
        return _release_event(actions, ctx, decision, notes, links)
    target = _governed_target(ctx, target)
    if deploy_now and target.mode == "delivery" and target.approval.via == "review":
        return _review_release(actions, ctx, target, sha, results, notes, links)
    if deploy_now:
        result = release.deploy_if_approved(ctx, target.name, sha)
        return _deploy_outcome(actions, result, results, notes, links)
    if target.mode == "delivery" and target.approval.via == "environment" and decision.action == RUN:
        if env.sha and sha != env.sha:
            # GitHub's reviewers approve the run, which is bound to GITHUB_SHA: an approval
            # there would be for another commit than the one this run judged.
            note = (f"{sha[:12]} is not this run's commit ({env.sha[:12]}), and {target.name}'s reviewers "
                    "approve the run's commit: dispatch the workflow on a branch whose head is the commit")
            return Outcome(passed, EXIT_OK, sha=sha, results=results, environment=target.name,
                           notes=(*notes, f"not deployed to {target.name}: {note}"), links=links)
        if ctx.remote is not None:
            # Before deploy=true: the deploy job's `environment:` would make GitHub create a
            # missing environment, unprotected, and nothing would wait for an approval.
            try:
                ctx.remote.preflight(target)
            except GateFailed as exc:
                actions.annotate("error", str(exc), title=f"cdkit: {target.name} cannot wait for approval")
                return Outcome("refused", EXIT_FAILED, sha=sha, results=results, environment=target.name,
                               notes=(*notes, str(exc)), links=links)
        note = (f"{sha[:12]} passed; the deploy job waits for a required reviewer of the {target.name} "
                "environment, then cdkit checks every gate again")
        return Outcome(passed, EXIT_OK, sha=sha, results=results, deploy=True, environment=target.name,
                       notes=(*notes, note), links=links)
    check = release.check(ctx, target, sha)
    rules = check.governed_by
    if rules:
        notes = (*notes, f"{target.name} is governed by {rules['path']}@{rules['sha'][:12]} ({rules['why']})",
                 *([check.pending] if check.pending else []))
    if check.ok:
        note = f"every gate holds for {sha[:12]} on {target.name}: the deploy job may deploy it"
        return Outcome(passed, EXIT_OK, sha=sha, results=results, deploy=True, environment=target.name,
                       notes=(*notes, note), links=links)
    waiting = [f"not deployed to {target.name} yet: {problem}" for problem in check.problems]
    return Outcome(passed, EXIT_OK, sha=sha, results=results, environment=target.name,
                   notes=(*notes, *waiting), links=links)


def _release_job_decides(inputs: ActionInputs, decision: Decision, target: Environment) -> bool:
    """A pipeline job whose commit asks for review approval: its `deploy` output stays false, unjudged.

    Review approval needs a release pull request, which only the release job opens, so the
    gate is evaluated there (once), and this job reads nothing from GitHub for it. Taking the
    commit's word for the approval method is safe here: the answer can only hold a deploy back,
    and the release job judges by the governing rules.
    """
    return (inputs.command != "deploy" and decision.action == RUN and decision.event not in
            ("pull_request_review", "deployment") and target.mode == "delivery" and target.approval.via == "review")


def _governed_target(ctx: ReleaseContext, target: Environment) -> Environment:
    """The environment as its governing pipeline defines it (how it is approved is not the commit's to say);
    unchanged when no committed rules can be read, which the gate then refuses with the reason."""
    from cdkit import release

    try:
        return release.governed(ctx, target.name).env
    except GateFailed:
        return target


def _release_event(actions: Actions, ctx: ReleaseContext, decision: Decision, notes: Sequence[str],
                   links: Mapping[str, str]) -> Outcome:
    """`deployment` and `pull_request_review` events: the release logic reads GitHub and decides."""
    from cdkit import release_github

    if decision.event == "deployment":
        return _deploy_outcome(actions, release_github.on_deployment(ctx, decision.payload), (), notes, links)
    deployed = release_github.on_review(ctx, decision.payload)
    if not deployed:
        note = "the reviewed pull request is not the release pull request of a review-approved environment"
        return Outcome("skipped", EXIT_OK, sha=decision.sha or "", notes=(*notes, f"nothing to release: {note}"))
    return _deploy_outcome(actions, deployed[0], (), notes, links, waiting_ok=True)


def _review_release(actions: Actions, ctx: ReleaseContext, target: Environment, sha: str,
                    results: tuple[StageResult, ...], notes: Sequence[str], links: Mapping[str, str]) -> Outcome:
    """Review approval: open (or move) the environment's release pull request to `sha`; deploy if already approved."""
    from cdkit import release, release_github

    opened = release_github.release_open(ctx, target.name, sha)
    verb = "opened" if opened.get("created") else "updated"
    note = f"release pull request #{opened.get('pull_request')} for {target.name} {verb} at {sha[:12]}"
    result = release.deploy_if_approved(ctx, target.name, sha)
    return _deploy_outcome(actions, result, results, (*notes, note), links, waiting_ok=True)


def _release_context(actions: Actions, ws: Workspace, pipeline: Pipeline, ledger: Ledger, env: RunnerEnv,
                     decision: Decision, environ: Mapping[str, str], *, token: str | None) -> ReleaseContext:
    from cdkit.commands.deploy import remote_for
    from cdkit.release import ReleaseContext

    deploy_environ = stage_environ(environ, token=token)
    github_environ = deploy_environ
    deployment_id = None
    if decision.event == "deployment":
        raw = (decision.payload.get("deployment") or {}).get("id")
        deployment_id = raw if isinstance(raw, int) else None

    def show(line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if actions.active:
            actions.print_untrusted(text)  # the deploy's output is as untrusted as a stage's
        else:
            output.write_line(f"  | {text}", stream=actions.stream)

    # Only cdkit's GitHub client uses the token; the deploy command gets it only if its environment names it.
    return ReleaseContext(root=ws.root, cdkit_dir=ws.repo.cdkit_dir, pipeline=pipeline, ledger=ledger,
                          environ=deploy_environ, remote=remote_for(ws, pipeline, github_environ),
                          say=lambda text: _say(actions, text), on_output=show,
                          github_deployment_id=deployment_id, log_url=env.run_url)


def _deploy_outcome(actions: Actions, result: DeployResult, results: tuple[StageResult, ...],
                    notes: Sequence[str], links: Mapping[str, str], *, waiting_ok: bool = False) -> Outcome:
    """A deploy's outcome; with `waiting_ok`, a refusal (no approval yet) waits instead of failing the job."""
    deployment_id = result.github_id or result.deployment_id
    common = {"sha": result.sha, "results": results, "environment": result.environment,
              "deployment_id": str(deployment_id) if deployment_id is not None else "", "links": links}
    if result.ok:
        note = f"{result.environment} runs {result.sha[:12]} ({result.status})"
        return Outcome("deployed", EXIT_OK, deploy=True, notes=(*notes, note), **common)  # type: ignore[arg-type]
    reasons = list(result.reasons) or [f"deploy {result.status}"]
    if result.deployment_id is not None:
        reasons = [result.summary()]  # a deploy that ran: what happened, rollback and quarantine, in one line
    if waiting_ok and result.status == "waiting":
        actions.annotate("notice", "; ".join(reasons), title=f"cdkit: {result.environment} waits for approval")
        return Outcome("waiting", EXIT_OK, notes=(*notes, *reasons), **common)  # type: ignore[arg-type]
    actions.annotate("error", "; ".join(reasons), title=f"cdkit: deploy to {result.environment} {result.status}")
    return Outcome(result.status, result.exit_code, notes=(*notes, *reasons), **common)  # type: ignore[arg-type]


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
