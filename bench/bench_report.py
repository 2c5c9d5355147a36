"""Requests and seconds to report a 10-stage run to GitHub: cdkit's client vs PyGithub's defaults.

Against the fake GitHub server (tests/fake_github.py) on 127.0.0.1, so the numbers are
the client's own cost, not network latency. Each stage is reported twice, as the
reporter does (check run: create in_progress + complete; status: pending + final).

  cdkit      Github(lazy=True, seconds_between_requests=None, seconds_between_writes=None, retry=None)
  defaults   Github() as most scripts build it: non-lazy objects (a GET before each write)
             and a 1 s throttle between writes (0.25 s between any requests)

Run: python bench/bench_report.py [--stages 10]
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from github import Auth, Github  # noqa: E402

from cdkit.github import GitHubClient  # noqa: E402
from tests.fake_github import FakeGitHub  # noqa: E402

REPO = "octo/bench"
SHA = "c" * 40
TOKEN = "ghs_" + "B" * 36


def report_with_cdkit(server: FakeGitHub, stages: int, kind: str) -> None:
    client = GitHubClient(TOKEN, api_url=server.url, environ={})
    for i in range(stages):
        name = f"cdkit/stage{i}"
        if kind == "checks":
            run_id = client.create_check_run(REPO, {"name": name, "head_sha": SHA, "status": "in_progress",
                                                    "started_at": "2024-01-01T00:00:00Z", "external_id": name})
            client.update_check_run(REPO, run_id, {"status": "completed", "conclusion": "success",
                                                   "output": {"title": "passed", "summary": "ok"}})
        else:
            for state in ("pending", "success"):
                client.create_status(REPO, SHA, state=state, context=name, description=state, target_url=None)


def report_with_defaults(server: FakeGitHub, stages: int, kind: str) -> None:
    gh = Github(auth=Auth.Token(TOKEN), base_url=server.url)
    repo: Any = gh.get_repo(REPO)  # non-lazy: a GET
    for i in range(stages):
        name = f"cdkit/stage{i}"
        if kind == "checks":
            run = repo.create_check_run(name=name, head_sha=SHA, status="in_progress",
                                        started_at=datetime.now(timezone.utc), external_id=name)
            repo.get_check_run(run.id).edit(status="completed", conclusion="success",  # non-lazy: GET, then PATCH
                                            output={"title": "passed", "summary": "ok"})
        else:
            commit = repo.get_commit(SHA)  # non-lazy: a GET per status
            commit.create_status(state="pending", context=name, description="pending")
            repo.get_commit(SHA).create_status(state="success", context=name, description="success")


def _repo_route(server: FakeGitHub) -> None:
    from tests.fake_github import Reply, Request

    def get_repo(_: FakeGitHub, req: Request) -> Reply:
        owner, name = req.params["owner"], req.params["repo"]
        return Reply(200, {"id": 1, "name": name, "full_name": f"{owner}/{name}",
                           "url": f"{server.url}/repos/{owner}/{name}"})

    def get_commit(_: FakeGitHub, req: Request) -> Reply:
        owner, name, ref = req.params["owner"], req.params["repo"], req.params["ref"]
        return Reply(200, {"sha": ref, "url": f"{server.url}/repos/{owner}/{name}/commits/{ref}"})

    server.add_route("GET", "/repos/{owner}/{repo}", get_repo)
    server.add_route("GET", "/repos/{owner}/{repo}/commits/{ref}", get_commit)


def measure(label: str, fn: Any, stages: int, kind: str) -> tuple[str, str, int, float]:
    server = FakeGitHub().start()
    _repo_route(server)
    try:
        start = time.perf_counter()
        fn(server, stages, kind)
        seconds = time.perf_counter() - start
        assert not server.invalid, server.invalid
        return label, kind, len(server.requests), seconds
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for kind in ("checks", "statuses"):
        rows.append(measure("cdkit", report_with_cdkit, args.stages, kind))
        rows.append(measure("PyGithub defaults", report_with_defaults, args.stages, kind))
    print(f"Reporting a {args.stages}-stage run (2 reports per stage) to a local fake GitHub:\n")
    print(f"| client | reported as | requests | seconds |\n|---|---|---:|---:|")
    for label, kind, requests, seconds in rows:
        print(f"| {label} | {'check runs' if kind == 'checks' else 'commit statuses'} | {requests} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
