"""A verdict is the pushed commit's, with an editable install in place, and nothing of the user's is ever lost.

The project is a src-layout Python package "installed" editable the way setuptools does
it: a `.pth` file in a virtualenv's site-packages naming the work tree's `src` by its
absolute path. So a stage importing the package gets whatever the *work tree* holds,
which is exactly the hole a temporary worktree leaves open.

Every test compares the user's whole state before and after (`git status
--porcelain=v2`, the index bytes, HEAD, the stash list, every file's bytes and mode,
untracked and ignored files included), and pairs each block with a push that must pass.
"""
from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from cdkit.ledger import Ledger
from tests.helpers import cdkit, commit, config, git, make_bare, make_repo, small_tmpfs, write

GOOD = "def answer():\n    return 42\n"
BROKEN = "def answer():\n    return 41\n"


def _pipeline(python: Path, *, extra: str = "") -> str:
    # The stage imports the package through the editable install, from outside the repository's
    # directory listing: only the .pth file says where `calc` lives.
    return config(f"""
        version: 1
        stages:
          - name: test
            run: cd / && {python} -c "import calc, sys; sys.exit(0 if calc.answer() == 42 else 1)"
            on: [pre-push, ci]
        {extra}""")


def _editable_python(tmp_path: Path, repo: Path) -> Path:
    """A virtualenv whose site-packages has an editable install of `repo`'s src layout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "__editable__.calc-0.1.pth").write_text(f"{repo / 'src'}\n")
    return venv / "bin" / "python"


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return make_bare(tmp_path / "remote.git")


@pytest.fixture
def project(tmp_path: Path, remote: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "repo")
    python = _editable_python(tmp_path, repo)
    commit(repo, {".cdkit.yml": _pipeline(python), "src/calc/__init__.py": GOOD, ".gitignore": "*.log\nbuild/\n",
                  "README": "calc\n"}, "initial")
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    return repo, python


def push(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "push", *args], cwd=repo, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def blocked(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and "failed to push some refs" in result.stderr


def user_state(repo: Path) -> dict[str, object]:
    """Everything of the user's that cdkit must leave exactly as it was."""
    files: dict[str, tuple[bytes, int]] = {}
    for path in sorted(repo.rglob("*")):
        relative = path.relative_to(repo).as_posix()
        if relative == ".git" or relative.startswith(".git/"):
            continue
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            files[relative] = (path.read_bytes(), stat.S_IMODE(st.st_mode))
        elif stat.S_ISLNK(st.st_mode):
            files[relative] = (os.readlink(path).encode(), 0)
        elif stat.S_ISDIR(st.st_mode):
            files[relative + "/"] = (b"", stat.S_IMODE(st.st_mode))
    return {
        "status": git(repo, "status", "--porcelain=v2", "--branch", "--untracked-files=all", "--ignored"),
        "staged": git(repo, "diff", "--cached", "--binary"),
        "unstaged": git(repo, "diff", "--binary"),
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "-q", "HEAD", check=False),
        "stash": git(repo, "stash", "list", "--format=%H %gs"),
        "files": files,
    }


def messy_work(repo: Path) -> None:
    """The user's unfinished work: staged, partly staged, unstaged, untracked, ignored, odd modes, a stash."""
    write(repo, {"notes.txt": "stash me\n"})
    git(repo, "add", "notes.txt")
    git(repo, "stash", "push", "-q", "-m", "older work")
    write(repo, {"README": "calc\nstaged line\n"})
    git(repo, "add", "README")
    write(repo, {"README": "calc\nstaged line\nunstaged line\n"})  # partially staged
    write(repo, {"scratch/idea.py": "x = 1\n", "debug.log": "ignored\n", "build/out.bin": b"\x00\x01"})
    os.chmod(repo / "scratch" / "idea.py", 0o600)
    os.chmod(repo / "README", 0o755)


# --- §1: the verdict is the pushed commit's ----------------------------------------------------


