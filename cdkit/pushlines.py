"""The pre-push hook's stdin, parsed: pure, with no git call and no import beyond the core.

git writes one line per ref to the pre-push hook's stdin:

    <local ref> SP <local oid> SP <remote ref> SP <remote oid> LF

`parse_pre_push` turns those bytes into `RefUpdate`s (every odd input has a unit test).
A push that deletes, or has nothing to push, is answered from these alone, so this
module imports no git, pathlib or subprocess: such a push costs little more than
starting Python (`cdkit.prepush` finds the ranges of the rest).

The data are NamedTuples rather than frozen dataclasses: on this path every class is paid
for by every push, and a dataclass costs ~0.7 ms to create at import against ~0.06 ms.
"""
from __future__ import annotations

from cdkit.errors import CdkitError

# Not `typing`: see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from cdkit.ntuple import NamedTuple


def is_zero_oid(oid: str) -> bool:
    """git's "no object" id: all zeros, of any length (40 for SHA-1, 64 for SHA-256)."""
    return bool(oid) and not oid.strip("0")


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
        return is_zero_oid(self.local_oid)

    @property
    def is_new(self) -> bool:
        """The remote has no such ref yet (new branch or tag)."""
        return is_zero_oid(self.remote_oid)

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
