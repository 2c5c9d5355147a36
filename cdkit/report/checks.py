"""Every stage as a commit check on GitHub: a check run, or a commit status when check runs are refused.

Requests per stage that runs: 2 (create the check run `in_progress`, then complete it; or the
`pending` status, then the final one), plus 1 PATCH per further 50 annotations. A stage
skipped by the plan (paths, CDKIT_SKIP) or by a failed need: 1 (a completed check run or a
final status). Stages outside this trigger (`on:`) or `--stage` are not reported: a result
that judged nothing must not replace one that did.

Each report is written to the ledger's outbox first, then sent (`cdkit.outbox`), so nothing
is lost when GitHub is down: after the first failure that would hit every request
(unreachable, rate limited beyond `--max-wait`, commit unknown to GitHub) the rest of the
run only writes, and `cdkit sync` or the next run delivers.
"""
from __future__ import annotations

import collections
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdkit.config import Stage
from cdkit.github import GitHubClient, actions_run_url, iso_time
from cdkit.ledger import Ledger
from cdkit.outbox import (
    CHECK_RUN_CREATE,
    CHECK_RUN_UPDATE,
    PENDING,
    STATUS,
    SUPERSEDED,
    DeliveryState,
    check_run_key,
    deliver_item,
    deliver_pending,
    status_key,
)
from cdkit.plan import NOT_JUDGED_PREFIXES, SKIPPED_BY_USER
from cdkit.report.excerpt import colon_digit_lines
from cdkit.runner import CANCELLED, FAILED, PASSED, SKIPPED, TIMED_OUT, StageResult
from cdkit.secrets import redact

SUMMARY_LIMIT = 65_535  # bytes, GitHub's limit for output.summary and output.text
DESCRIPTION_LIMIT = 140  # characters, GitHub's limit for a commit status description
ANNOTATIONS_PER_REQUEST = 50  # GitHub's limit per create/update request
MAX_ANNOTATIONS = 200  # per stage: each further 50 costs a request against the ~80 writes/minute limit
TAIL_LINES = 100
MAX_LINE_CHARS = 2_000

CONCLUSIONS = {PASSED: "success", FAILED: "failure", TIMED_OUT: "timed_out", CANCELLED: "cancelled",
               SKIPPED: "skipped"}
STATES = {PASSED: "success", SKIPPED: "success", FAILED: "failure", TIMED_OUT: "failure", CANCELLED: "error"}

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ANNOTATION_RE = re.compile(r"^(?P<path>[^\s:][^:]*?):(?P<line>\d+)(?::(?P<col>\d+))?:\s*(?P<message>\S.*)$")


# --- pure helpers ---------------------------------------------------------------------------------


