"""Real git repositories and real cdkit processes for tests."""
from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def git(repo: Path, *args: str, input: bytes | None = None, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, input=input, capture_output=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.decode()}")
    return proc.stdout.decode("utf-8", "surrogateescape").strip()


def empty_commits(repo: Path, count: int, message: str) -> str:
    """`count` empty commits on the current branch, as `git commit --allow-empty` by the test's identity would
    make them (messages `message 0`, `message 1`...), written by one `git fast-import`; the new tip."""
    branch, parent = git(repo, "symbolic-ref", "HEAD"), git(repo, "rev-parse", "HEAD")
    author = f"{os.environ['GIT_AUTHOR_NAME']} <{os.environ['GIT_AUTHOR_EMAIL']}>"
    committer = f"{os.environ['GIT_COMMITTER_NAME']} <{os.environ['GIT_COMMITTER_EMAIL']}>"
    start = int(git(repo, "log", "-1", "--format=%ct"))
    stream = []
    for n in range(count):
        text = f"{message} {n}\n".encode()
        stream += [f"commit {branch}\n".encode(), f"author {author} {start + n + 1} +0000\n".encode(),
                   f"committer {committer} {start + n + 1} +0000\n".encode(), b"data %d\n" % len(text), text,
                   *([f"from {parent}\n".encode()] if n == 0 else []), b"\n"]
    git(repo, "fast-import", "--quiet", input=b"".join(stream))
    return git(repo, "rev-parse", "HEAD")


def make_repo(path: Path, *, branch: str = "main") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    return path


def make_bare(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "--bare", "-b", "main")
    return path


def write(repo: Path, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


def commit(repo: Path, files: Mapping[str, str | bytes] | None = None, message: str = "change") -> str:
    """Write `files`, commit everything, return the new commit's full SHA."""
    write(repo, files or {})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@functools.lru_cache(maxsize=None)
def reviewer_key(email: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """An SSH signing key for a reviewer, made once per test process: (the git config, as environment
    variables, that makes it their signing key; its `.cdkit/allowed_signers` line)."""
    directory = Path(tempfile.mkdtemp(prefix="cdkit-test-keys-"))
    key = directory / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", email, "-f", str(key)], check=True)
    kind, blob = Path(f"{key}.pub").read_text().split()[:2]
    env = (("GIT_CONFIG_COUNT", "2"), ("GIT_CONFIG_KEY_0", "gpg.format"), ("GIT_CONFIG_VALUE_0", "ssh"),
           ("GIT_CONFIG_KEY_1", "user.signingkey"), ("GIT_CONFIG_VALUE_1", str(key)))
    return env, f"{email} {kind} {blob}\n"


def signing_env(email: str) -> dict[str, str]:
    """Environment variables that make `reviewer_key(email)` git's SSH signing key."""
    return dict(reviewer_key(email)[0])


def allowed_signers(*emails: str) -> dict[str, str]:
    """The `.cdkit/allowed_signers` file (to commit) listing these reviewers' keys."""
    return {".cdkit/allowed_signers": "".join(reviewer_key(e)[1] for e in emails)}


def config(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def delivery_pipeline(via: str, policy: str = "", *, url: str | None = None) -> str:
    """One `build` stage and a delivery environment `prod` approved `via` (`policy`: more approval keys)."""
    url_line = f"\n            url: {url}" if url else ""
    return config(f"""
        version: 1
        stages:
          - name: build
            run: "true"
        environments:
          - name: prod
            mode: delivery
            deploy: 'echo "deployed $CDKIT_SHA"'{url_line}
            approval: {{via: {via}{policy}}}
    """)


def cdkit(*args: str, cwd: Path, env: Mapping[str, str] | None = None, input: bytes | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `cdkit` CLI in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "cdkit", *args], cwd=cwd, env=full_env, input=input.decode() if input else None,
        capture_output=True, text=True, timeout=timeout,
    )
    if "--json" in args and done.stdout.strip() and "--help" not in args:
        from tests.json_schemas import validate_document

        validate_document(done.stdout)  # every document a test reads also meets its published schema
    return done


def adopt_new(repo: Path, *environments: str, sha: str | None = None,
              env: Mapping[str, str] | None = None) -> None:
    """Say, with `cdkit adopt`, what each new environment runs before its first deployment (default: nothing).

    A delivery environment's first release needs it (its range has a start); `--empty` keeps the
    range these tests always had, the whole history, now on purpose.
    """
    for name in environments or ("prod",):
        done = cdkit("adopt", "--env", name, *(("--sha", sha) if sha else ("--empty",)), cwd=repo, env=env)
        assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def small_tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "2m") mounted under `tmp_path` for a full-disk test; skips unless root can mount one."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
