#!/usr/bin/env python3
"""What a pre-push hook adds to `git push`: cdkit against pre-commit, lefthook and bare Python.

Run by hand: `python bench/bench_hook.py [--rounds N] [--lefthook PATH]`.

One repository, one bare remote, and one hooks directory per contender, picked per
push with `git -c core.hooksPath=DIR push`, so every push is the same fast-forward of
one commit, in the same repository, under the same machine load. Rounds are
interleaved (each round pushes once with every contender, in a rotating order), and
the remote is reset untimed between pushes.

- no hook: the baseline.
- cdkit: `cdkit hook install`'s hook; one `on: pre-push` stage running `true`.
- pre-commit: its installed hook; one `repo: local`, `language: system` hook running `true`.
- lefthook: one command running `true`; the hook calls the binary by absolute path.
- python -I: a stdlib-only hook (read stdin, run `true`): the floor for any Python hook.

Then five independent `sleep 0.2` stages: cdkit (`needs: []`) against lefthook
(`parallel: true`), in a second repository of the same shape.

Last, pushes that run nothing, against a hook that only starts Python (`python -I -c pass`, and
`python -I -S -c pass`: cdkit's hook starts its interpreter with `-S` too): a push deleting a
branch, a push to a pipeline with no `on: pre-push` stage, and the hook run by hand with empty
stdin (no `git push` around it).

Run it from a virtualenv holding cdkit, pre-commit and lefthook (`pip install -e . pre-commit
lefthook`): the hooks call that venv's python, and lefthook's own Go binary from its pip
package is called by absolute path (--lefthook PATH picks another; without either, npm's
`lefthook@2.2.1` is installed into a cache). The version printed is the binary's own
`lefthook version`. Prints a Markdown table for the README.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEFTHOOK_NPM = "2.2.1"  # only when neither --lefthook, `pip install lefthook` nor PATH has one

CDKIT_NOOP = "version: 1\nstages:\n  - name: noop\n    run: \"true\"\n    on: [pre-push]\n"
CDKIT_SLEEP = "version: 1\nstages:\n" + "".join(
    f"  - name: s{i}\n    run: sleep 0.2\n    on: [pre-push]\n    needs: []\n" for i in range(5))
PRE_COMMIT_NOOP = """repos:
  - repo: local
    hooks:
      - id: noop
        name: noop
        entry: "true"
        language: system
        stages: [pre-push]
        pass_filenames: false
        always_run: true
