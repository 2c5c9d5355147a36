"""Fan-out: `cdkit workflow generate/check` and the Action's stage, shard, aggregate and release jobs.

The generated workflows are checked as GitHub would take them (check-jsonschema,
zizmor) and their job graph against the pipeline's; the jobs are `cdkit action`
runs against the fake GitHub, one per job, as a runner would start them.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdkit import workflow
from cdkit.config import load_text
from cdkit.report.actions import md_escape
from tests.fake_github import FakeGitHub
from tests.helpers import cdkit, commit, config, git, make_repo
from tests.test_action import ZERO, github, push_payload, run_action
from tests.test_workflows import check_jsonschema

# A 4-stage graph: lint and docs first (docs only for docs/), test sharded after lint,
# build after both; plus a pre-push-only stage that gets no job.
FANNED = config("""
    version: 1
    release_branch: main
    stages:
      - name: lint
        run: echo linting
      - name: docs
        run: echo documenting
        needs: []
        paths: ["docs/**"]
      - name: test
        run: echo "shard $CDKIT_SHARD_INDEX of $CDKIT_SHARD_TOTAL" && test ! -e "fail-$CDKIT_SHARD_INDEX"
        needs: [lint]
        timeout: 20m
        ci: {shards: 3, runs-on: ubuntu-24.04}
      - name: build
        run: echo building && test ! -e broken-build
        needs: [test, docs]
        ci: {timeout-minutes: 7}
      - name: format
        run: echo formatting
        on: [pre-push]
    environments:
      - name: production
        mode: deployment
        deploy: echo "deploying $CDKIT_SHA"
