"""`cdkit action` run as a runner runs it: a real repository, the runner's variables, real event payloads."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import tests.fake_github_release  # noqa: F401 - registers the release endpoints
from tests import event_payloads as ev
from tests.fake_github import FakeGitHub
from tests.fake_github_release import link_git
from tests.helpers import ROOT, cdkit, commit, config, git, make_repo
from tests.test_actions_io import parse_output_file

ZERO = "0" * 40
TOKEN = "ghs_" + "A1b2C3d4" * 5

PIPELINE = config("""
    version: 1
    release_branch: main
    stages:
      - name: lint
        run: echo linting
      - name: test
        run: echo testing && test ! -e broken
""")


@dataclass
class ActionRun:
    proc: subprocess.CompletedProcess[str]
    outputs: dict[str, str]
    summary: str

    @property
    def lines(self) -> list[str]:
        return self.proc.stdout.splitlines()


def run_action(repo: Path, event: str, payload: dict[str, Any], *, sha: str | None = None,
               env: dict[str, str] | None = None) -> ActionRun:
    runner = repo.parent / "runner"
    runner.mkdir(exist_ok=True)
    for name in ("output", "summary", "event.json"):
        (runner / name).write_text("")
    ev.write_event(runner / "event.json", payload)
    environ = {
        "GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(runner / "event.json"), "GITHUB_REF": str(payload.get("ref", "")),
        "GITHUB_REPOSITORY": "octo-org/octo-repo", "GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_SERVER_URL": "https://github.com", "GITHUB_API_URL": "http://127.0.0.1:9/unused",
        "GITHUB_ACTOR": "octocat", "GITHUB_TRIGGERING_ACTOR": "octocat", "GITHUB_WORKSPACE": str(repo),
        "GITHUB_OUTPUT": str(runner / "output"), "GITHUB_STEP_SUMMARY": str(runner / "summary"),
        "INPUT_COMMAND": "auto", "INPUT_CONFIG": ".cdkit.yml", "INPUT_ENVIRONMENT": "",
        "INPUT_WORKING_DIRECTORY": ".",
        **({"GITHUB_SHA": sha} if sha else {}), **(env or {}),
    }
    server = FakeGitHub.at(environ["GITHUB_API_URL"])
    if server is not None and sha:  # this job is a workflow run of the repository for its commit
        run_workflow(server, "octo-org/octo-repo", _run_head(event, payload, sha), run_id=4242)
    proc = cdkit("action", cwd=repo, env=environ)
    return ActionRun(proc, parse_output_file((runner / "output").read_text()), (runner / "summary").read_text())


def _run_head(event: str, payload: dict[str, Any], sha: str) -> str:
    """The commit a workflow run is for: a pull request's head (GitHub's `head_sha`), else GITHUB_SHA."""
    head = (payload.get("pull_request") or {}).get("head", {}).get("sha") if event == "pull_request" else None
    return str(head or sha)


def run_workflow(server: FakeGitHub, repo: str, sha: str, *, run_id: int) -> None:
    """GitHub starting the workflow run `run_id` for `sha`, unless it already did."""
    if not any(r["id"] == run_id and r["head_sha"] == sha for r in server.state.workflow_runs):
        server.start_workflow_run(repo, sha, run_id=run_id)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_repo(tmp_path / "repo")
    commit(root, {".cdkit.yml": PIPELINE, "a.txt": "a"}, "first")
    return root


def push_payload(before: str, after: str, ref: str = "refs/heads/main") -> dict[str, Any]:
    return ev.event("push.5.json", {ev.PUSH_AFTER: after}, before=before, ref=ref, created=before == ZERO,
                    repository__default_branch="main")


def fenced(lines: list[str], needle: str) -> bool:
    """Whether every line containing `needle` sits between ::stop-commands::T and ::T::."""
    open_token: str | None = None
    seen = False
    for line in lines:
        if open_token is None and line.startswith("::stop-commands::"):
            open_token = line.removeprefix("::stop-commands::")
        elif open_token is not None and line == f"::{open_token}::":
            open_token = None
        elif needle in line:
            seen = True
            if open_token is None:
                return False
    return seen


def test_push_runs_the_stages_and_reports_them(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {"b.txt": "b"}, "second")
    run = run_action(repo, "push", push_payload(base, head), sha=head)
    assert run.proc.returncode == 0, run.proc.stderr
    assert run.outputs["result"] == "passed" and run.outputs["sha"] == head
    assert run.outputs["deploy"] == "false" and run.outputs["environment"] == ""
    assert run.outputs["deployment-id"] == ""
    stages = json.loads(run.outputs["stages"])
    assert [(s["name"], s["status"]) for s in stages] == [("lint", "passed"), ("test", "passed")]
    assert all(isinstance(s["duration"], float) for s in stages)
    assert "::group::lint" in run.lines and "::group::test" in run.lines
    assert run.lines.count("::endgroup::") == 2
    assert fenced(run.lines, "linting") and fenced(run.lines, "testing")
    assert run.summary.startswith(f"## cdkit: passed on [`{head[:12]}`](https://github.com/octo-org/octo-repo/commit/{head})")
    assert "| `lint` | ✅ passed |" in run.summary and "| `test` | ✅ passed |" in run.summary
    assert f"**Range:** `{base[:12]}..{head[:12]}` (1 changed file(s))" in run.summary
    assert "[Logs of this run](https://github.com/octo-org/octo-repo/actions/runs/4242/attempts/1)" in run.summary


def test_failed_stage_exits_1_with_an_annotation(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {"broken": "x"}, "break it")
    run = run_action(repo, "push", push_payload(base, head), sha=head)
    assert run.proc.returncode == 1
    assert run.outputs["result"] == "failed" and run.outputs["deploy"] == "false"
    assert "::error title=cdkit%3A test failed::stage test failed: exit code 1" in run.lines
    assert "| `test` | ❌ failed |" in run.summary


def test_the_token_is_masked_first_and_kept_from_stages(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    dump = repo.parent / "stage-env"
    head = commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - name: env
            run: env > {dump}
    """)}, "dump env")
    run = run_action(repo, "push", push_payload(ZERO, head, "refs/heads/feature"), sha=head,
                     env={"INPUT_TOKEN": TOKEN, "GITHUB_TOKEN": TOKEN, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "oidc"})
    assert run.lines[0] == f"::add-mask::{TOKEN}"
    text = dump.read_text()
    assert TOKEN not in text and "GITHUB_OUTPUT" not in text and "GITHUB_STEP_SUMMARY" not in text
    assert "INPUT_" not in text and "CDKIT_SHA=" + head in text


