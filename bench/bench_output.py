#!/usr/bin/env python3
"""Stage output throughput, run by hand: `python bench/bench_output.py [--rounds N] [--mb 50] [--stages 20]`.

A stage that prints a lot (a verbose test suite, a build log) must cost about what
writing that output to a file costs. Measured side by side, interleaved round by round
(medians), with the same generator CMD (`GENERATOR` below: --mb MB of 80-byte lines):

1. one stage: `cdkit run` (its console output to a file, so prefixing, redaction and
   the full log file all happen) against `sh -c 'CMD > file'`;
2. --stages stages of that, `cdkit run --jobs 2`, against `xargs -P2 sh -c 'CMD > file'`;
3. the pre-push hook: `git push` through cdkit's hook with that stage, against `git push`
   through a plain hook that runs `sh -c 'CMD > file'`;
4. peak memory (max RSS of cdkit and what it waited for) at --mb/10, --mb and 4 x --mb:
   flat means output size does not matter.

Runs in the interpreter that runs it (a virtualenv with cdkit installed works as is).
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINE = "tests/test_module.py::test_something_rather_long[case-%07d] PASSED               [ 42%%]\n"
# Writes `MB` megabytes of test-runner-like lines, 64 KiB at a time (as a program writing to a pipe does).
GENERATOR = ("import sys\n"
             "line = {line!r}\n"
             "total = int(float(sys.argv[1]) * 1e6)\n"
             "out = sys.stdout.buffer\n"
             "written = n = 0\n"
             "while written < total:\n"
             "    block = ''.join(line % (n + i) for i in range(800)).encode()\n"
             "    n += 800\n"
             "    out.write(block)\n"
             "    written += len(block)\n")


def timed(cmd: list[str], *, cwd: Path, env: dict[str, str], stdout: Path | None = None) -> tuple[float, int]:
    """(seconds, peak RSS in MiB of the process and the children it waited for)."""
    with open(stdout or os.devnull, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{shlex.join(cmd)} failed with {proc.returncode}; its output is in {stdout}")
    return elapsed, usage.ru_maxrss // 1024


def git(*args: str, cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pipeline(stage_cmd: str, stages: int) -> str:
    return "version: 1\nstages:\n" + "".join(
        f"  - {{name: s{i:02d}, run: {stage_cmd!r}, needs: [], on: [pre-push, ci]}}\n" for i in range(stages))


def make_repo(root: Path, name: str, text: str, env: dict[str, str]) -> Path:
    repo = root / name
    repo.mkdir()
    (repo / ".cdkit.yml").write_text(text)
    git("init", "-q", "-b", "main", cwd=repo, env=env)
    git("add", "-A", cwd=repo, env=env)
    git("commit", "-qm", "bench", cwd=repo, env=env)
    return repo


class PushBench:
    """A repository pushed as the same one-commit fast-forward, again and again, through a given hook."""

    def __init__(self, root: Path, text: str, env: dict[str, str]) -> None:
        self.env = env
        self.remote = root / "remote.git"
        git("init", "-q", "--bare", "-b", "main", str(self.remote), cwd=root, env=env)
        self.repo = make_repo(root, "pushed", text, env)
        git("remote", "add", "origin", str(self.remote), cwd=self.repo, env=env)
        git("push", "-q", "--no-verify", "origin", "main", cwd=self.repo, env=env)
        self.base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=self.repo, capture_output=True,
                                   text=True, check=True).stdout.strip()
        (self.repo / "change.txt").write_text("change\n")
        git("add", "-A", cwd=self.repo, env=env)
        git("commit", "-qm", "change", cwd=self.repo, env=env)

    def push(self, hooks: Path, log: Path) -> tuple[float, int]:
        git("update-ref", "refs/heads/main", self.base, cwd=self.remote, env=self.env)
        git("update-ref", "refs/remotes/origin/main", self.base, cwd=self.repo, env=self.env)
        return timed(["git", "-c", f"core.hooksPath={hooks}", "push", "-q", "origin", "main"], cwd=self.repo,
                     env=self.env, stdout=log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=float, default=50.0, help="output of one stage, in MB (default 50)")
    parser.add_argument("--stages", type=int, default=20, help="stages of the parallel case (default 20)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "CDKIT"))}
    env.update({"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
                "GIT_COMMITTER_EMAIL": "b@b", "NO_COLOR": "1", "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull})
    cdkit = [sys.executable, "-m", "cdkit"]
    with tempfile.TemporaryDirectory(prefix="cdkit-bench-output-") as tmp:
        root = Path(tmp)
        gen = root / "gen.py"
        gen.write_text(GENERATOR.format(line=LINE))
        cmd = f"python3 {shlex.quote(str(gen))}"
        stage = f"{cmd} {args.mb:g}"
        one = make_repo(root, "one", pipeline(stage, 1), env)
        many = make_repo(root, "many", pipeline(stage, args.stages), env)
        sizes = {f"{mb:g} MB": make_repo(root, f"size{n}", pipeline(f"{cmd} {mb:g}", 1), env)
                 for n, mb in enumerate((args.mb / 10, args.mb, args.mb * 4))}
        push = PushBench(root, pipeline(stage, 1), env)
        subprocess.run([*cdkit, "hook", "install"], cwd=push.repo, env=env, check=True, stdout=subprocess.DEVNULL)
        plain_hooks = root / "plain-hooks"
        plain_hooks.mkdir()
        (plain_hooks / "pre-push").write_text(f"#!/bin/sh\nsh -c {shlex.quote(stage + ' > ' + str(root / 'hook.out'))}\n")
        (plain_hooks / "pre-push").chmod(0o755)
        out = root / "out.txt"
        xargs = ["sh", "-c", f"seq {args.stages} | xargs -P2 -I@ sh -c {shlex.quote(stage + ' > ' + str(root) + '/x@.out')}"]

        results: dict[str, list[float]] = {}
        memory: dict[str, list[int]] = {}

        def record(name: str, measured: tuple[float, int]) -> None:
            results.setdefault(name, []).append(measured[0])
            memory.setdefault(name, []).append(measured[1])

        for _ in range(args.rounds):  # interleaved: every contender once per round, same machine load
            record("floor-one", timed(["sh", "-c", f"{stage} > {out}"], cwd=root, env=env))
            record("cdkit-one", timed([*cdkit, "run"], cwd=one, env=env, stdout=out))
            record("floor-many", timed(xargs, cwd=root, env=env))
            record("cdkit-many", timed([*cdkit, "run", "--jobs", "2"], cwd=many, env=env, stdout=out))
            record("floor-hook", push.push(plain_hooks, out))
            record("cdkit-hook", push.push(push.repo / ".git" / "hooks", out))
            for name, repo in sizes.items():
                record(f"size {name}", timed([*cdkit, "run"], cwd=repo, env=env, stdout=out))
            for repo in (one, many, push.repo, *sizes.values()):  # keep the disk bounded between rounds
                for log in (repo / ".git" / "cdkit" / "logs").glob("*/*.log"):
                    log.unlink()

    med = {name: statistics.median(values) for name, values in results.items()}
    peak = {name: max(values) for name, values in memory.items()}
    total = args.mb * args.stages
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.rounds} interleaved rounds "
          f"(median); CMD = {args.mb:g} MB of 80-byte lines from a Python generator\n")
    print("| what | cdkit | floor | ratio |")
    print("|---|---:|---:|---:|")
    rows = [
        (f"one stage, {args.mb:g} MB: `cdkit run > file` vs `sh -c 'CMD > file'`", "cdkit-one", "floor-one"),
        (f"{args.stages} stages x {args.mb:g} MB ({total / 1000:g} GB), `--jobs 2` vs `xargs -P2 sh -c 'CMD > file'`",
         "cdkit-many", "floor-many"),
        (f"pre-push hook, one {args.mb:g} MB stage: `git push` vs a plain hook running `sh -c 'CMD > file'`",
         "cdkit-hook", "floor-hook"),
    ]
    for label, ours, floor in rows:
        print(f"| {label} | {med[ours]:.2f} s | {med[floor]:.2f} s | {med[ours] / med[floor]:.2f}x |")
    print()
    print("| output of one stage | `cdkit run` time | peak RSS (cdkit and its stage) |")
    print("|---|---:|---:|")
    for name in sizes:
        print(f"| {name} | {med['size ' + name]:.2f} s | {peak['size ' + name]} MiB |")


if __name__ == "__main__":
    main()