""")
MODES = [("deployment", None), ("delivery", "environment"), ("delivery", "review")]


def generate(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cdkit("workflow", "generate", *args, cwd=repo)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_repo(tmp_path / "repo")
    commit(root, {".cdkit.yml": FANNED, "a.txt": "a"}, "first")
    return root


def jobs_of(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    jobs: dict[str, Any] = data["jobs"]
    return jobs


def needs_of(job: dict[str, Any]) -> set[str]:
    needs = job.get("needs", [])
    return {needs} if isinstance(needs, str) else set(needs)


# --- the generated workflow ---------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "approval"), MODES)
def test_generated_workflow_is_valid_and_its_graph_is_the_pipelines(repo: Path, mode: str,
                                                                     approval: str | None) -> None:
    result = generate(repo, "--mode", mode, *(["--approval", approval] if approval else []))
    assert result.returncode == 0, result.stderr
    path = repo / ".github" / "workflows" / "cdkit.yml"
    checked = check_jsonschema("vendor.github-workflows", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = jobs_of(path)
    pipeline = load_text(FANNED, ".cdkit.yml")
    stage_of = {f"stage-{s.name}": s.name for s in pipeline.stages if "ci" in s.on}
    assert set(stage_of) <= set(jobs) and "stage-format" not in jobs  # no job for a pre-push-only stage
    # Each stage job needs plan and exactly the stages the pipeline says, with what they need.
    graph = {stage_of[j]: {stage_of[n] for n in needs_of(jobs[j]) if n in stage_of} for j in stage_of}
    assert graph == workflow.job_graph(pipeline) == {
        "lint": set(), "docs": set(), "test": {"lint"}, "build": {"test", "docs", "lint"}}
    assert all("plan" in needs_of(jobs[j]) for j in stage_of)
    # The sharded stage: a 3-leg matrix feeding the job that posts the stage's one check.
    shards = jobs["stage-test-shards"]
    assert shards["strategy"]["matrix"]["shard"] == ["1", "2", "3"] and shards["runs-on"] == "ubuntu-24.04"
    assert needs_of(jobs["stage-test"]) == {"plan", "stage-lint", "stage-test-shards"}
    assert shards["timeout-minutes"] == "30" and jobs["stage-build"]["timeout-minutes"] == "7"
    assert needs_of(jobs["release"]) == {"plan", *stage_of}
    assert all("timeout-minutes" in job for job in jobs.values())
    assert jobs["stage-lint"]["steps"][1]["with"] == {"command": "run", "stage": "lint"}
    assert jobs["plan"]["steps"][1]["with"] == {"command": "fan-out"}
    assert jobs["release"]["steps"][1]["with"] == {"command": "release"}
    assert "contains(fromJSON(needs.plan.outputs.run-stages), 'docs')" in jobs["stage-docs"]["if"]
    deploy = jobs["deploy"]
    assert (deploy.get("environment") == "production") == (approval == "environment")


def test_generated_workflows_have_no_zizmor_findings(repo: Path, tmp_path: Path) -> None:
    zizmor = shutil.which("zizmor") or str(Path(sys.executable).parent / "zizmor")
    if not Path(zizmor).exists():
        pytest.fail("zizmor is not installed: pip install -e '.[test]' installs it")
    files = []
    for mode, approval in MODES:
        out = tmp_path / f"{mode}-{approval}.yml"
        assert generate(repo, "--mode", mode, *(["--approval", approval] if approval else []),
                        "-o", str(out)).returncode == 0
        files.append(str(out))
    result = subprocess.run([zizmor, "--offline", "--format", "plain", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_review_mode_deploy_job_runs_only_for_the_release_pull_requests_reviews(repo: Path) -> None:
    assert generate(repo, "--mode", "delivery", "--approval", "review").returncode == 0
    condition = jobs_of(repo / ".github" / "workflows" / "cdkit.yml")["deploy"]["if"]
    assert "github.event.pull_request.head.ref == 'cdkit/release/production'" in condition
    assert "github.event.pull_request.head.repo.full_name == github.repository" in condition


def test_workflow_check_passes_then_fails_with_a_diff_when_the_pipeline_changes(repo: Path) -> None:
    assert generate(repo).returncode == 0
    ok = cdkit("workflow", "check", cwd=repo)
    assert ok.returncode == 0 and "matches .cdkit.yml" in ok.stdout
    (repo / ".cdkit.yml").write_text(FANNED.replace("needs: [test, docs]", "needs: [test]"))
    drift = cdkit("workflow", "check", cwd=repo)
    assert drift.returncode == 1
    assert "-    needs: [plan, stage-lint, stage-docs, stage-test]" in drift.stdout
    assert "+    needs: [plan, stage-lint, stage-test]" in drift.stdout
    assert "run `cdkit workflow generate --mode deployment` and commit the result" in drift.stderr


def test_workflow_check_keeps_the_committed_action_pin(repo: Path) -> None:
    assert generate(repo).returncode == 0
    path = repo / ".github" / "workflows" / "cdkit.yml"
    pinned = path.read_text().replace(workflow.recorded_options(path.read_text(), "main").action,  # type: ignore[union-attr]
                                      "cdkit/cdkit@" + "1" * 40 + " # v9.9.9")
    path.write_text(pinned)
    assert cdkit("workflow", "check", cwd=repo).returncode == 0  # a pin bump is not drift
    path.write_text(pinned.replace("timeout-minutes: 7", "timeout-minutes: 8"))
    assert cdkit("workflow", "check", cwd=repo).returncode == 1  # a hand edit is


def test_workflow_check_refuses_a_hand_written_workflow(repo: Path) -> None:
    assert cdkit("init", "--mode", "deployment", "--force", cwd=repo).returncode == 0
    result = cdkit("workflow", "check", cwd=repo)
    assert result.returncode == 2 and "was not written by `cdkit workflow generate`" in result.stderr


def test_init_fan_out_writes_a_generated_workflow(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "new")
    assert cdkit("init", "--mode", "delivery", "--approval", "review", "--fan-out", cwd=repo).returncode == 0
    text = (repo / ".github" / "workflows" / "cdkit.yml").read_text()
    assert text.startswith("# Generated by `cdkit workflow generate --mode delivery --approval review`")
    assert cdkit("workflow", "check", cwd=repo).returncode == 0


def test_a_config_with_bad_ci_settings_is_a_clear_error(repo: Path) -> None:
    (repo / ".cdkit.yml").write_text(FANNED.replace("shards: 3", "shards: 0"))
    result = generate(repo)
    assert result.returncode == 2 and "stages[2].ci.shards" in result.stderr


# --- the jobs, as `cdkit action` runs ------------------------------------------------------------


def job(repo: Path, head: str, base: str, server: FakeGitHub, **inputs: str) -> Any:
    env = github(server, **{f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    env["GITHUB_WORKFLOW_REF"] = "octo-org/octo-repo/.github/workflows/cdkit.yml@refs/heads/main"
    return run_action(repo, "push", push_payload(base, head), sha=head, env=env)


def checks(server: FakeGitHub, sha: str) -> dict[str, str | None]:
    return {r["name"]: r["conclusion"] for r in sorted(server.check_runs("octo-org/octo-repo", sha),
                                                        key=lambda r: int(r["id"]))}


def pushed(repo: Path, files: dict[str, str]) -> tuple[str, str]:
    base = git(repo, "rev-parse", "HEAD")
    assert generate(repo).returncode == 0
    git(repo, "add", "-A")
    return base, commit(repo, files, "change")


def run_all(repo: Path, base: str, head: str, server: FakeGitHub) -> dict[str, Any]:
    """The generated workflow's jobs in their needs order, each a fresh `cdkit action` run."""
    plan = job(repo, head, base, server, command="fan-out")
    assert plan.proc.returncode == 0, plan.proc.stdout + plan.proc.stderr
    ran = {"plan": plan}
    for stage in json.loads(plan.outputs["run-stages"]):
        if stage == "test":
            ran.update({f"test-{i}": job(repo, head, base, server, command="run", stage="test", shard=str(i))
                        for i in (1, 2, 3)})
            ran["test"] = job(repo, head, base, server, command="aggregate", stage="test")
        else:
            ran[stage] = job(repo, head, base, server, command="run", stage=stage)
    ran["release"] = job(repo, head, base, server, command="release")
    return ran