def test_broken_branch_pushed_from_a_good_work_tree_is_blocked(project: tuple[Path, Path], remote: Path) -> None:
    repo, _ = project
    git(repo, "checkout", "-q", "-b", "topic")
    commit(repo, {"src/calc/__init__.py": BROKEN}, "break it")
    git(repo, "checkout", "-q", "main")
    messy_work(repo)
    before = user_state(repo)
    result = push(repo, "origin", "topic")
    assert blocked(result), result.stderr
    assert "checked out at" in result.stderr
    assert user_state(repo) == before

    # Positive control: the same push shape with a good commit passes.
    git(repo, "branch", "good-topic", "main")
    good = commit_on(repo, "good-topic", {"src/calc/extra.py": "y = 2\n"})
    result = push(repo, "origin", "good-topic")
    assert result.returncode == 0, result.stderr
    assert git(remote, "rev-parse", "refs/heads/good-topic") == good
    assert user_state(repo) == before


def commit_on(repo: Path, branch: str, files: Mapping[str, str]) -> str:
    """A commit on `branch` without touching the work tree (plumbing, as a tool or a rebase would)."""
    index = repo / ".git" / "tmp-index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    subprocess.run(["git", "read-tree", branch], cwd=repo, env=env, check=True)
    for name, content in files.items():
        blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=repo, input=content.encode(),
                              capture_output=True, check=True).stdout.decode().strip()
        subprocess.run(["git", "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}"], cwd=repo, env=env,
                       check=True)
    tree = subprocess.run(["git", "write-tree"], cwd=repo, env=env, capture_output=True, check=True,
                          text=True).stdout.strip()
    index.unlink()
    sha = git(repo, "commit-tree", tree, "-p", branch, "-m", "more")
    git(repo, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def test_broken_head_with_an_uncommitted_fix_is_blocked(project: tuple[Path, Path], remote: Path) -> None:
    repo, _ = project
    commit(repo, {"src/calc/__init__.py": BROKEN}, "break it")
    messy_work(repo)
    write(repo, {"src/calc/__init__.py": GOOD})  # fixed in the work tree only: the editable install sees this
    before = user_state(repo)
    result = push(repo, "origin", "main")
    assert blocked(result), result.stderr
    assert "your uncommitted work is set aside and put back" in result.stderr
    assert user_state(repo) == before
    assert (repo / "src" / "calc" / "__init__.py").read_text() == GOOD

    # Positive control: commit the fix, keep the rest uncommitted, and the push passes.
    git(repo, "add", "src/calc/__init__.py")
    git(repo, "commit", "-q", "-m", "fix")
    before = user_state(repo)
    result = push(repo, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert user_state(repo) == before


def test_cdkit_run_head_judges_that_commit_with_the_editable_install(project: tuple[Path, Path]) -> None:
    repo, _ = project
    broken = commit(repo, {"src/calc/__init__.py": BROKEN}, "break it")
    fixed = commit(repo, {"src/calc/__init__.py": GOOD}, "fix it")
    before = user_state(repo)
    assert cdkit("run", "--head", broken, cwd=repo).returncode == 1
    assert user_state(repo) == before
    assert cdkit("run", "--head", fixed, cwd=repo).returncode == 0


def test_several_refs_in_one_push_are_each_judged_in_place(project: tuple[Path, Path], remote: Path) -> None:
    repo, _ = project
    git(repo, "branch", "good")
    commit_on(repo, "good", {"src/calc/more.py": "z = 3\n"})
    git(repo, "branch", "bad")
    commit_on(repo, "bad", {"src/calc/__init__.py": BROKEN})
    messy_work(repo)
    before = user_state(repo)
    result = push(repo, "origin", "good", "bad")
    assert blocked(result)
    assert "refs/heads/bad" in result.stderr and "failed" in result.stderr
    assert user_state(repo) == before
    result = push(repo, "origin", "good")
    assert result.returncode == 0, result.stderr


# --- interruptions ------------------------------------------------------------------------------


def _slow_pipeline(python: Path, marker: Path) -> str:
    return config(f"""
        version: 1
        stages:
          - name: slow
            run: touch {marker} && sleep 60
            on: [pre-push]
        """)


def _hook_process(repo: Path, sha: str, *, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`cdkit hook run pre-push` exactly as git runs it, so the test has its pid."""
    line = f"refs/heads/topic {sha} refs/heads/topic {'0' * 40}\n".encode()
    proc = subprocess.Popen([sys.executable, "-m", "cdkit", "hook", "run", "pre-push", "origin", "url"], cwd=repo,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(line)
    proc.stdin.close()
    return proc


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if path.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the hook ended early: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError("the stage never started")


def _topic_with_slow_stage(repo: Path, python: Path, marker: Path) -> str:
    git(repo, "branch", "topic")
    commit_on(repo, "topic", {".cdkit.yml": _slow_pipeline(python, marker)})
    return git(repo, "rev-parse", "topic")


def test_sigkill_mid_run_then_hook_recover_puts_everything_back(project: tuple[Path, Path], tmp_path: Path) -> None:
    repo, python = project
    marker = tmp_path / "started"
    sha = _topic_with_slow_stage(repo, python, marker)
    messy_work(repo)
    before = user_state(repo)
    proc = _hook_process(repo, sha)
    _wait_for(marker, proc)
    assert git(repo, "rev-parse", "HEAD") == sha  # the commit is checked out in place
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["pkill", "-KILL", "-f", f"touch {marker}"], check=False)  # the stage's own session
    assert user_state(repo) != before  # the control: the kill really left the work tree switched

    warned = cdkit("log", cwd=repo)
    assert "run `cdkit hook recover`" in warned.stderr
    refused = _hook_process(repo, sha)
    refused.wait(timeout=60)
    assert refused.returncode == 2
    assert refused.stderr is not None and b"cdkit hook recover" in refused.stderr.read()

    recovered = cdkit("hook", "recover", cwd=repo)
    assert recovered.returncode == 0, recovered.stderr
    assert "put back" in recovered.stdout
    assert user_state(repo) == before
    assert "recover" not in cdkit("log", cwd=repo).stderr
    assert "nothing to recover" in cdkit("hook", "recover", cwd=repo).stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_puts_everything_back_and_exits_130(project: tuple[Path, Path], tmp_path: Path,
                                                           sig: signal.Signals) -> None:
    repo, python = project
    marker = tmp_path / "started"
    sha = _topic_with_slow_stage(repo, python, marker)
    messy_work(repo)
    before = user_state(repo)
    proc = _hook_process(repo, sha, env={"CDKIT_KILL_GRACE": "1"})
    _wait_for(marker, proc)
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=60) == 130
    assert user_state(repo) == before


# --- §2: stages that rewrite the tree ------------------------------------------------------------


FIXER = config("""
    version: 1
    stages:
      - name: fix
        run: printf 'formatted\\n' > src/calc/__init__.py && touch generated.txt
        on: [pre-push, ci]
    """)


def test_a_fixer_stage_fails_and_leaves_its_changes_for_the_user(tmp_path: Path, remote: Path) -> None:
    repo = make_repo(tmp_path / "fixer")
    commit(repo, {".cdkit.yml": FIXER, "src/calc/__init__.py": GOOD}, "initial")
    git(repo, "remote", "add", "origin", str(remote))
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    result = push(repo, "origin", "main")
    assert blocked(result)
    assert "files were modified by this stage: src/calc/__init__.py, generated.txt" in result.stderr
    # As pre-commit does: the fix is left in the work tree for the user to look at and commit.
    assert (repo / "src/calc/__init__.py").read_text() == "formatted\n"
    assert (repo / "generated.txt").exists()

    # cdkit run and CI take the same verdict.
    git(repo, "checkout", "-q", "--", ".")
    (repo / "generated.txt").unlink()
    ran = cdkit("run", cwd=repo)
    assert ran.returncode == 1 and "files were modified by this stage" in ran.stdout

    # Positive control: allow_changes opts out, and says so.
    git(repo, "checkout", "-q", "--", ".")
    (repo / "generated.txt").unlink()
    commit(repo, {".cdkit.yml": FIXER.replace("on: [pre-push, ci]", "on: [pre-push, ci]\n    allow_changes: true")},
           "allow it")
    result = push(repo, "origin", "main")
    assert result.returncode == 0, result.stderr
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        (fix,) = ledger.stage_results(ledger.recent_runs(1)[0].id)
    assert fix.status == "passed"
    assert fix.reason == "modified files (allowed by allow_changes): src/calc/__init__.py, generated.txt"


def test_each_change_of_a_clean_tree_is_blamed_on_the_stage_that_made_it(tmp_path: Path) -> None:
    """A clean tree is watched with `git status` alone until it changes; from then on by snapshots."""
    repo = make_repo(tmp_path / "chain")
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: quiet, run: "true"}
          - {name: gen, run: "touch generated.txt", allow_changes: true, needs: [quiet]}
          - {name: reader, run: "cat generated.txt", needs: [gen]}
          - {name: eraser, run: "rm other.py", needs: [reader]}
        """), "other.py": "a = 1\n"}, "initial")
    ran = cdkit("run", cwd=repo)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        results = {r.stage: r for r in ledger.stage_results(ledger.recent_runs(1)[0].id)}
    assert results["quiet"].status == "passed" and results["quiet"].reason == ""  # the control: nothing changed
    assert results["gen"].reason == "modified files (allowed by allow_changes): generated.txt"
    assert results["reader"].status == "passed" and results["reader"].reason == ""  # gen's file is not its doing
    assert (results["eraser"].status, results["eraser"].reason) == ("failed", "files were modified by this stage: other.py")


