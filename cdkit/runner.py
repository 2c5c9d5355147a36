"""Run a Plan: stages in dependency order, independent ones in parallel.

Each stage is `/bin/sh -c RUN` in its own process group (its own session), so a
timeout or a cancel can kill everything it started, grandchildren included.
One thread, the caller's, does all of it: it waits in one `poll` on every stage's
output pipe and, on Linux, every stage's pidfd (its exit), copies output to the
logs and calls the reporters (console, ledger, GitHub), always in order. No thread
hands events to another: with threads, the handoffs cost more per stage than
starting the process does (see bench/bench_dag.py). Where there is no pidfd
(macOS), a kept thread per stage waits for its exit and wakes the poll.

Output never distorts a result: a stage's end is timed where its process is
reaped; output travels in chunks of whole lines (never one event per line, a
whole pipe's worth per read), and reporters must not block (the console writes
from a thread of its own), so a flood of output delays neither a timeout nor
the start of a stage that waits on another.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import queue
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from cdkit.config import Stage
from cdkit.plan import Plan
from cdkit.credentials import without_credentials
from cdkit.util import is_within

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, NamedTuple, Protocol
else:
    from cdkit.ntuple import NamedTuple
    Protocol = object  # a structural type for mypy; at run time only a base class

PASSED, FAILED, TIMED_OUT, SKIPPED, CANCELLED = "passed", "failed", "timed_out", "skipped", "cancelled"
BAD_STATUSES = frozenset({FAILED, TIMED_OUT, CANCELLED})
DEFAULT_KILL_GRACE = 5.0


class StageResult(NamedTuple):
    stage: str
    status: str
    reason: str = ""
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    log_path: str | None = None
    command: str | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class RunContext(NamedTuple):
    """Everything a stage's process is given."""

    run_id: int
    workdir: Path
    log_dir: Path
    environ: Mapping[str, str]  # already cleaned of git's local variables
    jobs: int
    kill_grace: float = DEFAULT_KILL_GRACE


class Reporter(Protocol):
    """Told of every stage event, from one thread, in order; must return quickly (never wait on a reader).

    `stage_output` gets a chunk of one or more whole lines, each ending in b"\\n"; only a
    stage's last chunk may end without one. `waiting` comes each time the runner is about to
    wait for its stages; a reporter that holds events back (to write several at once) returns
    the seconds within which it must be asked again, and the runner waits no longer than that.
    `run_finished` comes last, however the run ended: nothing may stay held after it.
    """

    def stage_started(self, stage: Stage, started_at: float) -> None: ...
    def stage_output(self, stage: Stage, chunk: bytes) -> None: ...
    def stage_finished(self, stage: Stage, result: StageResult) -> None: ...
    def waiting(self) -> float | None: ...
    def run_finished(self) -> None: ...


def overall_status(results: Sequence[StageResult]) -> str:
    statuses = {r.status for r in results}
    if CANCELLED in statuses:
        return CANCELLED
    if statuses & BAD_STATUSES:
        return FAILED
    return PASSED


class _Running:
    """A started stage (mutable: its output, its exit, a timeout or a cancel mark it)."""

    __slots__ = ("stage", "proc", "started_at", "deadline", "log_path", "timed_out", "cancelled", "kill_at",
                 "log", "out", "pidfd", "partial", "exit", "read_until", "flowing_until")

    def __init__(self, stage: Stage, proc: subprocess.Popen[bytes], started_at: float, deadline: float,
                 log_path: str, log: IO[bytes]) -> None:
        self.stage = stage
        self.proc = proc
        self.started_at = started_at
        self.deadline = deadline
        self.log_path = log_path
        self.timed_out = False
        self.cancelled = False
        self.kill_at: float | None = None
        self.log = log
        assert proc.stdout is not None
        self.out: int | None = proc.stdout.fileno()  # None once at its end (or given up on)
        self.pidfd: int | None = None  # None: no pidfd here, or the exit is seen
        self.partial = b""  # the start of a line not yet passed on
        self.exit: tuple[int, float] | None = None  # (exit code, when it was reaped)
        self.read_until = 0.0  # once exited: output is read until this long passes without any...
        self.flowing_until = 0.0  # ...and never after this (a process that escaped the group)


