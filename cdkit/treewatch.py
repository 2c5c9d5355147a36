"""Stages that rewrite the tree fail: a verdict is about the commit, not about what a stage made of it.

A fixer (`ruff --fix`, `black`, `prettier --write`, a code generator) that edits files
and exits 0 would let the unfixed commit through. After each stage the tree is compared
with how it was before (tracked and untracked files, ignored ones left out, like
`git status`); a stage that modified, added or deleted files fails with the list, as
pre-commit's "files were modified by this hook" does, unless it says `allow_changes: true`.

While nothing changes, the check needs no git process: see `StatBaseline`. In a tree that
was clean at the last run, not even after the first stage: see `walk_early`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cdkit.config import Stage
from cdkit import git, marshalfile
from cdkit.errors import CdkitError, GitError
from cdkit.logs import disk_error
from cdkit.runner import FAILED, PASSED, StageResult
from cdkit.setaside import Paths, diff_trees, snapshot_tree

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from cdkit.ntuple import NamedTuple

LISTED = 20  # files named in the reason; the stage's log has them all
# Past this many entries git's own status (in C, with the index's stat cache) is the faster check.
WALK_LIMIT = 5000
Identity = tuple[int, int, int, int, int]  # (inode, mode, size, mtime_ns, ctime_ns) of one lstat
# In <git dir>/cdkit: what git ignored in this work tree at its last clean `git status`, and whether
# the tree could be walked then (`walk_early`).
IGNORED_CACHE = "watch-ignored"


class StatBaseline:
    """The work tree as lstat saw it, at a moment `git status` then found it clean.

    A later walk that sees every entry with the same identity proves nothing changed:
    a write, a chmod, a rename or a new or deleted entry moves some ctime (which no
    program can set back) or inode, and a new file changes its directory. Entries git
    ignores are not walked, as `git status` does not look at them. Two rules keep it
    exact rather than probable:

    - Racy entries (racy git's problem): timestamps come from a coarse clock, so a file
      changed in the same tick as the walk could change again unseen. The walk first
      writes a probe file beside the index and reads the filesystem's own time from it;
      a walk holding any entry from that tick or later is not used.
    - Order: the walk comes before the `git status` that finds the tree clean. Whatever
      a stage still running changes after its entry was walked moves that entry's ctime
      past the probe's, and the next walk differs.

    Whatever it cannot vouch for (submodules, git's files on another filesystem, a tree
    of over WALK_LIMIT entries) it leaves to `git status`, as before.
    """

    def __init__(self, root: Path, probe: Path) -> None:
        self.root = os.fsencode(root)
        self.probe = probe
        self.usable = not (root / ".gitmodules").exists()  # a submodule's state is its own repository's
        self.ignored: frozenset[bytes] | None = None  # from the last status; no walk before the first
        self.entries: dict[bytes, Identity] | None = None
        self._probe_fd: int | None = None

    def unchanged(self) -> tuple[bool, dict[bytes, Identity] | None]:
        """(whether the tree is as the baseline holds it, this walk to become the next baseline)."""
        if not self.usable or self.ignored is None:
            return False, None
        try:
            probe_time = self._probe_time()
        except OSError:  # git's directory is read-only or full: the check falls back to git status
            self.usable = False
            return False, None
        try:
            walk = self._walk(probe_time) if self.usable else None
        except OSError:  # an entry went away while being walked: a change, which git status will judge
            walk = None
        return (walk is not None and walk == self.entries), walk

    def found_clean(self, walk: dict[bytes, Identity] | None, ignored: frozenset[bytes]) -> None:
        """`git status`, run after `walk`, found the tree clean: the walk is the new baseline."""
        self.entries, self.ignored = walk, ignored

    def _probe_time(self) -> int:
        if self._probe_fd is None:
            self._probe_fd = os.open(self.probe, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            if os.fstat(self._probe_fd).st_dev != os.lstat(self.root).st_dev:
                self.usable = False  # another filesystem, maybe another clock: its time says nothing here
        os.pwrite(self._probe_fd, b"probe", 0)  # a write moves its ctime to the filesystem's now
        return os.fstat(self._probe_fd).st_ctime_ns

    def close(self) -> None:
        if self._probe_fd is not None:
            os.close(self._probe_fd)
            self._probe_fd = None
        with contextlib.suppress(FileNotFoundError):
            self.probe.unlink()

    def _walk(self, probe_time: int) -> dict[bytes, Identity] | None:
        """Every entry git would look at, by identity; None when the walk cannot serve as a baseline."""
        assert self.ignored is not None
        ignored, entries = self.ignored, {}
        pending = [b""]
        while pending:
            relative = pending.pop()
            with os.scandir(os.path.join(self.root, relative) if relative else self.root) as listing:
                for entry in listing:
                    if not relative and entry.name == b".git":
                        continue  # the repository itself (a nested one's is walked: git status reads it)
                    path = relative + b"/" + entry.name if relative else entry.name
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if path + b"/" in ignored if is_dir else path in ignored:
                        continue
                    identity = _identity(entry.stat(follow_symlinks=False), probe_time)
                    if identity is None:
                        return None
                    entries[path] = identity
                    if len(entries) > WALK_LIMIT:  # checked per entry: one huge directory costs no more
                        self.usable = False
                        return None
                    if is_dir:
                        pending.append(path)
        top = _identity(os.lstat(self.root), probe_time)
        if top is None:
            return None
        entries[b""] = top
        return entries


def _identity(st: os.stat_result, probe_time: int) -> Identity | None:
    """What of an entry's lstat a change moves; None when it changed in the probe's tick or later
    (racy: a change in the same tick would keep the same times)."""
    if st.st_ctime_ns >= probe_time or st.st_mtime_ns >= probe_time:
        return None
    return (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class EarlyWalk(NamedTuple):
    """The work tree walked before the `git status` that found it clean, and what the walk skipped."""

    walk: dict[bytes, Identity]
    ignored: frozenset[bytes]


def walk_early(root: Path, git_dir: Path) -> EarlyWalk | None:
    """The tree walked now, *before* the `git status` that will say whether it is clean, skipping
    what git ignored here at the last clean status (kept in IGNORED_CACHE).

    When that status finds the tree clean and ignores exactly what the walk skipped (`confirm`),
    the walk is a baseline as `StatBaseline` requires (taken before a clean status, no entry in
    its probe's tick), so even the first stage's end needs no `git status`. None when nothing is
    cached yet, or the tree cannot be walked (too big, submodules, racy entries).
    """
    cache = git_dir / "cdkit" / IGNORED_CACHE
    cached = _read_ignored(cache)
    if cached is None or not cached[1]:
        return None  # first run here, or the last walk found the tree too big to walk
    baseline = StatBaseline(root, git_dir / "cdkit" / f"watch-probe.{os.getpid()}")
    baseline.found_clean(None, cached[0])
    try:
        walk = baseline.unchanged()[1]
    finally:
        baseline.close()  # the tree watch writes its own probe for the next walk
    if walk is None and not baseline.usable:
        _write_ignored(cache, cached[0], walkable=False)
    return None if walk is None else EarlyWalk(walk, cached[0])


def confirm(early: EarlyWalk | None, git_dir: Path, ignored: frozenset[bytes]) -> EarlyWalk | None:
    """`early`, once a `git status` after it found the tree clean, if that status ignored exactly what the
    walk skipped; the cache follows what git ignores now, for the next run."""
    if early is not None and early.ignored == ignored:
        return early
    remember_ignored(git_dir, ignored)
    return None


def remember_ignored(git_dir: Path, ignored: frozenset[bytes]) -> None:
    """What a clean `git status` ignored, for the next run's `walk_early` (written only when it changed)."""
    cache = git_dir / "cdkit" / IGNORED_CACHE
    cached = _read_ignored(cache)
    if cached is None or cached[0] != ignored:
        _write_ignored(cache, ignored, walkable=True)  # a new set: worth walking again


def _read_ignored(cache: Path) -> tuple[frozenset[bytes], bool] | None:
    """(what git ignored, whether the tree could be walked), or None: no cache, the tree is judged as before."""
    stored = marshalfile.read(cache)
    if not (isinstance(stored, tuple) and len(stored) == 2):
        return None
    ignored, walkable = stored
    if not (isinstance(ignored, frozenset) and all(isinstance(p, bytes) for p in ignored)
            and isinstance(walkable, bool)):
        return None
    return ignored, walkable


def _write_ignored(cache: Path, ignored: frozenset[bytes], *, walkable: bool) -> None:
    marshalfile.write(cache, (ignored, walkable))  # a read-only git dir: every run is judged as the first


class TreeWatch:
    """Remembers the tree between stages and blames each change on the stage that just ended.

    `clean_at`: the work tree is known to be exactly that commit (the common push, or a
    fresh temporary worktree). Then, as long as `git status` stays empty at that commit,
    nothing changed: at most one git process per stage instead of a snapshot's two, none
    before the first stage, and none at all while the `StatBaseline` walk sees no change.
    The first change found falls back to snapshots. With `early` (see `walk_early`), the
    baseline is there before the first stage.
    """

    def __init__(self, paths: Paths, tree: str | None = None, *, clean_at: str | None = None,
                 early: EarlyWalk | None = None) -> None:
        self.paths = paths
        paths.dir.parent.mkdir(parents=True, exist_ok=True)
        self.scratch = paths.dir.parent / f"watch-index.{os.getpid()}"
        self.clean_at = None if tree else clean_at
        self.baseline = StatBaseline(paths.root, paths.dir.parent / f"watch-probe.{os.getpid()}")
        if early is not None and self.clean_at is not None:
            self.baseline.found_clean(early.walk, early.ignored)
        self._tree = tree
        if self._tree is None and self.clean_at is None:
            self._tree = self._snapshot()  # an unknown tree is looked at

    @property
    def tree(self) -> str:
        """The tree as the last check saw it."""
        if self._tree is None:
            assert self.clean_at is not None
            self._tree = git.tree_of(self.clean_at, cwd=self.paths.root)
        return self._tree

    def _snapshot(self, previous: str | None = None) -> str:
        try:
            if not self.scratch.exists() and self.paths.index_file.exists():
                import shutil  # not at import time: a clean tree is watched without copying its index

                shutil.copyfile(self.paths.index_file, self.scratch)
            return snapshot_tree(self.paths, scratch=self.scratch, previous=previous)
        except OSError as exc:  # a full disk: the copy of the index or git's objects cannot be written
            self.close()
            raise disk_error(self.paths.git_dir, exc, "taking a snapshot of the work tree") from None

    def _still_clean(self) -> bool:
        if self.clean_at is None:
            return False
        same, walk = self.baseline.unchanged()
        if same:
            return True
        head, clean, ignored = git.work_tree_status(self.paths.root, ignored=self.baseline.usable)
        if head == self.clean_at and clean:
            if self.baseline.usable and ignored != self.baseline.ignored:
                remember_ignored(self.paths.git_dir, ignored)  # what a stage made (build/), as the next run sees it
            self.baseline.found_clean(walk, ignored)
            return True
        if self._tree is None:
            self._tree = git.tree_of(self.clean_at, cwd=self.paths.root)  # the baseline: the commit's own tree
        self.clean_at = None  # from here on, snapshots
        return False

    def close(self) -> None:
        self.baseline.close()
        with contextlib.suppress(FileNotFoundError):
            self.scratch.unlink()

    def check(self, stage: Stage, result: StageResult) -> StageResult:
        try:
            if self._still_clean():
                return result
            now = self._snapshot(previous=self._tree)
        except (OSError, GitError, CdkitError) as exc:
            # Fail closed: a stage whose changes to the tree cannot be checked has not passed.
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            reason = f"could not check whether this stage changed the work tree ({why}); free disk space and run again"
            return result._replace(status=FAILED if result.status == PASSED else result.status,
                                   reason=f"{result.reason}; {reason}" if result.reason else reason)
        if now == self.tree:
            return result
        diff = diff_trees(self.tree, now, self.paths.root)
        self._tree = now  # the next stage is judged from here: one change, one culprit
        changes = ([f"deleted:  {f}" for f in diff.only_in_a] + [f"modified: {f}" for f in diff.differ]
                   + [f"added:    {f}" for f in diff.only_in_b])
        files = diff.only_in_a + diff.differ + diff.only_in_b
        _append_to_log(result.log_path, changes, allowed=stage.allow_changes)
        listing = ", ".join(files[:LISTED]) + (f" (+{len(files) - LISTED} more)" if len(files) > LISTED else "")
        if stage.allow_changes:
            note = f"modified files (allowed by allow_changes): {listing}"
            return result._replace(reason=f"{result.reason}; {note}" if result.reason else note)
        if result.status == PASSED:
            return result._replace(status=FAILED, reason=f"files were modified by this stage: {listing}")
        return result._replace(reason=f"{result.reason}; files were modified by this stage: {listing}")


def _append_to_log(log_path: str | None, changes: list[str], *, allowed: bool) -> None:
    if log_path is None:
        return
    heading = ("cdkit: this stage changed the work tree (allow_changes: true):" if allowed
               else "cdkit: files were modified by this stage:")
    with Path(log_path).open("ab") as log:
        log.write(("\n" + "\n".join([heading, *(f"  {c}" for c in changes)]) + "\n").encode("utf-8", "surrogateescape"))
