"""Every GitHub Actions workflow command cdkit issues, in one module.

Mirrors @actions/core (`command.ts`, `file-command.ts`): outputs and the job
summary go to the files the runner names (`$GITHUB_OUTPUT`, `$GITHUB_STEP_SUMMARY`),
everything else is a `::command::` line on stdout. Outside Actions
(`GITHUB_ACTIONS` is not "true") every function here does nothing, so the same
code path serves a laptop and a runner.

Untrusted text (branch names, commit messages, stage output) never reaches the
log where the runner would parse it as a command: it is printed between
`::stop-commands::<random>` and `::<random>::`, and properties and messages are
escaped the way the runner unescapes them.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cdkit.config import Stage
from cdkit.report.console import result_detail
from cdkit.runner import CANCELLED, FAILED, PASSED, SKIPPED, TIMED_OUT, StageResult

# GitHub refuses a step summary over 1 MiB; keep well below so a later append still fits.
SUMMARY_LIMIT = 512 * 1024
# One stage's log shown in its group is cut here; the full log stays in the ledger's log dir.
GROUP_LOG_LIMIT = 4 * 1024 * 1024


def in_actions(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    """A command's message: the runner unescapes %25, %0D and %0A (`command.ts::escapeData`)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A command's property value: additionally `:` and `,`, which end a value (`escapeProperty`)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_command(command: str, message: str = "", properties: Mapping[str, str | int | None] | None = None) -> str:
    props = ",".join(
        f"{key}={escape_property(str(value))}" for key, value in (properties or {}).items() if value is not None
    )
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def new_token() -> str:
    """A fresh random token: unguessable by text written before it was printed."""
    return secrets.token_hex(16)


