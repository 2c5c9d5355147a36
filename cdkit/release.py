"""Release gates and deploys: preconditions, the lock, ordered promotion, the deploy command, the record.

Every way a commit reaches an environment (`cdkit deploy`, a passing `cdkit run`
on the release branch in deployment mode, the Action's push, review and
deployment events) ends in `deploy`, which takes the environment's lock and then,
right before deploying, checks everything again:

1. every required stage passed for this exact SHA (ledger runs of a clean tree, or GitHub checks);
2. in delivery mode, the approval policy holds for this SHA (`cdkit.approval`);
3. the SHA is on the release branch;
4. it is not older than what the environment runs, unless this is an explicit rollback;
5. the environment before this one in the chain has already run it;
6. no other deploy to this environment is in progress.

Any failed check refuses the deploy with every reason (fail closed). A deploy
that starts is recorded in the ledger whatever happens: success, failure,
timeout, cancellation, or a crash found later by the next deploy.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cdkit import git
from cdkit.approval import Decision, Facts, Identity, Review, evaluate
from cdkit.config import Environment, Pipeline, Stage
from cdkit.deploylock import EnvironmentLock, LockBusy
from cdkit.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CdkitError, GateFailed, UsageError
from cdkit.ledger import Ledger
from cdkit.plan import NOT_JUDGED_PREFIXES, PATHS_SKIP_PREFIX
from cdkit.runner import cancel_on_signals, pump_output, signal_group
from cdkit.secrets import without_credentials

DEFAULT_DEPLOY_TIMEOUT = 3600.0
DEFAULT_KILL_GRACE = 5.0
LOCAL_VIA = "local"

# What a deploy ends as. `unchanged`: the environment already runs the SHA; `refused`: a gate said no.
SUCCESS, FAILURE, CANCELLED, TIMED_OUT, CRASHED = "success", "failure", "cancelled", "timed_out", "crashed"
UNCHANGED, REFUSED, WAITING = "unchanged", "refused", "waiting"

# A result GitHub has that the gate does not count (another app, another account, the hook): see cdkit.evidence.
NOT_COUNTED = "not counted"

# How far back a stage skipped by `paths` may find the commit it last judged (first parents).
PATHS_LOOKBACK = 50


@dataclass(frozen=True)
class StageVerdict:
    stage: str
    status: str
    reason: str
    source: str  # where the verdict comes from, for messages: "run #3", "GitHub check"


class Remote(Protocol):
    """The GitHub side of a release (see `cdkit.release_github`); None offline."""

    def stage_verdicts(self, sha: str) -> dict[str, StageVerdict]: ...
    def current_sha(self, environment: str) -> str | None: ...
    def has_deployed(self, environment: str, sha: str) -> bool: ...
    def deploy_in_progress(self, environment: str) -> str | None: ...
    def preflight(self, environment: Environment) -> None: ...
    def approval(self, environment: Environment, sha: str, commit_people: tuple[Identity, ...]) -> Decision: ...
    def start_deployment(self, environment: Environment, sha: str, *, payload: dict[str, Any],
                         rollback: bool) -> int | None: ...
    def finish_deployment(self, github_id: int, environment: Environment, state: str, *,
                          log_url: str | None) -> None: ...


@dataclass(frozen=True)
class ReleaseContext:
    """Everything a release needs, passed in so tests and the Action can supply it."""

    root: Path  # the work tree (git commands run here)
    cdkit_dir: Path  # where deploy logs go
    pipeline: Pipeline
    ledger: Ledger
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    remote: Remote | None = None
    say: Callable[[str], None] = lambda _text: None  # progress lines for the console
    on_output: Callable[[bytes], None] | None = None  # the deploy command's output, line by line
    deploy_timeout: float = DEFAULT_DEPLOY_TIMEOUT
    kill_grace: float = DEFAULT_KILL_GRACE
    github_deployment_id: int | None = None  # a `deployment` event's own deployment, updated instead of a new one
    log_url: str | None = None  # where the deploy's log can be read (the Actions run), for GitHub statuses


@dataclass(frozen=True)
class Check:
    """The outcome of the preconditions for one environment and SHA, before any deploy."""

    environment: str
    sha: str
    problems: tuple[str, ...]
    decision: Decision | None  # None in deployment mode
    current: str | None  # what the environment runs now
    rollback: bool

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class DeployResult:
    environment: str
    sha: str
    status: str
    rollback: bool = False
    deployment_id: int | None = None
    log_path: str | None = None
    approval: dict[str, Any] | None = None
    reasons: tuple[str, ...] = ()
    github_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in (SUCCESS, UNCHANGED)

    @property
    def exit_code(self) -> int:
        """0 deployed (or nothing to do), 130 interrupted (Ctrl-C or SIGTERM), 1 anything else."""
        if self.ok:
            return EXIT_OK
        return EXIT_INTERRUPTED if self.status == CANCELLED else EXIT_FAILED

    def as_data(self) -> dict[str, Any]:
        return {
            "environment": self.environment, "sha": self.sha, "status": self.status, "rollback": self.rollback,
            "deployment_id": self.deployment_id, "log": self.log_path, "approval": self.approval,
            "reasons": list(self.reasons), "github_deployment_id": self.github_id,
        }


# --- facts ------------------------------------------------------------------------------------


def required_stages(pipeline: Pipeline) -> tuple[Stage, ...]:
    """The stages a release needs: every stage CI runs (pre-push-only stages are the hook's business)."""
    return tuple(s for s in pipeline.stages if "ci" in s.on)


def ledger_stage_verdicts(ledger: Ledger, sha: str, *, in_ci: bool = False) -> dict[str, StageVerdict]:
    """Each stage's latest meaningful result on `sha` from runs of a clean tree.

    A result saying the stage was not part of that run (another trigger, --stage)
    is ignored rather than hiding an earlier pass or failure; a stage still
    running has no verdict yet. In CI (`in_ci`) a pre-push hook's run on that
    machine is a laptop's claim: it never counts there.
    """
    verdicts: dict[str, StageVerdict] = {}
    for run in ledger.runs_for_sha(sha):
        if run.dirty or (in_ci and run.trigger == "pre-push"):
            continue  # a dirty work tree is not the commit: it never counts for a gate
        for result in ledger.stage_results(run.id):
            if result.status == "running" or result.reason.startswith(NOT_JUDGED_PREFIXES):
                continue
            verdicts[result.stage] = StageVerdict(result.stage, result.status, result.reason, f"run #{run.id}")
    return verdicts


def stage_problems(pipeline: Pipeline, sha: str, verdicts: Mapping[str, StageVerdict],
                   paths_skip: Callable[[Stage], str | None] = lambda _stage: None) -> list[str]:
    """What keeps `sha`'s stages from allowing a release; `paths_skip` judges a stage skipped by `paths`."""
    problems = []
    for stage in required_stages(pipeline):
        verdict = verdicts.get(stage.name)
        if verdict is None:
            problems.append(f"stage {stage.name!r} has no result for {sha[:12]} "
                            f"(run the pipeline on that commit: cdkit run --head {sha[:12]})")
        elif verdict.status == NOT_COUNTED:
            problems.append(f"stage {stage.name!r} has no result from CI for {sha[:12]}: {verdict.reason} "
                            "(run the pipeline in CI on that commit)")
        elif verdict.status == "skipped" and verdict.reason.startswith(PATHS_SKIP_PREFIX):
            problem = paths_skip(stage)
            if problem:
                problems.append(problem)
        elif verdict.status != "passed":
            why = f": {verdict.reason}" if verdict.reason else ""
            problems.append(f"stage {stage.name!r} {verdict.status} on {sha[:12]} ({verdict.source}{why}); "
                            "fix it and run the pipeline again")
    return problems


def paths_skip_problem(ctx: ReleaseContext, stage: Stage, sha: str) -> str | None:
    """None when a stage skipped by `paths` on `sha` passed on a commit with the same files under its paths.

    A skip only says the *pushed range* did not touch the stage's paths; the commit may
    still carry an earlier change there that failed (or was pushed with --no-verify). So
    walk back along first parents: the first commit whose files under `paths` differ from
    `sha`'s ends the search; before that, a pass of the stage vouches for `sha`, a failure
    refuses it, and another paths skip sends the search one commit further.
    """
    from cdkit.globs import matching_files

    assert stage.paths is not None
    for ancestor in git.first_parents(sha, limit=PATHS_LOOKBACK, cwd=ctx.root)[1:]:
        if matching_files(stage.paths, git.changed_files(ancestor, sha, cwd=ctx.root)):
            break  # files under its paths differ from here on: no earlier result speaks for `sha`
        verdict = combined_verdicts(ctx, ancestor).get(stage.name)
        if verdict is None or (verdict.status == "skipped" and verdict.reason.startswith(PATHS_SKIP_PREFIX)):
            continue
        if verdict.status == "passed":
            return None
        return (f"stage {stage.name!r} was skipped on {sha[:12]} by its paths, but it {verdict.status} on "
                f"{ancestor[:12]}, which has the same files under them; fix it and run the pipeline again")
    return (f"stage {stage.name!r} was skipped on {sha[:12]} by its paths, and no earlier commit with the same "
            f"files under them passed it; run it on this commit: cdkit run --head {sha[:12]} --stage {stage.name}")


def combined_verdicts(ctx: ReleaseContext, sha: str) -> dict[str, StageVerdict]:
    """The ledger's verdicts, completed by GitHub's checks for stages the ledger has no result for."""
    verdicts = ledger_stage_verdicts(ctx.ledger, sha, in_ci=ctx.environ.get("GITHUB_ACTIONS") == "true")
    if ctx.remote is not None:
        for name, verdict in ctx.remote.stage_verdicts(sha).items():
            verdicts.setdefault(name, verdict)
    return verdicts


def current_sha(ctx: ReleaseContext, environment: str) -> str | None:
    if ctx.remote is not None:
        remote = ctx.remote.current_sha(environment)
        if remote is not None:
            return remote
    record = ctx.ledger.current_deployment(environment)
    return str(record["sha"]) if record else None


def has_deployed(ctx: ReleaseContext, environment: str, sha: str) -> bool:
    if ctx.ledger.deployments(environment=environment, sha=sha, status=SUCCESS, newest=1):
        return True
    return ctx.remote is not None and ctx.remote.has_deployed(environment, sha)


def parse_local_identity(text: str) -> Identity:
    """`Name <email>` as recorded by `cdkit approve` -> an Identity."""
    if text.endswith(">") and " <" in text:
        name, email = text[:-1].rsplit(" <", 1)
        return Identity(name=name, email=email)
    return Identity(name=text)


def format_local_identity(name: str, email: str) -> str:
    return f"{name} <{email}>"


def release_range_people(ctx: ReleaseContext, environment: str, sha: str) -> tuple[Identity, ...]:
    """Authors and committers of what this release adds to the environment (everything, on its first deploy)."""
    current = current_sha(ctx, environment)
    base = current if current and git.commit_exists(current, cwd=ctx.root) else None
    people: dict[frozenset[str], Identity] = {}
    for commit in git.commits_in_range(base, sha, cwd=ctx.root):
        for name, email in ((commit.author_name, commit.author_email),
                            (commit.committer_name, commit.committer_email)):
            person = Identity(name=name, email=email)
            people.setdefault(person.keys(), person)
    return tuple(people.values())


def local_reviews(ledger: Ledger, environment: str, sha: str) -> tuple[Review, ...]:
    return tuple(
        Review(reviewer=parse_local_identity(a["approver"]), state="APPROVED", commit_id=a["sha"],
               submitted_at=float(a["created_at"]), id=int(a["id"]), comment=a["comment"], via=a["via"])
        for a in ledger.approvals(sha=sha, environment=environment)
        if a["via"] == LOCAL_VIA
    )


def local_decision(ctx: ReleaseContext, env: Environment, sha: str) -> Decision:
    """The `via: local` policy from the ledger's approvals, with the same rules as a PR review."""
    facts = Facts(sha=sha, required=env.approval.required, reviews=local_reviews(ctx.ledger, env.name, sha),
                  reviewers=env.approval.reviewers, commit_people=release_range_people(ctx, env.name, sha))
    return evaluate(facts)


def approval_decision(ctx: ReleaseContext, env: Environment, sha: str) -> Decision:
    if env.approval.via == LOCAL_VIA:
        return local_decision(ctx, env, sha)
    if ctx.remote is None:
        how = "pull-request reviews" if env.approval.via == "review" else "the GitHub environment's reviewers"
        return Decision(False, (
            f"{env.name} is approved through {how} (approval.via: {env.approval.via}), which needs GitHub: "
            "run this in the cdkit Action, or set GITHUB_TOKEN and GITHUB_REPOSITORY",), ())
    return ctx.remote.approval(env, sha, release_range_people(ctx, env.name, sha))


# --- preconditions ----------------------------------------------------------------------------


def find_environment(pipeline: Pipeline, name: str) -> Environment:
    env = pipeline.environment(name)
    if env is None:
        known = ", ".join(e.name for e in pipeline.environments) or "none are defined"
        raise UsageError(f"no environment {name!r} in {pipeline.path} (environments: {known})")
    return env


def _previous(pipeline: Pipeline, env: Environment) -> Environment | None:
    index = pipeline.environments.index(env)
    return pipeline.environments[index - 1] if index else None


def _branch_problems(ctx: ReleaseContext, sha: str) -> list[str]:
    branch = ctx.pipeline.release_branch
    tip = git.branch_tip(branch, cwd=ctx.root)
    if tip is None:
        return [f"the release branch {branch!r} is not in this repository (git fetch origin {branch})"]
    if git.is_ancestor(sha, tip, cwd=ctx.root):
        return []
    shallow = " (this clone is shallow: fetch the full history, e.g. fetch-depth: 0)" \
        if git.is_shallow(cwd=ctx.root) else ""
    return [f"{sha[:12]} is not on the release branch {branch!r}{shallow}; merge it into {branch} first"]


def _order_problems(ctx: ReleaseContext, env: Environment, sha: str, current: str | None,
                    rollback: bool) -> list[str]:
    if current is None or current == sha or rollback:
        return []
    if not git.commit_exists(current, cwd=ctx.root):
        return [f"{env.name} runs {current[:12]}, which is not in this repository, so cdkit cannot tell whether "
                f"{sha[:12]} is older (git fetch the release branch's history)"]
    if git.is_ancestor(sha, current, cwd=ctx.root):
        return [f"{sha[:12]} is older than what {env.name} runs ({current[:12]}); deploying it would roll "
                f"{env.name} back: pass --rollback to do that on purpose (it is recorded as a rollback)"]
    return []


def _chain_problems(ctx: ReleaseContext, env: Environment, sha: str) -> list[str]:
    previous = _previous(ctx.pipeline, env)
    if previous is None or has_deployed(ctx, previous.name, sha):
        return []
    return [f"{env.name} comes after {previous.name}, which has not run {sha[:12]} yet; "
            f"deploy it there first (cdkit deploy --env {previous.name} --sha {sha[:12]})"]


def check(ctx: ReleaseContext, env: Environment, sha: str, *, rollback: bool = False) -> Check:
    """Every precondition for deploying `sha` to `env`, evaluated now (no side effects)."""
    problems = stage_problems(ctx.pipeline, sha, combined_verdicts(ctx, sha),
                              lambda stage: paths_skip_problem(ctx, stage, sha))
    decision = None
    if env.mode == "delivery":
        decision = approval_decision(ctx, env, sha)
        if not decision.approved:
            problems.append(f"{sha[:12]} is not approved for {env.name}: " + "; ".join(decision.reasons)
                            + _how_to_approve(env, sha))
    problems += _branch_problems(ctx, sha)
    current = current_sha(ctx, env.name)
    problems += _order_problems(ctx, env, sha, current, rollback)
    problems += _chain_problems(ctx, env, sha)
    return Check(env.name, sha, tuple(problems), decision, current, rollback)


def _how_to_approve(env: Environment, sha: str) -> str:
    if env.approval.via == LOCAL_VIA:
        return f" (someone who did not write these commits runs: cdkit approve {sha[:12]} --env {env.name})"
    if env.approval.via == "review":
        return f" (approve the release pull request at this commit: cdkit release open --env {env.name})"
    return ""


# --- the lock ---------------------------------------------------------------------------------


@contextmanager
def environment_lock(ctx: ReleaseContext, environment: str) -> Iterator[EnvironmentLock]:
    """Hold the environment's deploy lock for the block (see `cdkit.deploylock`): refuse while another has it.

    The deploy and verify commands inherit the lock, so it stays held while any of them
    lives, even after cdkit itself is killed.
    """
    try:
        lock = EnvironmentLock.acquire(ctx.cdkit_dir, environment)
    except LockBusy as exc:
        raise GateFailed(f"{exc}; wait for it to finish, then deploy again") from None
    try:
        yield lock
    finally:
        lock.release()


def _close_abandoned(ctx: ReleaseContext, environment: str) -> None:
    """Deployments left `in_progress` by a process that died are recorded as crashed (we hold the lock now)."""
    for record in ctx.ledger.deployments(environment=environment, status="in_progress"):
        if record["status"] == "in_progress":
            ctx.ledger.finish_deployment(int(record["id"]), CRASHED)
            ctx.ledger.audit(f"deployment #{record['id']} of {record['sha']} to {environment} never finished "
                             "(its process crashed or was killed); recorded as crashed")


# --- running the deploy command ---------------------------------------------------------------


LOST_LOCK = "lost the deploy lock"


class _Stop:
    """Why a deploy is being stopped (the first reason wins), and the process group to stop.

    Set from a signal handler (Ctrl-C, SIGTERM) at any point of the deploy, or by the
    wait loop (timeout, lost lock): a command not started yet is never started.
    """

    def __init__(self) -> None:
        self.why: tuple[str, str] | None = None
        self.group: int | None = None

    def __call__(self, status: str, reason: str) -> None:
        if self.why is None:
            self.why = (status, reason)
        if self.group is not None:
            signal_group(self.group, signal.SIGTERM)


def _wait_for_command(ctx: ReleaseContext, proc: subprocess.Popen[bytes], lock: EnvironmentLock, stop: _Stop,
                      *, timeout: float, what: str) -> int:
    """Wait for a deploy or verify command; a timeout or a lost lock stops it (TERM, then KILL after the
    grace period), as a signal does through `stop`."""
    deadline = time.monotonic() + timeout
    kill_at: float | None = None
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if stop.why is None and now >= deadline:
            stop(TIMED_OUT, f"the {what} command timed out after {int(timeout)}s")
        elif stop.why is None and lock.lost():
            # Someone removed or replaced the lock file: another deploy may hold the new one.
            stop(FAILURE, f"{LOST_LOCK} ({lock.path} was removed or replaced while it ran); stopped so two "
                          "deploys never overlap")
        if stop.why is not None and kill_at is None:
            kill_at = now + ctx.kill_grace
        if kill_at is not None and now >= kill_at:
            signal_group(proc.pid, signal.SIGKILL)


def run_command(ctx: ReleaseContext, command: str, environ: Mapping[str, str], *, lock: EnvironmentLock,
                stop: _Stop, log_path: Path, workdir: Path, timeout: float, what: str) -> tuple[str, str]:
    """Run a deploy or verify command in its own session; (status, reason).

    It inherits the environment's lock, so a command that outlives cdkit still holds it.
    """
    if stop.why is not None:
        return stop.why  # stopped before it could start: it never starts
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=workdir, env=dict(environ), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=(lock.fd,))
    except OSError as exc:
        return FAILURE, f"could not start the {what} command: {exc}"
    stop.group = proc.pid
    if stop.why is not None:  # a signal arrived while it started
        signal_group(proc.pid, signal.SIGTERM)
    lock.note(session=proc.pid)  # for whoever finds the lock held after cdkit died
    exited = threading.Event()
    with log_path.open("ab") as log:
        reader = threading.Thread(target=pump_output, daemon=True,
                                  args=(proc, log, ctx.on_output or (lambda _line: None), exited))
        reader.start()
        try:
            code = _wait_for_command(ctx, proc, lock, stop, timeout=timeout, what=what)
        finally:
            stop.group = None
            signal_group(proc.pid, signal.SIGKILL)  # nothing the command left behind outlives it
            exited.set()
            reader.join()
    if proc.stdout is not None:
        proc.stdout.close()
    if stop.why is not None:
        return stop.why
    if code != 0:
        return FAILURE, f"the {what} command was killed by signal {-code}" if code < 0 else \
            f"the {what} command exited with {code}"
    return SUCCESS, ""


