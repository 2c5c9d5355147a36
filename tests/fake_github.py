"""A small stateful fake of the GitHub REST API on 127.0.0.1, for end-to-end tests.

cdkit reaches it through PyGithub's real HTTP stack (set `GITHUB_API_URL=server.url`).
Every request is validated against GitHub's OpenAPI description
(`tests/data/github/openapi-subset.json`); an invalid one gets a 422 and is recorded in
`server.invalid`, which fails the test (the `fake_github` fixture checks it at teardown).

    server.requests                       every request: method, path, query, body, token
    server.fail_next(502)                 the next request gets this status (queue several)
    server.rate_limit_next(retry_after=1) a 403 secondary rate limit with Retry-After
    server.go_away(after_processing=False) the next request drops the connection and the server
                                          stops listening (connection refused) until `start()`
    server.stop() / server.start()        restart on the same port, keeping all state
    server.tokens["ghp_x"] = "personal"   token kinds: "app" (check runs allowed), "personal"
                                          (403 on check runs, like GitHub), "no-checks" (an Actions
                                          token without `checks: write`), "bad" (401)
    server.state                          what GitHub would hold (statuses, check runs, ...)
    server.app_ids["ghs_x"] = 99          the GitHub App an app token acts as (default: GitHub Actions,
                                          15368); its check runs carry `app.id`
    server.users["ghp_x"] = {...}         the account a token acts as: the `creator` of its statuses and
                                          deployments (default: github-actions[bot] for app tokens, octocat)
    server.start_workflow_run(repo, sha)  an Actions workflow run for `sha`, as GitHub starts one when an event
                                          triggers a workflow (before any job runs): the Actions app's check
                                          runs for that SHA join its check suite (GET .../actions/runs lists it)
    server.finish_workflow_run(id, "success")  its jobs ended (status completed, with that conclusion)
    FakeGitHub.at(url)                    the running server at `url` (for helpers that only get the env)

Adding an endpoint (reviews, environments, deployments, pulls, approvals): write a handler
`def handler(server, req) -> Reply` and register it, e.g.

    @route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews")
    def list_reviews(server: FakeGitHub, req: Request) -> Reply:
        return paginate(req, server.state.extra.setdefault("reviews", {}).get(req.params["pull_number"], []))

Handlers registered with `route` apply to every server; `server.add_route(...)` to one.
State of other kinds goes in `server.state.extra` (or a new field on `State`).
"""
from __future__ import annotations

import functools
import itertools
import json
import re
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

SPEC_PATH = Path(__file__).resolve().parent / "data" / "github" / "openapi-subset.json"
SPEC_HOST = "https://api.github.com"  # the spec's server; the MockRequest host must match it
ACTIONS_APP = {"id": 15368, "slug": "github-actions", "name": "GitHub Actions", "node_id": "MDM6QXBwMTUzNjg=",
               "owner": {"login": "github", "id": 9919, "type": "Organization"}}
ACTIONS_BOT = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}
OCTOCAT = {"login": "octocat", "id": 583231, "type": "User"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    token: str | None
    headers: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)  # path template parameters
    at: float = 0.0


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[["FakeGitHub", Request], Reply]


@dataclass
class Route:
    method: str
    template: str
    handler: Handler
    regex: re.Pattern[str]


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{pattern}$")