def cut_utf8(text: str, limit: int, note: str = "") -> str:
    """`text` in at most `limit` UTF-8 bytes, cut at a character boundary, `note` appended when cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    room = max(0, limit - len(note.encode("utf-8")))
    return data[:room].decode("utf-8", "ignore") + note


def keep_tail_utf8(text: str, limit: int) -> tuple[str, int]:
    """The last `limit` UTF-8 bytes of `text`, starting at a character (and, if possible, a line); bytes cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, 0
    tail = data[len(data) - limit:].decode("utf-8", "ignore")
    newline = tail.find("\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1:]
    return tail, len(data) - len(tail.encode("utf-8"))


def shorten(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


def describe(result: StageResult) -> str:
    """One line for a status description or a check-run title, at most 140 characters."""
    took = f" in {format_seconds(result.duration)}" if result.duration is not None else ""
    if result.status == PASSED:
        text = f"passed{took}"
    elif result.status == SKIPPED:
        text = f"skipped: {result.reason}" if result.reason else "skipped"
    else:
        text = f"{result.status.replace('_', ' ')}{took}" + (f": {result.reason}" if result.reason else "")
    return shorten(text)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def summary_markdown(result: StageResult, tail: Sequence[str], *, notes: Sequence[str] = (),
                     limit: int = SUMMARY_LIMIT) -> str:
    """Duration, exit code, command and the last lines of the log, in at most `limit` bytes.

    When too long, the beginning of the log part goes (the end is what explains a failure),
    with a note saying how much was cut and where the full log is.
    """
    facts = [f"**{result.status.replace('_', ' ')}**"]
    if result.duration is not None:
        facts.append(f"duration {format_seconds(result.duration)}")
    if result.exit_code is not None:
        facts.append(f"exit code {result.exit_code}")
    head = " · ".join(facts)
    if result.reason and result.status != PASSED:
        head += f"\n\n{result.reason}"
    command = cut_utf8(result.command or "", 4_096, "\n… (command cut)")
    if command:
        fence = _fence(command)
        head += f"\n\nCommand:\n\n{fence}sh\n{command}\n{fence}"
    for note in notes:
        head += f"\n\n{note}"
    if not tail:
        return cut_utf8(head, limit, "\n… (cut to GitHub's 65,535-byte limit)")
    log = "\n".join(tail)
    fence = _fence(log)
    intro = f"\n\nLast {len(tail)} line(s) of the log:\n\n{fence}text\n"
    outro = f"\n{fence}"
    room = limit - len((head + intro + outro).encode("utf-8")) - 200  # 200: the cut note
    if room <= 0:
        return cut_utf8(head, limit, "\n… (cut to GitHub's 65,535-byte limit)")
    log, cut = keep_tail_utf8(log, room)
    if cut:
        where = f"; full log: {result.log_path}" if result.log_path else ""
        intro = (f"\n\nEnd of the log ({cut:,} bytes before it cut to fit GitHub's 65,535-byte limit{where}):"
                 f"\n\n{fence}text\n")
    return head + intro + log + outro


@dataclass(frozen=True)
class Annotation:
    path: str
    line: int
    column: int | None
    message: str
    level: str

    def as_json(self, title: str) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "start_line": self.line, "end_line": self.line,
                                "annotation_level": self.level, "message": self.message, "title": title}
        if self.column is not None:  # GitHub accepts columns only on a single line
            data["start_column"] = self.column
            data["end_column"] = self.column
        return data


def parse_annotation(text: str, *, workdir: Path | None = None) -> Annotation | None:
    """`path:line[:col]: message` -> an annotation (level guessed from the message), else None."""
    text = _ANSI_RE.sub("", text).strip()
    match = _ANNOTATION_RE.match(text)
    if not match:
        return None
    path = match.group("path").strip()
    if "://" in path or path.startswith(("http", "<", "[")) or int(match.group("line")) < 1:
        return None
    if os.path.isabs(path):
        if workdir is None:
            return None
        try:
            path = os.path.relpath(path, workdir)
        except ValueError:
            return None
        if path.startswith(".."):
            return None  # outside the repository: GitHub could not place it
    path = path.removeprefix("./")
    message = match.group("message")
    lowered = message.lower()
    if re.search(r"\bwarn(ing)?\b", lowered):
        level = "warning"
    elif re.search(r"\b(note|info)\b", lowered):
        level = "notice"
    else:
        level = "failure"
    column = int(match.group("col")) if match.group("col") else None
    return Annotation(path, int(match.group("line")), column or None, message[:4_000], level)


def batches(items: Sequence[Any], size: int = ANNOTATIONS_PER_REQUEST) -> list[list[Any]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)] or [[]]


# --- the reporter ------------------------------------------------------------------------------------


@dataclass
class _StageLog:
    tail: collections.deque[str]
    annotations: list[Annotation]
    dropped_annotations: int = 0


