"""A GitHub Actions run (its environment and event payload) -> what `cdkit action` should do.

The answer is a `Decision`: run the `ci` stages on a `Trigger`, do nothing, hand the
event to the release logic, or refuse. Ranges come from git, never from the
payload: a push payload lists at most 2,048 commits, `before` is all zeros on a new
branch, `head_commit` may be null, and a forced push's old tip may be gone. A
shallow checkout is deepened (or a missing commit fetched by SHA) before a range is
computed; if that fails the run fails closed, because "no diff" would look like a pass.

Payload fields are untrusted text: they are validated (types, 40/64-hex SHAs) and
only ever passed to git as separate arguments, never through a shell.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdkit import git
from cdkit.errors import EXIT_FAILED, CdkitError
from cdkit.events import Trigger, changed_files_between

SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
REMOTE = "origin"
# GitHub caps webhook payloads at 25 MB; anything bigger did not come from GitHub.
MAX_PAYLOAD_BYTES = 25 * 1024 * 1024
# The names cdkit reads (refs, branch, environment and account names, actions) are far shorter;
# a longer one would only reach git and the stages' environment as an "argument list too long".
MAX_NAME_CHARS = 1024
MAX_INPUT_CHARS = 65_535  # a workflow_dispatch input, as GitHub limits them
# Control characters (NUL above all) cannot travel in an argument or an environment variable.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

RUN, NOTHING, RELEASE, REFUSE = "run", "nothing", "release", "refuse"

# Events whose only purpose is gating or recording a release: cdkit does not answer them,
# and staying silent could look like consent, so they fail closed.
RELEASE_GATING_EVENTS = frozenset({"deployment_protection_rule"})
# Events that run with the base repository's secrets on behalf of code cdkit must not trust.
UNTRUSTED_CONTEXT_EVENTS = {
    "pull_request_target": "it runs with the base repository's secrets, so cdkit never runs pull-request code "
                           "from it; trigger the workflow on `pull_request` instead",
    "workflow_run": "the run that triggered it may carry code from a fork, so cdkit neither runs nor deploys "
                    "from it; run cdkit in the triggering workflow instead",
}


class PayloadError(CdkitError):
    """The event payload or the runner environment is missing, malformed or inconsistent (exit 2)."""


class HistoryError(CdkitError):
    """The commits a range needs are not in the checkout and could not be fetched: fail closed (exit 1)."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class RunnerEnv:
    """The standard variables a GitHub Actions runner sets for every step."""

    event_name: str
    event_path: str | None
    sha: str | None
    ref: str | None
    repository: str | None
    run_id: str | None
    run_attempt: str | None
    server_url: str
    api_url: str
    actor: str | None
    triggering_actor: str | None
    workspace: str | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RunnerEnv:
        name = environ.get("GITHUB_EVENT_NAME", "")
        if not name:
            raise PayloadError(
                "GITHUB_EVENT_NAME is not set: `cdkit action` runs inside a GitHub Actions job "
                "(use `cdkit run` on your machine)"
            )
        sha = environ.get("GITHUB_SHA") or None
        if sha is not None and not SHA_RE.match(sha):
            raise PayloadError(f"GITHUB_SHA {sha[:80]!r} is not a 40 or 64 character hex SHA")
        return cls(
            event_name=name,
            event_path=environ.get("GITHUB_EVENT_PATH") or None,
            sha=sha,
            ref=environ.get("GITHUB_REF") or None,
            repository=environ.get("GITHUB_REPOSITORY") or None,
            run_id=environ.get("GITHUB_RUN_ID") or None,
            run_attempt=environ.get("GITHUB_RUN_ATTEMPT") or None,
            server_url=(environ.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/"),
            api_url=(environ.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
            actor=environ.get("GITHUB_ACTOR") or None,
            triggering_actor=environ.get("GITHUB_TRIGGERING_ACTOR") or None,
            workspace=environ.get("GITHUB_WORKSPACE") or None,
        )

    @property
    def run_url(self) -> str | None:
        if not (self.repository and self.run_id):
            return None
        attempt = f"/attempts/{self.run_attempt}" if self.run_attempt else ""
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}{attempt}"

    def commit_url(self, sha: str) -> str | None:
        return f"{self.server_url}/{self.repository}/commit/{sha}" if self.repository else None


@dataclass(frozen=True)
class Decision:
    """What to do for this event, and why (the message is shown in the log and the summary)."""

    action: str  # RUN, NOTHING, RELEASE or REFUSE
    event: str
    message: str
    trigger: Trigger | None = None
    pr_code: bool = False  # the stages run pull-request code: no credentials near them, no release
    fork: bool = False  # ... from a fork: the token is read-only, so nothing is posted to GitHub
    release_candidate: bool = False  # a passing run may lead to a release (release branch, reachable SHA)
    release_note: str = ""  # why a passing run will not be released, when it will not
    sha: str | None = None  # the commit concerned (also for RELEASE)
    environment: str | None = None  # for `deployment` events
    payload: Mapping[str, Any] = field(default_factory=dict)
    # The commit whose committed pipeline judges the run, when not the judged commit's own: for a
    # pull request, the current tip of its base branch (its author chooses neither it nor its pipeline).
    pipeline_sha: str | None = None


# --- payload reading --------------------------------------------------------------------------


def load_payload(path: str | None, event: str) -> dict[str, Any]:
    if not path:
        raise PayloadError(f"{event} event: GITHUB_EVENT_PATH is not set, so the event payload cannot be read")
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_PAYLOAD_BYTES + 1)
    except OSError as exc:
        raise PayloadError(f"{event} event: cannot read the payload {path}: {exc.strerror}") from None
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{event} event: the payload {path} is larger than {MAX_PAYLOAD_BYTES // 2**20} MB, "
                           "the most GitHub sends; it did not come from GitHub")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise PayloadError(f"{event} event: the payload {path} nests arrays or objects too deeply to be a GitHub "
                           "event payload") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"{event} event: the payload {path} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"{event} event: the payload {path} is not a JSON object")
    return data


