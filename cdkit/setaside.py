"""Judge a commit in the work tree itself: set the user's work aside, check the commit out, put it all back.

Why in place, and not in a temporary worktree: an editable install (`pip install -e .`,
`npm link`, a Go `replace`, any absolute path a tool recorded) points at the work tree, so
stages run in another directory still import the work tree's code, and a broken commit
passes on the strength of an uncommitted fix. Checked out where the tools look, the
commit's own code is what runs.

Nothing of the user's may be lost, even after a SIGKILL, so every step is recorded before
it is taken, in the git dir (`<git dir>/cdkit/setaside/`):

1. `mkdir setaside/` (the lock: one set-aside per work tree at a time) and the owner's pid;
2. the index, byte for byte (partial staging, intent-to-add, flags);
3. a tree of the whole work tree, tracked and untracked files (not ignored ones), as git
   objects held by a ref, and the mode and mtime of every file the switch will rewrite;
4. the manifest (HEAD, the snapshot, the commit judged), written atomically;
5. only then the switch: the commit's files written, the user's untracked files removed,
   the index set to the commit, HEAD detached at it.

Putting back writes every file that differs between the snapshot and the commit from the
snapshot (so the user's version wins over anything a stage wrote), removes the commit's
files the user did not have, restores the index bytes, HEAD, modes and mtimes, and
deletes the record last. `cdkit hook recover` does the same from the record after a crash;
each step is idempotent, so a recovery interrupted in its turn can simply run again.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from cdkit import git
from cdkit.errors import EXIT_USAGE, CdkitError, GitError
from cdkit.util import HOST, cmd_output_b, local_process_gone

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from cdkit.ntuple import NamedTuple


def _shutil() -> Any:
    """`shutil`, imported on first use: it imports bz2 and lzma, milliseconds of every push, and a clean push
    (the common one) never copies a file."""
    import shutil

    return shutil


def _json() -> Any:
    import json  # only when work is set aside: a clean push never writes a manifest

    return json

SETASIDE_DIR = "setaside"
MANIFEST = "manifest.json"
OWNER = "owner"
INDEX_COPY = "index"
FILES = "files"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
REF_PREFIX = "refs/cdkit/setaside/"
FORMAT = 1
GITLINK = "160000"


class SetAsideError(CdkitError):
    """The work could not be set aside (nothing was changed), or a previous set-aside waits for recovery."""

    exit_code = EXIT_USAGE


class Paths(NamedTuple):
    """Where one work tree's set-aside lives."""

    root: Path  # the work tree
    git_dir: Path  # its own git dir (a linked worktree's is under .git/worktrees/)
    index_file: Path  # its index file

    @property
    def dir(self) -> Path:
        return self.git_dir / "cdkit" / SETASIDE_DIR

    @property
    def manifest(self) -> Path:
        return self.dir / MANIFEST

    @property
    def ref(self) -> str:
        # Refs are shared by all worktrees of a repository: one name per work tree.
        import hashlib

        return REF_PREFIX + hashlib.sha1(os.fsencode(str(self.git_dir))).hexdigest()[:16]


def paths_for(root: Path, git_dir: Path | None = None) -> Paths:
    """The set-aside paths of the work tree at `root` (no git process when its git dir is known).

    The index is always `<git dir>/index` here: cdkit drops GIT_INDEX_FILE, which is
    the only way to move it.
    """
    if git_dir is None:
        git_dir = Path(git.git("rev-parse", "--path-format=absolute", "--git-dir", cwd=root))
    return Paths(root=root, git_dir=git_dir, index_file=git_dir / "index")


def pending(git_dir: Path) -> Path | None:
    """The set-aside record of an interrupted run in this git dir, if any (one stat: cheap enough for every command)."""
    directory = git_dir / "cdkit" / SETASIDE_DIR
    return directory if directory.is_dir() else None


def pending_warning(cwd: str) -> str | None:
    """A warning when the repository around `cwd` holds an interrupted set-aside (no git process: every command pays it)."""
    for directory in (Path(cwd), *Path(cwd).parents):
        dot_git = directory / ".git"
        if dot_git.is_dir():
            git_dir = dot_git
        elif dot_git.is_file():  # a linked worktree or submodule: "gitdir: PATH"
            text = dot_git.read_text(errors="replace").strip()
            if not text.startswith("gitdir: "):
                return None
            git_dir = (directory / text[len("gitdir: "):]).resolve()
        else:
            continue
        record = pending(git_dir)
        if record is None:
            return None
        if live_owner(record) is not None:
            return None  # a run in progress: it puts the work back itself
        return (f"an interrupted cdkit run left your work set aside in {record} and the work tree checked out at "
                "another commit; run `cdkit hook recover` to put your work back (nothing is lost)")
    return None


