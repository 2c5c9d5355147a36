"""The window gate and break-glass (issue 10 §4): real repositories, the real CLI, the ledger's injected clock.

The clock is injected only here, in the test process (a Ledger's `clock`, the command functions'
`clock` parameter); no option or environment variable moves cdkit's clock. Stage results come
from real `cdkit run`s; deploys run real commands that append "ENV SHA" to $DEPLOY_LOG.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cdkit.commands.deploy import deploy as deploy_command
from cdkit.commands.plan import plan as plan_command
from cdkit.commands.status import status as status_command
from cdkit.config import load
from cdkit.errors import GateFailed, UsageError
from cdkit.ledger import Ledger
from cdkit.release import WAITING, ReleaseContext, after_pipeline, deploy, deploy_if_approved
from tests.helpers import adopt_new, allowed_signers, cdkit, commit, config, git, make_bare, make_repo, signing_env

BERLIN = ZoneInfo("Europe/Berlin")
FRIDAY_EVENING = datetime(2026, 12, 4, 17, 0, tzinfo=BERLIN).timestamp()  # inside the weekend freeze
WEDNESDAY_NOON = datetime(2026, 12, 2, 12, 0, tzinfo=BERLIN).timestamp()  # inside business hours
WEDNESDAY_NIGHT = datetime(2026, 12, 2, 22, 0, tzinfo=BERLIN).timestamp()  # outside business hours
MONDAY_AFTER = datetime(2026, 12, 7, 8, 0, tzinfo=BERLIN).timestamp()  # the freeze has just ended
DEPLOY = 'echo "$CDKIT_ENVIRONMENT $CDKIT_SHA" >> "$DEPLOY_LOG"'
BOB = {"GIT_COMMITTER_NAME": "Bob Reviewer", "GIT_COMMITTER_EMAIL": "bob@example.com",
       **signing_env("bob@example.com")}
CARA = {"GIT_COMMITTER_NAME": "Cara Oncall", "GIT_COMMITTER_EMAIL": "cara@example.com",
        **signing_env("cara@example.com")}
SIGNERS = allowed_signers("bob@example.com", "cara@example.com")  # whose break-glass signatures count


def pipeline(*, allow: bool = False, break_glass: int | None = 1) -> str:
    hours = """
              - name: business hours
                allow: {schedule: "0 9 * * MON-FRI", duration: 8h, timezone: Europe/Berlin}""" if allow else ""
    glass = f"\n            break_glass: {{required: {break_glass}}}" if break_glass else ""
    return config(f"""
        version: 1
        stages:
          - name: test
            run: "true"
        environments:
          - name: production
            mode: deployment
            deploy: '{DEPLOY}'{glass}
            windows:
              - name: weekend freeze
                deny: {{schedule: "0 16 * * FRI", duration: 64h, timezone: Europe/Berlin}}{hours}
    """)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEPLOY_LOG", str(tmp_path / "deploys.txt"))
    return make_repo(tmp_path / "repo")


def passing(repo: Path, files: dict[str, str], message: str = "change") -> str:
    """Commit and record a passing, countable run of it (the real CLI, at the real time)."""
    sha = commit(repo, files, message)
    result = cdkit("run", cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    return sha


def context(repo: Path, ledger: Ledger) -> ReleaseContext:
    return ReleaseContext(root=repo, cdkit_dir=repo / ".git" / "cdkit", pipeline=load(repo / ".cdkit.yml"),
                          ledger=ledger, environ={**os.environ})


def at(repo: Path, when: float) -> Ledger:
    return Ledger(repo / ".git" / "cdkit" / "ledger.sqlite3", clock=lambda: when)


def document(capfd: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    """The --json document a command printed in this process, checked against its published schema."""
    from tests.json_schemas import validate_document

    out = capfd.readouterr().out
    validate_document(out)
    return json.loads(out)  # type: ignore[no-any-return]


def deployed(repo: Path) -> list[str]:
    path = Path(os.environ["DEPLOY_LOG"])
    return [line.split()[1] for line in path.read_text().splitlines()] if path.exists() else []


# --- the gate -------------------------------------------------------------------------------------


def test_a_deploy_inside_the_freeze_is_refused_naming_the_window_and_when_deploys_resume(repo: Path) -> None:
    sha = passing(repo, {".cdkit.yml": pipeline()})
    with at(repo, FRIDAY_EVENING) as ledger:
        with pytest.raises(GateFailed) as info:
            deploy(context(repo, ledger), "production", sha)
    assert "production is held by a window: weekend freeze until Mon 08:00 Europe/Berlin; it deploys then, or " \
           f"now with cdkit deploy --env production --sha {sha[:12]} --break-glass --reason TEXT" in str(info.value)
    assert deployed(repo) == []
    with at(repo, WEDNESDAY_NOON) as ledger:  # positive control: the same deploy outside the window
        assert deploy(context(repo, ledger), "production", sha).status == "success"
    assert deployed(repo) == [sha]


def test_outside_every_allow_window_is_refused_and_inside_one_deploys(repo: Path) -> None:
    sha = passing(repo, {".cdkit.yml": pipeline(allow=True)})
    with at(repo, WEDNESDAY_NIGHT) as ledger:
        with pytest.raises(GateFailed, match="outside every allow window; deploys resume when business hours "
                                             "opens, Thu 09:00 Europe/Berlin"):
            deploy(context(repo, ledger), "production", sha)
    with at(repo, WEDNESDAY_NOON) as ledger:
        assert deploy(context(repo, ledger), "production", sha).ok


def test_a_rollback_is_never_held_by_a_window(repo: Path) -> None:
    first = passing(repo, {".cdkit.yml": pipeline()})
    second = passing(repo, {"app.txt": "2"})
    with at(repo, WEDNESDAY_NOON) as ledger:
        ctx = context(repo, ledger)
        deploy(ctx, "production", first)
        deploy(ctx, "production", second)
    with at(repo, FRIDAY_EVENING) as ledger:
        ctx = context(repo, ledger)
        with pytest.raises(GateFailed, match="weekend freeze"):
            deploy(ctx, "production", first)  # not a rollback: refused (older, and frozen)
        assert deploy(ctx, "production", first, rollback=True).ok
    assert deployed(repo) == [first, second, first]


def test_in_deployment_mode_a_held_release_waits_and_the_first_run_after_deploys_only_the_newest(repo: Path) -> None:
    first = passing(repo, {".cdkit.yml": pipeline()}, "first")
    with at(repo, WEDNESDAY_NOON) as ledger:
        assert [r.status for r in after_pipeline(context(repo, ledger), sha=first, ref="refs/heads/main",
                                                 passed=True)] == ["success"]
    missed = [passing(repo, {"app.txt": str(n)}, f"during the freeze {n}") for n in (1, 2)]
    for sha in missed:
        with at(repo, FRIDAY_EVENING) as ledger:
            (result,) = after_pipeline(context(repo, ledger), sha=sha, ref="refs/heads/main", passed=True)
        assert result.status == WAITING and result.exit_code == 0 and result.window is not None
        assert result.window["message"] == "weekend freeze until Mon 08:00 Europe/Berlin"
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        waits = [line for _at, line in ledger.audit_lines() if "waits: held by a window" in line]
        assert len(waits) == 2 and missed[1] in waits[1]
        assert [d["sha"] for d in ledger.deployments(environment="production")] == [first]  # no failed record
    newest = passing(repo, {"app.txt": "3"}, "after the freeze")
    with at(repo, MONDAY_AFTER) as ledger:
        (result,) = after_pipeline(context(repo, ledger), sha=newest, ref="refs/heads/main", passed=True)
    assert result.status == "success"
    assert deployed(repo) == [first, newest]  # the missed commits are never deployed one by one


def test_cdkit_deploy_after_the_window_deploys_the_release_branch_tip(repo: Path, capfd: pytest.CaptureFixture[str],
                                                                     ) -> None:
    passing(repo, {".cdkit.yml": pipeline()})
    tip = passing(repo, {"app.txt": "2"})
    with pytest.raises(GateFailed, match="weekend freeze until Mon 08:00"):
        deploy_command(environment="production", sha=None, rollback=False, config=None, as_json=False, cwd=repo,
                       clock=lambda: FRIDAY_EVENING)
    assert "production is governed by .cdkit.yml@" in capfd.readouterr().out  # the text run says whose rules
    code = deploy_command(environment="production", sha=None, rollback=False, config=None, as_json=True, cwd=repo,
                          clock=lambda: FRIDAY_EVENING)
    refusal = document(capfd)
    assert code == 1 and refusal["waiting"] is True and refusal["window"]["window"] == "weekend freeze"
    assert deploy_command(environment="production", sha=None, rollback=False, config=None, as_json=False, cwd=repo,
                          clock=lambda: MONDAY_AFTER) == 0
    assert deployed(repo) == [tip]


def test_deploy_if_approved_reports_a_window_as_waiting_and_other_refusals_as_refused(repo: Path) -> None:
    sha = passing(repo, {".cdkit.yml": pipeline()})
    unknown = commit(repo, {"app.txt": "never run"})
    with at(repo, FRIDAY_EVENING) as ledger:
        ctx = context(repo, ledger)
        assert deploy_if_approved(ctx, "production", sha).status == WAITING
        # A window and a missing stage result: the stage is the problem, so it is refused, not waiting.
        refused = deploy_if_approved(ctx, "production", unknown)
        assert refused.status == "refused" and refused.exit_code == 1


# --- plan, status and the hook warn -------------------------------------------------------------------


def test_plan_and_status_warn_when_a_release_would_land_in_a_window(repo: Path,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    sha = passing(repo, {".cdkit.yml": pipeline()})
    capfd.readouterr()
    plan_command(config=None, base=None, head=None, trigger="manual", as_json=False, cwd=repo,
                 clock=lambda: FRIDAY_EVENING)
    assert "note: a release now would wait: production is held: weekend freeze until Mon 08:00 Europe/Berlin" in \
        capfd.readouterr().out
    plan_command(config=None, base=None, head=None, trigger="manual", as_json=True, cwd=repo,
                 clock=lambda: FRIDAY_EVENING)
    assert document(capfd)["windows"][0]["window"] == "weekend freeze"
    plan_command(config=None, base=None, head=None, trigger="manual", as_json=False, cwd=repo,
                 clock=lambda: WEDNESDAY_NOON)
    assert "would wait" not in capfd.readouterr().out  # positive control
    status_command(rev=sha, config=None, as_json=False, cwd=repo, clock=lambda: FRIDAY_EVENING)
    assert "HELD by a window: weekend freeze until Mon 08:00 Europe/Berlin" in capfd.readouterr().out
    status_command(rev=sha, config=None, as_json=True, cwd=repo, clock=lambda: WEDNESDAY_NOON)
    data = document(capfd)
    assert data["environments"][0]["window"]["allowed"] is True and data["environments"][0]["deployable"] is True


def _daily_window_starting(hours_from_now: int) -> str:
    hour = (datetime.now(ZoneInfo("UTC")).hour + hours_from_now) % 24
    return f'"0 {hour} * * *"'


@pytest.mark.parametrize("held", [True, False])
def test_the_pre_push_hook_warns_of_a_window_but_never_blocks(tmp_path: Path, held: bool) -> None:
    # The hook reads the real clock: a 2-hour window that opened this hour holds now; one 12 hours away does not.
    schedule = _daily_window_starting(0 if held else 12)
    repo = make_repo(tmp_path / "repo")
    remote = make_bare(tmp_path / "remote.git")
    text = config(f"""
        version: 1
        stages:
          - name: test
            run: "true"
            on: [pre-push, ci]
        environments:
          - name: production
            mode: deployment
            deploy: "true"
            windows:
              - name: change freeze
                deny: {{schedule: {schedule}, duration: 2h}}
    """)
    commit(repo, {".cdkit.yml": text})
    git(repo, "remote", "add", "origin", str(remote))
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    import subprocess

    result = subprocess.run(["git", "push", "origin", "main"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    warning = "cdkit: warning: this push releases main, but production is held: change freeze until "
    assert (warning in result.stderr) is held, result.stderr


# --- break-glass ----------------------------------------------------------------------------------------


def break_glass(repo: Path, when: float, sha: str, reason: str = "outage: payments down") -> int:
    return deploy_command(environment="production", sha=sha, rollback=False, config=None, as_json=True, cwd=repo,
                          clock=lambda: when, break_glass=True, reason=reason)


def test_break_glass_deploys_inside_the_freeze_only_with_a_second_persons_approval(
        repo: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    sha = passing(repo, {".cdkit.yml": pipeline(), **SIGNERS})
    adopt_new(repo, "production")
    capfd.readouterr()
    assert break_glass(repo, FRIDAY_EVENING, sha) == 1  # no break-glass approval yet
    refusal = document(capfd)
    assert refusal["deployed"] is False and refusal["waiting"] is False
    assert f"break-glass needs 1 break-glass approval(s) of {sha[:12]}: needs 1 approval(s) of {sha[:12]}, has 0" \
        in refusal["problems"][0]
    # The author cannot approve their own break-glass; a normal approval does not count for it either.
    own = cdkit("approve", sha, "--env", "production", "--break-glass", cwd=repo)
    assert own.returncode == 1 and "authored or committed a commit being released" in own.stderr
    bob = cdkit("approve", sha, "--env", "production", "--break-glass", "--comment", "seen the outage", cwd=repo,
                env=BOB)
    assert bob.returncode == 0, bob.stderr
    assert "Bob Reviewer <bob@example.com> approved a break-glass deploy of" in bob.stdout
    assert "1 of 1 break-glass approval(s); enough" in bob.stdout
    # Bob may not break the glass on his own approval (he would be the actor): Ada, the second person, does.
    monkeypatch.setenv("GIT_COMMITTER_NAME", BOB["GIT_COMMITTER_NAME"])
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", BOB["GIT_COMMITTER_EMAIL"])
    assert break_glass(repo, FRIDAY_EVENING, sha) == 1
    assert "triggered this run (actor), so cannot approve it" in document(capfd)["problems"][0]
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Ada Author")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "ada@example.com")
    assert break_glass(repo, FRIDAY_EVENING, sha) == 0
    result = document(capfd)
    assert result["deployed"] is True and deployed(repo) == [sha]
    glass = result["break_glass"]
    assert (glass["window"], glass["reason"], [c["who"] for c in glass["counted"]]) == \
        ("weekend freeze", "outage: payments down", ["Bob Reviewer <bob@example.com>"])
    assert result["summary"].endswith("success; BREAK-GLASS into weekend freeze")
    # Flagged in every later view: history, status, environments, the audit log.
    history = cdkit("history", "--json", cwd=repo)
    row, adopted = json.loads(history.stdout)["deployments"]  # newest first: the deploy, then the adoption
    assert (adopted["status"], adopted["sha"]) == ("adopted", None)
    assert row["break_glass"] is True
    assert any("break-glass into weekend freeze by Ada Author <ada@example.com>: outage: payments down (approved by "
               "Bob Reviewer <bob@example.com>)" in note for note in row["notes"]), row["notes"]
    assert "BREAK-GLASS" in cdkit("history", cwd=repo).stdout
    assert "BREAK-GLASS success" in cdkit("status", sha, cwd=repo).stdout
    assert "(BREAK-GLASS)" in cdkit("environments", cwd=repo).stdout
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        assert any("break-glass into weekend freeze" in line for _at, line in ledger.audit_lines())
    audit = cdkit("audit", "--json", cwd=repo)
    assert audit.returncode == 0, audit.stderr
    adoption, change = json.loads(audit.stdout)["deployments"]  # oldest first: the adoption is in the trail too
    assert (adoption["status"], adoption["sha"]) == ("adopted", None)
    assert change["break_glass"] == {"break_glass": True, "reason": "break-glass into weekend freeze by Ada Author "
                                     "<ada@example.com>: outage: payments down (approved by Bob Reviewer "
                                     "<bob@example.com>)"}
    assert "BREAK-GLASS" in cdkit("audit", cwd=repo).stdout


def test_break_glass_is_refused_without_a_policy_outside_a_window_and_without_a_reason(
        repo: Path, capfd: pytest.CaptureFixture[str]) -> None:
    sha = passing(repo, {".cdkit.yml": pipeline(break_glass=None)})
    adopt_new(repo, "production")
    capfd.readouterr()
    assert break_glass(repo, FRIDAY_EVENING, sha) == 1
    assert "this environment has no `break_glass:` policy, so nothing deploys into its windows" in \
        document(capfd)["problems"][0]
    refused = cdkit("approve", sha, "--env", "production", "--break-glass", cwd=repo, env=BOB)
    assert refused.returncode == 2 and "has no `break_glass: {required: N}` policy" in refused.stderr
    passing(repo, {".cdkit.yml": pipeline(break_glass=2), **SIGNERS})
    tip = git(repo, "rev-parse", "HEAD")
    for who in (BOB, CARA):
        assert cdkit("approve", tip, "--env", "production", "--break-glass", cwd=repo, env=who).returncode == 0
    assert break_glass(repo, WEDNESDAY_NOON, tip) == 1  # nothing to break outside a window
    assert "--break-glass: no window holds production now; deploy without --break-glass" in \
        document(capfd)["problems"][0]
    with pytest.raises(UsageError, match="say why with --reason TEXT"):
        break_glass(repo, FRIDAY_EVENING, tip, reason="  ")
    assert break_glass(repo, FRIDAY_EVENING, tip) == 0  # two approvals, as required: the positive control
    capfd.readouterr()


def test_break_glass_approvals_never_count_as_normal_approvals(repo: Path) -> None:
    text = pipeline().replace("mode: deployment", "mode: delivery\n    approval: {via: local, required: 1}")
    sha = passing(repo, {".cdkit.yml": text, **allowed_signers("bob@example.com")})
    adopt_new(repo, "production")
    assert cdkit("approve", sha, "--env", "production", "--break-glass", cwd=repo, env=BOB).returncode == 0
    with at(repo, WEDNESDAY_NOON) as ledger:
        with pytest.raises(GateFailed, match=f"{sha[:12]} is not approved for production"):
            deploy(context(repo, ledger), "production", sha)
    assert cdkit("approve", sha, "--env", "production", cwd=repo, env=BOB).returncode == 0
    with at(repo, WEDNESDAY_NOON) as ledger:
        assert deploy(context(repo, ledger), "production", sha).ok


def test_run_deploy_held_by_a_window_waits_with_exit_0_and_says_so_in_json(repo: Path) -> None:
    # The real CLI reads the real clock: a 2-hour window that opened this hour holds now.
    text = pipeline().replace('"0 16 * * FRI", duration: 64h', f'{_daily_window_starting(0)}, duration: 2h')
    commit(repo, {".cdkit.yml": text})
    result = cdkit("run", "--deploy", "--json", cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    (held,) = json.loads(result.stdout)["deployments"]
    assert (held["status"], held["deployed"], held["exit_code"]) == ("waiting", False, 0)
    assert held["window"]["window"] == "weekend freeze" and deployed(repo) == []
    assert "production waits for weekend freeze until " in result.stderr
