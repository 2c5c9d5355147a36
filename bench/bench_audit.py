#!/usr/bin/env python3
"""Audit chain benchmark, run by hand: `python bench/bench_audit.py [--deployments 100000]`.

Writes a schema-7 ledger (before the chain) holding N deployments, N/2 approvals, N/2 runs with
two stage results each and N/10 audit lines, then times, on that real SQLite file:

1. the migration to the current schema, which seals every record (the backfill);
2. `cdkit audit verify`'s check of all of it (`chain.verify` in one read snapshot);
3. one more sealed write (a deployment started and finished), which must not grow with the history.

Prints a Markdown table for the README.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdkit.history import chain  # noqa: E402
from cdkit.ledger import MIGRATIONS, Ledger, _statements  # noqa: E402


def schema_7(path: Path, count: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:7]:
        assert isinstance(migration, str)
        for statement in _statements(migration):
            db.execute(statement)
    db.execute("PRAGMA user_version = 7")
    db.execute("BEGIN")
    db.executemany("INSERT INTO deployments (environment, sha, status, started_at, finished_at, deployed_by)"
                   " VALUES ('prod', ?, 'success', ?, ?, 'Ada <ada@example.com>')",
                   [(f"{n:040x}", n * 600.0, n * 600.0 + 30) for n in range(count)])
    db.executemany("INSERT INTO approvals (sha, environment, approver, via, created_at) VALUES (?, 'prod', 'bob',"
                   " 'local', ?)", [(f"{n:040x}", n * 1200.0) for n in range(count // 2)])
    db.executemany("INSERT INTO runs (trigger, event, sha, status, started_at, finished_at) VALUES"
                   " ('pre-push', 'pre-push', ?, 'passed', ?, ?)",
                   [(f"{n:040x}", n * 1200.0, n * 1200.0 + 5) for n in range(count // 2)])
    db.executemany("INSERT INTO stage_results (run_id, stage, status, exit_code) VALUES (?, ?, 'passed', 0)",
                   [(n + 1, stage) for n in range(count // 2) for stage in ("build", "test")])
    db.executemany("INSERT INTO audit (at, what) VALUES (?, ?)",
                   [(n * 6000.0, f"line {n}") for n in range(count // 10)])
    db.execute("COMMIT")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.sqlite3"
        schema_7(path, args.deployments)
        start = time.perf_counter()
        with Ledger(path) as ledger:
            migrated = time.perf_counter() - start
            verify_s, write_s = [], []
            for _ in range(args.repeat):
                began = time.perf_counter()
                with ledger.snapshot() as db:
                    result = chain.verify(db)
                verify_s.append(time.perf_counter() - began)
                assert result.intact, result.problems[:3]
                began = time.perf_counter()
                d = ledger.start_deployment(environment="prod", sha="f" * 40, rollback=False, approval=None)
                ledger.finish_deployment(d, "success")
                write_s.append(time.perf_counter() - began)
    med = statistics.median
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}, "
          f"{args.deployments:,} deployments ({result.entries:,} chain entries), {args.repeat} rounds (median)\n")
    print("| step | time |")
    print("|---|---|")
    print(f"| migration: seal every record (once) | {migrated * 1000:.0f} ms |")
    print(f"| `cdkit audit verify` | {med(verify_s) * 1000:.0f} ms |")
    print(f"| a deployment started and finished (two sealed writes) | {med(write_s) * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