ROUTES: list[Route] = []
_LIVE: dict[str, FakeGitHub] = {}  # url -> server, for `FakeGitHub.at`


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Register a handler for every FakeGitHub (see the module docstring)."""
    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method.upper(), template, handler, _compile(template)))
        return handler
    return register


@dataclass
class State:
    statuses: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # (repo, sha) -> newest first
    check_runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    annotations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    known_commits: set[str] | None = None  # None: every SHA exists; a set: others get 422 "No commit found"
    workflow_runs: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    check_suites: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (repo, sha, app id) -> suite
    extra: dict[str, Any] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def check_runs_for(self, repo: str, sha: str) -> list[dict[str, Any]]:
        return [r for r in self.check_runs.values() if r["_repo"] == repo and r["head_sha"] == sha]


@functools.lru_cache(maxsize=1)
def _openapi() -> Any:
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(json.loads(SPEC_PATH.read_text()))


# Requests already accepted, by their shape (see `validate`): openapi-core takes 2 to 8 ms a request, and a
# release reads one commit's pull requests per released commit, 270 of them in the long-range tests.
_ACCEPTED: set[tuple[str, str, tuple[tuple[str, str], ...], bytes | None]] = set()
FULL_SHA = re.compile(r"(?=[0-9]*[a-f])[0-9a-f]{40}")  # with a letter: never read as a number


def validate(req: Request) -> str | None:
    """None if GitHub's OpenAPI description accepts the request, else why not."""
    from openapi_core.testing import MockRequest

    # Path parameters with a `/` (branch names) must arrive percent-encoded; keep them so.
    data = json.dumps(req.body).encode() if req.body is not None else None
    # Two requests that differ only in which commit a path names are judged alike (the spec types
    # a SHA as a string): the first is validated, the other is known accepted.
    shape = (req.method, FULL_SHA.sub("a" * 40, req.path), tuple(sorted(req.query.items())), data)
    if shape in _ACCEPTED:
        return None
    mock = MockRequest(SPEC_HOST, req.method.lower(), req.path, args=req.query, data=data,
                       content_type="application/json")
    try:
        _openapi().validate_request(mock)
    except Exception as exc:  # noqa: BLE001 - any validation failure is the answer
        cause = exc.__cause__ or exc
        return f"{req.method} {req.path}: {type(exc).__name__}: {exc} ({cause})"
    _ACCEPTED.add(shape)
    return None