def test_pull_request_from_a_fork_gets_no_credentials_and_no_release(repo: Path) -> None:
    dump = repo.parent / "stage-env"
    # The stage that dumps its environment is the base's (a PR is judged by its base's pipeline).
    base = commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - name: env
            run: env > {dump}
    """)}, "dump the stage environment")
    git(repo, "checkout", "-q", "-b", "feature")
    head = commit(repo, {"fork.txt": "from mallory"}, "fork change")
    git(repo, "checkout", "-q", "--detach", head)  # as actions/checkout leaves it (there: the merge commit)
    payload = ev.event("pull_request.opened.2.json", {ev.PR_HEAD: head, ev.PR_BASE: base},
                       pull_request__base__ref="main")
    payload["pull_request"]["head"]["repo"]["full_name"] = "mallory/octo-repo"
    run = run_action(repo, "pull_request", payload, sha=base,
                     env={"INPUT_TOKEN": TOKEN, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "oidc-secret",
                          "INPUT_COMMAND": "auto", "INPUT_ENVIRONMENT": ""})
    assert run.proc.returncode == 0, run.proc.stderr
    assert run.outputs["sha"] == head and run.outputs["deploy"] == "false"
    text = dump.read_text()
    assert TOKEN not in text and "oidc-secret" not in text
    assert "pull request from a fork" in run.summary


def test_nothing_to_do_for_other_events(repo: Path) -> None:
    run = run_action(repo, "check_run", ev.load("check_run.rerequested.json"))
    assert run.proc.returncode == 0
    assert run.outputs["result"] == "skipped" and run.outputs["deploy"] == "false"
    assert "nothing to do for check\\_run" in run.summary
    assert "cdkit: nothing to do for check_run" in run.proc.stdout


def test_other_events_fail_closed_when_a_release_is_asked_for(repo: Path) -> None:
    run = run_action(repo, "schedule", {"schedule": "0 0 * * *"}, env={"INPUT_ENVIRONMENT": "production"})
    assert run.proc.returncode == 1
    assert run.outputs["result"] == "refused" and run.outputs["deploy"] == "false"
    assert any(line.startswith("::error title=cdkit%3A refused::cdkit cannot release from schedule") for line in run.lines)


def test_malformed_payload_is_a_clear_error(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    payload = {**push_payload(ZERO, head), "after": "not-a-sha"}
    run = run_action(repo, "push", payload, sha=head)
    assert run.proc.returncode == 2
    fence, message, end = run.proc.stderr.splitlines()  # the message may quote payload text: fenced
    token = fence.removeprefix("::stop-commands::")
    assert fence.startswith("::stop-commands::") and end == f"::{token}::"
    assert message == ("cdkit: push event payload: field 'after': expected a 40 or 64 character lower-case hex SHA, "
                       'got "not-a-sha"')
    assert "Traceback" not in run.proc.stderr and run.outputs == {}


def hostile_push(head: str, field: str, value: Any) -> dict[str, Any]:
    """A real push payload with one field (dotted path) replaced."""
    payload = push_payload(ZERO, head)
    target = payload
    *parents, last = field.split(".")
    for part in parents:
        target = target[part]
    target[last] = value
    return payload


@pytest.mark.parametrize("field, value, message", [
    ("ref", "refs/heads/ma\x00in", "field 'ref': contains a NUL character"),
    ("ref", "refs/heads/" + "x" * 2_000_000, "field 'ref': 2,000,011 characters long, more than the 1,024"),
    ("ref", "refs/heads/\ud800", "field 'ref': not valid Unicode (it contains a lone surrogate)"),
    ("ref", "refs/heads/main\n::set-output name=x::y", "field 'ref': contains a control character"),
    ("repository.default_branch", "ma\x00in", "field 'repository.default_branch': contains a NUL character"),
    ("ref", "refs/heads/main", None),  # the control: the same payload, unharmed
])
def test_hostile_payload_fields_are_a_clear_usage_error(repo: Path, field: str, value: str,
                                                        message: str | None) -> None:
    head = commit(repo, {"b.txt": "b"}, "second")
    if field == "repository.default_branch":
        value_ref = {"ref": "refs/heads/feature"}  # a new branch: the default branch is read
    else:
        value_ref = {}
    payload = {**hostile_push(head, field, value), **value_ref}
    run = run_action(repo, "push", payload, sha=head, env={"GITHUB_REF": "refs/heads/main"})  # the runner's own
    assert "Traceback" not in run.proc.stderr + run.proc.stdout
    if message is None:
        assert run.proc.returncode == 0, run.proc.stderr
    else:
        assert run.proc.returncode == 2, run.proc.stdout + run.proc.stderr
        assert message in run.proc.stderr and len(run.proc.stderr) < 2000


@pytest.mark.parametrize("raw, message", [
    (b"[" * 100_000 + b"]" * 100_000, "nests arrays or objects too deeply to be a GitHub event payload"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nests arrays or objects too deeply to be a GitHub event payload"),
    (b'{"ref": "refs/heads/main", "pad": "' + b"x" * (26 * 2**20) + b'"}', "is larger than 25 MB"),
    (b'{"number": ' + b"9" * 5000 + b"}", "is not valid JSON: Exceeds the limit"),
    (b"[" * 500 + b"]" * 500, "is not a JSON object"),  # deep enough to hurt, shallow enough to parse
])
def test_hostile_payload_files_are_a_clear_usage_error(repo: Path, raw: bytes, message: str) -> None:
    head = git(repo, "rev-parse", "HEAD")
    run = run_action(repo, "push", {}, sha=head)
    event_path = repo.parent / "runner" / "event.json"
    event_path.write_bytes(raw)
    env = {"GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(event_path), "GITHUB_SHA": head,
           "GITHUB_ACTIONS": "", "GITHUB_WORKSPACE": str(repo)}
    proc = cdkit("action", cwd=repo, env=env)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert run.proc.returncode == 2  # the control: an empty payload is refused as malformed, not crashed on


def test_unknown_command_input_is_a_usage_error(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    run = run_action(repo, "push", push_payload(ZERO, head), sha=head, env={"INPUT_COMMAND": "rm -rf /"})
    assert run.proc.returncode == 2
    assert "input command: 'rm -rf /' is not one of auto, run, plan, deploy" in run.proc.stderr


def test_plan_command_runs_nothing(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    run = run_action(repo, "push", push_payload(ZERO, head), sha=head, env={"INPUT_COMMAND": "plan"})
    assert run.proc.returncode == 0 and run.outputs["result"] == "planned"
    assert "::group::lint" not in run.lines


# --- attacks: untrusted names and messages change nothing ------------------------------------------

EVIL_BRANCH = 'x";touch${IFS}pwned;#'
EVIL_MESSAGE = "innocent\n::set-output name=deploy::true\n::add-mask::linting\n::error::fake\n"


def test_hostile_branch_name_and_commit_message_change_nothing(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", EVIL_BRANCH)
    head = commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - name: lint
            run: echo linting; git log -1 --format=%B; printf '%s\\n' "$CDKIT_REF"
          - name: sneaky
            run: echo "deploy=true" >> "${GITHUB_OUTPUT:-/dev/null}"; echo "::set-output name=deploy::true"
    """)}, EVIL_MESSAGE)
    run = run_action(repo, "push", push_payload(ZERO, head, f"refs/heads/{EVIL_BRANCH}"), sha=head)
    assert run.proc.returncode == 0, run.proc.stderr
    assert not list(repo.parent.rglob("pwned")) and not (Path.cwd() / "pwned").exists()
    assert git(repo, "status", "--porcelain", "--ignored") == ""  # the work tree is exactly the commit
    assert run.outputs["deploy"] == "false" and set(run.outputs) == {
        "result", "sha", "stages", "deploy", "environment", "deployment-id", "run-stages"}
    # Every hostile line the stages printed is inside a stop-commands fence; none is a command.
    for needle in ("::set-output name=deploy::true", "::add-mask::linting", "::error::fake", EVIL_BRANCH):
        assert fenced(run.lines, needle), needle
    assert "`refs/heads/x\";touch${IFS}pwned;#`" in run.summary


