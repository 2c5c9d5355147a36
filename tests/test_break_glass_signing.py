"""Signed break-glass approvals (issue 9 §3): real git, real ssh-keygen, the real CLI, the ledger's injected clock.

A break-glass approval is signed as its own kind: its message's first line says
"break-glass", and ssh-keygen signs it in the namespace `cdkit-break-glass`, so neither an
approval's signature nor a rewritten copy of one counts for breaking a window (nor the
reverse). Each attack writes what an attacker with the ledger in reach would write, and is
paired with a positive control that deploys through the same window.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from cdkit import signing
from cdkit.ledger import Ledger
from tests.helpers import adopt_new, cdkit, reviewer_key
from tests.test_freeze import BOB, FRIDAY_EVENING, SIGNERS, break_glass, deployed, document, passing, pipeline

BOB_NAME = "Bob Reviewer <bob@example.com>"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from tests.helpers import make_repo

    monkeypatch.setenv("DEPLOY_LOG", str(tmp_path / "deploys.txt"))
    return make_repo(tmp_path / "repo")


def held_release(repo: Path, text: str | None = None) -> str:
    """A passing change of Ada's, production adopted before it, Bob's and Cara's keys listed."""
    sha = passing(repo, {".cdkit.yml": text or pipeline(), **SIGNERS})
    adopt_new(repo, "production")
    return sha


def bob_key() -> Path:
    """The private key `signing_env("bob@example.com")` makes git sign with."""
    return Path(dict(reviewer_key("bob@example.com")[0])["GIT_CONFIG_VALUE_1"])


def bobs_message(repo: Path, sha: str, kind: str) -> str:
    return signing.approval_message(repository=signing.repository_id(repo), sha=sha, environment="production",
                                    approver=BOB_NAME, at="2026-12-04T16:30:00Z", kind=kind)


def record(repo: Path, sha: str, *, via: str, message: str | None, signature: str | None) -> None:
    """A row written straight into the ledger, as anyone who can write .git/cdkit could."""
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        ledger.add_approval(sha=sha, environment="production", approver=BOB_NAME, via=via,
                            signature=signature, signed_message=message)


def refusal(repo: Path, sha: str, capfd: pytest.CaptureFixture[str]) -> str:
    capfd.readouterr()
    assert break_glass(repo, FRIDAY_EVENING, sha) == 1
    data = document(capfd)
    assert data["deployed"] is False and deployed(repo) == []
    return "\n".join(data["problems"])


def test_control_a_signed_break_glass_approval_is_recorded_signed_and_lets_the_deploy_through(
        repo: Path, capfd: pytest.CaptureFixture[str]) -> None:
    sha = held_release(repo)
    bob = cdkit("approve", sha, "--env", "production", "--break-glass", cwd=repo, env=BOB)
    assert bob.returncode == 0, bob.stderr
    with Ledger.for_dir(repo / ".git" / "cdkit") as ledger:
        (row,) = ledger.approvals(sha=sha, environment="production")
    assert row["via"] == "break-glass" and "BEGIN SSH SIGNATURE" in row["signature"]
    assert row["signed_message"].startswith("cdkit break-glass approval v1\n")
    assert signing.parse_message(row["signed_message"], signing.BREAK_GLASS)["sha"] == sha  # type: ignore[index]
    capfd.readouterr()
    assert break_glass(repo, FRIDAY_EVENING, sha) == 0
    assert document(capfd)["deployed"] is True and deployed(repo) == [sha]


def test_an_unsigned_break_glass_approval_is_refused_at_approve_and_at_the_gate(
        repo: Path, capfd: pytest.CaptureFixture[str]) -> None:
    sha = held_release(repo)
    no_key = {k: v for k, v in BOB.items() if not k.startswith("GIT_CONFIG")}
    refused = cdkit("approve", sha, "--env", "production", "--break-glass", cwd=repo, env=no_key)
    assert refused.returncode == 2
    assert "production's break-glass approvals must be signed (break_glass.signed)" in refused.stderr
    record(repo, sha, via="break-glass", message=None, signature=None)
    assert "Bob Reviewer <bob@example.com>'s break-glass approval does not count: it is not signed, and " \
        "break_glass.signed is on" in refusal(repo, sha, capfd)