class _Fields:
    """Typed access to payload fields; every error names the event and the dotted field."""

    def __init__(self, event: str, payload: Mapping[str, Any]) -> None:
        self.event = event
        self.payload = payload

    def _fail(self, path: str, wanted: str, value: Any) -> PayloadError:
        return PayloadError(f"{self.event} event payload: field {path!r}: expected {wanted}, {_shown(value)}")

    def raw(self, path: str) -> Any:
        cur: Any = self.payload
        for part in path.split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                return _MISSING
            cur = cur[part]
        return cur

    def obj(self, path: str, *, nullable: bool = False) -> Mapping[str, Any] | None:
        value = self.raw(path)
        if nullable and value in (None, _MISSING):
            return None
        if not isinstance(value, Mapping):
            raise self._fail(path, "an object", value)
        return value

    def text(self, path: str, *, optional: bool = False) -> str | None:
        """A name (ref, branch, environment, account, action): short, printable, valid UTF-8."""
        value = self.raw(path)
        if optional and value in (None, _MISSING):
            return None
        if not isinstance(value, str) or not value:
            raise self._fail(path, "a non-empty string", value)
        problem = text_problem(value, limit=MAX_NAME_CHARS, control_ok=False)
        if problem:
            raise PayloadError(f"{self.event} event payload: field {path!r}: {problem}")
        return value

    def string(self, path: str) -> str:
        value = self.text(path)
        assert value is not None
        return value

    def flag(self, path: str, *, default: bool = False) -> bool:
        value = self.raw(path)
        if value is _MISSING or value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(path, "true or false", value)
        return value

    def integer(self, path: str) -> int:
        value = self.raw(path)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(path, "an integer", value)
        return value

    def sha(self, path: str, *, zero_ok: bool = False) -> str:
        value = self.raw(path)
        if not isinstance(value, str) or not SHA_RE.match(value):
            raise self._fail(path, "a 40 or 64 character lower-case hex SHA", value)
        if git.is_zero_oid(value) and not zero_ok:
            raise self._fail(path, "a commit SHA (not all zeros)", value)
        return value


_MISSING: Any = object()


def _shown(value: Any) -> str:
    """A payload value for an error message: short, whatever its size."""
    if value is _MISSING:
        return "missing"
    if isinstance(value, str):
        return f"got {json.dumps(value[:60])}" + ("..." if len(value) > 60 else "")
    if isinstance(value, (dict, list)):
        return f"got a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)} item(s)"
    return f"got {json.dumps(value)[:80]}"


def text_problem(value: str, *, limit: int, control_ok: bool) -> str | None:
    """Why a payload string cannot be used as is (None when it can)."""
    if len(value) > limit:
        return f"{len(value):,} characters long, more than the {limit:,} such a field can have"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode (it contains a lone surrogate)"
    if "\x00" in value:
        return "contains a NUL character"
    control = None if control_ok else _CONTROL_RE.search(value)
    return f"contains a control character ({json.dumps(control.group())})" if control else None


# --- history ---------------------------------------------------------------------------------


DEFAULT_MAX_WAIT = 60.0  # seconds every `git fetch` of one event may take together (`max-wait`)


