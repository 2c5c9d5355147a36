"""Signed local approvals (issue 9 §3, `via: local`): real git, real ssh-keygen, the real CLI.

`cdkit approve` signs with the approver's SSH key; the gate verifies against
`.cdkit/allowed_signers` as committed in what the environment runs (or the release branch
tip). Each attack (an unsigned row, a key nobody listed, a signature lifted from another
approval, a key that signs for someone else, a release that lists its own approver's key)
is paired with a positive control that deploys.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cdkit import signing
from cdkit.ledger import Ledger
from tests.helpers import adopt_new, cdkit, commit, delivery_pipeline, git, make_repo

BOB = {"GIT_COMMITTER_NAME": "Bob Reviewer", "GIT_COMMITTER_EMAIL": "bob@example.com"}
MALLORY = {"GIT_COMMITTER_NAME": "Mallory", "GIT_COMMITTER_EMAIL": "mallory@example.com"}


def keygen(directory: Path, name: str) -> Path:
    key = directory / f"{name}_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def signer_line(email: str, key: Path) -> str:
    kind, blob = Path(f"{key}.pub").read_text().split()[:2]
    return f"{email} {kind} {blob}\n"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    directory = tmp_path / "keys"
    directory.mkdir()
    return {name: keygen(directory, name) for name in ("bob", "mallory")}


def world(tmp_path: Path, keys: dict[str, Path], policy: str = "") -> tuple[Path, str]:
    """Ada's repository: Bob's key is allowed to sign; a change by Ada whose stages passed."""
    repo = make_repo(tmp_path / "repo")
    commit(repo, {".cdkit.yml": delivery_pipeline("local", policy), ".cdkit/allowed_signers": signer_line("bob@example.com", keys["bob"])},
           "the pipeline and who signs approvals")
    sha = commit(repo, {"app.txt": "v1"}, "a change by Ada")
    assert cdkit("run", cwd=repo).returncode == 0
    adopt_new(repo, "prod")
    return repo, sha


def approve(repo: Path, sha: str, person: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return cdkit("approve", sha, "--env", "prod", *extra, cwd=repo, env=person)


def deploy(repo: Path, sha: str) -> tuple[int, dict[str, object]]:
    result = cdkit("deploy", "--env", "prod", "--sha", sha, "--json", cwd=repo)
    return result.returncode, json.loads(result.stdout)


def ledger(repo: Path) -> Ledger:
    return Ledger.for_dir(repo / ".git" / "cdkit")


def problems(data: dict[str, object]) -> str:
    return "\n".join(str(p) for p in data.get("problems", []))  # type: ignore[attr-defined]


def test_control_a_signed_approval_by_a_listed_key_deploys_and_the_ledger_keeps_the_signature(
        tmp_path: Path, keys: dict[str, Path]) -> None:
    repo, sha = world(tmp_path, keys)
    approved = approve(repo, sha, BOB, "--key", str(keys["bob"]))
    assert approved.returncode == 0, approved.stderr
    code, data = deploy(repo, sha)
    assert code == 0 and data["status"] == "success", data
    with ledger(repo) as db:
        (row,) = db.approvals(sha=sha, environment="prod")
    assert "BEGIN SSH SIGNATURE" in row["signature"]
    fields = signing.parse_message(row["signed_message"])
    assert fields is not None and fields["sha"] == sha and fields["environment"] == "prod"
    assert fields["approver"] == "Bob Reviewer <bob@example.com>" and fields["repository"].startswith("root:")


def test_control_git_s_own_ssh_signing_config_is_used(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo, sha = world(tmp_path, keys)
    git(repo, "config", "gpg.format", "ssh")
    git(repo, "config", "user.signingkey", f"{keys['bob']}.pub")  # the public half, as git users write it
    assert approve(repo, sha, BOB).returncode == 0
    assert deploy(repo, sha)[0] == 0


def test_an_unsigned_approval_is_refused_at_approve_and_at_the_gate(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo, sha = world(tmp_path, keys)
    unsigned = approve(repo, sha, BOB)  # no key configured, none passed
    assert unsigned.returncode == 2
    assert "approvals must be signed (approval.signed)" in unsigned.stderr and "--key PATH" in unsigned.stderr
    with ledger(repo) as db:  # anyone who can write .git can add a row
        db.add_approval(sha=sha, environment="prod", approver="Bob Reviewer <bob@example.com>", via="local")
    code, data = deploy(repo, sha)
    assert code == 1 and data["status"] == "refused"
    assert "Bob Reviewer <bob@example.com>'s approval does not count: it is not signed" in problems(data)


def test_control_approval_signed_false_counts_unsigned_approvals(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo, sha = world(tmp_path, keys, ", signed: false")
    assert approve(repo, sha, BOB).returncode == 0  # no key: recorded unsigned
    assert deploy(repo, sha)[0] == 0


def test_a_key_nobody_listed_does_not_count(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo, sha = world(tmp_path, keys)
    refused = approve(repo, sha, MALLORY, "--key", str(keys["mallory"]))
    assert refused.returncode == 1
    assert "the gate would not count it: it is signed with a key that is not in .cdkit/allowed_signers" in refused.stderr
    message = signing.approval_message(repository=signing.repository_id(repo), sha=sha, environment="prod",
                                       approver="Mallory <mallory@example.com>", at="2026-01-01T00:00:00Z")
    with ledger(repo) as db:  # the same signature written straight into the ledger
        db.add_approval(sha=sha, environment="prod", approver="Mallory <mallory@example.com>", via="local",
                        signature=signing.sign(message, keys["mallory"]), signed_message=message)
    code, data = deploy(repo, sha)
    assert code == 1 and "is signed with a key that is not in .cdkit/allowed_signers at" in problems(data)


@pytest.mark.parametrize("field, value", [("sha", "f" * 40), ("environment", "staging"),
                                          ("repository", "someone/else")])
def test_a_signature_of_another_approval_does_not_count(tmp_path: Path, keys: dict[str, Path], field: str,
                                                        value: str) -> None:
    repo, sha = world(tmp_path, keys)
    fields = {"repository": signing.repository_id(repo), "sha": sha, "environment": "prod",
              "approver": "Bob Reviewer <bob@example.com>", "at": "2026-01-01T00:00:00Z", field: value}
    message = signing.approval_message(**fields)
    with ledger(repo) as db:  # Bob really signed this, for another commit, environment or repository
        db.add_approval(sha=sha, environment="prod", approver="Bob Reviewer <bob@example.com>", via="local",
                        signature=signing.sign(message, keys["bob"]), signed_message=message)
    code, data = deploy(repo, sha)
    assert code == 1 and f"its signed message is for another approval ({field} '{value}'" in problems(data)


def test_a_listed_key_cannot_sign_for_someone_else(tmp_path: Path, keys: dict[str, Path]) -> None:
    repo, sha = world(tmp_path, keys)
    carol = "Carol <carol@example.com>"
    message = signing.approval_message(repository=signing.repository_id(repo), sha=sha, environment="prod",
                                       approver=carol, at="2026-01-01T00:00:00Z")
    with ledger(repo) as db:
        db.add_approval(sha=sha, environment="prod", approver=carol, via="local",
                        signature=signing.sign(message, keys["bob"]), signed_message=message)
    code, data = deploy(repo, sha)
    assert code == 1 and "it is signed by bob@example.com's key, not by carol@example.com" in problems(data)


def test_a_release_cannot_list_its_own_approvers_key_until_that_change_is_released(
        tmp_path: Path, keys: dict[str, Path]) -> None:
    repo, first = world(tmp_path, keys)
    assert approve(repo, first, BOB, "--key", str(keys["bob"])).returncode == 0
    assert deploy(repo, first)[0] == 0  # prod runs `first`, whose allowed_signers lists Bob only
    signers = signer_line("bob@example.com", keys["bob"]) + signer_line("mallory@example.com", keys["mallory"])
    listing = commit(repo, {".cdkit/allowed_signers": signers, "app.txt": "v2"}, "Ada lists Mallory's key")
    assert cdkit("run", cwd=repo).returncode == 0
    refused = approve(repo, listing, MALLORY, "--key", str(keys["mallory"]))
    assert refused.returncode == 1
    assert f"not in .cdkit/allowed_signers at {first[:12]} (what prod runs now)" in refused.stderr
    # Positive control: Bob releases the change under the old list; then Mallory's key counts.
    assert approve(repo, listing, BOB, "--key", str(keys["bob"])).returncode == 0
    assert deploy(repo, listing)[0] == 0
    later = commit(repo, {"app.txt": "v3"}, "a later change by Ada")
    assert cdkit("run", cwd=repo).returncode == 0
    assert approve(repo, later, MALLORY, "--key", str(keys["mallory"])).returncode == 0
    code, data = deploy(repo, later)
    assert code == 0, data