def test_a_stage_that_commits_its_changes_cannot_hide_them(tmp_path: Path) -> None:
    """`git status` is clean after a commit, but HEAD moved: the tree is compared with the judged commit's."""
    repo = make_repo(tmp_path / "sneaky")
    sneaky = "echo fixed >> README && git -c user.name=x -c user.email=x@y commit -qam sneaky"
    commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - {{name: committer, run: "{sneaky}"}}
        """), "README": "hi\n"}, "initial")
    ran = cdkit("run", cwd=repo)
    assert ran.returncode == 1 and "files were modified by this stage: README" in ran.stdout, ran.stdout


def test_a_fixer_never_overwrites_the_users_set_aside_work(tmp_path: Path, remote: Path) -> None:
    repo = make_repo(tmp_path / "fixer")
    commit(repo, {".cdkit.yml": FIXER, "src/calc/__init__.py": GOOD, "other.py": "a = 1\n"}, "initial")
    git(repo, "remote", "add", "origin", str(remote))
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    write(repo, {"src/calc/__init__.py": "# my unfinished work\n"})  # the same file the fixer rewrites
    before = user_state(repo)
    result = push(repo, "origin", "main")
    assert blocked(result)
    assert "your version was kept: src/calc/__init__.py" in result.stderr
    assert "stage-changes.patch" in result.stderr
    after = user_state(repo)
    assert after["files"]["src/calc/__init__.py"] == before["files"]["src/calc/__init__.py"]  # type: ignore[index]
    # generated.txt touched nothing of the user's: it is left for them, as in the clean case
    assert (repo / "generated.txt").exists()


# --- trees that cannot be judged in place ---------------------------------------------------------


def test_sparse_checkout_is_judged_in_a_worktree_and_recorded_dirty(project: tuple[Path, Path]) -> None:
    repo, _ = project
    git(repo, "sparse-checkout", "set", "--no-cone", "/.cdkit.yml", "/src/")
    assert not (repo / "README").exists()
    commit(repo, {"src/calc/__init__.py": BROKEN}, "break it")
    result = push(repo, "origin", "main")
    assert blocked(result)
    assert "sparse checkout" in result.stderr and "does not count" in result.stderr
    log = cdkit("log", "--json", cwd=repo)
    assert '"dirty": true' in log.stdout


@pytest.mark.parametrize("flag", ["--skip-worktree", "--assume-unchanged"])
def test_hidden_entries_are_not_clean(project: tuple[Path, Path], flag: str) -> None:
    repo, _ = project
    git(repo, "update-index", flag, "README")
    write(repo, {"README": "edited, hidden from git status\n"})
    assert git(repo, "status", "--porcelain") == ""  # git calls it clean
    commit(repo, {"src/calc/more.py": "z = 3\n"}, "more")
    result = push(repo, "origin", "main")
    assert result.returncode == 0, result.stderr  # the commit is fine; only its verdict cannot count
    assert f"README is marked {flag}" in result.stderr and "does not count" in result.stderr
    assert (repo / "README").read_text() == "edited, hidden from git status\n"


def test_a_file_edited_while_the_stages_run_is_caught_and_kept(project: tuple[Path, Path], tmp_path: Path) -> None:
    repo, _ = project
    started, release = tmp_path / "started", tmp_path / "release"
    git(repo, "branch", "topic")
    commit_on(repo, "topic", {".cdkit.yml": config(f"""
        version: 1
        stages:
          - name: wait
            run: touch {started} && while [ ! -e {release} ]; do sleep 0.05; done
            on: [pre-push]
        """)})
    messy_work(repo)
    before = user_state(repo)
    proc = _hook_process(repo, git(repo, "rev-parse", "topic"))
    _wait_for(started, proc)
    (repo / "README").write_text("typed in the editor during the push\n")  # lands in the judged tree
    release.touch()
    assert proc.wait(timeout=60) == 1
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "files were modified by this stage: README" in err
    assert user_state(repo) == before  # the set-aside work wins...
    patch = next((repo / ".git" / "cdkit" / "logs").glob("*/stage-changes.patch")).read_text()
    assert "+typed in the editor during the push" in patch  # ...and the edit is not lost


def test_a_timed_out_stage_puts_everything_back(project: tuple[Path, Path], tmp_path: Path) -> None:
    repo, _ = project
    git(repo, "branch", "topic")
    commit_on(repo, "topic", {".cdkit.yml": config("""
        version: 1
        stages:
          - name: hang
            run: sleep 30
            on: [pre-push]
            timeout: 1s
        """)})
    messy_work(repo)
    before = user_state(repo)
    result = push(repo, "origin", "topic", env={"CDKIT_KILL_GRACE": "0.5"})
    assert blocked(result) and "timed out" in result.stderr
    assert user_state(repo) == before


def test_files_git_would_convert_come_back_byte_for_byte(project: tuple[Path, Path]) -> None:
    """core.autocrlf=input stores CRLF as LF: the user's CRLF file must not come back as LF."""
    repo, _ = project
    git(repo, "config", "core.autocrlf", "input")
    git(repo, "branch", "topic")
    commit_on(repo, "topic", {"README": "topic readme\n"})
    (repo / "README").write_bytes(b"calc\r\nwindows line endings\r\n")  # uncommitted
    (repo / "new.txt").write_bytes(b"untracked\r\n")
    before = user_state(repo)
    result = push(repo, "origin", "topic")
    assert result.returncode == 0, result.stderr
    assert "checked out at" in result.stderr
    assert user_state(repo) == before
    assert (repo / "README").read_bytes() == b"calc\r\nwindows line endings\r\n"


