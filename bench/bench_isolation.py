#!/usr/bin/env python3
"""What judging the pushed commit in place costs a push: `python bench/bench_isolation.py [--files N] [--repeat N]`.

The hook judges a push in one of three ways (README, "Which tree the stages see"):
- the work tree as it is, when HEAD is the pushed commit and nothing is uncommitted;
- in place with the user's work set aside, when the tree has uncommitted changes or
  another branch is pushed (snapshot, switch, put back);
- a temporary worktree, only for trees that cannot be switched (sparse checkouts...).

Each round, interleaved so every case sees the same machine load, runs the installed
hook's entry point (`python -m cdkit hook run pre-push`) on a repository of `--files`
files with one `true` stage, for: a clean HEAD; HEAD with 20 modified and 5 untracked
files; another branch 50 files away. Beside them, the floor for the old isolation: `git
worktree add` + `git worktree remove` of the same commit, which a run in a temporary
worktree pays before any stage starts. Prints medians and ratios as a Markdown table.
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

PIPELINE = "version: 1\nstages:\n  - {name: check, run: 'true', on: [pre-push]}\n"


def git(repo: Path, *args: str, env: dict[str, str]) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_project(root: Path, files: int, env: dict[str, str]) -> tuple[Path, str, str, str]:
    """(repo, base on the remote, HEAD one commit ahead, another branch's tip 50 files away)."""
    remote = root / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True, env=env)
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main", env=env)
    (repo / ".cdkit.yml").write_text(PIPELINE)
    for i in range(files):
        path = repo / "src" / f"pkg{i % 40}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {i}\n" * 20)
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-qm", "base", env=env)
    git(repo, "remote", "add", "origin", str(remote), env=env)
    git(repo, "push", "-q", "origin", "main", env=env)
    base = git(repo, "rev-parse", "HEAD", env=env)
    git(repo, "checkout", "-q", "-b", "other", env=env)
    for i in range(50):
        (repo / "src" / f"pkg{i % 40}" / f"mod{i}.py").write_text("VALUE = 'other'\n")
    git(repo, "commit", "-qam", "other", env=env)
    other = git(repo, "rev-parse", "HEAD", env=env)
    git(repo, "checkout", "-q", "main", env=env)
    (repo / "README").write_text("bench\n")
    git(repo, "add", "README", env=env)
    git(repo, "commit", "-qm", "head", env=env)
    return repo, base, git(repo, "rev-parse", "HEAD", env=env), other


def dirty(repo: Path, files: int, on: bool) -> None:
    for i in range(min(20, files)):
        path = repo / "src" / f"pkg{i % 40}" / f"mod{i}.py"
        text = path.read_text()
        path.write_text(text + "# edited\n" if on else text.replace("# edited\n", ""))
    for i in range(5):
        untracked = repo / f"scratch{i}.txt"
        if on:
            untracked.write_text("notes\n")
        else:
            untracked.unlink()


def hook(repo: Path, ref: str, sha: str, base: str, env: dict[str, str]) -> float:
    line = f"{ref} {sha} {ref} {base}\n".encode()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cdkit", "hook", "run", "pre-push", "origin", "origin"],
                          cwd=repo, env=env, input=line, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the hook failed: {proc.stderr.decode()}")
    return elapsed


def worktree_floor(repo: Path, sha: str, scratch: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    git(repo, "worktree", "add", "--detach", "--quiet", str(scratch), sha, env=env)
    git(repo, "worktree", "remove", "--force", str(scratch), env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b", "NO_COLOR": "1", "GIT_CONFIG_NOSYSTEM": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        repo, base, head, other = make_project(Path(tmp), args.files, env)
        clean, set_aside, branch, floor = [], [], [], []
        for _ in range(args.repeat):
            clean.append(hook(repo, "refs/heads/main", head, base, env))
            dirty(repo, args.files, True)
            set_aside.append(hook(repo, "refs/heads/main", head, base, env))
            dirty(repo, args.files, False)
            branch.append(hook(repo, "refs/heads/other", other, base, env))
            floor.append(worktree_floor(repo, head, Path(tmp) / "wt", env))
    med = statistics.median
    ms = lambda xs: f"{med(xs) * 1000:.0f} ms"  # noqa: E731
    added = lambda xs: f"+{(med(xs) - med(clean)) * 1000:.0f} ms"  # noqa: E731
    print(f"{args.files} files, one `true` stage; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"git {git(Path('.'), '--version', env=env).split()[-1]}; "
          f"{args.repeat} interleaved rounds (median)\n")
    print("| push | hook time | added to the clean case |")
    print("|---|---:|---:|")
    print(f"| clean HEAD (the work tree as it is) | {ms(clean)} | baseline |")
    print(f"| HEAD with 20 modified + 5 untracked files (set aside, judged in place, put back) | {ms(set_aside)} | "
          f"{added(set_aside)} ({med(set_aside) / med(clean):.2f}x) |")
    print(f"| another branch, 50 files away (set aside, checked out in place, back) | {ms(branch)} | "
          f"{added(branch)} ({med(branch) / med(clean):.2f}x) |")
    print(f"| floor of a temporary worktree: `git worktree add` + `remove` alone | {ms(floor)} | "
          "(before any stage; and editable installs still see the work tree) |")


if __name__ == "__main__":
    main()