def test_the_plan_job_says_which_stage_jobs_run_and_reports_the_paths_skip(repo: Path,
                                                                           fake_github: FakeGitHub) -> None:
    base, head = pushed(repo, {"src.txt": "x"})
    plan = job(repo, head, base, fake_github, command="fan-out")
    assert plan.proc.returncode == 0, plan.proc.stdout + plan.proc.stderr
    assert json.loads(plan.outputs["run-stages"]) == ["lint", "test", "build"]
    assert plan.outputs["result"] == "planned"
    # who pushed (for the release gate), the skipped job's check, nothing else
    assert checks(fake_github, head) == {"cdkit push": "neutral", "cdkit/docs": "skipped"}
    assert "| `docs` | ⏭️ skipped |" in plan.summary or "`docs`" in plan.summary


def test_a_stage_job_runs_its_one_stage_and_a_shard_sees_its_index(repo: Path, fake_github: FakeGitHub) -> None:
    base, head = pushed(repo, {"src.txt": "x"})
    lint = job(repo, head, base, fake_github, command="run", stage="lint")
    assert lint.proc.returncode == 0, lint.proc.stdout + lint.proc.stderr
    assert [s["name"] for s in json.loads(lint.outputs["stages"]) if s["status"] == "passed"] == ["lint"]
    assert "::group::lint" in lint.lines and "::group::build" not in lint.lines
    shard = job(repo, head, base, fake_github, command="run", stage="test", shard="2")
    assert shard.proc.returncode == 0
    assert any("shard 2 of 3" in line for line in shard.lines)
    assert checks(fake_github, head) == {"cdkit/lint": "success", "cdkit/test (shard 2 of 3)": "success"}


def test_stage_and_shard_inputs_are_checked(repo: Path, fake_github: FakeGitHub) -> None:
    base, head = pushed(repo, {"src.txt": "x"})
    unknown = job(repo, head, base, fake_github, command="run", stage="nope")
    assert unknown.proc.returncode == 2 and "input stage: 'nope' is not a stage" in unknown.proc.stderr
    no_shard = job(repo, head, base, fake_github, command="run", stage="test")
    assert no_shard.proc.returncode == 2 and "pass shard: 1..3" in no_shard.proc.stderr
    too_far = job(repo, head, base, fake_github, command="run", stage="test", shard="4")
    assert too_far.proc.returncode == 2 and "is not a shard of 'test' (1..3" in too_far.proc.stderr
    assert checks(fake_github, head) == {}


def test_fanned_out_jobs_deploy_a_commit_whose_every_stage_passed(repo: Path, fake_github: FakeGitHub) -> None:
    base, head = pushed(repo, {"src.txt": "x", "docs/a.md": "d"})  # docs too: a paths skip needs an earlier pass
    ran = run_all(repo, base, head, fake_github)
    failed = {k: r.proc.stdout + r.proc.stderr for k, r in ran.items() if r.proc.returncode != 0}
    assert not failed, failed
    assert checks(fake_github, head) == {
        "cdkit push": "neutral",  # the plan job records who pushed (the gate excludes them)
        "cdkit/lint": "success", "cdkit/docs": "success", "cdkit/test (shard 1 of 3)": "success",
        "cdkit/test (shard 2 of 3)": "success", "cdkit/test (shard 3 of 3)": "success", "cdkit/test": "success",
        "cdkit/build": "success"}
    release = ran["release"]
    assert (release.outputs["result"], release.outputs["deploy"]) == ("passed", "true")
    assert ran["test"].outputs["result"] == "passed"
    assert all(md_escape(f"shard {i} of 3: passed") in ran["test"].summary for i in (1, 2, 3))


