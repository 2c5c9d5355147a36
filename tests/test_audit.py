"""`cdkit audit`: one change record per deployment, as a table, CSV, JSON and HTML (issue 13 §4).

The deployment history is tests/history_world.py's (real `cdkit run`, `cdkit approve` and
deploys through `cdkit.release.deploy`); pull requests, the hook/CI split and the
author-exclusion attack use a second repository whose ledger is written through the real
Ledger API.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from cdkit.commands.audit import audit
from cdkit.ledger import Ledger
from tests.helpers import cdkit, commit, git
from tests.history_world import NOW, World, build
from tests.json_schemas import problems


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build(tmp_path_factory.mktemp("audit"))


def run_audit(repo: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], fmt: str = "json",
              **options: str | None) -> str:
    code = audit(config=None, fmt=fmt, output_path=None, environ=env, clock=lambda: NOW, cwd=repo,
                 **{"environment": None, "since": None, "until": None, **options})
    assert code == 0
    return capsys.readouterr().out


def test_json_has_one_record_per_deployment_with_every_audit_fact(world: World,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(run_audit(world.repo, world.env, capsys))
    assert (doc["schema_version"], doc["command"], doc["generated_at"]) == (1, "audit", "2026-03-09T00:00:00Z")
    assert problems(doc) == []
    assert doc["chain"]["intact"] and doc["chain"]["first_problem"] is None
    records = doc["deployments"]
    assert [r["id"] for r in records] == [f"ledger:{n}" for n in world.deployments]  # oldest first
    first, feature, forced, rolled_back, rollback = records[0], records[2], records[3], records[5], records[6]
    assert first["previous_sha"] is None and first["range"] == world.shas["c0"]
    assert (feature["range"], feature["commit_count"]) == (f"{world.shas['c2']}..{world.shas['c3']}", 1)
    assert feature["commits"][0]["subject"] == "feature" and feature["commits"][0]["author"] == \
        "Ada Author <ada@example.com>"
    assert (feature["outcome"], feature["verification"], feature["reason"]) == \
        ("failed", "not reached", "the deploy command exited with 1")
    assert [(s["name"], s["status"], s["where"]) for s in feature["stages"]] == \
        [("build", "passed", "local run"), ("test", "passed", "local run")]
    approval = feature["approval"]
    assert (approval["via"], approval["required"], approval["approved"]) == ("local", 1, True)
    assert [(a["who"], a["comment"]) for a in approval["approvals"]] == [("Bob Reviewer <bob@example.com>", "ok c3")]
    assert approval["author_exclusion"] == {"result": "passed", "conflicts": []}
    assert feature["deployed_by"] == "Ada Author <ada@example.com>"
    assert forced["forced"] == {"forced": True, "reason": "forced past its quarantine by Ada Author "
                                                          "<ada@example.com>: retried by hand after its deploy failed"}
    assert not feature["forced"]["forced"] and not forced["break_glass"]["break_glass"]
    assert rolled_back["rollback"]["rolled_back_by"] == rollback["id"]
    assert rollback["rollback"] == {"is_rollback": True, "automatic": False, "from": world.shas["c5"],
                                    "rolled_back_by": None}
    assert all(re.fullmatch(r"[0-9a-f]{64}", r["seal"]["hash"]) for r in records)
    for r in records:
        for key in ("started_at", "finished_at"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[key]), r[key]


def test_since_and_until_bound_the_window(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(run_audit(world.repo, world.env, capsys, since="2026-03-03T00:00:00Z",
                               until="2026-03-05T00:00:00Z"))
    assert [r["id"] for r in doc["deployments"]] == [f"ledger:{n}" for n in world.deployments[2:5]]
    assert (doc["since"], doc["until"]) == ("2026-03-03T00:00:00Z", "2026-03-05T00:00:00Z")
    assert json.loads(run_audit(world.repo, world.env, capsys, environment="staging"))["deployments"] == []


def test_a_window_that_ends_before_it_starts_is_a_usage_error(world: World) -> None:
    result = cdkit("audit", "--since", "2026-03-05", "--until", "2026-03-01", cwd=world.repo, env=world.env)
    assert result.returncode == 2
    assert "--until '2026-03-01' is not after --since '2026-03-05'" in result.stderr
    assert "Traceback" not in result.stderr
    bad = cdkit("audit", "--since", "last tuesday", cwd=world.repo, env=world.env)
    assert bad.returncode == 2 and "not a duration or a date" in bad.stderr


def test_csv_has_a_header_and_one_row_per_deployment(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(csv.DictReader(io.StringIO(run_audit(world.repo, world.env, capsys, fmt="csv"))))
    assert [r["id"] for r in rows] == [f"ledger:{n}" for n in world.deployments]
    forced = rows[3]
    assert (forced["forced"], forced["outcome"], forced["author_exclusion"]) == ("true", "deployed", "passed")
    assert forced["reason"].startswith("forced past its quarantine by Ada Author")
    assert forced["approved_by"] == "Bob Reviewer <bob@example.com> (local)"
    assert forced["stages"] == "build passed (local run, run 3); test passed (local run, run 3)"
    assert rows[6]["rollback"] == "true" and rows[5]["rolled_back_by"] == rows[6]["id"]


def test_html_is_one_self_contained_page(world: World, tmp_path: Path) -> None:
    result = cdkit("audit", "--format", "html", "-o", str(tmp_path / "audit.html"), cwd=world.repo, env=world.env)
    assert result.returncode == 0, result.stderr
    assert "7 change record(s); audit chain intact" in result.stdout
    page = (tmp_path / "audit.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from anywhere
    embedded = re.search(r'<script type="application/json" id="cdkit-audit">(.*?)</script>', page, re.S)
    assert embedded and len(json.loads(embedded.group(1))["deployments"]) == 7
    assert page.count("<tr>") == 1 + 7 and "Audit chain intact" in page


def test_the_table_is_the_default_and_shows_the_chain(world: World) -> None:
    result = cdkit("audit", cwd=world.repo, env=world.env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["WHEN", "ENV", "RANGE", "PRS"]
    assert "FORCED" in lines[4] and "rolled back by" in lines[6] and "rollback" in lines[7]
    assert lines[-1].startswith("7 change record(s) from the ledger; times are local; audit chain intact")
    as_json = cdkit("audit", "--json", cwd=world.repo, env=world.env)
    assert json.loads(as_json.stdout)["schema_version"] == 1


def test_a_tampered_ledger_shows_in_the_audit_itself(world: World, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(world.repo, copy)
    db = sqlite3.connect(copy / ".git" / "cdkit" / "ledger.sqlite3")
    with db:
        db.execute("UPDATE deployments SET status = 'success' WHERE id = ?", (world.deployments[2],))
    db.close()
    result = cdkit("audit", "--json", cwd=copy, env=world.env)
    assert result.returncode == 0
    chain = json.loads(result.stdout)["chain"]
    assert not chain["intact"] and chain["first_problem"]["record"] == f"deployment #{world.deployments[2]}"
    assert cdkit("audit", "verify", cwd=copy, env=world.env).returncode == 1


# --- pull requests, where the checks ran, and the author-exclusion check --------------------------------------


def _decision(who: str) -> dict[str, object]:
    return {"via": "review", "required": 1, "approved": True,
            "reasons": [f"{who}'s approval counts", "Mallory's approval does not count: Mallory opened the pull "
                                                    "request, so cannot approve it"],
            "counted": [{"who": who, "via": "review", "at": "2026-03-02T10:00:00Z", "comment": ""}]}


@pytest.fixture
def merged(repo: Path) -> tuple[Path, dict[str, str]]:
    """main with a merged pull request (#12), a squash-merged one (#13), and two deployments of it."""
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: test, run: 'true'}\n"
                                "environments:\n  - {name: prod, deploy: 'true'}\n"}, "init")
    shas = {"base": git(repo, "rev-parse", "HEAD")}
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, {"f.txt": "f"}, "feature work")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "feature", "-m", "Merge pull request #12 from ada/feature")
    commit(repo, {"g.txt": "g"}, "=HYPERLINK(\"http://evil\") tidy up (#13)")
    shas["head"] = git(repo, "rev-parse", "HEAD")
    shas["author"] = git(repo, "log", "-1", "--format=%an <%ae>")
    (repo / ".git" / "cdkit").mkdir()
    with Ledger(repo / ".git" / "cdkit" / "ledger.sqlite3") as ledger:
        for event, stage, status in (("pre-push", "lint", "passed"), ("push", "test", "passed")):
            run_id = ledger.start_run(trigger="ci" if event == "push" else "pre-push", event=event,
                                      sha=shas["head"], base_sha=None, ref="main")
            ledger.record_stage(run_id, stage, status=status)
            ledger.finish_run(run_id, status)
        for sha, who in ((shas["base"], "carol"), (shas["head"], shas["author"])):
            d = ledger.start_deployment(environment="prod", sha=sha, rollback=False, approval=_decision(who),
                                        deployed_by="@carol")
            ledger.finish_deployment(d, "verified", reason='=HYPERLINK("http://evil")' if who != "carol" else None)
    return repo, shas


