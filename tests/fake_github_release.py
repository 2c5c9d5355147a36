"""Fake GitHub endpoints for releases: deployments, environments, run approvals, pulls, reviews, refs.

Registered on every `FakeGitHub` when imported (see tests/fake_github.py). State lives in
`server.state.extra`: "deployments" (id -> deployment), "deployment_statuses" (id -> newest first),
"environments" (name -> environment), "run_approvals" (run id -> entries), "pulls" (number -> pull),
"reviews" / "pull_commits" (number -> list), "permissions" (login -> role), "refs" (ref -> sha),
"workflow_runs" (run id -> {"status": ..., "conclusion": ...}; an unknown run is a 404),
"commit_pulls" (sha -> pull requests GitHub associates with it).

Commits (compare, GET a commit) come from a real git repository, as GitHub would hold it:
    link_git(server, repo, {"ada@example.com": ADA})   the repository, and which emails are linked
                                                        to which accounts (the commits API's
                                                        `author`/`committer`; unlinked: null)
    brought_in_by(server, sha, number, user)            a merged pull request that brought `sha` in

What GitHub does on its own, for tests to script:
    start_job_deployment(server, ...)      a job with `environment:` starts: its deployment, `in_progress`,
                                           linked to the job (sent as real requests, so validated)
    before_next_deployment(server, fn)     run `fn` when cdkit's next POST /deployments arrives, before
                                           GitHub creates it (another machine creating one in between)
    before_next_deployment_status(...)     the same, right after cdkit's deployment exists
    add_deployment(server, ...)            another machine's deployment, written straight into the state
"""
from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
import zlib
from collections.abc import Callable
from typing import Any

from tests.fake_github import ROUTES, FakeGitHub, Reply, Request, now_iso, paginate, repository_json, route

NOT_FOUND = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
FAKE_TOKEN = "ghs_fakegithubitself"  # what GitHub's own writes are sent with in these tests


