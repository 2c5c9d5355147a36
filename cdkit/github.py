"""The GitHub client: the only module that imports PyGithub (lazily), and cdkit's retry policy.

Why not PyGithub's own settings: its default throttle sleeps 1 s between writes and
its default retry also retries POSTs, which can duplicate a deployment or a check run.
`GitHubClient` builds `Github(lazy=True, seconds_between_requests=None,
seconds_between_writes=None, retry=None)`, so one API call is one HTTP request, and
runs every request through one policy:

  connection error, timeout, 5xx  -> bounded retries, jittered exponential backoff
  403/429 rate limit              -> wait for Retry-After / x-ratelimit-reset if that fits in
                                     the wait budget (`max_wait`), else GitHubDeferred
  422 "No commit found for SHA"   -> a few retries (GitHub has not seen the push yet), then deferred
  401, permission 403, 404, other 4xx -> GitHubRefused at once, naming the cause and the fix

A write that failed in a way that may still have reached GitHub (timeout, 5xx, a
dropped connection) is "in doubt": it is retried only if it is idempotent or the
caller gives a `recover` function that finds the earlier write (e.g. a check run by
its external_id). Otherwise it is deferred rather than risk a duplicate.

How other modules use it (releases, approvals, the Action):

    client = GitHubClient.from_environment(environ, token=token_option, max_wait=60)
    headers, data = client.request("GET", f"/repos/{repo}/pulls/{number}/reviews",
                                   what="read the reviews of #12", scope="pull-requests: read")
    reviews = client.request_all(f"/repos/{repo}/pulls/{number}/reviews")   # every page
    repo_obj = client.repo("owner/name")                  # a lazy PyGithub Repository: no request
    deployment = client.call("create a deployment", lambda: repo_obj.create_deployment(...),
                             scope="deployments: write", idempotent=False, recover=find_it)

`GitHubDeferred` means "try again later" (keep the report in the outbox; for a gate:
fail closed); `GitHubRefused` means "this will never work as is" and its message says
why. Both are `CdkitError`s with the token already redacted.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from cdkit import __version__
# Where the token comes from: in cdkit.credentials, so a command can tell whether it has one without this module.
from cdkit.credentials import TOKEN_ENV_VARS as TOKEN_ENV_VARS, resolve_token as resolve_token
from cdkit.errors import EXIT_FAILED, EXIT_USAGE, CdkitError, UsageError
from cdkit.secrets import redact

DEFAULT_API_URL = "https://api.github.com"
USER_AGENT = f"cdkit/{__version__}"
# Only GitHub App installation tokens (the Actions GITHUB_TOKEN included) can create check runs;
# a personal token (classic `ghp_`, fine-grained `github_pat_`) gets a 403, so don't spend a request on it.
PAT_PREFIXES = ("ghp_", "github_pat_", "gho_", "ghu_")
APP_PREFIXES = ("ghs_",)
_OWNER_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")

T = TypeVar("T")


# --- errors ------------------------------------------------------------------------------------


class GitHubError(CdkitError):
    """A GitHub request that did not succeed; the message names the request, the status and the fix."""

    def __init__(self, message: str, *, status: int | None = None, kind: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class GitHubDeferred(GitHubError):
    """Try later: GitHub unreachable, rate limited beyond the wait budget, or the commit not there yet.

    `stop_all` is True when every other request would fail the same way (unreachable,
    rate limited), so callers stop sending and leave the rest in the outbox.
    """

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, status: int | None = None, kind: str = "unreachable",
                 stop_all: bool = True, in_doubt: bool = False) -> None:
        super().__init__(message, status=status, kind=kind)
        self.stop_all = stop_all
        self.in_doubt = in_doubt  # an attempt may have been applied: look before sending again


class GitHubRefused(GitHubError):
    """Never retried: bad token (401), missing permission (403), not found (404), invalid (4xx)."""

    exit_code = EXIT_USAGE


# --- where the settings come from ----------------------------------------------------------------


MAX_WAIT_ENV = "CDKIT_MAX_WAIT"  # --max-wait for commands without the option (and the Action's input)
PER_PAGE = 100  # items per page of every list cdkit reads (GitHub's most)
READ_MAX_AGE = 60.0  # seconds a GET reply answers the same read again, at most (see GitHubClient.request)


def parse_max_wait(value: str | None, where: str) -> float | None:
    """A `max-wait` in seconds (0 to 3600), or None when not given."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds <= 3600:  # also refuses nan and inf
        raise UsageError(f"{where}={value[:40]!r} is not a number of seconds from 0 to 3600")
    return seconds