# --- why a work tree cannot be judged in place -------------------------------------------------


def cannot_switch(root: Path, git_dir: Path, listing: git.Pending | None = None) -> str | None:
    """Why this work tree cannot safely hold another commit for a while (None when it can).

    Such a tree is judged in a temporary worktree instead, and the run is recorded dirty:
    a sparse checkout or skip-worktree entries would leave files of the commit unwritten,
    assume-unchanged entries hide the user's edits from git, and a merge, rebase or
    cherry-pick in progress has state a checkout would disturb.
    """
    for marker, what in (("MERGE_HEAD", "a merge"), ("rebase-merge", "a rebase"), ("rebase-apply", "a rebase"),
                         ("CHERRY_PICK_HEAD", "a cherry-pick"), ("REVERT_HEAD", "a revert"),
                         ("BISECT_LOG", "a bisect")):
        if (git_dir / marker).exists():
            if listing is not None:
                listing.abandon()
            return f"{what} is in progress"
    return hidden_files(root, git_dir, listing)


def hidden_files(root: Path, git_dir: Path, listing: git.Pending | None = None) -> str | None:
    """Why `git status` may call this tree clean while files differ from the commit (None: it may not).

    One `git ls-files -v`: every entry tagged `H` is an ordinary tracked file; a sparse
    checkout shows as `S` (skip-worktree) entries, assume-unchanged ones in lower case.
    `listing`: that command, already started (`start_listing`).
    """
    return hidden_in_listing((listing or start_listing(root)).output())


def start_listing(root: Path) -> git.Pending:
    """`git ls-files -v -z` for `hidden_files`, started now (it can run while `git status` does)."""
    return git.Pending("--no-optional-locks", "ls-files", "-v", "-z", cwd=root)


def hidden_in_listing(listing: bytes) -> str | None:
    """`hidden_files` for the output of `git ls-files -v -z`."""
    entries = listing.count(b"\0")  # each entry ends in one; a file name never holds a NUL
    ordinary = listing.startswith(b"H ") + listing.count(b"\0H ")
    if ordinary == entries:
        return None  # the usual case, decided without a Python loop over every file (or `re`)
    for entry in listing.split(b"\0"):
        if not entry or entry.startswith(b"H "):
            continue
        tag, name = entry[:1], git.decode(entry[2:])
        if tag == b"S":
            return f"{name} is marked --skip-worktree (a sparse checkout)"
        if tag.islower():
            return f"{name} is marked --assume-unchanged"
        if tag == b"M":
            return "the index has unmerged paths"
    return None


# --- the record --------------------------------------------------------------------------------


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _take_lock(p: Paths) -> None:
    p.dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(p.dir, 0o700)
    except FileExistsError:
        raise SetAsideError(busy_message(p)) from None
    _fsync_write(p.dir / OWNER, _json().dumps({"pid": os.getpid(), "host": HOST, "at": time.time()}).encode())


def busy_message(p: Paths) -> str:
    pid = live_owner(p.dir)
    if pid is not None:
        return (f"another cdkit run (pid {pid}) is judging a commit in this work tree ({p.root}); "
                "wait for it to finish, then push again")
    return (f"an interrupted cdkit run set your work aside in {p.dir}; nothing is lost: run `cdkit hook recover` "
            "to put it back, then push again")