def test_hostile_text_in_the_summary_is_escaped(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "<img/src=x/onerror=alert(1)>")
    head = commit(repo, {"b": "b"}, "x")
    run = run_action(repo, "push", push_payload(ZERO, head, "refs/heads/<img/src=x/onerror=alert(1)>"), sha=head)
    assert run.proc.returncode == 0, run.proc.stderr
    assert "`refs/heads/<img/src=x/onerror=alert(1)>`" in run.summary  # in a code span: shown, not rendered
    outside_code = re.sub(r"`[^`]*`", "", run.summary)
    assert "\\<img" in outside_code and not re.search(r"(?<!\\)<", outside_code)  # escaped everywhere else


# --- against the fake GitHub server: every request checked ------------------------------------------

DEPLOYING = config("""
    version: 1
    release_branch: main
    stages:
      - name: lint
        run: echo linting
      - name: test
        run: echo testing
    environments:
      - name: production
        mode: deployment
        deploy: echo "deploying $CDKIT_SHA"
        url: https://prod.example.com
""")


def github(server: FakeGitHub, **extra: str) -> dict[str, str]:
    return {"INPUT_TOKEN": TOKEN, "GITHUB_API_URL": server.url, **extra}


def requests_made(server: FakeGitHub) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests]


def test_stages_are_posted_as_check_runs_with_the_actions_token(repo: Path, fake_github: FakeGitHub) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {"b.txt": "b"}, "second")
    run = run_action(repo, "push", push_payload(base, head), sha=head, env=github(fake_github))
    assert run.proc.returncode == 0, run.proc.stderr
    record, first, second = sorted(fake_github.state.check_runs)
    assert requests_made(fake_github) == [
        ("POST", "/repos/octo-org/octo-repo/check-runs"),  # who pushed: created completed, in one request
        ("POST", "/repos/octo-org/octo-repo/check-runs"),  # each stage too, when it ends
        ("POST", "/repos/octo-org/octo-repo/check-runs"),
    ]
    assert {r.token for r in fake_github.requests} == {TOKEN}
    runs = fake_github.check_runs("octo-org/octo-repo", head)
    assert sorted((r["name"], r["status"], r["conclusion"]) for r in runs) == [
        ("cdkit push", "completed", "neutral"), ("cdkit/lint", "completed", "success"),
        ("cdkit/test", "completed", "success")]
    assert fake_github.state.check_runs[record]["external_id"].startswith(f"cdkit-push:1:{base}:")
    assert {r["details_url"] for r in runs} == {"https://github.com/octo-org/octo-repo/actions/runs/4242"}
    assert f"[details](https://github.com/octo-org/octo-repo/runs/{first})" in run.summary
    assert TOKEN not in run.proc.stdout.replace(f"::add-mask::{TOKEN}", "") and TOKEN not in run.summary


