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
6. no other deploy to this environment is in progress;
7. no freeze window holds the environment (`windows:`), unless a break-glass deploy has its approvals.

Any failed check refuses the deploy with every reason (fail closed). A deploy
that starts is recorded in the ledger whatever happens: success, failure,
timeout, cancellation, or a crash found later by the next deploy.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cdkit import git
from cdkit.approval import Decision, Facts, Identity, Review, evaluate
from cdkit.people import CommitPeople, ReleasePeople, coauthors, release_people
from cdkit.config import Environment, Pipeline, Stage, Verify, decode_config, load_text
from cdkit.deploylock import EnvironmentLock, LockBusy
from cdkit.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CdkitError, ConfigError, GateFailed, UsageError
from cdkit.ledger import ADOPTED, FORCED_REASON_PREFIX, LIVE_STATUSES, Ledger
from cdkit.plan import NOT_JUDGED_PREFIXES, PATHS_SKIP_PREFIX
from cdkit.runner import cancel_on_signals, pump_output, signal_group
from cdkit.credentials import without_credentials

DEFAULT_DEPLOY_TIMEOUT = 3600.0
DEFAULT_KILL_GRACE = 5.0
LOCAL_VIA = "local"
BREAK_GLASS_VIA = "break-glass"  # how `cdkit approve --break-glass` records its approvals (never a normal one)
REVOKED_VIA = "revocation"  # how `cdkit approve --revoke` records the withdrawal of a local approval
_KIND_WORDS = {LOCAL_VIA: "approval", BREAK_GLASS_VIA: "break-glass approval"}

# What a deploy ends as. `unchanged`: the environment already runs the SHA; `refused`: a gate said no.
SUCCESS, FAILURE, CANCELLED, TIMED_OUT, CRASHED = "success", "failure", "cancelled", "timed_out", "crashed"
UNCHANGED, REFUSED, WAITING = "unchanged", "refused", "waiting"
# With a `verify:` check, a deploy whose command succeeded ends verified, or failed verification.
VERIFIED, VERIFICATION_FAILED = "verified", "verification_failed"
# What a deployment that the environment can be trusted to run ends as (none configured: deployed).
GOOD = frozenset({SUCCESS, VERIFIED})
# A SHA whose deploy ended so is the SHA's fault (not an interruption): it is quarantined there.
QUARANTINING = frozenset({FAILURE, TIMED_OUT, VERIFICATION_FAILED})

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


@dataclass(frozen=True)
class Adoption:
    """The start of an environment's record: what it ran before cdkit (`cdkit adopt`), or its first deployment.

    `adopted` False: the record starts with a deployment, not an adoption (GitHub's first_deployment).
    """

    sha: str | None  # None: it runs nothing (cdkit adopt --empty)
    adopted: bool = True
    where: str = ""  # "deployment #3", "GitHub deployment 17"
    by: str | None = None
    reason: str | None = None


class Remote(Protocol):
    """The GitHub side of a release (see `cdkit.release_github`); None offline."""

    def stage_verdicts(self, sha: str, *, wanted: Iterable[str] | None = None) -> dict[str, StageVerdict]: ...
    def current_sha(self, environment: str) -> str | None: ...
    def has_deployed(self, environment: str, sha: str) -> bool: ...
    def verified_since(self, environment: str, sha: str) -> tuple[float, float | None] | None: ...
    def quarantine_reason(self, environment: str, sha: str) -> str | None: ...
    def last_good_sha(self, environment: str, *, besides: str) -> str | None: ...
    def deploy_in_progress(self, environment: str) -> str | None: ...
    def preflight(self, environment: Environment) -> None: ...
    def approval(self, environment: Environment, sha: str, people: Callable[[], ReleasePeople]) -> Decision: ...
    def commit_people(self, base: str | None, head: str,
                      commits: tuple[CommitPeople, ...]) -> tuple[CommitPeople, ...]: ...
    def first_deployment(self, environment: str) -> Adoption | None: ...
    def adopt(self, environment: Environment, sha: str | None, *, payload: dict[str, Any], placeholder: str) -> int: ...
    def start_deployment(self, environment: Environment, sha: str, *, payload: dict[str, Any],
                         rollback: bool) -> int | None: ...
    def finish_deployment(self, github_id: int, environment: Environment, state: str, *,
                          log_url: str | None, description: str | None = None) -> None: ...
    def current_governed_by(self, environment: str) -> str | None: ...
    def with_rules(self, pipeline: Pipeline) -> Remote: ...


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
    # Set by `governed`: the committed pipeline whose rules this context applies (then `pipeline` is that one),
    # and the work tree's pipeline it replaced (for saying what would change once it is released).
    governing: Governing | None = None
    work_tree: Pipeline | None = None


