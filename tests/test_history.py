"""`cdkit history` and `cdkit metrics` on a real repository and ledger (issue 13 §1, §2).

The metrics are compared with the values computed by hand in tests/history_world.py;
the clock they read is injected in this process (no option or variable moves it).
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from statistics import median

import pytest

from cdkit.commands.history import history
from cdkit.commands.metrics import metrics
from cdkit.commands.report import report
from tests.browser import open_page, screenshot
from tests.history_world import EXPECTED, NOW, T0, World, build


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build(tmp_path_factory.mktemp("history"))


def run_json(command: object, world: World, capsys: pytest.CaptureFixture[str], **options: object) -> dict:
    assert callable(command)
    code = command(config=None, source="ledger", token=None, as_json=True, environ=world.env,
                   clock=lambda: NOW, cwd=world.repo, **{"environment": None, "since": None, **options})
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_metrics_match_the_hand_computed_fixture(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(metrics, world, capsys, since="2026-03-02T00:00:00Z")
    assert data["schema_version"] == 1
    assert (data["since"], data["until"]) == ("2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z")
    prod = data["environments"]["prod"]
    for key, expected in EXPECTED.items():
        assert {k: prod[key][k] for k in expected} == expected, key
    d = world.deployments
    assert prod["change_failure_rate"]["failures"] == [
        {"deployment": f"ledger:{d[2]}", "sha": world.shas["c3"], "reason": "failed"},
        {"deployment": f"ledger:{d[3]}", "sha": world.shas["c3"], "reason": f"fixed by ledger:{d[4]}"},
        {"deployment": f"ledger:{d[5]}", "sha": world.shas["c5"], "reason": f"rolled back by ledger:{d[6]}"},
    ]
    assert prod["time_to_restore"]["not_restored"] == []


def test_the_window_moves_with_the_injected_clock(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    # 90 days before T0 + 3d 1h: D1..D6 started, D7 (the rollback) not yet.
    code = metrics(config=None, environment="prod", since="90d", source="ledger", token=None, as_json=True,
                   environ=world.env, clock=lambda: T0 + 3 * 86400 + 3600, cwd=world.repo)
    assert code == 0
    prod = json.loads(capsys.readouterr().out)["environments"]["prod"]
    assert prod["deployment_frequency"]["deployments"] == 5
    assert prod["change_failure_rate"]["failed"] == 2  # D6 is not rolled back yet
    assert prod["time_to_restore"]["not_restored"] == []


def test_history_json_lists_deployments_newest_first(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(history, world, capsys)
    rows = data["deployments"]
    assert [r["id"] for r in rows] == [f"ledger:{n}" for n in reversed(world.deployments)]
    newest, fix = rows[0], rows[2]
    assert (newest["sha"], newest["previous_sha"], newest["rollback"], newest["outcome"]) == \
        (world.shas["c4"], world.shas["c5"], True, "deployed")
    assert (fix["sha"], fix["previous_sha"], fix["commits"]) == (world.shas["c4"], world.shas["c3"], 1)
    assert (rows[4]["outcome"], rows[4]["commits"]) == ("failed", 1)
    assert rows[-1]["previous_sha"] is None
    assert newest["started_at"] == "2026-03-05T02:00:00Z" and newest["duration_seconds"] == 60.0
    assert newest["approvals"][0]["who"] == "Bob Reviewer <bob@example.com>"
    assert newest["approvals"][0]["via"] == "local"
    assert newest["deployed_by"] == "Ada Author <ada@example.com>"


def test_history_table_is_local_time_and_flags_rollbacks(world: World, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+5:30 all year
    time.tzset()
    try:
        assert history(config=None, environment="prod", since=None, source="ledger", token=None, as_json=False,
                       environ=world.env, clock=lambda: NOW, cwd=world.repo) == 0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["WHEN", "ENV", "RANGE", "OUTCOME", "APPROVED", "BY", "DEPLOYED", "BY", "TOOK", "FLAGS"]
    shas = world.shas
    assert lines[1].startswith("2026-03-05 07:30  prod  ")
    assert f"{shas['c5'][:8]}..{shas['c4'][:8]}" in lines[1] and lines[1].endswith("rollback")
    assert "Bob Reviewer <bob@example.com> (local)" in lines[1]
    assert f"{shas['c2'][:8]}..{shas['c3'][:8]} (1)" in lines[4] and "deployed" in lines[4]
    assert f"{shas['c2'][:8]}..{shas['c3'][:8]} (1)" in lines[5] and "failed" in lines[5]
    assert lines[7].split()[3:5] == [f"(first)..{shas['c0'][:8]}", "deployed"]
    assert lines[-1] == "7 deployment(s) from the ledger; times are local"


def test_metrics_of_an_unknown_environment_say_so(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert metrics(config=None, environment="nowhere", since=None, source="ledger", token=None, as_json=False,
                   environ=world.env, clock=lambda: NOW, cwd=world.repo) == 0
    assert capsys.readouterr().out == "no deployments in the ledger for nowhere\n"


# --- cdkit report in a real browser (issue 13 §3) ----------------------------------------------------------


def _figures(dom: str) -> list[tuple[dict[str, str], str]]:
    """Each chart figure of the rendered DOM: (its attributes, its inner HTML)."""
    found = []
    for match in re.finditer(r"<figure ([^>]*)>(.*?)</figure>", dom, re.S):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))
        found.append((attrs, match.group(2)))
    return found


def _bar_values(svg: str) -> list[float]:
    """The values pygal drew, as the rendered SVG says (one <desc class="value"> per bar or point)."""
    return [float(v) for v in re.findall(r'<desc class="value">([-\d.]+)</desc>', svg)]


def test_report_renders_in_chromium_and_its_charts_match_the_metrics(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    since = "2026-03-02T00:00:00Z"
    page = tmp_path / "report.html"
    assert report(config=None, environment=None, since=since, source="ledger", token=None, output_path=str(page),
                  environ=world.env, clock=lambda: NOW, cwd=world.repo) == 0
    capsys.readouterr()
    expected = run_json(metrics, world, capsys, since=since)
    text = page.read_text()
    # Self-contained: nothing is fetched from anywhere (the CSP would also block and report it).
    assert not re.search(r"""(?:src|href)\s*=|url\(|@import""", text)
    assert "default-src 'none'" in text

    dom, console = open_page(page, tmp_path / "profile")
    assert console == []
    assert 'data-charts-rendered="4"' in dom
    figures = _figures(dom)
    assert [(a["data-chart"], a["data-environment"], a["data-rendered"]) for a, _ in figures] == [
        ("deployments-per-week", "prod", "yes"), ("lead-time", "prod", "yes"),
        ("change-failure-rate", "prod", "yes"), ("time-to-restore", "prod", "yes")]
    embedded = json.loads(html.unescape(re.search(r'id="cdkit-metrics">(.*?)</script>', dom, re.S).group(1)))
    assert embedded == expected
    prod = expected["environments"]["prod"]
    per_week, lead, rate, restore = (_bar_values(inner) for _a, inner in figures)
    # Drawn bars: live (4) + live then failed (2) + failed to deploy (1) in the one week of the window.
    assert sum(per_week) == prod["deployment_frequency"]["deployments"] + 1 == 7
    assert sum(lead) == prod["lead_time_for_changes"]["changes"] == 5
    assert rate == [round(100 * prod["change_failure_rate"]["rate"], 1)]
    assert sorted(restore) == [1.5, 24.0]
    assert sorted(restore) == sorted(round(s / 3600, 2) for s in (86400, 5400))
    assert median([v * 3600 for v in restore]) == prod["time_to_restore"]["median_seconds"]
    # The table: every deployment, newest first, its time in the reader's local time.
    assert dom.count("<tr>") == 1 + len(world.deployments)
    assert 'title="2026-03-05T02:00:00Z"' in dom

    shot = screenshot(page, tmp_path / "profile-shot", tmp_path / "report.png")
    keep = os.environ.get("CDKIT_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")


def test_the_console_check_sees_a_page_error(tmp_path: Path) -> None:
    """The positive control for `console == []` above: a page that throws is noticed."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    _dom, console = open_page(page, tmp_path / "profile")
    assert len(console) == 1 and "Uncaught ReferenceError: undefinedFunction is not defined" in console[0]


def test_report_without_pygal_says_how_to_install_it(world: World, tmp_path: Path) -> None:
    blocked = "import sys; sys.modules['pygal'] = None; from cdkit.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", blocked, "report", "-o", str(tmp_path / "r.html")], cwd=world.repo,
                          env=world.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == ("cdkit: cdkit report draws its charts with pygal, which is not installed: "
                           "pip install 'cdkit[report]'\n")
    assert not (tmp_path / "r.html").exists()


