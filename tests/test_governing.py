"""The rules that govern a release are not the release's own (issue 9 §4): real git, the real CLI.

The policy for deploying SHA X to environment E is the pipeline committed in what E runs
now (else the release branch tip). Each attack (a commit switching delivery to deployment,
lowering approval.required, dropping a required stage, rewriting the deploy command, an
environment only the work tree has) is paired with a positive control that deploys, and the
change itself governs the next deploy once it has been released under the old rules.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import tests.fake_github_release  # noqa: F401 - registers the release endpoints
from cdkit.evidence import DEPLOYMENT_MARKER
from cdkit.ledger import Ledger
from tests.fake_github import FakeGitHub
from tests.fake_github_release import add_deployment, link_git
from tests.helpers import adopt_new, cdkit, commit, config, make_repo
from tests.test_action import github, push_payload, run_action

BOB = {"GIT_COMMITTER_NAME": "Bob Reviewer", "GIT_COMMITTER_EMAIL": "bob@example.com"}
CAROL = {"GIT_COMMITTER_NAME": "Carol Checker", "GIT_COMMITTER_EMAIL": "carol@example.com"}
DEPLOY = 'echo "$CDKIT_ENVIRONMENT $CDKIT_SHA" >> "$DEPLOY_LOG"'


def pipeline(*, mode: str = "delivery", required: int = 1, stages: tuple[str, ...] = ("build", "test"),
             deploy: str = DEPLOY, env: str = "prod", extra: str = "") -> str:
    """One environment `env` (local approvals, unsigned: the signing rules are tests/test_signing.py's)."""
    listed = "".join(f"""
          - name: {name}
            run: "true\"""" for name in stages)
    approval = f"\n            approval: {{via: local, required: {required}, signed: false}}" if mode == "delivery" else ""
    return config(f"""
        version: 1
        stages:{listed}
        environments:
          - name: {env}
            mode: {mode}
            deploy: '{deploy}'{approval}{extra}
    """)


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "deploys.txt"
    monkeypatch.setenv("DEPLOY_LOG", str(path))
    return path


def deployed(log: Path) -> list[str]:
    return log.read_text().split("\n")[:-1] if log.exists() else []


def run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = cdkit("run", *args, cwd=repo)
    assert done.returncode in (0, 1), done.stderr
    return done


def approve(repo: Path, sha: str, *people: dict[str, str], env: str = "prod") -> None:
    for person in people:
        done = cdkit("approve", sha, "--env", env, cwd=repo, env=person)
        assert done.returncode == 0, done.stdout + done.stderr


def deploy(repo: Path, sha: str, env: str = "prod") -> tuple[int, dict[str, object], str]:
    done = cdkit("deploy", "--env", env, "--sha", sha, "--json", cwd=repo)
    return done.returncode, json.loads(done.stdout), done.stderr


def problems(data: dict[str, object]) -> str:
    return "\n".join(str(p) for p in data.get("problems", []))  # type: ignore[attr-defined]


def governed_rows(repo: Path, env: str = "prod") -> list[tuple[str, str | None]]:
    with Ledger.for_dir(repo / ".git" / "cdkit") as db:
        return [(d["sha"], d["governed_by"]) for d in db.deployments(environment=env) if d["status"] == "success"]


def released(tmp_path: Path, text: str, *approvers: dict[str, str]) -> tuple[Path, str]:
    """A repository whose first commit (pipeline `text`) runs in its environment already."""
    repo = make_repo(tmp_path / "repo")
    first = commit(repo, {".cdkit.yml": text, "app.txt": "1\n"}, "the pipeline")
    run(repo, "--deploy")
    if approvers:
        approve(repo, first, *approvers)
        code, data, err = deploy(repo, first)
        assert code == 0, (data, err)
    return repo, first


# --- (a) delivery -> deployment: a commit does not release itself --------------------------------


def test_a_commit_switching_delivery_to_deployment_is_not_deployed_by_its_own_run(tmp_path: Path, log: Path) -> None:
    repo, first = released(tmp_path, pipeline(), BOB)
    switch = commit(repo, {".cdkit.yml": pipeline(mode="deployment")}, "deploy prod continuously")
    out = run(repo, "--deploy").stdout
    assert deployed(log) == [f"prod {first}"]  # the switch did not deploy itself
    assert f"prod is in delivery mode (governed by .cdkit.yml@{first[:12]}, what prod runs now)" in out
    assert "the work tree's .cdkit.yml changes prod's mode to deployment" in out
    code, data, _ = deploy(repo, switch)  # nor by hand without the approval its governing rules ask for
    assert code == 1 and f"{switch[:12]} is not approved for prod" in problems(data)
    assert data["governed_by"] == {"path": ".cdkit.yml", "sha": first, "why": "what prod runs now"}
    # Released under the old rules (an approval), the switch governs: the next commit deploys by itself.
    approve(repo, switch, BOB)
    assert deploy(repo, switch)[0] == 0
    after = commit(repo, {"app.txt": "2\n"}, "a normal change")
    run(repo, "--deploy")
    assert deployed(log)[-1] == f"prod {after}"
    assert governed_rows(repo)[-1] == (after, f".cdkit.yml@{switch} (what prod runs now)")


def test_control_a_normal_commit_under_deployment_mode_deploys_by_itself(tmp_path: Path, log: Path) -> None:
    repo, first = released(tmp_path, pipeline(mode="deployment"))
    assert deployed(log) == [f"prod {first}"]
    change = commit(repo, {"app.txt": "2\n"}, "a normal change")
    out = run(repo, "--deploy").stdout
    assert deployed(log) == [f"prod {first}", f"prod {change}"]
    assert f"prod is governed by .cdkit.yml@{first[:12]} (what prod runs now)" in out
    # The first deploy had no running commit: the release branch tip's rules governed it.
    assert governed_rows(repo)[0] == (first, f".cdkit.yml@{first} (the tip of main (prod runs nothing yet))")


# --- (b) lowering approval.required ----------------------------------------------------------------


def test_a_commit_lowering_approval_required_still_needs_the_old_count(tmp_path: Path, log: Path) -> None:
    repo, first = released(tmp_path, pipeline(required=2), BOB, CAROL)
    lower = commit(repo, {".cdkit.yml": pipeline(required=1)}, "one approval is enough")
    run(repo)
    approve(repo, lower, BOB)
    code, data, err = deploy(repo, lower)
    assert code == 1 and "needs 2 approval(s)" in problems(data), data
    assert "changes prod's approval.required to 1" in err
    # Positive control: the second approval the governing rules ask for releases it.
    approve(repo, lower, CAROL)
    code, data, _ = deploy(repo, lower)
    assert code == 0 and data["status"] == "success", data
    assert data["governed_by"] == {"path": ".cdkit.yml", "sha": first, "why": "what prod runs now"}
    # (d) Released under the old rules, the lower count governs the next deploy: one approval now.
    after = commit(repo, {"app.txt": "2\n"}, "a change")
    run(repo)
    approve(repo, after, BOB)
    code, data, _ = deploy(repo, after)
    assert code == 0, data
    assert data["governed_by"] == {"path": ".cdkit.yml", "sha": lower, "why": "what prod runs now"}
    assert deployed(log) == [f"prod {first}", f"prod {lower}", f"prod {after}"]
    audit = cdkit("audit", "--json", cwd=repo)  # the change records say which rules governed each deployment
    assert audit.returncode == 0, audit.stderr
    assert [r["governed_by"] for r in json.loads(audit.stdout)["deployments"]] == [
        f".cdkit.yml@{first} (the tip of main (prod runs nothing yet))",
        f".cdkit.yml@{first} (what prod runs now)", f".cdkit.yml@{lower} (what prod runs now)"]


# --- (c) dropping a required stage ------------------------------------------------------------------


def test_a_commit_removing_a_required_stage_is_refused_for_lacking_it(tmp_path: Path, log: Path) -> None:
    repo, first = released(tmp_path, pipeline(mode="deployment"))
    normal = commit(repo, {"app.txt": "2\n"}, "a normal change")  # positive control: it deploys
    run(repo, "--deploy")
    assert deployed(log)[-1] == f"prod {normal}"
    dropped = commit(repo, {".cdkit.yml": pipeline(mode="deployment", stages=("build",))}, "no more tests")
    out = run(repo, "--deploy").stdout  # its own run judges it by its own stages: build only
    assert deployed(log)[-1] == f"prod {normal}"
    assert f"stage 'test' has no result for {dropped[:12]}" in out
    assert "changes prod's required stages" in out


# --- the deploy command is governed too ----------------------------------------------------------


def test_a_commit_rewriting_the_deploy_command_is_deployed_by_the_old_one(tmp_path: Path, log: Path) -> None:
    repo, first = released(tmp_path, pipeline(mode="deployment"))
    hostile = 'echo pwned > "$DEPLOY_LOG.pwned"; echo "new $CDKIT_SHA" >> "$DEPLOY_LOG"'
    rewrite = commit(repo, {".cdkit.yml": pipeline(mode="deployment", deploy=hostile)}, "a new deploy command")
    run(repo, "--deploy")
    assert deployed(log) == [f"prod {first}", f"prod {rewrite}"]  # by the command that governs: the old one
    assert not Path(f"{log}.pwned").exists()
    after = commit(repo, {"app.txt": "2\n"}, "a change")  # once released, the new command deploys
    run(repo, "--deploy")
    assert deployed(log)[-1] == f"new {after}" and Path(f"{log}.pwned").exists()


# --- environments the governing pipeline does not have -------------------------------------------


def test_an_environment_only_the_work_tree_has_is_refused_until_committed(tmp_path: Path, log: Path) -> None:
    repo, first = released(tmp_path, pipeline(mode="deployment"))
    with_qa = pipeline(mode="deployment") + f"  - name: qa\n    mode: deployment\n    deploy: '{DEPLOY}'\n"
    (repo / ".cdkit.yml").write_text(with_qa)  # not committed
    code, data, _ = deploy(repo, first, env="qa")
    assert code == 1, data
    assert f"qa is not defined in .cdkit.yml@{first[:12]} (the tip of main; qa runs nothing yet)" in problems(data)
    assert "commit its entry in .cdkit.yml to main, then deploy" in problems(data)
    # Positive control: committed, its first introduction is governed by the release branch tip.
    added = commit(repo, {}, "add qa")
    run(repo, "--deploy")  # prod, then qa after it
    assert deployed(log)[-2:] == [f"prod {added}", f"qa {added}"]
    assert governed_rows(repo, "qa") == [(added, f".cdkit.yml@{added} (the tip of main (qa runs nothing yet))")]
    missing = cdkit("deploy", "--env", "nowhere", cwd=repo)
    assert missing.returncode == 2 and "no environment 'nowhere'" in missing.stderr


def test_a_renamed_environment_keeps_its_rules_and_the_new_name_starts_from_the_tip(tmp_path: Path, log: Path) -> None:
    repo, first = released(tmp_path, pipeline(required=2), BOB, CAROL)
    renamed = commit(repo, {".cdkit.yml": pipeline(required=1, env="production")}, "rename prod")
    run(repo)
    approve(repo, renamed, BOB)  # the work tree no longer has prod: its committed rules still govern it
    code, data, _ = deploy(repo, renamed)
    assert code == 1 and "needs 2 approval(s)" in problems(data), data
    approve(repo, renamed, CAROL)
    assert deploy(repo, renamed)[0] == 0
    # prod now runs a commit without prod: the rules it was released under stay in force.
    after = commit(repo, {"app.txt": "2\n"}, "a change")
    run(repo)
    approve(repo, after, BOB)
    code, data, _ = deploy(repo, after)
    assert code == 1 and "needs 2 approval(s)" in problems(data), data
    approve(repo, after, CAROL)
    code, data, _ = deploy(repo, after)
    assert code == 0, data
    governing = data["governed_by"]
    assert isinstance(governing, dict) and governing["sha"] == first
    assert f"the rules {renamed[:12]} was released to prod under" in governing["why"]
    # The new name is a first introduction: the tip's rules (one approval), from a baseline it is given.
    adopt_new(repo, "production")
    approve(repo, after, BOB, env="production")
    code, data, _ = deploy(repo, after, env="production")
    assert code == 0, data
    assert data["governed_by"] == {"path": ".cdkit.yml", "sha": after,
                                   "why": "the tip of main (production runs nothing yet)"}


# --- (a) in CI: `cdkit action` on a push, against the fake GitHub ---------------------------------


def ci_pipeline(mode: str) -> str:
    approval = "\n            approval: {via: review}" if mode == "delivery" else ""
    return config(f"""
        version: 1
        release_branch: main
        stages:
          - name: lint
            run: echo linting
          - name: test
            run: echo testing
        environments:
          - name: production
            mode: {mode}
            deploy: echo "deploying $CDKIT_SHA"{approval}
    """)


def ci_repo(tmp_path: Path, fake_github: FakeGitHub, mode: str) -> tuple[Path, str]:
    """A repository whose first commit production runs: a deployment cdkit created in CI, on GitHub."""
    repo = make_repo(tmp_path / "repo")
    first = commit(repo, {".cdkit.yml": ci_pipeline(mode)}, "the pipeline")
    link_git(fake_github, repo, {"ada@example.com": {"login": "ada", "id": 1, "type": "User"}})
    add_deployment(fake_github, environment="production", sha=first, state="success", creator="github-actions[bot]",
                   payload={DEPLOYMENT_MARKER: "earlier", "governed_by": f".cdkit.yml@{first} (earlier)"})
    return repo, first


def test_in_ci_a_push_switching_delivery_to_deployment_does_not_deploy_itself(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo, first = ci_repo(tmp_path, fake_github, "delivery")
    switch = commit(repo, {".cdkit.yml": ci_pipeline("deployment")}, "deploy production continuously")
    pipeline = run_action(repo, "push", push_payload(first, switch), sha=switch, env=github(fake_github))
    assert pipeline.proc.returncode == 0, pipeline.proc.stderr + pipeline.proc.stdout
    assert (pipeline.outputs["result"], pipeline.outputs["deploy"]) == ("passed", "false")
    summary = pipeline.summary.replace("\\", "")
    assert f"production is governed by .cdkit.yml@{first[:12]} (what production runs now)" in summary
    assert "changes production's mode to deployment" in summary
    assert f"{switch[:12]} is not approved for production" in summary
    # Even a deploy job started by hand (command: deploy) is held to the governing rules.
    deploy_job = run_action(repo, "push", push_payload(first, switch), sha=switch,
                            env=github(fake_github, INPUT_COMMAND="deploy", INPUT_ENVIRONMENT="production"))
    assert deploy_job.outputs.get("result") != "deployed", deploy_job.proc.stdout + deploy_job.proc.stderr
    assert deploy_job.outputs["result"] == "waiting", deploy_job.proc.stdout + deploy_job.proc.stderr
    assert len(fake_github.state.extra["deployments"]) == 1  # only the earlier one


def test_control_in_ci_a_normal_push_under_deployment_mode_deploys(tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo, first = ci_repo(tmp_path, fake_github, "deployment")
    change = commit(repo, {"app.txt": "2\n"}, "a normal change")
    pipeline = run_action(repo, "push", push_payload(first, change), sha=change, env=github(fake_github))
    assert (pipeline.outputs["result"], pipeline.outputs["deploy"]) == ("passed", "true"), pipeline.summary
    deploy_job = run_action(repo, "push", push_payload(first, change), sha=change,
                            env=github(fake_github, INPUT_COMMAND="deploy", INPUT_ENVIRONMENT="production"))
    assert deploy_job.outputs["result"] == "deployed", deploy_job.proc.stdout + deploy_job.proc.stderr
    new = [d for d in fake_github.state.extra["deployments"].values() if d["sha"] == change]
    assert len(new) == 1
    assert new[0]["_request"]["payload"]["governed_by"] == f".cdkit.yml@{first} (what production runs now)"