def test_a_fixer_stage_fails_in_ci_too(tmp_path: Path) -> None:
    from tests.test_action import push_payload, run_action

    repo = make_repo(tmp_path / "repo")
    base = commit(repo, {".cdkit.yml": FIXER, "src/calc/__init__.py": GOOD}, "initial")
    head = commit(repo, {"README": "x\n"}, "second")
    run = run_action(repo, "push", push_payload(base, head), sha=head)
    assert run.proc.returncode == 1
    assert run.outputs["result"] == "failed"
    assert "files were modified by this stage: src/calc/__init__.py, generated.txt" in run.proc.stdout
    # Positive control: the same stage allowed to change files passes in CI.
    allowed = commit(repo, {".cdkit.yml": FIXER.replace("on: [pre-push, ci]", "on: [pre-push, ci]\n    allow_changes: true")},
                     "allow it")
    git(repo, "checkout", "-q", "--", ".")
    (repo / "generated.txt").unlink()
    run = run_action(repo, "push", push_payload(head, allowed), sha=allowed)
    assert run.proc.returncode == 0, run.proc.stdout


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted for this test (root only)."""
    with small_tmpfs(tmp_path, "8m") as mount:
        yield mount


def test_a_full_disk_while_setting_work_aside_changes_nothing(small_disk: Path) -> None:
    repo = make_repo(small_disk / "repo")
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: check, run: "true", on: [pre-push]}
        """), "a.txt": "a\n"}, "initial")
    git(repo, "branch", "topic")
    commit_on(repo, "topic", {"b.txt": "b\n"})
    (repo / "a.txt").write_text("my change\n")
    (repo / "data.bin").write_bytes(os.urandom(300_000))  # untracked: the snapshot must store it
    assert cdkit("run", "--head", "topic", cwd=repo).returncode == 0  # positive control: room enough
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(b"\0" * 65536)
    os.truncate(filler, max(0, filler.stat().st_size - 150_000))  # room for the ledger, not the snapshot
    (repo / "data.bin").write_bytes(os.urandom(300_000))  # new bytes: a new blob to store
    before = user_state(repo)
    result = cdkit("run", "--head", "topic", cwd=repo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "nothing of yours was changed" in result.stderr and "Traceback" not in result.stderr
    assert user_state(repo) == before
    assert not (repo / ".git" / "cdkit" / "setaside").exists()
