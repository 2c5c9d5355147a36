"""All console output goes through here, so NO_COLOR, non-TTY and tests work in one place.

A reader that goes away (`cdkit run | head -1`, a closed terminal) is not an error:
the first write that finds it gone (EPIPE, EIO) turns that stream into /dev/null, and
cdkit carries on, finishes the run and records it. A reader that is merely slow (a
paused terminal) never slows a run either: stage output is written by `LiveWriter`
from a thread of its own.
"""
from __future__ import annotations

import codecs
import errno
import os
import select
import sys
import threading
import time
from collections.abc import Callable

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

COLORS = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35", "cyan": "36", "dim": "2", "bold": "1"}
READER_GONE = frozenset({errno.EPIPE, errno.EIO, errno.ENXIO, errno.ECONNRESET})


def use_color(stream: IO[str], environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (https://no-color.org), always with FORCE_COLOR."""
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    return is_terminal(stream, environ)


def is_terminal(stream: IO[str], environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """A terminal that can redraw a line in place (not TERM=dumb)."""
    try:
        return stream.isatty() and environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def paint(text: str, color: str, *, enabled: bool) -> str:
    if not enabled or color not in COLORS:
        return text
    return f"\033[{COLORS[color]}m{text}\033[0m"


def write(text: str = "", *, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except OSError as exc:
        _unless_reader_gone(exc, stream)


def encoding_of(stream: IO[str]) -> str:
    """The encoding `stream` writes (UTF-8 when it does not say)."""
    return getattr(stream, "encoding", None) or "utf-8"


def writes_utf8(stream: IO[str]) -> bool:
    """Whether UTF-8 bytes can go to `stream` as they are (any spelling of UTF-8 the codec registry knows)."""
    try:
        return codecs.lookup(encoding_of(stream)).name in ("utf-8", "utf-8-sig")
    except LookupError:
        return False


def write_through(text: str | bytes, stream: IO[str]) -> None:
    """`write`, straight to the stream's file descriptor (what `LiveWriter` writes from its thread).

    Megabytes of stage output written through a TextIOWrapper from a second thread were
    seen to lose bytes under load; `os.write` on the descriptor loses none. A descriptor
    left non-blocking by someone else is waited on, not given up on. Bytes are written as
    they are: they are already in the stream's encoding.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream
        write(text if isinstance(text, str) else text.decode(encoding_of(stream), "replace"), stream=stream)
        return
    try:
        stream.flush()  # whatever was written the ordinary way goes first
        data = memoryview(text if isinstance(text, bytes) else text.encode(encoding_of(stream), "replace"))
        while data:
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                select.select([], [fd], [], 1.0)
    except OSError as exc:
        _unless_reader_gone(exc, stream)


def _unless_reader_gone(exc: OSError, stream: IO[str]) -> None:
    if exc.errno not in READER_GONE and not isinstance(exc, BrokenPipeError):
        raise exc
    reader_gone(stream)


def write_line(text: str = "", *, stream: IO[str] | None = None) -> None:
    write(text + "\n", stream=stream)


def error(text: str) -> None:
    write_line(text, stream=sys.stderr)


def reader_gone(stream: IO[str]) -> None:
    """Nobody reads `stream` any more: from now on what is written to it goes nowhere.

    Its descriptor is pointed at /dev/null (so the buffered rest, and Python's flush at
    exit, cannot fail again), rather than closed (a later open would reuse the number).
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    try:
        stream.flush()
    except (OSError, ValueError):
        pass


GATHER = 0.02  # seconds a line may wait on the console for the ones right behind it


class LiveWriter:
    """Writes to a stream from its own thread, so the run never waits on whoever reads it.

    `write` only queues, as bytes in the stream's encoding (stage output arrives as bytes,
    and goes out without being decoded). Stage output that piles up beyond `backlog` bytes (a reader
    that stopped, say a paused terminal) is dropped from the console, and a note says
    how much; every stage's log file still has all of it. cdkit's own lines are never
    dropped. With `status` (what is running now, or None), a terminal keeps a live last
    line, redrawn every second; any other stream gets it as a line every `every` seconds.
    """

    def __init__(self, stream: IO[str], *, status: Callable[[], str | None] | None = None, live_line: bool = False,
                 every: float = 30.0, backlog: int = 1 << 22, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.status = status
        self.live_line = live_line
        self.every = every
        self.backlog = backlog
        self.clock = clock
        self.encoding = encoding_of(stream)
        self._queue: list[bytes] = []
        self._queued = 0
        self._dropped = 0
        self._closing = False
        self._shown = ""  # the live line now on the terminal, to erase before anything else
        self._lock = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="cdkit-console", daemon=True)
        self._thread.start()

    def write(self, text: str | bytes, *, droppable: bool = False) -> None:
        data = text if isinstance(text, bytes) else text.encode(self.encoding, "replace")
        with self._lock:
            if droppable and self._queued + len(data) > self.backlog:
                self._dropped += data.count(b"\n")
                return
            if not self._queue:
                self._lock.notify()  # only the first: the writer is gathering the rest (see `_loop`)
            self._queue.append(data)
            self._queued += len(data)

    def close(self) -> None:
        """Write what is queued, erase the live line, and stop."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join()

    def _loop(self) -> None:
        interval = 1.0 if self.live_line else self.every
        next_status = self.clock() + interval
        while True:
            with self._lock:
                idle = False
                while not self._queue and not self._closing and self.clock() < next_status:
                    idle = True
                    self._lock.wait(max(0.0, next_status - self.clock()))
                if idle and self._queue and not self._closing:
                    # Woken from idle: what comes in the next moment goes out in the same write, so a
                    # burst (a hundred quick stages' lines) wakes this thread once, not once a line.
                    # `close` still ends the wait at once; a flood (never idle) is never held back.
                    self._lock.wait(GATHER)
                text, self._queue, self._queued = b"".join(self._queue), [], 0
                dropped, self._dropped = self._dropped, 0
                closing = self._closing
            if dropped:
                text += (f"cdkit: {dropped} line(s) of stage output not shown: the console fell behind "
                         "(each stage's log file has every line)\n").encode(self.encoding, "replace")
            due = self.clock() >= next_status
            if due:
                next_status = self.clock() + interval
            if self.live_line:
                self._redraw(text, None if closing or self.status is None else self.status())
            elif due and self.status is not None and not closing:
                status_line = self.status()
                write_through(text + (f"{status_line}\n" if status_line else "").encode(self.encoding, "replace"),
                              self.stream)
            elif text:
                write_through(text, self.stream)
            if closing:
                return

    def _redraw(self, text: bytes, status_line: str | None) -> None:
        """Write `text` above the live line, which then shows `status_line` (nothing when None)."""
        status_line = status_line or ""
        if not text and status_line == self._shown:
            return
        # Spaces, not an escape sequence: a live line stays plain text (NO_COLOR) and is never wider
        # than the terminal (the status says so), so it cannot wrap.
        erase = f"\r{' ' * len(self._shown)}\r" if self._shown else ""
        self._shown = status_line
        write_through(erase.encode(self.encoding) + text + status_line.encode(self.encoding, "replace"), self.stream)
