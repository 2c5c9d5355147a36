"""Signed local approvals (`approval.via: local`): SSH signatures, as git signs commits.

`cdkit approve` signs one message binding the repository, the full SHA, the environment,
the approver and the time with the approver's SSH key (`ssh-keygen -Y sign`, namespace
`cdkit-approval`; a break-glass approval says so in its first line and signs in the namespace
`cdkit-break-glass`, so neither kind's signature ever counts as the other): git's `user.signingkey` when `gpg.format` is `ssh`, or `--key PATH`.
The gate verifies it (`ssh-keygen -Y verify`) against `.cdkit/allowed_signers` as committed
in the governing pipeline's commit, never the work tree's: the same file format as git's
`gpg.ssh.allowedSignersFile` (`principal [options] key-type key`), where the principal is
the approver's email. A ledger row is only as good as its signature: anyone who can write
the machine's git directory can add rows, but not sign them with a listed key.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cdkit import git
from cdkit.errors import UsageError
from cdkit.util import CommandTimedOut, cmd_output_b

ALLOWED_SIGNERS = ".cdkit/allowed_signers"
APPROVAL = "approval"  # `cdkit approve`: counts toward a delivery environment's approvals
BREAK_GLASS = "break-glass"  # `cdkit approve --break-glass`: counts only for a deploy inside a window
# Each kind's first line and ssh-keygen namespace: a signature made for one kind verifies for no other.
_KINDS = {APPROVAL: ("cdkit approval v1", "cdkit-approval"),
          BREAK_GLASS: ("cdkit break-glass approval v1", "cdkit-break-glass")}
_FIELDS = ("repository", "sha", "environment", "approver", "at")
SSH_KEYGEN_TIMEOUT = 60.0  # seconds; a passphrase prompt reads the terminal, not our stdin


class SignatureProblem(Exception):
    """Why a local approval's signature does not count (said in the decision)."""


def approval_message(*, repository: str, sha: str, environment: str, approver: str, at: str,
                     kind: str = APPROVAL) -> str:
    """The exact text an approval's signature covers: the kind's header, then one `field: value` line each."""
    values = {"repository": repository, "sha": sha, "environment": environment, "approver": approver, "at": at}
    for name, value in values.items():
        if "\n" in value or "\r" in value:
            raise UsageError(f"the approval's {name} cannot contain a line break: {value!r}")
    return "\n".join([_KINDS[kind][0], *(f"{name}: {values[name]}" for name in _FIELDS)]) + "\n"


def parse_message(text: str, kind: str = APPROVAL) -> dict[str, str] | None:
    """The fields of a message made by `approval_message` for `kind`; None for any other text."""
    lines = text.split("\n")
    if len(lines) != len(_FIELDS) + 2 or lines[0] != _KINDS[kind][0] or lines[-1] != "":
        return None
    fields = {}
    for name, line in zip(_FIELDS, lines[1:-1], strict=True):
        prefix = f"{name}: "
        if not line.startswith(prefix):
            return None
        fields[name] = line[len(prefix):]
    return fields


def repository_id(root: Path, environ: Mapping[str, str] | None = None) -> str:
    """What an approval says it is for: the GitHub repository (owner/name), else the history's first commit.

    Forks share SHAs; a signature for one repository must not approve the same SHA in another.
    """
    from cdkit.github import resolve_repository

    repo = resolve_repository(environ if environ is not None else {}, cwd=root)
    if repo:
        return repo.casefold()
    roots = git.git("rev-list", "--max-parents=0", "HEAD", cwd=root).split()
    return f"root:{min(roots)}" if roots else "root:none"


def signing_key(root: Path, explicit: str | None) -> Path | None:
    """The key to sign with: `--key PATH`, else git's SSH signing key (`gpg.format ssh` + `user.signingkey`)."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UsageError(f"--key {explicit}: no such key file (pass your SSH private key, or its .pub with the "
                             "key in ssh-agent)")
        return path
    code, out, _ = cmd_output_b("git", "config", "--get", "gpg.format", cwd=root, check=False)
    if code != 0 or out.decode("utf-8", "replace").strip() != "ssh":
        return None
    code, out, _ = cmd_output_b("git", "config", "--get", "user.signingkey", cwd=root, check=False)
    value = out.decode("utf-8", "replace").strip() if code == 0 else ""
    if not value or value.startswith("key::"):
        return None  # a literal public key needs ssh-agent; pass --key PATH instead
    return Path(value).expanduser()


def _ssh_keygen(*args: str, stdin: bytes) -> tuple[int, str, str]:
    try:
        code, out, err = cmd_output_b("ssh-keygen", *args, stdin=stdin, check=False, timeout=SSH_KEYGEN_TIMEOUT)
    except FileNotFoundError:
        raise UsageError("ssh-keygen (OpenSSH 8.2 or later) is needed to sign and verify approvals; install "
                         "openssh-client") from None
    except CommandTimedOut:
        return 124, "", f"ssh-keygen did not finish within {SSH_KEYGEN_TIMEOUT:g}s"
    return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace").strip()


def sign(message: str, key: Path, kind: str = APPROVAL) -> str:
    """An SSH signature (armored text) of `message` with `key`, in the namespace of `kind`."""
    code, out, err = _ssh_keygen("-Y", "sign", "-n", _KINDS[kind][1], "-f", str(key), stdin=message.encode())
    if code != 0 or "BEGIN SSH SIGNATURE" not in out:
        raise UsageError(f"could not sign the approval with {key}: {err or f'ssh-keygen exited with {code}'}")
    return out


@contextmanager
def _files(**contents: str) -> Iterator[dict[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="cdkit-sig-") as tmp:
        paths = {}
        for name, text in contents.items():
            path = Path(tmp) / name
            path.write_text(text)
            os.chmod(path, 0o600)
            paths[name] = path
        yield paths


def verify(message: str, signature: str, allowed_signers: str, *, where: str, kind: str = APPROVAL) -> str:
    """The principal (approver email) whose key in `allowed_signers` made `signature` over `message` for `kind`.

    Raises SignatureProblem saying why not. `where` names the allowed_signers file for messages.
    """
    with _files(allowed_signers=allowed_signers, sig=signature) as f:
        code, out, err = _ssh_keygen("-Y", "find-principals", "-s", str(f["sig"]), "-f", str(f["allowed_signers"]),
                                     stdin=b"")
        principals = [line.strip() for line in out.splitlines() if line.strip()] if code == 0 else []
        if not principals:
            raise SignatureProblem(f"it is signed with a key that is not in {where}")
        for principal in principals:
            code, _, err = _ssh_keygen("-Y", "verify", "-f", str(f["allowed_signers"]), "-I", principal,
                                       "-n", _KINDS[kind][1], "-s", str(f["sig"]), stdin=message.encode())
            if code == 0:
                return principal
        raise SignatureProblem(f"its signature does not verify against {where} ({err or 'bad signature'})")


def allowed_signers_at(root: Path, rev: str) -> str | None:
    """`.cdkit/allowed_signers` as committed in `rev` (None when that commit has none)."""
    raw = git.file_at(rev, ALLOWED_SIGNERS, cwd=root)
    return raw.decode("utf-8", "replace") if raw is not None else None
