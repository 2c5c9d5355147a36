"""A release job's summary shows the environment's last deployments and 30 days of DORA keys (issue 13 §5).

Against the fake GitHub: the history is read with the history code (`--source github`),
bounded (one page and one statuses request per deployment, at most MAX_DEPLOYMENTS), and a
GitHub that cannot be read leaves the release as it was, with one line saying so.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

import tests.fake_github_release  # noqa: F401 - registers the deployment endpoints
from cdkit.history.ci_summary import MAX_DEPLOYMENTS
from tests.fake_github import FakeGitHub, Reply, Request
from tests.fake_github_release import add_deployment
from tests.helpers import commit, git, make_repo
from tests.test_action import DEPLOYING, PIPELINE, github, push_payload, run_action

DAY = 86400.0


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_repo(tmp_path / "repo")
    commit(root, {".cdkit.yml": PIPELINE, "a.txt": "a"}, "first")
    return root


def ago(days: float) -> str:
    return datetime.fromtimestamp(time.time() - days * DAY, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def finished(req: Request) -> bool:
    """The deploy's final status: what the summary's history is read after."""
    return req.method == "POST" and req.path.endswith("/statuses") and \
        (req.body or {}).get("state") in ("success", "failure", "error")


def history_requests(server: FakeGitHub) -> list[Request]:
    """The summary's reads: its one page of deployments, and the statuses it asks for after it."""
    ends = [i for i, r in enumerate(server.requests) if finished(r)]
    return server.requests[ends[-1] + 1:] if ends else []


def deploy_job(repo: Path, server: FakeGitHub) -> tuple[str, str]:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {".cdkit.yml": DEPLOYING}, "deploy me")
    assert run_action(repo, "push", push_payload(base, head), sha=head, env=github(server)).proc.returncode == 0
    deploy = run_action(repo, "push", push_payload(base, head), sha=head,
                        env=github(server, INPUT_COMMAND="deploy", INPUT_ENVIRONMENT="production"))
    assert deploy.proc.returncode == 0, deploy.proc.stderr + deploy.proc.stdout
    assert deploy.outputs["result"] == "deployed"
    return head, deploy.summary


def test_the_deploy_job_summary_shows_the_last_deployments_and_the_four_keys(repo: Path,
                                                                              fake_github: FakeGitHub) -> None:
    old = git(repo, "rev-parse", "HEAD")
    for days, state in ((45, "success"), (9, "success"), (6, "failure"), (5.9, "success")):  # 45 days: outside
        add_deployment(fake_github, environment="production", sha=old, state=state, created_at=ago(days),
                       finished_at=ago(days - 0.001), creator="deployer")
    add_deployment(fake_github, environment="staging", sha=old, state="failure", created_at=ago(1))
    head, summary = deploy_job(repo, fake_github)
    lines = summary.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("**Delivery (`production`, 30 days")))
    block = lines[start:start + 6]
    assert block[0].endswith(f"; {len(history_requests(fake_github))} GitHub requests):**")
    assert block[1].startswith("- DORA: ") and "change failure rate 25% (1/4)" in block[1]  # 4 in 30 days
    assert "lead time p50" in block[1] and "time to restore p50" in block[1]
    assert f"`{head[:12]}` deployed" in block[2]  # this job's deployment first
    assert [line.split()[3] for line in block[3:6]] == ["deployed", "failed", "deployed"]
    assert "by `@deployer`" in block[3]
    assert lines[start + 6].startswith("- Ledger audit chain head (this job): `")
    assert not any("staging" in line for line in block)


def test_the_history_read_is_bounded(repo: Path, fake_github: FakeGitHub) -> None:
    old = git(repo, "rev-parse", "HEAD")
    for n in range(MAX_DEPLOYMENTS + 15):
        add_deployment(fake_github, environment="production", sha=old, state="success",
                       created_at=ago(20 - n * 0.1))
    _, summary = deploy_job(repo, fake_github)
    reads = history_requests(fake_github)
    assert len(reads) == 1 + MAX_DEPLOYMENTS, [(r.method, r.path, r.query) for r in reads][-3:]  # one page, one statuses request each: no second page
    assert f"newest {MAX_DEPLOYMENTS} deployments since" in summary
    assert f"; {1 + MAX_DEPLOYMENTS} GitHub requests):**" in summary


class FailHistoryReads:
    """A fault for the fake: every read of deployments after the deploy (the summary's) fails with a 500."""

    def __init__(self, server: FakeGitHub) -> None:
        self.server = server
        self.failed = 0
        self.deployed = False

    def __call__(self, req: Request) -> Reply | None:
        self.server.faults.insert(0, self)  # stays armed for the requests after this one
        self.deployed = self.deployed or finished(req)
        if self.deployed and req.method == "GET" and req.path.endswith("/deployments"):
            self.failed += 1
            return Reply(500, {"message": "Server Error"})
        return None


def test_a_github_that_cannot_be_read_does_not_fail_the_release(repo: Path, fake_github: FakeGitHub) -> None:
    fault = FailHistoryReads(fake_github)
    fake_github.faults.append(fault)
    head, summary = deploy_job(repo, fake_github)  # deployed, exit 0
    fake_github.faults.clear()
    assert fault.failed >= 1
    (line,) = [line for line in summary.splitlines() if line.startswith("**Delivery")]
    assert line.startswith("**Delivery:** the deployment history could not be read from GitHub (")
    assert line.endswith("); the release is not affected")
    assert "**Release:** deploy" in summary and head[:12] in summary