def live_owner(record: Path) -> int | None:
    """The pid of the cdkit process that made this set-aside record, while it is known to be alive."""
    owner = _read_json(record / OWNER) or {}
    pid, host = owner.get("pid"), owner.get("host")
    if isinstance(pid, int) and not local_process_gone(pid, host if isinstance(host, str) else None):
        return pid
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = _json().loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Manifest(NamedTuple):
    head_ref: str | None  # refs/heads/x, or None on a detached HEAD
    head_sha: str | None  # None on an unborn branch
    snapshot: str  # tree of the user's work tree (tracked + untracked, not ignored)
    target: str  # the commit judged
    target_tree: str  # and its tree
    stats: dict[str, tuple[int, int]]  # path -> (mode, mtime_ns) of every file the switch rewrites or removes
    dirs: list[str]  # directories that existed before, under which the commit adds files
    saved: list[str]  # the user's own files, copied byte for byte into the record
    created_at: float

    def to_json(self) -> bytes:
        text: str = _json().dumps({"format": FORMAT, **self._asdict()})
        return text.encode("utf-8", "surrogateescape")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise SetAsideError(f"the set-aside record was written by another cdkit (format {data.get('format')}); "
                                "recover with that version")
        return cls(head_ref=data["head_ref"], head_sha=data["head_sha"], snapshot=data["snapshot"],
                   target=data["target"], target_tree=data["target_tree"], stats={k: (v[0], v[1]) for k, v in data["stats"].items()},
                   dirs=list(data["dirs"]), saved=list(data["saved"]), created_at=float(data["created_at"]))


# --- trees ------------------------------------------------------------------------------------


def snapshot_tree(p: Paths, *, force: Sequence[str] = (), scratch: Path | None = None,
                  previous: str | None = None) -> str:
    """A tree of the work tree as it is now: tracked and untracked files, ignored ones left out.

    Built in a copy of the index, so the user's index is never touched and unchanged
    files are not hashed again (their stat data is in the copy). `force` adds ignored
    paths that a checkout would overwrite. A caller taking many snapshots passes its own
    `scratch` index, kept between calls, and the tree the last one returned: when `git add`
    leaves that index as it was, nothing changed, and the snapshot costs one git process.
    """
    if scratch is not None:
        return _snapshot_in(p, scratch, force, previous=previous)
    p.dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.dir.parent / f"snapshot-index.{os.getpid()}.{threading.get_ident()}"
    try:
        if p.index_file.exists():
            _shutil().copyfile(p.index_file, tmp)
        return _snapshot_in(p, tmp, force)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _snapshot_in(p: Paths, index: Path, force: Sequence[str], *, previous: str | None = None) -> str:
    env = _index_env(index)
    before = _identity(index)
    _add_all(p, env, force)
    if previous is not None and before is not None and _identity(index) == before:
        return previous  # git rewrites the index (a new file, renamed into place) whenever anything changed
    return git.decode(git.with_env(env, "write-tree", cwd=p.root)).strip()


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _add_all(p: Paths, env: Mapping[str, str], force: Sequence[str]) -> None:
    git.with_env(env, "add", "-A", "--ignore-errors", cwd=p.root)
    if force:
        git.with_env(env, "add", "-f", "--pathspec-from-file=-", "--pathspec-file-nul", cwd=p.root,
                     stdin=b"".join(os.fsencode(f) + b"\0" for f in force))


class TreeDiff(NamedTuple):
    only_in_a: list[str]
    differ: list[str]  # in both, with other content or mode
    only_in_b: list[str]


def diff_trees(a: str, b: str, cwd: Path) -> TreeDiff:
    """Files that differ between two trees (submodule entries left out: a checkout never writes them)."""
    out = git.git_b("diff-tree", "-r", "-z", "--no-renames", "--raw", a, b, cwd=cwd)
    fields = out.split(b"\0")
    only_a: list[str] = []
    differ: list[str] = []
    only_b: list[str] = []
    i = 0
    while i + 1 < len(fields):
        meta, path = fields[i], git.decode(fields[i + 1])
        i += 2
        if not meta.startswith(b":"):
            continue
        mode_a, mode_b, _, _, status = git.decode(meta[1:]).split(" ")
        if GITLINK in (mode_a, mode_b):
            continue
        {"D": only_a, "A": only_b}.get(status[:1], differ).append(path)
    return TreeDiff(only_a, differ, only_b)


# --- the switch and the way back --------------------------------------------------------------


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_mode, st.st_mtime_ns


def _index_env(index: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in git.LOCAL_ENV_VARS}
    env["GIT_INDEX_FILE"] = str(index)
    return env


