#!/usr/bin/env python3
"""What the Action's cached virtualenv saves a job, under nektos/act: `python bench/bench_action_cache.py [--rounds N]`.

The act suite's setup (tests/test_act.py: act on the host, offline, the fake GitHub, the
project's stand-ins for actions/checkout, actions/setup-python and actions/cache), and its
smallest workflow: one job that checks out and runs `cdkit action` on a two-stage pipeline.
Each round runs it cold (an empty cache: a virtualenv, every dependency from the hash-pinned
lock, then cdkit) and warm (the same cache: the virtualenv restored, only cdkit reinstalled),
and reads act's own timing of the Action's steps. Prints medians as a Markdown table.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_github import FakeGitHub  # noqa: E402
from tests.helpers import commit  # noqa: E402
from tests.test_act import github_repo, one_job_workflow, run_act, single_job_pipeline  # noqa: E402
from tests.test_action import push_payload  # noqa: E402

STEPS = ("Key cdkit's virtualenv", "Restore cdkit's virtualenv", "Install cdkit's dependencies",
         "Check cdkit's install", "Install cdkit", "Run cdkit")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "µs": 1e-6}


def step_seconds(log: str) -> dict[str, float]:
    """act's `Success - Main <step> [1.234s]` lines, as seconds per step."""
    found: dict[str, float] = {}
    for name, value in re.findall(r"Success - Main (.+?) \[([^\]]+)\]", log):
        parts = re.findall(r"([\d.]+)(ms|µs|s|m)", value)
        found[name] = sum(float(n) * UNITS[u] for n, u in parts)
    return found


def one_run(root: Path, cache: Path, server: FakeGitHub) -> tuple[float, dict[str, float]]:
    repo = github_repo(root / "repo")
    base = commit(repo, {".cdkit.yml": single_job_pipeline(), "a.txt": "a"}, "the pipeline")
    head = commit(repo, {"b.txt": "b"}, "a change")
    workflow = one_job_workflow(root / "one-job.yml")
    started = time.perf_counter()
    run = run_act(repo, server, "push", push_payload(base, head), workflow, cache=cache)
    wall = time.perf_counter() - started
    if run.proc.returncode != 0:
        sys.exit(run.log[-4000:])
    return wall, step_seconds(run.log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, dict[str, float]]]] = {"cold": [], "warm": []}
    server = FakeGitHub().start()
    try:
        for n in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="cdkit-bench-cache-") as tmp:
                cache = Path(tmp) / "cache"
                for kind in ("cold", "warm"):
                    results[kind].append(one_run(Path(tmp) / f"{kind}", cache, server))
                    print(f"round {n + 1} {kind}: {results[kind][-1][0]:.1f} s", file=sys.stderr)
    finally:
        server.stop()
    print("| job | act run, wall (s) | " + " | ".join(STEPS) + " |")
    print("|---|---:|" + "---:|" * len(STEPS))
    for kind, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        steps = [statistics.median(s.get(name, 0.0) for _, s in runs) for name in STEPS]
        shown = [f"{v:.1f}" if v else "skipped" for v in steps]
        print(f"| {kind} | {wall:.1f} | " + " | ".join(shown) + " |")


if __name__ == "__main__":
    main()
