"""Live stage output and the end-of-run summary on the terminal."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence

from cdkit import output
from cdkit.plan import NOT_JUDGED_PREFIXES, PATHS_SKIP_PREFIX, SKIPPED_BY_USER
from cdkit.config import Stage
from cdkit.credentials import SECRET_ENV_VARS
from cdkit.errors import UsageError
from cdkit.runner import CANCELLED, FAILED, PASSED, SKIPPED, TIMED_OUT, StageResult

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

    from cdkit.secrets import Redactor

_MARKS = {PASSED: ("✓", "green"), FAILED: ("✗", "red"), TIMED_OUT: ("⏱", "red"), SKIPPED: ("-", "dim"),
          CANCELLED: ("■", "yellow"), "running": ("…", "blue")}
_ASCII_MARKS = {PASSED: "ok", FAILED: "XX", TIMED_OUT: "TO", SKIPPED: "--", CANCELLED: "!!", "running": ".."}


def _unicode_ok(stream: IO[str]) -> bool:
    return "utf" in (getattr(stream, "encoding", "") or "").lower()


def mark(status: str, stream: IO[str], color: bool) -> str:
    symbol, hue = _MARKS.get(status, ("?", "dim"))
    if not _unicode_ok(stream):
        symbol = _ASCII_MARKS.get(status, "??")
    return output.paint(symbol, hue, enabled=color)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def display_path(path: str | None, cwd: str | None = None) -> str:
    if not path:
        return ""
    try:
        rel = os.path.relpath(path, cwd or os.getcwd())
    except ValueError:
        return path
    return path if rel.startswith("../..") else rel


PROGRESS_EVERY = 30.0  # seconds between "still running" lines where no live line can be drawn


def progress_every(environ: Mapping[str, str]) -> float:
    """CDKIT_PROGRESS_EVERY (seconds, default 30): how often a non-terminal hears which stages still run."""
    value = environ.get("CDKIT_PROGRESS_EVERY", "")
    if not value:
        return PROGRESS_EVERY
    try:
        seconds = float(value.removesuffix("s"))
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 86400:
        raise UsageError(f"CDKIT_PROGRESS_EVERY={value!r} is not a number of seconds from 0 to 86400 (e.g. 30)")
    return seconds


class ConsoleReporter:
    """Prints each output line prefixed with its stage, one line as each stage starts and ends, and
    what is still running: a live last line on a terminal, a line every 30 s anywhere else.

    Output arrives in chunks of whole lines and is redacted, prefixed and queued a chunk at
    a time; a thread of its own writes it, so a slow or vanished reader never holds up the run.
    """

    def __init__(self, stages: Sequence[Stage], *, stream: IO[str] | None = None, show_output: bool = True,
                 environ: Mapping[str, str] = os.environ) -> None:
        self.stream = stream or sys.stdout
        self.color = output.use_color(self.stream)
        self.width = max((len(s.name) for s in stages), default=4)
        self.show_output = show_output
        # The secrets as they are now; the matcher is compiled for the first output, so a quiet run never does.
        self._secret_env = {name: environ[name] for name in SECRET_ENV_VARS if name in environ}
        self._redactor: Redactor | None = None
        self.prefixes: dict[str, bytes] = {}
        # Stage output goes out as the bytes it came in as where the console takes UTF-8 (nearly always);
        # anything else gets it decoded and re-encoded, unknown characters replaced.
        self.passthrough = output.writes_utf8(self.stream)
        self.running: dict[str, float] = {}  # stage name -> when it started (monotonic)
        self.live_line = output.is_terminal(self.stream)
        self.writer = output.LiveWriter(self.stream, status=self.still_running, live_line=self.live_line,
                                        every=progress_every(environ))

    @property
    def redactor(self) -> Redactor:
        if self._redactor is None:
            from cdkit.secrets import redactor

            self._redactor = redactor(self._secret_env)
        return self._redactor

    def stage_started(self, stage: Stage, started_at: float) -> None:
        self.running[stage.name] = time.monotonic()
        name = output.paint(stage.name.ljust(self.width), "cyan", enabled=self.color)
        self.writer.write(f"{mark('running', self.stream, self.color)} {name} started: {stage.run.splitlines()[0]}\n")

    def stage_output(self, stage: Stage, chunk: bytes) -> None:
        if not self.show_output:
            return
        data = self.redactor.redact_bytes(chunk)
        if not self.passthrough:
            data = data.decode("utf-8", "replace").encode(self.writer.encoding, "replace")
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        prefix = self.prefixes.get(stage.name) or self._prefix(stage.name)
        body = data[:-1] if data.endswith(b"\n") else data
        self.writer.write(prefix + body.replace(b"\n", b"\n" + prefix) + b"\n", droppable=True)

    def _prefix(self, name: str) -> bytes:
        if _unicode_ok(self.stream):
            prefix = output.paint(f"{name.ljust(self.width)} │", "dim", enabled=self.color) + " "
        else:
            prefix = f"{name.ljust(self.width)} | "
        self.prefixes[name] = prefix.encode(self.writer.encoding, "replace")
        return self.prefixes[name]

    def stage_finished(self, stage: Stage, result: StageResult) -> None:
        self.running.pop(stage.name, None)
        if result.status == SKIPPED and result.started_at is None and result.reason != SKIPPED_BY_USER \
                and not result.reason.startswith("needs"):
            return  # planned out (trigger, paths): the summary lists it; no noise while running
        self.writer.write(self.result_line(result) + "\n")

    def waiting(self) -> float | None:
        return None  # holds nothing back

    def run_finished(self) -> None:
        self.writer.close()  # everything written, the live line erased: the summary can follow

    def still_running(self) -> str | None:
        """`running: test 1m02s, lint 3s` (None when nothing runs); called from the writer's thread."""
        now = time.monotonic()
        try:
            running = sorted(self.running.items(), key=lambda item: item[1])
        except RuntimeError:  # changed while read: the next tick shows it
            return None
        if not running:
            return None
        stages = ", ".join(f"{name} {_elapsed(now - since)}" for name, since in running)
        if not self.live_line:
            return f"cdkit: still running: {stages}"
        text = f"{mark('running', self.stream, False)} running: {stages}"
        width = _columns(self.stream) - 1  # never wider than the terminal: a wrapped line cannot be redrawn
        return text if len(text) <= width else text[:max(0, width - 3)] + "..."

    def result_line(self, result: StageResult) -> str:
        name = result.stage.ljust(self.width)
        return f"{mark(result.status, self.stream, self.color)} {name} {result_detail(result)}"