"""
LEFTHOOK_NOOP = "pre-push:\n  commands:\n    noop:\n      run: \"true\"\n"
LEFTHOOK_SLEEP = "pre-push:\n  parallel: true\n  commands:\n" + "".join(
    f"    s{i}:\n      run: sleep 0.2\n" for i in range(5))
CDKIT_CI_ONLY = "version: 1\nstages:\n  - name: test\n    run: \"true\"\n    on: [ci]\n"
BARE_PYTHON_HOOK = "#!/bin/sh\nexec {python} -I -c pass\n"
BARE_PYTHON_S_HOOK = "#!/bin/sh\nexec {python} -I -S -c pass\n"
BARE = ("python -I -c pass", "python -I -S -c pass")
PYTHON_HOOK = """#!/bin/sh
exec {python} -I -c 'import subprocess, sys; sys.stdin.buffer.read(); sys.exit(subprocess.run(["true"]).returncode)' "$@"
"""


def run(*cmd: str, cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def find_lefthook(explicit: str | None) -> Path:
    """The lefthook binary itself (never a wrapper script: that would add an interpreter's start-up)."""
    if explicit:
        return Path(explicit).resolve()
    spec = importlib.util.find_spec("lefthook")  # `pip install lefthook` ships the Go binary inside
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            found = sorted(Path(location).glob("bin/lefthook-*/lefthook"))
            if found:
                return found[0]
    on_path = shutil.which("lefthook")
    if on_path and not Path(on_path).read_bytes()[:2] == b"#!":
        return Path(on_path).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cdkit-bench" / "lefthook"
    found = sorted(cache.glob("node_modules/lefthook-*/bin/lefthook"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        print(f"installing lefthook {LEFTHOOK_NPM} from npm into {cache} ...", file=sys.stderr)
        subprocess.run(["npm", "install", "-E", "--no-audit", "--no-fund", f"lefthook@{LEFTHOOK_NPM}"],
                       cwd=cache, check=True, stdout=subprocess.DEVNULL)
        found = sorted(cache.glob("node_modules/lefthook-*/bin/lefthook"))
    if not found:
        sys.exit(f"no lefthook binary for this platform under {cache}; pass --lefthook PATH")
    return found[0]


def binary_version(binary: Path) -> str:
    """What the binary itself says it is (`lefthook version`), not what we asked a registry for."""
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


class Bench:
    """One repository whose `main` is pushed, again and again, as the same one-commit fast-forward."""

    def __init__(self, root: Path, name: str, files: dict[str, str], env: dict[str, str]) -> None:
        self.env = env
        self.remote = root / f"{name}.git"
        self.repo = root / name
        run("git", "init", "-q", "--bare", "-b", "main", str(self.remote), cwd=root, env=env)
        run("git", "init", "-q", "-b", "main", str(self.repo), cwd=root, env=env)
        for path, text in files.items():
            (self.repo / path).write_text(text)
        run("git", "add", "-A", cwd=self.repo, env=env)
        run("git", "commit", "-q", "-m", "base", cwd=self.repo, env=env)
        run("git", "remote", "add", "origin", str(self.remote), cwd=self.repo, env=env)
        run("git", "push", "-q", "--no-verify", "origin", "main", cwd=self.repo, env=env)
        self.base = self.rev("HEAD")
        (self.repo / "change.txt").write_text("one more line\n")
        run("git", "add", "-A", cwd=self.repo, env=env)
        run("git", "commit", "-q", "-m", "change", cwd=self.repo, env=env)
        self.hooks: dict[str, Path] = {}
        self.refspec = "main"

    def rev(self, rev: str) -> str:
        out = subprocess.run(["git", "rev-parse", rev], cwd=self.repo, env=self.env, capture_output=True, text=True)
        return out.stdout.strip()

    def add_hook(self, name: str, install: Callable[[Path], None]) -> None:
        """Install a contender's hook into .git/hooks, then move it into a directory of its own."""
        default = self.repo / ".git" / "hooks"
        for old in default.glob("pre-push*"):
            old.unlink()
        install(default)
        target = self.repo.parent / f"hooks-{self.repo.name}-{name}"
        target.mkdir()
        for made in default.glob("pre-push*"):
            shutil.move(str(made), target / made.name)
        self.hooks[name] = target

    def reset_remote(self) -> None:
        # Untimed: the remote (and our view of it) goes back to the base, so the next push
        # is again a one-commit fast-forward.
        run("git", "update-ref", "refs/heads/main", self.base, cwd=self.remote, env=self.env)
        run("git", "update-ref", "refs/remotes/origin/main", self.base, cwd=self.repo, env=self.env)

    def push(self, name: str) -> float:
        self.reset_remote()
        start = time.perf_counter()
        proc = subprocess.run(["git", "-c", f"core.hooksPath={self.hooks[name]}", "push", "-q", "origin",
                               self.refspec],
                              cwd=self.repo, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"push with {name} failed:\n{proc.stderr.decode(errors='replace')}")
        return elapsed


class DeleteBench(Bench):
    """The same repository, pushing `:gone`: a branch deleted on the remote, which no stage judges."""

    def __init__(self, bench: Bench) -> None:
        self.__dict__.update(bench.__dict__)
        self.refspec = ":refs/heads/gone"

    def reset_remote(self) -> None:
        run("git", "update-ref", "refs/heads/gone", self.base, cwd=self.remote, env=self.env)
        run("git", "update-ref", "refs/remotes/origin/gone", self.base, cwd=self.repo, env=self.env)


class DirectRun(Bench):
    """The hook itself run by hand with empty stdin, as git would with nothing to push (no `git push`)."""

    def __init__(self, bench: Bench) -> None:
        self.__dict__.update(bench.__dict__)

    def push(self, name: str) -> float:
        start = time.perf_counter()
        proc = subprocess.run([str(self.hooks[name] / "pre-push"), "origin", str(self.remote)], cwd=self.repo,
                              env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"{name} run by hand failed:\n{proc.stderr.decode(errors='replace')}")
        return elapsed


def install_cdkit(python: str, repo: Path, env: dict[str, str]) -> Callable[[Path], None]:
    return lambda _hooks: run(python, "-m", "cdkit", "hook", "install", cwd=repo, env=env)


def install_pre_commit(python: str, repo: Path, env: dict[str, str]) -> Callable[[Path], None]:
    def install(_hooks: Path) -> None:
        run(python, "-m", "pre_commit", "install", "--hook-type", "pre-push", cwd=repo, env=env)
        run(python, "-m", "pre_commit", "install-hooks", cwd=repo, env=env)  # warm its cache untimed

    return install


def install_script(text: str) -> Callable[[Path], None]:
    def install(hooks: Path) -> None:
        hook = hooks / "pre-push"
        hook.write_text(text)
        hook.chmod(0o755)

    return install


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    parser.add_argument("--lefthook", metavar="PATH", help="a lefthook binary (default: PATH, else npm)")
    args = parser.parse_args()
    # sys.executable as it is: in a virtualenv that is the venv's python (resolving its symlink
    # would leave the venv, and run cdkit and pre-commit from whatever the base interpreter has).
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="cdkit-bench-") as tmp:
        root = Path(tmp)
        # Without PYTHONDONTWRITEBYTECODE: the warm-up writes the bytecode caches, as `pip install` does.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GIT_", "CDKIT", "PRE_COMMIT", "LEFTHOOK", "PYTHONDONTWRITEBYTECODE"))}
        env.update({"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "b",
                    "GIT_COMMITTER_EMAIL": "b@example.com", "NO_COLOR": "1", "HOME": str(root),
                    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
                    "PRE_COMMIT_HOME": str(root / "pre-commit-cache")})
        lefthook = find_lefthook(args.lefthook)
        lefthook_version = binary_version(lefthook)
        lefthook_hook = f'#!/bin/sh\nexec {lefthook} run pre-push "$@"\n'

        noop = Bench(root, "noop", {".cdkit.yml": CDKIT_NOOP, ".pre-commit-config.yaml": PRE_COMMIT_NOOP,
                                    "lefthook.yml": LEFTHOOK_NOOP, ".gitignore": ".lefthook-local.yml\n"}, env)
        noop.add_hook("no hook", lambda _hooks: None)
        noop.add_hook("cdkit", install_cdkit(python, noop.repo, env))
        noop.add_hook("pre-commit", install_pre_commit(python, noop.repo, env))
        noop.add_hook("lefthook", install_script(lefthook_hook))
        noop.add_hook("python -I (stdlib only)", install_script(PYTHON_HOOK.format(python=python)))

        sleep = Bench(root, "sleep", {".cdkit.yml": CDKIT_SLEEP, "lefthook.yml": LEFTHOOK_SLEEP}, env)
        sleep.add_hook("no hook", lambda _hooks: None)
        sleep.add_hook("cdkit", install_cdkit(python, sleep.repo, env))
        sleep.add_hook("lefthook", install_script(lefthook_hook))

        # Pushes that run nothing: the noop repository gets one more hook, and a pipeline with only CI stages.
        bare = [install_script(text.format(python=python)) for text in (BARE_PYTHON_HOOK, BARE_PYTHON_S_HOOK)]
        for name, install in zip(BARE, bare):
            noop.add_hook(name, install)
        ci_only = Bench(root, "ci-only", {".cdkit.yml": CDKIT_CI_ONLY}, env)
        for name, install in (("no hook", lambda _hooks: None), ("cdkit", install_cdkit(python, ci_only.repo, env)),
                              *zip(BARE, bare)):
            ci_only.add_hook(name, install)
        nothing = {"a push deleting a branch": DeleteBench(noop), "a push with no `on: pre-push` stage": ci_only,
                   "the hook run by hand, empty stdin": DirectRun(noop)}
        quiet_hooks = ("no hook", "cdkit", *BARE)

        cases: list[tuple[Bench, str, str]] = (
            [(noop, "noop", n) for n in noop.hooks if n not in BARE]
            + [(sleep, "sleep", n) for n in sleep.hooks]
            + [(bench, what, n) for what, bench in nothing.items() for n in quiet_hooks
               if not (isinstance(bench, DirectRun) and n == "no hook")])
        times: dict[tuple[str, str], list[float]] = {(what, n): [] for _, what, n in cases}
        for bench, _what, name in cases:  # warm-up, untimed: caches, .pyc files, the ledger
            bench.push(name)
        for i in range(args.rounds):
            rotated = cases[i % len(cases):] + cases[:i % len(cases)]
            for bench, what, name in rotated:
                times[(what, name)].append(bench.push(name))

    med = {key: statistics.median(values) * 1000 for key, values in times.items()}
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, git "
          f"{subprocess.run(['git', '--version'], capture_output=True, text=True).stdout.split()[-1]}, "
          f"lefthook {lefthook_version} ({lefthook}), cdkit and pre-commit from {sys.prefix}; "
          f"{args.rounds} interleaved rounds, median\n")
    print("One `on: pre-push` stage running `true`, one-commit fast-forward push:\n")
    print("| hook | push (ms) | added by the hook (ms) | added vs python -I floor | added vs pre-commit "
          "| added vs lefthook |")
    print("|---|---:|---:|---:|---:|---:|")
    base = med[("noop", "no hook")]
    added = {name: med[("noop", name)] - base for name in noop.hooks if name not in BARE}
    for name in (n for n in noop.hooks if n not in BARE):
        if name == "no hook":
            print(f"| no hook | {base:.0f} | - | - | - | - |")
            continue
        floor = added["python -I (stdlib only)"]
        vs_floor = added[name] / floor if floor > 0 else float("nan")
        vs_pc = added[name] / added["pre-commit"] if added["pre-commit"] > 0 else float("nan")
        vs_lh = added[name] / added["lefthook"] if added["lefthook"] > 0 else float("nan")
        print(f"| {name} | {med[('noop', name)]:.0f} | {added[name]:.0f} | {vs_floor:.2f}x | {vs_pc:.2f}x "
              f"| {vs_lh:.2f}x |")
    print("\nFive independent `sleep 0.2` stages (cdkit `needs: []`, lefthook `parallel: true`):\n")
    print("| hook | push (ms) | added by the hook (ms) |")
    print("|---|---:|---:|")
    sleep_base = med[("sleep", "no hook")]
    for name in sleep.hooks:
        value = med[("sleep", name)]
        print(f"| {name} | {value:.0f} | {'-' if name == 'no hook' else f'{value - sleep_base:.0f}'} |")
    print("\nPushes that run nothing, against a hook that only starts Python (`python -I -c pass`); run by hand, "
          "the whole hook is timed:\n")
    print("| push | no hook (ms) | cdkit adds (ms) | `python -I -c pass` adds (ms) | cdkit vs `python -I -c pass` "
          "| `python -I -S -c pass` adds (ms) | cdkit vs `python -I -S -c pass` |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for what, bench in nothing.items():
        base_ms = 0.0 if isinstance(bench, DirectRun) else med[(what, "no hook")]
        cdkit_ms = med[(what, "cdkit")] - base_ms
        bare_ms = [med[(what, name)] - base_ms for name in BARE]
        shown = "-" if isinstance(bench, DirectRun) else f"{base_ms:.0f}"
        print(f"| {what} | {shown} | {cdkit_ms:.0f} | "
              + " | ".join(f"{ms:.0f} | {cdkit_ms / ms:.2f}x" for ms in bare_ms) + " |")
    print(f"\nreproduce: python bench/bench_hook.py --rounds {args.rounds}")


if __name__ == "__main__":
    main()
