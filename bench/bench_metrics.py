#!/usr/bin/env python3
"""Metrics benchmark, run by hand: `python bench/bench_metrics.py [--deployments 100000] [--repeat 5]`.

Writes N deployments to one environment into a real SQLite ledger (2 % failed, every 50th
a rollback, one new commit per deployment in an in-memory first-parent history with a fix
commit now and then), then times, separately (median of the rounds):

1. loading them from the ledger into history records (`records.load_ledger`);
2. the changes each deployment brought (`changes.changes_by_deployment`, the commit graph walk);
3. the four keys (`metrics.compute`).

Reading the commit graph from git (`git log` once over the deployed commits) is not in it:
it costs what git costs for the repository's history, whatever the number of deployments.
Prints a Markdown table for the README.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdkit.git import CommitNode  # noqa: E402
from cdkit.history.changes import changes_by_deployment  # noqa: E402
from cdkit.history.metrics import compute  # noqa: E402
from cdkit.history.records import load_ledger  # noqa: E402
from cdkit.ledger import Ledger  # noqa: E402

T0 = 1_767_225_600.0  # 2026-01-01 UTC


def sha(n: int) -> str:
    return f"{n:040x}"


def fill(ledger: Ledger, count: int) -> dict[str, CommitNode]:
    graph: dict[str, CommitNode] = {}
    rows = []
    for n in range(count):
        when = T0 + n * 600.0  # one deployment every 10 minutes
        graph[sha(n)] = CommitNode(sha(n), (sha(n - 1),) if n else (), int(when - 3600),
                                   "fix: the last one" if n % 37 == 0 else f"change {n}")
        rollback = n % 50 == 49
        status = "failure" if n % 50 == 7 else "success"
        rows.append(("prod", sha(n - 1) if rollback else sha(n), status, int(rollback), when, when + 30.0))
    with ledger.transaction() as db:
        db.executemany("INSERT INTO deployments (environment, sha, status, rollback, started_at, finished_at)"
                       " VALUES (?, ?, ?, ?, ?, ?)", rows)
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    load_s, changes_s, compute_s, cpu_s = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, Ledger(Path(tmp) / "ledger.sqlite3") as ledger:
        graph = fill(ledger, args.deployments)
        for _ in range(args.repeat):
            cpu = time.process_time()
            start = time.perf_counter()
            deployments = load_ledger(ledger.db)
            loaded = time.perf_counter()
            changes = changes_by_deployment(deployments, graph)
            walked = time.perf_counter()
            result = compute(deployments, changes, since=None, until=T0 + args.deployments * 600.0)
            done = time.perf_counter()
            load_s.append(loaded - start)
            changes_s.append(walked - loaded)
            compute_s.append(done - walked)
            cpu_s.append(time.process_time() - cpu)
    prod = result["prod"].as_data()
    med = statistics.median
    total = med(load_s) + med(changes_s) + med(compute_s)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}, "
          f"{args.deployments:,} deployments, {args.repeat} rounds (median)\n")
    print("| step | median |")
    print("|---|---|")
    print(f"| load from the ledger | {med(load_s) * 1000:.0f} ms |")
    print(f"| changes per deployment (graph walk) | {med(changes_s) * 1000:.0f} ms |")
    print(f"| the four keys | {med(compute_s) * 1000:.0f} ms |")
    print(f"| **total** | **{total * 1000:.0f} ms** |")
    print(f"| total CPU time (what the machine's load does not inflate) | {med(cpu_s) * 1000:.0f} ms |")
    print(f"\n(check: {prod['deployment_frequency']['deployments']:,} live, change failure rate "
          f"{prod['change_failure_rate']['rate']}, {prod['lead_time_for_changes']['changes']:,} changes)")


if __name__ == "__main__":
    main()