class _State:
    __slots__ = ("pending", "results", "running", "cancel_reason", "unblocking")

    def __init__(self, pending: list[Stage]) -> None:
        self.pending = pending
        self.results: dict[str, StageResult] = {}
        self.running: dict[str, _Running] = {}
        self.cancel_reason: str | None = None
        # A stage ended without passing since pending stages were last looked at: some may now be blocked.
        self.unblocking = False


QUIET_AFTER_EXIT = 1.0  # seconds of output still read once a stage's shell has exited
STILL_FLOWING_AFTER_EXIT = 10.0  # further seconds a pipe that never goes quiet is read
QUIET_GAP = 0.1  # once the shell has exited, this long without output ends its reading
PIPE_SIZE = 1 << 20  # asked of the kernel for a stage's output pipe (Linux's default ceiling for anyone)
READ_SIZE = PIPE_SIZE  # a whole pipe at a time: a chatty stage costs one wake-up per MiB, not per 64 KiB
LONG_LINE = 1 << 20  # a "line" this long without a newline is passed on anyway (memory stays bounded)


def pump_chunks(proc: subprocess.Popen[bytes], log: IO[bytes], emit: Callable[[bytes], None],
                exited: threading.Event) -> None:
    """Copy a process group's output to its log and, in chunks of whole lines, to `emit`, from a
    thread of the caller's (a deploy command's output; the runner polls its stages itself).

    Reads until end of file, or until `exited` is set and the pipe has gone quiet: a
    process that left the group (`setsid`, a daemon) may hold the pipe open forever, and
    must not keep the run waiting.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    _widen_pipe(fd)
    partial = b""
    stop_at: float | None = None
    while True:
        if stop_at is None and exited.is_set():
            stop_at = time.monotonic() + QUIET_AFTER_EXIT
        ready, _, _ = select.select([fd], [], [], QUIET_GAP)
        if not ready:
            if stop_at is not None:
                break
            continue
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            break
        if not log.closed:
            _write_log(log, chunk, emit)  # flushed: the log is complete at every moment (`tail -f`, a crash)
        partial = _emit_whole_lines(partial + chunk if partial else chunk, emit)
        # What the stage wrote before it exited is still being read (cdkit may be behind on a
        # flood): only output that keeps flowing long after, from an escaped process, is cut.
        if stop_at is not None and time.monotonic() >= stop_at + STILL_FLOWING_AFTER_EXIT:
            break
    if partial:
        emit(partial)


def _write_log(log: IO[bytes], chunk: bytes, emit: Callable[[bytes], None]) -> None:
    """Append to the log; a failed write (a full disk) closes it and says so, and reading goes on.

    Stopping the reader instead would fill the pipe and block the stage until its timeout.
    """
    try:
        log.write(chunk)
        log.flush()
    except OSError as exc:
        with contextlib.suppress(OSError):
            log.close()  # drops what could not be written; a later close has nothing to flush
        emit(f"cdkit: cannot write this log any more ({exc.strerror}); the output goes on here only\n".encode())


def _widen_pipe(fd: int) -> None:
    """Give the pipe a bigger buffer where the OS allows it: fewer, larger reads, and a stage that
    prints fast waits less for cdkit to read."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if setpipe is None:
        return
    try:
        fcntl.fcntl(fd, setpipe, PIPE_SIZE)
    except OSError:
        pass  # a lower limit set by the admin: the default buffer works, only slower


