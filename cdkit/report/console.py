"""Live stage output and the end-of-run summary on the terminal."""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import IO

from cdkit import output
from cdkit.plan import SKIPPED_BY_USER
from cdkit.secrets import redact
from cdkit.config import Stage
from cdkit.runner import CANCELLED, FAILED, PASSED, SKIPPED, TIMED_OUT, StageResult

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


class ConsoleReporter:
    """Prints each output line prefixed with its stage, and one line as each stage ends."""

    def __init__(self, stages: Sequence[Stage], *, stream: IO[str] | None = None, show_output: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.color = output.use_color(self.stream)
        self.width = max((len(s.name) for s in stages), default=4)
        self.show_output = show_output

    def stage_started(self, stage: Stage, started_at: float) -> None:
        name = output.paint(stage.name.ljust(self.width), "cyan", enabled=self.color)
        output.write_line(f"{mark('running', self.stream, self.color)} {name} started: {stage.run.splitlines()[0]}",
                          stream=self.stream)

    def stage_output(self, stage: Stage, line: bytes) -> None:
        if not self.show_output:
            return
        text = redact(line.decode("utf-8", "replace").rstrip("\r\n"), os.environ)
        prefix = output.paint(f"{stage.name.ljust(self.width)} │", "dim", enabled=self.color)
        if not _unicode_ok(self.stream):
            prefix = f"{stage.name.ljust(self.width)} |"
        output.write_line(f"{prefix} {text}", stream=self.stream)

    def stage_finished(self, stage: Stage, result: StageResult) -> None:
        if result.status == SKIPPED and result.started_at is None and result.reason != SKIPPED_BY_USER \
                and not result.reason.startswith("needs"):
            return  # planned out (trigger, paths): the summary lists it; no noise while running
        output.write_line(self.result_line(result), stream=self.stream)

    def result_line(self, result: StageResult) -> str:
        name = result.stage.ljust(self.width)
        return f"{mark(result.status, self.stream, self.color)} {name} {result_detail(result)}"


def result_detail(result: StageResult) -> str:
    """`failed in 1.20s: exit code 3`: a stage's outcome in words."""
    detail = result.status
    if result.duration is not None:
        detail += f" in {format_duration(result.duration)}"
    if result.reason and result.status != PASSED:
        detail += f": {result.reason}"
    return detail


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