def test_fork_pull_requests_post_nothing(repo: Path, fake_github: FakeGitHub) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {"b.txt": "b"}, "from a fork")
    payload = ev.event("pull_request.opened.2.json", {ev.PR_HEAD: head, ev.PR_BASE: base},
                       pull_request__base__ref="main")
    payload["pull_request"]["head"]["repo"] = None
    run = run_action(repo, "pull_request", payload, sha=head, env=github(fake_github))
    assert run.proc.returncode == 0 and run.outputs["result"] == "passed"
    assert fake_github.requests == []


def test_deployment_mode_push_says_deploy_and_the_deploy_job_deploys(repo: Path, fake_github: FakeGitHub) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {".cdkit.yml": DEPLOYING}, "deploy me")
    pipeline = run_action(repo, "push", push_payload(base, head), sha=head, env=github(fake_github))
    assert pipeline.proc.returncode == 0, pipeline.proc.stderr + pipeline.proc.stdout
    assert (pipeline.outputs["result"], pipeline.outputs["deploy"], pipeline.outputs["environment"]) == \
        ("passed", "true", "production")
    assert not fake_github.state.extra.get("deployments")  # this job only decides; it deploys nothing
    writes = [r for r in requests_made(fake_github) if r[0] != "GET"]
    # who pushed, then the two check runs, nothing else
    assert [m for m, _ in writes] == ["POST", "POST", "POST"]
    fake_github.requests.clear()

    deploy = run_action(repo, "push", push_payload(base, head), sha=head,
                        env=github(fake_github, INPUT_COMMAND="deploy", INPUT_ENVIRONMENT="production"))
    assert deploy.proc.returncode == 0, deploy.proc.stderr + deploy.proc.stdout
    (deployment,) = fake_github.state.extra["deployments"].values()
    assert deploy.outputs["result"] == "deployed" and deploy.outputs["deploy"] == "true"
    assert deploy.outputs["deployment-id"] == str(deployment["id"]) and deploy.outputs["sha"] == head
    assert deployment["_request"]["ref"] == head and deployment["_request"]["auto_merge"] is False
    assert ("POST", "/repos/octo-org/octo-repo/deployments") in requests_made(fake_github)
    assert fenced(deploy.lines, f"deploying {head}")
    assert "**Release:** deploy" in deploy.summary


def test_the_deploy_job_on_a_fresh_runner_trusts_the_check_runs_on_github(repo: Path, fake_github: FakeGitHub) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {".cdkit.yml": DEPLOYING}, "deploy me")
    assert run_action(repo, "push", push_payload(base, head), sha=head, env=github(fake_github)).outputs["deploy"] == "true"
    fresh = repo.parent / "fresh" / "repo"  # another runner: a new clone, an empty ledger
    fresh.parent.mkdir()
    subprocess.run(["git", "clone", "-q", str(repo), str(fresh)], check=True)
    deploy = run_action(fresh, "push", push_payload(base, head), sha=head,
                        env=github(fake_github, INPUT_COMMAND="deploy", INPUT_ENVIRONMENT="production"))
    assert deploy.proc.returncode == 0, deploy.proc.stderr + deploy.proc.stdout
    assert deploy.outputs["result"] == "deployed"
    assert ("GET", f"/repos/octo-org/octo-repo/commits/{head}/check-runs") in requests_made(fake_github)


