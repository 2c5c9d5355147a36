"""What a `git push` brings to the remote: the ranges to judge, found with git.

`cdkit.pushlines` parses the hook's stdin into `RefUpdate`s (re-exported here).
`push_targets` then asks git what each update brings to the remote and groups the
updates by the commit they push, so a commit pushed to three refs is judged once, on
the widest range any of them needs.

The data are NamedTuples rather than frozen dataclasses: on this path every class is paid
for by every push, and a dataclass costs ~0.7 ms to create at import against ~0.06 ms.
"""
from __future__ import annotations

from cdkit import git
from cdkit.pushlines import LINE_FORMAT, PrePushInputError, RefUpdate, parse_line, parse_pre_push

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Mapping, Sequence
    from typing import NamedTuple
else:
    from cdkit.ntuple import NamedTuple

__all__ = ["LINE_FORMAT", "PrePushInputError", "PreCommitPush", "PushPlan", "PushTarget", "RefUpdate",
           "from_pre_commit_env", "parse_line", "parse_pre_push", "push_targets"]

# --- ranges: what each update brings to the remote -----------------------------------------


class PushTarget(NamedTuple):
    """One distinct commit being pushed, the range it is judged on, and the refs it goes to."""

    head_sha: str
    base_sha: str | None  # None: no commit of the remote is an ancestor -> every file counts
    changed_files: tuple[str, ...]
    remote_refs: tuple[str, ...]
    how: str  # how the range was found, for the console

    @property
    def range_text(self) -> str:
        return f"{self.base_sha[:12]}..{self.head_sha[:12]}" if self.base_sha else f"{self.head_sha[:12]} (all files)"


class PushPlan(NamedTuple):
    targets: tuple[PushTarget, ...]
    notes: tuple[str, ...]  # updates that need no run (deletes, nothing new), said out loud


class _Range(NamedTuple):
    head: str
    bases: tuple[str, ...]  # empty: all files
    how: str


def _range_for(update: RefUpdate, head: str, remote_base: str | None, remote: str | None,
               cwd: str | os.PathLike[str]) -> _Range | None:
    """The bases to diff `head` against, or None when the update brings nothing new."""
    if remote_base is not None:
        if remote_base == head:
            return None
        return _Range(head, (remote_base,), "remote's current tip")
    # New ref, or a force push over a tip we have never fetched: what the remote lacks is
    # what no remote-tracking ref of it has.
    new, boundary = git.commits_not_on_remote(head, remote, cwd=cwd)
    why = "new ref" if update.is_new else f"remote tip {update.remote_oid[:12]} is not in this repository"
    if not new:
        return None
    if not boundary:
        return _Range(head, (), f"{why}; no commit of it is on {remote or 'the remote'}")
    return _Range(head, boundary, f"{why}; {len(new)} commit(s) not on {remote or 'the remote'}")


class _Guess(NamedTuple):
    """The changed files of the push's one update, asked for before git said what its oids are."""

    base: str
    head: str
    pending: git.Pending


def _guess(updates: Sequence[RefUpdate], cwd: str | os.PathLike[str]) -> _Guess | None:
    """The usual push (one branch moved forward) starts its `git diff` beside the `cat-file`
    that checks its objects: the two overlap instead of paying for two git processes in a row.
    The diff's output is used only when both oids turn out to be the commits that range is of."""
    if len(updates) != 1 or updates[0].is_delete or updates[0].is_new:
        return None
    update = updates[0]
    return _Guess(update.remote_oid, update.local_oid,
                  git.start_changed_files(update.remote_oid, update.local_oid, cwd=cwd))


def _changed(bases: Sequence[str], head: str, cwd: str | os.PathLike[str], guess: _Guess | None = None,
             ) -> tuple[str, ...]:
    if not bases:
        return tuple(git.all_files(head, cwd=cwd))
    if guess is not None and tuple(bases) == (guess.base,) and head == guess.head:
        return tuple(git.changed_files_in(guess.pending.output()))
    # Several boundaries (a merge of two remote branches): the union over-approximates, so a
    # `paths` filter can only run more stages, never fewer.
    seen: dict[str, None] = {}
    for base in bases:
        seen.update(dict.fromkeys(git.changed_files(base, head, cwd=cwd)))
    return tuple(seen)


def push_targets(updates: Iterable[RefUpdate], remote: str | None, cwd: str | os.PathLike[str]) -> PushPlan:
    """Group the updates by pushed commit and find each one's range with git."""
    updates = tuple(updates)
    oids = {o for u in updates if not u.is_delete for o in (u.local_oid, u.remote_oid) if not git.is_zero_oid(o)}
    guess = _guess(updates, cwd)
    try:
        return _plan(updates, remote, cwd, git.peel_to_commits(sorted(oids), cwd=cwd), guess)
    finally:
        if guess is not None:
            guess.pending.abandon()  # collected already, or not needed: either way reaped