class ChecksReporter:
    """Meets `cdkit.runner.Reporter`: check runs (or statuses) for every stage, via the outbox."""

    def __init__(self, *, ledger: Ledger, client: GitHubClient, repo: str, sha: str, mode: str = "auto", environ: Mapping[str, str] | None = None, workdir: Path | None = None,
                 clock: Callable[[], float] = time.time, state: DeliveryState | None = None) -> None:
        self.ledger = ledger
        self.client = client
        self.repo = repo
        self.sha = sha
        # Reporters are built before the run is recorded, so outbox keys carry a key of their own,
        # unique across machines and CI re-runs (it is also the check runs' external_id).
        self.run_id = f"run-{uuid.uuid4().hex[:12]}"
        self.mode = mode
        self.environ = environ if environ is not None else os.environ
        self.workdir = workdir
        self.clock = clock
        self.state = state or DeliveryState()
        if mode == "statuses" or (mode == "auto" and client.token_kind == "personal"):
            self.state.statuses_only = True  # a personal token cannot create check runs: don't spend a request
        self.details_url = actions_run_url(self.environ)
        self.logs: dict[str, _StageLog] = {}
        self.started: dict[str, float] = {}  # stage name -> when it started
        self.keys: list[str] = []
        self.reported: set[str] = set()
        self.records: set[str] = set()  # outbox keys of records (a push's pusher), not stage results
        self._sender: _Sender | None = None

    # --- Reporter protocol -------------------------------------------------------------------------

    def stage_started(self, stage: Stage, started_at: float) -> None:
        self.started[stage.name] = started_at
        self.logs[stage.name] = _StageLog(collections.deque(maxlen=TAIL_LINES), [])
        if self.state.statuses_only:
            self._status(stage, "pending", f"running since {time.strftime('%H:%M:%S', time.gmtime(started_at))} UTC",
                         pending=True)
        # A check run is created once, when the stage ends, already completed (with its start time): one
        # request per stage instead of an `in_progress` create and a completing update (issue 12's budget).
        # The job's log shows a stage running; a gate only ever reads completed check runs.

    def stage_output(self, stage: Stage, chunk: bytes) -> None:
        log = self.logs.get(stage.name)
        if log is None:
            return
        text = chunk.decode("utf-8", "replace")
        last = text.removesuffix("\n").rsplit("\n", TAIL_LINES)  # the first item may hold many lines
        log.tail.extend(line.rstrip("\r")[:MAX_LINE_CHARS] for line in last[-TAIL_LINES:])
        for _, line in colon_digit_lines(text):  # only lines that can hold `path:line` are parsed
            annotation = parse_annotation(line, workdir=self.workdir)
            if annotation is None:
                continue
            if len(log.annotations) < MAX_ANNOTATIONS:
                log.annotations.append(annotation)
            else:
                log.dropped_annotations += 1

    def waiting(self) -> float | None:
        return None  # holds nothing back

    def run_finished(self) -> None:
        pass  # each stage's report is queued as it ends; `finish` delivers them

    def stage_finished(self, stage: Stage, result: StageResult) -> None:
        if stage.name not in self.started and result.status == SKIPPED and \
                (result.reason.startswith(NOT_JUDGED_PREFIXES) or result.reason == SKIPPED_BY_USER):
            return
        description = describe(result)
        create_key = check_run_key(self.repo, self.sha, stage.name, self.run_id)
        if self.state.statuses_only:
            self._status(stage, STATES[result.status], description, pending=False)
            return
        fallback = self._fallback(STATES[result.status], description)
        completion = self._completion(stage, result, description)
        # One request: the check run is created completed (with the first 50 annotations).
        body = {**self._check_body(stage, status="completed", started_at=self.started.get(stage.name)),
                **completion[0]}
        self._queue(create_key, CHECK_RUN_CREATE, self._payload(stage, body=body, fallback=fallback))
        total = 0
        for n, body in enumerate(completion):
            total += len((body.get("output") or {}).get("annotations") or [])
            if n == 0:
                continue
            suffix = f":annotations:{n}"
            self._queue(create_key + suffix, CHECK_RUN_UPDATE, self._payload(
                stage, body=body, fallback=None, create_key=create_key,
                annotations_total=total))

    def record_push(self, *, before: str, sender_id: int, sender_login: str) -> None:
        """Record who pushed this SHA directly (a push event's `sender`), for the release gate's excluded people.

        A completed, neutral check run `cdkit push` whose `external_id` names the pusher
        (`cdkit.people.push_record_id`); the gate counts it only from the trusted app in a
        push workflow run of this repository for this SHA. Not a stage result: it is left
        out of the counts. No record with a token that cannot create check runs: the
        commits it covers then count as unidentified at the gate (fail closed).
        """
        from cdkit.people import PUSH_RECORD_NAME, push_record_id

        if self.state.statuses_only:
            return
        body: dict[str, Any] = {
            "name": PUSH_RECORD_NAME, "head_sha": self.sha, "status": "completed", "conclusion": "neutral",
            "external_id": push_record_id(before=before, sender_id=sender_id, sender_login=sender_login),
            "output": {"title": f"pushed by {sender_login}",
                       "summary": f"{sender_login} pushed {before[:12]}..{self.sha[:12]} to the release branch; "
                                  "cdkit's release gate does not count their approval of these commits."}}
        if self.details_url:
            body["details_url"] = self.details_url
        key = f"push_record:{self.repo}:{self.sha}:{self.run_id}"
        self.records.add(key)
        self._queue(key, CHECK_RUN_CREATE, {"repo": self.repo, "sha": self.sha, "stage": PUSH_RECORD_NAME,
                                            "run_id": self.run_id, "body": body, "fallback": None})

    # --- building reports ----------------------------------------------------------------------------

    def _secret_free(self, text: str) -> str:
        return redact(text, self.environ, extra=[self.client.token])

    def _check_body(self, stage: Stage, *, status: str, started_at: float | None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": f"cdkit/{stage.name}", "head_sha": self.sha, "status": status,
                                "external_id": f"cdkit:{self.run_id}:{stage.name}"}
        if started_at is not None:
            body["started_at"] = iso_time(started_at)
        if self.details_url:
            body["details_url"] = self.details_url
        return body

    def _completion(self, stage: Stage, result: StageResult, description: str) -> list[dict[str, Any]]:
        """The completing PATCH (with the first 50 annotations), then one PATCH per further 50."""
        log = self.logs.get(stage.name) or _StageLog(collections.deque(), [])
        notes = []
        if log.annotations:
            notes.append(f"{len(log.annotations)} annotation(s) from `path:line: message` lines in the output.")
        if log.dropped_annotations:
            notes.append(f"{log.dropped_annotations} more annotation(s) not sent (at most {MAX_ANNOTATIONS}).")
        tail = [self._secret_free(line) for line in log.tail]
        summary = summary_markdown(result, tail, notes=notes)
        title = shorten(description, 255)
        annotations = [a.as_json(f"cdkit/{stage.name}") for a in log.annotations]
        for a in annotations:
            a["message"] = self._secret_free(a["message"])
        bodies = []
        for n, batch in enumerate(batches(annotations)):
            output: dict[str, Any] = {"title": title, "summary": summary}
            if batch:
                output["annotations"] = batch
            body: dict[str, Any] = {"output": output}
            if n == 0:
                body.update(status="completed", conclusion=CONCLUSIONS[result.status],
                            completed_at=iso_time(result.finished_at or self.clock()))
            bodies.append(body)
        return bodies

    def _fallback(self, state: str, description: str) -> dict[str, Any] | None:
        if self.mode != "auto":
            return None  # `report: checks` means check runs or nothing: a refusal is an error
        return {"state": state, "description": shorten(description), "target_url": self.details_url}

    def _payload(self, stage: Stage, **extra: Any) -> dict[str, Any]:
        return {"repo": self.repo, "sha": self.sha, "stage": stage.name, "run_id": self.run_id, **extra}

    def _status(self, stage: Stage, state: str, description: str, *, pending: bool) -> None:
        payload = {**self._payload(stage), "state": state, "context": f"cdkit/{stage.name}",
                   "description": shorten(self._secret_free(description)), "target_url": self.details_url}
        if pending:
            payload["phase"] = "pending"
        self._queue(status_key(self.repo, self.sha, stage.name, self.run_id, pending=pending), STATUS, payload)

    # --- outbox first, then send -----------------------------------------------------------------------

    def _queue(self, key: str, kind: str, payload: dict[str, Any]) -> None:
        self.ledger.enqueue(key, kind, payload)
        self.keys.append(key)
        self.reported.add(str(payload["stage"]))
        if self.sending:
            if self._sender is None:
                self._sender = _Sender(self.ledger, self.client, self.state)
                self._sender.start()
            self._sender.keys.put(key)

    def flush(self) -> None:
        """Wait until every report queued so far has been sent (or deferred to the outbox)."""
        if self._sender is not None:
            sender, self._sender = self._sender, None
            sender.stop()

    @property
    def sending(self) -> bool:
        """False once GitHub failed in a way that every further request would repeat."""
        return self.state.stopped is None and self.sha not in self.state.unknown_shas

    def counts(self) -> dict[str, int]:
        """How this run's reports stand: delivered / pending / failed (a check run sent as a status counts once)."""
        counts: dict[str, int] = {}
        for key in self.keys:
            item = None if key in self.records else self.ledger.outbox_item(key)
            if item is None or item.state == SUPERSEDED:
                continue
            counts[item.state] = counts.get(item.state, 0) + 1
        for stage in self.reported:  # statuses that replaced check runs (report: auto)
            for pending in (True, False):
                key = status_key(self.repo, self.sha, stage, self.run_id, pending=pending)
                item = None if key in self.keys else self.ledger.outbox_item(key)
                if item is not None and item.state != SUPERSEDED:
                    counts[item.state] = counts.get(item.state, 0) + 1
        return counts



    def finish(self) -> ReportSummary:
        """After the run: deliver what earlier runs and the hook left (unless GitHub failed), and sum up."""
        self.flush()
        if self.sending:
            deliver_pending(self.ledger, self.client, self.state)
        counts = self.counts()
        stopped = self.state.stopped
        reason = str(stopped) if stopped is not None else next(iter(self.state.errors), None)
        return ReportSummary(
            repo=self.repo, mode="statuses" if self.state.statuses_only else "checks",
            delivered=counts.get("delivered", 0), pending=counts.get("pending", 0), failed=counts.get("failed", 0),
            requests=self.client.stats.requests, slept=round(self.client.stats.slept, 3), reason=reason,
            notes=tuple(self.state.notes))