def test_report_escapes_what_it_did_not_write(tmp_path: Path) -> None:
    """An environment or person named like markup stays text (the report is opened by other people)."""
    from cdkit.history.metrics import compute
    from cdkit.history.records import Deployment
    from cdkit.history.report import render

    evil = '<img src=x onerror="alert(1)"></script>'
    d = Deployment("ledger:1", 1, evil, "a" * 40, "success", "deployed", T0, T0 + 5, deployed_by=evil)
    results = compute([d], {}, since=T0, until=NOW)
    doc = {"source": "ledger", "since": "x", "until": "y", "generated_at": "z", "environments": {evil: {}}}
    row = {"environment": evil, "previous_sha": None, "sha": "a" * 40, "commits": None, "outcome": "deployed",
           "approvals": [], "approval_via": None, "deployed_by": evil, "duration_seconds": 5.0, "rollback": False,
           "forced": False, "break_glass": False, "started_at": "2026-03-02T00:00:00Z"}
    page = render(title=evil, metrics_doc=doc, results=results, history=[row])
    assert "<img" not in page and "</script>\"" not in page
    assert page.count("</script>") == 2  # the JSON data and the page's own script, nothing else ends one
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_a_deploy_forced_past_its_quarantine_is_flagged(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """D4 redeployed c3 with --force after D3 failed: the ledger says so only in its reason, and the history reads it."""
    rows = {r["id"]: r for r in run_json(history, world, capsys)["deployments"]}
    flagged = [key for key, r in rows.items() if r["forced"]]
    assert flagged == [f"ledger:{world.deployments[3]}"]  # and no other (the control)
    assert rows[flagged[0]]["notes"][0].startswith("forced past its quarantine by Ada Author")
    code = history(config=None, environment=None, since=None, source="ledger", token=None, as_json=False,
                   environ=world.env, clock=lambda: NOW, cwd=world.repo)
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "FORCED" in line] == [lines[4]]  # newest first: D4 is the fourth row
