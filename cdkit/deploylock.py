"""One deploy at a time per environment, for as long as any of its processes lives.

The lock is an exclusive `flock` on `<cdkit dir>/locks/<environment>.lock`. The deploy
command (and the verify command) inherit its descriptor, and a `flock` is released only
when the last descriptor of it closes, so a deploy command left running after cdkit was
killed (it runs in its own session, so SIGKILL of cdkit does not reach it) still holds
the environment: the next deploy is refused until that command has ended too. A lock
does not expire, so a holder stopped with SIGSTOP keeps it; nothing can take it over.

The one way to lose it is the lock file being removed or replaced (someone cleaning
the git dir): the file at the path is then another inode, and a second deploy could
lock that one. `lost()` notices it, and the holder stops its deploy.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from cdkit.util import HOST, local_process_gone


class LockBusy(Exception):
    """Another deploy holds the environment: who, as far as its lock file says."""

    def __init__(self, environment: str, holder: str) -> None:
        super().__init__(f"another deploy to {environment} is in progress ({holder})")
        self.environment = environment
        self.holder = holder


def lock_path(cdkit_dir: Path, environment: str) -> Path:
    # Environment names match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ (schema.json): safe as one file name.
    return cdkit_dir / "locks" / f"{environment}.lock"


class EnvironmentLock:
    """An environment's deploy lock, held from `acquire` to `release` (owns the descriptor)."""

    def __init__(self, path: Path, fd: int, info: dict[str, Any]) -> None:
        self.path = path
        self.fd = fd
        self.info = info

    @classmethod
    def acquire(cls, cdkit_dir: Path, environment: str) -> EnvironmentLock:
        """Take the lock now, or raise LockBusy describing the deploy that has it."""
        path = lock_path(cdkit_dir, environment)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise LockBusy(environment, describe_holder(path)) from None
            if _same_file(path, fd):
                break
            os.close(fd)  # the file was replaced between open and flock: lock the new one
        lock = cls(path, fd, {"pid": os.getpid(), "host": HOST, "since": time.time()})
        lock._write()
        return lock

    def note(self, **facts: Any) -> None:
        """Add facts for whoever finds the lock taken (the deployment id, the command's session)."""
        self.info.update(facts)
        self._write()

    def lost(self) -> bool:
        """Whether the lock file at the path is no longer the one this lock holds."""
        return not _same_file(self.path, self.fd)

    def release(self) -> None:
        # The file stays: removing it would let a waiter lock an inode nobody else will see.
        if self.fd < 0:
            return
        if not self.lost():
            os.ftruncate(self.fd, 0)
        os.close(self.fd)
        self.fd = -1

    def _write(self) -> None:
        data = json.dumps(self.info, sort_keys=True).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)


def _same_file(path: Path, fd: int) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def describe_holder(path: Path) -> str:
    """Who holds the lock, in words, from what the holder wrote into the file."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or not info.get("pid"):
        return f"its lock file {path} is locked by a process that wrote nothing into it"
    pid, host = info.get("pid"), info.get("host")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("since") or 0)))
    what = f"deployment #{info['deployment']}" if info.get("deployment") else "a deploy"
    text = f"{what} started at {since} by cdkit pid {pid} on {host}"
    if isinstance(pid, int) and local_process_gone(pid, host):
        sessions = sorted(_holding_sessions(path)) or ([info["session"]] if info.get("session") else [])
        if sessions:
            where = ", ".join(f"session {s}" for s in sessions)
            stop = "; ".join(f"kill -TERM -- -{s}" for s in sessions)
            text += (f"; that cdkit is gone, but the deploy command it started still runs ({where}): wait for it "
                     f"to end, or stop it with: {stop}")
        else:
            text += "; that cdkit is gone, but a process it started still holds the lock"
    return text


def _holding_sessions(path: Path) -> set[int]:
    """The sessions of the processes that hold `path` open (Linux /proc; empty elsewhere or when unreadable).

    The lock file names the deploy command's session only once cdkit wrote it; the
    processes themselves say who holds the lock, whenever cdkit died.
    """
    target = str(path.resolve())
    sessions: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return sessions
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") == target for fd in fds):
                sessions.add(os.getsid(int(entry)))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return sessions
