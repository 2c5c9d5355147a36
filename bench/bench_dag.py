#!/usr/bin/env python3
"""What cdkit's runner costs per stage: 100 stages of `true` in a DAG, run by hand.

`python bench/bench_dag.py [--rounds N] [--lefthook PATH]` runs, interleaved round by
round (medians), side by side:

- `cdkit run --jobs 2` on 10 levels of 10 stages, each stage needing its column's stage
  in the level above (so 10 chains of 10 that two workers share);
- `make -j2` on the same graph (each target a `true` recipe depending on the one above);
- lefthook running 100 `true` commands with `parallel: true` (it has no dependencies
  between commands: this is its best case, not the same graph);
- `python -I -c pass`, the floor of any Python tool's start-up;
- the Popen floor: Python itself starting the same 100 `sh -c true` two at a time the way
  cdkit starts a stage (`subprocess.Popen` with a pipe, a session and the environment),
  with nothing else: what any Python runner pays per stage before doing any work.

cdkit's per-stage overhead is (cdkit - start-up) / 100, where start-up is a one-stage
`cdkit run` in the same round. Run it from a virtualenv holding cdkit and lefthook
(`pip install -e . lefthook`). Prints a Markdown table for the README.
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

from bench_hook import binary_version, find_lefthook

LEVELS, WIDTH = 10, 10
STAGES = LEVELS * WIDTH


def stage_name(level: int, column: int) -> str:
    return f"s{level}_{column}"


def cdkit_pipeline(levels: int, width: int) -> str:
    lines = ["version: 1", "stages:"]
    for level in range(levels):
        for column in range(width):
            needs = f"[{stage_name(level - 1, column)}]" if level else "[]"
            lines += [f"  - name: {stage_name(level, column)}", '    run: "true"', f"    needs: {needs}"]
    return "\n".join(lines) + "\n"


def makefile(levels: int, width: int) -> str:
    last = " ".join(stage_name(levels - 1, column) for column in range(width))
    rules = [f"all: {last}", f".PHONY: all {' '.join(stage_name(lv, c) for lv in range(levels) for c in range(width))}"]
    for level in range(levels):
        for column in range(width):
            needs = stage_name(level - 1, column) if level else ""
            rules.append(f"{stage_name(level, column)}: {needs}\n\t@true")
    return "\n".join(rules) + "\n"


def lefthook_config(count: int) -> str:
    return "ci:\n  parallel: true\n  commands:\n" + "".join(f"    c{i}:\n      run: \"true\"\n" for i in range(count))


POPEN_FLOOR = """
import subprocess, sys
left, running = int(sys.argv[1]), []
while left or running:
    while left and len(running) < 2:
        running.append(subprocess.Popen(["/bin/sh", "-c", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True))
        left -= 1
    done = running.pop(0)
    done.stdout.read()
    done.wait()
    done.stdout.close()
"""


def make_repo(path: Path, files: dict[str, str], env: dict[str, str]) -> Path:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=path, env=env, check=True, stdout=subprocess.DEVNULL)
    return path


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--lefthook", help="the lefthook binary (default: the one `pip install lefthook` ships)")
    args = parser.parse_args()
    lefthook = find_lefthook(args.lefthook)
    python = sys.executable
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@example.com", "NO_COLOR": "1", "LEFTHOOK_QUIET": "meta,summary,execution"}
    # PYTHONDONTWRITEBYTECODE (set on some machines and images) would recompile every changed module
    # on each timed run; the warm-up writes the bytecode caches, as `pip install` does for users.
    for name in ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_ACTIONS", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="cdkit-bench-dag-") as tmp:
        root = Path(tmp)
        dag = make_repo(root / "dag", {".cdkit.yml": cdkit_pipeline(LEVELS, WIDTH), "Makefile": makefile(LEVELS, WIDTH),
                                       "lefthook.yml": lefthook_config(STAGES)}, env)
        one = make_repo(root / "one", {".cdkit.yml": cdkit_pipeline(1, 1)}, env)
        cases = {
            "cdkit run --jobs 2 (100 stages)": ([python, "-m", "cdkit", "run", "--jobs", "2"], dag),
            "cdkit run (1 stage: start-up)": ([python, "-m", "cdkit", "run"], one),
            "make -j2": (["make", "-s", "-j2"], dag),
            "lefthook run ci (parallel)": ([str(lefthook), "run", "ci"], dag),
            "python -I -c pass": ([python, "-I", "-c", "pass"], dag),
            "Popen floor (100 stages)": ([python, "-I", "-c", POPEN_FLOOR, str(STAGES)], dag),
            "Popen floor (1 stage)": ([python, "-I", "-c", POPEN_FLOOR, "1"], dag),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for cmd, cwd in cases.values():  # warm-up, untimed: .pyc files, the ledger, the pipeline cache
            timed(cmd, cwd, env)
        names = list(cases)
        for i in range(args.rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                times[name].append(timed(*cases[name], env))
    med = {name: statistics.median(values) * 1000 for name, values in times.items()}
    make_version = subprocess.run(["make", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {make_version}, "
          f"lefthook {binary_version(lefthook)}; {args.rounds} interleaved rounds, median\n")
    make_ms = med["make -j2"]
    print("| what | time (ms) | vs make -j2 |")
    print("|---|---:|---:|")
    for name in names:
        print(f"| {name} | {med[name]:.0f} | {med[name] / make_ms:.2f}x |")
    per_stage = (med["cdkit run --jobs 2 (100 stages)"] - med["cdkit run (1 stage: start-up)"]) / (STAGES - 1)
    floor = (med["Popen floor (100 stages)"] - med["Popen floor (1 stage)"]) / (STAGES - 1)
    print(f"\ncdkit per stage, start-up taken off: {per_stage:.2f} ms; the Popen floor's: {floor:.2f} ms "
          f"(cdkit's own cost {per_stage - floor:.2f} ms per stage)")
    print(f"\nreproduce: python bench/bench_dag.py --rounds {args.rounds}")


if __name__ == "__main__":
    main()