class FakeGitHub:
    def __init__(self) -> None:
        self.state = State()
        self.requests: list[Request] = []
        self.invalid: list[str] = []
        self.tokens: dict[str, str] = {}
        self.app_ids: dict[str, int] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.routes: list[Route] = []
        self.faults: list[Callable[[Request], Reply | str | None]] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._open = threading.Event()  # cleared by hold(): requests wait until release()
        self._open.set()

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def at(cls, url: str) -> FakeGitHub | None:
        """The running fake GitHub whose `url` this is, if any."""
        server = _LIVE.get(url.rstrip("/"))
        return server if server is not None and server.running else None

    def start(self) -> FakeGitHub:
        _openapi()  # build the validator now (~0.5 s), not while cdkit waits for its first answer
        fake = self

        class _Handler(_RequestHandler):
            server_fake = fake

        server = _Server(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        _LIVE[self.url] = self
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (keep-alive ones included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()

    @property
    def running(self) -> bool:
        return self._server is not None

    # --- scripting --------------------------------------------------------------------------------

    def add_route(self, method: str, template: str, handler: Handler) -> None:
        self.routes.insert(0, Route(method.upper(), template, handler, _compile(template)))

    def fail_next(self, status: int, *, message: str | None = None, headers: dict[str, str] | None = None,
                  times: int = 1) -> None:
        for _ in range(times):
            body = {"message": message or {502: "Server Error", 500: "Internal Server Error",
                                           503: "Service Unavailable"}.get(status, "error")}
            self.faults.append(lambda req, r=Reply(status, body, dict(headers or {})): r)

    def rate_limit_next(self, *, retry_after: int = 1, secondary: bool = True) -> None:
        if secondary:
            body = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you "
                               "try again.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits"}
            headers = {"Retry-After": str(retry_after)}
        else:
            body = {"message": "API rate limit exceeded for installation ID 1."}
            headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + retry_after)}
        self.faults.append(lambda req: Reply(403, body, headers))

    def hold(self) -> None:
        """Requests arriving from now on get no answer until `release()` (a GitHub that hangs)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def go_away(self, *, after_processing: bool = False) -> None:
        """The next request is dropped without a reply and the server stops (until `start()`).

        `after_processing`: GitHub did the work before the connection broke (the worst case
        for exactly-once delivery).
        """
        self.faults.append(lambda req: "drop-after" if after_processing else "drop")

    def start_workflow_run(self, repo: str, sha: str, *, run_id: int | None = None, head_repo: str | None = None,
                           event: str = "push", app_id: int = ACTIONS_APP["id"], head_branch: str = "main",
                           path: str = ".github/workflows/ci.yml") -> dict[str, Any]:
        """An Actions workflow run of `repo` for `sha` (from `head_repo`, a fork, if given), with its check suite.

        GitHub files the check runs the Actions app creates for that SHA under such a suite;
        a check run for a SHA no workflow run is for gets a suite of its own, in no run.
        """
        suite = next(self.state.ids)
        owner, name = repo.split("/")
        head_owner, head_name = (head_repo or repo).split("/")
        run = {"id": run_id if run_id is not None else next(self.state.ids), "name": Path(path).stem,
               "node_id": "WFR_fake", "check_suite_id": suite, "head_sha": sha, "head_branch": head_branch,
               "event": event, "status": "in_progress", "conclusion": None, "path": path,
               "repository": repository_json(owner, name), "head_repository": repository_json(head_owner, head_name),
               "created_at": now_iso(), "updated_at": now_iso(), "_app_id": app_id}
        self.state.workflow_runs.append(run)
        self.state.check_suites[(repo, sha, app_id)] = suite
        return run

    def finish_workflow_run(self, run_id: int, conclusion: str) -> None:
        """GitHub recording that every job of workflow run `run_id` ended, and how."""
        for run in self.state.workflow_runs:
            if run["id"] == run_id:
                run.update(status="completed", conclusion=conclusion, updated_at=now_iso())

    def user_for(self, token: str | None) -> dict[str, Any]:
        """The account `token` acts as (the creator of what it writes)."""
        if token in self.users:
            return self.users[token]
        return dict(ACTIONS_BOT) if (token or "").startswith("ghs_") else dict(OCTOCAT)

    def app_for(self, token: str | None) -> dict[str, Any]:
        app_id = self.app_ids.get(token or "", ACTIONS_APP["id"])
        return dict(ACTIONS_APP) if app_id == ACTIONS_APP["id"] else \
            {"id": app_id, "slug": f"app-{app_id}", "name": f"App {app_id}", "owner": {"login": "someone"}}

    # --- queries for tests -------------------------------------------------------------------------

    def count(self, method: str | None = None, path_prefix: str = "") -> int:
        return sum(1 for r in self.requests if (method is None or r.method == method) and
                   r.path.startswith(path_prefix))

    def statuses(self, repo: str, sha: str) -> list[dict[str, Any]]:
        return list(self.state.statuses.get((repo, sha), []))

    def check_runs(self, repo: str, sha: str) -> list[dict[str, Any]]:
        return self.state.check_runs_for(repo, sha)

    # --- dispatch ------------------------------------------------------------------------------------

    def handle(self, req: Request) -> Reply | str:
        self.requests.append(req)
        self._open.wait(timeout=120)
        problem = validate(req)
        if problem is not None:
            self.invalid.append(problem)
            return Reply(422, {"message": f"fake GitHub: invalid request: {problem}"})
        fault = self.faults.pop(0)(req) if self.faults else None
        if fault == "drop-after":
            self._dispatch(req)
            return "drop"
        if fault is not None:
            return fault
        return self._dispatch(req)

    def _dispatch(self, req: Request) -> Reply:
        kind = self.tokens.get(req.token or "", "app" if (req.token or "").startswith("ghs_") else "personal")
        if req.token is None or kind == "bad":
            return Reply(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
        for candidate in [*self.routes, *ROUTES]:
            match = candidate.regex.match(req.path)
            if candidate.method == req.method and match:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                req = Request(req.method, req.path, req.query, req.body, req.token, req.headers, params, req.at)
                req.headers["x-fake-token-kind"] = kind
                return candidate.handler(self, req)
        return Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer (a fault test dropping the connection, a client that timed
        out) is what those tests do, not a failure of the fake: no traceback for it in the test output."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeGitHub

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK (~40 ms a request on a kept-alive connection).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server_fake._lock:
            self.server_fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.server_fake._lock:
            self.server_fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _serve(self) -> None:
        fake = self.server_fake
        if not fake.running:
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        auth = self.headers.get("Authorization") or ""
        token = auth.split(" ", 1)[1] if " " in auth else None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        req = Request(self.command, split.path, dict(parse_qsl(split.query)), body, token,
                      {k.lower(): v for k, v in self.headers.items()}, at=time.monotonic())
        reply = fake.handle(req)
        if isinstance(reply, str):  # "drop": no answer, and GitHub is gone
            self.close_connection = True
            threading.Thread(target=fake.stop, daemon=True).start()
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        data = json.dumps(reply.body).encode() if reply.body is not None else b""
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ratelimit-limit", "5000")
        self.send_header("x-ratelimit-remaining", "4999")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve


# --- helpers for handlers ----------------------------------------------------------------------------


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def paginate(req: Request, items: list[Any], *, key: str | None = None) -> Reply:
    """One page of `items` (per_page, page) with GitHub's Link header."""
    per_page = min(100, int(req.query.get("per_page", 30)))
    page = max(1, int(req.query.get("page", 1)))
    chunk = items[(page - 1) * per_page: page * per_page]
    headers = {}
    if page * per_page < len(items):
        query = {**req.query, "page": str(page + 1), "per_page": str(per_page)}
        link = "&".join(f"{k}={v}" for k, v in query.items())
        headers["Link"] = f'<http://{req.headers.get("host", "127.0.0.1")}{req.path}?{link}>; rel="next"'
    body: Any = {"total_count": len(items), key: chunk} if key else chunk
    return Reply(200, body, headers)


