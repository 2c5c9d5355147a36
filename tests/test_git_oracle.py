"""cdkit's own git plumbing (plain `git ... -z` subprocesses) checked against gitpython, an independent oracle.

gitpython is a test dependency only: cdkit never imports it (the hook path stays small), but as a
second implementation it catches a mis-parsed `-z` stream, a range off by one or a rename counted once.
"""
from __future__ import annotations

from pathlib import Path

import git as gitpython
import pytest

from cdkit import git
from tests.helpers import commit, git as run_git

AUTHORS = [("Ada Author", "ada@example.com"), ("Bob Builder", "bob@example.com"), ("Zoë Ünicode", "zoe@example.com")]


@pytest.fixture
def history(repo: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A history with adds, edits, deletes, a rename, a merge, odd file names and three authors."""
    shas = [commit(repo, {"a.txt": "a\n", "dir/b.txt": "b\n", "spaced name.txt": "s\n"}, "start")]
    for i, (name, email) in enumerate(AUTHORS):
        monkeypatch.setenv("GIT_AUTHOR_NAME", name)
        monkeypatch.setenv("GIT_AUTHOR_EMAIL", email)
        shas.append(commit(repo, {f"dir/new-{i}.txt": f"{i}\n", "a.txt": f"a{i}\n", "ünï/çødé.txt": f"{i}\n"},
                           f"change {i}: quotes \" and tabs\t"))
    run_git(repo, "mv", "dir/b.txt", "dir/renamed.txt")
    run_git(repo, "rm", "-q", "spaced name.txt")
    run_git(repo, "commit", "-q", "-m", "rename and delete")
    shas.append(run_git(repo, "rev-parse", "HEAD").strip())
    run_git(repo, "checkout", "-q", "-b", "side", shas[1])
    side = commit(repo, {"side.txt": "side\n", "line\nbreak.txt": "x\n"}, "side work")
    run_git(repo, "checkout", "-q", "main")
    run_git(repo, "merge", "-q", "--no-ff", "-m", "merge side", side)
    shas.append(run_git(repo, "rev-parse", "HEAD").strip())
    return shas


def oracle_changed(repo: gitpython.Repo, base: str, head: str) -> set[str]:
    paths: set[str] = set()
    for d in repo.commit(base).diff(head):
        paths.update(p for p in (d.a_path, d.b_path) if p)
    return paths


def test_changed_files_match_gitpython(repo: Path, history: list[str]) -> None:
    oracle = gitpython.Repo(repo)
    pairs = [(history[i], history[j]) for i in range(len(history)) for j in range(i + 1, len(history))]
    for base, head in pairs:
        ours = set(git.changed_files(base, head, cwd=repo))
        # gitpython's diff parser reads names line by line and splits one holding a newline ("line" and
        # "break.txt"): there the oracle is wrong, and cdkit's -z output is checked on its own below.
        theirs = oracle_changed(oracle, base, head) - {"line", "break.txt"}
        assert {p for p in ours if "\n" not in p} == theirs, (base, head)
    assert "line\nbreak.txt" in git.changed_files(history[0], history[-1], cwd=repo)  # -z keeps it whole
    assert {"dir/b.txt", "dir/renamed.txt"} <= set(git.changed_files(history[-3], history[-2], cwd=repo))


def test_all_files_match_gitpython(repo: Path, history: list[str]) -> None:
    oracle = gitpython.Repo(repo)
    for sha in history:
        expected = {item.path for item in oracle.commit(sha).tree.traverse() if item.type == "blob"}
        assert set(git.all_files(sha, cwd=repo)) == expected


def test_commits_in_range_match_gitpython(repo: Path, history: list[str]) -> None:
    oracle = gitpython.Repo(repo)
    for base in [None, *history]:
        rev = f"{base}..{history[-1]}" if base else history[-1]
        expected = [(c.hexsha, c.author.name, c.author.email, c.committer.name, c.committer.email, c.summary)
                    for c in oracle.iter_commits(rev)]
        got = [(c.sha, c.author_name, c.author_email, c.committer_name, c.committer_email, c.subject)
               for c in git.commits_in_range(base, history[-1], cwd=repo)]
        assert got == expected, base
    assert {c.author_name for c in git.commits_in_range(None, history[-1], cwd=repo)} >= {n for n, _ in AUTHORS}


def test_ancestry_and_merge_base_match_gitpython(repo: Path, history: list[str]) -> None:
    oracle = gitpython.Repo(repo)
    for a in history:
        for b in history:
            assert git.is_ancestor(a, b, cwd=repo) == oracle.is_ancestor(a, b), (a, b)
            (expected,) = oracle.merge_base(a, b)
            assert git.merge_base(a, b, cwd=repo) == expected.hexsha


def test_identity_matches_gitpython(repo: Path) -> None:
    run_git(repo, "config", "user.name", "Config Person")
    run_git(repo, "config", "user.email", "config@example.com")
    oracle = gitpython.Repo(repo)
    reader = oracle.config_reader()
    # The conftest exports GIT_COMMITTER_*: git uses those over the config, and so must cdkit.
    assert git.identity(cwd=repo) == ("Ada Author", "ada@example.com")
    assert reader.get_value("user", "name") == "Config Person"
    assert gitpython.Actor.committer(reader) == gitpython.Actor("Ada Author", "ada@example.com")


def test_a_push_s_changed_files_match_gitpython_however_its_oids_peel(repo: Path, history: list[str]) -> None:
    """A one-ref push starts its `git diff` before `cat-file` has said what the oids are; the guess
    counts only when both are the commits of the range (a moved branch), never for tags or a missing tip."""
    from cdkit.prepush import parse_pre_push, push_targets

    oracle = gitpython.Repo(repo)
    base, head = history[1], history[-1]
    expected = set(git.changed_files(base, head, cwd=repo))  # checked against gitpython above
    run_git(repo, "tag", "-a", "-m", "old", "old", base)
    run_git(repo, "tag", "-a", "-m", "new", "new", head)
    old_tag, new_tag = (run_git(repo, "rev-parse", t).strip() for t in ("old", "new"))
    never_fetched = "1" * 40
    lines = {
        "a branch moved forward": f"refs/heads/main {head} refs/heads/main {base}",
        "an annotated tag moved to another commit": f"refs/tags/v1 {new_tag} refs/tags/v1 {old_tag}",
        "a branch moved to a tag of the same commit": f"refs/heads/main {new_tag} refs/heads/main {base}",
    }
    for what, line in lines.items():
        (target,) = push_targets(parse_pre_push(f"{line}\n".encode()), "origin", repo).targets
        assert (target.head_sha, target.base_sha) == (head, base), what
        assert set(target.changed_files) == expected, what
    # A force push over a tip this repository never fetched: the guessed diff fails, unused; with no
    # remote-tracking ref of origin here, every file of the pushed commit counts.
    (target,) = push_targets(parse_pre_push(f"refs/heads/main {head} refs/heads/main {never_fetched}\n".encode()),
                             "origin", repo).targets
    assert target.base_sha is None
    assert set(target.changed_files) == {b.path for b in oracle.commit(head).tree.traverse() if b.type == "blob"}
