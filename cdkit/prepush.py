"""What a `git push` sends, as data: the parsed hook stdin and the ranges to judge.

git writes one line per ref to the pre-push hook's stdin:

    <local ref> SP <local oid> SP <remote ref> SP <remote oid> LF

`parse_pre_push` turns those bytes into `RefUpdate`s with no git call (pure, so
every odd input has a unit test). `push_targets` then asks git what each update
brings to the remote and groups the updates by the commit they push, so a commit
pushed to three refs is judged once, on the widest range any of them needs.

The data are NamedTuples rather than frozen dataclasses: on this path every class is paid
for by every push, and a dataclass costs ~0.7 ms to create at import against ~0.06 ms.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from cdkit import git
from cdkit.errors import CdkitError

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from cdkit.ntuple import NamedTuple

LINE_FORMAT = "`<local ref> <local oid> <remote ref> <remote oid>`"


class PrePushInputError(CdkitError):
    """The hook's stdin is not what git writes: block the push rather than guess."""


class RefUpdate(NamedTuple):
    """One line of pre-push stdin. OIDs are lower-case hex; all zeros (any length) means "none"."""

    local_ref: str  # what the user pushed: a full ref, "HEAD~", a raw SHA, or "(delete)"
    local_oid: str
    remote_ref: str
    remote_oid: str

    @property
    def is_delete(self) -> bool:
        return git.is_zero_oid(self.local_oid)

    @property
    def is_new(self) -> bool:
        """The remote has no such ref yet (new branch or tag)."""
        return git.is_zero_oid(self.remote_oid)

    @property
    def is_tag(self) -> bool:
        return self.remote_ref.startswith("refs/tags/")


def _decode(data: bytes) -> str:
    # Refs and `<local ref>` expressions are bytes to git; keep undecodable ones round-trippable.
    return data.decode("utf-8", "surrogateescape")


def _is_oid(text: bytes) -> bool:
    # Zero OIDs of any length (git uses the hash's length, 40 or 64) and real SHA-1/SHA-256 ids.
    return bool(text) and all(c in b"0123456789abcdef" for c in text) and (len(text) in (40, 64) or text.strip(b"0") == b"")


# C0 controls and DEL: git forbids them in ref names. A NUL would reach a git argument or a
# stage's environment as `ValueError: embedded null byte` (exit 3), an ESC the user's terminal.
_CONTROL_BYTES = bytes(range(0x20)) + b"\x7f"


def _refuse_control_bytes(line: bytes, number: int) -> None:
    if len(line.translate(None, _CONTROL_BYTES)) != len(line):  # any there? (`re` costs every push its import)
        column = next(i for i, byte in enumerate(line) if byte < 0x20 or byte == 0x7f)
        raise PrePushInputError(
            f"pre-push stdin line {number}: control byte 0x{line[column]:02x} at column {column + 1} "
            f"in {_decode(line)[:200]!r}; git never writes one in a ref line (is something other than git feeding "
            "this hook? if you pushed a `:/<text>` expression containing one, push the commit by its SHA instead)"
        )


def parse_line(line: bytes, number: int = 1) -> RefUpdate:
    """One stdin line -> RefUpdate. Split from the right: only `<local ref>` may hold spaces
    (`git push origin ':/fix the bug:refs/heads/x'`); OIDs and remote ref names cannot."""
    line = line.rstrip(b"\r")
    _refuse_control_bytes(line, number)
    parts = line.rsplit(b" ", 3)
    if len(parts) != 4 or not parts[0] or not parts[2]:
        raise PrePushInputError(
            f"pre-push stdin line {number} is not {LINE_FORMAT}: "
            f"{_decode(line)[:200]!r} (is something other than git feeding this hook?)"
        )
    local_ref, local_oid, remote_ref, remote_oid = parts
    for oid in (local_oid, remote_oid):
        if not _is_oid(oid):
            raise PrePushInputError(f"pre-push stdin line {number}: {_decode(oid)[:80]!r} is not an object id "
                                    f"(expected {LINE_FORMAT}; is something other than git feeding this hook?)")
    return RefUpdate(_decode(local_ref), local_oid.decode(), _decode(remote_ref), remote_oid.decode())


def parse_pre_push(data: bytes) -> tuple[RefUpdate, ...]:
    """Every ref update in the hook's stdin (empty stdin: "Everything up-to-date" -> none)."""
    return tuple(parse_line(line, n) for n, line in enumerate(data.split(b"\n"), 1) if line.strip())


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


def _changed(bases: Sequence[str], head: str, cwd: str | os.PathLike[str]) -> tuple[str, ...]:
    if not bases:
        return tuple(git.all_files(head, cwd=cwd))
    # Several boundaries (a merge of two remote branches): the union over-approximates, so a
    # `paths` filter can only run more stages, never fewer.
    seen: dict[str, None] = {}
    for base in bases:
        seen.update(dict.fromkeys(git.changed_files(base, head, cwd=cwd)))
    return tuple(seen)


def push_targets(updates: Iterable[RefUpdate], remote: str | None, cwd: str | os.PathLike[str]) -> PushPlan:
    """Group the updates by pushed commit and find each one's range with git."""
    updates = tuple(updates)
    notes: list[str] = []
    oids = {o for u in updates if not u.is_delete for o in (u.local_oid, u.remote_oid) if not git.is_zero_oid(o)}
    commits = git.peel_to_commits(sorted(oids), cwd=cwd)
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
    targets = tuple(_merge(head, entries, cwd) for head, entries in ranges.items())
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


def _merge(head: str, entries: list[tuple[RefUpdate, _Range]], cwd: str | os.PathLike[str]) -> PushTarget:
    """One target per commit: any update needing all files wins; otherwise all bases count."""
    refs = tuple(u.remote_ref for u, _ in entries)
    if any(not r.bases for _, r in entries):
        how = next(r.how for _, r in entries if not r.bases)
        return PushTarget(head, None, _changed((), head, cwd), refs, how)
    bases = tuple(dict.fromkeys(b for _, r in entries for b in r.bases))
    return PushTarget(head, bases[0], _changed(bases, head, cwd), refs, entries[0][1].how)


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
