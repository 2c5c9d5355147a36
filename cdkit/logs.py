"""Run logs under `<git common dir>/cdkit/logs/<run id>/`: created safely, pruned to a bound.

A run's directory holds one log per stage and the list of changed files. The
ledger keeps every run (that is history); the logs are bulky and are pruned:
those older than `logs.keep` go first, then the oldest until the total fits
`logs.max_size`. A log that `cdkit status` would still show for a SHA's latest
result is never the reason a gate passes or fails (gates read the ledger, not
logs), so pruning cannot change a verdict; a pruned log is shown as pruned.
"""
from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cdkit.ledger import LedgerError, LedgerFull, make_private_dir, refuse_symlinks

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from cdkit.ntuple import NamedTuple

LOGS_DIR = "logs"
CHANGED_FILES = "changed-files"
DEFAULT_KEEP_SECONDS = 30 * 86400.0  # logs.keep: 30d
DEFAULT_MAX_BYTES = 1 << 30  # logs.max_size: 1GB
PRUNE_STAMP = "logs.pruned"  # beside logs/, whose entries are all run ids
PRUNE_EVERY = 3600.0  # a run prunes at most once an hour: enforcing the bound stays cheap


class Retention(NamedTuple):
    keep_seconds: float = DEFAULT_KEEP_SECONDS
    max_bytes: int = DEFAULT_MAX_BYTES


class PruneSummary(NamedTuple):
    removed: int
    freed_bytes: int
    kept: int
    kept_bytes: int


def disk_error(path: Path, exc: OSError, doing: str) -> LedgerError:
    """A failed write as the error to show: a full disk is LedgerFull (exit 2), with what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LedgerFull(f"{path}: no space left on the disk while {doing}. "
                          "Free some space (`cdkit gc` prunes old logs) and run again")
    return LedgerError(f"{path}: {exc.strerror or exc} while {doing}; check the permissions of the git dir")


def run_log_dir(cdkit_dir: Path, run_id: int, changed_files: Sequence[str]) -> tuple[Path, Path]:
    """(the new run's log directory, its changed-files list), written without following a planted symlink.

    A full disk is a LedgerFull (exit 2), not a crash.
    """
    logs = cdkit_dir / LOGS_DIR
    run_dir = logs / str(run_id)
    make_private_dir(logs)
    make_private_dir(run_dir)
    refuse_symlinks(run_dir)  # a directory planted for a future run id may hold links named like its logs
    changed = run_dir / CHANGED_FILES
    data = b"".join(os.fsencode(p) + b"\0" for p in changed_files)
    try:
        fd = os.open(changed, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as exc:
        raise disk_error(changed, exc, "writing the list of changed files") from None
    return run_dir, changed


def _size(directory: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _run_dirs(logs: Path) -> list[tuple[int, Path]]:
    """Run log directories, oldest run first (by run id: ids only grow)."""
    try:
        entries = list(os.scandir(logs))
    except FileNotFoundError:
        return []
    dirs = [(int(e.name), Path(e.path)) for e in entries
            if e.name.isdigit() and e.is_dir(follow_symlinks=False)]
    return sorted(dirs)


def prune_logs(cdkit_dir: Path, retention: Retention, *, now: float | None = None,
               protect: Iterable[int] = ()) -> PruneSummary:
    """Remove run logs older than `retention.keep_seconds`, then the oldest until the rest fit `max_bytes`.

    `protect` lists run ids never removed (the run being recorded now).
    """
    now = time.time() if now is None else now
    protected = set(protect)
    runs = [(run_id, path, _size(path), _mtime(path)) for run_id, path in _run_dirs(cdkit_dir / LOGS_DIR)]
    total = sum(size for _, _, size, _ in runs)
    removed = freed = 0
    for run_id, path, size, mtime in runs:  # oldest first
        too_old = now - mtime > retention.keep_seconds
        if run_id in protected or not (too_old or total > retention.max_bytes):
            continue
        import shutil  # only when pruning: shutil costs every push its bz2 and lzma imports

        shutil.rmtree(path, ignore_errors=True)
        removed, freed, total = removed + 1, freed + size, total - size
    return PruneSummary(removed, freed, len(runs) - removed, total)


def _mtime(path: Path) -> float:
    """When a run's logs were last written: the newest file in it (the directory itself when empty)."""
    newest = os.lstat(path).st_mtime
    for entry in os.scandir(path):
        newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def prune_if_due(cdkit_dir: Path, retention: Retention, *, protect: Iterable[int] = (),
                 clock: Callable[[], float] = time.time) -> PruneSummary | None:
    """Prune at most once per PRUNE_EVERY (a stamp file says when it last ran); None when not due."""
    stamp = cdkit_dir / PRUNE_STAMP
    now = clock()
    try:
        if now - os.lstat(stamp).st_mtime < PRUNE_EVERY:
            return None
    except FileNotFoundError:
        pass
    summary = prune_logs(cdkit_dir, retention, now=now, protect=protect)
    try:
        fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        os.utime(stamp, (now, now))
    except OSError:
        pass  # no stamp (full disk, say): the next run prunes again, which is only slower
    return summary