def _emit_whole_lines(data: bytes, emit: Callable[[bytes], None]) -> bytes:
    """Pass on `data` up to its last newline; return the rest (the start of a line)."""
    cut = data.rfind(b"\n") + 1
    if not cut and len(data) >= LONG_LINE:
        # Cut after a space or a tab (no token holds one, so redaction still sees each whole),
        # or, in a megabyte without either, where a character ends.
        cut = max(data.rfind(b" "), data.rfind(b"\t")) + 1 or _utf8_boundary(data, len(data) - 1)
    if not cut:
        return data
    emit(data[:cut])
    return data[cut:]


def _utf8_boundary(data: bytes, at: int) -> int:
    """`at`, moved back to the start of the UTF-8 character it falls in (a cut never splits one)."""
    while at > 0 and data[at] & 0xC0 == 0x80:
        at -= 1
    return at


def pump_output(proc: subprocess.Popen[bytes], log: IO[bytes], emit: Callable[[bytes], None],
                exited: threading.Event) -> None:
    """`pump_chunks`, with `emit` called once per line (deploy commands, whose output is small)."""
    def emit_lines(chunk: bytes) -> None:
        for line in chunk.splitlines(keepends=True):
            emit(line)

    pump_chunks(proc, log, emit_lines, exited)


class _Workers:
    """Daemon threads kept for the next stage's exit, where there is no pidfd to poll: starting a
    thread (a handshake with the new thread) costs the calling thread more than a stage of
    `true` takes to run."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[tuple[Callable[..., None], tuple[object, ...]]] = queue.SimpleQueue()
        self._idle = 0  # workers waiting for a task, never fewer than the tasks queued and unclaimed
        self._lock = threading.Lock()

    def submit(self, task: Callable[..., None], *args: object) -> None:
        with self._lock:
            spawn = not self._idle
            if not spawn:
                self._idle -= 1
        self._tasks.put((task, args))
        if spawn:
            threading.Thread(target=self._work, name="cdkit-stage", daemon=True).start()

    def _work(self) -> None:
        while True:
            task, args = self._tasks.get()
            try:
                task(*args)
            except Exception:  # as a thread of its own would: say so, and stay to serve the next stage
                import traceback

                traceback.print_exc()
            with self._lock:
                self._idle += 1


_WORKERS = _Workers()


class _Wakeup:
    """A pipe in the runner's poll: a byte written to it wakes the poll, from a signal handler
    (`Runner.cancel`) or from an exit waiter's thread."""

    def __init__(self) -> None:
        self.fd, self._write = os.pipe()  # not inheritable: no stage holds either end
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()  # a thread's wake-up never meets a closed (or reused) descriptor
        self.closed = False

    def wake(self) -> None:
        """From a signal handler, which runs on the runner's own thread: no lock (close may hold it)."""
        if not self.closed:
            with contextlib.suppress(BlockingIOError):  # full: a wake-up is already waiting
                os.write(self._write, b"x")

    def wake_from_thread(self) -> None:
        with self._lock:
            self.wake()

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 4096)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            os.close(self.fd)
            os.close(self._write)


def _wait_then_wake(proc: subprocess.Popen[bytes], name: str, exits: queue.SimpleQueue[tuple[str, int, float]],
                    wakeup: _Wakeup, clock: Callable[[], float]) -> None:
    """Where there is no pidfd: wait for the stage's exit in a thread, and wake the runner's poll."""
    code = proc.wait()
    exits.put((name, code, clock()))  # the stage's end: when it was reaped, not when the runner hears
    wakeup.wake_from_thread()


def _log_path(ctx: RunContext, stage: Stage) -> str:
    return os.path.join(ctx.log_dir, f"{stage.name}.log")


