#!/usr/bin/env python3
"""`paths` filters over a big change set: cdkit's `make_plan` against pre-commit's filter and a floor.

Run by hand, in a virtualenv with cdkit and pre-commit installed:
`python bench/bench_globs.py [--rounds N] [--with-seed]`.

100,000 changed files (`services/svcNN/src/modM/fK.py`, 25 services), and 50 stages of 10
globs each (GitHub filter syntax, one `!` exclusion and one `**/` pattern per stage); stages
25-49 name services that did not change, so they match nothing and must look everywhere.

- cdkit: `cdkit.plan.make_plan` on the parsed pipeline, as `cdkit plan` / the hook call it
  (symlink lookup off: this measures the globs).
- pre-commit: `pre_commit.commands.run.filter_by_include_exclude`, what pre-commit runs per
  hook, with each stage's globs as one `files` regex and its exclusion as `exclude`: it
  builds each hook's full file list, as pre-commit does.
- first-match floor: per stage, the same single regex tested file by file in order, stopping
  at the first selected file: the least a regex-per-file filter can do.
- seed (with --with-seed, slow): cdkit's previous matcher (`glob_match` per file and pattern,
  every stage's full match list), reimplemented here for comparison.

Rounds are interleaved; medians. Prints a Markdown table for the README.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable

from cdkit.config import load_text
from cdkit.events import Trigger
from cdkit.globs import glob_match, glob_regex
from cdkit.plan import make_plan

SERVICES_CHANGED = 25
STAGES = 50


def changed_files() -> list[str]:
    return [f"services/svc{s:02d}/src/mod{m}/f{i}.py"
            for s in range(SERVICES_CHANGED) for m in range(80) for i in range(50)]


def stage_globs(s: int) -> list[str]:
    return [
        f"services/svc{s:02d}/src/**/*.py",
        f"services/svc{s:02d}/Dockerfile",
        f"services/svc{s:02d}/pyproject.toml",
        f"libs/common{s:02d}/**",
        f"proto/svc{s:02d}/*.proto",
        f"docs/svc{s:02d}/**/*.md",
        f"config/svc{s:02d}.yml",
        f"**/svc{s:02d}.lock",
        f"scripts/svc{s:02d}/*",
        f"!services/svc{s:02d}/src/**/test_*.py",
    ]


def pipeline_text() -> str:
    lines = ["version: 1", "stages:"]
    for s in range(STAGES):
        globs = ", ".join(f"'{g}'" for g in stage_globs(s))
        lines.append(f"  - {{name: s{s}, run: 'true', on: [ci], needs: [], paths: [{globs}]}}")
    return "\n".join(lines) + "\n"


def one_regex(globs: list[str]) -> tuple[str, str]:
    """(include, exclude) regexes for pre-commit's `files` / `exclude` from GitHub-style globs."""
    include = "|".join(f"(?:{glob_regex(g).pattern})" for g in globs if not g.startswith("!"))
    exclude = "|".join(f"(?:{glob_regex(g[1:]).pattern})" for g in globs if g.startswith("!")) or "^$"
    return f"^(?:{include})", f"^(?:{exclude})"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def seed_matching(patterns: list[str], files: list[str]) -> list[str]:
    selected = []
    for path in files:
        keep = False
        for pattern in patterns:
            if pattern.startswith("!"):
                if keep and glob_match(pattern[1:], path):
                    keep = False
            elif not keep and glob_match(pattern, path):
                keep = True
        if keep:
            selected.append(path)
    return selected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--with-seed", action="store_true", help="also time the previous matcher (about 30 s)")
    args = parser.parse_args()
    from pre_commit.commands.run import filter_by_include_exclude

    files = changed_files()
    pipeline = load_text(pipeline_text())
    trigger = Trigger(kind="ci", event="push", repo=None, ref="refs/heads/main", head_sha="0" * 40,
                      base_sha=None, changed_files=tuple(files))
    regexes = [one_regex(stage_globs(s)) for s in range(STAGES)]
    compiled = [(re.compile(inc), re.compile(exc)) for inc, exc in regexes]

    def cdkit() -> object:
        return make_plan(pipeline, trigger)

    def pre_commit() -> object:
        return [list(filter_by_include_exclude(files, inc, exc)) for inc, exc in regexes]

    def floor() -> object:
        return [next((f for f in files if inc.search(f) and not exc.search(f)), None) for inc, exc in compiled]

    # The same decisions, or the comparison means nothing.
    plan = cdkit()
    assert [p.runs for p in plan.stages] == [bool(x) for x in floor()] == [bool(x) for x in pre_commit()]
    runs = sum(p.runs for p in plan.stages)

    contenders: dict[str, Callable[[], object]] = {"cdkit make_plan": cdkit, "pre-commit filter": pre_commit,
                                                   "first-match floor": floor}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    med = {name: statistics.median(t) for name, t in times.items()}
    if args.with_seed:
        med["seed matcher (before)"] = timed(lambda: [seed_matching(stage_globs(s), files) for s in range(STAGES)])

    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; {len(files):,} changed files, "
          f"{STAGES} stages x 10 globs ({runs} run, {STAGES - runs} match nothing); "
          f"{args.rounds} interleaved rounds (median)\n")
    print("| filter | time | vs cdkit |")
    print("|---|---:|---:|")
    for name, value in med.items():
        print(f"| {name} | {value * 1000:.1f} ms | {value / med['cdkit make_plan']:.2f}x |")


if __name__ == "__main__":
    main()
