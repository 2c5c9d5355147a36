"""Only trusted evidence counts at the gate: end to end against the fake GitHub (issue 9 §2).

Each attack leaves on GitHub what a writer, another app, a fork or a laptop can leave
there, then runs the deploy job on a fresh runner (an empty ledger, so GitHub is the
only evidence). Each is paired with a positive control in which CI produced the same
evidence and the deploy goes through, so a refusal cannot pass vacuously.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fake_github import FakeGitHub
from tests.fake_github_release import send
from tests.helpers import cdkit, commit, config, git, make_bare, make_repo
from tests.test_action import ActionRun, github, push_payload, run_action

REPO = "octo-org/octo-repo"
WRITER = "ghp_" + "W" * 36  # a collaborator's personal token: acts as octocat
OTHER_APP = "ghs_" + "O" * 36  # another GitHub App's installation token
WORKFLOW_TOKEN = "ghs_" + "F" * 36  # GITHUB_TOKEN of some other workflow run: acts as GitHub Actions
STAGES = ("lint", "test")


def pipeline(*, report: str = "auto", extra: str = "", test: str = "echo testing",
             environments: tuple[str, ...] = ("production",)) -> str:
    """Two stages (run by the hook and in CI) and deployment-mode environments, in order."""
    envs = "".join(f"  - {{name: {name}, mode: deployment, deploy: 'echo deploying $CDKIT_SHA'}}\n"
                   for name in environments)
    return config(f"""
        version: 1
        release_branch: main
        report: {report}
        stages:
          - {{name: lint, run: echo linting, on: [pre-push, ci]}}
          - {{name: test, run: '{test}', on: [pre-push, ci]}}
        environments:
    """).replace("environments:\n", "environments:\n" if envs else "environments: []\n") + envs + extra


@pytest.fixture
def make_project(tmp_path: Path) -> Any:
    def make(text: str) -> tuple[Path, str, str]:
        repo = make_repo(tmp_path / "repo")
        base = commit(repo, {".cdkit.yml": text, "a.txt": "a"}, "first")
        head = commit(repo, {"b.txt": "b"}, "second")
        return repo, base, head
    return make


def ci(repo: Path, server: FakeGitHub, base: str, head: str) -> ActionRun:
    """The CI job for the push of `head`: runs the stages and reports them with the Actions token."""
    return run_action(repo, "push", push_payload(base, head), sha=head, env=github(server))


def deploy_job(repo: Path, server: FakeGitHub, base: str, head: str, environment: str = "production",
               extra: dict[str, str] | None = None) -> ActionRun:
    """The deploy job, on another runner: a fresh clone, an empty ledger; GitHub is all it knows."""
    fresh = repo.parent / f"fresh-{len(list(repo.parent.glob('fresh-*')))}" / "repo"
    fresh.parent.mkdir()
    subprocess.run(["git", "clone", "-q", str(repo), str(fresh)], check=True)
    return run_action(fresh, "push", push_payload(base, head), sha=head,
                      env=github(server, INPUT_COMMAND="deploy", INPUT_ENVIRONMENT=environment, **(extra or {})))


def forge_check_runs(server: FakeGitHub, token: str, sha: str, conclusion: str = "success") -> None:
    for stage in STAGES:
        send(server, "POST", f"/repos/{REPO}/check-runs", {
            "name": f"cdkit/{stage}", "head_sha": sha, "status": "completed", "conclusion": conclusion,
            "output": {"title": "passed", "summary": "looks fine"}}, token=token)


def set_statuses(server: FakeGitHub, token: str, sha: str, state: str = "success",
                 description: str = "passed in 0.1s", stages: tuple[str, ...] = STAGES) -> None:
    for stage in stages:
        send(server, "POST", f"/repos/{REPO}/statuses/{sha}",
             {"state": state, "context": f"cdkit/{stage}", "description": description}, token=token)


def deployed(run: ActionRun) -> bool:
    return run.proc.returncode == 0 and run.outputs["result"] == "deployed"


def refused(run: ActionRun, why: str) -> bool:
    text = run.proc.stdout + run.summary
    return run.proc.returncode == 1 and run.outputs["result"] == "refused" and why in text


# --- check runs ----------------------------------------------------------------------------------


def test_control_check_runs_of_ci_release(make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline())
    assert ci(repo, fake_github, base, head).proc.returncode == 0
    run = deploy_job(repo, fake_github, base, head)
    assert deployed(run), run.proc.stdout + run.proc.stderr
    assert ("GET", f"/repos/{REPO}/actions/runs") in [(r.method, r.path) for r in fake_github.requests]


def test_check_runs_of_another_app_do_not_count(make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline())
    fake_github.app_ids[OTHER_APP] = 999
    fake_github.start_workflow_run(REPO, head, run_id=4242)  # even inside CI's own workflow run
    forge_check_runs(fake_github, OTHER_APP, head)
    run = deploy_job(repo, fake_github, base, head)
    assert refused(run, "was created by the app 'app-999' (id 999), not by the app the gate trusts"), run.summary
    assert not fake_github.state.extra.get("deployments")


def test_another_app_id_counts_when_the_pipeline_names_it(make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline(extra="evidence: {app_id: 999}\n"))
    fake_github.app_ids[OTHER_APP] = 999
    fake_github.start_workflow_run(REPO, head, app_id=999)
    forge_check_runs(fake_github, OTHER_APP, head)
    assert deployed(deploy_job(repo, fake_github, base, head))
    # ... and then GitHub Actions' own are the ones that do not count.
    repo2, base2, head2 = repo, head, commit(repo, {"c.txt": "c"}, "third")
    assert ci(repo2, fake_github, base2, head2).proc.returncode == 0
    assert refused(deploy_job(repo2, fake_github, base2, head2), "not by the app the gate trusts (evidence.app_id: 999)")


def test_actions_check_runs_outside_a_workflow_run_for_the_commit_do_not_count(
        make_project: Any, fake_github: FakeGitHub) -> None:
    # A writer's workflow on another branch creates `cdkit/*` check runs for this SHA with its GITHUB_TOKEN.
    repo, base, head = make_project(pipeline())
    fake_github.start_workflow_run(REPO, base)  # the writer's run is for another commit
    forge_check_runs(fake_github, WORKFLOW_TOKEN, head)
    run = deploy_job(repo, fake_github, base, head)
    assert refused(run, "is not part of a workflow run of this repository for this commit"), run.summary


def test_check_runs_in_a_forks_workflow_run_do_not_count(make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline())
    fake_github.start_workflow_run(REPO, head, head_repo="evil/octo-repo", event="pull_request")
    forge_check_runs(fake_github, WORKFLOW_TOKEN, head)
    run = deploy_job(repo, fake_github, base, head)
    assert refused(run, "is not part of a workflow run of this repository for this commit"), run.summary


def test_a_newer_failed_check_run_of_ci_wins_over_an_older_pass(make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline())
    assert ci(repo, fake_github, base, head).proc.returncode == 0
    forge_check_runs(fake_github, WORKFLOW_TOKEN, head, conclusion="failure")  # a re-run, inside CI's run
    assert refused(deploy_job(repo, fake_github, base, head), "stage 'lint' failed")


def test_every_page_of_check_runs_is_read(make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline())
    assert ci(repo, fake_github, base, head).proc.returncode == 0
    for n in range(120):  # other tools' check runs, newer than cdkit's
        send(fake_github, "POST", f"/repos/{REPO}/check-runs",
             {"name": f"other/{n}", "head_sha": head, "status": "completed", "conclusion": "success"},
             token=OTHER_APP)
    fake_github.requests.clear()
    assert deployed(deploy_job(repo, fake_github, base, head))
    pages = [r for r in fake_github.requests if r.path.endswith(f"/commits/{head}/check-runs")]
    assert len(pages) == 2


# --- commit statuses -------------------------------------------------------------------------------


def test_control_statuses_of_ci_release(make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline(report="statuses"))
    assert ci(repo, fake_github, base, head).proc.returncode == 0
    assert {s["creator"]["login"] for s in fake_github.statuses(REPO, head)} == {"github-actions[bot]"}
    assert deployed(deploy_job(repo, fake_github, base, head))


def test_a_writers_statuses_do_not_count(make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline(report="statuses"))
    set_statuses(fake_github, WRITER, head)
    run = deploy_job(repo, fake_github, base, head)
    assert refused(run, "the commit status was set by octocat, not by github-actions[bot] (evidence.creators)"), \
        run.summary


def test_a_writer_named_in_evidence_creators_counts(make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline(report="statuses", extra="evidence: {creators: [octocat]}\n"))
    set_statuses(fake_github, WRITER, head)
    assert deployed(deploy_job(repo, fake_github, base, head))


def test_statuses_do_not_count_where_ci_reports_check_runs(make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline(report="checks"))
    set_statuses(fake_github, WORKFLOW_TOKEN, head)  # even by the Actions account
    assert refused(deploy_job(repo, fake_github, base, head), "the pipeline reports check runs in CI (report: checks)")


def test_every_page_of_statuses_is_read_and_a_buried_failure_is_found(
        make_project: Any, fake_github: FakeGitHub) -> None:
    repo, base, head = make_project(pipeline(report="statuses"))
    assert ci(repo, fake_github, base, head).proc.returncode == 0
    set_statuses(fake_github, WORKFLOW_TOKEN, head, state="failure", description="failed: exit code 1",
                 stages=("test",))
    for n in range(130):  # newer statuses of other contexts: cdkit's land on page 2
        send(fake_github, "POST", f"/repos/{REPO}/statuses/{head}", {"state": "success", "context": f"other/{n}"},
             token=WRITER)
    fake_github.requests.clear()
    run = deploy_job(repo, fake_github, base, head)
    assert refused(run, "stage 'test' failed"), run.summary
    assert len([r for r in fake_github.requests if r.path.endswith(f"/commits/{head}/statuses")]) == 2


def _reads(server: FakeGitHub, sha: str, what: str) -> int:
    return len([r for r in server.requests if r.method == "GET" and r.path.endswith(f"/commits/{sha}/{what}")])


def test_the_ci_job_judges_its_own_stages_first_hand_and_a_fresh_job_reads_github(
        make_project: Any, fake_github: FakeGitHub) -> None:
    """The job that ran the stages has their results in its ledger: its gate reads none of its check runs back."""
    repo, base, head = make_project(pipeline())
    run = ci(repo, fake_github, base, head)
    assert run.proc.returncode == 0 and run.outputs["deploy"] == "true", run.proc.stdout + run.proc.stderr
    assert _reads(fake_github, head, "check-runs") == 0 and _reads(fake_github, head, "statuses") == 0
    fake_github.requests.clear()
    # Control: the deploy job knows only GitHub, and reads it (every stage has a counted check run: no statuses).
    assert deployed(deploy_job(repo, fake_github, base, head))
    assert _reads(fake_github, head, "check-runs") == 1 and _reads(fake_github, head, "statuses") == 0


@pytest.mark.parametrize("state", ["success", "failure"])
def test_a_stage_no_check_run_counts_for_is_judged_by_its_status(
        make_project: Any, fake_github: FakeGitHub, state: str) -> None:
    """Statuses are read once a check run leaves a stage uncounted: the status decides it, either way."""
    repo, base, head = make_project(pipeline())
    fake_github.start_workflow_run(REPO, head, run_id=4242)
    send(fake_github, "POST", f"/repos/{REPO}/check-runs", {
        "name": "cdkit/lint", "head_sha": head, "status": "completed", "conclusion": "success",
        "output": {"title": "passed", "summary": "ok"}}, token=WORKFLOW_TOKEN)
    fake_github.app_ids[OTHER_APP] = 999
    send(fake_github, "POST", f"/repos/{REPO}/check-runs", {
        "name": "cdkit/test", "head_sha": head, "status": "completed", "conclusion": "success",
        "output": {"title": "passed", "summary": "ok"}}, token=OTHER_APP)  # not counted
    set_statuses(fake_github, WORKFLOW_TOKEN, head, state=state, stages=("test",))
    fake_github.requests.clear()
    run = deploy_job(repo, fake_github, base, head)
    assert _reads(fake_github, head, "statuses") == 1
    if state == "success":
        assert deployed(run), run.summary
    else:
        assert refused(run, "stage 'test' failed"), run.summary


# --- the pre-push hook's statuses: shown, never counted -----------------------------------------------


@pytest.mark.parametrize("ci_passes", [True, False])
def test_the_hooks_statuses_delivered_after_ci_never_turn_a_failure_green(
        tmp_path: Path, fake_github: FakeGitHub, ci_passes: bool) -> None:
    remote = make_bare(tmp_path / "remote.git")
    laptop = make_repo(tmp_path / "laptop")
    # The test stage passes on the laptop and, in the attack, fails in CI.
    test = "true" if ci_passes else 'test -z "$GITHUB_ACTIONS"'
    base = commit(laptop, {".cdkit.yml": pipeline(report="statuses", test=test)}, "first")
    git(laptop, "remote", "add", "origin", str(remote))
    git(laptop, "push", "-q", "origin", "main")
    assert cdkit("hook", "install", cwd=laptop).returncode == 0
    head = commit(laptop, {"b.txt": "b"}, "second")
    laptop_env = {"GITHUB_TOKEN": WRITER, "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": fake_github.url}
    pushed = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=laptop, capture_output=True, text=True,
                            env={**os.environ, **laptop_env})
    assert pushed.returncode == 0, pushed.stderr

    runner = tmp_path / "ci" / "repo"
    runner.parent.mkdir()
    subprocess.run(["git", "clone", "-q", str(remote), str(runner)], check=True)
    assert ci(runner, fake_github, base, head).proc.returncode == (0 if ci_passes else 1)
    synced = cdkit("sync", cwd=laptop, env=laptop_env)  # the laptop's results arrive after CI's
    assert synced.returncode == 0, synced.stderr
    newest = fake_github.statuses(REPO, head)[0]
    assert newest["creator"]["login"] == "octocat" and newest["description"].endswith("(pre-push)")
    assert newest["state"] == "success"

    run = deploy_job(runner, fake_github, base, head)
    if ci_passes:
        assert deployed(run), run.summary
    else:
        assert refused(run, "stage 'test' failed"), run.summary


def test_the_hooks_statuses_alone_are_shown_as_not_counted(tmp_path: Path, fake_github: FakeGitHub,
                                                           make_project: Any) -> None:
    repo, base, head = make_project(pipeline(report="statuses", extra="evidence: {creators: [octocat]}\n"))
    set_statuses(fake_github, WRITER, head, description="passed in 0.2s (pre-push)")
    run = deploy_job(repo, fake_github, base, head)
    assert refused(run, "is the pre-push hook's result, which is shown but never counts for a release"), run.summary


# --- deployments ----------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["cdkit", "writer"])
def test_only_cdkits_own_deployments_say_what_an_environment_runs(
        make_project: Any, fake_github: FakeGitHub, by: str) -> None:
    repo, base, head = make_project(pipeline(environments=("staging", "production")))
    assert ci(repo, fake_github, base, head).proc.returncode == 0
    if by == "cdkit":
        assert deployed(deploy_job(repo, fake_github, base, head, environment="staging"))
    else:  # a hand-made deployment, even with cdkit's payload marker, claims staging runs `head`
        made = send(fake_github, "POST", f"/repos/{REPO}/deployments", {
            "ref": head, "environment": "staging", "auto_merge": False, "required_contexts": [],
            "payload": {"cdkit_token": "0" * 32}}, token=WRITER)
        send(fake_github, "POST", f"/repos/{REPO}/deployments/{made['id']}/statuses", {"state": "success"},
             token=WRITER)
    run = deploy_job(repo, fake_github, base, head, environment="production")
    if by == "cdkit":
        assert deployed(run), run.summary
    else:
        assert refused(run, "production comes after staging, which has not run"), run.summary


@pytest.mark.parametrize("where", ["ci", "laptop"])
def test_the_hooks_runs_in_a_ledger_count_on_a_laptop_but_never_in_ci(tmp_path: Path, where: str) -> None:
    # A self-hosted runner that someone also pushes from keeps the hook's runs in its ledger.
    remote = make_bare(tmp_path / "remote.git")
    repo = make_repo(tmp_path / "repo")
    base = commit(repo, {".cdkit.yml": pipeline()}, "first")
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    assert cdkit("hook", "install", cwd=repo).returncode == 0
    head = commit(repo, {"b.txt": "b"}, "second")
    git(repo, "push", "-q", "origin", "main")  # the hook runs both stages: they pass, in the ledger
    if where == "ci":
        run = run_action(repo, "push", push_payload(base, head), sha=head,
                         env={"INPUT_COMMAND": "deploy", "INPUT_ENVIRONMENT": "production"})
        assert refused(run, "stage 'lint' has no result for"), run.proc.stdout + run.summary
    else:
        result = cdkit("deploy", "--env", "production", cwd=repo)
        assert result.returncode == 0, result.stdout + result.stderr
