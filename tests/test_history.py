"""`cdkit history` and `cdkit metrics` on a real repository and ledger (issue 13 §1, §2).

The metrics are compared with the values computed by hand in tests/history_world.py;
the clock they read is injected in this process (no option or variable moves it).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdkit.commands.history import history
from cdkit.commands.metrics import metrics
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
