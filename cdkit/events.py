"""Everything that starts a run becomes one `Trigger`: plain data the planner reads.

This module holds the data and the manual (`cdkit run`) source; the pre-push and
GitHub event sources build the same `Trigger` from their own inputs.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from cdkit import git
from cdkit.errors import UsageError

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from cdkit.ntuple import NamedTuple

TRIGGER_KINDS = ("pre-push", "ci")


class Trigger(NamedTuple):
    """Why a run happens and what it judges.

    `kind` selects stages by their `on:` list. `base_sha` None means there is no
    base to compare with (first commit, orphan branch, no --base): every file of
    `head_sha` counts as changed, so no `paths` filter can hide a stage.
    """

    kind: str
    event: str
    head_sha: str
    base_sha: str | None
    changed_files: tuple[str, ...]
    ref: str | None = None
    repo: str | None = None
    actor: str | None = None
    extra: Mapping[str, str] = MappingProxyType({})

    @property
    def range_text(self) -> str:
        return f"{self.base_sha[:12]}..{self.head_sha[:12]}" if self.base_sha else f"{self.head_sha[:12]} (all files)"


def changed_files_between(base: str | None, head: str, cwd: Path | str | None) -> tuple[str, ...]:
    if base is None:
        return tuple(git.all_files(head, cwd=cwd))
    return tuple(git.changed_files(base, head, cwd=cwd))


def manual_trigger(cwd: Path | str | None, *, base: str | None, head: str | None, kind: str) -> Trigger:
    """The trigger for `cdkit run` / `cdkit plan`: HEAD (or --head) against --base, if any."""
    if head is None and git.head_sha(cwd) is None:
        raise UsageError("this repository has no commits yet: commit something, then run cdkit")
    head_sha = git.resolve_commit(head or "HEAD", cwd=cwd)
    base_sha = git.resolve_commit(base, cwd=cwd) if base else None
    ref = git.current_branch(cwd=cwd) if head is None else None
    return Trigger(
        kind=kind,
        event="run",
        head_sha=head_sha,
        base_sha=base_sha,
        changed_files=changed_files_between(base_sha, head_sha, cwd),
        ref=ref,
    )
