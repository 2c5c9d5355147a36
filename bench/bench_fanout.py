#!/usr/bin/env python3
"""One job against one job per stage, under nektos/act: `python bench/bench_fanout.py [--rounds N]`.

The act suite's setup (tests/test_act.py, whose helpers this reuses: act on the host, offline,
the fake GitHub, the project's stand-ins for actions/checkout, setup-python and cache). The
pipeline: 6 stages of `sleep 3` in a 2-level graph (a, b, c; then d after a and b, e after b
and c, f after a and c) and a deployment environment, pushed to the release branch. Each round,
interleaved, runs:
- one job: `examples/deployment.yml` as `cdkit init` writes it (the `pipeline` job runs every
  stage, then the `deploy` job);
- fan-out: the workflow `cdkit workflow generate` writes (plan, 6 stage jobs, release, deploy),
  with act's default concurrency (as many jobs at once as the host has CPUs);
- fan-out, 8 at once: the same with `--concurrent-jobs 8`, as GitHub would start every ready job
  on its own runner.
The Action's virtualenv cache is warmed first and shared, so every job pays the warm cost.
Prints the median wall time of each, and its ratio to one job, as a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdkit.commands.init import render_workflow, tag_ref  # noqa: E402
from tests.fake_github import FakeGitHub  # noqa: E402
from tests.helpers import cdkit, commit, config  # noqa: E402
from tests.test_act import github_repo, run_act  # noqa: E402
from tests.test_action import push_payload  # noqa: E402

PIPELINE = config("""
    version: 1
    release_branch: main
    stages:
      - {name: a, run: sleep 3, needs: []}
      - {name: b, run: sleep 3, needs: []}
      - {name: c, run: sleep 3, needs: []}
      - {name: d, run: sleep 3, needs: [a, b]}
      - {name: e, run: sleep 3, needs: [b, c]}
      - {name: f, run: sleep 3, needs: [a, c]}
    environments:
      - name: production
        mode: deployment
        deploy: echo "deploying $CDKIT_SHA"
""")
VARIANTS = {"one job": ("single", ()), "fan-out (act default: one job per CPU at once)": ("fanout", ()),
            "fan-out, 8 jobs at once": ("fanout", ("--concurrent-jobs", "8"))}


def prepare(root: Path) -> tuple[Path, str, str, dict[str, Path]]:
    repo = github_repo(root / "repo")
    base = commit(repo, {"a.txt": "a"}, "first")
    (repo / ".cdkit.yml").write_text(PIPELINE)
    generated = cdkit("workflow", "generate", cwd=repo, env={"CDKIT_ACTION_REPO": str(root / "offline")})
    assert generated.returncode == 0, generated.stderr
    head = commit(repo, {"b.txt": "b"}, "six stages")
    single = root / "deployment.yml"
    single.write_text(render_workflow("deployment", None, action=tag_ref()))
    return repo, base, head, {"single": single, "fanout": repo / ".github" / "workflows" / "cdkit.yml"}


def timed(repo: Path, server: FakeGitHub, base: str, head: str, workflow: Path, cache: Path,
          act_args: tuple[str, ...]) -> float:
    started = time.perf_counter()
    run = run_act(repo, server, "push", push_payload(base, head), workflow, cache=cache, act_args=act_args)
    wall = time.perf_counter() - started
    if run.proc.returncode != 0 or run.outputs("deploy").get("result") != "deployed":
        sys.exit(f"{workflow.name} failed (act exit {run.proc.returncode}):\n{run.log[-4000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {name: [] for name in VARIANTS}
    server = FakeGitHub().start()
    try:
        with tempfile.TemporaryDirectory(prefix="cdkit-bench-fanout-") as tmp:
            repo, base, head, workflows = prepare(Path(tmp))
            cache = Path(tmp) / "cache"
            timed(repo, server, base, head, workflows["single"], cache, ())  # warms the virtualenv cache
            for n in range(args.rounds):
                for name, (kind, act_args) in VARIANTS.items():
                    walls[name].append(timed(repo, server, base, head, workflows[kind], cache, act_args))
                    print(f"round {n + 1}, {name}: {walls[name][-1]:.1f} s", file=sys.stderr)
    finally:
        server.stop()
    baseline = statistics.median(walls["one job"])
    print(f"6 stages of `sleep 3`, 2 levels (6 s of sleeping on the critical path); {os.cpu_count()} CPUs; "
          f"median of {args.rounds}")
    print("| workflow | jobs | wall (s) | vs one job |")
    print("|---|---:|---:|---:|")
    for name, (kind, _) in VARIANTS.items():
        median = statistics.median(walls[name])
        jobs = 2 if kind == "single" else 9
        print(f"| {name} | {jobs} | {median:.1f} | {median / baseline:.2f}x |")


if __name__ == "__main__":
    main()