class _History:
    """The checkout's git history, deepened on demand: CI checkouts are often shallow.

    Every fetch shares one time budget (`max_wait`): a remote that hangs ends in a
    HistoryError (fail closed) instead of a job that waits for GitHub's six-hour limit.
    """

    def __init__(self, cwd: Path, max_wait: float = DEFAULT_MAX_WAIT) -> None:
        self.cwd = cwd
        self.deepened = False
        self.deadline = time.monotonic() + max_wait
        self.max_wait = max_wait

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise HistoryError(f"fetching from {REMOTE} took the whole wait budget ({self.max_wait:g}s, input "
                               "max-wait): failing closed; raise max-wait, or check out with `fetch-depth: 0`")
        return left

    def deepen(self) -> None:
        """Full history before any ancestry question: a shallow boundary answers them wrongly."""
        if self.deepened or not git.is_shallow(cwd=self.cwd):
            self.deepened = True
            return
        problem = git.fetch(REMOTE, unshallow=True, cwd=self.cwd, timeout=self._left())
        if problem is not None:
            problem = problem.splitlines()[0].removesuffix(".")
            raise HistoryError(
                "this checkout is shallow and `git fetch --unshallow` failed, so the commits to check cannot "
                f"be determined (failing closed rather than treating a missing diff as a pass): {problem}; "
                "fix: set `fetch-depth: 0` on actions/checkout"
            )
        self.deepened = True

    def have(self, sha: str) -> bool:
        return git.commit_exists(sha, cwd=self.cwd) or git.ensure_commit(sha, REMOTE, cwd=self.cwd,
                                                                         timeout=self._left())

    def need(self, sha: str, what: str) -> None:
        if not self.have(sha):
            raise HistoryError(
                f"{what} {sha} is not in this checkout and could not be fetched from {REMOTE} "
                "(failing closed). Fix: check out with `fetch-depth: 0`, "
                "or make sure the commit was pushed"
            )

    def branch_tip(self, branch: str) -> str | None:
        """The remote branch's tip, fetched so that a stale or missing local copy cannot mislead."""
        git.fetch(REMOTE, f"+refs/heads/{branch}:refs/remotes/{REMOTE}/{branch}", cwd=self.cwd,
                  timeout=self._left())
        return git.branch_tip(branch, cwd=self.cwd)


# --- decisions per event ---------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    env: RunnerEnv
    payload: Mapping[str, Any]
    cwd: Path
    release_branch: str
    wants_release: bool  # the workflow asked for a release (command release/deploy, or an environment)
    max_wait: float = DEFAULT_MAX_WAIT  # seconds all of this event's fetches may take

    def history(self) -> _History:
        return _History(self.cwd, self.max_wait)


def decide(ctx: Context) -> Decision:
    event = ctx.env.event_name
    handler = _HANDLERS.get(event)
    if handler is not None:
        return handler(ctx)
    if event in UNTRUSTED_CONTEXT_EVENTS:
        return _untrusted_context(ctx)
    if event in RELEASE_GATING_EVENTS or ctx.wants_release:
        return Decision(REFUSE, event, f"cdkit cannot release from {event} events; refusing (fail closed). "
                        "Releases follow push, workflow_dispatch, pull_request_review and deployment events")
    return Decision(NOTHING, event, f"nothing to do for {event}")


def _untrusted_context(ctx: Context) -> Decision:
    event = ctx.env.event_name
    why = UNTRUSTED_CONTEXT_EVENTS[event]
    if ctx.wants_release:
        return Decision(REFUSE, event, f"cdkit does not release from {event}: {why}")
    return Decision(NOTHING, event, f"nothing to do for {event}: {why}")


def _trigger(ctx: Context, *, head: str, base: str | None, ref: str | None, extra: Mapping[str, str]) -> Trigger:
    return Trigger(
        kind="ci",
        event=ctx.env.event_name,
        head_sha=head,
        base_sha=base,
        changed_files=changed_files_between(base, head, ctx.cwd),
        ref=ref,
        repo=ctx.env.repository,
        actor=ctx.env.actor,
        extra={**({"triggering_actor": ctx.env.triggering_actor} if ctx.env.triggering_actor else {}), **extra},
    )


def _check_runner_sha(ctx: Context, sha: str, field_name: str) -> None:
    if ctx.env.sha and ctx.env.sha != sha:
        raise PayloadError(
            f"{ctx.env.event_name} event: GITHUB_SHA {ctx.env.sha} differs from the payload's {field_name} {sha}; "
            "refusing to judge a commit other than the one this run was started for"
        )