class _LogMaker:
    """Creates a run's log files ahead of its stages, from a kept thread.

    Creating a file can cost as much as starting a stage (0.04 to 0.4 ms on this project's build
    machine's ext4, as its disk's state goes; 0.01 ms to open one that exists), and the runner's one
    thread starts every stage.
    Only what is not there yet is created (`O_EXCL`): a stage that started first keeps its log.
    When the run is over, the empty logs of stages that never started are removed again.
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self._lock = threading.Lock()  # held for each creation: once `stop` returns, no more come
        self._stopped = False

    def create(self) -> None:
        for path in self.paths:
            with self._lock:
                if self._stopped:
                    return
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                except OSError:
                    pass  # there already, or it cannot be made: the stage's own open says why

    def stop(self, started: set[str]) -> None:
        with self._lock:
            self._stopped = True
        for path in self.paths:
            if path not in started:
                with contextlib.suppress(OSError):
                    if os.stat(path).st_size == 0:
                        os.unlink(path)


@functools.cache
def _devnull() -> int:
    """/dev/null, opened once for every stage's stdin (Popen's DEVNULL opens and closes it per process)."""
    return os.open(os.devnull, os.O_RDONLY)  # not inheritable: only as a stage's fd 0


def _pidfd(pid: int) -> int | None:
    """A file descriptor that becomes readable when `pid` exits (Linux 5.3+), or None elsewhere."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd_open (macOS, old kernels), or refused by a sandbox
        return None


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stage_env(stage: Stage, ctx: RunContext, extra: Mapping[str, str]) -> dict[str, str]:
    # Every stage starts here, from the hook, `cdkit run` or the Action: one place for the credentials rule.
    env = without_credentials(ctx.environ, stage.env_passthrough)
    env.update(stage.env)
    env.update(extra)
    env["CDKIT_STAGE"] = stage.name
    return env


def _working_directory_problem(stage: Stage, workdir: Path) -> str | None:
    """Why the stage's working_directory cannot be used in this tree, in words (None when it can)."""
    if not stage.working_directory:
        return None
    target = workdir / stage.working_directory
    if not target.is_dir():
        return (f"working_directory {stage.working_directory} does not exist in the tree being checked ({workdir}); "
                "create and commit it, or fix working_directory in the pipeline")
    if not is_within(target, workdir):
        return f"working_directory {stage.working_directory} leads outside the repository"
    return None