# CommonMark lets any ASCII punctuation be backslash-escaped; escaping all of it leaves no
# HTML tag, entity, link, emphasis, table pipe or @mention for untrusted text to form.
_MD_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def md_escape(text: str, *, limit: int = 500) -> str:
    """Untrusted text as inert Markdown for one table cell or line: no HTML, links, mentions or layout."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = " ".join(text.split())  # newlines and tabs would end a table row
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(text: str, *, limit: int = 200) -> str:
    """Untrusted text as inline code: the only special character left is the backtick."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = " ".join(text.split()).replace("`", "ˋ").replace("|", "¦")
    return f"`{text}`" if text else ""


@dataclass
class Actions:
    """Workflow commands for one process: where commands go, and what the runner environment says.

    A class because it owns the stdout stream and the files the runner reads back.
    """

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    stream: IO[str] | None = None

    @property
    def active(self) -> bool:
        return in_actions(self.environ)

    def _out(self) -> IO[str]:
        return self.stream or sys.stdout

    def _emit(self, line: str) -> None:
        if not self.active:
            return
        out = self._out()
        out.write(line + "\n")
        out.flush()

    # --- commands -----------------------------------------------------------------------------

    def add_mask(self, value: str | None) -> None:
        """Tell the runner to hide `value` in the log from now on; call before anything could print it."""
        if not value or not value.strip():
            return
        # The runner masks line by line, so a multi-line secret is masked per line too.
        for part in {value, *(line for line in value.splitlines() if len(line.strip()) >= 4)}:
            self._emit(format_command("add-mask", part))

    def annotate(self, level: str, message: str, *, title: str | None = None, file: str | None = None,
                 line: int | None = None, col: int | None = None) -> None:
        """An error/warning/notice annotation; every part is escaped, so it is one command whatever it holds."""
        if level not in ("error", "warning", "notice"):
            raise ValueError(f"unknown annotation level {level!r}")
        self._emit(format_command(level, message, {"title": title, "file": file, "line": line, "col": col}))

    def start_group(self, title: str) -> None:
        self._emit(format_command("group", title))

    def end_group(self) -> None:
        self._emit("::endgroup::")

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        self.start_group(title)
        try:
            yield
        finally:
            self.end_group()

    @contextlib.contextmanager
    def stop_commands(self) -> Iterator[None]:
        """While open, the runner treats every line as plain text, so untrusted output cannot issue commands."""
        token = new_token()
        self._emit(f"::stop-commands::{token}")
        try:
            yield
        finally:
            self._emit(f"::{token}::")

    def print_untrusted(self, text: str) -> None:
        """Print text that may contain `::command::` lines; outside Actions it is printed as is."""
        out = self._out()
        if not self.active:
            out.write(text if text.endswith("\n") or not text else text + "\n")
            out.flush()
            return
        with self.stop_commands():
            out.write(text if text.endswith("\n") or not text else text + "\n")
            out.flush()

    # --- files --------------------------------------------------------------------------------

    def set_output(self, name: str, value: str) -> None:
        """Append `name` to `$GITHUB_OUTPUT` as a heredoc with a random delimiter no value can contain."""
        self._write_heredoc("GITHUB_OUTPUT", name, value)

    def set_outputs(self, values: Mapping[str, str]) -> None:
        for name, value in values.items():
            self.set_output(name, value)

    def _write_heredoc(self, file_var: str, name: str, value: str) -> None:
        if not self.active:
            return
        path = self.environ.get(file_var)
        if not path:
            self.annotate("warning", f"${file_var} is not set; cdkit could not record {name!r}")
            return
        delimiter = f"ghadelimiter_{new_token()}"
        if delimiter in name or delimiter in value or "\n" in name or "\r" in name:
            # As @actions/core does: never write a record the runner could split differently.
            raise ValueError(f"unexpected delimiter or newline in output {name!r}")
        with open(path, "a", encoding="utf-8", newline="\n") as f:
            f.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")

    def append_summary(self, markdown: str) -> None:
        """Add Markdown to the job summary (the caller escapes untrusted text with md_escape/md_code)."""
        if not self.active:
            return
        path = self.environ.get("GITHUB_STEP_SUMMARY")
        if not path:
            return
        data = markdown.encode("utf-8")
        if len(data) > SUMMARY_LIMIT:
            data = data[:SUMMARY_LIMIT].decode("utf-8", "ignore").encode("utf-8") + b"\n\n(summary cut: too long)\n"
        with open(path, "ab") as f:
            f.write(data if data.endswith(b"\n") else data + b"\n")


# --- the Actions reporter -------------------------------------------------------------------------

_LEVEL_FOR = {FAILED: "error", TIMED_OUT: "error", CANCELLED: "warning"}


class ActionsReporter:
    """One log group per stage and an error annotation per failed stage (a `cdkit.runner.Reporter`).

    Groups cannot nest or interleave, so the first stage to start while no group is
    open streams live; a stage running beside it is printed from its log file once it
    ends and the live group has closed. Stage output is always inside stop-commands.
    """

    def __init__(self, actions: Actions, *, log_limit: int = GROUP_LOG_LIMIT) -> None:
        self.actions = actions
        self.log_limit = log_limit
        self.live: str | None = None
        self._live_token: str | None = None
        self._waiting: list[tuple[Stage, StageResult]] = []

    def stage_started(self, stage: Stage, started_at: float) -> None:
        if self.live is None:
            self.live = stage.name
            self.actions.start_group(f"{stage.name}")
            self._live_token = new_token()
            self.actions._emit(f"::stop-commands::{self._live_token}")

    def stage_output(self, stage: Stage, chunk: bytes) -> None:
        if stage.name != self.live or not self.actions.active:
            return  # printed from its log file when it ends
        text = chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        out = self.actions._out()
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()

    def waiting(self) -> float | None:
        return None  # holds nothing back

    def run_finished(self) -> None:
        pass  # every stage's group is closed as it ends

    def stage_finished(self, stage: Stage, result: StageResult) -> None:
        if stage.name == self.live:
            self._close_live(stage, result)
            for waiting in self._waiting:
                self._print_finished(*waiting)
            self._waiting.clear()
        elif self.live is not None:
            self._waiting.append((stage, result))
        else:
            self._print_finished(stage, result)

    def _close_live(self, stage: Stage, result: StageResult) -> None:
        self.actions._emit(f"::{self._live_token}::")
        self.actions._emit(self._result_line(result))
        self.actions.end_group()
        self.live = self._live_token = None
        self._annotate(result)

    def _print_finished(self, stage: Stage, result: StageResult) -> None:
        if result.started_at is None:  # planned out or blocked: one line, no group
            self.actions._emit(self._result_line(result))
            return
        with self.actions.group(stage.name):
            if result.log_path and Path(result.log_path).is_file():
                self.actions.print_untrusted(_read_log(Path(result.log_path), self.log_limit))
            self.actions._emit(self._result_line(result))
        self._annotate(result)

    def _result_line(self, result: StageResult) -> str:
        # Reasons are cdkit's own words, but may quote a stage name: print them fenced anyway.
        return f"cdkit: {result.stage} {escape_data(result_detail(result))}"

    def _annotate(self, result: StageResult) -> None:
        level = _LEVEL_FOR.get(result.status)
        if level is None:
            return
        self.actions.annotate(level, f"stage {result.stage} {result.status}: {result.reason}",
                              title=f"cdkit: {result.stage} {result.status}")


def _read_log(path: Path, limit: int) -> str:
    size = path.stat().st_size
    with path.open("rb") as f:
        if size > limit:
            f.seek(size - limit)
            head = f"(first {size - limit} bytes cut; full log: {path})\n"
        else:
            head = ""
        return head + f.read().decode("utf-8", "replace")


STATUS_ICONS = {PASSED: "✅", FAILED: "❌", TIMED_OUT: "⏱️", SKIPPED: "⏭️", CANCELLED: "🚫"}


def summary_table(results: Sequence[StageResult], links: Mapping[str, str] | None = None) -> str:
    """The stage table of the job summary: result, duration and a link per stage."""
    links = links or {}
    rows = ["| Stage | Result | Duration | Details |", "|---|---|---|---|"]
    for r in results:
        icon = STATUS_ICONS.get(r.status, "")
        duration = f"{r.duration:.1f}s" if r.duration is not None else ""
        details = md_escape(r.reason) if r.reason and r.status != PASSED else ""
        link = links.get(r.stage)
        if link and _SAFE_URL.match(link):
            details = f"{details} [details]({link})".strip()
        rows.append(f"| {md_code(r.stage)} | {icon} {r.status} | {duration} | {details} |")
    return "\n".join(rows) + "\n"


_SAFE_URL = re.compile(r"^https?://[^\s()<>\[\]`|]+$")


def safe_url(url: str | None) -> str | None:
    """A URL fit for a Markdown link target (built from runner variables; checked anyway)."""
    return url if url and _SAFE_URL.match(url) else None
