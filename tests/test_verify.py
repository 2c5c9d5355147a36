"""Verification, automatic rollback, quarantine and promotion with soak (issue 10 §2, §3, §7).

Real repositories, the real CLI and real processes. A commit is "broken" when it
contains the file `broken`: its `verify` fails. Each deploy appends
"ENV SHA ROLLBACK PREVIOUS" to $DEPLOY_LOG, each verify attempt "verify ENV SHA".
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import tests.fake_github_release  # noqa: F401 - registers the release endpoints
from cdkit.config import load
from cdkit.ledger import Ledger
from cdkit.release import ReleaseContext, deploy
from tests.fake_github import FakeGitHub
from tests.helpers import adopt_new, cdkit, commit, config, git, make_repo

DEPLOY = 'echo "$CDKIT_ENVIRONMENT $CDKIT_SHA $CDKIT_ROLLBACK ${CDKIT_PREVIOUS_SHA:-none}" >> "$DEPLOY_LOG"'
VERIFY = 'echo "verify $CDKIT_ENVIRONMENT $CDKIT_SHA" >> "$DEPLOY_LOG"; test ! -e broken'


def pipeline(*, on_failure: str = "rollback", soak: str | None = None, retries: int = 2) -> str:
    soak_line = f"\n            soak: {soak}" if soak else ""
    return config(f"""
        version: 1
        stages:
          - name: test
            run: "true"
        environments:
          - name: staging
            mode: deployment
            deploy: '{DEPLOY}'
            verify: {{run: '{VERIFY}', retries: {retries}, interval: 1s, timeout: 1m}}
            on_failure: {on_failure}{soak_line}
          - name: prod
            mode: deployment
            deploy: '{DEPLOY}'
    """)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEPLOY_LOG", str(tmp_path / "deploys.txt"))
    repo = make_repo(tmp_path / "repo")
    return repo


def log_lines(repo: Path) -> list[list[str]]:
    path = Path(os.environ["DEPLOY_LOG"])
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def deployments(repo: Path, env: str = "staging") -> list[tuple[str, str, int, int]]:
    """(sha, status, rollback, automatic) of each ledger deployment of `env`."""
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        return [(d["sha"], d["status"], d["rollback"], d["automatic"]) for d in ledger.deployments(environment=env)]


def run_deploy(repo: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = cdkit("run", "--deploy", "--json", *args, cwd=repo, env=env)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_a_passing_verify_makes_the_deployment_verified_and_sees_the_previous_sha(world: Path) -> None:
    first = commit(world, {".cdkit.yml": pipeline()}, "first")
    code, data = run_deploy(world)
    assert code == 0, data
    assert [(d["environment"], d["status"]) for d in data["deployments"]] == [("staging", "verified"), ("prod", "success")]
    second = commit(world, {"app.txt": "2"})
    assert run_deploy(world)[0] == 0
    # The deploy and its verify know what they replace.
    assert log_lines(world)[-3:] == [["staging", second, "0", first], ["verify", "staging", second],
                                     ["prod", second, "0", first]]
    envs = json.loads(cdkit("environments", "--json", cwd=world).stdout)["environments"]
    assert (envs[0]["sha"], envs[0]["status"]) == (second, "verified")


def test_a_failing_verify_rolls_back_to_the_last_verified_sha_and_quarantines_the_failed_one(world: Path) -> None:
    good = commit(world, {".cdkit.yml": pipeline()}, "good")
    assert run_deploy(world)[0] == 0
    bad = commit(world, {"broken": "x"}, "passes its stages, fails verification")
    code, data = run_deploy(world)
    assert code == 1
    (staging,) = data["deployments"]  # prod is never reached
    assert staging["status"] == "verification_failed" and staging["quarantined"] is True
    assert "verification failed after 2 attempts" in staging["reasons"][0]
    back = staging["automatic_rollback"]
    assert (back["sha"], back["status"], back["rollback"]) == (good, "verified", True)
    assert staging["summary"] == (f"staging: {bad[:12]} verification failed (verification failed after 2 attempts: "
                                  f"the verify command exited with 1); {bad[:12]} is quarantined for staging; "
                                  f"rolled back to {good[:12]} (verified)")
    assert [line for line in log_lines(world) if line[0] == "verify" and line[2] == bad] == \
        [["verify", "staging", bad]] * 2  # two attempts, an interval apart
    assert log_lines(world)[-2:] == [["staging", good, "1", bad], ["verify", "staging", good]]
    assert deployments(world)[-2:] == [(bad, "verification_failed", 0, 0), (good, "verified", 1, 1)]
    assert [d[0] for d in deployments(world, "prod")] == [good]  # prod never got the bad commit
    status = cdkit("status", bad, cwd=world).stdout
    assert "QUARANTINED: deployment #3 verification failed: verification failed after 2 attempts" in status
    assert "automatic rollback verified" in cdkit("status", good, cwd=world).stdout
    envs = cdkit("environments", cwd=world).stdout
    assert f"quarantined: {bad[:12]} (deployment #3 verification failed" in envs


def test_a_quarantined_sha_is_never_redeployed_automatically_and_a_newer_commit_resumes(world: Path) -> None:
    commit(world, {".cdkit.yml": pipeline()}, "good")
    run_deploy(world)
    bad = commit(world, {"broken": "x"}, "bad")
    assert run_deploy(world)[0] == 1
    before = len(log_lines(world))
    code, data = run_deploy(world)  # the same commit again, as a re-run would
    assert code == 1
    (refused,) = data["deployments"]
    assert refused["status"] == "refused"
    assert f"{bad[:12]} is quarantined for staging (deployment #3 verification failed" in refused["reasons"][0]
    assert len(log_lines(world)) == before  # nothing ran
    by_hand = cdkit("deploy", "--env", "staging", "--sha", bad, cwd=world)
    assert by_hand.returncode == 1 and "--force --reason TEXT" in by_hand.stderr
    git(world, "rm", "-q", "broken")
    fixed = commit(world, message="fix")
    code, data = run_deploy(world)
    assert code == 0, data
    assert [(d["environment"], d["sha"], d["status"]) for d in data["deployments"]] == \
        [("staging", fixed, "verified"), ("prod", fixed, "success")]


def test_a_failed_deploy_command_also_rolls_back(world: Path) -> None:
    text = pipeline().replace(f"deploy: '{DEPLOY}'\n    verify", f"deploy: '{DEPLOY}; test ! -e broken'\n    verify", 1)
    good = commit(world, {".cdkit.yml": text}, "good")
    assert run_deploy(world)[0] == 0
    bad = commit(world, {"broken": "x"})
    code, data = run_deploy(world)
    assert code == 1
    (staging,) = data["deployments"]
    assert (staging["status"], staging["quarantined"]) == ("failure", True)
    assert (staging["automatic_rollback"]["sha"], staging["automatic_rollback"]["status"]) == (good, "verified")
    assert deployments(world)[-2:] == [(bad, "failure", 0, 0), (good, "verified", 1, 1)]


def test_on_failure_stop_leaves_the_failed_sha_running_quarantined(world: Path) -> None:
    commit(world, {".cdkit.yml": pipeline(on_failure="stop")}, "good")
    run_deploy(world)
    bad = commit(world, {"broken": "x"})
    code, data = run_deploy(world)
    assert code == 1
    (staging,) = data["deployments"]
    assert staging["automatic_rollback"] is None and staging["quarantined"] is True
    assert "runs " + bad[:12] in cdkit("environments", cwd=world).stdout
    assert ", FAILED verification" in cdkit("environments", cwd=world).stdout


def test_the_first_deploy_has_nothing_to_roll_back_to_and_says_so(world: Path) -> None:
    bad = commit(world, {".cdkit.yml": pipeline(), "broken": "x"})
    code, data = run_deploy(world)
    assert code == 1
    (staging,) = data["deployments"]
    assert staging["automatic_rollback"]["reasons"] == ["staging has no earlier verified deployment to roll back to"]
    assert deployments(world) == [(bad, "verification_failed", 0, 0)]


def test_a_person_rolling_back_quarantines_what_ran_and_force_with_a_reason_lifts_it(world: Path) -> None:
    first = commit(world, {".cdkit.yml": pipeline()}, "first")
    run_deploy(world)
    second = commit(world, {"app.txt": "2"})
    run_deploy(world)
    back = cdkit("deploy", "--env", "staging", "--sha", first, "--rollback", "--json", cwd=world)
    assert back.returncode == 0, back.stderr
    refused = cdkit("deploy", "--env", "staging", "--sha", second, "--json", cwd=world)
    assert refused.returncode == 1
    data = json.loads(refused.stdout)
    assert data["deployed"] is False and data["status"] == "refused"
    assert any(f"{second[:12]} is quarantined for staging (staging was rolled back from it by Ada Author" in p
               for p in data["problems"])
    assert cdkit("deploy", "--env", "staging", "--sha", second, "--force", cwd=world).returncode == 2
    forced = cdkit("deploy", "--env", "staging", "--sha", second, "--force", "--reason", "the outage was DNS",
                   "--json", cwd=world)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["status"] == "verified"
    with Ledger.for_dir(world / ".git" / "cdkit") as ledger:
        assert ledger.quarantined("staging") == {}
        assert ledger.deployments(environment="staging")[-1]["reason"] == \
            "forced past its quarantine by Ada Author <ada@example.com>: the outage was DNS"
        assert any("forced past its quarantine" in what for _, what in ledger.audit_lines())


def test_promotion_needs_verified_not_quarantined_upstream(world: Path) -> None:
    commit(world, {".cdkit.yml": pipeline(on_failure="stop")}, "good")
    run_deploy(world)
    bad = commit(world, {"broken": "x"})
    assert run_deploy(world)[0] == 1  # staging ran it, but it failed verification there
    refused = cdkit("deploy", "--env", "prod", "--sha", bad, cwd=world)
    assert refused.returncode == 1
    assert f"prod comes after staging, where {bad[:12]} is quarantined (" in refused.stderr


def test_soak_holds_promotion_until_the_sha_ran_verified_long_enough(world: Path) -> None:
    sha = commit(world, {".cdkit.yml": pipeline(soak="30m")})
    code, data = run_deploy(world)
    assert code == 1  # staging deployed and verified; prod waits for the soak
    assert [d["status"] for d in data["deployments"]] == ["verified", "refused"]
    assert f"where {sha[:12]} must run verified for 30m (soak) before it is promoted; it has run " in \
        data["deployments"][1]["reasons"][0]
    pipeline_ = load(world / ".cdkit.yml")
    with Ledger.for_dir(world / ".git" / "cdkit") as ledger:
        verified_at = ledger.deployments(environment="staging")[-1]["finished_at"]
    for later, ok in ((verified_at + 29 * 60, False), (verified_at + 30 * 60, True)):
        with Ledger(world / ".git" / "cdkit" / "ledger.sqlite3", clock=lambda: later) as ledger:
            ctx = ReleaseContext(root=world, cdkit_dir=world / ".git" / "cdkit", pipeline=pipeline_, ledger=ledger)
            if ok:
                assert deploy(ctx, "prod", sha).status == "success"
            else:
                with pytest.raises(Exception, match="must run verified for 30m"):
                    deploy(ctx, "prod", sha)


def test_json_refusal_of_run_deploy_and_deploy(world: Path) -> None:
    commit(world, {".cdkit.yml": pipeline()})
    result = cdkit("deploy", "--env", "prod", "--json", cwd=world)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["deployed"] is False and data["waiting"] is False
    assert any("has no result for" in p for p in data["problems"])


# --- end to end against the fake GitHub: statuses, rollback deployment, quarantine across CI jobs -----------


def gh_env(server: FakeGitHub, sha: str) -> dict[str, str]:
    return {"GITHUB_TOKEN": "ghs_faketoken", "GITHUB_REPOSITORY": "acme/app", "GITHUB_API_URL": server.url,
            "GITHUB_ACTOR": "ada", "GITHUB_RUN_ID": "77", "GITHUB_SHA": sha,
            "GITHUB_SERVER_URL": "https://github.com"}


def test_github_records_the_failed_deployment_and_the_rollback_and_ci_never_redeploys_it(
        world: Path, fake_github: FakeGitHub) -> None:
    good = commit(world, {".cdkit.yml": pipeline()}, "good")
    assert run_deploy(world, env=gh_env(fake_github, good))[0] == 0
    bad = commit(world, {"broken": "x"})
    code, data = run_deploy(world, env=gh_env(fake_github, bad))
    assert code == 1
    extra = fake_github.state.extra
    staging = sorted((d for d in extra["deployments"].values() if d["environment"] == "staging"),
                     key=lambda d: d["id"])
    assert [(d["sha"], d["payload"]["rollback"]) for d in staging] == [(good, False), (bad, False), (good, True)]
    failed, rollback = staging[1], staging[2]
    latest = extra["deployment_statuses"][failed["id"]][0]
    assert latest["state"] == "failure"
    assert latest["description"].startswith("cdkit: quarantined: verification failed: verification failed after 2")
    assert rollback["payload"]["rollback_from"] == bad and rollback["payload"]["automatic"] is True
    assert [s["state"] for s in extra["deployment_statuses"][rollback["id"]]] == ["success", "in_progress"]
    # The next CI job starts with an empty ledger: GitHub alone says the SHA is quarantined.
    shutil.rmtree(world / ".git" / "cdkit")
    code, data = run_deploy(world, env=gh_env(fake_github, bad))
    assert code == 1
    assert (f"{bad[:12]} is quarantined for staging (staging was rolled back from it automatically (GitHub "
            "deployment ") in data["deployments"][0]["reasons"][0]
    assert len([d for d in extra["deployments"].values() if d["environment"] == "staging"]) == 3  # none created


def test_every_refusal_with_json_is_one_json_document(world: Path) -> None:
    commit(world, {".cdkit.yml": pipeline()})
    refused = cdkit("run", "--deploy", "--json", "--stage", "test", cwd=world)
    assert refused.returncode == 2
    data = json.loads(refused.stdout)
    assert data["deployed"] is False and data["exit_code"] == 2
    assert data["problems"] == ["--deploy releases only a complete run of the clean release branch:\n"
                                "  - --stage test runs part of the pipeline: drop --stage"]
    delivery = pipeline().replace("  - name: prod\n    mode: deployment", "  - name: prod\n    mode: delivery")
    commit(world, {".cdkit.yml": delivery})
    unadopted = cdkit("approve", "HEAD", "--env", "prod", "--json", cwd=world)
    assert unadopted.returncode == 1 and "cdkit adopt --env prod" in json.loads(unadopted.stdout)["problems"][0]
    adopt_new(world, "prod")
    own = cdkit("approve", "HEAD", "--env", "prod", "--json", cwd=world)
    assert own.returncode == 1
    data = json.loads(own.stdout)
    assert data["approved"] is False and "authored or committed a commit being released" in data["problems"][0]