class _Sender(threading.Thread):
    """Sends queued outbox items in order, on its own ledger connection.

    The runner calls reporters on its one scheduling thread; a request there (or a
    rate-limit wait of up to --max-wait) would start stages late and fire their
    timeouts late. The outbox already holds every report, so sending can lag behind.
    """

    def __init__(self, ledger: Ledger, client: GitHubClient, state: DeliveryState) -> None:
        super().__init__(name="cdkit-github-sender", daemon=True)
        self.ledger_path = ledger.path
        self.clock = ledger.clock
        self.client = client
        self.state = state
        self.keys: queue.Queue[str | None] = queue.Queue()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Ledger(self.ledger_path, clock=self.clock) as ledger:
                while (key := self.keys.get()) is not None:
                    self._deliver(ledger, key)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by stop()
            self.error = exc

    def _deliver(self, ledger: Ledger, key: str) -> None:
        if self.state.stopped is not None:
            return  # GitHub failed in a way every request would repeat: the outbox keeps the rest
        item = ledger.outbox_item(key)
        if item is not None and item.state == PENDING and item.payload.get("sha") not in self.state.unknown_shas:
            deliver_item(ledger, self.client, item, self.state)

    def stop(self) -> None:
        self.keys.put(None)
        self.join()
        if self.error is not None:
            raise self.error


