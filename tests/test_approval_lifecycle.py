"""Approvals that age and can be withdrawn, and never pad the count (issue 10 §6): real repositories and processes.

`approval.expires` is judged at the ledger's clock, injected here only, in the test process
(the command functions' `clock` parameter); no option or environment variable moves it.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from cdkit.commands.deploy import deploy
from cdkit.errors import GateFailed
from tests.helpers import adopt_new, cdkit, delivery_pipeline, git, make_repo

DAY = 86400.0


def pipeline(policy: str = "") -> str:
    return delivery_pipeline("local", ", signed: false" + policy)


def person(name: str) -> dict[str, str]:
    email = f"{name.lower()}@example.com"
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email}


def ada_commits(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=repo, check=True, env={**os.environ, **person("Ada")})
    assert cdkit("run", cwd=repo).returncode == 0
    return git(repo, "rev-parse", "HEAD")


def approve(repo: Path, sha: str, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cdkit("approve", *args, sha, "--env", "prod", cwd=repo, env=person(who))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo")
    ada_commits(repo, {".cdkit.yml": pipeline(", expires: 7d")}, "the pipeline, by Ada")
    adopt_new(repo, "prod")
    return repo


def deploy_at(repo: Path, sha: str, at: float) -> int:
    return deploy(environment="prod", sha=sha, rollback=False, config=None, as_json=False, cwd=repo,
                  clock=lambda: at)


def test_an_approval_older_than_approval_expires_no_longer_counts(repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    assert approve(repo, sha, "Bob").returncode == 0
    given = time.time()
    with pytest.raises(GateFailed) as refused:  # attack: eight days later, a week-old approval releases nothing
        deploy_at(repo, sha, given + 8 * DAY)
    text = str(refused.value)
    assert "Bob <bob@example.com>'s approval does not count" in text and "expired at" in text
    assert "(approval.expires: 7d); approve again" in text
    assert deploy_at(repo, sha, given + 6 * DAY) == 0  # control: six days later it still counts


def test_revoke_withdraws_only_your_own_approval_and_is_recorded(repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    assert approve(repo, sha, "Bob").returncode == 0
    theirs = approve(repo, sha, "Carol", "--revoke")  # attack: withdrawing someone else's approval
    assert theirs.returncode == 1 and "Carol <carol@example.com> has no approval" in theirs.stderr
    assert "only they can withdraw theirs" in theirs.stderr and "Traceback" not in theirs.stderr
    revoked = approve(repo, sha, "Bob", "--revoke", "--json")
    assert revoked.returncode == 0, revoked.stderr
    doc = json.loads(revoked.stdout)
    assert (doc["revoked"], doc["approved"], doc["decision"]["approved"]) == (True, False, False)
    refused = cdkit("deploy", "--env", "prod", cwd=repo)
    assert refused.returncode == 1 and "needs 1 approval(s)" in refused.stderr
    again = approve(repo, sha, "Bob", "--revoke")  # nothing left to withdraw
    assert again.returncode == 1 and "(it has none)" in again.stderr
    listed = json.loads(cdkit("approvals", "--json", cwd=repo).stdout)["approvals"]
    assert [a["via"] for a in listed] == ["local", "revocation"]  # recorded, not deleted
    assert approve(repo, sha, "Bob").returncode == 0  # control: approving again counts again
    assert cdkit("deploy", "--env", "prod", cwd=repo).returncode == 0


def test_an_already_deployed_sha_is_not_approved_again_and_counts_never_read_2_of_1(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    assert approve(repo, first, "Bob").returncode == 0
    assert cdkit("deploy", "--env", "prod", cwd=repo).returncode == 0
    own = approve(repo, first, "Ada")  # attack: the author approving what prod runs (an empty range before)
    assert own.returncode == 1 and "prod already runs it, so there is nothing to approve" in own.stderr
    assert "2 of 1" not in own.stdout + own.stderr
    second = ada_commits(repo, {"app.txt": "2"}, "a change, by Ada")
    assert approve(repo, second, "Bob").returncode == 0
    carol = approve(repo, second, "Carol")
    assert carol.returncode == 0 and "2 approvals (1 required); approved" in carol.stdout
    assert cdkit("deploy", "--env", "prod", cwd=repo).returncode == 0
    # A rollback target is judged by the range it was released with: its author still cannot approve it.
    back = approve(repo, first, "Ada")
    assert back.returncode == 1 and "authored or committed a commit being released" in back.stderr
    assert approve(repo, first, "Dave").returncode == 0  # control: someone else may approve the rollback
