"""Stages that rewrite the tree fail: a verdict is about the commit, not about what a stage made of it.

A fixer (`ruff --fix`, `black`, `prettier --write`, a code generator) that edits files
and exits 0 would let the unfixed commit through. After each stage the tree is compared
with how it was before (tracked and untracked files, ignored ones left out, like
`git status`); a stage that modified, added or deleted files fails with the list, as
pre-commit's "files were modified by this hook" does, unless it says `allow_changes: true`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cdkit.config import Stage
from cdkit import git
from cdkit.errors import CdkitError, GitError
from cdkit.logs import disk_error
from cdkit.runner import FAILED, PASSED, StageResult
from cdkit.setaside import Paths, diff_trees, snapshot_tree

LISTED = 20  # files named in the reason; the stage's log has them all


class TreeWatch:
    """Remembers the tree between stages and blames each change on the stage that just ended.

    `clean_at`: the work tree is known to be exactly that commit (the common push, or a
    fresh temporary worktree). Then, as long as `git status` stays empty at that commit,
    nothing changed: one git process per stage instead of a snapshot's two, and none
    before the first stage. The first change found falls back to snapshots.
    """

    def __init__(self, paths: Paths, tree: str | None = None, *, clean_at: str | None = None) -> None:
        self.paths = paths
        paths.dir.parent.mkdir(parents=True, exist_ok=True)
        self.scratch = paths.dir.parent / f"watch-index.{os.getpid()}"
        self.clean_at = None if tree else clean_at
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
        head, clean = git.work_tree_state(self.paths.root)
        if head == self.clean_at and clean:
            return True
        if self._tree is None:
            self._tree = git.tree_of(self.clean_at, cwd=self.paths.root)  # the baseline: the commit's own tree
        self.clean_at = None  # from here on, snapshots
        return False

    def close(self) -> None:
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