def _start(stage: Stage, ctx: RunContext, extra_env: Mapping[str, str], clock: Callable[[], float]) -> _Running:
    # Strings, not Paths: joined once per stage on the runner's one thread, they cost less.
    log_path = _log_path(ctx, stage)
    cwd = os.path.join(ctx.workdir, stage.working_directory) if stage.working_directory else ctx.workdir
    log = open(log_path, "wb")  # noqa: SIM115 - closed when the stage's output ends (`Runner._close_output`)
    try:
        started = clock()
        proc = subprocess.Popen(
            ["/bin/sh", "-c", stage.run],
            cwd=cwd,
            env=_stage_env(stage, ctx, extra_env),
            stdin=_devnull(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        log.close()
        raise
    # Deadlines on the monotonic clock: a wall-clock step (NTP, resume) must not time stages out.
    running = _Running(stage, proc, started, time.monotonic() + stage.timeout, log_path, log)
    assert running.out is not None
    _widen_pipe(running.out)
    running.pidfd = _pidfd(proc.pid)
    return running


class Runner:
    """Owns the processes of one run."""

    def __init__(self, plan: Plan, ctx: RunContext, reporters: Sequence[Reporter], *,
                 extra_env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time,
                 check_result: Callable[[Stage, StageResult], StageResult] | None = None) -> None:
        self.plan = plan
        # Called as each stage exits, before anyone hears of the result: it may turn a pass into a
        # failure (a stage that rewrote files in the work tree).
        self.check_result = check_result
        self.ctx = ctx
        self.reporters = reporters
        self.extra_env = dict(extra_env or {})
        self.clock = clock
        self.to_run = {s.name for s in plan.to_run}
        self.state = _State(pending=list(plan.to_run))
        self._poll = select.poll()
        self._watched: dict[int, _Running] = {}  # fd (output pipe or pidfd) -> its stage
        self._wakeup = _Wakeup()  # `cancel` and the exit waiters (no pidfd) wake the poll
        self._poll.register(self._wakeup.fd, select.POLLIN)
        # Exits seen by the waiter threads (no pidfd); SimpleQueue.put is safe from any thread.
        self._exits: queue.SimpleQueue[tuple[str, int, float]] = queue.SimpleQueue()
        self._logs: _LogMaker | None = None

    # --- public -------------------------------------------------------------------------------

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the run to stop (safe from a signal handler): every stage is killed and recorded `cancelled`."""
        self.state.cancel_reason = reason
        self._wakeup.wake()

    def run(self) -> list[StageResult]:
        try:
            return self._run()
        finally:
            if self._logs is not None:
                self._logs.stop({r.log_path for r in self.state.results.values() if r.log_path}
                                | {r.log_path for r in self.state.running.values()})
            try:
                for reporter in self.reporters:
                    reporter.run_finished()
            finally:
                self._wakeup.close()

    def _run(self) -> list[StageResult]:
        self.ctx.log_dir.mkdir(parents=True, exist_ok=True)
        if len(self.plan.to_run) > 1:  # the first starts now: its own open creates its log
            self._logs = _LogMaker([_log_path(self.ctx, s) for s in self.plan.to_run[1:]])
            _WORKERS.submit(self._logs.create)
        for planned in self.plan.stages:
            if not planned.runs:
                self._finish(planned.stage, StageResult(planned.stage.name, SKIPPED, planned.reason,
                                                        command=planned.stage.run))
        while self.state.pending or self.state.running:
            if self.state.cancel_reason is not None:
                self._cancel_all()
            self._skip_blocked()
            self._start_ready()
            self._skip_blocked()  # a stage that could not even start blocks its dependents now
            if not self.state.running:
                self._skip_unreachable()
                break
            self._wait_for_event()
        return [self.state.results[p.stage.name] for p in self.plan.stages]

    # --- scheduling ---------------------------------------------------------------------------

    def _needs(self, stage: Stage) -> list[str]:
        # A need that was planned not to run (paths, trigger, CDKIT_SKIP) counts as met.
        return [n for n in stage.needs if n in self.to_run]

    def _skip_blocked(self) -> None:
        if not self.state.unblocking:
            return  # only a stage that did not pass blocks anything: no scan of every need per event
        self.state.unblocking = False
        for stage in list(self.state.pending):
            for need in self._needs(stage):
                result = self.state.results.get(need)
                if result and result.status != PASSED:
                    verb = {SKIPPED: "was skipped", TIMED_OUT: "timed out"}.get(result.status, result.status)
                    self.state.pending.remove(stage)
                    self._finish(stage, StageResult(stage.name, SKIPPED, f"needs {need!r}, which {verb}",
                                                    command=stage.run))
                    break

    def _skip_unreachable(self) -> None:
        # Nothing runs and nothing can start: whatever is left waits on stages that never ran.
        for stage in self.state.pending:
            self._finish(stage, StageResult(stage.name, SKIPPED, "its needs never ran", command=stage.run))
        self.state.pending.clear()

    def _start_ready(self) -> None:
        for stage in list(self.state.pending):
            if len(self.state.running) >= max(1, self.ctx.jobs) or self.state.cancel_reason is not None:
                return
            if all(self.state.results.get(n, None) is not None and self.state.results[n].status == PASSED
                   for n in self._needs(stage)):
                self.state.pending.remove(stage)
                problem = _working_directory_problem(stage, self.ctx.workdir)
                try:
                    if problem is None:
                        running = _start(stage, self.ctx, self.extra_env, self.clock)
                except OSError as exc:
                    problem = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
                if problem is not None:
                    now = self.clock()
                    self._finish(stage, StageResult(stage.name, FAILED, f"could not start: {problem}",
                                                    started_at=now, finished_at=now, command=stage.run))
                    continue
                self.state.running[stage.name] = running
                self._watch(running)
                for reporter in self.reporters:
                    reporter.stage_started(stage, running.started_at)

    # --- the one poll: output, exits, wake-ups ------------------------------------------------

    def _watch(self, running: _Running) -> None:
        for fd in (running.out, running.pidfd):
            if fd is not None:
                self._watched[fd] = running
                self._poll.register(fd, select.POLLIN)
        if running.pidfd is None:
            _WORKERS.submit(_wait_then_wake, running.proc, running.stage.name, self._exits, self._wakeup, self.clock)

    def _unwatch(self, fd: int) -> None:
        self._poll.unregister(fd)
        del self._watched[fd]

    def _wait_for_event(self) -> None:
        asked = [again for again in (r.waiting() for r in self.reporters) if again is not None]
        timeout = min(self._next_deadline() - time.monotonic(), 1.0, *asked)
        for fd, _ in self._poll.poll(max(0.0, timeout) * 1000):
            running = self._watched.get(fd)
            if fd == self._wakeup.fd:
                self._woken()
            elif running is not None and fd == running.pidfd:
                self._unwatch(fd)
                os.close(fd)
                running.pidfd = None
                self._exited(running, running.proc.wait(), self.clock())
            elif running is not None:
                self._read(running)
        self._end_quiet_outputs()
        self._enforce_deadlines()

    def _woken(self) -> None:
        self._wakeup.drain()
        while not self._exits.empty():
            name, code, exited_at = self._exits.get()
            self._exited(self.state.running[name], code, exited_at)

    def _exited(self, running: _Running, code: int, exited_at: float) -> None:
        running.exit = (code, exited_at)  # its end: whatever output is still to read is not its time
        # The shell is gone; anything it left behind in its group would hold the pipe open
        # (and outlive the run), so end it before the rest is read.
        signal_group(running.proc.pid, signal.SIGKILL)
        now = time.monotonic()
        running.read_until = now + QUIET_GAP
        running.flowing_until = now + QUIET_AFTER_EXIT + STILL_FLOWING_AFTER_EXIT
        if running.out is None:
            self._ended(running)  # the pipe had closed first (`exec >&-`)

    def _read(self, running: _Running) -> None:
        assert running.out is not None
        chunk = os.read(running.out, READ_SIZE)  # poll said readable: this does not block
        if not chunk:
            if running.exit is not None:
                self._ended(running)
            else:
                self._close_output(running)  # the exit is still to come (`exec >&-`)
            return

        def emit(lines: bytes) -> None:
            for reporter in self.reporters:
                reporter.stage_output(running.stage, lines)

        if not running.log.closed:
            _write_log(running.log, chunk, emit)  # flushed: the log is complete at every moment (`tail -f`, a crash)
        running.partial = _emit_whole_lines(running.partial + chunk if running.partial else chunk, emit)
        if running.exit is not None:
            # What the stage wrote before it exited is still being read (cdkit may be behind on a
            # flood): only output that keeps flowing long after, from an escaped process, is cut.
            running.read_until = time.monotonic() + QUIET_GAP

    def _close_output(self, running: _Running) -> None:
        """The stage's output is over (end of file, or given up on): its last line and its log end."""
        if running.out is not None:
            self._unwatch(running.out)
            running.out = None
            assert running.proc.stdout is not None
            running.proc.stdout.close()
        if running.partial:
            for reporter in self.reporters:
                reporter.stage_output(running.stage, running.partial)
            running.partial = b""
        with contextlib.suppress(OSError):  # a full disk: said in the output when a write failed
            running.log.close()

    def _end_quiet_outputs(self) -> None:
        """Exited stages whose pipe is still open (held by a process that escaped the group): once it
        is quiet, or has flowed too long, stop reading it and end the stage."""
        now = time.monotonic()
        for running in list(self.state.running.values()):
            if running.exit is not None and running.out is not None and \
                    (now >= running.read_until or now >= running.flowing_until):
                self._ended(running)

    def _ended(self, running: _Running) -> None:
        assert running.exit is not None
        self._close_output(running)
        code, exited_at = running.exit
        self._on_exit(running.stage.name, code, exited_at)

    def _next_deadline(self) -> float:
        times = [r.kill_at if r.kill_at is not None else r.deadline for r in self.state.running.values()]
        times += [min(r.read_until, r.flowing_until) for r in self.state.running.values()
                  if r.exit is not None and r.out is not None]
        return min(times) if times else time.monotonic() + 1.0

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for running in self.state.running.values():
            if running.kill_at is not None and now >= running.kill_at:
                signal_group(running.proc.pid, signal.SIGKILL)
                running.kill_at = now + 3600  # sent; don't repeat
            elif running.kill_at is None and now >= running.deadline:
                running.timed_out = True
                self._terminate(running, now)

    def _terminate(self, running: _Running, now: float) -> None:
        """TERM the whole group, then KILL it after the grace period."""
        signal_group(running.proc.pid, signal.SIGTERM)
        running.kill_at = now + self.ctx.kill_grace

    def _cancel_all(self) -> None:
        now = time.monotonic()
        for running in self.state.running.values():
            if not running.cancelled:
                running.cancelled = True
                self._terminate(running, now)
        for stage in self.state.pending:
            self._finish(stage, StageResult(stage.name, CANCELLED, f"not started: {self.state.cancel_reason}",
                                            command=stage.run))
        self.state.pending.clear()

    def _on_exit(self, name: str, code: int, exited_at: float) -> None:
        running = self.state.running.pop(name)
        if running.cancelled:
            status, reason = CANCELLED, self.state.cancel_reason or "cancelled"
        elif running.timed_out:
            status, reason = TIMED_OUT, f"timed out after {_seconds(running.stage.timeout)}"
        elif code == 0:
            status, reason = PASSED, ""
        else:
            status = FAILED
            reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        result = StageResult(name, status, reason, exit_code=code, started_at=running.started_at,
                             finished_at=exited_at, log_path=running.log_path, command=running.stage.run)
        if self.check_result is not None and not running.cancelled:
            result = self.check_result(running.stage, result)
        self._finish(running.stage, result)

    def _finish(self, stage: Stage, result: StageResult) -> None:
        self.state.results[stage.name] = result
        if result.status != PASSED:
            self.state.unblocking = True
        for reporter in self.reporters:
            reporter.stage_finished(stage, result)


def _seconds(value: float) -> str:
    if value >= 3600 and value % 3600 == 0:
        return f"{int(value // 3600)}h"
    if value >= 60 and value % 60 == 0:
        return f"{int(value // 60)}m"
    return f"{value:g}s"


CANCEL_REASONS = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}


@contextmanager
def cancel_on_signals(cancel: Callable[[str], None]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call `cancel(reason)` instead of killing cdkit, and SIGHUP is ignored.

    `cancel` runs in a signal handler: it may only set state and send signals (a run's
    cancel puts on a SimpleQueue, which is reentrant). Outside the main thread, Python
    cannot install handlers, and the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: object) -> None:
        cancel(CANCEL_REASONS[signal.Signals(signum)])

    def terminal_gone(_signum: int, _frame: object) -> None:
        # A closed terminal hangs up: the run goes on (its stages are in sessions of their own and
        # never see it), is recorded, and ends with the stages' exit code; writes to the dead
        # terminal fail and turn console output off (cdkit.output.reader_gone). A handler, not
        # SIG_IGN, which stages would inherit.
        pass

    previous = {sig: signal.signal(sig, handle) for sig in CANCEL_REASONS}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, terminal_gone)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
