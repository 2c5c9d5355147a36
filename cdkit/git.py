"""Every git call cdkit makes, as small named functions over `git` subprocesses.

Plain subprocesses with `-z` output rather than gitpython: these sit on the hook's
hot path, and gitpython's import alone costs more than lefthook's whole run.
Paths are decoded with surrogateescape so non-UTF-8 file names survive round trips.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from cdkit.errors import GitError
from cdkit.pushlines import is_zero_oid as is_zero_oid  # re-exported: git's "no object" id, also needed where git is not
from cdkit.util import CalledProcessError, Started, cmd_output_b

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from cdkit.ntuple import NamedTuple

# What `git rev-parse --local-env-vars` prints: variables git exports to hooks that
# would point a stage's own git commands at the wrong repository or index.
LOCAL_ENV_VARS = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
    "GIT_QUARANTINE_PATH",
)


def is_oid(text: str) -> bool:
    """A full SHA-1 or SHA-256 object id in lower-case hex (no `re` on the hook's path)."""
    return len(text) in (40, 64) and not text.strip("0123456789abcdef")


def decode(data: bytes) -> str:
    """Git's bytes as text; undecodable bytes (non-UTF-8 file names) survive the round trip."""
    return data.decode("utf-8", "surrogateescape")


_decode = decode


def git_b(*args: str, cwd: str | os.PathLike[str] | None = None, stdin: bytes | None = None) -> bytes:
    """Run git; on failure raise GitError with git's own message."""
    try:
        return cmd_output_b("git", *args, cwd=cwd, stdin=stdin)[1]
    except CalledProcessError as exc:
        message = _decode(exc.stderr).strip() or _decode(exc.stdout).strip()
        raise GitError(f"git {' '.join(args)} failed: {message}") from None
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH; install git and try again") from None


class Pending:
    """`git_b(*args)` started now and collected with `output()` later, so two reads can overlap."""

    def __init__(self, *args: str, cwd: str | os.PathLike[str] | None = None) -> None:
        self.args = args
        try:
            self._started = Started("git", *args, cwd=cwd)
        except FileNotFoundError:
            raise GitError("git is not installed or not on PATH; install git and try again") from None

    def output(self) -> bytes:
        try:
            return self._started.result()[1]
        except CalledProcessError as exc:
            message = _decode(exc.stderr).strip() or _decode(exc.stdout).strip()
            raise GitError(f"git {' '.join(self.args)} failed: {message}") from None

    def abandon(self) -> None:
        self._started.abandon()


def with_env(env: Mapping[str, str], *args: str, cwd: str | os.PathLike[str] | None = None,
             stdin: bytes | None = None) -> bytes:
    """`git_b` with its own environment: a temporary index (GIT_INDEX_FILE) for snapshots of the work tree."""
    try:
        return cmd_output_b("git", *args, cwd=cwd, env=env, stdin=stdin)[1]
    except CalledProcessError as exc:
        message = _decode(exc.stderr).strip() or _decode(exc.stdout).strip()
        raise GitError(f"git {' '.join(args)} failed: {message}") from None


def config_true(key: str, cwd: str | os.PathLike[str] | None = None) -> bool:
    """Whether a boolean git setting is on (`git config --type=bool`)."""
    code, out, _ = cmd_output_b("git", "config", "--type=bool", "--get", key, cwd=cwd, check=False)
    return code == 0 and out.strip() == b"true"


def git(*args: str, cwd: str | os.PathLike[str] | None = None) -> str:
    return _decode(git_b(*args, cwd=cwd)).rstrip("\n")


def _succeeds(*args: str, cwd: str | os.PathLike[str] | None = None) -> bool:
    return cmd_output_b("git", *args, cwd=cwd, check=False)[0] == 0


class Repo(NamedTuple):
    """Where a repository lives: its work tree (None when bare) and its common git dir."""

    root: Path | None
    git_dir: Path
    common_dir: Path

    @property
    def cdkit_dir(self) -> Path:
        return self.common_dir / "cdkit"


def find_repo(cwd: str | os.PathLike[str] | None = None) -> Repo:
    """The repository containing `cwd` (works from linked worktrees and submodules)."""
    try:
        out = cmd_output_b(
            "git", "rev-parse", "--path-format=absolute", "--is-bare-repository",
            "--git-dir", "--git-common-dir", "--show-toplevel", cwd=cwd, check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH; install git and try again") from None
    code, stdout, stderr = out
    lines = _decode(stdout).splitlines()
    if code != 0 and len(lines) < 3:
        where = os.path.abspath(cwd or os.curdir)
        raise GitError(f"{where}: not inside a git repository (run `git init`, or cd into your repository)")
    bare = lines[0] == "true"
    root = None if bare or len(lines) < 4 else Path(lines[3])
    return Repo(root=root, git_dir=Path(lines[1]), common_dir=Path(lines[2]))


def resolve_commit(rev: str, cwd: str | os.PathLike[str] | None = None) -> str:
    """The full SHA of the commit `rev` names (tags peeled); GitError if there is none."""
    code, out, _ = cmd_output_b(
        "git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", cwd=cwd, check=False
    )
    if code != 0:
        raise GitError(f"{rev!r} does not name a commit in this repository (check the spelling, or `git fetch` it)")
    return _decode(out).strip()


def commit_exists(oid: str, cwd: str | os.PathLike[str] | None = None) -> bool:
    """Whether `oid` is a commit we have locally (a force push's old remote tip may not be)."""
    return _succeeds("cat-file", "-e", f"{oid}^{{commit}}", cwd=cwd)


def first_parents(head: str, *, limit: int, cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """`head` and up to `limit - 1` of its first-parent ancestors, newest first."""
    return git("rev-list", "--first-parent", f"--max-count={limit}", head, "--", cwd=cwd).split()


def file_at(rev: str, path: str, cwd: str | os.PathLike[str] | None = None) -> bytes | None:
    """The bytes of `path` as committed in `rev`, or None when that commit has no such file."""
    code, out, _ = cmd_output_b("git", "cat-file", "blob", f"{rev}:{path}", cwd=cwd, check=False)
    return out if code == 0 else None


def changed_files(base: str, head: str, cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """Files that differ between two commits; renames count as both paths."""
    return changed_files_in(git_b(*_diff_names(base, head), cwd=cwd))


def start_changed_files(base: str, head: str, cwd: str | os.PathLike[str] | None = None) -> Pending:
    """`changed_files`, started now; `changed_files_in(pending.output())` collects it."""
    return Pending(*_diff_names(base, head), cwd=cwd)


def changed_files_in(out: bytes) -> list[str]:
    return [_decode(p) for p in out.split(b"\0") if p]


def _diff_names(base: str, head: str) -> tuple[str, ...]:
    return ("diff", "--name-only", "--no-renames", "-z", base, head, "--")


def all_files(head: str, cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """Every file in a commit: the changed files of a range with no base (orphan branch, first run)."""
    out = git_b("ls-tree", "-r", "-z", "--name-only", "--full-tree", head, cwd=cwd)
    return [_decode(p) for p in out.split(b"\0") if p]


def symlinks(rev: str, cwd: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Tracked symlinks in a commit, path -> target: a `paths` filter must see a change that reaches
    its globs through one. Two git processes, run only when a filter matched nothing directly."""
    listing = git_b("ls-tree", "-r", "-z", "--full-tree", rev, cwd=cwd)
    links = {}  # object id -> path
    for entry in listing.split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        if meta.startswith(b"120000 "):
            links[meta.split(b" ")[2]] = _decode(path)
    if not links:
        return {}
    out = git_b("cat-file", "--batch", cwd=cwd, stdin=b"".join(oid + b"\n" for oid in links))
    targets, at = {}, 0
    while at < len(out):
        header_end = out.index(b"\n", at)
        oid, _kind, size = out[at:header_end].split(b" ")
        body = out[header_end + 1 : header_end + 1 + int(size)]
        targets[links[oid]] = _decode(body)
        at = header_end + 1 + int(size) + 1
    return targets


def merge_base(a: str, b: str, cwd: str | os.PathLike[str] | None = None) -> str | None:
    code, out, _ = cmd_output_b("git", "merge-base", a, b, cwd=cwd, check=False)
    return _decode(out).strip() if code == 0 else None


def is_ancestor(ancestor: str, descendant: str, cwd: str | os.PathLike[str] | None = None) -> bool:
    return _succeeds("merge-base", "--is-ancestor", ancestor, descendant, cwd=cwd)


def head_sha(cwd: str | os.PathLike[str] | None = None) -> str | None:
    code, out, _ = cmd_output_b("git", "rev-parse", "--verify", "--quiet", "HEAD", cwd=cwd, check=False)
    return _decode(out).strip() if code == 0 else None


def current_branch(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The checked-out branch's full ref name, or None on a detached HEAD."""
    code, out, _ = cmd_output_b("git", "symbolic-ref", "--quiet", "HEAD", cwd=cwd, check=False)
    return _decode(out).strip() if code == 0 else None


def work_tree_state(cwd: str | os.PathLike[str] | None = None) -> tuple[str | None, bool]:
    """(HEAD's SHA or None when unborn, whether the work tree is exactly HEAD), in one git call.

    Every run asks both before choosing between the work tree and a temporary worktree;
    one `git status --porcelain=v2 --branch` answers both, a process less per push.
    """
    head, clean, _ = work_tree_status(cwd)
    return head, clean


def work_tree_status(cwd: str | os.PathLike[str] | None = None, *,
                     ignored: bool = False) -> tuple[str | None, bool, frozenset[bytes]]:
    """`work_tree_state`, and with `ignored` the paths git ignores (a wholly ignored directory once,
    ending in `/`, its contents not listed), from the same process: `--ignored=matching` costs no
    more than a plain status."""
    # --no-optional-locks: a read, never a write of the index's refreshed stat data (no index.lock taken,
    # so no race with the user's own git, and no write on every push).
    args = ["--no-optional-locks", "status", "--porcelain=v2", "--branch", "-z"]
    out = git_b(*args, *(["--ignored=matching"] if ignored else []), cwd=cwd)
    head, clean, skipped = None, True, []
    for entry in out.split(b"\0"):
        if entry.startswith(b"# branch.oid "):
            oid = entry[len(b"# branch.oid "):].decode("ascii", "replace")
            head = None if oid == "(initial)" else oid
        elif entry.startswith(b"! "):
            skipped.append(entry[2:])
        elif entry and not entry.startswith(b"# "):
            clean = False
    return head, clean, frozenset(skipped)


def tree_of(commit: str, cwd: str | os.PathLike[str] | None = None) -> str:
    """The tree a commit records (what a clean checkout of it holds)."""
    return git("rev-parse", "--verify", f"{commit}^{{tree}}", cwd=cwd)


def first_parent_base(head: str, cwd: str | os.PathLike[str] | None = None) -> str | None:
    code, out, _ = cmd_output_b("git", "rev-parse", "--verify", "--quiet", f"{head}^", cwd=cwd, check=False)
    return _decode(out).strip() if code == 0 else None


def is_shallow(cwd: str | os.PathLike[str] | None = None) -> bool:
    return git("rev-parse", "--is-shallow-repository", cwd=cwd) == "true"


def identity(cwd: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """The committer identity git would use here: (name, email)."""
    ident = git("var", "GIT_COMMITTER_IDENT", cwd=cwd)
    import re

    match = re.match(r"^(.*?) <(.*?)>", ident)
    if not match:
        raise GitError("no git identity: set one with `git config user.name` and `git config user.email`")
    return match.group(1), match.group(2)


def remote_url(remote: str, cwd: str | os.PathLike[str] | None = None) -> str | None:
    code, out, _ = cmd_output_b("git", "remote", "get-url", "--", remote, cwd=cwd, check=False)
    return _decode(out).strip() if code == 0 else None


def stage_environment(environ: dict[str, str]) -> dict[str, str]:
    """`environ` without the variables git exports to hooks (see LOCAL_ENV_VARS)."""
    return {k: v for k, v in environ.items() if k not in LOCAL_ENV_VARS}


@contextlib.contextmanager
def checkout_of(sha: str, root: Path, *, in_place: bool) -> Iterator[Path]:
    """`root` itself when `in_place` (the caller knows it holds `sha`), else a temporary worktree at `sha`."""
    if in_place:
        yield root
    else:
        with temporary_worktree(sha, cwd=root) as path:
            yield path


@contextlib.contextmanager
def temporary_worktree(sha: str, cwd: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """A detached worktree checked out at `sha`, removed afterwards whatever happens.

    Stages must judge the commit being pushed or run, not whatever the work tree holds.
    """
    import shutil  # only off the fast path: no worktree, no import
    import tempfile

    parent = Path(tempfile.mkdtemp(prefix="cdkit-worktree-"))
    path = parent / "tree"
    git("worktree", "add", "--detach", "--quiet", str(path), sha, cwd=cwd)
    try:
        yield path
    finally:
        cmd_output_b("git", "worktree", "remove", "--force", str(path), cwd=cwd, check=False)
        shutil.rmtree(parent, ignore_errors=True)
        cmd_output_b("git", "worktree", "prune", cwd=cwd, check=False)


# --- release helpers -------------------------------------------------------------------------


def branch_tip(branch: str, cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The commit a branch points at: the local branch, else `origin/<branch>` (CI checkouts), else None.

    Releases are judged against the release branch; a missing one must fail closed, not pass.
    """
    for ref in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        code, out, _ = cmd_output_b("git", "rev-parse", "--verify", "--quiet", "--end-of-options",
                                    f"{ref}^{{commit}}", cwd=cwd, check=False)
        if code == 0:
            return _decode(out).strip()
    return None


class CommitInfo(NamedTuple):
    sha: str
    author_name: str
    author_email: str
    committer_name: str
    committer_email: str
    subject: str


def root_commits(head: str, cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """The commits of `head`'s history without a parent: one, unless unrelated histories were merged."""
    return git("rev-list", "--max-parents=0", "--end-of-options", head, "--", cwd=cwd).split()


def commits_in_range(base: str | None, head: str, cwd: str | os.PathLike[str] | None = None,
                     *, limit: int | None = None) -> list[CommitInfo]:
    """Commits reachable from `head` but not from `base` (all of `head`'s history without a base), newest first.

    Used for who may not approve a release (its authors and committers) and for release notes.
    """
    args = ["log", "-z", "--format=%H%x00%an%x00%ae%x00%cn%x00%ce%x00%s%x00"]
    if limit is not None:
        args.append(f"--max-count={limit}")
    args += ["--end-of-options", head]
    if base:
        args.append(f"^{base}")
    fields = git_b(*args, "--", cwd=cwd).split(b"\0")
    commits = []
    # Each commit is six NUL-terminated fields; `-z` adds one more NUL between commits.
    chunk: list[str] = []
    for raw in fields:
        if not chunk and raw in (b"", b"\n"):
            continue
        chunk.append(_decode(raw).lstrip("\n"))
        if len(chunk) == 6:
            commits.append(CommitInfo(*chunk))
            chunk = []
    return commits


def commit_messages(base: str | None, head: str, cwd: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The full message of each commit reachable from `head` but not from `base` (for its trailers)."""
    args = ["log", "-z", "--format=%H%x00%B", "--end-of-options", head]
    if base:
        args.append(f"^{base}")
    fields = git_b(*args, "--", cwd=cwd).split(b"\0")
    # `-z` separates commits with a NUL and the format puts one after the SHA: sha, message, sha, message, ...
    messages = {}
    for sha, message in zip(fields[0::2], fields[1::2], strict=False):
        messages[_decode(sha).strip()] = _decode(message)
    return messages


FETCH_TIMEOUT = 120.0  # seconds, unless the caller passes its own (`--max-wait`)


def fetch(remote: str, *refspecs: str, unshallow: bool = False, cwd: str | os.PathLike[str] | None = None,
          timeout: float = FETCH_TIMEOUT) -> str | None:
    """Fetch from `remote` without tags; None on success, else git's message.

    In CI the checkout is often shallow or lacks the base of the range being judged;
    callers fetch what they need and fail closed when this returns a message. A fetch
    never hangs: it never prompts for credentials, and it is stopped after `timeout`.
    """
    from cdkit.util import CommandTimedOut

    args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
    if unshallow:
        args.append("--unshallow")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never"}
    try:
        code, out, err = cmd_output_b("git", *args, "--", remote, *refspecs, cwd=cwd, check=False, env=env,
                                      timeout=max(1.0, timeout))
    except CommandTimedOut as exc:
        return f"git fetch from {remote} did not finish within {exc.timeout:g}s and was stopped"
    return None if code == 0 else (_decode(err).strip() or _decode(out).strip() or f"exit code {code}")


def ensure_commit(oid: str, remote: str = "origin", cwd: str | os.PathLike[str] | None = None,
                  timeout: float = FETCH_TIMEOUT) -> bool:
    """Whether commit `oid` is here, fetching it by SHA from `remote` if it is not."""
    if commit_exists(oid, cwd=cwd):
        return True
    fetch(remote, oid, cwd=cwd, timeout=timeout)
    return commit_exists(oid, cwd=cwd)


# --- pre-push hook helpers -------------------------------------------------------------------


def peel_to_commits(oids: list[str], cwd: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """{oid: the commit it peels to} for each oid we have that names (or tags) a commit.

    One `cat-file --batch-check` for every ref of a push (up to 1,000) instead of one
    process each; an annotated tag peels to its commit; a missing oid (a force push over
    a tip never fetched) or a tag of a tree or blob is simply absent from the result.
    """
    if not oids:
        return {}
    out = git_b("cat-file", "--batch-check=%(objectname) %(objecttype)", cwd=cwd,
                stdin=b"".join(f"{oid}^{{commit}}\n".encode() for oid in oids))
    peeled = {}
    for oid, line in zip(oids, out.decode("ascii", "replace").splitlines()):
        name, _, kind = line.partition(" ")
        if kind == "commit":
            peeled[oid] = name
    return peeled


def missing_objects(oids: list[str], cwd: str | os.PathLike[str] | None = None) -> set[str]:
    """The oids this repository has no object for, in one `cat-file --batch-check`.

    `peel_to_commits` cannot tell "not a commit" (a tag of a tree) from "not here at all"
    (a forged line, or a SHA-256 id in a SHA-1 repository): both are absent. Asked only
    about the oids that did not peel, so a normal push pays nothing for it.
    """
    if not oids:
        return set()
    out = git_b("cat-file", "--batch-check=%(objectname)", cwd=cwd, stdin=b"".join(f"{o}\n".encode() for o in oids))
    return {oid for oid, line in zip(oids, out.decode("ascii", "replace").splitlines()) if line.endswith(" missing")}


def commits_not_on_remote(head: str, remote: str | None,
                          cwd: str | os.PathLike[str] | None = None) -> tuple[list[str], tuple[str, ...]]:
    """(commits of `head` no remote-tracking ref of `remote` has, the remote commits they start from).

    The range of a new branch, or of a force push over a tip we never fetched: what the
    remote lacks. No boundary means no commit of `head` is on the remote (an orphan branch,
    an empty remote, or a push to a URL with no remote name): every file counts.
    """
    args = ["rev-list", "--boundary", head]
    if remote:
        args += ["--not", f"--remotes={remote}"]
    lines = git(*args, cwd=cwd).splitlines()
    new = [line for line in lines if line and not line.startswith("-")]
    boundary = tuple(line[1:] for line in lines if line.startswith("-"))
    return new, boundary


def remote_for_url(url: str, cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The configured remote whose URL is `url` (git passes the URL as the name on `git push URL`)."""
    code, out, _ = cmd_output_b("git", "config", "-z", "--get-regexp", r"^remote\..*\.(push)?url$", cwd=cwd,
                                check=False)
    if code != 0:
        return None
    for entry in out.split(b"\0"):
        key, _, value = _decode(entry).partition("\n")
        if value == url:
            return key[len("remote."):].rsplit(".", 1)[0]
    return None


def hooks_path_setting(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """`core.hooksPath` as configured (husky and others set it), or None."""
    code, out, _ = cmd_output_b("git", "config", "--get", "core.hooksPath", cwd=cwd, check=False)
    value = _decode(out).strip()
    return value if code == 0 and value else None


def hooks_dir(cwd: str | os.PathLike[str] | None = None) -> Path:
    """Where git looks for hooks: `core.hooksPath` when set, else the common dir's `hooks`.

    `--git-path hooks` resolves both, for linked worktrees (hooks are shared, in the common
    dir) and submodules (their git dir lives under the superproject's `.git/modules`).
    """
    return Path(git("rev-parse", "--path-format=absolute", "--git-path", "hooks", cwd=cwd))


class CommitNode(NamedTuple):
    sha: str
    parents: tuple[str, ...]
    author_time: int  # epoch seconds: when the change was first written (a rebase keeps it)
    subject: str


def commit_graph(heads: list[str], cwd: str | os.PathLike[str] | None = None) -> dict[str, CommitNode]:
    """Every commit reachable from `heads` (those this repository has), in one `git log`.

    The history's lead times and fix detection walk this graph in memory instead of
    running git once per deployment (a ledger can hold thousands).
    """
    present = sorted(set(heads) - missing_objects(sorted(set(heads)), cwd=cwd))
    if not present:
        return {}
    out = git_b("log", "-z", "--format=%H%x00%P%x00%at%x00%s", "--stdin", "--",
                cwd=cwd, stdin="".join(f"{sha}\n" for sha in present).encode())
    fields = out.split(b"\0")
    graph: dict[str, CommitNode] = {}
    for index in range(0, len(fields) - 3, 4):
        sha, parents, when, subject = (_decode(f).lstrip("\n") for f in fields[index:index + 4])
        graph[sha] = CommitNode(sha, tuple(parents.split()), int(when or 0), subject)
    return graph