def resolve_api_url(environ: Mapping[str, str]) -> str:
    """GITHUB_API_URL (set by Actions, and on GitHub Enterprise Server), else api.github.com."""
    return (environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")


def resolve_repository(environ: Mapping[str, str], *, cwd: str | os.PathLike[str] | None = None,
                       remote: str = "origin") -> str | None:
    """GITHUB_REPOSITORY, else the `owner/name` in the remote's URL, else None."""
    from_env = environ.get("GITHUB_REPOSITORY", "").strip()
    if from_env and _OWNER_NAME_RE.match(from_env):
        return from_env
    from cdkit import git
    from cdkit.remote import parse_repository

    url = git.remote_url(remote, cwd=cwd)
    return parse_repository(url) if url else None


def actions_run_url(environ: Mapping[str, str]) -> str | None:
    """The web page of the current Actions run, when running in one (for details_url / target_url)."""
    server, repository, run_id = (environ.get(k, "").strip() for k in
                                  ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if not (server and repository and run_id):
        return None
    url = f"{server.rstrip('/')}/{repository}/actions/runs/{run_id}"
    attempt = environ.get("GITHUB_RUN_ATTEMPT", "").strip()
    return f"{url}/attempts/{attempt}" if attempt and attempt != "1" else url


def token_kind(token: str) -> str:
    """"app" (can create check runs), "personal" (cannot), or "unknown" (try, and fall back)."""
    if token.startswith(APP_PREFIXES):
        return "app"
    if token.startswith(PAT_PREFIXES):
        return "personal"
    return "unknown"


# --- the retry policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries for connection errors, timeouts and 5xx (the first one included)
    not_yet_attempts: int = 3  # tries for 422 "No commit found for SHA"
    rate_limit_attempts: int = 3  # rate-limit waits for one request
    base_delay: float = 0.5
    not_yet_base_delay: float = 1.0
    max_delay: float = 8.0
    max_wait: float = 60.0  # seconds this client may lose in total (sleeping, or in failed attempts)
    timeout: int = 15  # seconds per request (at most max_wait)

    @property
    def request_timeout(self) -> int:
        """A hanging GitHub costs at most this per attempt, and never more than the whole budget."""
        return max(1, min(self.timeout, int(self.max_wait) or 1))

    def backoff(self, attempt: int, rng: Callable[[], float], *, base: float | None = None) -> float:
        """Exponential with "equal jitter": between half and all of base * 2**attempt, capped."""
        ceiling = min(self.max_delay, (base if base is not None else self.base_delay) * 2.0 ** attempt)
        return float(ceiling / 2 + rng() * ceiling / 2)


@dataclass(frozen=True)
class Failure:
    """One failed attempt, classified."""

    kind: str  # transient | rate_limited | not_yet | auth | permission | not_found | invalid
    status: int | None
    message: str
    wait: float | None = None  # rate_limited: seconds GitHub asked us to wait
    in_doubt: bool = False  # the request may have been applied even though it failed


@dataclass
class ClientStats:
    requests: int = 0  # attempts sent (each cdkit call below makes one request per attempt)
    retries: int = 0
    slept: float = 0.0
    lost: float = 0.0  # seconds spent in attempts that failed (a timeout costs the whole timeout)
    cached: int = 0  # GETs answered from this process's earlier identical read (no request sent)


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def _rate_limit_wait(status: int, headers: Mapping[str, Any] | None, message: str, now: float) -> float | None:
    """Seconds to wait when this response is a rate limit, else None (a permission 403)."""
    retry_after = _header(headers, "retry-after")
    remaining = _header(headers, "x-ratelimit-remaining")
    reset = _header(headers, "x-ratelimit-reset")
    limited = status == 429 or retry_after is not None or remaining == "0" or "rate limit" in message.lower()
    if not limited:
        return None
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    if remaining == "0" and reset is not None:
        try:
            return max(0.0, float(reset) - now) + 1.0
        except ValueError:
            pass
    return 60.0  # GitHub's advice for a secondary limit without headers: wait at least a minute


def _error_message(data: Any) -> str:
    if isinstance(data, dict):
        message = str(data.get("message") or "")
        details = []
        for err in data.get("errors") or []:
            if isinstance(err, dict):
                details.append(str(err.get("message") or err.get("code") or err))
            else:
                details.append(str(err))
        return f"{message} ({'; '.join(details)})" if details else message
    return str(data or "").strip()[:300]


def _not_connected(exc: BaseException) -> bool:
    """The connection was never made, so the request certainly did not reach GitHub."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    text = repr(exc)
    return any(s in text for s in ("NewConnectionError", "Connection refused", "Name or service not known",
                                   "nodename nor servname", "Temporary failure in name resolution"))


def classify(exc: BaseException, now: float) -> Failure | None:
    """What a failed attempt means for retrying; None when it is not a GitHub or network error."""
    import requests
    from github import GithubException

    if isinstance(exc, GithubException):
        status = exc.status
        message = _error_message(exc.data) or f"HTTP {status}"
        if status >= 500:
            return Failure("transient", status, message, in_doubt=True)
        if status in (403, 429):
            wait = _rate_limit_wait(status, exc.headers, message, now)
            if wait is not None:
                return Failure("rate_limited", status, message, wait=wait)
        if status == 401:
            return Failure("auth", status, message)
        if status == 403:
            return Failure("permission", status, message)
        if status == 404:
            return Failure("not_found", status, message)
        if status == 422 and "no commit found" in message.lower():
            return Failure("not_yet", status, message)
        return Failure("invalid", status, message)
    if isinstance(exc, requests.exceptions.RequestException):
        kind = type(exc).__name__
        return Failure("transient", None, f"{kind}: {exc}", in_doubt=not _not_connected(exc))
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return Failure("transient", None, f"{type(exc).__name__}: {exc}", in_doubt=True)
    return None


def refusal_message(failure: Failure, what: str, scope: str | None) -> str:
    """What went wrong and how to fix it, for a failure that is never retried."""
    head = f"GitHub refused to {what} ({failure.status} {failure.message})"
    lowered = failure.message.lower()
    if failure.kind == "auth":
        return (f"{head}: the token is invalid, expired or revoked; set a valid GITHUB_TOKEN or GH_TOKEN "
                "(or pass --token)")
    if failure.kind == "permission":
        if "integration" in lowered and scope:
            return (f"{head}: the workflow's GITHUB_TOKEN lacks the `{scope}` permission; "
                    f"add `permissions: {{{scope}}}` to the job (or the workflow)")
        if scope:
            return f"{head}: the token needs the `{scope}` permission on this repository"
        return f"{head}: the token has no access to do this"
    if failure.kind == "not_found":
        return (f"{head}: wrong repository (check GITHUB_REPOSITORY or the remote URL), or the token cannot "
                "see it")
    return head


# --- the client ------------------------------------------------------------------------------------


class _RedactingFilter(logging.Filter):
    """Keeps the token out of PyGithub's, urllib3's and requests' debug logs."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken log call must not break the request
            return True
        record.msg = redact(text, extra=self.secrets)
        record.args = ()
        return True


_LOGGERS = ("github", "github.Requester", "urllib3", "urllib3.connectionpool", "requests")


def _install_log_redaction(token: str) -> None:
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for existing in logger.filters:
            if isinstance(existing, _RedactingFilter):
                if token not in existing.secrets:
                    existing.secrets.append(token)
                break
        else:
            logger.addFilter(_RedactingFilter([token]))


def _as_datetime(value: Any) -> Any:
    """PyGithub wants datetimes where the outbox keeps ISO 8601 strings."""
    if isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return value


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class GitHubClient:
    """Owns one PyGithub connection, the retry policy, and the count of requests and sleeps."""

    token: str = field(repr=False)
    api_url: str = DEFAULT_API_URL
    policy: RetryPolicy = RetryPolicy()
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    rng: Callable[[], float] = random.random
    stats: ClientStats = field(default_factory=ClientStats)
    _github: Any = field(default=None, init=False, repr=False)
    _last_attempt: float = field(default=0.0, init=False, repr=False)
    # GET replies already read by this process (monotonic time, reply), until it writes what they
    # show, or for READ_MAX_AGE seconds (see `request`).
    _reads: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, tuple[dict[str, Any], Any]]] = field(
        default_factory=dict, init=False, repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], *, token: str | None = None,
                         max_wait: float | None = None, **kwargs: Any) -> GitHubClient | None:
        """A client for the token in `--token` / the environment, or None when there is none."""
        resolved = resolve_token(token, environ)
        if resolved is None:
            return None
        if max_wait is None:
            max_wait = parse_max_wait(environ.get(MAX_WAIT_ENV), MAX_WAIT_ENV)
        policy = RetryPolicy(max_wait=max_wait) if max_wait is not None else RetryPolicy()
        return cls(resolved, api_url=resolve_api_url(environ), policy=policy, environ=environ, **kwargs)

    @property
    def token_kind(self) -> str:
        return token_kind(self.token)

    @property
    def github(self) -> Any:
        """The PyGithub `Github` object, built on first use (importing PyGithub costs ~0.2 s)."""
        if self._github is None:
            from github import Auth, Github

            _install_log_redaction(self.token)
            self._github = Github(
                auth=Auth.Token(self.token), base_url=self.api_url, timeout=self.policy.request_timeout,
                user_agent=USER_AGENT, lazy=True, seconds_between_requests=None, seconds_between_writes=None,
                retry=None,
            )
        return self._github

    @contextlib.contextmanager
    def waiting_at_most(self, seconds: float) -> Iterator[None]:
        """Within: the client loses at most `seconds` more to waits and failed attempts, or what its
        own budget has left if that is less (a summary read after a release must not hold the job)."""
        saved = self.policy
        spent = self.stats.slept + self.stats.lost
        self.policy = dataclasses.replace(saved, max_wait=min(saved.max_wait, spent + seconds))
        try:
            yield
        finally:
            self.policy = saved

    def close(self) -> None:
        if self._github is not None:
            self._github.close()
            self._github = None

    def repo(self, full_name: str) -> Any:
        """A lazy PyGithub Repository: costs no request until a method on it is called."""
        return self.github.get_repo(full_name)

    def redact(self, text: str) -> str:
        return redact(text, self.environ, extra=[self.token])

    # --- the generic helpers ----------------------------------------------------------------------

    def call(self, what: str, send: Callable[[], T], *, scope: str | None = None, idempotent: bool = True,
             recover: Callable[[], T | None] | None = None, in_doubt: bool = False) -> T:
        """Run `send` (one PyGithub call = one request) under the retry policy.

        `what` completes "GitHub refused to ..." in messages; `scope` is the `permissions:` entry
        the call needs (e.g. "checks: write"). When an attempt may have been applied (`in_doubt`,
        also passed in for a retry after a crash), `recover` is asked first: it returns the earlier
        result if GitHub has it, else None and `send` runs again. Without `recover`, a
        non-idempotent in-doubt write is deferred instead of risking a duplicate.
        """
        tries: dict[str, int] = {}
        doubt = in_doubt
        while True:
            checking = doubt and recover is not None
            self.stats.requests += 1
            started = time.monotonic()
            try:
                if checking and recover is not None:
                    found = recover()
                    if found is not None:
                        return found
                    doubt = False  # GitHub does not have it: sending again cannot duplicate
                    continue
                return send()
            except Exception as exc:  # noqa: BLE001 - classified below; anything else re-raised
                failure = classify(exc, self.clock())
                if failure is None:
                    raise
                self._last_attempt = time.monotonic() - started
                if failure.kind == "transient":
                    self.stats.lost += self._last_attempt
                doubt = doubt or (failure.in_doubt and not checking)
                try:
                    self._after_failure(failure, what, scope, tries,
                                        blocked=doubt and not idempotent and not recover)
                except GitHubDeferred as deferred:
                    deferred.in_doubt = doubt
                    raise
                continue

    def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
                what: str | None = None, scope: str | None = None, idempotent: bool | None = None,
                recover: Callable[[], tuple[dict[str, Any], Any] | None] | None = None,
                ) -> tuple[dict[str, Any], Any]:
        """One REST request (path relative to the API root, or a full URL from a Link header).

        Returns (headers, decoded JSON). POST and PATCH count as non-idempotent unless told otherwise.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method not in ("POST", "PATCH")
        # One cdkit command evaluates its gates several times (check, deploy, the summary); each read
        # the same deployments, check runs and commits. A GET is answered once per process, until the
        # process writes what it could change: after a deployment write every deployment read goes to
        # GitHub again, so what cdkit checks after creating a deployment (another machine's in between)
        # is always fresh; after any other write every other read does. A read older than a minute
        # (a long deploy command, a wait for a lock) is made again whatever happened since.
        key = _read_key(path, params)
        if method == "GET" and key in self._reads and time.monotonic() - self._reads[key][0] < READ_MAX_AGE:
            self.stats.cached += 1
            return self._reads[key][1]
        if method != "GET":
            self._forget(deployments=_is_deployment_path(path))

        def send() -> tuple[dict[str, Any], Any]:
            headers, data = self.github.requester.requestJsonAndCheck(
                method, path, parameters=dict(params) if params else None, input=body)
            return dict(headers), data

        reply = self.call(what or f"{method} {path}", send, scope=scope, idempotent=idempotent, recover=recover)
        if method == "GET":
            self._reads[key] = (time.monotonic(), reply)
        return reply

    def remember_list(self, path: str, params: Mapping[str, Any], items: list[Any]) -> None:
        """Answer `request_all(path, params=params)` with `items` (one page) until a write or the max age:
        what this process just created is the whole list, and GitHub's reply to the creation says so."""
        self._reads[_read_key(path, {"per_page": PER_PAGE, **params})] = (time.monotonic(), ({}, items))

    def _forget(self, *, deployments: bool) -> None:
        """Drop the remembered reads a write of that kind could change: deployments (and environments,
        which a deployment can create) never change with a ref, a pull request or a check run, nor
        those with a deployment or its status."""
        for key in [k for k in self._reads if _is_deployment_path(k[0]) == deployments]:
            del self._reads[key]

    def request_all(self, path: str, *, params: Mapping[str, Any] | None = None, item_key: str | None = None,
                    what: str | None = None, scope: str | None = None) -> Iterator[Any]:
        """Every item of a paginated list, following `Link: rel="next"` (100 per page)."""
        url: str | None = path
        query: dict[str, Any] | None = {"per_page": PER_PAGE, **(params or {})}
        while url:
            headers, data = self.request("GET", url, params=query, what=what, scope=scope)
            items = data.get(item_key, []) if item_key and isinstance(data, dict) else data
            yield from items or []
            url, query = _next_link(headers), None  # the next URL carries its own query

    # --- the calls the reporter makes (one request each on the fast path) ---------------------------

    def create_status(self, repo: str, sha: str, *, state: str, context: str, description: str | None,
                      target_url: str | None, in_doubt: bool = False) -> int:
        self._forget(deployments=False)  # a write: what this process read of the commit may have changed
        from github.GithubObject import NotSet

        def send() -> int:
            status = self.repo(repo).get_commit(sha).create_status(
                state=state, context=context, description=description if description is not None else NotSet,
                target_url=target_url if target_url else NotSet)
            return int(status.id)

        def recover() -> int | None:
            return self.find_status(repo, sha, context=context, state=state, description=description)

        # A repeated status is harmless (the newest per context wins), so a retry needs no lookup;
        # after a crash mid-send (`in_doubt`) one GET avoids spending one of the 1,000 per context.
        return self.call(f"set the commit status {context} on {sha[:12]} in {repo}", send,
                         scope="statuses: write", recover=recover if in_doubt else None, in_doubt=in_doubt)

    def find_status(self, repo: str, sha: str, *, context: str, state: str, description: str | None) -> int | None:
        """The newest status of `context`, if it already says exactly this."""
        _, data = self.github.requester.requestJsonAndCheck(
            "GET", f"/repos/{repo}/commits/{sha}/statuses", parameters={"per_page": 100})
        for status in data or []:
            if status.get("context") == context:
                same = status.get("state") == state and (status.get("description") or None) == (description or None)
                return int(status["id"]) if same else None
        return None

    def create_check_run(self, repo: str, body: Mapping[str, Any], *, in_doubt: bool = False) -> int:
        """POST a check run; a retry that may duplicate it first looks it up by its external_id."""
        self._forget(deployments=False)  # a write: what this process read of the commit may have changed
        kwargs = {k: (_as_datetime(v) if k.endswith("_at") else v) for k, v in body.items()}

        def send() -> int:
            return int(self.repo(repo).create_check_run(**kwargs).id)

        def recover() -> int | None:
            return self.find_check_run(repo, str(body["head_sha"]), name=str(body["name"]),
                                       external_id=str(body.get("external_id") or ""))

        return self.call(f"create the check run {body['name']} on {str(body['head_sha'])[:12]} in {repo}", send,
                         scope="checks: write", idempotent=False,
                         recover=recover if body.get("external_id") else None, in_doubt=in_doubt)

    def find_check_run(self, repo: str, sha: str, *, name: str, external_id: str) -> int | None:
        """The check run cdkit created earlier (same name and external_id), if GitHub has it: 1 GET."""
        _, data = self.github.requester.requestJsonAndCheck(
            "GET", f"/repos/{repo}/commits/{sha}/check-runs",
            parameters={"check_name": name, "filter": "all", "per_page": 100})
        for run in (data or {}).get("check_runs", []):
            if external_id and run.get("external_id") == external_id:
                return int(run["id"])
        return None

    def update_check_run(self, repo: str, check_run_id: int, body: Mapping[str, Any], *,
                         expected_annotations: int | None = None, in_doubt: bool = False) -> None:
        """PATCH a check run. Repeating a PATCH is harmless except that annotations are appended,
        so a retry of one that carries annotations first reads the check run's annotation count."""
        self._forget(deployments=False)  # a write: what this process read of the commit may have changed
        kwargs = {k: (_as_datetime(v) if k.endswith("_at") else v) for k, v in body.items()}
        carries_annotations = bool((body.get("output") or {}).get("annotations"))

        def send() -> bool:
            self.repo(repo).get_check_run(check_run_id).edit(**kwargs)
            return True

        def recover() -> bool | None:
            _, data = self.github.requester.requestJsonAndCheck("GET", f"/repos/{repo}/check-runs/{check_run_id}")
            count = int(((data or {}).get("output") or {}).get("annotations_count") or 0)
            return True if expected_annotations is not None and count >= expected_annotations else None

        self.call(f"update the check run {check_run_id} in {repo}", send, scope="checks: write",
                  idempotent=not carries_annotations,
                  recover=recover if carries_annotations and expected_annotations is not None else None,
                  in_doubt=in_doubt)

    # --- retry decisions ------------------------------------------------------------------------------

    def _after_failure(self, failure: Failure, what: str, scope: str | None, tries: dict[str, int], *,
                       blocked: bool) -> None:
        """Sleep before the next attempt, or raise GitHubRefused / GitHubDeferred."""
        tries[failure.kind] = tries.get(failure.kind, 0) + 1
        n = tries[failure.kind]
        if failure.kind in ("auth", "permission", "not_found", "invalid"):
            raise GitHubRefused(self.redact(refusal_message(failure, what, scope)), status=failure.status,
                                kind=failure.kind)
        detail = f"{failure.status} {failure.message}" if failure.status else failure.message
        if blocked:
            raise GitHubDeferred(self.redact(
                f"could not {what}: {detail}; it may have reached GitHub, so it was not repeated"),
                status=failure.status, kind="in_doubt", stop_all=True)
        if failure.kind == "rate_limited":
            wait = failure.wait if failure.wait is not None else 60.0
            if n > self.policy.rate_limit_attempts or wait > self._budget():
                raise GitHubDeferred(self.redact(
                    f"could not {what}: GitHub rate limit ({detail}); it asks to wait {wait:.0f}s, more than "
                    f"the {self.policy.max_wait:g}s allowed (--max-wait)"), status=failure.status,
                    kind="rate_limited")
            self._pause(wait)
            return
        if failure.kind == "not_yet":
            if n >= self.policy.not_yet_attempts:
                raise GitHubDeferred(self.redact(
                    f"could not {what}: GitHub does not have the commit yet ({detail}); push it, then "
                    "`cdkit sync`"), status=failure.status, kind="not_yet", stop_all=False)
            self._pause_or_defer(self.policy.backoff(n - 1, self.rng, base=self.policy.not_yet_base_delay),
                                 what, detail, failure, kind="not_yet", stop_all=False)
            return
        if n >= self.policy.attempts:
            raise GitHubDeferred(self.redact(
                f"could not {what}: GitHub unreachable or failing after {n} tries ({detail})"),
                status=failure.status, kind="unreachable")
        self._pause_or_defer(self.policy.backoff(n - 1, self.rng), what, detail, failure, kind="unreachable",
                             stop_all=True)

    def _budget(self) -> float:
        return max(0.0, self.policy.max_wait - self.stats.slept - self.stats.lost)

    def _pause_or_defer(self, delay: float, what: str, detail: str, failure: Failure, *, kind: str,
                        stop_all: bool) -> None:
        # The next attempt may fail as slowly as the last one (a hang costs a whole timeout).
        slow = self._last_attempt if failure.kind == "transient" else 0.0
        if delay + slow > self._budget():
            raise GitHubDeferred(self.redact(
                f"could not {what}: {detail}; no wait budget left (--max-wait {self.policy.max_wait:g}s)"),
                status=failure.status, kind=kind, stop_all=stop_all)
        self._pause(delay)

    def _pause(self, seconds: float) -> None:
        self.stats.retries += 1
        self.stats.slept += seconds
        if seconds > 0:
            self.sleep(seconds)


def _read_key(path: str, params: Mapping[str, Any] | None) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What identifies a GET among the reads a client remembers: its path and its query, in any order."""
    return path, tuple(sorted((str(k), str(v)) for k, v in (params or {}).items()))


def _is_deployment_path(path: str) -> bool:
    """Whether a REST path (or a full URL from a Link header) is a deployment's, or an environment's."""
    return "/deployments" in path or "/environments" in path


def _next_link(headers: Mapping[str, Any]) -> str | None:
    link = _header(headers, "link")
    if not link:
        return None
    for part in link.split(","):
        match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if match:
            return match.group(1)
    return None
