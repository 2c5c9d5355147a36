"""The checks reporter and the outbox: sizes, annotations, fallback to statuses, exactly once.

GitHub is faked with `responses`; the ledger, stages and results are real.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from cdkit.config import Stage
from cdkit.github import GitHubClient, RetryPolicy
from cdkit.ledger import Ledger
from cdkit.outbox import DeliveryState, deliver_pending, status_key
from cdkit.report.checks import (
    ChecksReporter,
    cut_utf8,
    describe,
    parse_annotation,
    summary_markdown,
)
from cdkit.runner import FAILED, PASSED, SKIPPED, StageResult

API = "https://api.github.com:443"
REPO = "octo/app"
SHA = "b" * 40
APP_TOKEN = "ghs_" + "A" * 36
PAT = "ghp_" + "P" * 36
CHECK_RUNS = f"{API}/repos/{REPO}/check-runs"
STATUSES = f"{API}/repos/{REPO}/statuses/{SHA}"


def client(token: str = APP_TOKEN, environ: dict[str, str] | None = None) -> GitHubClient:
    return GitHubClient(token, policy=RetryPolicy(max_wait=30), environ=environ or {}, sleep=lambda s: None,
                        rng=lambda: 0.5)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite3")


def stage(name: str = "test", run: str = "pytest -q") -> Stage:
    return Stage(name=name, run=run)


def result(name: str = "test", status: str = PASSED, *, reason: str = "", code: int | None = 0) -> StageResult:
    return StageResult(name, status, reason, exit_code=code, started_at=1_700_000_000.0,
                       finished_at=1_700_000_002.5, log_path="/tmp/test.log", command="pytest -q")


def bodies(method: str) -> list[dict[str, Any]]:
    return [json.loads(c.request.body) for c in responses.calls if c.request.method == method]


def run_stage(reporter: ChecksReporter, st: Stage, res: StageResult, lines: list[str] = ()) -> None:  # type: ignore[assignment]
    reporter.stage_started(st, 1_700_000_000.0)
    for line in lines:
        reporter.stage_output(st, line.encode() + b"\n")
    reporter.stage_finished(st, res)
    reporter.flush()


# --- sizes ------------------------------------------------------------------------------------------------


def test_summary_is_cut_to_65535_bytes_on_a_utf8_boundary_keeping_the_end() -> None:
    tail = ["é" * 999 + f" line {i}" for i in range(100)]  # ~200 KB of two-byte characters
    text = summary_markdown(result(status=FAILED, code=1), tail)
    data = text.encode("utf-8")
    assert len(data) <= 65_535
    assert data.decode("utf-8") == text  # no broken character
    assert "line 99" in text and "line 0\n" not in text  # the end of the log is what explains a failure
    assert re.search(r"[\d,]+ bytes before it cut to fit GitHub's 65,535-byte limit; full log: /tmp/test.log", text)
    assert "exit code 1" in text and "pytest -q" in text


def test_cut_utf8_never_splits_a_character() -> None:
    text = "€" * 10  # 3 bytes each
    cut = cut_utf8(text, 8, "…")
    assert len(cut.encode()) <= 8 and cut == "€…"  # 5 bytes left for text: one whole €


def test_status_description_is_at_most_140_characters() -> None:
    text = describe(result(status=FAILED, reason="exit code 1: " + "x" * 300))
    assert len(text) == 140 and text.endswith("…")


def test_a_log_full_of_backticks_cannot_close_the_fence() -> None:
    text = summary_markdown(result(), ["```", "````` not closing"])
    assert "``````text" in text


# --- annotations -----------------------------------------------------------------------------------------


def test_annotations_are_parsed_from_path_line_col_message(tmp_path: Path) -> None:
    a = parse_annotation("src/app.py:12:5: E501 line too long")
    assert a is not None and (a.path, a.line, a.column, a.level) == ("src/app.py", 12, 5, "failure")
    b = parse_annotation("./lib/x.c:3: warning: unused variable")
    assert b is not None and (b.path, b.line, b.column, b.level) == ("lib/x.c", 3, None, "warning")
    c = parse_annotation(f"{tmp_path}/pkg/m.py:7: note: here", workdir=tmp_path)
    assert c is not None and (c.path, c.level) == ("pkg/m.py", "notice")
    assert parse_annotation("/elsewhere/m.py:7: x", workdir=tmp_path) is None
    assert parse_annotation("see https://example.com:443: down") is None
    assert parse_annotation("\x1b[31msrc/a.py:1:1: red\x1b[0m") is not None
    assert parse_annotation("just text") is None


@responses.activate
def test_more_than_50_annotations_go_in_batches_of_50(ledger: Ledger) -> None:
    responses.post(CHECK_RUNS, json={"id": 10}, status=201)
    responses.patch(f"{CHECK_RUNS}/10", json={"id": 10})
    reporter = ChecksReporter(ledger=ledger, client=client(), repo=REPO, sha=SHA, environ={})
    lines = [f"src/m{i}.py:{i + 1}: error E{i}" for i in range(120)]
    run_stage(reporter, stage(), result(status=FAILED, code=1), lines)
    create, = bodies("POST")
    patches = bodies("PATCH")
    assert [len(p["output"].get("annotations", [])) for p in [create, *patches]] == [50, 50, 20]
    assert create["conclusion"] == "failure" and create["status"] == "completed"
    assert all("conclusion" not in p for p in patches)
    assert len(responses.calls) == 3  # the completed create + 2 more batches


# --- requests per stage ------------------------------------------------------------------------------------


@responses.activate
def test_a_stage_is_one_request_a_check_run_created_completed(ledger: Ledger) -> None:
    responses.post(CHECK_RUNS, json={"id": 10}, status=201)
    environ = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": REPO, "GITHUB_RUN_ID": "9"}
    reporter = ChecksReporter(ledger=ledger, client=client(), repo=REPO, sha=SHA, environ=environ)
    run_stage(reporter, stage(), result(), ["collected 3 items", "3 passed"])
    create, = bodies("POST")
    assert create["status"] == "completed" and create["conclusion"] == "success"
    assert create["started_at"] == "2023-11-14T22:13:20Z"  # when the stage started, not when it was reported
    assert create["name"] == "cdkit/test" and create["head_sha"] == SHA
    assert create["details_url"] == "https://github.com/octo/app/actions/runs/9"
    assert "duration 2.5s" in create["output"]["summary"] and "3 passed" in create["output"]["summary"]
    assert len(responses.calls) == 1
    assert reporter.counts() == {"delivered": 1}


@responses.activate
def test_a_stage_skipped_by_the_plan_is_one_completed_check_run(ledger: Ledger) -> None:
    responses.post(CHECK_RUNS, json={"id": 11}, status=201)
    reporter = ChecksReporter(ledger=ledger, client=client(), repo=REPO, sha=SHA, environ={})
    reporter.stage_finished(stage("docs"), StageResult("docs", SKIPPED, "paths did not match any of 2 changed file(s) (docs/**)"))
    reporter.stage_finished(stage("fmt"), StageResult("fmt", SKIPPED, "skipped by CDKIT_SKIP"))  # not a pass: unreported
    reporter.stage_finished(stage("lint"), StageResult("lint", SKIPPED, "not on ci (runs on: pre-push)"))
    reporter.stage_finished(stage("e2e"), StageResult("e2e", SKIPPED, "not selected (--stage)"))
    reporter.flush()
    create, = bodies("POST")
    assert create["status"] == "completed" and create["conclusion"] == "skipped"
    assert create["name"] == "cdkit/docs"
    assert "paths did not match" in create["output"]["title"]


@responses.activate
def test_statuses_are_pending_then_final_with_a_short_description(ledger: Ledger) -> None:
    responses.post(STATUSES, json={"id": 1}, status=201)
    reporter = ChecksReporter(ledger=ledger, client=client(PAT), repo=REPO, sha=SHA, environ={})
    run_stage(reporter, stage(), result(status=FAILED, reason="exit code 2 " + "y" * 400, code=2))
    pending, final = bodies("POST")
    assert pending["state"] == "pending" and pending["context"] == "cdkit/test"
    assert final["state"] == "failure" and len(final["description"]) <= 140
    assert len(responses.calls) == 2


# --- check runs refused: fall back to statuses -------------------------------------------------------------------


@responses.activate
def test_auto_falls_back_to_statuses_on_resource_not_accessible_and_remembers(ledger: Ledger) -> None:
    responses.post(CHECK_RUNS, status=403, json={"message": "Resource not accessible by integration"})
    responses.post(STATUSES, json={"id": 1}, status=201)
    reporter = ChecksReporter(ledger=ledger, client=client("opaque-token-1234"), repo=REPO, sha=SHA, environ={})
    run_stage(reporter, stage("build"), result("build"))
    run_stage(reporter, stage("test"), result("test"))
    calls = [(c.request.method, c.request.url.rsplit("/", 1)[-1]) for c in responses.calls]
    # build's refused check run becomes its final status; test, after the switch, is pending then final.
    assert calls == [("POST", "check-runs"), ("POST", SHA), ("POST", SHA), ("POST", SHA)]
    assert [b["state"] for b in bodies("POST")[1:]] == ["success", "pending", "success"]
    assert [b["context"] for b in bodies("POST")[1:]] == ["cdkit/build", "cdkit/test", "cdkit/test"]
    summary = reporter.finish()
    assert summary.mode == "statuses" and summary.delivered == 3 and summary.failed == 0
    assert any("commit statuses instead" in n for n in summary.notes)


@responses.activate
def test_report_checks_does_not_fall_back_and_names_the_permission(ledger: Ledger) -> None:
    responses.post(CHECK_RUNS, status=403, json={"message": "Resource not accessible by integration"})
    reporter = ChecksReporter(ledger=ledger, client=client(), repo=REPO, sha=SHA, mode="checks", environ={})
    run_stage(reporter, stage(), result())
    assert len(responses.calls) == 1  # the one create, refused
    summary = reporter.finish()
    assert summary.failed == 1 and summary.delivered == 0
    assert "`checks: write`" in (summary.reason or "")


@responses.activate
def test_a_personal_token_goes_straight_to_statuses(ledger: Ledger) -> None:
    responses.post(STATUSES, json={"id": 1}, status=201)
    reporter = ChecksReporter(ledger=ledger, client=client(PAT), repo=REPO, sha=SHA, environ={})
    run_stage(reporter, stage(), result())
    assert len(responses.calls) == 2 and all("statuses" in c.request.url for c in responses.calls)


# --- GitHub down: the run goes on, the outbox keeps everything -----------------------------------------------------


@responses.activate
def test_unreachable_github_stops_sending_and_sync_delivers_each_once(ledger: Ledger) -> None:
    responses.post(CHECK_RUNS, body=requests.exceptions.ConnectionError("NewConnectionError: refused"))
    reporter = ChecksReporter(ledger=ledger, client=client(), repo=REPO, sha=SHA, environ={})
    run_stage(reporter, stage("a"), result("a"))
    run_stage(reporter, stage("b"), result("b"))
    assert len(responses.calls) == 4  # one create, tried 4 times; nothing else is sent
    summary = reporter.finish()
    assert summary.pending == 2 and summary.delivered == 0

    responses.reset()
    ids = iter(range(100, 200))
    responses.add_callback(responses.POST, CHECK_RUNS, callback=lambda r: (201, {}, json.dumps({"id": next(ids)})))
    responses.patch(re.compile(rf"{re.escape(CHECK_RUNS)}/\d+"), json={"id": 1})
    first = deliver_pending(ledger, client())
    assert (first.delivered, first.pending, first.failed) == (2, 0, 0)
    assert [c.request.method for c in responses.calls] == ["POST", "POST"]
    again = deliver_pending(ledger, client())
    assert again.delivered == 0 and len(responses.calls) == 2


@responses.activate
def test_a_crash_mid_send_is_resolved_by_lookup_not_by_a_second_create(ledger: Ledger) -> None:
    # What a crash leaves: the create was marked in doubt and never settled.
    reporter = ChecksReporter(ledger=ledger, client=client(), repo=REPO, sha=SHA, environ={})
    reporter.state.stopped = object()  # type: ignore[assignment]  # write only, like a run that lost GitHub
    run_stage(reporter, stage(), result())
    create = ledger.pending()[0]
    ledger.mark_sending(create.id)
    external_id = create.payload["body"]["external_id"]
    responses.get(f"{API}/repos/{REPO}/commits/{SHA}/check-runs",
                  json={"total_count": 1, "check_runs": [{"id": 77, "name": "cdkit/test", "external_id": external_id}]})
    summary = deliver_pending(ledger, client())
    assert summary.delivered == 1  # found by its external_id: created once, not twice
    assert [c.request.method for c in responses.calls] == ["GET"]


@responses.activate
def test_a_late_pending_status_never_hides_the_final_one(ledger: Ledger) -> None:
    for key, state, phase in ((status_key(REPO, SHA, "t", 1, pending=True), "pending", {"phase": "pending"}),
                              (status_key(REPO, SHA, "t", 1), "success", {})):
        ledger.enqueue(key, "status", {"repo": REPO, "sha": SHA, "state": state, "context": "cdkit/t",
                                       "description": state, "target_url": None, "stage": "t", "run_id": 1, **phase})
    responses.post(STATUSES, json={"id": 5}, status=201)
    final = ledger.outbox_item(status_key(REPO, SHA, "t", 1))
    assert final is not None
    ledger.mark_delivered(final.id)  # the final status got through first (the pending one was deferred)
    summary = deliver_pending(ledger, client(PAT), DeliveryState())
    assert (summary.delivered, summary.superseded) == (0, 1)
    assert bodies("POST") == []


@responses.activate
def test_pending_and_final_statuses_left_in_the_outbox_are_sent_in_order(ledger: Ledger) -> None:
    for key, state, phase in ((status_key(REPO, SHA, "t", 1, pending=True), "pending", {"phase": "pending"}),
                              (status_key(REPO, SHA, "t", 1), "success", {})):
        ledger.enqueue(key, "status", {"repo": REPO, "sha": SHA, "state": state, "context": "cdkit/t",
                                       "description": state, "target_url": None, "stage": "t", "run_id": 1, **phase})
    responses.post(STATUSES, json={"id": 5}, status=201)
    summary = deliver_pending(ledger, client(PAT), DeliveryState())
    assert summary.delivered == 2
    assert [b["state"] for b in bodies("POST")] == ["pending", "success"]


@responses.activate
def test_the_hooks_status_items_are_delivered_once(ledger: Ledger) -> None:
    key = f"status:{REPO}:{SHA}:cdkit/lint:3"
    payload = {"repo": REPO, "sha": SHA, "state": "success", "context": "cdkit/lint",
               "description": "passed before push", "target_url": None, "stage": "lint", "run_id": 3}
    ledger.enqueue(key, "status", payload)
    ledger.enqueue(key, "status", payload)  # a repeated enqueue is ignored
    responses.post(STATUSES, status=422, json={"message": f"No commit found for SHA: {SHA}"})
    early = deliver_pending(ledger, client(PAT))
    assert early.pending == 1 and early.delivered == 0
    responses.reset()
    responses.post(STATUSES, json={"id": 6}, status=201)
    later = deliver_pending(ledger, client(PAT))
    assert later.delivered == 1
    assert deliver_pending(ledger, client(PAT)).delivered == 0
    assert len(responses.calls) == 1


# --- no token in what GitHub shows -------------------------------------------------------------------------------------


@responses.activate
def test_the_token_never_reaches_check_output(ledger: Ledger) -> None:
    responses.post(CHECK_RUNS, json={"id": 10}, status=201)
    responses.patch(f"{CHECK_RUNS}/10", json={"id": 10})
    env = {"GITHUB_TOKEN": APP_TOKEN, "DEPLOY_KEY_HINT": "x"}
    reporter = ChecksReporter(ledger=ledger, client=client(environ=env), repo=REPO, sha=SHA, environ=env)
    run_stage(reporter, stage(), result(status=FAILED, code=1),
              [f"using token {APP_TOKEN}", f"src/a.py:1: leaked {APP_TOKEN}", "ghp_" + "Z" * 36])
    sent = json.dumps(bodies("POST") + bodies("PATCH"))
    assert APP_TOKEN not in sent and "ghp_" + "Z" * 36 not in sent
    assert "***" in sent
    stored = json.dumps([i.payload for i in ledger.pending()]) + json.dumps(
        [dict(r) for r in ledger.db.execute("SELECT payload FROM outbox")])
    assert APP_TOKEN not in stored


@responses.activate
def test_the_credential_actions_checkout_persists_never_reaches_check_output(ledger: Ledger) -> None:
    # actions/checkout stores `AUTHORIZATION: basic base64(x-access-token:TOKEN)` in the git config; a
    # stage that prints it (`git config --list`, a verbose fetch) must not publish it.
    import base64

    token = "ghs_" + "Q" * 36
    header = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    responses.post(CHECK_RUNS, json={"id": 10}, status=201)
    responses.patch(f"{CHECK_RUNS}/10", json={"id": 10})
    env = {"GITHUB_TOKEN": token}
    reporter = ChecksReporter(ledger=ledger, client=client(token, environ=env), repo=REPO, sha=SHA, environ=env)
    st = stage()
    reporter.stage_started(st, 1_700_000_000.0)
    chunk = (f"http.https://github.com/.extraheader=AUTHORIZATION: basic {header}\n"
             f"src/a.py:3: error: header is {header}\n"
             "plain line\n").encode()
    reporter.stage_output(st, chunk)  # one chunk of several lines, as the runner delivers them
    reporter.stage_finished(st, result(status=FAILED, code=1))
    reporter.run_finished()
    reporter.flush()
    sent = json.dumps(bodies("POST") + bodies("PATCH"))
    assert header not in sent and header[10:30] not in sent and token not in sent
    assert "AUTHORIZATION: ***" in sent and "plain line" in sent  # the rest of the log is still there
    assert "header is ***" in sent  # the annotation's message too