def _write_from_tree(p: Paths, tree: str, files: list[str]) -> None:
    """Write `files` exactly as `tree` has them (over whatever is there)."""
    if not files:
        return
    p.dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.dir.parent / f"restore-index.{os.getpid()}"
    env = _index_env(tmp)
    try:
        git.with_env(env, "read-tree", tree, cwd=p.root)
        for path in files:  # a directory a stage left where a file goes would stop checkout-index
            target = p.root / path
            if target.is_dir() and not target.is_symlink():
                _shutil().rmtree(target)
        git.with_env(env, "checkout-index", "-f", "-z", "--stdin", cwd=p.root,
                     stdin=b"".join(os.fsencode(f) + b"\0" for f in files))
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _remove(p: Paths, files: list[str], keep_dirs: set[str]) -> None:
    """Delete `files`, and the directories that emptied and did not exist before."""
    parents: set[Path] = set()
    for path in files:
        target = p.root / path
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            target.unlink()
        parents.update(target.parents)
    root = p.root.resolve()
    for directory in sorted(parents, key=lambda d: len(d.parts), reverse=True):
        try:
            relative = directory.relative_to(p.root).as_posix()
        except ValueError:
            continue
        if relative in ("", ".") or relative in keep_dirs or directory.resolve() == root:
            continue
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty


def _existing_dirs(p: Paths, files: list[str]) -> list[str]:
    dirs: set[str] = set()
    for path in files:
        for parent in Path(path).parents:
            text = parent.as_posix()
            if text not in ("", ".") and (p.root / parent).is_dir():
                dirs.add(text)
    return sorted(dirs)


def _set_head(p: Paths, manifest: Manifest) -> None:
    if manifest.head_ref is not None:
        git.git("symbolic-ref", "HEAD", manifest.head_ref, cwd=p.root)
    elif manifest.head_sha is not None:
        git.git("update-ref", "--no-deref", "HEAD", manifest.head_sha, cwd=p.root)


def _restore_stats(p: Paths, stats: dict[str, tuple[int, int]]) -> None:
    for path, (mode, mtime_ns) in stats.items():
        target = p.root / path
        if target.is_symlink() or not target.exists():
            continue
        with contextlib.suppress(OSError):
            os.chmod(target, mode & 0o7777)
            os.utime(target, ns=(mtime_ns, mtime_ns))


def switch_to(p: Paths, target: str) -> Manifest:
    """Set the work aside and check `target` out in the work tree (steps 1-5 of the module doc)."""
    _take_lock(p)
    try:
        manifest, forced = _record(p, target)
    except BaseException:
        _drop_record(p)  # nothing of the work tree was changed yet
        raise
    # From here on the record says how to come back; a failure below is undone by `restore`.
    tmp = p.dir / "switch-index"
    if p.index_file.exists():
        _shutil().copyfile(p.index_file, tmp)  # its stat data spares hashing every unchanged file again
    env = _index_env(tmp)
    _add_all(p, env, forced)  # the copy now describes the work tree, untracked files included
    git.with_env(env, "read-tree", "--reset", "-u", manifest.target_tree, cwd=p.root)
    os.replace(tmp, p.index_file)
    git.git("update-ref", "--no-deref", "HEAD", target, cwd=p.root)
    return manifest


def _record(p: Paths, target: str) -> tuple[Manifest, list[str]]:
    """Steps 2-4: the index bytes, the snapshot and the manifest, all durable before anything changes."""
    if p.index_file.exists():
        _shutil().copyfile(p.index_file, p.dir / INDEX_COPY)
        _fsync_file(p.dir / INDEX_COPY)
    target_tree = git.git("rev-parse", f"{target}^{{tree}}", cwd=p.root)
    head_sha = git.head_sha(p.root)
    snapshot = snapshot_tree(p)
    # Ignored files at paths the commit tracks would be overwritten: they go into the snapshot too.
    forced = [f for f in diff_trees(snapshot, target_tree, p.root).only_in_b if os.path.lexists(p.root / f)]
    if forced:
        snapshot = snapshot_tree(p, force=forced)
    diff = diff_trees(snapshot, target_tree, p.root)
    rewritten = diff.only_in_a + diff.differ
    stats = {f: s for f in rewritten if (s := _stat(p.root / f)) is not None}
    saved = _save_users_files(p, snapshot, head_sha, set(rewritten))
    git.git("update-ref", p.ref, snapshot, cwd=p.root)  # the snapshot's objects survive a gc
    manifest = Manifest(head_ref=git.current_branch(p.root), head_sha=head_sha, snapshot=snapshot, target=target,
                        target_tree=target_tree, stats=stats, dirs=_existing_dirs(p, diff.only_in_b),
                        saved=saved, created_at=time.time())
    _fsync_write(p.manifest, manifest.to_json())
    return manifest, forced


