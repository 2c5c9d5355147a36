#!/usr/bin/env python3
"""Core benchmarks, run by hand: `python bench/bench_core.py [--repeat N]`.

1. Five independent `sleep 0.2` stages (`needs: []`): wall time of `cdkit run`
   (the stages overlap, so it should be well under 1 s, against 1 s in series).
2. Start-up: `cdkit --version` and `cdkit --help` against `python -c pass`, as a ratio, interleaved
   in one run so both see the same machine load.
Prints a Markdown table for the README.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = "version: 1\nstages:\n" + "".join(
    f"  - {{name: s{i}, run: 'sleep 0.2', needs: []}}\n" for i in range(5)
)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def make_repo(root: Path, env: dict[str, str]) -> Path:
    repo = root / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        if args[0] == "add":
            (repo / ".cdkit.yml").write_text(PIPELINE)
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b", "NO_COLOR": "1"}
    cdkit = [sys.executable, "-m", "cdkit"]
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp), env)
        parallel, series, version, helps, bare = [], [], [], [], []
        for _ in range(args.repeat):  # interleaved: each round measures every command once
            parallel.append(timed([*cdkit, "run", "--jobs", "5"], repo, env))
            series.append(timed([*cdkit, "run", "--jobs", "1"], repo, env))
            version.append(timed([*cdkit, "--version"], repo, env))
            helps.append(timed([*cdkit, "--help"], repo, env))
            bare.append(timed([sys.executable, "-c", "pass"], repo, env))
    med = statistics.median
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.repeat} interleaved rounds (median)\n")
    print("| measurement | median | note |")
    print("|---|---|---|")
    print(f"| `cdkit run`, five independent `sleep 0.2` stages, `--jobs 5` | {med(parallel):.3f} s | 1.0 s of sleeping |")
    print(f"| the same with `--jobs 1` (in series) | {med(series):.3f} s | |")
    print(f"| `cdkit --version` | {med(version) * 1000:.0f} ms | {med(version) / med(bare):.1f}x `python -c pass` |")
    print(f"| `cdkit --help` | {med(helps) * 1000:.0f} ms | {med(helps) / med(bare):.1f}x `python -c pass` |")
    print(f"| `python -c pass` | {med(bare) * 1000:.0f} ms | baseline |")


if __name__ == "__main__":
    main()
