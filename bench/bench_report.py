"""Requests and seconds to report a 10-stage run to GitHub: cdkit's client vs PyGithub's defaults.

Against the fake GitHub server (tests/fake_github.py) on 127.0.0.1, so the numbers are
the client's own cost, not network latency. Each stage is reported twice, as the
reporter does (check run: create in_progress + complete; status: pending + final).

  cdkit      Github(lazy=True, seconds_between_requests=None, seconds_between_writes=None, retry=None)
  defaults   Github() as most scripts build it: non-lazy objects (a GET before each write)
             and a 1 s throttle between writes (0.25 s between any requests)

Then the whole CI story, end to end (issue 12's request budget: at most 35): a `stages`-stage
pipeline in delivery-through-review mode, `cdkit action` on the push (every stage a check
run), the deploy job (opens the release pull request) and the approving review (the gate,
then the deploy), every request counted by phase and by endpoint. Each job runs in a fresh
clone, as on GitHub's runners: no job reads what another recorded in its ledger.

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


def _shape(path: str) -> str:
    """/repos/o/r/commits/<sha>/check-runs -> /repos/o/r/commits/{sha}/check-runs (ids too)."""
    import re

    return re.sub(r"/\d+(?=/|$)", "/{id}", re.sub(r"/[0-9a-f]{40}(?=/|$)", "/{sha}", path))


def end_to_end(stages: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """(phase, its requests as (method, path template)) for a CI run plus a review-mode release."""
    import os
    import tempfile

    from tests import event_payloads as ev
    from tests.fake_github_release import link_git
    from tests.helpers import adopt_new, commit, config, git, make_repo
    from tests.test_action import BOB, github, push_payload, run_action

    pipeline = config("version: 1\nrelease_branch: main\nstages:\n" + "".join(
        f"  - {{name: s{i}, run: 'true', needs: []}}\n" for i in range(stages)) + """
environments:
  - name: production
    mode: delivery
    deploy: "true"
    approval: {via: review}
""")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"GIT_AUTHOR_NAME": "Ada Author", "GIT_AUTHOR_EMAIL": "ada@example.com",
                           "GIT_COMMITTER_NAME": "Ada Author", "GIT_COMMITTER_EMAIL": "ada@example.com",
                           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "NO_COLOR": "1"})
        origin = make_repo(Path(tmp) / "origin")
        base = commit(origin, {"README": "hi\n"}, "initial")
        head = commit(origin, {".cdkit.yml": pipeline}, "release me")
        server = FakeGitHub().start()
        try:
            extra = server.state.extra
            extra["permissions"] = {"ada": "admin", "bob": "write"}
            link_git(server, origin, {"ada@example.com": {"login": "ada", "id": 1, "type": "User"}})
            # A new production, adopted on GitHub: its first release holds the whole history.
            adopt_new(origin, "production", env={"GITHUB_TOKEN": "ghs_" + "A" * 36, "GITHUB_API_URL": server.url,
                                                 "GITHUB_REPOSITORY": "octo-org/octo-repo"})
            phases = []
            seen = len(server.requests)
            jobs = iter(range(1, 10))

            def fresh_job() -> Path:
                """Each job on a runner of its own, as on GitHub: a fresh clone, so a ledger of its own."""
                path = Path(tmp) / f"job{next(jobs)}" / "repo"
                git(origin, "clone", "-q", str(origin), str(path))
                return path

            def phase(name: str, run: Any, expect: str) -> None:
                nonlocal seen
                assert run.outputs.get("result") == expect, (name, run.outputs, run.proc.stdout[-2000:],
                                                             run.proc.stderr[-2000:])
                phases.append((name, [(r.method, _shape(r.path)) for r in server.requests[seen:]]))
                seen = len(server.requests)

            phase("CI run of the push (every stage a check run)",
                  run_action(fresh_job(), "push", push_payload(base, head), sha=head, env=github(server)), "passed")
            phase("deploy job: open the release pull request",
                  run_action(fresh_job(), "push", push_payload(base, head), sha=head,
                             env=github(server, INPUT_COMMAND="deploy", INPUT_ENVIRONMENT="production")), "waiting")
            extra["reviews"] = {1: [{"id": 1, "user": BOB, "state": "APPROVED", "commit_id": head,
                                     "submitted_at": "2024-05-01T10:00:00Z", "body": ""}]}
            payload = ev.event("pull_request_review.submitted.approved.json", {ev.PR_HEAD: head, ev.PR_BASE: base})
            payload["pull_request"]["head"]["ref"] = "cdkit/release/production"
            payload["pull_request"]["base"]["ref"] = "cdkit/deployed/production"
            for side in ("head", "base"):
                payload["pull_request"][side]["repo"]["full_name"] = "octo-org/octo-repo"
            payload["pull_request"]["number"] = 1
            phase("approving review: the gate, then the deploy",
                  run_action(fresh_job(), "pull_request_review", payload, sha=head, env=github(server)), "deployed")
            assert not server.invalid, server.invalid
        finally:
            server.stop()
    return phases


def print_end_to_end(stages: int) -> None:
    from collections import Counter

    phases = end_to_end(stages)
    total = sum(len(requests) for _, requests in phases)
    print(f"\nA {stages}-stage CI run plus a review-mode release, end to end: {total} requests (budget 35)\n")
    print("| phase | requests |\n|---|---:|")
    for name, requests in phases:
        print(f"| {name} | {len(requests)} |")
    print("\n| endpoint | requests |\n|---|---:|")
    for (method, template), n in Counter(r for _, requests in phases for r in requests).most_common():
        print(f"| `{method} {template}` | {n} |")


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
    print_end_to_end(args.stages)


if __name__ == "__main__":
    main()