def test_a_normal_approvals_signature_never_counts_as_a_break_glass_one(
        repo: Path, capfd: pytest.CaptureFixture[str]) -> None:
    sha = held_release(repo)
    approval = bobs_message(repo, sha, signing.APPROVAL)
    signature = signing.sign(approval, bob_key(), signing.APPROVAL)  # Bob really signed an approval of this SHA
    record(repo, sha, via="break-glass", message=approval, signature=signature)
    assert "its signed message is for another approval (not a cdkit break-glass approval)" in refusal(repo, sha, capfd)
    # The same signature under a message rewritten to say break-glass: it covers other text, in another namespace.
    record(repo, sha, via="break-glass", message=bobs_message(repo, sha, signing.BREAK_GLASS), signature=signature)
    assert "its signature does not verify against .cdkit/allowed_signers" in refusal(repo, sha, capfd)


def test_a_break_glass_signature_never_counts_as_a_normal_approval(repo: Path) -> None:
    # No window: the real CLI runs on the real clock, and the gate alone must decide whatever day it is.
    without_windows = pipeline().split("    windows:\n")[0]
    text = without_windows.replace("mode: deployment", "mode: delivery\n    approval: {via: local, required: 1}")
    sha = held_release(repo, text)
    glass = bobs_message(repo, sha, signing.BREAK_GLASS)
    signature = signing.sign(glass, bob_key(), signing.BREAK_GLASS)
    record(repo, sha, via="local", message=glass, signature=signature)
    normal = cdkit("deploy", "--env", "production", "--sha", sha, cwd=repo)
    assert normal.returncode == 1 and "not a cdkit approval" in normal.stdout + normal.stderr
    record(repo, sha, via="local", message=bobs_message(repo, sha, signing.APPROVAL), signature=signature)
    again = cdkit("deploy", "--env", "production", "--sha", sha, cwd=repo)
    assert again.returncode == 1 and "its signature does not verify" in again.stdout + again.stderr
    # Positive control: Bob's own approval, signed as one, deploys.
    assert cdkit("approve", sha, "--env", "production", cwd=repo, env=BOB).returncode == 0
    assert cdkit("deploy", "--env", "production", "--sha", sha, cwd=repo).returncode == 0


def test_a_key_missing_from_allowed_signers_does_not_break_the_glass(
        repo: Path, capfd: pytest.CaptureFixture[str]) -> None:
    sha = passing(repo, {".cdkit.yml": pipeline()})  # nobody's key is listed
    adopt_new(repo, "production")
    refused = cdkit("approve", sha, "--env", "production", "--break-glass", cwd=repo, env=BOB)
    assert refused.returncode == 1
    assert "refusing the break-glass approval" in refused.stderr and "there is no .cdkit/allowed_signers" in \
        refused.stderr
    message = bobs_message(repo, sha, signing.BREAK_GLASS)
    record(repo, sha, via="break-glass", message=message, signature=signing.sign(message, bob_key(),
                                                                                  signing.BREAK_GLASS))
    assert "there is no .cdkit/allowed_signers" in refusal(repo, sha, capfd)


@pytest.mark.parametrize("policy", [["break_glass: {required: 1, signed: false}"],
                                    ["break_glass: {required: 1}", "approval: {signed: false}"]])
def test_control_signing_switched_off_counts_an_unsigned_break_glass_approval(
        repo: Path, capfd: pytest.CaptureFixture[str], policy: list[str]) -> None:
    lines = "".join(f"    {line}\n" for line in policy)
    sha = held_release(repo, pipeline(break_glass=None).replace("    windows:", f"{lines}    windows:"))
    no_key = {k: v for k, v in BOB.items() if not k.startswith("GIT_CONFIG")}
    assert cdkit("approve", sha, "--env", "production", "--break-glass", cwd=repo, env=no_key).returncode == 0
    capfd.readouterr()
    assert break_glass(repo, FRIDAY_EVENING, sha) == 0
    assert document(capfd)["deployed"] is True and deployed(repo) == [sha]
