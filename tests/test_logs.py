"""Run-log retention: old and oversized logs are pruned, the ledger's history never is, and a gate
decides the same after pruning (it reads results from the ledger, not logs)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from cdkit.logs import PRUNE_STAMP, Retention, prune_if_due, prune_logs
from tests.helpers import cdkit, commit, config

DAY = 86400.0


def pipeline(test_run: str, logs: str = "") -> str:
    return config(f"""
        version: 1
        stages:
          - {{name: test, run: '{test_run}'}}
        environments:
          - {{name: staging, mode: deployment, deploy: 'true'}}
        {logs}
    """)


def run_dirs(repo: Path) -> list[str]:
    return sorted((p.name for p in (repo / ".git" / "cdkit" / "logs").iterdir()), key=int)


def age(repo: Path, run_id: int, days: float) -> None:
    """Make a run's logs look `days` old."""
    when = time.time() - days * DAY
    run_dir = repo / ".git" / "cdkit" / "logs" / str(run_id)
    for path in [*run_dir.iterdir(), run_dir]:
        os.utime(path, (when, when))


def test_gc_prunes_logs_past_keep_and_keeps_every_run_in_the_ledger(repo: Path) -> None:
    commit(repo, {".cdkit.yml": pipeline("echo hello")})
    for _ in range(3):
        assert cdkit("run", cwd=repo).returncode == 0
    age(repo, 1, 31)
    age(repo, 2, 29)  # inside the default 30 days: kept
    result = cdkit("gc", "--json", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["removed"] == 1
    assert run_dirs(repo) == ["2", "3"]
    log = json.loads(cdkit("log", "--json", cwd=repo).stdout)["runs"]
    assert [r["id"] for r in log] == [3, 2, 1]  # history stays
    status = json.loads(cdkit("status", "--json", cwd=repo).stdout)
    assert {s["name"]: s["status"] for s in status["stages"]}["test"] == "passed"


def test_a_gate_decides_the_same_after_its_logs_are_pruned(repo: Path) -> None:
    commit(repo, {".cdkit.yml": pipeline("exit 1", "logs: {keep: 1d}")})
    assert cdkit("run", cwd=repo).returncode == 1
    age(repo, 1, 2)
    assert json.loads(cdkit("gc", "--json", cwd=repo).stdout)["removed"] == 1
    refused = cdkit("deploy", "--env", "staging", cwd=repo)  # the failure is in the ledger, not only in a log
    assert refused.returncode == 1 and "stage 'test' failed" in refused.stdout + refused.stderr
    commit(repo, {".cdkit.yml": pipeline("true", "logs: {keep: 1d}")})
    assert cdkit("run", cwd=repo).returncode == 0
    age(repo, 2, 2)
    cdkit("gc", cwd=repo)
    deployed = cdkit("deploy", "--env", "staging", cwd=repo)  # control: a pass whose logs are gone still releases
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr


def test_gc_prunes_the_oldest_runs_down_to_max_size(repo: Path) -> None:
    commit(repo, {".cdkit.yml": pipeline("head -c 3000 /dev/zero", "logs: {max_size: 7KB}")})
    for _ in range(4):
        assert cdkit("run", cwd=repo).returncode == 0
    summary = json.loads(cdkit("gc", "--json", cwd=repo).stdout)
    assert run_dirs(repo) == ["3", "4"]  # 4 x ~3 KB: the two oldest go, the rest fit in 7 KB
    assert summary["removed"] == 2 and summary["kept_bytes"] <= 7 * 1024


def test_a_run_prunes_by_itself_at_most_once_an_hour(repo: Path) -> None:
    commit(repo, {".cdkit.yml": pipeline("echo hello", "logs: {keep: 1d}")})
    for _ in range(2):
        assert cdkit("run", cwd=repo).returncode == 0
    age(repo, 1, 2)
    assert cdkit("run", cwd=repo).returncode == 0
    assert run_dirs(repo) == ["1", "2", "3"]  # the first run pruned (nothing to do) an hour ago at most
    (repo / ".git" / "cdkit" / PRUNE_STAMP).unlink()
    assert cdkit("run", cwd=repo).returncode == 0
    assert run_dirs(repo) == ["2", "3", "4"]


def test_the_run_being_recorded_is_never_pruned(tmp_path: Path) -> None:
    cdkit_dir = tmp_path / "cdkit"
    for run_id in (1, 2):
        (cdkit_dir / "logs" / str(run_id)).mkdir(parents=True)
        (cdkit_dir / "logs" / str(run_id) / "a.log").write_bytes(b"x" * 100)
    tiny = Retention(keep_seconds=DAY, max_bytes=10)
    summary = prune_if_due(cdkit_dir, tiny, protect=[2])
    assert summary is not None and summary.removed == 1
    assert sorted(p.name for p in (cdkit_dir / "logs").iterdir()) == ["2"]
    assert prune_if_due(cdkit_dir, tiny) is None  # not due again within the hour
    assert prune_logs(cdkit_dir, tiny).removed == 1  # gc does not wait