def command_environment(ctx: ReleaseContext, env: Environment, sha: str, *, deployment_id: int,
                        rollback: bool, lock: EnvironmentLock) -> dict[str, str]:
    """What the deploy and verify commands see: no credential the environment does not name, and the facts."""
    environ = without_credentials(git.stage_environment(dict(ctx.environ)), env.env_passthrough)
    environ.update({
        "CDKIT_ENVIRONMENT": env.name, "CDKIT_SHA": sha, "CDKIT_DEPLOYMENT_ID": str(deployment_id),
        "CDKIT_ROLLBACK": "1" if rollback else "0", "CDKIT_ENVIRONMENT_URL": env.url or "",
        # The inherited lock: a process meant to outlive the deploy (a daemon) closes it, or it holds the lock.
        "CDKIT_LOCK_FD": str(lock.fd),
    })
    return environ


# --- deploy -----------------------------------------------------------------------------------


def _approval_record(env: Environment, decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {"via": env.approval.via, "required": env.approval.required, **decision.as_data()}


class Refused(GateFailed):
    """A gate said no; `only_approval` when the one thing missing is the approval (delivery waits)."""

    def __init__(self, message: str, *, only_approval: bool = False) -> None:
        super().__init__(message)
        self.only_approval = only_approval


def _refuse(env: Environment, sha: str, problems: Sequence[str], *, only_approval: bool = False) -> Refused:
    lines = "\n".join(f"  - {p}" for p in problems)
    return Refused(f"refusing to deploy {sha[:12]} to {env.name}:\n{lines}", only_approval=only_approval)


def deploy(ctx: ReleaseContext, environment: str, sha: str, *, rollback: bool = False) -> DeployResult:
    """Deploy `sha` (any revision) to `environment` if every precondition holds right now.

    Raises GateFailed (exit 1) with every reason when a precondition fails.
    Returns the recorded outcome otherwise (check `DeployResult.ok`).
    """
    env = find_environment(ctx.pipeline, environment)
    sha = git.resolve_commit(sha, cwd=ctx.root)
    if ctx.remote is not None:
        ctx.remote.preflight(env)
    with environment_lock(ctx, env.name) as lock:
        _close_abandoned(ctx, env.name)
        busy = ctx.remote.deploy_in_progress(env.name) if ctx.remote is not None else None
        if busy:
            raise GateFailed(f"another deploy to {env.name} is in progress on GitHub ({busy}); wait for it to finish")
        result = check(ctx, env, sha, rollback=rollback)
        if result.current == sha and not rollback and result.ok:
            ctx.say(f"{env.name} already runs {sha[:12]}; nothing to deploy")
            return DeployResult(env.name, sha, UNCHANGED, reasons=(f"{env.name} already runs {sha[:12]}",))
        if not result.ok:
            # The approval adds exactly one problem; when it is the only one, the release waits.
            waiting = result.decision is not None and not result.decision.approved and len(result.problems) == 1
            raise _refuse(env, sha, result.problems, only_approval=waiting)
        return _deploy_now(ctx, env, sha, lock=lock, rollback=rollback, decision=result.decision,
                           current=result.current)


def deployer(ctx: ReleaseContext) -> str:
    """Who starts a deploy, for the history: the Actions actor in CI, else the git identity here."""
    actor = ctx.environ.get("GITHUB_ACTOR", "").strip() if ctx.environ.get("GITHUB_ACTIONS") == "true" else ""
    if actor:
        return f"@{actor}"
    try:
        return format_local_identity(*git.identity(cwd=ctx.root))
    except CdkitError:
        return "unknown"


def _deploy_now(ctx: ReleaseContext, env: Environment, sha: str, *, lock: EnvironmentLock, rollback: bool,
                decision: Decision | None, current: str | None) -> DeployResult:
    approval = _approval_record(env, decision)
    deployed_by = deployer(ctx)
    deployment_id = ctx.ledger.start_deployment(environment=env.name, sha=sha, rollback=rollback, approval=approval,
                                                deployed_by=deployed_by)
    if rollback:
        ctx.ledger.audit(f"deployment #{deployment_id}: explicit rollback of {env.name} from "
                         f"{(current or 'nothing')[:12]} to {sha[:12]}")
    log_dir = ctx.cdkit_dir / "deploys"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{deployment_id}-{env.name}.log"
    github_id = ctx.github_deployment_id
    status, reason = CRASHED, "cdkit stopped before the deploy command finished"
    stop = _Stop()
    lock.note(deployment=deployment_id)
    try:
        with cancel_on_signals(lambda why: stop(CANCELLED, why)):
            status, reason, github_id = _start_and_run(ctx, env, sha, deployment_id=deployment_id, lock=lock,
                                                       stop=stop, rollback=rollback, approval=approval,
                                                       log_path=log_path, github_id=github_id,
                                                       deployed_by=deployed_by)
    except KeyboardInterrupt:
        status, reason = CANCELLED, "interrupted"
        raise
    finally:
        ctx.ledger.finish_deployment(deployment_id, status, github_id=github_id, log_path=str(log_path))
        if status != SUCCESS:
            ctx.ledger.audit(f"deployment #{deployment_id} of {sha} to {env.name}: {status} ({reason})")
        if ctx.remote is not None and github_id is not None:
            ctx.remote.finish_deployment(github_id, env, SUCCESS if status == SUCCESS else FAILURE,
                                         log_url=ctx.log_url)
    if status == REFUSED:
        raise GateFailed(reason)
    ctx.say(f"cdkit: deployment #{deployment_id} to {env.name}: {status}" + (f" ({reason})" if reason else ""))
    return DeployResult(env.name, sha, status, rollback=rollback, deployment_id=deployment_id,
                        log_path=str(log_path), approval=approval, reasons=(reason,) if reason else (),
                        github_id=github_id)


def _start_and_run(ctx: ReleaseContext, env: Environment, sha: str, *, deployment_id: int, lock: EnvironmentLock,
                   stop: _Stop, rollback: bool, approval: dict[str, Any] | None, log_path: Path,
                   github_id: int | None, deployed_by: str) -> tuple[str, str, int | None]:
    """Create the GitHub deployment (if any), then run the deploy command at `sha`: (status, reason, GitHub id)."""
    if ctx.remote is not None:
        payload = {"cdkit_deployment_id": deployment_id, "rollback": rollback, "approval": approval,
                   "deployed_by": deployed_by}
        try:
            github_id = ctx.remote.start_deployment(env, sha, payload=payload, rollback=rollback) or github_id
        except GateFailed as exc:
            # Another machine's deploy started first (the remote set ours to failure): nothing ran.
            return REFUSED, str(exc), github_id
    what = "rolling back" if rollback else "deploying"
    ctx.say(f"cdkit: {what} {env.name} to {sha[:12]} (deployment #{deployment_id}, log: {log_path})")
    # The deploy command sees exactly `sha`: the work tree only when it is a clean checkout of it.
    in_place = git.work_tree_state(ctx.root) == (sha, True)
    with git.checkout_of(sha, ctx.root, in_place=in_place) as workdir:
        environ = command_environment(ctx, env, sha, deployment_id=deployment_id, rollback=rollback, lock=lock)
        status, reason = run_command(ctx, env.deploy, environ, lock=lock, stop=stop, log_path=log_path,
                                     workdir=workdir, timeout=ctx.deploy_timeout, what="deploy")
    return status, reason, github_id


# --- entry points for automatic releases ------------------------------------------------------


def is_release_ref(pipeline: Pipeline, ref: str | None) -> bool:
    return ref == f"refs/heads/{pipeline.release_branch}"


def after_pipeline(ctx: ReleaseContext, *, sha: str, ref: str | None, passed: bool,
                   dirty: bool = False) -> list[DeployResult]:
    """Continuous deployment: after a passing pipeline on the release branch, deploy `sha` through the chain.

    Deploys each `mode: deployment` environment in order and stops at the first
    delivery environment (it waits for an approval, and nothing after it may
    skip it) or at the first deploy that does not succeed. Every deploy still
    goes through `deploy`, so its gates are checked again (stages from the ledger
    or GitHub, not the `passed` flag alone). Nothing happens off the release
    branch, on a failed pipeline, or for a dirty work tree.
    """
    if not passed or dirty or not is_release_ref(ctx.pipeline, ref):
        return []
    results: list[DeployResult] = []
    for env in ctx.pipeline.environments:
        if env.mode != "deployment":
            ctx.say(f"cdkit: {env.name} is in delivery mode: {sha[:12]} waits for an approval there")
            break
        try:
            result = deploy(ctx, env.name, sha)
        except GateFailed as exc:
            result = DeployResult(env.name, sha, REFUSED, reasons=(str(exc),))
            ctx.say(f"cdkit: {exc}")
        results.append(result)
        if not result.ok:
            break
    return results


def deploy_if_approved(ctx: ReleaseContext, environment: str, sha: str) -> DeployResult:
    """Delivery mode: deploy `sha` to `environment` when its approval now holds (the review and `release check` path).

    Returns a `waiting` result (not an exception) when only the approval is missing,
    so an event handler can say so without failing the workflow; any other refusal
    (a failed stage, a busy environment, a SHA off the release branch) is `refused`.
    """
    try:
        return deploy(ctx, environment, sha)
    except Refused as exc:
        return DeployResult(environment, sha, WAITING if exc.only_approval else REFUSED, reasons=(str(exc),))
    except GateFailed as exc:
        return DeployResult(environment, sha, REFUSED, reasons=(str(exc),))
