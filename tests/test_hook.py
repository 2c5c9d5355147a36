"""The pre-push hook end to end: `cdkit hook install`, then real `git push` to a bare repository.

A commit is "bad" when it contains a file named BAD: the `check` stage runs `test ! -e BAD`
in the directory cdkit chose, so a stage that looked at the wrong tree would let it through.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from cdkit import config as cdkit_config
from cdkit.errors import ConfigError
from cdkit.hook import LEGACY_NAME, MARKER
from cdkit.hook_entry import load_pipeline_cached
from cdkit.ledger import Ledger
from tests.conftest import DemoRun
from tests.helpers import ROOT, cdkit, commit, config, git, make_bare, make_repo, write

PIPELINE = config("""
    version: 1
    stages:
      - name: check
        run: test ! -e BAD
        on: [pre-push]
      - name: ci-only
        run: "false"
        on: [ci]
    """)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return make_bare(tmp_path / "remote.git")


@pytest.fixture
def repo(tmp_path: Path, remote: Path) -> Path:
    path = make_repo(tmp_path / "repo")
    commit(path, {".cdkit.yml": PIPELINE, "README": "hello\n"}, "initial")
    git(path, "remote", "add", "origin", str(remote))
    git(path, "push", "-q", "origin", "main")
    install = cdkit("hook", "install", cwd=path)
    assert install.returncode == 0, install.stderr
    return path


def push(repo: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "push", *args], cwd=repo, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def tip(remote: Path, ref: str) -> str | None:
    out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", ref], cwd=remote, capture_output=True, text=True)
    return out.stdout.strip() or None


def runs(repo: Path) -> list[tuple[str, str, str | None, str | None]]:
    """(sha, status, base_sha, ref) of every recorded run, oldest first."""
    common = Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    with Ledger.for_dir(common / "cdkit") as ledger:
        return [(r.sha, r.status, r.base_sha, r.ref) for r in reversed(ledger.recent_runs(1000))]


def stage_statuses(repo: Path) -> dict[str, tuple[str, str]]:
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        last = ledger.recent_runs(1)[0]
        return {r.stage: (r.status, r.reason) for r in ledger.stage_results(last.id)}


def blocked(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and "failed to push some refs" in result.stderr


# --- blocking and letting through -----------------------------------------------------------


def test_failing_stage_blocks_the_push_and_the_remote_is_unchanged(repo: Path, remote: Path) -> None:
    before = tip(remote, "main")
    bad = commit(repo, {"BAD": "x"}, "bad")
    result = push(repo, "origin", "main")
    assert blocked(result)
    assert tip(remote, "main") == before
    err = result.stderr
    assert f"cdkit: stage 'check' failed (exit code 1) on refs/heads/main {before[:12]}..{bad[:12]}" in err
    assert "log: .git/cdkit/logs/" in err and "check.log" in err
    assert "CDKIT_SKIP=check git push" in err and "git push --no-verify" in err
    assert runs(repo)[-1][:3] == (bad, "failed", before)
    # ci-only stages never run in the hook, and the skip is recorded
    assert stage_statuses(repo)["ci-only"][0] == "skipped"


def test_passing_stage_lets_the_push_through(repo: Path, remote: Path) -> None:
    good = commit(repo, {"src.txt": "ok"}, "good")
    result = push(repo, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert tip(remote, "main") == good
    assert "in the work tree" in result.stderr  # clean HEAD: the fast path
    assert runs(repo)[-1][:2] == (good, "passed")


def test_bad_commit_on_a_branch_that_is_not_checked_out_is_blocked(repo: Path, remote: Path) -> None:
    git(repo, "checkout", "-q", "-b", "topic")
    commit(repo, {"BAD": "x"}, "bad")
    git(repo, "checkout", "-q", "main")  # the work tree is clean and good
    result = push(repo, "origin", "topic")
    assert blocked(result)
    assert tip(remote, "refs/heads/topic") is None
    assert "in the work tree, checked out at" in result.stderr  # where editable installs point
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main"  # and back where it was


def test_bad_commit_hidden_by_an_uncommitted_fix_is_blocked(repo: Path, remote: Path) -> None:
    commit(repo, {"BAD": "x"}, "bad")
    (repo / "BAD").unlink()  # fixed in the work tree, not in the commit being pushed
    result = push(repo, "origin", "main")
    assert blocked(result)
    assert "your uncommitted work is set aside and put back" in result.stderr
    assert not (repo / "BAD").exists()  # the work tree is left as it was
    assert git(repo, "status", "--porcelain") == "D BAD"


def test_skip_with_cdkit_skip_is_recorded(repo: Path, remote: Path) -> None:
    bad = commit(repo, {"BAD": "x"}, "bad")
    result = push(repo, "origin", "main", env={"CDKIT_SKIP": "check"})
    assert result.returncode == 0, result.stderr
    assert tip(remote, "main") == bad
    assert stage_statuses(repo)["check"] == ("skipped", "skipped by CDKIT_SKIP")


def test_no_verify_skips_the_hook(repo: Path, remote: Path) -> None:
    bad = commit(repo, {"BAD": "x"}, "bad")
    result = push(repo, "--no-verify", "origin", "main")
    assert result.returncode == 0
    assert tip(remote, "main") == bad
    assert "cdkit" not in result.stderr


def test_cdkit_0_bypasses_the_hook_and_says_so(repo: Path, remote: Path) -> None:
    bad = commit(repo, {"BAD": "x"}, "bad")
    result = push(repo, "origin", "main", env={"CDKIT": "0"})
    assert result.returncode == 0
    assert tip(remote, "main") == bad
    assert "cdkit: CDKIT=0: pre-push stages skipped" in result.stderr


# --- ranges ---------------------------------------------------------------------------------

PATHS_PIPELINE = config("""
    version: 1
    stages:
      - name: docs
        run: test ! -e BAD
        on: [pre-push]
        paths: ["docs/**"]
      - name: src
        run: "true"
        on: [pre-push]
        paths: ["src/**"]
        needs: []
    """)


def test_new_branch_is_judged_on_the_commits_not_on_the_remote(repo: Path, remote: Path) -> None:
    base = commit(repo, {".cdkit.yml": PATHS_PIPELINE, "docs/a.md": "a", "BAD": "x"}, "docs and bad")
    git(repo, "push", "-q", "--no-verify", "origin", "main")
    git(repo, "checkout", "-q", "-b", "feature")
    head = commit(repo, {"src/x.txt": "x"}, "src only")
    result = push(repo, "origin", "feature")
    # docs/ is not in feature's own commits, so the docs stage (which would fail on BAD) does not run
    assert result.returncode == 0, result.stderr
    assert "new ref; 1 commit(s) not on origin" in result.stderr
    assert runs(repo)[-1][:4] == (head, "passed", base, "refs/heads/feature")
    statuses = stage_statuses(repo)
    assert statuses["src"][0] == "passed" and statuses["docs"][0] == "skipped"


def test_orphan_branch_means_all_files(repo: Path, remote: Path) -> None:
    git(repo, "checkout", "-q", "--orphan", "pages")
    git(repo, "rm", "-q", "-r", "--cached", ".")
    for path in repo.iterdir():
        if path.name != ".git":
            path.unlink()
    head = commit(repo, {".cdkit.yml": PATHS_PIPELINE, "docs/index.md": "hi", "BAD": "x"}, "orphan")
    result = push(repo, "origin", "pages")
    assert blocked(result)
    assert f"{head[:12]} (all files)" in result.stderr
    assert runs(repo)[-1][:3] == (head, "failed", None)


def test_delete_runs_nothing(repo: Path, remote: Path) -> None:
    git(repo, "push", "-q", "origin", "main:doomed")
    commit(repo, {"BAD": "x"}, "bad")  # HEAD is bad: a delete must not judge it
    before = len(runs(repo))
    result = push(repo, "origin", "--delete", "doomed")
    assert result.returncode == 0, result.stderr
    assert tip(remote, "refs/heads/doomed") is None
    assert "refs/heads/doomed: deleted on the remote; nothing to check" in result.stderr
    assert len(runs(repo)) == before


@pytest.mark.parametrize("annotated", [False, True])
def test_tags_are_peeled_to_their_commit(repo: Path, remote: Path, annotated: bool) -> None:
    bad = commit(repo, {"BAD": "x"}, "bad")
    git(repo, *(["tag", "-a", "-m", "release", "v1"] if annotated else ["tag", "v1"]))
    result = push(repo, "origin", "v1")
    assert blocked(result)
    assert tip(remote, "refs/tags/v1") is None
    assert runs(repo)[-1][:2] == (bad, "failed")  # the commit, never the tag object


def test_tag_on_an_already_pushed_commit_has_nothing_new(repo: Path, remote: Path) -> None:
    git(repo, "tag", "-a", "-m", "release", "v0")
    before = len(runs(repo))
    result = push(repo, "origin", "v0")
    assert result.returncode == 0, result.stderr
    assert "is already on origin; nothing new to check" in result.stderr
    assert len(runs(repo)) == before


def test_several_refs_every_ref_judged_strictest_wins(repo: Path, remote: Path) -> None:
    start = tip(remote, "main")
    git(repo, "checkout", "-q", "-b", "good")
    good = commit(repo, {"ok.txt": "ok"}, "good")
    git(repo, "checkout", "-q", "-b", "bad", "main")
    bad = commit(repo, {"BAD": "x"}, "bad")
    git(repo, "checkout", "-q", "main")
    result = push(repo, "origin", "good", "bad", "good:refs/heads/also-good")
    assert blocked(result)
    assert tip(remote, "refs/heads/good") is None and tip(remote, "main") == start
    recorded = [(sha, status) for sha, status, _, _ in runs(repo)]
    # one run per distinct commit, even though `good` went to two refs
    assert sorted(recorded) == sorted([(good, "passed"), (bad, "failed")])


def test_force_push_over_a_tip_we_never_fetched(repo: Path, remote: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    commit(other, {"theirs.txt": "theirs"}, "theirs")
    git(other, "push", "-q", "origin", "main")
    mine = commit(repo, {"mine.txt": "mine"}, "mine")
    result = push(repo, "--force", "origin", "main")
    assert result.returncode == 0, result.stderr
    assert "is not in this repository" in result.stderr
    assert tip(remote, "main") == mine


def test_force_push_of_a_bad_rewrite_is_blocked(repo: Path, remote: Path) -> None:
    commit(repo, {"x.txt": "x"}, "x")
    git(repo, "push", "-q", "origin", "main")
    pushed = tip(remote, "main")
    git(repo, "reset", "-q", "--hard", "HEAD~")
    commit(repo, {"BAD": "x"}, "rewrite")
    assert blocked(push(repo, "--force", "origin", "main"))
    assert tip(remote, "main") == pushed


def test_file_names_with_spaces_and_non_utf8_bytes(repo: Path, remote: Path) -> None:
    names = [b"with space.txt", b"caf\xe9.txt", b"new\nline.txt"]
    for name in names:
        (repo / os.fsdecode(name)).write_bytes(b"x")
    write(repo, {".cdkit.yml": PIPELINE.replace("test ! -e BAD", 'test -s "$CDKIT_CHANGED_FILES"')})
    sha = commit(repo, message="odd names")
    result = push(repo, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert tip(remote, "main") == sha
    logs = repo / ".git" / "cdkit" / "logs"
    last = max(logs.iterdir(), key=lambda p: int(p.name))
    assert set(names) <= set((last / "changed-files").read_bytes().split(b"\0"))


def test_push_to_a_url_uses_the_matching_remote(repo: Path, remote: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    head = commit(repo, {"f.txt": "f"}, "feature")
    result = push(repo, str(remote), "feature")
    assert result.returncode == 0, result.stderr
    assert "1 commit(s) not on origin" in result.stderr  # the URL was mapped back to `origin`
    assert tip(remote, "refs/heads/feature") == head


def test_push_to_an_unknown_url_judges_all_files(repo: Path, tmp_path: Path) -> None:
    elsewhere = make_bare(tmp_path / "elsewhere.git")
    commit(repo, {"BAD": "x"}, "bad")
    result = push(repo, str(elsewhere), "main")
    assert blocked(result)
    assert "(all files)" in result.stderr


# --- git's environment, worktrees, odd invocations -------------------------------------------


def test_linked_worktree_and_git_variables_kept_out_of_stages(repo: Path, remote: Path, tmp_path: Path) -> None:
    env_dump = tmp_path / "stage-env.txt"
    commit(repo, {".cdkit.yml": PIPELINE.replace("test ! -e BAD", f"env > {env_dump} && test ! -e BAD")}, "dump env")
    git(repo, "push", "-q", "--no-verify", "origin", "main")
    tree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "wt-branch", str(tree))
    bad = commit(tree, {"BAD": "x"}, "bad in worktree")
    # git exports GIT_DIR to hooks in a linked worktree; an explicit GIT_INDEX_FILE is honoured too
    index = git(tree, "rev-parse", "--path-format=absolute", "--git-path", "index")
    result = push(tree, "origin", "wt-branch", env={"GIT_INDEX_FILE": index})
    assert blocked(result)
    assert runs(repo)[-1][:2] == (bad, "failed")  # recorded in the shared ledger
    assert "in the work tree" in result.stderr  # the worktree's own HEAD, clean: in place
    names = {line.split("=", 1)[0] for line in env_dump.read_text().splitlines() if "=" in line}
    assert not names & {"GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_PREFIX"}
    assert {"CDKIT_SHA", "CDKIT_STAGE"} <= names
    git(tree, "rm", "-q", "BAD")
    good = commit(tree, message="fix")
    assert push(tree, "origin", "wt-branch").returncode == 0
    assert tip(remote, "refs/heads/wt-branch") == good


def test_install_from_a_worktree_uses_the_shared_hooks_dir(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "wt2"
    git(repo, "worktree", "add", "-q", "--detach", str(tree))
    result = cdkit("hook", "install", cwd=tree)
    assert result.returncode == 0
    assert "already installed" in result.stdout
    assert str(repo / ".git" / "hooks" / "pre-push") in result.stdout


def test_submodule_hook_goes_to_the_submodules_git_dir(repo: Path, tmp_path: Path) -> None:
    sub_origin = make_repo(tmp_path / "sub-origin")
    commit(sub_origin, {".cdkit.yml": PIPELINE}, "sub")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub_origin), "sub")
    result = cdkit("hook", "install", cwd=repo / "sub")
    assert result.returncode == 0, result.stderr
    hook = repo / ".git" / "modules" / "sub" / "hooks" / "pre-push"
    assert MARKER in hook.read_text()


def test_empty_stdin_runs_nothing(repo: Path) -> None:
    commit(repo, {"BAD": "x"}, "bad")
    hook = repo / ".git" / "hooks" / "pre-push"
    result = subprocess.run([str(hook), "origin", "url"], cwd=repo, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "no refs to push (empty stdin); nothing to check" in result.stderr


def test_run_by_hand_on_a_terminal_does_not_wait_for_input(repo: Path) -> None:
    import pty

    primary, secondary = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "cdkit", "hook", "run", "pre-push", "origin", "url"], cwd=repo,
                                stdin=secondary, capture_output=True, text=True, timeout=60)
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.returncode == 0
    assert "nothing to check" in result.stderr


def test_malformed_stdin_blocks_with_a_clear_error(repo: Path) -> None:
    result = cdkit("hook", "run", "pre-push", "origin", "url", cwd=repo, input=b"garbage\n")
    assert result.returncode == 2
    assert "pre-push stdin line 1 is not `<local ref> <local oid> <remote ref> <remote oid>`" in result.stderr
    result = cdkit("hook", "run", "pre-push", "origin", "url", cwd=repo, input=b"not a ref line\n")
    assert result.returncode == 2
    assert "pre-push stdin line 1: 'a' is not an object id (expected `<local ref>" in result.stderr
    assert "Traceback" not in result.stderr


def run_hook(repo: Path, stdin: bytes) -> subprocess.CompletedProcess[str]:
    """The installed hook itself, fed `stdin` as git would (for lines git itself never writes)."""
    remote_url = git(repo, "remote", "get-url", "origin")
    return subprocess.run([str(repo / ".git" / "hooks" / "pre-push"), "origin", remote_url], cwd=repo, input=stdin,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("oid", ["a" * 40, "c" * 64], ids=["unknown-sha1", "sha256-in-sha1-repo"])
def test_local_object_missing_from_the_repository_blocks_the_push(repo: Path, oid: str) -> None:
    before = len(runs(repo))
    result = run_hook(repo, f"refs/heads/main {oid} refs/heads/main {'0' * 40}\n".encode())
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "pre-push stdin names objects this repository does not have; the push is blocked:" in err
    assert f"  refs/heads/main -> refs/heads/main: local object {oid} is not in this repository" in err
    assert "git rev-parse --show-object-format" in err and "not a commit" not in err
    assert len(runs(repo)) == before


def test_tag_of_a_tree_is_pushed_unjudged(repo: Path, remote: Path) -> None:
    commit(repo, {"BAD": "x"}, "bad")  # HEAD is bad: a tree tag must not judge it, nor be blocked as missing
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    git(repo, "tag", "tree-tag", tree)
    result = push(repo, "origin", "tree-tag")
    assert result.returncode == 0, result.stderr
    note = f"refs/tags/tree-tag: {tree[:12]} is not a commit (a tag of a tree or blob); nothing to check"
    assert note in result.stderr
    assert tip(remote, "refs/tags/tree-tag") == tree


@pytest.mark.parametrize("byte", [b"\x00", b"\x1b", b"\x7f"])
def test_control_bytes_in_a_ref_line_block_with_the_line_number(repo: Path, byte: bytes) -> None:
    sha = git(repo, "rev-parse", "HEAD").encode()
    stdin = (b"refs/heads/main " + sha + b" refs/heads/main " + b"0" * 40 + b"\n"
             + b"refs/heads/x" + byte + b"y " + sha + b" refs/heads/x" + byte + b"y " + b"0" * 40 + b"\n")
    result = run_hook(repo, stdin)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert f"pre-push stdin line 2: control byte 0x{byte[0]:02x} at column 13" in err
    assert "Traceback" not in err and "internal error" not in err


def interpreter_we_can_remove(root: Path) -> Path:
    """This test's Python under another path, which the test may delete afterwards.

    Inside a virtualenv the copy must be that virtualenv too (its pyvenv.cfg and lib/), or
    Python 3.10 would start it as the bare base interpreter, without cdkit installed.
    """
    python = root / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    if sys.prefix != sys.base_prefix:
        shutil.copy(Path(sys.prefix) / "pyvenv.cfg", root / "pyvenv.cfg")
        (root / "lib").symlink_to(Path(sys.prefix) / "lib")
    return python


def test_missing_interpreter_blocks_and_says_how_to_reinstall(tmp_path: Path, remote: Path) -> None:
    path = make_repo(tmp_path / "gone")
    commit(path, {".cdkit.yml": PIPELINE}, "initial")
    git(path, "remote", "add", "origin", str(remote))
    python = interpreter_we_can_remove(tmp_path / "interpreter")
    subprocess.run([str(python), "-m", "cdkit", "hook", "install"], cwd=path, check=True, capture_output=True)
    python.unlink()
    result = push(path, "origin", "main")
    assert blocked(result)
    assert f"cdkit: this pre-push hook runs {python}, which no longer exists." in result.stderr
    assert "`cdkit hook install`" in result.stderr
    status = cdkit("hook", "status", cwd=path)
    assert status.returncode == 1
    assert f"the interpreter {python} is gone" in status.stdout
    assert cdkit("hook", "install", cwd=path).returncode == 0
    assert push(path, "origin", "main").returncode == 0


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_a_stage_kills_it_aborts_the_push_and_records_cancelled(
        repo: Path, remote: Path, tmp_path: Path, sig: signal.Signals) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    slow = PIPELINE.replace("test ! -e BAD",
                            f"echo $PPID > {marks}/hook.pid; sleep 60 & echo $! > {marks}/child.pid; wait")
    commit(repo, {".cdkit.yml": slow}, "slow")
    before = tip(remote, "main")
    proc = subprocess.Popen(["git", "push", "origin", "main"], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CDKIT_KILL_GRACE": "2"})
    try:
        for _ in range(600):
            if (marks / "child.pid").exists() and (marks / "child.pid").read_text().strip():
                break
            time.sleep(0.05)
        hook_pid = int((marks / "hook.pid").read_text())
        child = int((marks / "child.pid").read_text())
        os.kill(hook_pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "interrupted; the push is aborted" in err
    assert tip(remote, "main") == before
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child)
    assert runs(repo)[-1][1] == "cancelled"
    assert stage_statuses(repo)["check"][0] == "cancelled"


# --- install, uninstall, status ------------------------------------------------------------


def test_install_twice_changes_nothing(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-push"
    before = (hook.read_bytes(), hook.stat().st_mtime_ns)
    result = cdkit("hook", "install", cwd=repo)
    assert result.returncode == 0
    assert "already installed" in result.stdout
    assert (hook.read_bytes(), hook.stat().st_mtime_ns) == before
    assert not (repo / ".git" / "hooks" / LEGACY_NAME).exists()


def test_status_reports_and_install_repairs_crlf_and_mode(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-push"
    good = hook.read_bytes()
    hook.write_bytes(good.replace(b"\n", b"\r\n"))
    hook.chmod(0o644)
    status = cdkit("hook", "status", cwd=repo)
    assert status.returncode == 1
    assert "the hook is not executable, so git ignores it" in status.stdout
    assert "the hook has CRLF line endings" in status.stdout
    result = cdkit("hook", "install", cwd=repo)
    assert "repaired the pre-push hook (not executable, CRLF line endings)" in result.stdout
    assert hook.read_bytes() == good and hook.stat().st_mode & stat.S_IXUSR
    assert cdkit("hook", "status", cwd=repo).returncode == 0


FOREIGN = """#!/bin/sh
echo "args: $*" > "{out}/args"
cat > "{out}/stdin"
exit "${{FOREIGN_EXIT:-0}}"
"""


def test_existing_hook_is_chained_with_its_stdin_and_restored(tmp_path: Path, remote: Path) -> None:
    path = make_repo(tmp_path / "chained")
    commit(path, {".cdkit.yml": PIPELINE}, "initial")
    git(path, "remote", "add", "origin", str(remote))
    hook = path / ".git" / "hooks" / "pre-push"
    foreign = FOREIGN.format(out=tmp_path)
    hook.write_text(foreign)
    hook.chmod(0o755)
    result = cdkit("hook", "install", cwd=path)
    assert "kept the existing pre-push hook as" in result.stdout
    assert (path / ".git" / "hooks" / LEGACY_NAME).read_text() == foreign
    assert cdkit("hook", "status", cwd=path).stdout.count("runs first") == 1

    sha = git(path, "rev-parse", "HEAD")
    assert push(path, "origin", "main").returncode == 0
    assert (tmp_path / "args").read_text() == f"args: origin {remote}\n"
    assert (tmp_path / "stdin").read_text() == f"refs/heads/main {sha} refs/heads/main {'0' * 40}\n"
    assert runs(path)[-1][:2] == (sha, "passed")

    # the chained hook's failure blocks the push before any stage runs
    commit(path, {"x.txt": "x"}, "more")
    result = push(path, "origin", "main", env={"FOREIGN_EXIT": "7"})
    assert blocked(result)
    assert "the previous pre-push hook" in result.stderr and "exit code 7" in result.stderr
    # CDKIT=0 skips cdkit but still runs the chained hook (git-lfs must still upload)
    (tmp_path / "stdin").unlink()
    assert push(path, "origin", "main", env={"CDKIT": "0"}).returncode == 0
    assert (tmp_path / "stdin").read_text().startswith("refs/heads/main ")

    result = cdkit("hook", "uninstall", cwd=path)
    assert "restored the previous one" in result.stdout
    assert hook.read_text() == foreign and not (path / ".git" / "hooks" / LEGACY_NAME).exists()


def test_uninstall_leaves_a_foreign_hook_alone(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-push"
    assert cdkit("hook", "uninstall", cwd=repo).returncode == 0
    assert not hook.exists()
    hook.write_text("#!/bin/sh\nexit 0\n")
    result = cdkit("hook", "uninstall", cwd=repo)
    assert result.returncode == 2
    assert "is not cdkit's hook" in result.stderr
    assert hook.exists()


def test_install_refuses_when_legacy_slot_is_taken(repo: Path) -> None:
    hooks = repo / ".git" / "hooks"
    (hooks / LEGACY_NAME).write_text("#!/bin/sh\n")
    (hooks / "pre-push").write_text("#!/bin/sh\necho other tool\n")
    result = cdkit("hook", "install", cwd=repo)
    assert result.returncode == 2
    assert f"{LEGACY_NAME} already exists" in result.stderr
    assert cdkit("hook", "install", "--force", cwd=repo).returncode == 0
    assert (hooks / LEGACY_NAME).read_text() == "#!/bin/sh\necho other tool\n"


def test_core_hooks_path_outside_the_repository(tmp_path: Path, remote: Path) -> None:
    path = make_repo(tmp_path / "hp")
    commit(path, {".cdkit.yml": PIPELINE, "BAD": "x"}, "bad")
    git(path, "remote", "add", "origin", str(remote))
    shared = tmp_path / "shared-hooks"
    git(path, "config", "core.hooksPath", str(shared))
    result = cdkit("hook", "install", cwd=path)
    assert result.returncode == 0
    assert f"core.hooksPath is set ({shared}): installing into {shared}" in result.stdout
    assert MARKER in (shared / "pre-push").read_text()
    assert blocked(push(path, "origin", "main"))


def test_core_hooks_path_inside_the_repository_needs_force(tmp_path: Path, remote: Path) -> None:
    path = make_repo(tmp_path / "husky")
    commit(path, {".cdkit.yml": PIPELINE, "BAD": "x"}, "bad")
    git(path, "remote", "add", "origin", str(remote))
    git(path, "config", "core.hooksPath", ".husky")
    result = cdkit("hook", "install", cwd=path)
    assert result.returncode == 2
    assert "core.hooksPath is set to '.husky', a directory inside this repository" in result.stderr
    assert not (path / ".husky" / "pre-push").exists()
    result = cdkit("hook", "install", "--force", cwd=path)
    assert result.returncode == 0
    assert blocked(push(path, "origin", "main"))


def test_committed_shim_runs_cdkit(tmp_path: Path, remote: Path) -> None:
    path = make_repo(tmp_path / "shim")
    shim = (ROOT / "hooks" / "pre-push").read_text()
    commit(path, {".cdkit.yml": PIPELINE, "hooks/pre-push": shim, "BAD": "x"}, "bad")
    (path / "hooks" / "pre-push").chmod(0o755)
    git(path, "config", "core.hooksPath", "hooks")
    git(path, "remote", "add", "origin", str(remote))
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    assert blocked(push(path, "origin", "main", env=env))
    git(path, "rm", "-q", "BAD")
    commit(path, message="fix")
    assert push(path, "origin", "main", env=env).returncode == 0


# --- pre-commit and GitHub statuses ---------------------------------------------------------


def test_pre_commit_environment_instead_of_stdin(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    bad = commit(repo, {"BAD": "x"}, "bad")
    env = {"PRE_COMMIT_REMOTE_NAME": "origin", "PRE_COMMIT_REMOTE_URL": "url", "PRE_COMMIT_FROM_REF": base,
           "PRE_COMMIT_TO_REF": bad, "PRE_COMMIT_REMOTE_BRANCH": "refs/heads/main"}
    result = cdkit("hook", "run", "pre-push", cwd=repo, env=env)
    assert result.returncode == 1
    assert f"on refs/heads/main {base[:12]}..{bad[:12]}" in result.stderr


def test_real_pre_commit_pre_push_stage(tmp_path: Path, remote: Path) -> None:
    pytest.importorskip("pre_commit")
    path = make_repo(tmp_path / "pc")
    pc_config = config(f"""
        repos:
          - repo: local
            hooks:
              - id: cdkit
                name: cdkit
                entry: {sys.executable} -m cdkit hook run pre-push
                language: system
                stages: [pre-push]
                pass_filenames: false
                always_run: true
        """)
    commit(path, {".cdkit.yml": PIPELINE, ".pre-commit-config.yaml": pc_config}, "initial")
    git(path, "remote", "add", "origin", str(remote))
    subprocess.run([sys.executable, "-m", "pre_commit", "install", "--hook-type", "pre-push"], cwd=path,
                   check=True, capture_output=True)
    assert push(path, "origin", "main").returncode == 0
    commit(path, {"BAD": "x"}, "bad")
    result = push(path, "origin", "main")
    assert blocked(result)
    assert "stage 'check' failed" in result.stdout + result.stderr


def test_results_wait_in_the_outbox_as_commit_statuses(repo: Path) -> None:
    bad = commit(repo, {"BAD": "x"}, "bad")
    result = push(repo, "origin", "main", env={"GITHUB_TOKEN": "ghs_" + "x" * 36, "GITHUB_REPOSITORY": "octo/calc"})
    assert blocked(result)
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        run_id = ledger.recent_runs(1)[0].id
        check = ledger.outbox_item(f"status:octo/calc:{bad}:cdkit/check:{run_id}")
        skipped = ledger.outbox_item(f"status:octo/calc:{bad}:cdkit/ci-only:{run_id}")
    assert check is not None
    assert check.kind == "status" and check.state == "pending"
    assert check.payload == {"repo": "octo/calc", "sha": bad, "state": "failure", "context": "cdkit/check",
                             "description": "failed: exit code 1 (pre-push)", "target_url": None, "stage": "check",
                             "run_id": run_id}
    # the push did not judge a CI-only stage: a `success` would turn CI's own cdkit/ci-only green
    assert skipped is None


JUDGED_PIPELINE = config("""
    version: 1
    stages:
      - name: check
        run: test ! -e BAD
        on: [pre-push]
      - name: after
        run: "true"
        on: [pre-push]
      - name: docs
        run: "true"
        on: [pre-push]
        paths: ["docs/**"]
        needs: []
      - name: lint
        run: "false"
        on: [pre-push]
        needs: []
      - name: ci-only
        run: "true"
        on: [ci]
        needs: []
    """)


def test_statuses_only_for_stages_the_push_judged(repo: Path) -> None:
    bad = commit(repo, {".cdkit.yml": JUDGED_PIPELINE, "BAD": "x"}, "bad")
    result = push(repo, "origin", "main", env={"GITHUB_TOKEN": "ghs_" + "x" * 36, "GITHUB_REPOSITORY": "octo/calc",
                                               "CDKIT_SKIP": "lint"})
    assert blocked(result)
    assert stage_statuses(repo)["lint"] == ("skipped", "skipped by CDKIT_SKIP")  # the ledger keeps the skip
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        items = ledger.pending()
    assert {item.payload["sha"] for item in items} == {bad}
    queued = {item.payload["context"]: (item.payload["state"], item.payload["description"]) for item in items}
    # CDKIT_SKIP (the user chose not to judge) and `on: [ci]` (not this trigger) queue nothing;
    # skips this run decided (a failed need, `paths`) are reported as documented
    assert queued == {
        "cdkit/check": ("failure", "failed: exit code 1 (pre-push)"),
        "cdkit/after": ("success", "skipped: needs 'check', which failed"),
        "cdkit/docs": ("success", "skipped: paths did not match any of 2 changed file(s) (docs/**)"),
    }


def test_failure_summary_redacts_tokens_from_the_stage_log(repo: Path) -> None:
    token = "ghp_" + "T0k3n" * 7 + "a"
    leaky = PIPELINE.replace(
        "run: test ! -e BAD", """run: 'echo "Authorization: token $GITHUB_TOKEN"; echo "plain $GITHUB_TOKEN"; exit 1'
    env_passthrough: [GITHUB_TOKEN]""")  # granted the token, the stage still cannot show it
    commit(repo, {".cdkit.yml": leaky}, "leaky stage")
    result = push(repo, "origin", "main", env={"GITHUB_TOKEN": token})
    assert blocked(result)
    assert len(token) == 40 and token not in result.stdout + result.stderr
    assert "  | Authorization: ***" in result.stderr and "  | plain ***" in result.stderr


def test_no_token_no_outbox(repo: Path) -> None:
    commit(repo, {"BAD": "x"}, "bad")
    push(repo, "origin", "main", env={"GITHUB_REPOSITORY": "octo/calc"})
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        assert ledger.pending() == []


# --- the hook path stays lean ---------------------------------------------------------------


def test_hook_path_imports_neither_click_nor_github_nor_gitpython(repo: Path) -> None:
    from cdkit.hook import import_paths

    sha = commit(repo, {"x.txt": "x"}, "x")
    stdin = f"refs/heads/main {sha} refs/heads/main {'0' * 40}\n"
    code = (
        "import os, sys\n"
        f"sys.path[:0] = {import_paths()!r}\n"
        "from cdkit.hook_entry import run_pre_push\n"
        f"code = run_pre_push('origin', 'url', {stdin.encode()!r}, hook_path=None, environ=os.environ)\n"
        "heavy = sorted(m for m in ('click', 'github', 'git', 'requests', 'urllib3', 'jsonschema', 'croniter',\n"
        "                            'cdkit.windows') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=repo, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "0 []", result.stderr


# Imported by any push that runs a stage; a push that runs nothing needs none of them.
PIPELINE_MACHINERY = ("pathlib", "subprocess", "sqlite3", "cdkit.git", "cdkit.config", "cdkit.session",
                      "cdkit.prepush")


def hook_in_fresh_python(repo: Path, stdin: bytes, env: Mapping[str, str] | None = None,
                         ) -> tuple[int, list[str], str]:
    """The hook's entry point in a new `python -I -S`, as the installed hook runs it: its exit code,
    which of PIPELINE_MACHINERY it imported, and what it said."""
    from cdkit.hook import import_paths

    code = (
        "import json, os, sys\n"
        f"sys.path[:0] = {import_paths()!r}\n"
        "from cdkit.hook_entry import run_pre_push\n"
        f"code = run_pre_push('origin', 'url', {stdin!r}, hook_path=None, environ=os.environ)\n"
        f"print(json.dumps([code, sorted(m for m in {PIPELINE_MACHINERY!r} if m in sys.modules)]))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=repo, env={**clean, **(env or {})},
                            capture_output=True, text=True, timeout=120)
    exit_code, imported = json.loads(result.stdout)
    return exit_code, imported, result.stderr


def test_a_push_that_runs_nothing_imports_no_pipeline_machinery(repo: Path) -> None:
    sha = commit(repo, {"x.txt": "x"}, "x")
    update = f"refs/heads/main {sha} refs/heads/main {git(repo, 'rev-parse', 'HEAD~1')}\n".encode()
    # The control: a push with a stage to run needs all of it (so the empty lists below mean something).
    code, imported, said = hook_in_fresh_python(repo, update)
    assert (code, imported) == (0, sorted(PIPELINE_MACHINERY)), said
    assert "run #1 passed: 1 passed" in said

    delete = f"(delete) {'0' * 40} refs/heads/gone {sha}\n".encode()
    assert hook_in_fresh_python(repo, delete)[:2] == (0, [])
    code, imported, said = hook_in_fresh_python(repo, b"")
    assert (code, imported) == (0, []) and "no refs to push (empty stdin)" in said

    commit(repo, {".cdkit.yml": PIPELINE.replace("on: [pre-push]", "on: [ci]")}, "no pre-push stage")
    assert push(repo, "origin", "main").returncode == 0  # builds the cache of the new pipeline
    sha = commit(repo, {"BAD": "x"}, "bad, but no stage judges it on pre-push")
    update = f"refs/heads/main {sha} refs/heads/main {git(repo, 'rev-parse', 'HEAD~1')}\n".encode()
    code, imported, said = hook_in_fresh_python(repo, update)
    assert (code, imported) == (0, []), said
    assert "no stage of .cdkit.yml runs on pre-push (`on: [pre-push]`); nothing to check" in said


def test_the_quiet_shortcut_never_hides_a_stage_the_pipeline_file_now_has(repo: Path, remote: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE.replace("on: [pre-push]", "on: [ci]")}, "no pre-push stage")
    assert push(repo, "origin", "main").returncode == 0
    before = tip(remote, "main")
    # From a linked worktree (git sets GIT_DIR for its hook), the shortcut finds the shared cache.
    worktree = repo.parent / "linked"
    git(repo, "worktree", "add", "-q", "-b", "linked", str(worktree))
    for n in range(2):  # a miss (another path: another cache key), then the shortcut
        commit(worktree, {"BAD": str(n)}, "bad, but no stage judges it on pre-push")
        result = push(worktree, "origin", "linked")
        assert result.returncode == 0 and "no stage of .cdkit.yml runs on pre-push" in result.stderr
    # The pipeline file gains a pre-push stage: the cached answer is not reused.
    for where, ref in ((repo, "main"), (worktree, "linked")):
        commit(where, {".cdkit.yml": PIPELINE, "BAD": "x"}, "a pre-push stage, and a bad commit")
        result = push(where, "origin", ref)
        assert blocked(result) and "stage 'check' failed" in result.stderr, result.stderr
    assert tip(remote, "main") == before


def test_pipeline_cache_follows_every_edit_and_survives_corruption(repo: Path, remote: Path) -> None:
    cache = repo / ".git" / "cdkit" / "pipeline.cache"
    commit(repo, {"a.txt": "a"}, "a")
    assert push(repo, "origin", "main").returncode == 0
    assert cache.exists()
    # same length, one byte different: the stage now fails, and the cached pipeline must not hide it
    write(repo, {".cdkit.yml": PIPELINE.replace("test ! -e BAD", "test ! -e bad")})
    commit(repo, {"bad": "x"}, "lower-case bad")
    assert blocked(push(repo, "origin", "main"))
    cache.write_bytes(b"\x00garbage")
    result = push(repo, "origin", "main")
    assert blocked(result) and "internal error" not in result.stderr
    write(repo, {".cdkit.yml": "version: 1\nstages: oops\n"})
    commit(repo, message="broken config")
    result = push(repo, "origin", "main")
    assert blocked(result)
    assert ".cdkit.yml:2:9: stages:" in result.stderr, result.stderr


def test_pipeline_cache_misses_when_schema_json_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the real schema stands in for an upgraded (or edited, in an editable install) cdkit.
    schema = tmp_path / "schema.json"
    schema.write_bytes(cdkit_config.SCHEMA_PATH.read_bytes())
    monkeypatch.setattr(cdkit_config, "SCHEMA_PATH", schema)
    path, cache = tmp_path / ".cdkit.yml", tmp_path / "pipeline.cache"
    path.write_text(PIPELINE)
    assert [s.name for s in load_pipeline_cached(path, cache).stages] == ["check", "ci-only"]
    stricter = json.loads(schema.read_text())
    stricter["$defs"]["name"]["maxLength"] = 3  # now "check" and "ci-only" are too long
    schema.write_text(json.dumps(stricter))
    stat_before = os.stat(schema)
    os.utime(schema, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns + 10**9))  # coarse-mtime filesystems
    with pytest.raises(ConfigError, match="is longer than 3 characters"):
        load_pipeline_cached(path, cache)


@pytest.mark.xdist_group("demo")
def test_demo_shows_a_push_blocked_then_let_through(demo_run: DemoRun) -> None:
    result = demo_run.result
    assert result.returncode == 0, result.stderr
    hook_part = result.stdout[result.stdout.index("The pre-push hook"):].split("── 15.", 1)[0]  # before windows
    assert "cdkit: installed the pre-push hook" in hook_part
    assert "cdkit: stage 'test' failed" in hook_part and "cdkit: push blocked" in hook_part
    assert hook_part.count("\n  (exit code 1)") == 1  # only the blocked push
    assert "* [new branch]      main -> main" in hook_part


def test_renamed_remote_uses_its_new_name(repo: Path, remote: Path) -> None:
    git(repo, "remote", "rename", "origin", "upstream")
    git(repo, "checkout", "-q", "-b", "renamed")
    head = commit(repo, {"r.txt": "r"}, "on renamed remote")
    result = push(repo, "upstream", "renamed")
    assert result.returncode == 0, result.stderr
    assert "1 commit(s) not on upstream" in result.stderr
    assert tip(remote, "refs/heads/renamed") == head


def test_shallow_clone_still_judges_the_pushed_commits(repo: Path, remote: Path, tmp_path: Path) -> None:
    for i in range(3):
        commit(repo, {f"f{i}.txt": str(i)}, f"history {i}")
    git(repo, "push", "-q", "origin", "main")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{remote}", str(shallow))
    assert cdkit("hook", "install", cwd=shallow).returncode == 0
    git(shallow, "checkout", "-q", "-b", "topic")
    commit(shallow, {"BAD": "x"}, "bad in a shallow clone")
    assert blocked(push(shallow, "origin", "topic"))
    git(shallow, "rm", "-q", "BAD")
    good = commit(shallow, message="fixed")
    result = push(shallow, "origin", "topic")
    assert result.returncode == 0, result.stderr
    assert tip(remote, "refs/heads/topic") == good


def test_non_utf8_commit_message(repo: Path, remote: Path) -> None:
    (repo / "m.txt").write_text("m")
    git(repo, "add", "-A")
    subprocess.run([b"git", b"-c", b"i18n.commitEncoding=latin1", b"commit", b"-q", b"-m", b"caf\xe9 na\xefve"],
                   cwd=repo, check=True)
    sha = git(repo, "rev-parse", "HEAD")
    result = push(repo, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert tip(remote, "main") == sha


def test_pre_commit_manifest_is_valid() -> None:
    pytest.importorskip("pre_commit")
    result = subprocess.run([sys.executable, "-m", "pre_commit", "validate-manifest", ".pre-commit-hooks.yaml"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ref_lines_without_a_remote_is_a_usage_error(repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    result = cdkit("hook", "run", "pre-push", cwd=repo, input=f"refs/heads/x {sha} refs/heads/x {'0' * 40}\n".encode())
    assert result.returncode == 2
    assert "REMOTE and URL are required" in result.stderr


# --- what the hook says ------------------------------------------------------------------------


def test_the_summary_says_why_stages_were_skipped(repo: Path) -> None:
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: check, run: "true", on: [pre-push]}
          - {name: docs, run: "true", on: [pre-push], paths: ["docs/**"], needs: []}
          - {name: web, run: "true", on: [pre-push], paths: ["web/**"], needs: []}
          - {name: ci-only, run: "true", on: [ci]}
    """)}, "skips")
    result = push(repo, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert "1 passed, 3 skipped: 2 paths did not match, 1 not on pre-push" in result.stderr
    commit(repo, {"docs/a.md": "x"}, "docs")
    result = push(repo, "origin", "main", env={"CDKIT_SKIP": "check"})
    assert result.returncode == 0
    assert ("1 passed, 3 skipped: 1 CDKIT_SKIP, 1 paths did not match, 1 not on pre-push "
            "(does not count for a release: CDKIT_SKIP skipped check)") in result.stderr, result.stderr


def test_a_failure_shows_every_path_line_the_stage_printed_and_its_last_20_lines(repo: Path) -> None:
    script = ("for i in $(seq 1 300); do echo noise $i; [ $i = 40 ] && echo 'src/calc.py:12:5: E501 line too long'; "
              "[ $i = 90 ] && echo 'tests/test_calc.py:33: AssertionError'; done; exit 1")
    commit(repo, {".cdkit.yml": PIPELINE.replace("run: test ! -e BAD", f"run: {json.dumps(script)}")}, "noisy")
    result = push(repo, "origin", "main")
    assert blocked(result)
    shown = [line[4:] for line in result.stderr.splitlines() if line.startswith("  | ")]
    assert shown[:2] == ["src/calc.py:12:5: E501 line too long", "tests/test_calc.py:33: AssertionError"]
    assert shown[-20:] == [f"noise {i}" for i in range(281, 301)]
    assert "noise 100" not in shown


def test_a_push_that_changes_the_pipeline_file_validates_it_first(repo: Path, remote: Path) -> None:
    before = tip(remote, "main")
    commit(repo, {".cdkit.yml": PIPELINE.replace("on: [pre-push]", "on: [pre-push]\n    timout: 5s")}, "typo")
    result = push(repo, "origin", "main")
    assert blocked(result) and tip(remote, "main") == before
    assert "as pushed in" in result.stderr and "is not valid; the push is blocked" in result.stderr
    assert ".cdkit.yml" in result.stderr and "timout" in result.stderr and "did you mean" in result.stderr
    assert not any(r[0] == git(repo, "rev-parse", "HEAD") for r in runs(repo))  # no stage ran for it
    # The control: a valid edit of the file is validated, said so, and goes through.
    commit(repo, {".cdkit.yml": PIPELINE.replace("on: [pre-push]", "on: [pre-push]\n    timeout: 5s")}, "fixed")
    result = push(repo, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert "as pushed in" in result.stderr and ": valid (2 stage(s))" in result.stderr