def _push(ctx: Context) -> Decision:
    f = _Fields("push", ctx.payload)
    ref = f.string("ref")
    before, after = f.sha("before", zero_ok=True), f.sha("after", zero_ok=True)
    deleted, forced = f.flag("deleted"), f.flag("forced")
    f.obj("head_commit", nullable=True)  # null on deletes and some force pushes; never used for the range
    if deleted or git.is_zero_oid(after):
        return Decision(NOTHING, "push", f"push deleted {ref}: nothing to do")
    _check_runner_sha(ctx, after, "after")
    history = ctx.history()
    history.deepen()
    history.need(after, f"the pushed commit of {ref}")
    if ref.startswith("refs/tags/"):
        base, how = None, "tag push: every file of the tagged commit counts"
    else:
        base, how = _push_base(ctx, f, history, ref=ref, before=before, after=after, forced=forced)
    trigger = _trigger(ctx, head=after, base=base, ref=ref, extra={"range": how})
    on_release = ref == f"refs/heads/{ctx.release_branch}"
    note = "" if on_release else f"{ref} is not the release branch ({ctx.release_branch})"
    return Decision(RUN, "push", f"push to {ref}: {how}", trigger=trigger, release_candidate=on_release,
                    release_note=note, sha=after, payload=ctx.payload)


def _push_base(ctx: Context, f: _Fields, history: _History, *, ref: str, before: str, after: str,
               forced: bool) -> tuple[str | None, str]:
    if not git.is_zero_oid(before):
        if history.have(before):
            if git.is_ancestor(before, after, cwd=ctx.cwd):
                return before, f"commits since {before[:12]}"
            fork_point = git.merge_base(before, after, cwd=ctx.cwd)
            if fork_point:
                return fork_point, f"rewritten history: commits since the fork point {fork_point[:12]}"
        elif not forced:
            history.need(before, f"the previous tip of {ref}")
    # A new branch, or a forced push whose old tip is gone: judge what it adds to the default branch.
    default = f.text("repository.default_branch", optional=True)
    if default and ref != f"refs/heads/{default}":
        tip = history.branch_tip(default)
        fork_point = git.merge_base(tip, after, cwd=ctx.cwd) if tip else None
        if fork_point:
            return fork_point, f"new or rewritten branch: commits since it left {default} at {fork_point[:12]}"
    return None, "no earlier commit to compare with: every file counts"


def _pull_request(ctx: Context) -> Decision:
    f = _Fields("pull_request", ctx.payload)
    action = f.string("action")
    number = f.integer("number")
    head, base_sha = f.sha("pull_request.head.sha"), f.sha("pull_request.base.sha")
    base_ref = f.string("pull_request.base.ref")
    head_repo = f.obj("pull_request.head.repo", nullable=True)
    base_repo = f.obj("pull_request.base.repo")
    if action == "closed":
        return Decision(NOTHING, "pull_request", f"pull request #{number} was closed: nothing to do "
                        "(a merge is judged by the push it makes)")
    assert base_repo is not None
    fork = head_repo is None or head_repo.get("full_name") != base_repo.get("full_name")
    history = ctx.history()
    history.deepen()
    history.need(head, f"the head of pull request #{number}")
    if not history.have(base_sha):
        base_sha = history.branch_tip(base_ref) or base_sha
        history.need(base_sha, f"the base of pull request #{number} (the tip of {base_ref})")
    # The range is what the pull request changes (since it left the base branch); the rules are
    # the base branch's as they are now, never those of the fork point, which its author picks.
    fork_point = git.merge_base(base_sha, head, cwd=ctx.cwd)
    how = f"commits since it left {base_ref} at {fork_point[:12]}" if fork_point else "every file counts"
    trigger = _trigger(ctx, head=head, base=fork_point, ref=f"refs/pull/{number}/head",
                       extra={"pull_request": str(number), "base_ref": base_ref, "fork": str(fork).lower()})
    source = "a fork" if fork else "this repository"
    return Decision(RUN, "pull_request", f"pull request #{number} from {source}: {how}", trigger=trigger,
                    pr_code=True, fork=fork, release_note="pull requests are never released",
                    sha=head, payload=ctx.payload, pipeline_sha=base_sha)


def _merge_group(ctx: Context) -> Decision:
    f = _Fields("merge_group", ctx.payload)
    head, base = f.sha("merge_group.head_sha"), f.sha("merge_group.base_sha")
    head_ref = f.string("merge_group.head_ref")
    _check_runner_sha(ctx, head, "merge_group.head_sha")
    history = ctx.history()
    history.deepen()
    history.need(head, "the merge queue commit")
    history.need(base, "the merge queue base")
    trigger = _trigger(ctx, head=head, base=base, ref=head_ref, extra={})
    return Decision(RUN, "merge_group", f"merge queue {head_ref}: commits since {base[:12]}", trigger=trigger,
                    release_note="merge queue commits are released by the push that follows", sha=head,
                    payload=ctx.payload)