def test_the_deploy_job_refuses_a_commit_whose_stages_github_never_saw(repo: Path, fake_github: FakeGitHub) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {".cdkit.yml": DEPLOYING}, "never checked")
    deploy = run_action(repo, "push", push_payload(base, head), sha=head,
                        env=github(fake_github, INPUT_COMMAND="deploy", INPUT_ENVIRONMENT="production"))
    assert deploy.proc.returncode == 1
    assert deploy.outputs["result"] == "refused" and deploy.outputs["deploy"] == "false"
    assert not fake_github.state.extra.get("deployments")
    assert any(line.startswith("::error title=cdkit%3A deploy to production refused::") for line in deploy.lines)


REVIEWED = config("""
    version: 1
    release_branch: main
    stages:
      - name: build
        run: echo building
    environments:
      - name: production
        mode: delivery
        deploy: echo "deploying $CDKIT_SHA"
        approval: {via: review}
""")
BOB = {"login": "bob", "id": 2, "type": "User"}
ADA = {"login": "ada", "id": 1, "type": "User"}


def test_review_mode_opens_a_release_pull_request_then_deploys_on_an_approving_review(
        repo: Path, fake_github: FakeGitHub) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {".cdkit.yml": REVIEWED}, "release me")
    adopted = cdkit("adopt", "--env", "production", "--empty", cwd=repo)  # recorded in the ledger the jobs share
    assert adopted.returncode == 0, adopted.stderr
    extra = fake_github.state.extra
    extra["permissions"] = {"ada": "admin", "bob": "write"}
    link_git(fake_github, repo, {"ada@example.com": ADA})
    pipeline = run_action(repo, "push", push_payload(base, head), sha=head, env=github(fake_github))
    assert pipeline.proc.returncode == 0, pipeline.proc.stderr + pipeline.proc.stdout
    assert (pipeline.outputs["result"], pipeline.outputs["deploy"]) == ("passed", "false")
    # The release job evaluates the gate; the pipeline job only reports its stages.
    assert "deploys once the pull request is approved" in pipeline.summary, pipeline.summary
    assert {(r.method, r.path.split("?")[0].rsplit("/", 1)[-1]) for r in fake_github.requests} == {("POST", "check-runs")}

    before = len(fake_github.requests)
    release = run_action(repo, "push", push_payload(base, head), sha=head,
                         env=github(fake_github, INPUT_COMMAND="deploy", INPUT_ENVIRONMENT="production"))
    assert release.proc.returncode == 0, release.proc.stderr + release.proc.stdout
    assert (release.outputs["result"], release.outputs["deploy"]) == ("waiting", "false")
    assert "release pull request \\#1 for production opened" in release.summary
    # The summary's history is answered by the gate's read of the deployments (nothing deployed since),
    # and the pull request opened this instant is not asked for reviews.
    made = [(r.method, r.path) for r in fake_github.requests[before:]]
    assert made.count(("GET", "/repos/octo-org/octo-repo/deployments")) == 1
    assert ("GET", "/repos/octo-org/octo-repo/pulls/1/reviews") not in made
    assert "no deployments on GitHub yet" in release.summary
    pull = extra["pulls"][1]
    assert pull["head"]["sha"] == head and not extra.get("deployments")
    # Nobody approved yet, so who wrote and brought in the release is not asked (requests per commit) ...
    assert not _commit_people_requests(fake_github)

    extra["reviews"] = {1: [{"id": 1, "user": BOB, "state": "APPROVED", "commit_id": head,
                             "submitted_at": "2024-05-01T10:00:00Z", "body": ""}]}
    payload = ev.event("pull_request_review.submitted.approved.json", {ev.PR_HEAD: head, ev.PR_BASE: base})
    payload["pull_request"]["head"]["ref"] = "cdkit/release/production"
    payload["pull_request"]["base"]["ref"] = "cdkit/deployed/production"
    for side in ("head", "base"):  # the release PR lives in this repository (not a fork)
        payload["pull_request"][side]["repo"]["full_name"] = "octo-org/octo-repo"
    payload["pull_request"]["number"] = 1
    approved = run_action(repo, "pull_request_review", payload, sha=head, env=github(fake_github))
    assert approved.proc.returncode == 0, approved.proc.stderr + approved.proc.stdout
    (deployment,) = extra["deployments"].values()
    assert (approved.outputs["result"], approved.outputs["deploy"], approved.outputs["sha"]) == ("deployed", "true", head)
    assert approved.outputs["deployment-id"] == str(deployment["id"])
    assert deployment["_request"]["payload"]["approval"]["counted"][0]["who"] == "bob"
    # ... and is, once an approval could count: the people rules judged bob's.
    assert _commit_people_requests(fake_github)


def _commit_people_requests(server: FakeGitHub) -> list[str]:
    """The requests that find a released commit's linked accounts and the pull requests that brought it in."""
    return [r.path for r in server.requests if r.method == "GET"
            and re.search(r"/commits/[0-9a-f]{40}(/pulls)?$", r.path.split("?")[0])]