@dataclass(frozen=True)
class Check:
    """The outcome of the preconditions for one environment and SHA, before any deploy."""

    environment: str
    sha: str
    problems: tuple[str, ...]
    decision: Decision | None  # None in deployment mode
    current: str | None  # what the environment runs now
    rollback: bool
    window_problems: tuple[str, ...] = ()  # the problems that are a window holding deploys (they wait)
    window: dict[str, Any] | None = None  # cdkit.windows.Verdict.as_data(), when the environment has windows
    break_glass: dict[str, Any] | None = None  # a --break-glass deploy's approved record (see _break_glass_record)
    governed_by: dict[str, str] | None = None  # Governing.as_data(): whose committed rules decided
    pending: str | None = None  # how the work tree's pipeline would change the rules, once released

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
    quarantined: bool = False  # this deploy's failure quarantined its SHA for the environment
    automatic_rollback: DeployResult | None = None  # on_failure: rollback, when it ran
    break_glass: dict[str, Any] | None = None  # this deploy broke a window: who approved it, why, which window
    window: dict[str, Any] | None = None  # waiting: the window that holds the environment
    governed_by: dict[str, str] | None = None  # Governing.as_data(): the committed pipeline whose rules decided

    @property
    def ok(self) -> bool:
        return self.status in (SUCCESS, VERIFIED, UNCHANGED)

    @property
    def exit_code(self) -> int:
        """0 deployed (or nothing to do, or waiting for a window to end), 130 interrupted, 1 anything else."""
        if self.ok or (self.status == WAITING and self.window is not None):
            return EXIT_OK
        return EXIT_INTERRUPTED if self.status == CANCELLED else EXIT_FAILED

    def summary(self) -> str:
        """What happened, in one line (the job summary's)."""
        why = f" ({self.reasons[0]})" if self.reasons and not self.ok else ""
        line = f"{self.environment}: {self.sha[:12]} {self.status.replace('_', ' ')}{why}"
        if self.break_glass:
            line += f"; BREAK-GLASS into {self.break_glass['window']}"
        if self.quarantined:
            line += f"; {self.sha[:12]} is quarantined for {self.environment}"
        back = self.automatic_rollback
        if back is not None:
            line += (f"; rolled back to {back.sha[:12]} ({back.status.replace('_', ' ')})" if back.status != REFUSED
                     else f"; no automatic rollback: {back.reasons[0] if back.reasons else 'refused'}")
        return line

    def as_data(self) -> dict[str, Any]:
        return {
            "environment": self.environment, "sha": self.sha, "status": self.status, "rollback": self.rollback,
            "deployed": self.ok, "deployment_id": self.deployment_id, "log": self.log_path,
            "approval": self.approval, "reasons": list(self.reasons), "github_deployment_id": self.github_id,
            "quarantined": self.quarantined, "summary": self.summary(),
            "automatic_rollback": self.automatic_rollback.as_data() if self.automatic_rollback else None,
            "break_glass": self.break_glass, "window": self.window, "governed_by": self.governed_by,
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
        verdict = combined_verdicts(ctx, ancestor, [stage.name]).get(stage.name)
        if verdict is None or (verdict.status == "skipped" and verdict.reason.startswith(PATHS_SKIP_PREFIX)):
            continue
        if verdict.status == "passed":
            return None
        return (f"stage {stage.name!r} was skipped on {sha[:12]} by its paths, but it {verdict.status} on "
                f"{ancestor[:12]}, which has the same files under them; fix it and run the pipeline again")
    return (f"stage {stage.name!r} was skipped on {sha[:12]} by its paths, and no earlier commit with the same "
            f"files under them passed it; run it on this commit: cdkit run --head {sha[:12]} --stage {stage.name}")


def combined_verdicts(ctx: ReleaseContext, sha: str, wanted: Iterable[str]) -> dict[str, StageVerdict]:
    """The ledger's verdicts, completed by GitHub's checks for stages the ledger has no result for.

    GitHub is asked only when a `wanted` stage has no result in the ledger: in the CI job
    that ran the stages, their results are first-hand (the check runs it posted say the same),
    so its gate reads none back.
    """
    verdicts = ledger_stage_verdicts(ctx.ledger, sha, in_ci=ctx.environ.get("GITHUB_ACTIONS") == "true")
    missing = [name for name in wanted if name not in verdicts]
    if ctx.remote is not None and missing:
        for name, verdict in ctx.remote.stage_verdicts(sha, wanted=missing).items():
            verdicts.setdefault(name, verdict)
    return verdicts


def current_sha(ctx: ReleaseContext, environment: str) -> str | None:
    """What `environment` runs now: GitHub's newest good cdkit deployment, else the ledger's (or its adoption)."""
    if ctx.remote is not None:
        remote = ctx.remote.current_sha(environment)
        if remote is not None:
            return remote
    record = ctx.ledger.current_deployment(environment)
    return str(record["sha"]) or None if record else None  # "": adopted as running nothing


def adoption(ctx: ReleaseContext, environment: str) -> Adoption | None:
    """The environment's adoption (`cdkit adopt`), from the ledger or GitHub; None when it was never adopted."""
    record = ctx.ledger.adoption(environment)
    if record is not None:
        return Adoption(str(record["sha"]) or None, where=f"deployment #{record['id']}", by=record["deployed_by"],
                        reason=record["reason"])
    start = ctx.remote.first_deployment(environment) if ctx.remote is not None else None
    return start if start is not None and start.adopted else None


def runs_adopted(ctx: ReleaseContext, environment: str, sha: str) -> bool:
    """Whether what `environment` runs, `sha`, is known only from its adoption (cdkit never deployed it there)."""
    record = ctx.ledger.current_deployment(environment)
    if record is not None:
        return bool(record["status"] == ADOPTED and record["sha"] == sha)
    found = adoption(ctx, environment)
    return found is not None and found.sha == sha


def has_deployed(ctx: ReleaseContext, environment: str, sha: str) -> bool:
    """Whether `sha` was deployed to `environment` and verified there (or deployed, where nothing verifies)."""
    return verified_since(ctx, environment, sha) is not None


def verified_since(ctx: ReleaseContext, environment: str, sha: str) -> tuple[float, float | None] | None:
    """When `sha` last became verified in `environment`, and until when it ran there (None: it still does).

    None when it never was: a deploy whose verification failed, or that failed, says
    nothing good about it.
    """
    history = ctx.ledger.deployments(environment=environment)
    for i in range(len(history) - 1, -1, -1):
        record = history[i]
        if record["sha"] != sha or record["status"] not in GOOD:
            continue
        replaced = next((d["finished_at"] for d in history[i + 1:] if d["status"] in LIVE_STATUSES), None)
        return float(record["finished_at"] or record["started_at"]), replaced
    return ctx.remote.verified_since(environment, sha) if ctx.remote is not None else None


def quarantine_reason(ctx: ReleaseContext, environment: str, sha: str) -> str | None:
    """Why `sha` is quarantined for `environment` (it failed there, or was rolled back from), or None."""
    record = ctx.ledger.quarantined(environment).get(sha)
    if record is not None:
        return str(record["reason"])
    return ctx.remote.quarantine_reason(environment, sha) if ctx.remote is not None else None


def last_good_sha(ctx: ReleaseContext, environment: str, *, besides: str) -> str | None:
    """The SHA to roll `environment` back to: the last one verified there, other than `besides`, not quarantined."""
    quarantined = ctx.ledger.quarantined(environment)
    for record in reversed(ctx.ledger.deployments(environment=environment)):
        # What it ran before cdkit (its adoption) is where it can go back to, though cdkit never verified it.
        good = record["status"] in GOOD or (record["status"] == ADOPTED and record["sha"])
        if good and record["sha"] != besides and record["sha"] not in quarantined:
            return str(record["sha"])
    return ctx.remote.last_good_sha(environment, besides=besides) if ctx.remote is not None else None


def parse_local_identity(text: str) -> Identity:
    """`Name <email>` as recorded by `cdkit approve` -> an Identity."""
    if text.endswith(">") and " <" in text:
        name, email = text[:-1].rsplit(" <", 1)
        return Identity(name=name, email=email)
    return Identity(name=text)


def format_local_identity(name: str, email: str) -> str:
    return f"{name} <{email}>"


class NoBaseline(GateFailed):
    """An environment cdkit never deployed to and nobody adopted: its release range would be the whole history."""


def release_base(ctx: ReleaseContext, environment: str, sha: str) -> str | None:
    """Where the release range of `sha` to `environment` starts (the people rules judge what it adds).

    What the environment runs now (deployed, or adopted by `cdkit adopt`) when `sha` is newer.
    For `sha` it runs already, or an older one (a rollback), the range it was released with:
    from the newest commit the environment ran before that is an ancestor of `sha` (else from
    `sha`'s first parent), so its own authors never become eligible by its being deployed.
    None (the whole history, knowingly) only for an environment adopted as running nothing
    (`cdkit adopt --empty`). Fails closed: an environment with no deployment and no adoption
    (NoBaseline), or one whose current commit this clone lacks, has no range.
    """
    current = current_sha(ctx, environment)
    if current is None:
        if len(git.first_parents(sha, limit=2, cwd=ctx.root)) == 1:
            return None  # a root commit: its range is itself, whatever the environment ran, so nothing is guessed
        if adoption(ctx, environment) is not None:
            return None  # adopted as running nothing: the first release starts from the root, on purpose
        raise NoBaseline(
            f"{environment} has no deployment and was never adopted, so cdkit cannot tell what the release of "
            f"{sha[:12]} adds, nor who may approve it (it never takes the whole history silently): record what "
            f"{environment} runs now with `cdkit adopt --env {environment} --sha SHA` (the range starts there), "
            f"or `cdkit adopt --env {environment} --empty` if it runs nothing yet (the range is then the whole "
            "history, knowingly)")
    if not git.commit_exists(current, cwd=ctx.root):
        raise GateFailed(f"{environment} runs {current[:12]}, which is not in this repository, so cdkit cannot tell "
                         f"what the release of {sha[:12]} adds (git fetch the release branch's history, e.g. "
                         "fetch-depth: 0)")
    if current != sha and git.is_ancestor(current, sha, cwd=ctx.root):
        return current
    return _earlier_release(ctx, environment, sha)


def _earlier_release(ctx: ReleaseContext, environment: str, sha: str) -> str | None:
    """The newest commit `environment` ran (by the ledger) that is a strict ancestor of `sha`, else its first parent."""
    seen = {sha}
    for record in reversed(ctx.ledger.deployments(environment=environment)):
        ran = str(record["sha"])
        if record["status"] not in LIVE_STATUSES or ran in seen or not ran:
            continue
        seen.add(ran)
        if git.commit_exists(ran, cwd=ctx.root) and git.is_ancestor(ran, sha, cwd=ctx.root):
            return ran
    parents = git.first_parents(sha, limit=2, cwd=ctx.root)
    return parents[1] if len(parents) > 1 else None


def release_commits(ctx: ReleaseContext, base: str | None, sha: str) -> tuple[CommitPeople, ...]:
    """Every commit the release adds (from git: no cap), with its git author, committer and co-authors."""
    messages = git.commit_messages(base, sha, cwd=ctx.root)
    return tuple(
        CommitPeople(sha=c.sha, author=Identity(name=c.author_name, email=c.author_email),
                     committer=Identity(name=c.committer_name, email=c.committer_email),
                     coauthors=coauthors(messages.get(c.sha, "")))
        for c in git.commits_in_range(base, sha, cwd=ctx.root)
    )


def gather_people(ctx: ReleaseContext, environment: str, sha: str, *, github: bool = True) -> ReleasePeople:
    """Who wrote, brought in or pushed what this release adds (from `release_base`: NoBaseline without one).

    With GitHub (`github` and a remote), each commit also gets its linked accounts, the
    pull requests that brought it in and its recorded direct pushers, and commits none of
    those identify are listed as unidentified.
    """
    return people_when_asked(ctx, environment, sha, github=github)()


def people_when_asked(ctx: ReleaseContext, environment: str, sha: str, *,
                      github: bool = True) -> Callable[[], ReleasePeople]:
    """`gather_people`, with the range found now and GitHub asked only when the result is called for.

    The range (and its baseline, which may be missing: that fails now, with how to fix it)
    comes from git and the deployments already read. Who each commit's accounts, pull
    requests and pushers are costs requests per commit, and matters only to an approval
    that would count: a gate with nobody approving yet does not ask.
    """
    base = release_base(ctx, environment, sha)
    commits = release_commits(ctx, base, sha)
    remote = ctx.remote if github else None
    if remote is None:
        return lambda: release_people(commits, accounts_known=False)
    return lambda: release_people(remote.commit_people(base, sha, commits), accounts_known=True)


def people_if_approved(reviews: Sequence[Review], people: Callable[[], ReleasePeople], required: int) -> ReleasePeople:
    """Who may not approve, read only when someone approved: without an approval nothing counts anyway.

    The rules about people only ever take approvals away (and a commit nobody identifies
    blocks only an approval that would count), so a gate with no approving review has the
    same answer without them, and spares the requests per released commit they cost.
    """
    if required < 1 or any(review.normalized_state == "APPROVED" for review in reviews):
        return people()
    return ReleasePeople()


def release_range_people(ctx: ReleaseContext, environment: str, sha: str) -> tuple[Identity, ...]:
    """Authors, committers and co-authors of what this release adds, as git knows them."""
    return tuple(e.person for e in gather_people(ctx, environment, sha, github=False).excluded)


def local_reviews(ledger: Ledger, environment: str, sha: str) -> tuple[Review, ...]:
    """The ledger's local approvals of `sha` for `environment`, as recorded (not verified: see `signed_reviews`)."""
    return tuple(_local_review(a) for a in ledger.standing_approvals(sha=sha, environment=environment, via=LOCAL_VIA))


def _local_review(row: Mapping[str, Any], reviewer: Identity | None = None) -> Review:
    return Review(reviewer=reviewer or parse_local_identity(row["approver"]), state="APPROVED", commit_id=row["sha"],
                  submitted_at=float(row["created_at"]), id=int(row["id"]), comment=row["comment"], via=row["via"])


@dataclass(frozen=True)
class Governing:
    """The committed pipeline whose rules govern deploying to an environment: what it runs now, or the tip."""

    sha: str
    path: str  # the pipeline file inside the repository
    why: str  # "what prod runs now", "the tip of main (prod runs nothing yet)"
    environment: str = ""

    @property
    def label(self) -> str:
        return f"{self.path}@{self.sha}"

    @property
    def short(self) -> str:
        return f"{self.path}@{self.sha[:12]}"

    @property
    def record(self) -> str:
        """What the ledger's `governed_by` keeps for a deployment: path@sha (why)."""
        return f"{self.label} ({self.why})"

    def as_data(self) -> dict[str, str]:
        return {"path": self.path, "sha": self.sha, "why": self.why}


# A ledger's `governed_by` (path@sha, then anything) read back: which rules governed a recorded deployment.
_RECORDED = re.compile(r"^(?P<path>[^@\n]+)@(?P<sha>[0-9a-f]{40})\b")


def config_path_in_repo(ctx: ReleaseContext) -> str:
    """The pipeline file's path inside the repository (what `git show <sha>:<path>` reads)."""
    if ctx.governing is not None:
        return ctx.governing.path
    path = Path(ctx.pipeline.path.split(" at ", 1)[0])
    try:
        return (path if path.is_absolute() else Path.cwd() / path).resolve().relative_to(
            ctx.root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def governing_commit(ctx: ReleaseContext, environment: str) -> Governing:
    """Whose committed rules govern a deploy to `environment` (see `governed`)."""
    if ctx.governing is not None and ctx.governing.environment == environment:
        return ctx.governing
    return _resolve_governing(ctx, environment)[0]


def _pipeline_at(ctx: ReleaseContext, sha: str, path: str) -> tuple[Pipeline | None, str]:
    """The pipeline committed at `sha`, read with the work tree's loader and validator; else (None, what is wrong)."""
    raw = git.file_at(sha, path, cwd=ctx.root)
    if raw is None:
        return None, "has no pipeline file"
    name = f"{path} at {sha[:12]}"
    try:
        return load_text(decode_config(raw, name), name), ""
    except ConfigError as exc:
        return None, "is invalid: " + "; ".join(exc.messages)


def _recorded_rules(ctx: ReleaseContext, environment: str, current: str) -> str | None:
    """path@sha of the rules that governed the deployment that put `current` in `environment`, if recorded."""
    record = ctx.ledger.current_deployment(environment)
    if record is not None and record["sha"] == current and record.get("governed_by"):
        return str(record["governed_by"])
    return ctx.remote.current_governed_by(environment) if ctx.remote is not None else None


def _resolve_governing(ctx: ReleaseContext, environment: str) -> tuple[Governing, Pipeline]:
    """(whose rules govern a deploy to `environment`, that committed pipeline); GateFailed when none can.

    1. what the environment runs now, when its committed pipeline defines the environment;
    2. else the pipeline that governed the deployment of what it runs (recorded in the ledger
       or cdkit's GitHub deployment): a commit that drops or breaks the environment's entry
       leaves the rules it was released under in force;
    3. else (nothing deployed yet, or an adopted commit older than its pipeline and no
       recorded rules) the release branch tip: the environment's first introduction.

    Never the work tree, nor the commit being released (unless it is that tip): a change
    to the rules takes effect once it has itself been released under the rules before it.
    A missing or invalid pipeline where the rules must come from fails closed.
    """
    path = config_path_in_repo(ctx)
    current = current_sha(ctx, environment)
    first = f"{environment} runs nothing yet"
    if current is not None:
        if not git.commit_exists(current, cwd=ctx.root):
            raise GateFailed(f"{environment} runs {current[:12]}, which is not in this repository, so cdkit cannot read "
                             f"the rules that govern it ({path} as committed there): fetch the release branch's "
                             "history (fetch-depth: 0)")
        if runs_adopted(ctx, environment, current):
            # Adopted: cdkit never released what it runs, so no rules of cdkit's were ever in force there (its
            # pipeline file may not exist, or not name the environment). Its first deploy is governed like any
            # environment's first, by the tip; from then on what it runs governs.
            first = f"{environment} runs {current[:12]}, what it was adopted with"
        else:
            pipeline, wrong = _pipeline_at(ctx, current, path)
            if pipeline is not None and pipeline.environment(environment) is not None:
                return Governing(current, path, f"what {environment} runs now", environment), pipeline
            wrong = wrong or f"does not define {environment}"
            recorded = _recorded_rules(ctx, environment, current)
            if recorded is not None:
                return _recorded_governing(ctx, environment, current, recorded, f"{path}@{current[:12]} {wrong}")
            if pipeline is None and wrong.startswith("is invalid"):
                raise GateFailed(f"{environment} runs {current[:12]}, whose {path} (the rules that govern {environment} "
                                 f"now) {wrong}; no deployment recorded the rules it was released under, so nothing "
                                 f"says what a deploy to {environment} needs: refusing (fail closed). Roll {environment} "
                                 "back by hand to a commit with a valid pipeline, or restore the rules that released it")
            first = f"{environment} runs {current[:12]}, whose {path} {wrong}, and no deployment recorded its rules"
    branch = ctx.pipeline.release_branch
    tip = git.branch_tip(branch, cwd=ctx.root)
    if tip is None:
        raise GateFailed(f"{first}, and the release branch {branch!r} is not in this repository, whose tip's "
                         f"{path} would govern the deploy (git fetch origin {branch})")
    pipeline, wrong = _pipeline_at(ctx, tip, path)
    where = f"{path}@{tip[:12]} (the tip of {branch}; {first})"
    if pipeline is None:
        raise GateFailed(f"{where} {wrong}, so nothing committed says what a deploy to {environment} needs: "
                         f"commit a valid {path} to {branch} (check it with cdkit validate) and deploy again")
    if pipeline.environment(environment) is None:
        known = ", ".join(e.name for e in pipeline.environments) or "none"
        raise GateFailed(f"{environment} is not defined in {where} (environments there: {known}); an environment is "
                         f"governed by committed rules only: commit its entry in {path} to {branch}, then deploy")
    if pipeline.release_branch != branch:
        raise GateFailed(f"{where} names the release branch {pipeline.release_branch!r}, not {branch!r}: make the "
                         "work tree's release_branch agree with the committed one")
    return Governing(tip, path, f"the tip of {branch} ({first})", environment), pipeline


def _recorded_governing(ctx: ReleaseContext, environment: str, current: str, recorded: str,
                        own: str) -> tuple[Governing, Pipeline]:
    match = _RECORDED.match(recorded)
    pipeline = None
    wrong = f"is not a path@sha ({recorded!r})"
    if match is not None and git.commit_exists(match["sha"], cwd=ctx.root):
        pipeline, wrong = _pipeline_at(ctx, match["sha"], match["path"])
        if pipeline is not None and pipeline.environment(environment) is None:
            pipeline, wrong = None, f"does not define {environment}"
    elif match is not None:
        wrong = "is not in this repository (fetch the release branch's history, fetch-depth: 0)"
    if pipeline is None or match is None:
        raise GateFailed(f"{own}, and the rules recorded for its deployment to {environment} ({recorded}) {wrong}: "
                         f"nothing says what a deploy to {environment} needs, so cdkit refuses (fail closed)")
    why = f"the rules {current[:12]} was released to {environment} under ({own})"
    return Governing(match["sha"], match["path"], why, environment), pipeline


@dataclass(frozen=True)
class Governed:
    """A release context that applies the governing rules of one environment (see `governed`)."""

    ctx: ReleaseContext  # pipeline (and the remote's evidence rules) replaced by the governing pipeline
    env: Environment  # the environment as the governing pipeline defines it
    governing: Governing
    pending: str | None  # what the work tree's pipeline would change about these rules, once released


def governed(ctx: ReleaseContext, environment: str) -> Governed:
    """`ctx` with the rules that govern deploying to `environment`: the committed pipeline of what it runs now.

    Everything the gate decides comes from it: required stages, mode, approval rules, the
    chain and its order and soak, windows, break-glass, verify and on_failure, whose
    evidence counts, the release branch, and the deploy and verify commands themselves
    (a commit could otherwise rewrite `deploy:` and run anything where it deploys).
    """
    if ctx.governing is not None and ctx.governing.environment == environment:
        env = find_environment(ctx.pipeline, environment)
        work = ctx.work_tree or ctx.pipeline
        return Governed(ctx, env, ctx.governing, pending_changes(work, ctx.pipeline, environment, ctx.governing))
    work = ctx.work_tree or ctx.pipeline
    governing, pipeline = _resolve_governing(dataclasses.replace(ctx, pipeline=work, governing=None), environment)
    remote = ctx.remote.with_rules(pipeline) if ctx.remote is not None else None
    new = dataclasses.replace(ctx, pipeline=pipeline, remote=remote, governing=governing, work_tree=work)
    env = find_environment(pipeline, environment)
    return Governed(new, env, governing, pending_changes(work, pipeline, environment, governing))


def _environment_rules(pipeline: Pipeline, name: str) -> dict[str, Any]:
    """What about `name`'s rules matters to the gate, field by field, for comparing two pipelines."""
    env = pipeline.environment(name)
    if env is None:
        return {"the environment": "absent"}
    index = pipeline.environments.index(env)
    rules: dict[str, Any] = {
        "mode": env.mode, "deploy": env.deploy, "verify": env.verify, "on_failure": env.on_failure,
        "soak": env.soak, "windows": env.windows, "break_glass": env.break_glass,
        "break_glass.signed": env.break_glass_signed,
        "env_passthrough": env.env_passthrough,
        "the environment before it": pipeline.environments[index - 1].name if index else None,
        "release_branch": pipeline.release_branch, "evidence": pipeline.evidence,
        "required stages": tuple((s.name, s.run) for s in required_stages(pipeline)),
    }
    if env.mode == "delivery":
        rules.update({f"approval.{k}": v for k, v in env.approval._asdict().items()})
    return rules


def pending_changes(work: Pipeline, governing: Pipeline, name: str, rules: Governing) -> str | None:
    """One line when the work tree's pipeline changes what governs `name` (None when it does not)."""
    if work is governing:
        return None
    now, then = _environment_rules(governing, name), _environment_rules(work, name)
    changed = [key for key in (*now, *(k for k in then if k not in now)) if now.get(key) != then.get(key)]
    if "mode" in changed:  # the approval rules come and go with delivery mode: the mode says it
        changed = [key for key in changed if not key.startswith("approval.")]
    if not changed:
        return None
    shown = []
    for key in changed[:4]:
        value = then.get(key)
        if key == "the environment":
            shown.append(f"removes {name}")
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool) and key not in ("deploy",):
            shown.append(f"{key} to {value}")
        else:
            shown.append(key)
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    file = rules.path
    return (f"the work tree's {file} changes {name}'s {', '.join(shown)}{more}; it governs {name} once it is "
            f"released there (now governed by {rules.short}, {rules.why})")


def signed_reviews(ctx: ReleaseContext, env: Environment, sha: str, governing: Governing, *,
                   via: str = LOCAL_VIA) -> tuple[tuple[Review, ...], tuple[str, ...]]:
    """The approvals recorded `via` whose signatures verify, and why each other one does not count.

    A signature counts when `.cdkit/allowed_signers` as committed in the governing commit
    has the key that made it, its message is of this kind (an approval, or a break-glass
    approval: `via`) and names this repository, SHA, environment and the recorded approver,
    and the approver's email is the key's principal. The approver is then that principal.
    Unsigned, every recorded approval counts as written: `approval.signed: false` for
    approvals, `break_glass.signed: false` for break-glass ones.
    """
    from cdkit import signing

    rows = ctx.ledger.standing_approvals(sha=sha, environment=env.name, via=via)  # revoked ones never count
    if not (env.break_glass_signed if via == BREAK_GLASS_VIA else env.approval.signed):
        return tuple(_local_review(a) for a in rows), ()
    allowed = signing.allowed_signers_at(ctx.root, governing.sha) if rows else None
    where = f"{signing.ALLOWED_SIGNERS} at {governing.sha[:12]} ({governing.why})"
    repository = signing.repository_id(ctx.root, ctx.environ) if rows else ""
    reviews: list[Review] = []
    refused: list[str] = []
    for row in rows:
        who = row["approver"]
        try:
            reviewer = verified_approver(row, allowed, where, repository=repository, sha=sha, environment=env.name,
                                         via=via)
        except signing.SignatureProblem as exc:
            refused.append(f"{who}'s {_KIND_WORDS[via]} does not count: {exc}")
            continue
        reviews.append(_local_review(row, reviewer))
    return tuple(reviews), tuple(refused)


def verified_approver(row: Mapping[str, Any], allowed: str | None, where: str, *, repository: str, sha: str,
                      environment: str, via: str = LOCAL_VIA) -> Identity:
    from cdkit import signing

    kind = signing.BREAK_GLASS if via == BREAK_GLASS_VIA else signing.APPROVAL
    if not row.get("signature") or not row.get("signed_message"):
        switch = "break_glass.signed" if kind == signing.BREAK_GLASS else "approval.signed"
        again = "cdkit approve --break-glass" if kind == signing.BREAK_GLASS else "cdkit approve"
        raise signing.SignatureProblem(
            f"it is not signed, and {switch} is on: approve again with an SSH signing key (git config "
            f"gpg.format ssh and user.signingkey, or {again} --key PATH), or set {switch}: false "
            "(such approvals are then advisory)")
    if allowed is None:
        raise signing.SignatureProblem(f"there is no {where}: commit one with each approver's key (the format of "
                                       "git's gpg.ssh.allowedSignersFile) and release it")
    fields = signing.parse_message(str(row["signed_message"]), kind)
    expected = {"repository": repository, "sha": sha, "environment": environment, "approver": str(row["approver"])}
    wrong = [f"{name} {fields.get(name)!r}, not {value!r}" for name, value in expected.items()
             if fields is not None and fields.get(name, "").casefold() != value.casefold()]
    if fields is None or wrong:
        raise signing.SignatureProblem("its signed message is for another approval (" +
                                       ("; ".join(wrong) if wrong else f"not a cdkit {_KIND_WORDS[via]}") + ")")
    principal = signing.verify(str(row["signed_message"]), str(row["signature"]), allowed, where=where, kind=kind)
    recorded = parse_local_identity(str(row["approver"]))
    if (recorded.email or "").casefold() != principal.casefold():
        raise signing.SignatureProblem(f"it is signed by {principal}'s key, not by {recorded.email or recorded.display}")
    return recorded


def run_people(ctx: ReleaseContext) -> tuple[Identity | None, Identity | None]:
    """In Actions, the run's actor and triggering actor (for `Facts`); nobody elsewhere."""
    if ctx.environ.get("GITHUB_ACTIONS") != "true":
        return None, None
    actor, triggering = ctx.environ.get("GITHUB_ACTOR"), ctx.environ.get("GITHUB_TRIGGERING_ACTOR")
    return Identity(login=actor) if actor else None, Identity(login=triggering) if triggering else None


def local_facts(ctx: ReleaseContext, env: Environment, sha: str, reviews: tuple[Review, ...],
                required: int | None = None) -> Facts:
    """`via: local`: the approvers are git identities, so they are compared with the commits' git identities.

    Emails compare without GitHub, so nothing is "unidentified" here; with GitHub, the
    pull-request authors and pushers are excluded too (matched when the approver's email
    is linked to their account on one of the released commits).
    """
    required = env.approval.required if required is None else required
    people = people_if_approved(reviews, people_when_asked(ctx, env.name, sha), required)
    actor, triggering = run_people(ctx)
    reviews = tuple(dataclasses.replace(r, reviewer=people.account_of(r.reviewer)) for r in reviews)
    return Facts(sha=sha, required=required, reviews=reviews,
                 reviewers=env.approval.reviewers, excluded=people.excluded, actor=actor,
                 triggering_actor=triggering, expires=env.approval.expires, now=ctx.ledger.clock())


def local_decision(ctx: ReleaseContext, env: Environment, sha: str, governing: Governing | None = None) -> Decision:
    """The `via: local` policy from the ledger's signed approvals, with the same rules as a PR review."""
    governing = governing or governing_commit(ctx, env.name)
    reviews, refused = signed_reviews(ctx, env, sha, governing)
    decision = evaluate(local_facts(ctx, env, sha, reviews))
    return dataclasses.replace(decision, reasons=(*refused, *decision.reasons))


def approval_decision(ctx: ReleaseContext, env: Environment, sha: str) -> Decision:
    if env.approval.via == LOCAL_VIA:
        return local_decision(ctx, env, sha)
    if ctx.remote is None:
        how = "pull-request reviews" if env.approval.via == "review" else "the GitHub environment's reviewers"
        return Decision(False, (
            f"{env.name} is approved through {how} (approval.via: {env.approval.via}), which needs GitHub: "
            "run this in the cdkit Action, or set GITHUB_TOKEN and GITHUB_REPOSITORY",), ())
    return ctx.remote.approval(env, sha, people_when_asked(ctx, env.name, sha))


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
    """Promotion in order: the environment before this one ran `sha` verified, does not quarantine it, soaked it."""
    previous = _previous(ctx.pipeline, env)
    if previous is None:
        return []
    quarantined = quarantine_reason(ctx, previous.name, sha)
    if quarantined:
        return [f"{env.name} comes after {previous.name}, where {sha[:12]} is quarantined ({quarantined}); "
                "deploy a newer commit"]
    since = verified_since(ctx, previous.name, sha)
    if since is None:
        verified = " and verified it" if previous.verify is not None else ""
        return [f"{env.name} comes after {previous.name}, which has not run {sha[:12]}{verified} yet; "
                f"deploy it there first (cdkit deploy --env {previous.name} --sha {sha[:12]})"]
    if previous.soak:
        start, end = since
        ran = (end if end is not None else ctx.ledger.clock()) - start
        if ran < previous.soak:
            still = "" if end is None else f", and it was replaced there after {_duration(ran)}"
            return [f"{env.name} comes after {previous.name}, where {sha[:12]} must run verified for "
                    f"{_duration(previous.soak)} (soak) before it is promoted; it has run {_duration(ran)}{still}"]
    return []


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"


def _quarantine_problems(ctx: ReleaseContext, env: Environment, sha: str, force: str | None) -> list[str]:
    reason = quarantine_reason(ctx, env.name, sha)
    if reason is None or force:
        return []
    return [f"{sha[:12]} is quarantined for {env.name} ({reason}): no automatic deploy picks it again; deploy a "
            f"newer commit, or, on purpose: cdkit deploy --env {env.name} --sha {sha[:12]} --force --reason TEXT"]


def check(ctx: ReleaseContext, env: Environment, sha: str, *, rollback: bool = False,
          force: str | None = None, break_glass: str | None = None) -> Check:
    """Every precondition for deploying `sha` to `env`, evaluated now (no side effects).

    `force` (a reason) lets a person deploy a SHA quarantined for `env`; nothing else.
    `break_glass` (a reason) lets a person deploy inside a window, with the break-glass approvals.
    """
    try:
        rules = governed(ctx, env.name)
    except GateFailed as exc:  # no committed rules say what a deploy here needs: nothing deploys
        return Check(env.name, sha, (str(exc),), None, current_sha(ctx, env.name), rollback)
    ctx, env = rules.ctx, rules.env
    wanted = [stage.name for stage in required_stages(ctx.pipeline)]
    problems = stage_problems(ctx.pipeline, sha, combined_verdicts(ctx, sha, wanted),
                              lambda stage: paths_skip_problem(ctx, stage, sha))
    decision = None
    if env.mode == "delivery":
        try:
            decision = approval_decision(ctx, env, sha)
        except NoBaseline as exc:  # no range to judge approvals by: refused (not waiting for an approval)
            problems.append(str(exc))
        else:
            if not decision.approved:
                problems.append(f"{sha[:12]} is not approved for {env.name}: " + "; ".join(decision.reasons)
                                + _how_to_approve(env, sha))
    problems += _branch_problems(ctx, sha)
    current = current_sha(ctx, env.name)
    problems += _order_problems(ctx, env, sha, current, rollback)
    problems += _quarantine_problems(ctx, env, sha, force)
    problems += _chain_problems(ctx, env, sha)
    held, window, glass = _window_problems(ctx, env, sha, rollback=rollback, break_glass=break_glass)
    return Check(env.name, sha, tuple(problems + held), decision, current, rollback, tuple(held), window, glass,
                 governed_by=rules.governing.as_data(), pending=rules.pending)


def _how_to_approve(env: Environment, sha: str) -> str:
    if env.approval.via == LOCAL_VIA:
        return f" (someone who did not write these commits runs: cdkit approve {sha[:12]} --env {env.name})"
    if env.approval.via == "review":
        return f" (approve the release pull request at this commit: cdkit release open --env {env.name})"
    return ""


# --- windows and break-glass ------------------------------------------------------------------



def window_verdict(ctx: ReleaseContext, env: Environment) -> dict[str, Any] | None:
    """Whether `env`'s windows hold deploys now (the ledger's clock), as data; None without windows.

    cdkit.windows (and croniter) is imported only for an environment that has windows.
    """
    if not env.windows:
        return None
    from cdkit import windows

    now = dt.datetime.fromtimestamp(ctx.ledger.clock(), dt.timezone.utc)
    return windows.evaluate(env.windows, now).as_data()


def _window_problems(ctx: ReleaseContext, env: Environment, sha: str, *, rollback: bool,
                     break_glass: str | None) -> tuple[list[str], dict[str, Any] | None, dict[str, Any] | None]:
    """(problems, the window verdict, the break-glass record) for deploying `sha` to `env` now.

    A rollback is never held: undoing a bad deploy is what a freeze must not prevent.
    A window's problem waits (the next run after it deploys the newest commit); a
    break-glass deploy lifts it with `break_glass.required` approvals of this SHA.
    """
    verdict = window_verdict(ctx, env)
    if break_glass is not None and (verdict is None or verdict["allowed"] or rollback):
        why = "a rollback is never held by a window" if rollback else f"no window holds {env.name} now"
        return [f"--break-glass: {why}; deploy without --break-glass"], verdict, None
    if verdict is None or verdict["allowed"] or rollback:
        return [], verdict, None
    held = f"{env.name} is held by a window: {verdict['message']}"
    if env.break_glass is None:
        return [f"{held}; it deploys then (this environment has no `break_glass:` policy, so nothing deploys "
                "into its windows)"], verdict, None
    how = (f"cdkit deploy --env {env.name} --sha {sha[:12]} --break-glass --reason TEXT, with "
           f"{env.break_glass} break-glass approval(s): cdkit approve {sha[:12]} --env {env.name} --break-glass")
    if break_glass is None:
        return [f"{held}; it deploys then, or now with {how}"], verdict, None
    decision = break_glass_decision(ctx, env, sha)
    if not decision.approved:
        return [f"{held}; break-glass needs {env.break_glass} break-glass approval(s) of {sha[:12]}: "
                + "; ".join(decision.reasons)
                + f" (someone else runs: cdkit approve {sha[:12]} --env {env.name} --break-glass)"], verdict, None
    record = {"window": verdict["window"], "held": verdict["message"], "reason": break_glass, "by": deployer(ctx),
              "required": env.break_glass, **decision.as_data()}
    return [], verdict, record


def break_glass_decision(ctx: ReleaseContext, env: Environment, sha: str, *, deploying: bool = True) -> Decision:
    """The break-glass approvals of `sha` for `env`, by the approval rules (cdkit.approval.evaluate).

    Only signed ones count (`break_glass.signed`, as approvals: `signed_reviews`). The authors
    and committers of the release never count, nor (`deploying`) the person breaking the glass.
    """
    reviews, refused = signed_reviews(ctx, env, sha, governing_commit(ctx, env.name), via=BREAK_GLASS_VIA)
    facts = Facts(sha=sha, required=env.break_glass or 1, reviews=reviews, reviewers=env.approval.reviewers,
                  commit_people=release_range_people(ctx, env.name, sha),
                  actor=_deployer_identity(ctx) if deploying else None, expires=env.approval.expires,
                  now=ctx.ledger.clock())
    decision = evaluate(facts)
    return dataclasses.replace(decision, reasons=(*refused, *decision.reasons))


def _deployer_identity(ctx: ReleaseContext) -> Identity | None:
    who = deployer(ctx)
    if who.startswith("@"):
        return Identity(login=who[1:])
    return None if who == "unknown" else parse_local_identity(who)


def _break_glass_note(record: dict[str, Any]) -> str:
    approvers = ", ".join(str(c["who"]) for c in record.get("counted", [])) or "nobody"
    return f"break-glass into {record['window']} by {record['by']}: {record['reason']} (approved by {approvers})"


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
                        rollback: bool, lock: EnvironmentLock, previous: str | None) -> dict[str, str]:
    """What the deploy and verify commands see: no credential the environment does not name, and the facts."""
    environ = without_credentials(git.stage_environment(dict(ctx.environ)), env.env_passthrough)
    environ.update({
        "CDKIT_ENVIRONMENT": env.name, "CDKIT_SHA": sha, "CDKIT_DEPLOYMENT_ID": str(deployment_id),
        "CDKIT_ROLLBACK": "1" if rollback else "0", "CDKIT_ENVIRONMENT_URL": env.url or "",
        "CDKIT_PREVIOUS_SHA": previous or "",
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
    """A gate said no; `only_approval` when the one thing missing is the approval (delivery waits);
    `window` (the verdict) when a window holds the environment and nothing else but the approval is missing."""

    def __init__(self, message: str, *, only_approval: bool = False, problems: Sequence[str] = (),
                 window: dict[str, Any] | None = None, governed_by: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.only_approval = only_approval
        self.problems = tuple(problems)
        self.window = window
        self.governed_by = governed_by

    @property
    def waits(self) -> bool:
        return self.only_approval or self.window is not None


def _refuse(env: Environment, sha: str, problems: Sequence[str], *, only_approval: bool = False,
            window: dict[str, Any] | None = None, governed_by: dict[str, str] | None = None) -> Refused:
    lines = "\n".join(f"  - {p}" for p in problems)
    return Refused(f"refusing to deploy {sha[:12]} to {env.name}:\n{lines}", only_approval=only_approval,
                   problems=problems, window=window, governed_by=governed_by)


def deploy(ctx: ReleaseContext, environment: str, sha: str, *, rollback: bool = False,
           force: str | None = None, break_glass: str | None = None) -> DeployResult:
    """Deploy `sha` (any revision) to `environment` if every precondition holds right now.

    Raises GateFailed (exit 1) with every reason when a precondition fails.
    Returns the recorded outcome otherwise (check `DeployResult.ok`). `force` is a
    person's reason to deploy a quarantined SHA (recorded); automatic paths never pass it;
    `break_glass` a person's reason to deploy inside a window (with its approvals; recorded).
    """
    sha = git.resolve_commit(sha, cwd=ctx.root)
    outer = ctx
    rules = governed(outer, environment)  # GateFailed when no committed rules say what a deploy here needs
    ctx, env = rules.ctx, rules.env
    if ctx.remote is not None:
        ctx.remote.preflight(env)
    with environment_lock(ctx, env.name) as lock:
        _close_abandoned(ctx, env.name)
        busy = ctx.remote.deploy_in_progress(env.name) if ctx.remote is not None else None
        if busy:
            raise GateFailed(f"another deploy to {env.name} is in progress on GitHub ({busy}); wait for it to finish")
        # Again under the lock: a deploy that ended meanwhile changed what the environment runs, so its rules.
        rules = governed(outer, environment)
        ctx, env = rules.ctx, rules.env
        ctx.say(f"cdkit: {env.name} is governed by {rules.governing.short} ({rules.governing.why})")
        if rules.pending:
            ctx.say(f"cdkit: {rules.pending}")
        result = check(ctx, env, sha, rollback=rollback, force=force, break_glass=break_glass)
        # An adopted SHA is deployed for real when asked: cdkit never ran (or verified) it there.
        if result.current == sha and not rollback and result.ok and not runs_adopted(ctx, env.name, sha):
            ctx.say(f"{env.name} already runs {sha[:12]}; nothing to deploy")
            return DeployResult(env.name, sha, UNCHANGED, reasons=(f"{env.name} already runs {sha[:12]}",),
                                governed_by=result.governed_by)
        if not result.ok:
            others = [p for p in result.problems if p not in result.window_problems]
            # The approval adds exactly one problem; when it is the only one, the release waits.
            waiting = result.decision is not None and not result.decision.approved and len(others) == 1
            # A window holding it waits (the next run after it deploys); a break-glass attempt is simply refused.
            held = result.window_problems and (waiting or not others) and break_glass is None
            window = result.window if held else None
            raise _refuse(env, sha, result.problems, only_approval=waiting and window is None, window=window,
                          governed_by=result.governed_by)
        stop = _Stop()
        with cancel_on_signals(lambda why: stop(CANCELLED, why)):
            return _deploy_with_recovery(ctx, env, sha, lock=lock, stop=stop, rollback=rollback,
                                         decision=result.decision, current=result.current, force=force,
                                         break_glass=result.break_glass)


def _deploy_with_recovery(ctx: ReleaseContext, env: Environment, sha: str, *, lock: EnvironmentLock, stop: _Stop,
                          rollback: bool, decision: Decision | None, current: str | None,
                          force: str | None, break_glass: dict[str, Any] | None = None) -> DeployResult:
    """One deploy; then quarantine a SHA that failed, and with `on_failure: rollback` redeploy the last good one."""
    who = deployer(ctx)
    reason = None
    if force:
        reason = f"{FORCED_REASON_PREFIX}{who}: {force}"
        ctx.ledger.audit(f"{env.name}: {sha} {reason}")
    elif rollback:
        reason = f"rolled back by {who}"
    if break_glass:
        note = _break_glass_note(break_glass)
        ctx.ledger.audit(f"{env.name}: {sha} {note}")
        ctx.say(f"cdkit: BREAK-GLASS: {break_glass['held']}; {note}")
        reason = f"{reason}; {note}" if reason else note
    result = _deploy_now(ctx, env, sha, lock=lock, stop=stop, rollback=rollback, decision=decision,
                         current=current, reason=reason, rollback_from=current if rollback else None,
                         break_glass=break_glass)
    if break_glass:
        result = dataclasses.replace(result, break_glass=break_glass)
    if rollback and current and current != sha and result.ok:
        # A person rolled the environment back from `current`: no automatic deploy picks it again.
        _quarantine(ctx, env, current, f"{env.name} was rolled back from it by {who}", result.deployment_id)
    if result.ok and force:
        ctx.ledger.lift_quarantine(environment=env.name, sha=sha, reason=reason or "")
    if result.status not in QUARANTINING or (result.reasons and result.reasons[0].startswith(LOST_LOCK)):
        return result
    why = f"deployment #{result.deployment_id} {result.status.replace('_', ' ')}" + \
        (f": {result.reasons[0]}" if result.reasons else "")
    _quarantine(ctx, env, sha, why, result.deployment_id)
    result = dataclasses.replace(result, quarantined=True)
    if env.on_failure != "rollback" or rollback:
        return result
    return dataclasses.replace(result, automatic_rollback=_roll_back(ctx, env, sha, lock=lock, stop=stop, why=why))


def _quarantine(ctx: ReleaseContext, env: Environment, sha: str, reason: str, deployment_id: int | None) -> None:
    ctx.ledger.quarantine(environment=env.name, sha=sha, reason=reason, deployment_id=deployment_id)
    ctx.ledger.audit(f"{sha} quarantined for {env.name}: {reason}")
    ctx.say(f"cdkit: {sha[:12]} is quarantined for {env.name}: no automatic deploy picks it again")


def _roll_back(ctx: ReleaseContext, env: Environment, failed: str, *, lock: EnvironmentLock, stop: _Stop,
               why: str) -> DeployResult:
    """`on_failure: rollback`: redeploy the last verified SHA at once, as its own (verified) deployment."""
    target = last_good_sha(ctx, env.name, besides=failed)
    if target is None:
        note = f"{env.name} has no earlier verified deployment to roll back to"
        ctx.say(f"cdkit: {note}")
        return DeployResult(env.name, failed, REFUSED, reasons=(note,))
    if stop.why is not None:  # interrupted: a person is in charge now
        return DeployResult(env.name, target, CANCELLED, reasons=(stop.why[1],))
    ctx.say(f"cdkit: on_failure: rollback: {env.name} goes back to {target[:12]}, its last verified SHA")
    return _deploy_now(ctx, env, target, lock=lock, stop=stop, rollback=True, decision=None, current=failed,
                       reason=f"automatic rollback: {why}", rollback_from=failed, automatic=True)


def deployer(ctx: ReleaseContext) -> str:
    """Who starts a deploy, for the history: the Actions actor in CI, else the git identity here."""
    actor = ctx.environ.get("GITHUB_ACTOR", "").strip() if ctx.environ.get("GITHUB_ACTIONS") == "true" else ""
    if actor:
        return f"@{actor}"
    try:
        return format_local_identity(*git.identity(cwd=ctx.root))
    except CdkitError:
        return "unknown"


def _deploy_now(ctx: ReleaseContext, env: Environment, sha: str, *, lock: EnvironmentLock, stop: _Stop,
                rollback: bool, decision: Decision | None, current: str | None, reason: str | None = None,
                rollback_from: str | None = None, automatic: bool = False,
                break_glass: dict[str, Any] | None = None) -> DeployResult:
    """One deployment, recorded in the ledger and on GitHub whatever happens: deploy command, then `verify`."""
    approval = _approval_record(env, decision)
    if break_glass:  # kept with the approval, where every view of the deployment reads it (cdkit.history)
        approval = {**(approval or {}), "break_glass": break_glass}
    deployed_by = deployer(ctx)
    deployment_id = ctx.ledger.start_deployment(environment=env.name, sha=sha, rollback=rollback, approval=approval,
                                                deployed_by=deployed_by, rollback_from=rollback_from,
                                                automatic=automatic, reason=reason,
                                                governed_by=ctx.governing.record if ctx.governing else None)
    if rollback:
        how = "automatic" if automatic else "explicit"
        ctx.ledger.audit(f"deployment #{deployment_id}: {how} rollback of {env.name} from "
                         f"{(current or 'nothing')[:12]} to {sha[:12]}")
    log_dir = ctx.cdkit_dir / "deploys"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{deployment_id}-{env.name}.log"
    github_id = ctx.github_deployment_id if not automatic else None
    status, why = CRASHED, "cdkit stopped before the deploy command finished"
    lock.note(deployment=deployment_id)
    payload = {"cdkit_deployment_id": deployment_id, "rollback": rollback, "approval": approval,
               "deployed_by": deployed_by, "automatic": automatic,
               **({"rollback_from": rollback_from} if rollback_from else {}),
               **({"governed_by": ctx.governing.record} if ctx.governing else {}),
               **({"break_glass": True} if break_glass else {})}
    try:
        status, why, github_id = _start_and_run(ctx, env, sha, deployment_id=deployment_id, lock=lock, stop=stop,
                                                rollback=rollback, payload=payload, log_path=log_path,
                                                github_id=github_id, previous=current)
    except KeyboardInterrupt:
        status, why = CANCELLED, "interrupted"
        raise
    finally:
        ctx.ledger.finish_deployment(deployment_id, status, github_id=github_id, log_path=str(log_path),
                                     reason=why or None)
        if status not in GOOD:
            ctx.ledger.audit(f"deployment #{deployment_id} of {sha} to {env.name}: {status} ({why})")
        if ctx.remote is not None and github_id is not None and status != REFUSED:
            ctx.remote.finish_deployment(github_id, env, "success" if status in GOOD else "failure",
                                         log_url=ctx.log_url, description=_github_description(status, why))
    if status == REFUSED:
        raise GateFailed(why)
    ctx.say(f"cdkit: deployment #{deployment_id} to {env.name}: {status.replace('_', ' ')}"
            + (f" ({why})" if why else ""))
    return DeployResult(env.name, sha, status, rollback=rollback, deployment_id=deployment_id,
                        log_path=str(log_path), approval=approval, reasons=(why,) if why else (),
                        github_id=github_id, governed_by=ctx.governing.as_data() if ctx.governing else None)


def _github_description(status: str, why: str) -> str:
    """A deployment status's description (GitHub keeps 140 characters); a quarantining failure says so."""
    if status in GOOD:
        return f"cdkit: {status.replace('_', ' ')}"
    prefix = QUARANTINED_PREFIX if status in QUARANTINING and not why.startswith(LOST_LOCK) else "cdkit: "
    text = f"{prefix}{status.replace('_', ' ')}: {why}"
    return text if len(text) <= 140 else text[:139] + "…"


QUARANTINED_PREFIX = "cdkit: quarantined: "


def _start_and_run(ctx: ReleaseContext, env: Environment, sha: str, *, deployment_id: int, lock: EnvironmentLock,
                   stop: _Stop, rollback: bool, payload: dict[str, Any], log_path: Path,
                   github_id: int | None, previous: str | None) -> tuple[str, str, int | None]:
    """Create the GitHub deployment (if any), run the deploy command at `sha`, then verify: (status, reason, id)."""
    if ctx.remote is not None:
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
        environ = command_environment(ctx, env, sha, deployment_id=deployment_id, rollback=rollback, lock=lock,
                                      previous=previous)
        status, reason = run_command(ctx, env.deploy, environ, lock=lock, stop=stop, log_path=log_path,
                                     workdir=workdir, timeout=ctx.deploy_timeout, what="deploy")
        if status == SUCCESS and env.verify is not None:
            status, reason = _verify(ctx, env.verify, environ, lock=lock, stop=stop, log_path=log_path,
                                     workdir=workdir)
    return status, reason, github_id


def _verify(ctx: ReleaseContext, verify: Verify, environ: Mapping[str, str], *, lock: EnvironmentLock,
            stop: _Stop, log_path: Path, workdir: Path) -> tuple[str, str]:
    """Run `verify` up to `retries` times, `interval` apart: verified, or why the verification failed."""
    reason = ""
    for attempt in range(1, verify.retries + 1):
        ctx.say(f"cdkit: verifying (attempt {attempt} of {verify.retries}): {verify.run}")
        status, reason = run_command(ctx, verify.run, environ, lock=lock, stop=stop, log_path=log_path,
                                     workdir=workdir, timeout=verify.timeout, what="verify")
        if status == SUCCESS:
            return VERIFIED, ""
        if stop.why is not None:
            return stop.why  # interrupted, or the lock was lost: not the SHA's verdict
        if attempt < verify.retries:
            ctx.say(f"cdkit: verify attempt {attempt} failed ({reason}); next in {_duration(verify.interval)}")
            deadline = time.monotonic() + verify.interval
            while time.monotonic() < deadline and stop.why is None and not lock.lost():
                time.sleep(0.1)
    what = f"after {verify.retries} attempts" if verify.retries > 1 else "its one attempt"
    return VERIFICATION_FAILED, f"verification failed {what}: {reason}"


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
    for listed in ctx.pipeline.environments:
        # Its mode is the governing pipeline's: a commit switching delivery to deployment does not release itself.
        try:
            rules = governed(ctx, listed.name)
        except GateFailed as exc:
            ctx.say(f"cdkit: {listed.name}: {exc}")
            results.append(DeployResult(listed.name, sha, REFUSED, reasons=(str(exc),)))
            break
        env = rules.env
        if env.mode != "deployment":
            ctx.say(f"cdkit: {env.name} is in delivery mode (governed by {rules.governing.short}, "
                    f"{rules.governing.why}): {sha[:12]} waits for an approval there")
            if rules.pending:
                ctx.say(f"cdkit: {rules.pending}")
            break
        try:
            result = deploy(ctx, env.name, sha)
        except Refused as exc:
            result = _held(ctx, env, sha, exc) if exc.window is not None else \
                DeployResult(env.name, sha, REFUSED, reasons=(str(exc),))
            result = dataclasses.replace(result, governed_by=exc.governed_by)
            ctx.say(f"cdkit: {exc}")
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
        if exc.window is not None:
            return dataclasses.replace(_held(ctx, governed(ctx, environment).env, sha, exc),
                                       governed_by=exc.governed_by)
        return DeployResult(environment, sha, WAITING if exc.only_approval else REFUSED, reasons=(str(exc),),
                            governed_by=exc.governed_by)
    except GateFailed as exc:
        return DeployResult(environment, sha, REFUSED, reasons=(str(exc),))


def _held(ctx: ReleaseContext, env: Environment, sha: str, exc: Refused) -> DeployResult:
    """A release a window holds: it waits, recorded in the audit log; no queue of missed commits is kept,
    so the next run after the window (or `cdkit deploy`) deploys the newest commit, not each one missed."""
    assert exc.window is not None
    ctx.ledger.audit(f"{env.name}: {sha} waits: held by a window: {exc.window['message']}")
    ctx.say(f"cdkit: {env.name} waits for {exc.window['message']}; the first run after it deploys the newest commit")
    return DeployResult(env.name, sha, WAITING, reasons=(str(exc),), window=exc.window)


# --- adoption ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdoptResult:
    environment: str
    sha: str | None  # None: adopted as running nothing
    deployment_id: int
    adopted_by: str
    reason: str | None
    github_id: int | None = None
    already: bool = False  # an earlier `cdkit adopt` recorded it; this one only finished its GitHub side

    def as_data(self) -> dict[str, Any]:
        return {"adopted": True, "environment": self.environment, "sha": self.sha, "empty": self.sha is None,
                "deployment_id": self.deployment_id, "adopted_by": self.adopted_by, "reason": self.reason,
                "github_deployment_id": self.github_id, "already_adopted": self.already}


def adopt(ctx: ReleaseContext, environment: str, sha: str | None, *, reason: str | None = None) -> AdoptResult:
    """Record what `environment` runs before cdkit's first deployment there (`sha`; None: nothing), once.

    Nothing runs: no deploy command, no verify. The record is a deployment of status
    `adopted` in the ledger (and, with GitHub, a cdkit deployment with a success status),
    so the release range, the ordering gate and the rules that govern the next deploy start
    from it. It is not a verified deployment: the next environment in the chain does not
    accept `sha` because it was adopted here. Refused (AlreadyDeployed) once the environment
    has any deployment or adoption; repeating the same adoption only finishes a GitHub side
    that failed before.
    """
    from cdkit.ledger import AlreadyDeployed

    env = find_environment(ctx.pipeline, environment)
    full = git.resolve_commit(sha, cwd=ctx.root) if sha is not None else None
    who = deployer(ctx)
    with environment_lock(ctx, env.name):
        _close_abandoned(ctx, env.name)
        recorded = ctx.ledger.adoption(env.name)
        if recorded is not None and (str(recorded["sha"]) or None) == full and ctx.remote is not None \
                and recorded["github_id"] is None and ctx.remote.first_deployment(env.name) is None:
            finished = _adopt_on_github(ctx, env, full, int(recorded["id"]), recorded["deployed_by"],
                                        recorded["reason"])
            return AdoptResult(env.name, full, int(recorded["id"]), str(recorded["deployed_by"]), recorded["reason"],
                               finished, already=True)
        start = ctx.remote.first_deployment(env.name) if ctx.remote is not None else None
        if start is not None:
            what = f"was adopted ({(start.sha or 'nothing')[:12]}, {start.where})" if start.adopted else \
                f"has cdkit deployments on GitHub since {start.where} (of {(start.sha or '?')[:12]})"
            raise AlreadyDeployed(f"{env.name} {what}: adoption records what an environment ran before cdkit's "
                                  "first deployment there, once; from now on its deployments say what it runs")
        deployment_id = ctx.ledger.adopt(environment=env.name, sha=full or "", adopted_by=who, reason=reason)
        github_id = _adopt_on_github(ctx, env, full, deployment_id, who, reason) if ctx.remote is not None else None
    return AdoptResult(env.name, full, deployment_id, who, reason, github_id)


def _adopt_on_github(ctx: ReleaseContext, env: Environment, sha: str | None, deployment_id: int, who: str | None,
                     reason: str | None) -> int:
    """The GitHub deployment that says what `env` runs since its adoption (cdkit's marker, a final status)."""
    assert ctx.remote is not None
    placeholder = sha or git.branch_tip(ctx.pipeline.release_branch, cwd=ctx.root) or \
        git.resolve_commit("HEAD", cwd=ctx.root)
    payload = {"cdkit_deployment_id": deployment_id, "adopted": True, "adopted_by": who, "rollback": False,
               "automatic": False, **({"reason": reason} if reason else {}),
               **({} if sha else {"adopted_empty": True})}
    github_id = ctx.remote.adopt(env, sha, payload=payload, placeholder=placeholder)
    ctx.ledger.set_github_id(deployment_id, github_id)
    return github_id