def _repo(req: Request) -> str:
    return f"{req.params['owner']}/{req.params['repo']}"


def repository_json(owner: str, name: str) -> dict[str, Any]:
    """A repository as GitHub embeds it (its id stable per name)."""
    full_name = f"{owner}/{name}"
    return {"id": zlib.crc32(full_name.lower().encode()), "full_name": full_name, "name": name,
            "owner": {"login": owner}}


def _commit_known(server: FakeGitHub, sha: str) -> Reply | None:
    known = server.state.known_commits
    if known is not None and sha not in known:
        return Reply(422, {"message": f"No commit found for SHA: {sha}",
                           "documentation_url": "https://docs.github.com/rest/commits/statuses"})
    return None


# --- commit statuses -------------------------------------------------------------------------------------


@route("POST", "/repos/{owner}/{repo}/statuses/{sha}")
def create_status(server: FakeGitHub, req: Request) -> Reply:
    sha = req.params["sha"]
    missing = _commit_known(server, sha)
    if missing:
        return missing
    body = req.body or {}
    if len(body.get("description") or "") > 140:
        return Reply(422, {"message": "Validation Failed", "errors": [
            {"resource": "Status", "code": "custom", "field": "description",
             "message": "description is too long (maximum is 140 characters)"}]})
    status = {"id": next(server.state.ids), "state": body["state"], "context": body.get("context", "default"),
              "description": body.get("description"), "target_url": body.get("target_url"),
              "created_at": now_iso(), "updated_at": now_iso(), "creator": server.user_for(req.token)}
    server.state.statuses.setdefault((_repo(req), sha), []).insert(0, status)
    return Reply(201, status)


@route("GET", "/repos/{owner}/{repo}/commits/{ref}/statuses")
def list_statuses(server: FakeGitHub, req: Request) -> Reply:
    return paginate(req, server.statuses(_repo(req), req.params["ref"]))


# --- check runs ---------------------------------------------------------------------------------------------


def _check_run_rules(body: dict[str, Any]) -> Reply | None:
    """What GitHub enforces beyond the schema: 50 annotations per request, 65,535-byte texts."""
    output = body.get("output") or {}
    problems = []
    if len(output.get("annotations") or []) > 50:
        problems.append("Only 50 annotations are allowed per request")
    for name in ("summary", "text"):
        if len((output.get(name) or "").encode("utf-8")) > 65535:
            problems.append(f"output.{name} is too long (maximum is 65535 characters)")
    if body.get("status") == "completed" and not body.get("conclusion"):
        problems.append("conclusion is required when status is completed")
    if problems:
        return Reply(422, {"message": "Invalid request.\n\n" + "\n".join(problems)})
    return None