def _workflow_dispatch(ctx: Context) -> Decision:
    f = _Fields("workflow_dispatch", ctx.payload)
    ref = f.string("ref")
    inputs = f.obj("inputs", nullable=True) or {}
    values = {}
    for key, value in inputs.items():
        if not isinstance(value, (str, bool, int, float)) or value is None:
            raise PayloadError(f"workflow_dispatch event payload: field 'inputs.{key[:60]}': expected a string, "
                               f"number or boolean, {_shown(value)}")
        problem = text_problem(str(key), limit=MAX_NAME_CHARS, control_ok=False) or \
            (text_problem(value, limit=MAX_INPUT_CHARS, control_ok=True) if isinstance(value, str) else None)
        if problem:
            raise PayloadError(f"workflow_dispatch event payload: field 'inputs.{json.dumps(str(key)[:60])}': "
                               f"{problem}")
        values[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    if values.get("sha"):
        head = f.sha("inputs.sha")
    elif ctx.env.sha:
        head = ctx.env.sha
    else:
        raise PayloadError("workflow_dispatch event: GITHUB_SHA is not set and there is no `sha` input")
    history = ctx.history()
    history.deepen()
    history.need(head, f"the dispatched commit (for {ref})")
    tip = history.branch_tip(ctx.release_branch)
    reachable = tip is not None and git.is_ancestor(head, tip, cwd=ctx.cwd)
    note = "" if reachable else (
        f"{head[:12]} is not reachable from the release branch {ctx.release_branch}, so it is never released"
    )
    trigger = _trigger(ctx, head=head, base=None, ref=ref, extra={f"input.{k}": v for k, v in values.items()})
    return Decision(RUN, "workflow_dispatch", f"manual run of {head[:12]} ({ref}): every file counts",
                    trigger=trigger, release_candidate=reachable, release_note=note, sha=head,
                    environment=values.get("environment") or None, payload=ctx.payload)


def _pull_request_review(ctx: Context) -> Decision:
    f = _Fields("pull_request_review", ctx.payload)
    f.string("action")
    f.string("review.state")
    f.string("review.user.login")
    commit = f.sha("review.commit_id")
    f.sha("pull_request.head.sha")
    number = f.integer("pull_request.number")
    return Decision(RELEASE, "pull_request_review",
                    f"review of pull request #{number} at {commit[:12]}: handed to the release gate",
                    sha=commit, payload=ctx.payload)


def _deployment(ctx: Context) -> Decision:
    f = _Fields("deployment", ctx.payload)
    sha = f.sha("deployment.sha")
    environment = f.string("deployment.environment")
    f.integer("deployment.id")
    if ctx.env.sha and ctx.env.sha != sha:
        return Decision(REFUSE, "deployment", f"deployment.sha {sha} differs from the commit being checked "
                        f"({ctx.env.sha}); refusing to deploy", sha=sha, environment=environment)
    return Decision(RELEASE, "deployment", f"deployment of {sha[:12]} to {environment}: handed to the release gate",
                    sha=sha, environment=environment, payload=ctx.payload)


def _ref_event(ctx: Context) -> Decision:
    f = _Fields(ctx.env.event_name, ctx.payload)
    ref = f.string("ref")
    kind = f.text("ref_type", optional=True) or "ref"
    return Decision(NOTHING, ctx.env.event_name, f"nothing to do for {ctx.env.event_name} of {kind} {ref} "
                    "(pushes are judged by their push event)")


_HANDLERS = {
    "push": _push,
    "pull_request": _pull_request,
    "merge_group": _merge_group,
    "workflow_dispatch": _workflow_dispatch,
    "pull_request_review": _pull_request_review,
    "deployment": _deployment,
    "create": _ref_event,
    "delete": _ref_event,
}


def read_event(environ: Mapping[str, str], *, cwd: str | os.PathLike[str], release_branch: str,
               wants_release: bool, max_wait: float = DEFAULT_MAX_WAIT) -> tuple[RunnerEnv, Decision]:
    """The runner environment and event payload -> (the environment, the decision)."""
    env = RunnerEnv.from_environ(environ)
    payload = load_payload(env.event_path, env.event_name)
    ctx = Context(env=env, payload=payload, cwd=Path(cwd), release_branch=release_branch,
                  wants_release=wants_release, max_wait=max_wait)
    return env, decide(ctx)