def send(server: FakeGitHub, method: str, path: str, body: dict[str, Any], *, token: str = FAKE_TOKEN) -> Any:
    """A real request to the fake (validated like cdkit's), as whoever holds `token`."""
    request = urllib.request.Request(f"{server.url}{path}", data=json.dumps(body).encode(), method=method,
                                     headers={"Authorization": f"token {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def start_job_deployment(server: FakeGitHub, *, repo: str, environment: str, sha: str, run_id: str, job: int = 1,
                         state: str = "in_progress") -> int:
    """GitHub starting a job that declares `environment:`: a deployment whose status links the job's page."""
    created = send(server, "POST", f"/repos/{repo}/deployments",
                    {"ref": sha, "environment": environment, "auto_merge": False, "required_contexts": []})
    job_url = f"https://github.com/{repo}/actions/runs/{run_id}/job/{job}"
    send(server, "POST", f"/repos/{repo}/deployments/{created['id']}/statuses",
          {"state": state, "log_url": job_url, "target_url": job_url, "environment": environment})
    return int(created["id"])


def before_next(server: FakeGitHub, method: str, template: str, action: Callable[[], None]) -> None:
    """Run `action` once, when the next request to `template` arrives and before GitHub handles it."""
    pending = [action]
    handler = next(r.handler for r in ROUTES if (r.method, r.template) == (method, template))

    def first_the_action(srv: FakeGitHub, req: Request) -> Reply:
        while pending:
            pending.pop()()
        return handler(srv, req)

    server.add_route(method, template, first_the_action)


def before_next_deployment(server: FakeGitHub, action: Callable[[], None]) -> None:
    """`action` runs before GitHub creates the next deployment (it gets a lower id than that one)."""
    before_next(server, "POST", "/repos/{owner}/{repo}/deployments", action)


def before_next_deployment_status(server: FakeGitHub, action: Callable[[], None]) -> None:
    """`action` runs after the next deployment exists, before its next status (it gets a higher id)."""
    before_next(server, "POST", "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses", action)


def add_deployment(server: FakeGitHub, *, environment: str, sha: str, state: str | None,
                   log_url: str | None = None, created_at: str | None = None, finished_at: str | None = None,
                   payload: dict[str, Any] | None = None, creator: str = "octocat") -> int:
    """A deployment (and its status) written straight into the state, as if another machine had created it.

    `created_at` / `finished_at` (ISO 8601) set when it was created and when its status was; default now.
    """
    deployment_id = next(server.state.ids)
    _extra(server, "deployments")[deployment_id] = {
        "id": deployment_id, "sha": sha, "ref": sha, "environment": environment, "payload": payload or {},
        "description": "another machine", "created_at": created_at or now_iso(), "creator": _user(creator),
        "_request": {}}
    if state is not None:
        status = {"id": next(server.state.ids), "created_at": finished_at or created_at or now_iso(), "state": state,
                  **({"log_url": log_url, "target_url": log_url} if log_url else {})}
        _extra(server, "deployment_statuses").setdefault(deployment_id, []).insert(0, status)
    return deployment_id


def _user(login: str) -> dict[str, Any]:
    return {"login": login, "id": zlib.crc32(login.encode()), "type": "Bot" if login.endswith("[bot]") else "User"}


def _extra(server: FakeGitHub, key: str) -> Any:
    return server.state.extra.setdefault(key, {})


@route("GET", "/repos/{owner}/{repo}/commits/{ref}/status")
def combined_status(server: FakeGitHub, req: Request) -> Reply:
    repo = f"{req.params['owner']}/{req.params['repo']}"
    latest: dict[str, dict[str, Any]] = {}
    for status in server.state.statuses.get((repo, req.params["ref"]), []):  # newest first
        latest.setdefault(status["context"], status)
    return Reply(200, {"state": "success", "sha": req.params["ref"], "statuses": list(latest.values()),
                       "total_count": len(latest)})


@route("POST", "/repos/{owner}/{repo}/deployments")
def create_deployment(server: FakeGitHub, req: Request) -> Reply:
    body = req.body or {}
    deployment_id = next(server.state.ids)
    deployment = {"id": deployment_id, "sha": body["ref"], "ref": body["ref"], "environment": body.get("environment"),
                  "payload": body.get("payload") or {}, "description": body.get("description"),
                  "created_at": now_iso(), "creator": server.state.extra.get("token_user") or
                  server.user_for(req.token), "_request": body}
    _extra(server, "deployments")[deployment_id] = deployment
    return Reply(201, {k: v for k, v in deployment.items() if not k.startswith("_")})


@route("GET", "/repos/{owner}/{repo}/deployments")
def list_deployments(server: FakeGitHub, req: Request) -> Reply:
    found = [{k: v for k, v in d.items() if not k.startswith("_")}
             for d in sorted(_extra(server, "deployments").values(), key=lambda d: -d["id"])
             if d["environment"] == req.query.get("environment", d["environment"])
             and d["sha"] == req.query.get("sha", d["sha"])]
    return paginate(req, found)


@route("POST", "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses")
def create_deployment_status(server: FakeGitHub, req: Request) -> Reply:
    deployment_id = int(req.params["deployment_id"])
    if deployment_id not in _extra(server, "deployments"):
        return Reply(404, NOT_FOUND)
    status = {"id": next(server.state.ids), "created_at": now_iso(), **(req.body or {}),
              "creator": server.user_for(req.token)}
    _extra(server, "deployment_statuses").setdefault(deployment_id, []).insert(0, status)
    return Reply(201, status)


@route("GET", "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses")
def list_deployment_statuses(server: FakeGitHub, req: Request) -> Reply:
    return paginate(req, _extra(server, "deployment_statuses").get(int(req.params["deployment_id"]), []))


@route("GET", "/repos/{owner}/{repo}/environments/{environment_name}")
def get_environment(server: FakeGitHub, req: Request) -> Reply:
    env = _extra(server, "environments").get(req.params["environment_name"])
    return Reply(200, env) if env else Reply(404, NOT_FOUND)


@route("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}/approvals")
def run_approvals(server: FakeGitHub, req: Request) -> Reply:
    return Reply(200, _extra(server, "run_approvals").get(req.params["run_id"], []))


@route("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}")
def get_workflow_run(server: FakeGitHub, req: Request) -> Reply:
    run = _extra(server, "workflow_runs").get(req.params["run_id"]) or next(
        (r for r in server.state.workflow_runs if str(r["id"]) == req.params["run_id"]), None)  # start_workflow_run's
    if run is None:
        return Reply(404, NOT_FOUND)
    return Reply(200, {"id": int(req.params["run_id"]), "status": run.get("status", "in_progress"),
                       "conclusion": run.get("conclusion"), "head_sha": run.get("head_sha", "")})


@route("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission")
def permission(server: FakeGitHub, req: Request) -> Reply:
    role = _extra(server, "permissions").get(req.params["username"])
    if role is None:
        return Reply(404, NOT_FOUND)
    legacy = {"maintain": "write", "triage": "read"}.get(role, role)
    return Reply(200, {"permission": legacy, "role_name": role, "user": {"login": req.params["username"]}})


@route("GET", "/repos/{owner}/{repo}/pulls")
def list_pulls(server: FakeGitHub, req: Request) -> Reply:
    head = req.query.get("head")
    found = [p for p in _extra(server, "pulls").values()
             if p["state"] == req.query.get("state", "open")
             and (head is None or f"{req.params['owner']}:{p['head']['ref']}" == head)]
    return paginate(req, found)


@route("POST", "/repos/{owner}/{repo}/pulls")
def create_pull(server: FakeGitHub, req: Request) -> Reply:
    body = req.body or {}
    refs = _extra(server, "refs")
    head_ref, base_ref = body["head"], body["base"]
    if f"refs/heads/{head_ref}" not in refs or f"refs/heads/{base_ref}" not in refs:
        return Reply(422, {"message": "Validation Failed", "errors": [{"field": "head", "code": "invalid"}]})
    number = len(_extra(server, "pulls")) + 1
    pull = {"number": number, "state": "open", "title": body["title"], "body": body.get("body"),
            "user": server.state.extra.get("token_user", {"login": "github-actions[bot]", "id": 41898282,
                                                          "type": "Bot"}),
            "head": {"ref": head_ref, "sha": refs[f"refs/heads/{head_ref}"],
                     "repo": repository_json(req.params["owner"], req.params["repo"])},
            "base": {"ref": base_ref, "sha": refs[f"refs/heads/{base_ref}"],
                     "repo": repository_json(req.params["owner"], req.params["repo"])}}
    _extra(server, "pulls")[number] = pull
    return Reply(201, pull)


@route("PATCH", "/repos/{owner}/{repo}/pulls/{pull_number}")
def update_pull(server: FakeGitHub, req: Request) -> Reply:
    pull = _extra(server, "pulls").get(int(req.params["pull_number"]))
    if pull is None:
        return Reply(404, NOT_FOUND)
    pull.update({k: v for k, v in (req.body or {}).items() if k in ("title", "body", "state")})
    return Reply(200, pull)


@route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews")
def list_reviews(server: FakeGitHub, req: Request) -> Reply:
    return paginate(req, _extra(server, "reviews").get(int(req.params["pull_number"]), []))


@route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/commits")
def list_pull_commits(server: FakeGitHub, req: Request) -> Reply:
    return paginate(req, _extra(server, "pull_commits").get(int(req.params["pull_number"]), []))


@route("POST", "/repos/{owner}/{repo}/git/refs")
def create_ref(server: FakeGitHub, req: Request) -> Reply:
    body = req.body or {}
    refs = _extra(server, "refs")
    if body["ref"] in refs:
        return Reply(422, {"message": "Reference already exists"})
    refs[body["ref"]] = body["sha"]
    for pull in _extra(server, "pulls").values():
        if f"refs/heads/{pull['head']['ref']}" == body["ref"]:
            pull["head"]["sha"] = body["sha"]
    return Reply(201, {"ref": body["ref"], "object": {"sha": body["sha"], "type": "commit"}})


@route("PATCH", "/repos/{owner}/{repo}/git/refs/{ref}")
def update_ref(server: FakeGitHub, req: Request) -> Reply:
    ref = f"refs/{req.params['ref']}"
    refs = _extra(server, "refs")
    if ref not in refs:
        return Reply(422, {"message": "Reference does not exist"})
    refs[ref] = (req.body or {})["sha"]
    for pull in _extra(server, "pulls").values():
        if f"refs/heads/{pull['head']['ref']}" == ref:
            pull["head"]["sha"] = refs[ref]
        if f"refs/heads/{pull['base']['ref']}" == ref and pull["head"]["sha"] == refs[ref] and pull["state"] == "open":
            pull.update(state="closed", merged=True)  # as GitHub does when the base reaches the head
    return Reply(200, {"ref": ref, "object": {"sha": refs[ref], "type": "commit"}})


# --- commits, from a real git repository ---------------------------------------------------------------


def link_git(server: FakeGitHub, repo: Path, linked: dict[str, dict[str, Any]] | None = None) -> None:
    """GitHub holds `repo`'s commits; `linked` maps emails to the accounts they are verified on."""
    server.state.extra["git_repo"] = str(repo)
    accounts = _extra(server, "linked_emails")
    accounts.update({email.casefold(): user for email, user in (linked or {}).items()})


def brought_in_by(server: FakeGitHub, sha: str, number: int, user: dict[str, Any], *, merged: bool = True,
                  head_ref: str = "feature") -> None:
    """A pull request (by `user`) that GitHub associates with `sha`: merged, or merely containing it."""
    _extra(server, "commit_pulls").setdefault(sha, []).append(
        {"number": number, "state": "closed" if merged else "open", "user": user,
         "merged_at": "2024-05-01T09:00:00Z" if merged else None, "head": {"ref": head_ref}, "base": {"ref": "main"}})


def _git(server: FakeGitHub, *args: str) -> str | None:
    repo = server.state.extra.get("git_repo")
    if repo is None:
        return None
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, check=False)
    return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None