def _save_users_files(p: Paths, snapshot: str, head_sha: str | None, rewritten: set[str]) -> list[str]:
    """Copy, byte for byte, each file of the user's own that the switch will overwrite or remove.

    The snapshot holds them too, but as git would store them: through clean filters and
    end-of-line conversion (`core.autocrlf`, `.gitattributes`), so a file written back from it
    could differ from what the user had. Files the user never changed came from a checkout,
    and a checkout from the snapshot writes them the same way again.
    """
    base = f"{head_sha}^{{tree}}" if head_sha else EMPTY_TREE
    users = diff_trees(base, snapshot, p.root)
    saved = sorted(f for f in users.differ + users.only_in_b if f in rewritten)
    for path in saved:
        copy = p.dir / FILES / path
        copy.parent.mkdir(parents=True, exist_ok=True)
        _shutil().copy2(p.root / path, copy, follow_symlinks=False)  # mode and mtime too
        if not copy.is_symlink():
            _fsync_file(copy)
    return saved


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _put_back_users_files(p: Paths, saved: list[str]) -> None:
    for path in saved:
        target = p.root / path
        if target.is_dir() and not target.is_symlink():
            _shutil().rmtree(target)  # a stage left a directory where the user's file goes
        elif target.is_symlink() or target.exists():
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        _shutil().copy2(p.dir / FILES / path, target, follow_symlinks=False)


def restore(p: Paths, manifest: Manifest) -> None:
    """Put the user's work back exactly as the record says; idempotent."""
    diff = diff_trees(manifest.snapshot, manifest.target_tree, p.root)
    _remove(p, diff.only_in_b, set(manifest.dirs))
    saved = set(manifest.saved)
    _write_from_tree(p, manifest.snapshot, [f for f in diff.only_in_a + diff.differ if f not in saved])
    _put_back_users_files(p, manifest.saved)
    index_copy = p.dir / INDEX_COPY
    if index_copy.exists():
        tmp = p.index_file.with_name(f"{p.index_file.name}.cdkit-restore")
        _shutil().copyfile(index_copy, tmp)
        os.replace(tmp, p.index_file)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.index_file.unlink()  # there was none (an unborn branch with nothing staged)
    _set_head(p, manifest)
    _restore_stats(p, manifest.stats)
    _drop_record(p)


def _drop_record(p: Paths) -> None:
    cmd_output_b("git", "update-ref", "-d", p.ref, cwd=p.root, check=False)
    _shutil().rmtree(p.dir, ignore_errors=True)


def recover(p: Paths) -> str:
    """`cdkit hook recover`: put back what an interrupted run set aside; says what it did."""
    if pending(p.git_dir) is None:
        return "nothing to recover: no cdkit run set work aside in this work tree"
    pid = live_owner(p.dir)
    if pid is not None and pid != os.getpid():
        raise SetAsideError(f"cdkit run pid {pid} is still judging a commit in this work tree; "
                            "wait for it to finish (it puts your work back itself)")
    data = _read_json(p.manifest)
    if data is None:
        _drop_record(p)  # stopped before the record was complete: nothing was changed
        return "an interrupted run had not changed anything yet; its record is removed"
    manifest = Manifest.from_json(data)
    restore(p, manifest)
    where = manifest.head_ref.removeprefix("refs/heads/") if manifest.head_ref else (manifest.head_sha or "")[:12]
    return (f"put back the work set aside at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(manifest.created_at))}"
            f": HEAD is {where} again, with your uncommitted changes, untracked files and index")


# --- around a run -------------------------------------------------------------------------------


@contextlib.contextmanager
def deferred_signals() -> Iterator[Callable[[], bool]]:
    """SIGINT/SIGTERM wait until the block ends (a half-restored work tree is the one thing to avoid)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _f: received.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(received)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if received:
            # Delivered now, as the interruption every caller handles (the hook and `cdkit run` exit 130).
            raise KeyboardInterrupt(f"signal {received[0]}")


def switch_to_or_undo(p: Paths, target: str) -> Manifest:
    try:
        return switch_to(p, target)
    except BaseException:
        data = _read_json(p.manifest) if pending(p.git_dir) else None
        if data is not None:
            restore(p, Manifest.from_json(data))
        raise


# --- what the stages left behind ----------------------------------------------------------------


class Leftovers(NamedTuple):
    """What became of the files the stages changed, once the user's work was back."""

    applied: list[str]  # files the user had not changed: the stage's version is left, as pre-commit does
    kept_yours: list[str]  # files the user had changed too: the user's version won
    patch: Path | None  # every change the stages made, for `git apply`

    def notes(self) -> list[str]:
        lines = []
        if self.applied:
            lines.append(f"the stages' changes to {_count(self.applied)} are left in your work tree for you to "
                         f"review and commit: {_listing(self.applied)}")
        if self.kept_yours:
            lines.append(f"the stages also changed {_count(self.kept_yours)} you had uncommitted changes to; "
                         f"your version was kept: {_listing(self.kept_yours)}")
        if self.patch is not None and self.kept_yours:
            lines.append(f"every change the stages made is saved in {self.patch} (`git apply` it to see them)")
        return lines