def _public_check_run(run: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in run.items() if not k.startswith("_")}
    data["output"] = {**(run.get("output") or {}), "annotations_count": len(run["_annotations"])}
    data["output"].pop("annotations", None)
    return data


@route("POST", "/repos/{owner}/{repo}/check-runs")
def create_check_run(server: FakeGitHub, req: Request) -> Reply:
    kind = req.headers.get("x-fake-token-kind")
    if kind == "personal":
        return Reply(403, {"message": "You must authenticate via a GitHub App.",
                           "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run"})
    if kind == "no-checks":
        return Reply(403, {"message": "Resource not accessible by integration",
                           "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run"})
    body = req.body or {}
    missing = _commit_known(server, body.get("head_sha", ""))
    broken = missing or _check_run_rules(body)
    if broken:
        return broken
    run_id = next(server.state.ids)
    app = server.app_for(req.token)
    suite_key = (_repo(req), body["head_sha"], app["id"])
    if suite_key not in server.state.check_suites:
        server.state.check_suites[suite_key] = next(server.state.ids)  # a suite of its own, in no workflow run
    output = dict(body.get("output") or {})
    annotations = list(output.pop("annotations", []) or [])
    run = {"id": run_id, "name": body["name"], "head_sha": body["head_sha"], "external_id": body.get("external_id"),
           "status": body.get("status", "queued"), "conclusion": body.get("conclusion"),
           "started_at": body.get("started_at"), "completed_at": body.get("completed_at"),
           "details_url": body.get("details_url"), "output": output, "_repo": _repo(req),
           "app": app, "check_suite": {"id": server.state.check_suites[suite_key]},
           "_annotations": annotations, "_patches": 0}
    if body.get("conclusion"):
        run["status"] = "completed"
    server.state.check_runs[run_id] = run
    return Reply(201, _public_check_run(run))


@route("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}")
def update_check_run(server: FakeGitHub, req: Request) -> Reply:
    run = server.state.check_runs.get(int(req.params["check_run_id"]))
    if run is None or run["_repo"] != _repo(req):
        return Reply(404, {"message": "Not Found"})
    body = req.body or {}
    broken = _check_run_rules(body)
    if broken:
        return broken
    output = dict(body.get("output") or {})
    run["_annotations"].extend(output.pop("annotations", []) or [])
    if output:
        run["output"] = {**run["output"], **output}
    for key in ("name", "status", "conclusion", "started_at", "completed_at", "details_url", "external_id"):
        if key in body:
            run[key] = body[key]
    if body.get("conclusion"):
        run["status"] = "completed"
    run["_patches"] += 1
    return Reply(200, _public_check_run(run))


@route("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}")
def get_check_run(server: FakeGitHub, req: Request) -> Reply:
    run = server.state.check_runs.get(int(req.params["check_run_id"]))
    if run is None or run["_repo"] != _repo(req):
        return Reply(404, {"message": "Not Found"})
    return Reply(200, _public_check_run(run))


@route("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs")
def list_check_runs(server: FakeGitHub, req: Request) -> Reply:
    runs = server.check_runs(_repo(req), req.params["ref"])
    if "check_name" in req.query:
        runs = [r for r in runs if r["name"] == req.query["check_name"]]
    if "app_id" in req.query:
        runs = [r for r in runs if str(r["app"]["id"]) == req.query["app_id"]]
    if req.query.get("filter", "latest") == "latest":
        latest: dict[str, dict[str, Any]] = {}
        for run in runs:
            latest[run["name"]] = run
        runs = list(latest.values())
    return paginate(req, [_public_check_run(r) for r in sorted(runs, key=lambda r: -r["id"])], key="check_runs")


# --- workflow runs ------------------------------------------------------------------------------------------


@route("GET", "/repos/{owner}/{repo}/actions/runs")
def list_workflow_runs(server: FakeGitHub, req: Request) -> Reply:
    runs = [r for r in reversed(server.state.workflow_runs) if r["repository"]["full_name"] == _repo(req)
            and r["head_sha"] == req.query.get("head_sha", r["head_sha"])
            and str(r["check_suite_id"]) == req.query.get("check_suite_id", str(r["check_suite_id"]))]
    return paginate(req, [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs], key="workflow_runs")
