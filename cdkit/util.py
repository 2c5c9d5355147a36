"""The one helper every subprocess goes through."""
from __future__ import annotations

import os
import signal
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
    timeout: float | None = None,
) -> tuple[int, bytes, bytes]:
    """Run `cmd` without a shell; return (returncode, stdout, stderr) as bytes.

    With `timeout`, the command runs in its own process group, and the whole group is
    killed when the time is up (a `git fetch` waits on ssh or a credential helper, which
    would keep the pipes open after git itself died): CommandTimedOut then.
    """
    if timeout is None:
        proc = subprocess.run(cmd, cwd=cwd, env=None if env is None else dict(env),
                              input=stdin if stdin is not None else b"", capture_output=True)
        returncode, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        returncode, out, err = _run_with_timeout(cmd, cwd=cwd, env=env, stdin=stdin, timeout=timeout)
    if check and returncode != 0:
        raise CalledProcessError(cmd, returncode, out, err)
    return returncode, out, err


class CommandTimedOut(RuntimeError):
    """A command outlived its timeout and was killed, with everything it started."""

    def __init__(self, cmd: Sequence[str], timeout: float) -> None:
        self.cmd = tuple(cmd)
        self.timeout = timeout
        super().__init__(f"{' '.join(cmd)} did not finish within {timeout:g}s and was stopped")


def _run_with_timeout(cmd: Sequence[str], *, cwd: str | os.PathLike[str] | None, env: Mapping[str, str] | None,
                      stdin: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
    proc = subprocess.Popen(cmd, cwd=cwd, env=None if env is None else dict(env), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(stdin if stdin is not None else b"", timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise CommandTimedOut(cmd, timeout) from None
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ctrl-C: nothing it started outlives it
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    return proc.returncode, out, err


class Started:
    """A command running while the caller does something else; `result()` collects it like `cmd_output_b`.

    Two git reads that do not depend on each other (the pre-push hook's `git status` and
    `git ls-files`) then overlap instead of paying for two process lifetimes in a row.
    """

    def __init__(self, *cmd: str, cwd: str | os.PathLike[str] | None = None) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def result(self, *, check: bool = True) -> tuple[int, bytes, bytes]:
        out, err = self.proc.communicate()
        if check and self.proc.returncode != 0:
            raise CalledProcessError(self.cmd, self.proc.returncode, out, err)
        return self.proc.returncode, out, err

    def abandon(self) -> None:
        """Not needed after all: stop it and reap it (no zombie, no open pipes)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


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