@dataclass(frozen=True)
class ReportSummary:
    repo: str
    mode: str  # checks | statuses
    delivered: int
    pending: int
    failed: int
    requests: int
    slept: float
    reason: str | None
    notes: tuple[str, ...]

    def as_data(self) -> dict[str, Any]:
        return {"repo": self.repo, "mode": self.mode, "delivered": self.delivered, "pending": self.pending,
                "failed": self.failed, "requests": self.requests, "slept": self.slept, "reason": self.reason}

    def lines(self) -> list[str]:
        """What to tell the user after the run."""
        out = [f"cdkit: {note}" for note in self.notes]
        kind = "commit statuses" if self.mode == "statuses" else "check runs"
        if self.delivered:
            out.append(f"cdkit: reported {self.delivered} result(s) to {self.repo} as {kind}")
        if self.pending:
            why = f" ({self.reason})" if self.reason else ""
            out.append(f"cdkit: {self.pending} report(s) wait in the outbox{why}; deliver them with `cdkit sync`")
        if self.failed:
            why = f": {self.reason}" if self.reason else ""
            out.append(f"cdkit: {self.failed} report(s) refused by GitHub{why}")
        return out


REPORT_MODES = ("auto", "checks", "statuses", "none")


def make_reporter(*, ledger: Ledger, sha: str, report: str, token: str | None, environ: Mapping[str, str],
                  cwd: str | os.PathLike[str] | None = None, max_wait: float | None = None,
                  remote: str = "origin") -> tuple[ChecksReporter | None, str | None]:
    """The GitHub reporter for a run, or (None, why not) -- `why` is None when nothing was asked for.

    Used by `cdkit run` and the Action. `report` is the resolved mode (--report, else `report:`).
    """
    if report == "none":
        return None, None
    from cdkit.github import resolve_repository

    client = GitHubClient.from_environment(environ, token=token, max_wait=max_wait)
    repo = resolve_repository(environ, cwd=cwd, remote=remote)
    if client is None or repo is None:
        missing = "no token (set GITHUB_TOKEN or GH_TOKEN)" if client is None else \
            f"no GitHub repository (set GITHUB_REPOSITORY, or a GitHub URL for the {remote!r} remote)"
        # `auto` quietly means "when GitHub is configured"; an explicit mode deserves a reason.
        return None, (f"not reporting to GitHub: {missing}" if report != "auto" else None)
    client.github  # noqa: B018 - import PyGithub now, not inside the first stage's timing
    return ChecksReporter(ledger=ledger, client=client, repo=repo, sha=sha, mode=report, environ=environ), None