def _commit_json(server: FakeGitHub, sha: str) -> dict[str, Any] | None:
    return _commits_json(server, [sha])[0]


COMMIT_FIELDS = 8  # see COMMIT_FORMAT
COMMIT_FORMAT = "--format=%H%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B%x00"


def _commits_json(server: FakeGitHub, shas: list[str]) -> list[dict[str, Any] | None]:
    """GitHub's JSON for these commits (None for one this repository lacks), read by one `git show` for
    those not read before: a compare page of 250 commits is one git process, not 250."""
    cache = _extra(server, "commit_json")
    unread = [sha for sha in dict.fromkeys(shas) if sha not in cache]
    if unread:
        shown = _git(server, "show", "-s", COMMIT_FORMAT, *unread, "--")
        if shown is None:  # one of them is unknown: ask for each alone, to tell which
            for sha in unread:
                cache[sha] = _read_commits(server, _git(server, "show", "-s", COMMIT_FORMAT, sha, "--"))[0]
        else:
            cache.update(zip(unread, _read_commits(server, shown)))
    return [cache[sha] for sha in shas]


def _read_commits(server: FakeGitHub, shown: str | None) -> list[dict[str, Any] | None]:
    if shown is None:
        return [None]
    # Each commit ends in NUL; `git show` puts a newline between two (a message holds no NUL).
    fields = shown.split("\0")
    linked = _extra(server, "linked_emails")  # read when a commit is first asked for
    commits: list[dict[str, Any] | None] = []
    for start in range(0, len(fields) - 1, COMMIT_FIELDS):
        full, an, ae, ad, cn, ce, cd, message = fields[start:start + COMMIT_FIELDS]
        commits.append({"sha": full.lstrip("\n"),
                        "commit": {"author": {"name": an, "email": ae, "date": ad},
                                   "committer": {"name": cn, "email": ce, "date": cd}, "message": message},
                        "author": linked.get(ae.casefold()), "committer": linked.get(ce.casefold())})
    return commits


@route("GET", "/repos/{owner}/{repo}/compare/{basehead}")
def compare(server: FakeGitHub, req: Request) -> Reply:
    base, _, head = req.params["basehead"].partition("...")
    listed = _git(server, "rev-list", "--reverse", f"{base}..{head}", "--")
    if listed is None:
        return Reply(404, NOT_FOUND)
    shas = listed.split()
    reply = paginate(req, shas, key="commits")  # one page of SHAs, then only those commits are read
    reply.body["commits"] = _commits_json(server, reply.body["commits"])
    return reply


@route("GET", "/repos/{owner}/{repo}/commits/{ref}")
def get_commit(server: FakeGitHub, req: Request) -> Reply:
    found = _commit_json(server, req.params["ref"])
    if found is None:
        return Reply(422, {"message": f"No commit found for SHA: {req.params['ref']}"})
    return Reply(200, found)


@route("GET", "/repos/{owner}/{repo}/commits/{commit_sha}/pulls")
def commit_pulls(server: FakeGitHub, req: Request) -> Reply:
    return paginate(req, _extra(server, "commit_pulls").get(req.params["commit_sha"], []))