def test_one_failed_shard_fails_the_stage_check_and_the_release_is_refused(repo: Path,
                                                                           fake_github: FakeGitHub) -> None:
    base, head = pushed(repo, {"fail-2": "x"})
    for i in (1, 2, 3):
        job(repo, head, base, fake_github, command="run", stage="test", shard=str(i))
    aggregate = job(repo, head, base, fake_github, command="aggregate", stage="test")
    assert aggregate.proc.returncode == 1 and aggregate.outputs["result"] == "failed"
    assert md_escape("2/3 shards passed; shard 2 of 3: failed") in aggregate.summary
    assert checks(fake_github, head)["cdkit/test"] == "failure"
    release = job(repo, head, base, fake_github, command="release")
    assert release.proc.returncode == 1
    assert (release.outputs["result"], release.outputs["deploy"]) == ("refused", "false")
    assert md_escape("stage 'test' failed") in release.summary


def test_the_release_job_refuses_when_a_stage_job_never_ran(repo: Path, fake_github: FakeGitHub) -> None:
    base, head = pushed(repo, {"broken-build": "x"})
    ran = run_all(repo, base, head, fake_github)
    assert ran["build"].proc.returncode == 1
    assert (ran["release"].outputs["result"], ran["release"].outputs["deploy"]) == ("refused", "false")
    # The lint job never ran (cancelled before it started, say): no check, no release.
    other_base, other = head, commit(repo, {"src.txt": "y"}, "again")
    for i in (1, 2, 3):
        job(repo, other, other_base, fake_github, command="run", stage="test", shard=str(i))
    job(repo, other, other_base, fake_github, command="aggregate", stage="test")
    job(repo, other, other_base, fake_github, command="run", stage="build")
    job(repo, other, other_base, fake_github, command="fan-out")
    release = job(repo, other, other_base, fake_github, command="release")
    assert release.proc.returncode == 1 and release.outputs["result"] == "refused"
    assert md_escape("stage 'lint' has no result") in release.summary


def test_the_plan_job_fails_when_the_workflow_no_longer_matches(repo: Path, fake_github: FakeGitHub) -> None:
    base, head = pushed(repo, {"src.txt": "x"})
    (repo / ".cdkit.yml").write_text(FANNED.replace("shards: 3", "shards: 2"))
    head = commit(repo, {}, "more shards, workflow not regenerated")
    plan = job(repo, head, base, fake_github, command="fan-out")
    assert plan.proc.returncode == 1 and plan.outputs["result"] == "error"
    assert any(line.startswith("::error title=cdkit%3A the workflow is out of date::") for line in plan.lines)
    assert any("shard: [1, 2, 3]" in line for line in plan.lines)
    assert checks(fake_github, head) == {}
    assert ZERO not in plan.outputs["sha"]


# --- the pre-push hook ---------------------------------------------------------------------------


def test_the_hook_blocks_a_pipeline_change_whose_workflow_was_not_regenerated(tmp_path: Path) -> None:
    from tests.helpers import make_bare
    from tests.test_hook import push, tip

    remote = make_bare(tmp_path / "remote.git")
    repo = make_repo(tmp_path / "hooked")
    hooked = FANNED.replace("run: echo linting", "run: echo linting\n    on: [pre-push, ci]")
    (repo / ".cdkit.yml").write_text(hooked)
    assert generate(repo).returncode == 0
    commit(repo, {}, "pipeline and its workflow")
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    assert cdkit("hook", "install", cwd=repo).returncode == 0

    stale = commit(repo, {".cdkit.yml": hooked.replace("shards: 3", "shards: 2")}, "fewer shards, stale workflow")
    blocked = push(repo, "origin", "main")
    assert blocked.returncode != 0 and tip(remote, "refs/heads/main") != stale
    assert "-        shard: [1, 2, 3]" in blocked.stderr and "+        shard: [1, 2]" in blocked.stderr
    assert "run `cdkit workflow generate --mode deployment` and commit the result" in blocked.stderr
    assert "linting" not in blocked.stderr  # blocked before any stage ran

    assert generate(repo).returncode == 0
    fixed = commit(repo, {}, "regenerate the workflow")
    passed = push(repo, "origin", "main")
    assert passed.returncode == 0, passed.stderr
    assert tip(remote, "refs/heads/main") == fixed
