"""End to end: the real `cdkit` CLI in a real repository, reporting to the fake GitHub server.

The server validates every request against GitHub's OpenAPI description and records it,
so these tests count exactly what cdkit sends.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cdkit.ledger import Ledger
from tests.fake_github import FakeGitHub
from tests.helpers import cdkit, commit, config

REPO = "octo/app"
APP_TOKEN = "ghs_" + "T" * 36
PAT = "ghp_" + "P" * 36
STAGES = ("lint", "unit", "build", "package")


def pipeline(*stages: str, fail: str | None = None) -> str:
    body = "version: 1\nstages:\n"
    for name in stages:
        command = f"echo src/{name}.py:3:1: broken; exit 1" if name == fail else f"echo {name} ok"
        body += f"  - name: {name}\n    run: '{command}'\n"
    return config(body)


@pytest.fixture
def project(repo: Path) -> tuple[Path, str]:
    sha = commit(repo, {".cdkit.yml": pipeline(*STAGES), "src/app.py": "print('hi')\n"})
    return repo, sha


def env_for(server: FakeGitHub, token: str = APP_TOKEN, **extra: str) -> dict[str, str]:
    return {"GITHUB_API_URL": server.url, "GITHUB_TOKEN": token, "GITHUB_REPOSITORY": REPO,
            "GITHUB_SERVER_URL": "", "GITHUB_RUN_ID": "", **extra}


def run_json(repo: Path, env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    proc = cdkit("run", "--json", *args, cwd=repo, env=env)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def check_run_posts(server: FakeGitHub) -> list[str]:
    return [r.body["name"] for r in server.requests if r.method == "POST" and r.path.endswith("/check-runs")]


def test_a_run_of_n_stages_makes_exactly_n_requests(project: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, sha = project
    code, data, err = run_json(repo, env_for(fake_github))
    assert code == 0, err
    n = len(STAGES)
    assert len(fake_github.requests) == n  # each stage's check run, created completed when it ends
    assert fake_github.count("GET") == 0
    assert fake_github.count("POST") == n and fake_github.count("PATCH") == 0
    assert data["github"] == {"repo": REPO, "mode": "checks", "delivered": n, "pending": 0, "failed": 0,
                              "requests": n, "slept": 0.0, "reason": None}
    runs = {r["name"]: r for r in fake_github.check_runs(REPO, sha)}
    assert set(runs) == {f"cdkit/{s}" for s in STAGES}
    assert all(r["status"] == "completed" and r["conclusion"] == "success" for r in runs.values())
    assert all(r["started_at"] and r["completed_at"] for r in runs.values())
    assert "reported 4 result(s) to octo/app as check runs" in err


def test_a_failing_stage_is_a_failed_check_with_annotations(repo: Path, fake_github: FakeGitHub) -> None:
    sha = commit(repo, {".cdkit.yml": pipeline("lint", "unit", fail="lint")})
    code, data, _ = run_json(repo, env_for(fake_github))
    assert code == 1  # the pipeline's own result
    runs = {r["name"]: r for r in fake_github.check_runs(REPO, sha)}
    assert runs["cdkit/lint"]["conclusion"] == "failure"
    assert runs["cdkit/lint"]["_annotations"][0]["path"] == "src/lint.py"
    assert runs["cdkit/unit"]["conclusion"] == "skipped"  # never started
    assert len(fake_github.requests) == 2  # one request per stage


def test_a_personal_token_reports_2n_commit_statuses(project: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, sha = project
    code, data, _ = run_json(repo, env_for(fake_github, PAT))
    assert code == 0
    assert len(fake_github.requests) == 2 * len(STAGES)
    assert data["github"]["mode"] == "statuses"
    latest = {}
    for status in reversed(fake_github.statuses(REPO, sha)):
        latest[status["context"]] = status["state"]
    assert latest == {f"cdkit/{s}": "success" for s in STAGES}


def test_an_unrecognised_token_falls_back_from_check_runs_to_statuses(project: tuple[Path, str],
                                                                       fake_github: FakeGitHub) -> None:
    repo, sha = project
    fake_github.tokens["opaque-enterprise-token"] = "personal"
    code, data, err = run_json(repo, env_for(fake_github, "opaque-enterprise-token"))
    assert code == 0
    # One refused check run (its stage's final status instead), then statuses only.
    assert [r.path.endswith("/check-runs") for r in fake_github.requests].count(True) == 1
    assert fake_github.check_runs(REPO, sha) == []
    assert data["github"]["mode"] == "statuses" and data["github"]["failed"] == 0
    assert "commit statuses instead" in err


def test_report_none_and_no_token_send_nothing(project: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, _ = project
    assert cdkit("run", "--report", "none", cwd=repo, env=env_for(fake_github)).returncode == 0
    assert cdkit("run", cwd=repo, env={**env_for(fake_github), "GITHUB_TOKEN": ""}).returncode == 0
    assert fake_github.requests == []


def test_faults_then_gone_then_sync_delivers_every_report_exactly_once(project: tuple[Path, str],
                                                                      fake_github: FakeGitHub) -> None:
    repo, sha = project
    fake_github.fail_next(502)
    fake_github.rate_limit_next(retry_after=1)
    fake_github.go_away()
    code, data, err = run_json(repo, env_for(fake_github))
    assert code == 0, err  # GitHub's trouble does not change the pipeline's result
    assert not fake_github.running
    report = data["github"]
    assert report["pending"] > 0 and report["delivered"] + report["pending"] == len(STAGES)
    assert 1.0 <= report["slept"] <= 10  # the Retry-After second, plus bounded backoff
    status = cdkit("status", cwd=repo, env=env_for(fake_github))
    assert "waiting in the outbox for GitHub (deliver with `cdkit sync`)" in status.stdout

    during_run = [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake_github.requests]
    # 502 on the first create (it may have landed: look it up), 403 rate limit on the lookup (wait 1 s),
    # then the connection drops and nothing answers: the run stops sending.
    assert during_run == [("POST", "check-runs"), ("GET", "check-runs"), ("GET", "check-runs")]
    fake_github.start()
    before = len(fake_github.requests)
    synced = cdkit("sync", "--json", cwd=repo, env=env_for(fake_github))
    assert synced.returncode == 0, synced.stderr
    result = json.loads(synced.stdout)
    assert result["pending"] == 0 and result["failed"] == 0
    assert result["delivered"] == report["pending"]
    runs = fake_github.check_runs(REPO, sha)
    assert sorted(r["name"] for r in runs) == sorted(f"cdkit/{s}" for s in STAGES)  # one each: no duplicate
    assert all(r["conclusion"] == "success" for r in runs)
    assert all(r["_patches"] == 0 for r in runs)  # each created completed, in one request

    again = cdkit("sync", "--json", cwd=repo, env=env_for(fake_github))
    assert again.returncode == 0 and json.loads(again.stdout)["delivered"] == 0
    assert len(fake_github.requests) == before + result["requests"]


def test_a_create_github_applied_before_dropping_the_connection_is_not_duplicated(
        project: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, sha = project
    fake_github.go_away(after_processing=True)  # the first create lands, but cdkit never hears so
    code, data, _ = run_json(repo, env_for(fake_github))
    assert code == 0 and data["github"]["delivered"] == 0
    assert len(fake_github.check_runs(REPO, sha)) == 1
    fake_github.start()
    synced = cdkit("sync", cwd=repo, env=env_for(fake_github))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    runs = fake_github.check_runs(REPO, sha)
    assert len(runs) == len(STAGES)
    assert all(r["conclusion"] == "success" for r in runs)


def test_hook_statuses_wait_for_the_push_then_sync_delivers_them(repo: Path, fake_github: FakeGitHub) -> None:
    sha = commit(repo, {"a.txt": "a"})
    cdkit_dir = Path(repo / ".git" / "cdkit")
    with Ledger.for_dir(cdkit_dir) as ledger:  # what the pre-push hook writes
        for stage in ("lint", "unit"):
            ledger.enqueue(f"status:{REPO}:{sha}:cdkit/{stage}:1", "status", {
                "repo": REPO, "sha": sha, "state": "success", "context": f"cdkit/{stage}",
                "description": "passed before push", "target_url": None, "stage": stage, "run_id": 1})
    fake_github.state.known_commits = set()  # not pushed yet
    early = cdkit("sync", "--json", "--max-wait", "5", cwd=repo, env=env_for(fake_github, PAT))
    assert early.returncode == 1
    assert json.loads(early.stdout)["pending"] == 2
    assert fake_github.count("POST") == 3  # one status tried 3 times; the other waits for the same commit
    fake_github.state.known_commits.add(sha)
    later = cdkit("sync", "--json", cwd=repo, env=env_for(fake_github, PAT))
    assert later.returncode == 0 and json.loads(later.stdout)["delivered"] == 2
    assert [s["context"] for s in fake_github.statuses(REPO, sha)] == ["cdkit/unit", "cdkit/lint"]


def test_sync_without_a_token_says_how_to_fix_it(repo: Path) -> None:
    commit(repo, {"a.txt": "a"})
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        ledger.enqueue("status:o/r:x:cdkit/a:1", "status", {"repo": "o/r", "sha": "x" * 40, "state": "success",
                                                          "context": "cdkit/a", "stage": "a", "run_id": 1})
    proc = cdkit("sync", cwd=repo)
    assert proc.returncode == 2
    assert "1 report(s) wait in the outbox but there is no GitHub token" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_401_is_reported_without_the_token(project: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, _ = project
    fake_github.tokens[APP_TOKEN] = "bad"
    code, data, err = run_json(repo, env_for(fake_github))
    assert code == 0
    assert data["github"]["failed"] > 0
    assert "invalid, expired or revoked" in err
    assert APP_TOKEN not in err and APP_TOKEN not in json.dumps(data)
    assert fake_github.count() == 1  # not retried; the update is never sent without its create


def test_a_hanging_github_never_holds_the_stages_back(repo: Path, fake_github: FakeGitHub) -> None:
    # Reports are sent beside the run, not inside it: while GitHub sits on the very first
    # request, every stage still starts and finishes; the reports follow once it answers.
    sha = commit(repo, {".cdkit.yml": pipeline(*STAGES)})
    fake_github.hold()
    proc = subprocess.Popen([sys.executable, "-m", "cdkit", "run", "--json"], cwd=repo, text=True,
                            env={**os.environ, **env_for(fake_github)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    ledger_path = repo / ".git" / "cdkit" / "ledger.sqlite3"

    def all_stages_done() -> bool:
        if not ledger_path.exists():
            return False
        with Ledger(ledger_path) as ledger:
            runs = ledger.runs_for_sha(sha)
            return bool(runs) and {r.stage: r.status for r in ledger.stage_results(runs[0].id)} == \
                dict.fromkeys(STAGES, "passed")

    deadline = time.monotonic() + 60
    while not all_stages_done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all_stages_done(), "the stages finished while GitHub hung"
    first = {(r.method, r.path, json.dumps(r.body, sort_keys=True)) for r in fake_github.requests}
    # At most the first report is on its way (perhaps resent after a client timeout); none answered.
    assert len(first) <= 1, first
    fake_github.release()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["github"]["delivered"] == len(STAGES)  # one check run per stage
    runs = fake_github.check_runs(REPO, sha)
    assert sorted(r["name"] for r in runs) == sorted(f"cdkit/{s}" for s in STAGES)  # each exactly once
    assert all(r["status"] == "completed" and r["conclusion"] == "success" for r in runs)


def test_two_syncs_at_once_send_each_report_once(repo: Path, fake_github: FakeGitHub) -> None:
    sha = commit(repo, {".cdkit.yml": pipeline("lint")})
    with Ledger(repo / ".git" / "cdkit" / "ledger.sqlite3") as ledger:
        for n in range(6):
            ledger.enqueue(f"status:{REPO}:{sha}:cdkit/s{n}:1", "status", {
                "repo": REPO, "sha": sha, "state": "success", "context": f"cdkit/s{n}", "description": "passed",
                "target_url": None, "stage": f"s{n}", "run_id": 1})
    fake_github.hold()  # both processes reach GitHub before either hears back
    env = {**os.environ, **env_for(fake_github, PAT)}
    procs = [subprocess.Popen([sys.executable, "-m", "cdkit", "sync"], cwd=repo, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    deadline = time.monotonic() + 30
    while len(fake_github.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    fake_github.release()
    for proc in procs:
        proc.communicate(timeout=60)
    contexts = [r.body["context"] for r in fake_github.requests if r.method == "POST"]
    assert sorted(contexts) == [f"cdkit/s{n}" for n in range(6)], "each report sent exactly once"
    with Ledger(repo / ".git" / "cdkit" / "ledger.sqlite3") as ledger:
        assert ledger.outbox_counts() == {"delivered": 6}


def test_a_killed_sync_does_not_hold_its_reports_back(repo: Path, fake_github: FakeGitHub) -> None:
    sha = commit(repo, {".cdkit.yml": pipeline("lint")})
    ledger_path = repo / ".git" / "cdkit" / "ledger.sqlite3"
    with Ledger(ledger_path) as ledger:
        ledger.enqueue(f"status:{REPO}:{sha}:cdkit/lint:1", "status", {
            "repo": REPO, "sha": sha, "state": "success", "context": "cdkit/lint", "description": "passed",
            "target_url": None, "stage": "lint", "run_id": 1})
    fake_github.hold()  # the first sync is mid-send when it is killed
    env = {**os.environ, **env_for(fake_github, PAT)}
    first = subprocess.Popen([sys.executable, "-m", "cdkit", "sync"], cwd=repo, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not fake_github.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_github.requests, "the first sync never reached GitHub"
    # Control: while the sync that claimed the report lives, another one leaves the report to it.
    beside = cdkit("sync", cwd=repo, env=env_for(fake_github, PAT))
    assert beside.returncode == 1 and "1 report(s) still waiting" in beside.stdout, beside.stdout + beside.stderr
    with Ledger(ledger_path) as ledger:
        assert ledger.outbox_counts() == {"pending": 1}
    first.kill()
    first.communicate()
    fake_github.release()
    after = cdkit("sync", cwd=repo, env=env_for(fake_github, PAT))
    assert after.returncode == 0, after.stderr
    with Ledger(ledger_path) as ledger:
        assert ledger.outbox_counts() == {"delivered": 1}
    assert [s["context"] for s in fake_github.statuses(REPO, sha)] == ["cdkit/lint"]  # sent once