def _plan(updates: tuple[RefUpdate, ...], remote: str | None, cwd: str | os.PathLike[str],
          commits: Mapping[str, str], guess: _Guess | None) -> PushPlan:
    notes: list[str] = []
    _refuse_missing_local_objects(updates, commits, cwd)
    ranges: dict[str, list[tuple[RefUpdate, _Range]]] = {}
    for update in updates:
        if update.is_delete:
            notes.append(f"{update.remote_ref}: deleted on the remote; nothing to check")
            continue
        head = commits.get(update.local_oid)
        if head is None:
            notes.append(f"{update.remote_ref}: {update.local_oid[:12]} is not a commit (a tag of a tree or blob); "
                         "nothing to check")
            continue
        remote_base = None if update.is_new else commits.get(update.remote_oid)
        found = _range_for(update, head, remote_base, remote, cwd)
        if found is None:
            notes.append(f"{update.remote_ref}: {head[:12]} is already on {remote or 'the remote'}; nothing new to check")
            continue
        ranges.setdefault(head, []).append((update, found))
    targets = tuple(_merge(head, entries, cwd, guess) for head, entries in ranges.items())
    return PushPlan(targets, tuple(notes))


def _refuse_missing_local_objects(updates: Sequence[RefUpdate], commits: Mapping[str, str],
                                  cwd: str | os.PathLike[str]) -> None:
    """Block the push when a local oid names no object here at all.

    git only sends objects it has, so such a line was not written by this repository's git
    (a forged line, a SHA-256 id in a SHA-1 repository). Skipping it as "not a commit" would
    let a push through unjudged; only an object that exists and is not a commit is skipped.
    A missing *remote* oid is normal (a force push over a tip never fetched) and is not checked.
    """
    unpeeled = sorted({u.local_oid for u in updates if not u.is_delete and u.local_oid not in commits})
    missing = git.missing_objects(unpeeled, cwd=cwd)
    lines = [f"  {u.local_ref} -> {u.remote_ref}: local object {u.local_oid} is not in this repository"
             for u in updates if u.local_oid in missing]
    if lines:
        raise PrePushInputError(
            "pre-push stdin names objects this repository does not have; the push is blocked:\n"
            + "\n".join(lines)
            + "\ngit only pushes objects it has, so something other than this repository's git wrote these lines "
            "(or the id is for another hash algorithm: `git rev-parse --show-object-format` shows this one's). "
            "Push with `git push`; if the repository is damaged, `git fsck` says how."
        )


def _merge(head: str, entries: list[tuple[RefUpdate, _Range]], cwd: str | os.PathLike[str],
           guess: _Guess | None = None) -> PushTarget:
    """One target per commit: any update needing all files wins; otherwise all bases count."""
    refs = tuple(u.remote_ref for u, _ in entries)
    if any(not r.bases for _, r in entries):
        how = next(r.how for _, r in entries if not r.bases)
        return PushTarget(head, None, _changed((), head, cwd), refs, how)
    bases = tuple(dict.fromkeys(b for _, r in entries for b in r.bases))
    return PushTarget(head, bases[0], _changed(bases, head, cwd, guess), refs, entries[0][1].how)


# --- pre-commit's way in ------------------------------------------------------------------


class PreCommitPush(NamedTuple):
    """What pre-commit tells a `pre-push` stage hook, through the environment instead of stdin."""

    remote: str
    url: str
    target: PushTarget


def from_pre_commit_env(environ: Mapping[str, str], cwd: str | os.PathLike[str]) -> PreCommitPush | None:
    """The push pre-commit describes (PRE_COMMIT_FROM_REF/TO_REF/REMOTE_*), or None outside pre-commit.

    pre-commit has already found the range (`FROM_REF` is the base); when it decided every file
    counts (a root commit is pushed) it sets no FROM/TO and only names the local branch.
    """
    remote = environ.get("PRE_COMMIT_REMOTE_NAME")
    if not remote:
        return None
    url = environ.get("PRE_COMMIT_REMOTE_URL", remote)
    to_ref = environ.get("PRE_COMMIT_TO_REF") or environ.get("PRE_COMMIT_LOCAL_BRANCH") or "HEAD"
    head = git.resolve_commit(to_ref, cwd=cwd)
    from_ref = environ.get("PRE_COMMIT_FROM_REF")
    base = git.resolve_commit(from_ref, cwd=cwd) if from_ref and not git.is_zero_oid(from_ref) else None
    ref = environ.get("PRE_COMMIT_REMOTE_BRANCH") or "(unknown ref)"
    changed = _changed((base,) if base else (), head, cwd)
    how = "range from pre-commit" if base else "pre-commit found no base"
    return PreCommitPush(remote, url, PushTarget(head, base, changed, (ref,), how))