def test_pull_requests_and_where_each_check_ran_come_from_git_and_the_ledger(
        merged: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    repo, shas = merged
    records = json.loads(run_audit(repo, {}, capsys))["deployments"]
    head = records[1]
    assert [(p["number"], p["how"]) for p in head["pull_requests"]] == [(12, "merge commit"), (13, "squash subject")]
    assert head["commit_count"] == 3 and head["verification"] == "passed"
    assert [(s["name"], s["where"]) for s in head["stages"]] == [("lint", "hook"), ("test", "CI (push)")]
    assert head["approval"]["not_counted"] == [
        "Mallory's approval does not count: Mallory opened the pull request, so cannot approve it"]


def test_an_approver_who_wrote_part_of_the_change_fails_the_author_exclusion_check(
        merged: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    repo, shas = merged
    records = json.loads(run_audit(repo, {}, capsys))["deployments"]
    # Control: carol wrote nothing (the first deployment's whole history is the tests' identity's).
    assert records[0]["approval"]["author_exclusion"] == {"result": "passed", "conflicts": []}
    # Attack: the approval counted for the second deployment is the author of its commits.
    author = shas["author"]
    assert "carol" not in author.casefold()
    assert records[1]["approval"]["author_exclusion"] == {"result": "failed", "conflicts": [author]}
    rows = list(csv.DictReader(io.StringIO(run_audit(repo, {}, capsys, fmt="csv"))))
    assert rows[1]["author_exclusion"] == "failed" and rows[1]["author_exclusion_conflicts"] == author


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_quoted(
        merged: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    repo, _ = merged
    rows = list(csv.DictReader(io.StringIO(run_audit(repo, {}, capsys, fmt="csv"))))
    assert rows[1]["reason"] == "'=HYPERLINK(\"http://evil\")" and rows[1]["deployed_by"] == "'@carol"
    assert rows[0]["reason"] == "" and rows[1]["pull_requests"] == "#12 #13"  # plain cells stay as they are
    page = run_audit(repo, {}, capsys, fmt="html")
    assert "=HYPERLINK(&quot;http://evil&quot;)" in page and 'href="http://evil"' not in page


def test_the_audit_schemas_reject_a_broken_shape(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The control for the schema checks above: a document missing what an auditor needs fails them."""
    doc = json.loads(run_audit(world.repo, world.env, capsys))
    del doc["deployments"][0]["approval"]["author_exclusion"]
    assert problems(doc)
    verified = json.loads(cdkit("audit", "verify", "--json", cwd=world.repo, env=world.env).stdout)
    assert verified["command"] == "audit verify" and problems(verified) == []
    assert problems({**verified, "head": "not a hash"})


def test_the_html_audit_renders_in_a_real_browser_without_a_console_message(world: World, tmp_path: Path) -> None:
    from tests.browser import open_page, screenshot

    page = tmp_path / "audit.html"
    assert cdkit("audit", "--format", "html", "-o", str(page), cwd=world.repo, env=world.env).returncode == 0
    dom, console = open_page(page, tmp_path / "profile")
    assert console == []  # a blocked fetch (the CSP) or a broken page would say so here
    assert dom.count("<tr>") == 1 + 7 and 'id="chain"' in dom and "Audit chain intact" in dom
    assert dom.count("FORCED") == 1 and "forced past its quarantine by Ada Author" in dom
    shot = screenshot(page, tmp_path / "profile-shot", tmp_path / "audit.png")
    keep = os.environ.get("CDKIT_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "audit.png")