def test_a_review_of_any_other_pull_request_releases_nothing(repo: Path, fake_github: FakeGitHub) -> None:
    head = commit(repo, {".cdkit.yml": REVIEWED}, "x")
    payload = ev.event("pull_request_review.submitted.approved.json", {ev.PR_HEAD: head})
    run = run_action(repo, "pull_request_review", payload, sha=head, env=github(fake_github))
    assert run.proc.returncode == 0 and run.outputs["result"] == "skipped" and run.outputs["deploy"] == "false"
    assert "nothing to release" in run.summary and not fake_github.state.extra.get("deployments")


def test_deployment_event_deploys_and_updates_that_deployment(repo: Path, fake_github: FakeGitHub) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {".cdkit.yml": DEPLOYING}, "deploy me")
    assert run_action(repo, "push", push_payload(base, head), sha=head, env=github(fake_github)).proc.returncode == 0
    payload = ev.event("deployment.created.json", {ev.PR_BASE: head})
    deployment_id = payload["deployment"]["id"]
    fake_github.state.extra.setdefault("deployments", {})[deployment_id] = {
        "id": deployment_id, "sha": head, "ref": "main", "environment": "production", "payload": {},
        "created_at": "2024-05-01T10:00:00Z"}
    run = run_action(repo, "deployment", payload, sha=head, env=github(fake_github))
    assert run.proc.returncode == 0, run.proc.stderr + run.proc.stdout
    assert (run.outputs["result"], run.outputs["deploy"], run.outputs["environment"]) == ("deployed", "true", "production")
    assert run.outputs["deployment-id"] == str(deployment_id)
    states = [s["state"] for s in fake_github.state.extra["deployment_statuses"][deployment_id]]
    assert states[0] == "success"
    assert ("POST", "/repos/octo-org/octo-repo/deployments") not in requests_made(fake_github)


def test_deployment_event_for_another_commit_is_refused(repo: Path, fake_github: FakeGitHub) -> None:
    head = commit(repo, {".cdkit.yml": DEPLOYING}, "x")
    other = git(repo, "rev-parse", "HEAD~1")
    run = run_action(repo, "deployment", ev.event("deployment.created.json", {ev.PR_BASE: other}), sha=head,
                     env=github(fake_github))
    assert run.proc.returncode == 1 and run.outputs["result"] == "refused"
    assert "differs from the commit being checked" in run.summary and fake_github.requests == []