def _columns(stream: IO[str]) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    if columns:
        return columns
    import shutil  # the fallback only (COLUMNS, or 80): shutil costs every push its bz2 and lzma imports

    return shutil.get_terminal_size((80, 24)).columns  # 0: a terminal that never said its size


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def result_detail(result: StageResult) -> str:
    """`failed in 1.20s: exit code 3`: a stage's outcome in words."""
    detail = result.status
    if result.duration is not None:
        detail += f" in {format_duration(result.duration)}"
    if result.reason and result.status != PASSED:
        detail += f": {result.reason}"
    return detail


# --- a run in one line -----------------------------------------------------------------------------


def skip_cause(reason: str) -> str:
    """Why a stage was skipped, in the words a summary groups it by (`paths did not match`)."""
    if reason.startswith(PATHS_SKIP_PREFIX):
        return PATHS_SKIP_PREFIX
    if reason == SKIPPED_BY_USER:
        return "CDKIT_SKIP"
    if reason.startswith("not selected"):
        return "not selected (--stage)"
    if reason.startswith("not on "):
        return reason.split(" (", 1)[0]  # `not on pre-push`
    if reason.startswith("needs "):
        return "a stage they need did not pass"
    return reason


def counts_text(results: Sequence[StageResult]) -> str:
    """`2 passed, 5 skipped: paths did not match`, or with several causes `5 skipped: 3 paths did not match, 2 CDKIT_SKIP`."""
    counts: dict[str, int] = {}
    causes: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
        if result.status == SKIPPED:
            cause = skip_cause(result.reason)
            causes[cause] = causes.get(cause, 0) + 1
    parts = []
    order = {status: n for n, status in enumerate((PASSED, FAILED, TIMED_OUT, CANCELLED, SKIPPED))}
    for status, n in sorted(counts.items(), key=lambda item: order.get(item[0], len(order))):
        text = f"{n} {status.replace('_', ' ')}"
        if status == SKIPPED:
            text += ": " + (next(iter(causes)) if len(causes) == 1 else
                            ", ".join(f"{count} {cause}" for cause, count in causes.items()))
        parts.append(text)
    return ", ".join(parts) or "no stages"


def not_countable(results: Sequence[StageResult], *, dirty: bool) -> list[str]:
    """Why this run cannot count for a release as a complete pipeline run (nothing: it can)."""
    why = []
    if dirty:
        why.append("uncommitted changes (the results are the work tree's, not the commit's)")
    user_skipped = [r.stage for r in results if r.status == SKIPPED and r.reason == SKIPPED_BY_USER]
    if user_skipped:
        why.append(f"CDKIT_SKIP skipped {', '.join(user_skipped)}")
    unselected = [r.stage for r in results if r.status == SKIPPED and r.reason.startswith(NOT_JUDGED_PREFIXES[0])]
    if unselected:
        why.append(f"--stage left out {', '.join(unselected)}")
    return why


def run_headline(run_id: int, status: str, sha: str, results: Sequence[StageResult], *, dirty: bool) -> str:
    """`run #4 passed on 1a2b3c4d5e6f`, and when it cannot count, why, on the same line."""
    line = f"run #{run_id} {status} on {sha[:12]}"
    why = not_countable(results, dirty=dirty)
    return f"{line} (does not count for a release: {'; '.join(why)})" if why else line


def print_summary(results: Sequence[StageResult], *, headline: str, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stdout
    color = output.use_color(stream)
    width = max((len(r.stage) for r in results), default=4)
    output.write_line(stream=stream)
    output.write_line(output.paint(headline, "bold", enabled=color), stream=stream)
    for r in results:
        duration = format_duration(r.duration)
        reason = r.reason if r.status != PASSED else ""
        line = f"  {mark(r.status, stream, color)} {r.stage.ljust(width)}  {r.status:<9} {duration:>8}  {reason}"
        output.write_line(line.rstrip(), stream=stream)
        if r.status in (FAILED, TIMED_OUT) and r.log_path:
            output.write_line(f"      log: {display_path(r.log_path)}", stream=stream)
