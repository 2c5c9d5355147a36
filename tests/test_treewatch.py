"""The tree watch's git-free check: quiet stages cost no git process, and no change slips past it.

`StatBaseline` is exercised on real directories and files, and through `cdkit run` with a
`git` on PATH that logs each call before running the real one. Every refusal is paired with
the same walk finding an untouched tree unchanged, so a check that always said "changed"
(and so always fell back to git) fails these tests too.
"""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from cdkit.ledger import Ledger
from cdkit.treewatch import WALK_LIMIT, StatBaseline
from tests.helpers import cdkit, commit, make_repo

TICK = 0.03  # longer than any filesystem's timestamp granularity here (a jiffy, at most 10 ms)


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / ".git" / "cdkit").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("answer = 42\n")
    (root / "README").write_text("hello\n")
    (root / "logs").mkdir()
    (root / "logs" / "run.log").write_text("ignored\n")
    (root / "build").mkdir()
    return root


IGNORED = frozenset({b"logs/run.log", b"build/"})


def _watched(root: Path) -> StatBaseline:
    """A baseline taken the way TreeWatch takes it: a walk, then a clean status, out of the racy tick."""
    baseline = StatBaseline(root, root / ".git" / "cdkit" / "probe")
    baseline.found_clean(None, IGNORED)  # the first status: no walk before it
    time.sleep(TICK)
    same, walk = baseline.unchanged()
    assert not same and walk is not None  # a first walk, and a usable one: nothing in it is racy
    baseline.found_clean(walk, IGNORED)
    assert baseline.unchanged()[0]  # the control: an untouched tree is unchanged, with no git
    return baseline


