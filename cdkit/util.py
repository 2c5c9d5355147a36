"""The one helper every subprocess goes through."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence


class CalledProcessError(RuntimeError):
    """A command failed: the message shows the command, its code and its output."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.cmd = tuple(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(self._describe())

    def _describe(self) -> str:
        def text(data: bytes) -> str:
            return data.decode("utf-8", "replace").strip() or "(none)"

        return (
            f"command: {' '.join(self.cmd)}\n"
            f"return code: {self.returncode}\n"
            f"stdout: {text(self.stdout)}\n"
            f"stderr: {text(self.stderr)}"
        )


# os.uname() rather than socket.gethostname(): the same name, without importing socket on the hook path.
HOST = os.uname().nodename


def local_process_gone(pid: int, host: str | None) -> bool:
    """Whether `pid` on `host` is known to have ended: only a process of this machine can be checked."""
    if host != HOST:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return False


def cmd_output_b(
    *cmd: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    check: bool = True,
) -> tuple[int, bytes, bytes]:
    """Run `cmd` without a shell; return (returncode, stdout, stderr) as bytes."""
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=None if env is None else dict(env),
        input=stdin if stdin is not None else b"",
        capture_output=True,
    )
    if check and proc.returncode != 0:
        raise CalledProcessError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc.returncode, proc.stdout, proc.stderr


def cmd_output(*cmd: str, **kwargs: object) -> tuple[int, str, str]:
    """`cmd_output_b` decoded as UTF-8 (undecodable bytes kept via surrogateescape)."""
    code, out, err = cmd_output_b(*cmd, **kwargs)  # type: ignore[arg-type]
    return code, out.decode("utf-8", "surrogateescape"), err.decode("utf-8", "surrogateescape")


def is_within(path: os.PathLike[str] | str, root: os.PathLike[str] | str) -> bool:
    """Whether `path`, symbolic links followed, is `root` or below it."""
    from pathlib import Path

    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True