def _count(files: list[str]) -> str:
    return "1 file" if len(files) == 1 else f"{len(files)} files"


def _listing(files: list[str], limit: int = 10) -> str:
    shown = ", ".join(files[:limit])
    return shown + (f" (+{len(files) - limit} more)" if len(files) > limit else "")


class InPlace:
    """`with InPlace(paths, sha, keep_dir) as handle:` the work tree holds `sha` inside the block.

    Afterwards the user's work is back, and `handle.leftovers` says what became of the
    stages' own changes: saved as a patch in `keep_dir`, and left in the work tree where
    they do not touch a file the user had changed (the user's changes always win).
    """

    def __init__(self, p: Paths, target: str, keep_dir: Path) -> None:
        self.p = p
        self.target = target
        self.keep_dir = keep_dir
        self.manifest: Manifest | None = None
        self.leftovers = Leftovers([], [], None)
        # The tree as the stages left it, when the caller watched it (spares a snapshot on the way back).
        self.final_tree: str | None = None

    def __enter__(self) -> InPlace:
        try:
            with deferred_signals():
                self.manifest = switch_to_or_undo(self.p, self.target)
        except KeyboardInterrupt:
            if self.manifest is not None:  # switched, then interrupted: the block never runs, so come back now
                with deferred_signals():
                    restore(self.p, self.manifest)
            raise
        except (OSError, GitError) as exc:  # a full disk, a read-only git dir: whatever was done is undone
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SetAsideError(f"could not set your work aside to judge {self.target[:12]} in place ({why}); "
                                "nothing of yours was changed. Free disk space (or fix the permissions of "
                                f"{self.p.dir.parent}) and push again") from None
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.manifest is not None
        with deferred_signals():
            try:
                changed, patch = self._save_stage_changes(self.manifest)
            except OSError:
                changed, patch = None, None  # no room for the patch: the way back does not depend on it
            try:
                restore(self.p, self.manifest)
            except (OSError, CdkitError) as error:
                why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
                raise SetAsideError(f"could not put your work back yet ({why}); it is safe in {self.p.dir}. "
                                    "Free disk space, then run `cdkit hook recover`") from None
            if changed is not None:
                with contextlib.suppress(OSError, CdkitError):  # the patch has every change in any case
                    self.leftovers = self._reapply(self.manifest, changed, patch)

    def _save_stage_changes(self, manifest: Manifest) -> tuple[str | None, Path | None]:
        try:
            now = self.final_tree or snapshot_tree(self.p)
        except CdkitError:
            return None, None  # nothing to keep: the way back does not depend on it
        target_tree = manifest.target_tree
        if now == target_tree:
            return None, None
        patch = self.keep_dir / "stage-changes.patch"
        self.keep_dir.mkdir(parents=True, exist_ok=True)
        patch.write_bytes(git.git_b("diff", "--binary", target_tree, now, "--", cwd=self.p.root))
        return now, patch

    def _reapply(self, manifest: Manifest, changed: str, patch: Path | None) -> Leftovers:
        target_tree = manifest.target_tree
        by_stages = diff_trees(target_tree, changed, self.p.root)
        users = diff_trees(manifest.snapshot, target_tree, self.p.root)
        yours = set(users.only_in_a + users.differ + users.only_in_b)
        files = by_stages.only_in_a + by_stages.differ + by_stages.only_in_b
        applied = [f for f in files if f not in yours]
        deleted = set(by_stages.only_in_a)
        _write_from_tree(self.p, changed, [f for f in applied if f not in deleted])
        _remove(self.p, [f for f in applied if f in deleted], keep_dirs=set())
        return Leftovers(sorted(applied), sorted(f for f in files if f in yours), patch)