def test_a_same_size_rewrite_with_its_mtime_put_back_is_seen(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    baseline = _watched(root)
    app = root / "src" / "app.py"
    for attempt in range(20):  # a rewrite lands in the walk's own timestamp tick, or the next
        before = app.stat()
        app.write_text(f"answer = {attempt % 10}{attempt % 10}\n"[:12])
        os.utime(app, ns=(before.st_atime_ns, before.st_mtime_ns))  # a fixer hiding its edit
        assert app.stat().st_size == before.st_size and app.stat().st_mtime_ns == before.st_mtime_ns
        if attempt % 2:
            time.sleep(TICK)  # looked at in a later tick: only its ctime tells
        assert not baseline.unchanged()[0], f"rewrite {attempt} went unseen"
        baseline = _watched(root)


def test_new_deleted_and_chmodded_entries_are_changes_and_ignored_ones_are_not(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    changes = {
        "a new file in a subdirectory": lambda: (root / "src" / "gen.py").write_text("x = 1\n"),
        "a new directory": lambda: (root / "docs").mkdir(),
        "a deleted file": lambda: (root / "README").unlink(),
        "a chmod": lambda: (root / "README").chmod(stat.S_IMODE((root / "README").stat().st_mode) | stat.S_IXUSR),
        "a new file beside an ignored one": lambda: (root / "logs" / "new.txt").write_text("not ignored\n"),
        "a file renamed over another": lambda: (root / "src" / "app.py").rename(root / "README"),
    }
    for what, change in changes.items():
        root = _tree(tmp_path / what.replace(" ", "-"))
        baseline = _watched(root)
        change()
        assert not baseline.unchanged()[0], what
    root = _tree(tmp_path / "ignored")
    baseline = _watched(root)
    (root / "build" / "out.bin").write_bytes(b"\0" * 100)  # inside an ignored directory
    (root / "logs" / "run.log").write_text("rewritten, and ignored\n")
    (root / ".git" / "index").write_bytes(b"git's own files are git status's business")
    assert baseline.unchanged()[0]


def test_an_entry_from_the_probes_tick_or_later_makes_the_walk_no_baseline(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    baseline = _watched(root)
    future = time.time_ns() + 3_600 * 10**9
    os.utime(root / "README", ns=(future, future))  # a time the probe cannot be past: racy
    same, walk = baseline.unchanged()
    assert not same and walk is None
    baseline.found_clean(walk, IGNORED)
    assert not baseline.unchanged()[0]  # without a baseline, every check goes to git status


def test_what_the_walk_cannot_vouch_for_is_left_to_git_status(tmp_path: Path) -> None:
    root = _tree(tmp_path / "submodules")
    (root / ".gitmodules").write_text("[submodule \"lib\"]\n\tpath = lib\n")
    baseline = StatBaseline(root, root / ".git" / "cdkit" / "probe")
    baseline.found_clean(None, IGNORED)
    assert not baseline.usable and baseline.unchanged() == (False, None)

    root = _tree(tmp_path / "big")
    for index in range(WALK_LIMIT + 1):
        (root / "src" / f"m{index}.py").touch()
    baseline = StatBaseline(root, root / ".git" / "cdkit" / "probe")
    baseline.found_clean(None, IGNORED)
    time.sleep(TICK)
    assert baseline.unchanged() == (False, None) and not baseline.usable


def _git_logger(tmp_path: Path) -> dict[str, str]:
    """An environment whose `git` logs its arguments to a file, then runs the real git."""
    real = next(Path(d, "git") for d in os.environ["PATH"].split(os.pathsep) if Path(d, "git").is_file())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "git-calls.log"
    wrapper = bin_dir / "git"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GIT_CALLS": str(log)}


def _status_calls(env: dict[str, str]) -> int:
    return sum(" status " in f" {line} " for line in Path(env["GIT_CALLS"]).read_text().splitlines())


HIDE_EDIT = "printf 'answer = 41' > app.py && touch -r README app.py"  # app.py: same size, an old mtime


def _repo_building(tmp_path: Path, first: str, then: str = "") -> tuple[Path, dict[str, str], str]:
    """A repository whose first stage writes into build/ (ignored), then `then`'s stages; with a logging git."""
    env = _git_logger(tmp_path)
    repo = make_repo(tmp_path / "repo")
    pipeline = f"version: 1\nstages:\n  - {{name: q0, run: \"{first}\"}}\n" + then
    commit(repo, {".cdkit.yml": pipeline, ".gitignore": "build/\n", "app.py": "answer = 42", "README": "hi\n"})
    return repo, env, pipeline


def test_quiet_stages_cost_no_git_status_each_and_a_hidden_edit_still_fails(tmp_path: Path) -> None:
    quiet = "".join(f"  - {{name: q{i}, run: 'sleep 0.05', needs: [q{i - 1}]}}\n" for i in range(1, 8))
    repo, env, pipeline = _repo_building(tmp_path, "mkdir -p build && echo cache > build/out", quiet)
    ran = cdkit("run", "--jobs", "1", cwd=repo, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr  # the control: eight quiet stages pass
    statuses = _status_calls(env)
    assert statuses <= 3, Path(env["GIT_CALLS"]).read_text()  # not one per stage

    Path(env["GIT_CALLS"]).unlink()
    commit(repo, {".cdkit.yml": pipeline + f"  - {{name: hider, run: \"{HIDE_EDIT}\", needs: [q7]}}\n"
                  + "  - {name: after, run: 'true', needs: [hider]}\n"})
    ran = cdkit("run", "--jobs", "1", cwd=repo, env=env)
    assert ran.returncode == 1 and "files were modified by this stage: app.py" in ran.stdout, ran.stdout
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        results = {r.stage: r for r in ledger.stage_results(ledger.recent_runs(1)[0].id)}
    assert results["q7"].status == "passed" and results["hider"].status == "failed"
    assert results["after"].status == "skipped"
    assert _status_calls(env) <= 4  # the walk saw the change: git status judged it, once


def test_a_tree_clean_at_the_last_run_needs_no_git_status_after_its_first_stage(tmp_path: Path) -> None:
    """The tree is walked before the run's own `git status`; when that status finds it clean and ignores
    what the last clean status did, the walk is the baseline (no status after the stage). Each refusal
    below is paired with the same walk letting a quiet stage through."""
    repo, env, quiet = _repo_building(tmp_path, "mkdir -p build && date > build/out")

    def run(pipeline: str | None = None) -> tuple[int, str, int]:
        if pipeline is not None:
            commit(repo, {".cdkit.yml": pipeline})
        calls = Path(env["GIT_CALLS"])
        calls.unlink(missing_ok=True)
        ran = cdkit("run", cwd=repo, env=env)
        return ran.returncode, ran.stdout + ran.stderr, _status_calls(env)

    assert run()[::2] == (0, 2)  # the first run here: nothing cached, a status before and after the stage
    assert (repo / ".git" / "cdkit" / "watch-ignored").exists()
    time.sleep(TICK)  # out of the last run's tick: its entries are not racy for the next walk
    assert run()[::2] == (0, 1)  # the control: the same quiet stage, and only the run's own status

    code, said, _ = run(quiet.replace("mkdir -p build && date > build/out", HIDE_EDIT))
    assert code == 1 and "files were modified by this stage: app.py" in said, said
    commit(repo, {"app.py": "answer = 42", ".cdkit.yml": quiet})
    time.sleep(TICK)
    assert run()[::2] == (0, 1)

    # A stage makes a directory git newly ignores (dist/): the walk after it sees a new entry, one
    # `git status` says it is ignored, and the next run walks past it.
    commit(repo, {".gitignore": "build/\ndist/\n", ".cdkit.yml": quiet.replace("build", "dist")})
    time.sleep(TICK)
    assert run()[::2] == (0, 2)
    time.sleep(TICK)
    assert run()[::2] == (0, 1)  # the cache now holds the new set
    code, said, _ = run(quiet.replace("mkdir -p build && date > build/out", "echo new > new.txt"))
    assert code == 1 and "files were modified by this stage: new.txt" in said, said


def test_a_corrupt_ignored_cache_is_only_a_miss(tmp_path: Path) -> None:
    env = _git_logger(tmp_path)
    repo = make_repo(tmp_path / "repo")
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: quiet, run: 'true'}\n", "README": "hi\n"})
    cache = repo / ".git" / "cdkit" / "watch-ignored"
    for garbage in (b"\x00not marshal", b"\xe9" * 3, b"\xdb\x00\x00\x00\x00"):  # junk, a bad code, an empty set
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(garbage)
        Path(env["GIT_CALLS"]).unlink(missing_ok=True)
        time.sleep(TICK)
        ran = cdkit("run", cwd=repo, env=env)
        assert ran.returncode == 0 and "internal error" not in ran.stderr, ran.stderr
        assert _status_calls(env) == 2  # judged as if it were the first run here
    time.sleep(TICK)
    Path(env["GIT_CALLS"]).unlink()
    assert cdkit("run", cwd=repo, env=env).returncode == 0 and _status_calls(env) == 1  # rewritten, and used
