#!/usr/bin/env python3
"""Command cost against history length: the same commands at 200 and at 100,000 recorded runs.

Run by hand, in a virtualenv with cdkit installed: `python bench/bench_history.py [--rounds N] [--runs N]`.

Two repositories of the same shape (two stages; `staging` in deployment mode, `prod` in
delivery mode with a local approval). Their ledgers are filled through SQLite directly
(fast, untimed): each run has two stage results, every 10th run a deployment to staging,
every 50th an approval, and the outbox holds two delivered statuses per run. HEAD has a few
real runs on top. Then, interleaved, each command in each repository:

- `cdkit status` (HEAD's results, outbox counts, per-environment gate verdicts);
- `cdkit environments` (what runs where, last attempt);
- `cdkit deploy --env prod` (the gate: stages pass, staging runs it, no approval: refused, exit 1);
- `cdkit log` (the last 20 runs);
- `cdkit run` (two `true` stages recorded, then the deploy step finds staging already runs HEAD).

Prints a Markdown table for the README: medians and the ratio big / small (1.0x = flat).
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = """version: 1
stages:
  - {name: build, run: 'true'}
  - {name: test, run: 'true'}
environments:
  - {name: staging, mode: deployment, deploy: 'true'}
  - {name: prod, mode: delivery, deploy: 'true', approval: {via: local, required: 1}}
"""
ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
       "GIT_COMMITTER_EMAIL": "b@b", "NO_COLOR": "1"}
CDKIT = [sys.executable, "-m", "cdkit"]
COMMANDS = {
    "cdkit status": ["status"],
    "cdkit environments": ["environments"],
    "cdkit deploy --env prod (gate refuses)": ["deploy", "--env", "prod"],
    "cdkit log": ["log"],
    "cdkit run (two stages, staging already runs HEAD)": ["run"],
}


def sh(*cmd: str, cwd: Path, check: bool = True) -> int:
    return subprocess.run(cmd, cwd=cwd, env=ENV, check=check, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode


def make_repo(path: Path, runs: int) -> Path:
    path.mkdir()
    sh("git", "init", "-q", "-b", "main", cwd=path)
    (path / ".cdkit.yml").write_text(PIPELINE)
    sh("git", "add", "-A", cwd=path)
    sh("git", "commit", "-qm", "before", cwd=path)
    before = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True).stdout.strip()
    sh("git", "commit", "-qm", "bench", "--allow-empty", cwd=path)
    sh(*CDKIT, "run", cwd=path)  # creates the ledger (current schema)
    fill(path / ".git" / "cdkit" / "ledger.sqlite3", runs, staging_now=before)
    sh(*CDKIT, "run", cwd=path)  # HEAD's latest results come after the filler
    sh(*CDKIT, "deploy", "--env", "staging", cwd=path)  # and staging runs HEAD
    return path


def fill(ledger: Path, runs: int, *, staging_now: str) -> None:
    """`runs` runs of random SHAs; the last deployment to staging is `staging_now` (HEAD's parent)."""
    rng = random.Random(runs)
    now = time.time() - runs * 60
    db = sqlite3.connect(ledger)
    with db:
        for i in range(runs):
            sha = f"{rng.getrandbits(160):040x}"
            at = now + i * 60
            run_id = db.execute(
                "INSERT INTO runs (trigger, event, sha, ref, status, started_at, finished_at, pid, host)"
                " VALUES ('ci', 'push', ?, 'refs/heads/main', 'passed', ?, ?, 1, 'bench')", (sha, at, at + 5),
            ).lastrowid
            db.executemany(
                "INSERT INTO stage_results (run_id, stage, status, started_at, finished_at, command)"
                " VALUES (?, ?, 'passed', ?, ?, 'true')", [(run_id, "build", at, at + 1), (run_id, "test", at + 1, at + 5)],
            )
            db.executemany(
                "INSERT INTO outbox (key, kind, payload, state, created_at, delivered_at)"
                " VALUES (?, 'status', '{}', 'delivered', ?, ?)",
                [(f"status:{sha}:{stage}:{run_id}", at, at + 6) for stage in ("build", "test")],
            )
            if i % 10 == 0:
                db.execute("INSERT INTO deployments (environment, sha, status, started_at, finished_at)"
                           " VALUES ('staging', ?, 'success', ?, ?)", (sha, at + 6, at + 9))
            if i % 50 == 0:
                db.execute("INSERT INTO approvals (sha, environment, approver, via, created_at)"
                           " VALUES (?, 'prod', 'Ada <ada@example.com>', 'local', ?)", (sha, at + 10))
        db.execute("INSERT INTO deployments (environment, sha, status, started_at, finished_at)"
                   " VALUES ('staging', ?, 'success', ?, ?)", (staging_now, now + runs * 60, now + runs * 60 + 1))
    db.close()


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    sh(*CDKIT, *args, cwd=cwd, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the big ledger (the small one: 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = make_repo(Path(tmp) / "small", 200)
        big = make_repo(Path(tmp) / "big", args.runs)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for name, command in COMMANDS.items():
                for label, repo in (("small", small), ("big", big)):
                    times.setdefault((name, label), []).append(timed(command, repo))
        med = {key: statistics.median(value) for key, value in times.items()}
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}; "
          f"{args.rounds} interleaved rounds (median)\n")
    print(f"| command | 200 runs | {args.runs:,} runs | ratio |")
    print("|---|---:|---:|---:|")
    for name in COMMANDS:
        s, b = med[(name, "small")], med[(name, "big")]
        print(f"| `{name}` | {s * 1000:.0f} ms | {b * 1000:.0f} ms | {b / s:.2f}x |")


if __name__ == "__main__":
    main()