def test_the_composite_steps_run_cdkit_action_with_the_inputs_from_env(repo: Path, tmp_path: Path) -> None:
    """The `run:` script of action.yml, executed as the runner would after substituting `env:`."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    defaults = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    defaults["token"] = ""
    step = next(s for s in action["runs"]["steps"] if s.get("id") == "cdkit")
    env = {}
    for key, value in step["env"].items():
        match = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", value)
        assert match, f"{key} must come straight from an input"
        env[key] = defaults[match.group(1)]
    runner_temp = tmp_path / "runner-temp"
    (runner_temp / "cdkit-venv" / "bin").mkdir(parents=True)
    # The venv the install step makes, standing in as a wrapper: a symlink to a venv's python
    # loses the venv (its site-packages) on some Pythons.
    python = runner_temp / "cdkit-venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    head = git(repo, "rev-parse", "HEAD")
    event = tmp_path / "event.json"
    ev.write_event(event, push_payload(ZERO, head))
    (tmp_path / "out").write_text("")
    env.update({"RUNNER_TEMP": str(runner_temp), "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push",
                "GITHUB_EVENT_PATH": str(event), "GITHUB_SHA": head, "GITHUB_OUTPUT": str(tmp_path / "out"),
                "GITHUB_WORKSPACE": str(repo), "GITHUB_REPOSITORY": "octo-org/octo-repo"})
    proc = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env={**os.environ, **env},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert parse_output_file((tmp_path / "out").read_text())["result"] == "passed"


def test_a_pull_request_cannot_weaken_its_own_checks(repo: Path) -> None:
    # The base's pipeline fails when `broken` exists; the PR adds `broken` and rewrites the
    # test stage to `true`. Its checks must still be judged by the base's pipeline.
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    weakened = PIPELINE.replace("run: echo testing && test ! -e broken", 'run: "true"')
    head = commit(repo, {".cdkit.yml": weakened, "broken": "x"}, "weaken the gate")
    git(repo, "checkout", "-q", "--detach", head)
    payload = ev.event("pull_request.opened.2.json", {ev.PR_HEAD: head, ev.PR_BASE: base},
                       pull_request__base__ref="main")
    payload["pull_request"]["head"]["repo"]["full_name"] = "octo-org/octo-repo"
    run = run_action(repo, "pull_request", payload, sha=head, env={"INPUT_TOKEN": ""})
    assert run.proc.returncode == 1, run.proc.stdout + run.proc.stderr
    assert run.outputs["result"] == "failed"
    assert "judged by the pipeline of main at" in run.proc.stdout
    stages = {s["name"]: s["status"] for s in json.loads(run.outputs["stages"])}
    assert stages["test"] == "failed"


def pull_request_run(repo: Path, *, base: str, head: str, merge: bool = True,
                     payload_base: str | None = None) -> ActionRun:
    """`cdkit action` on `pull_request` as GitHub runs it: the checkout is the merge commit, not the head."""
    git(repo, "checkout", "-q", "--detach", base)
    if merge:
        git(repo, "merge", "-q", "--no-ff", "-m", "Merge pull request", head)
    else:
        git(repo, "checkout", "-q", "--detach", head)
    payload = ev.event("pull_request.opened.2.json", {ev.PR_HEAD: head, ev.PR_BASE: payload_base or base},
                       pull_request__base__ref="main")
    payload["pull_request"]["head"]["repo"]["full_name"] = payload["pull_request"]["base"]["repo"]["full_name"]
    return run_action(repo, "pull_request", payload, sha=git(repo, "rev-parse", "HEAD"), env={"INPUT_TOKEN": ""})


def stage_statuses(run: ActionRun) -> dict[str, str]:
    return {s["name"]: s["status"] for s in json.loads(run.outputs["stages"])}


@pytest.mark.parametrize("weakened", [True, False])
def test_a_pull_request_checked_out_as_its_merge_commit_is_judged_by_the_base_pipeline(
        repo: Path, weakened: bool) -> None:
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    if weakened:  # the attack: `test` becomes `true`, and the change breaks what it tested
        proposed = PIPELINE.replace("run: echo testing && test ! -e broken", 'run: "true"')
        head = commit(repo, {".cdkit.yml": proposed, "broken": "x"}, "weaken the gate")
    else:  # the control: a harmless change that also adds a stage to the pipeline
        proposed = PIPELINE + "  - name: docs\n    run: echo docs\n"
        head = commit(repo, {".cdkit.yml": proposed, "c.txt": "c"}, "add docs")
    run = pull_request_run(repo, base=base, head=head)
    assert "judged by the pipeline of main at" in run.proc.stdout, run.proc.stdout
    assert "this pull request changes .cdkit.yml; its new pipeline is valid" in run.proc.stdout
    if weakened:
        assert run.proc.returncode == 1 and stage_statuses(run)["test"] == "failed", run.proc.stdout
    else:
        assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
        assert stage_statuses(run) == {"lint": "passed", "test": "passed"}  # docs runs once merged


@pytest.mark.parametrize("broken", [True, False])
def test_a_pull_request_forked_from_an_older_weaker_pipeline_is_judged_by_the_base_branch_tip(
        tmp_path: Path, broken: bool) -> None:
    root = make_repo(tmp_path / "repo")
    weak = commit(root, {".cdkit.yml": PIPELINE.replace("run: echo testing && test ! -e broken", 'run: "true"'),
                         "a.txt": "a"}, "weak pipeline")
    tip = commit(root, {".cdkit.yml": PIPELINE}, "strict pipeline")
    git(root, "checkout", "-q", "-b", "feature", weak)  # the author picks the old fork point
    head = commit(root, {"broken": "x"} if broken else {"c.txt": "c"}, "change")
    run = pull_request_run(root, base=tip, head=head)
    assert f"judged by the pipeline of main at {tip[:12]}" in run.proc.stdout, run.proc.stdout
    if broken:
        assert run.proc.returncode == 1 and stage_statuses(run)["test"] == "failed"
    else:
        assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr


@pytest.mark.parametrize("broken", [True, False])
def test_the_base_branch_tip_is_fetched_when_the_checkout_lacks_it(tmp_path: Path, broken: bool) -> None:
    origin = make_repo(tmp_path / "origin")
    commit(origin, {".cdkit.yml": PIPELINE.replace("run: echo testing && test ! -e broken", 'run: "true"'),
                    "a.txt": "a"}, "weak pipeline")
    git(origin, "checkout", "-q", "-b", "feature")
    head = commit(origin, {"broken": "x"} if broken else {"c.txt": "c"}, "change")
    runner = tmp_path / "runner" / "repo"
    runner.parent.mkdir()
    subprocess.run(["git", "clone", "-q", "--branch", "feature", str(origin), str(runner)], check=True)
    git(origin, "checkout", "-q", "main")
    tip = commit(origin, {".cdkit.yml": PIPELINE}, "strict pipeline")  # after the runner's checkout
    assert subprocess.run(["git", "cat-file", "-e", f"{tip}^{{commit}}"], cwd=runner).returncode != 0
    run = pull_request_run(runner, base=head, head=head, merge=False, payload_base=tip)
    assert f"judged by the pipeline of main at {tip[:12]}" in run.proc.stdout, run.proc.stdout + run.proc.stderr
    if broken:
        assert run.proc.returncode == 1 and stage_statuses(run)["test"] == "failed"
    else:
        assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr


def test_a_pull_request_with_an_invalid_pipeline_is_a_config_error(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    head = commit(repo, {".cdkit.yml": PIPELINE.replace("run: echo linting", "runn: echo linting")}, "typo")
    run = pull_request_run(repo, base=base, head=head, merge=False)
    assert run.proc.returncode == 2, run.proc.stdout + run.proc.stderr
    assert "Traceback" not in run.proc.stderr and "runn" in run.proc.stderr
    # On the pull request's own file, where GitHub shows it in the diff (not `.cdkit.yml at <sha>`).
    assert any("file=.cdkit.yml,line=5,col=5::stages[0].runn: unknown key 'runn'" in line
               for line in invalid_pipeline_annotations(run.lines)), run.lines
    assert run.outputs["result"] == "error" and run.outputs["deploy"] == "false"


def invalid_pipeline_annotations(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("::error ") and "invalid pipeline file" in line]


def test_an_invalid_pipeline_in_ci_is_an_annotation_at_its_line_a_summary_and_result_error(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    broken = PIPELINE.replace("run: echo linting", "runn: echo linting").replace("- name: test", "- nme: test")
    head = commit(repo, {".cdkit.yml": broken}, "two typos")
    run = run_action(repo, "push", push_payload(base, head), sha=head)
    assert run.proc.returncode == 2, run.proc.stdout + run.proc.stderr
    assert "Traceback" not in run.proc.stderr and "runn" in run.proc.stderr  # the log line, as before
    # One error annotation per problem, each at the file:line:col the problem is at.
    found = [re.fullmatch(r"::error title=cdkit%3A invalid pipeline file,file=\.cdkit\.yml,line=(\d+),col=(\d+)::"
                          r"(stages\[\d\][.\w]*): .*", line) for line in invalid_pipeline_annotations(run.lines)]
    assert all(found), run.lines
    assert sorted((int(m[1]), int(m[2]), m[3]) for m in found if m) == [
        (4, 5, "stages[0]"), (5, 5, "stages[0].runn"), (6, 5, "stages[1]"), (6, 5, "stages[1].nme")]
    assert broken.splitlines()[4] == "    runn: echo linting" and broken.splitlines()[5] == "  - nme: test"
    # Every output is defined, so later jobs' `if:` conditions read a decision.
    assert run.outputs == {"result": "error", "sha": head, "stages": "[]", "deploy": "false", "environment": "",
                           "deployment-id": "", "run-stages": "[]"}
    assert run.summary.startswith("## cdkit: error")
    assert "The pipeline file `.cdkit.yml` is invalid" in run.summary and "`.cdkit.yml:" in run.summary
    # The control: the same push with the typos fixed runs, and annotates nothing of the kind.
    fixed = commit(repo, {".cdkit.yml": PIPELINE}, "fix the typos")
    good = run_action(repo, "push", push_payload(head, fixed), sha=fixed)
    assert good.proc.returncode == 0, good.proc.stdout + good.proc.stderr
    assert good.outputs["result"] == "passed" and not invalid_pipeline_annotations(good.lines)


def test_run_and_plan_never_release_on_a_release_event(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    payload = ev.load("deployment.created.json")
    payload["deployment"]["sha"] = head
    for command in ("run", "plan"):
        run = run_action(repo, "deployment", payload, sha=head, env={"INPUT_COMMAND": command})
        assert run.proc.returncode == 0, run.proc.stderr
        assert run.outputs["result"] == "skipped" and run.outputs["deploy"] == "false"
        assert f"command\\: {command} never releases" in run.summary  # Markdown-escaped


ENVIRONMENT_APPROVAL = config("""
    environments:
      - name: production
        deploy: "true"
        approval: {via: environment}
