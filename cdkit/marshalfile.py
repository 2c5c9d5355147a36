"""Small caches in `.git/cdkit` as `marshal` files: plain data, read with no import at all.

The pre-push hook keeps its validated pipeline this way (`hook_entry`), and the tree watch what
git ignored at the last clean status (`treewatch`). A cache is only ever a shortcut: a missing,
unreadable or corrupt one reads as None, and one that cannot be written is simply not written.
"""
from __future__ import annotations

import marshal
import os

# Not `typing` at run time: the pre-push hook imports this module. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def read(path: str | os.PathLike[str]) -> object | None:
    """The value stored at `path`, or None when there is none to use."""
    try:
        with open(path, "rb") as file:
            value: object = marshal.loads(file.read())
            return value
    except Exception:  # noqa: BLE001 - missing, unreadable or corrupt: only a miss
        return None


def write(path: str | os.PathLike[str], value: Any) -> None:
    """Store `value` at `path` whole or not at all (a temporary file renamed into place).

    cdkit never follows a link out of `.git/cdkit` (the ledger refuses such a directory and says so);
    a read-only or full git directory leaves the cache as it was.
    """
    directory = os.path.dirname(path)
    if os.path.islink(directory):
        return
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f"{os.path.basename(path)}.{os.getpid()}.tmp")
        with open(tmp, "wb") as file:
            file.write(marshal.dumps(value))
        os.replace(tmp, path)
    except OSError:
        pass