""")


def test_environment_approval_is_never_offered_for_a_commit_other_than_the_runs(repo: Path) -> None:
    # GitHub's environment reviewers approve the run, and the run is bound to GITHUB_SHA:
    # a dispatch that judges another commit (inputs.sha) must not set deploy=true.
    commit(repo, {".cdkit.yml": PIPELINE + ENVIRONMENT_APPROVAL}, "add production")
    older = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {"b.txt": "b"}, "newer")
    payload = ev.event("workflow_dispatch.json", inputs={"sha": older}, ref="refs/heads/main")
    run = run_action(repo, "workflow_dispatch", payload, sha=head)
    assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
    assert run.outputs["sha"] == older and run.outputs["deploy"] == "false"
    assert "whose head is the commit" in run.summary
    same = run_action(repo, "workflow_dispatch", ev.event("workflow_dispatch.json", ref="refs/heads/main"), sha=head)
    assert same.outputs["sha"] == head and same.outputs["deploy"] == "true", same.summary


@pytest.mark.parametrize("protected", [False, True])
def test_environment_approval_preflight_runs_before_deploy_is_offered(repo: Path, fake_github: FakeGitHub,
                                                                      protected: bool) -> None:
    commit(repo, {".cdkit.yml": PIPELINE + ENVIRONMENT_APPROVAL}, "add production")
    head = git(repo, "rev-parse", "HEAD")
    if protected:
        fake_github.state.extra["environments"] = {"production": {"id": 1, "name": "production", "protection_rules": [
            {"id": 6, "type": "required_reviewers", "reviewers": [{"type": "User", "reviewer": {"login": "bob",
                                                                                               "id": 2}}]}]}}
    payload = ev.event("workflow_dispatch.json", ref="refs/heads/main")
    run = run_action(repo, "workflow_dispatch", payload, sha=head, env=github(fake_github))
    if protected:
        assert run.proc.returncode == 0 and run.outputs["deploy"] == "true", run.summary
    else:
        assert run.proc.returncode == 1 and run.outputs["deploy"] == "false"
        assert run.outputs["result"] == "refused"
        assert "does not exist" in run.summary
    assert ("GET", "/repos/octo-org/octo-repo/environments/production") in requests_made(fake_github)
