"""Which changes each deployment brought to its environment, from the commit graph (pure functions).

A *change* is one commit on the first-parent line of what was deployed, together with
the commits a merge brings in beside it (a merged pull request is one change; so is a
squashed or rebased one). Its *first commit* is the earliest authored commit in it:
lead time runs from there to the deployment that first made it live in the environment.

The first deployment to an environment has nothing before it to measure from: it sets
the baseline (everything it runs counts as already there) and brings no changes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from cdkit.git import CommitNode
from cdkit.history.records import LIVE, Deployment, without_gc

# A commit that says it repairs an earlier one: `git revert`'s subject, or a conventional-commit fix.
FIX_SUBJECT = re.compile(r'^(?:Revert "|(?:fix|hotfix)(?:\([^)]*\))?!?:)', re.IGNORECASE)
FIX_FIRST_LETTERS = frozenset("RrFfHh")  # a subject starting otherwise cannot match: no regex run for it


def is_fix_subject(subject: str) -> bool:
    return subject[:1] in FIX_FIRST_LETTERS and FIX_SUBJECT.match(subject) is not None


class Change(NamedTuple):
    head: str  # the first-parent commit
    commits: tuple[str, ...]
    first_commit_at: float
    is_fix: bool


def _group(graph: Mapping[str, CommitNode], head: str, seen: set[str]) -> list[CommitNode]:
    """`head` and every commit it brings that is not yet in the environment (marks them seen)."""
    stack, group = [head], []
    while stack:
        sha = stack.pop()
        if sha in seen:
            continue
        node = graph.get(sha)
        if node is None:
            continue
        seen.add(sha)
        group.append(node)
        stack.extend(node.parents)
    return group


def new_changes(graph: Mapping[str, CommitNode], sha: str, seen: set[str]) -> list[Change]:
    """The changes `sha` brings to an environment that already has `seen` (ancestor-closed; updated), oldest first."""
    node = graph.get(sha)
    if node is not None and sha not in seen and len(node.parents) == 1 and node.parents[0] in seen:
        seen.add(sha)  # the common case, one commit on top of what runs: no walk needed
        return [Change(sha, (sha,), float(node.author_time), is_fix_subject(node.subject))]
    line = []
    cursor: str | None = sha
    while cursor is not None and cursor not in seen and cursor in graph:
        line.append(cursor)
        parents = graph[cursor].parents
        cursor = parents[0] if parents else None
    changes = []
    for head in reversed(line):  # oldest first: each group then stops at what older ones covered
        group = _group(graph, head, seen)
        if group:
            first = min(node.author_time for node in group) if len(group) > 1 else group[0].author_time
            fix = any(is_fix_subject(node.subject) for node in group)
            changes.append(Change(head, tuple(node.sha for node in group), float(first), fix))
    return changes


@without_gc
def changes_by_deployment(deployments: Sequence[Deployment],
                          graph: Mapping[str, CommitNode]) -> dict[str, list[Change]]:
    """For each live deployment (by key), the changes it first brought to its environment.

    Deployments in start order. A rollback brings nothing new: what it runs was there
    before. A SHA missing from the graph (not in this clone) brings nothing measurable.
    The common case, one new commit on top of what runs, is inlined: this loop runs once
    per deployment (100,000 in bench/bench_metrics.py).
    """
    seen: dict[str, set[str]] = {}
    result: dict[str, list[Change]] = {}
    counted = LIVE | {"baseline"}
    graph_get = graph.get
    fix_match, fix_letters = FIX_SUBJECT.match, FIX_FIRST_LETTERS
    new = tuple.__new__
    for d in deployments:
        sha = d.sha
        node = graph_get(sha)
        if node is None or d.outcome not in counted:
            continue
        env_seen = seen.get(d.environment)
        if env_seen is None:
            seen[d.environment] = env_seen = set()
            _group(graph, sha, env_seen)  # the baseline: its whole history was there already
            result[d.key] = []
            continue
        parents = node.parents
        if sha not in env_seen and len(parents) == 1 and parents[0] in env_seen:
            env_seen.add(sha)
            subject = node.subject
            fix = subject[:1] in fix_letters and fix_match(subject) is not None  # is_fix_subject, inlined
            result[d.key] = [new(Change, (sha, (sha,), float(node.author_time), fix))]
        else:
            result[d.key] = new_changes(graph, sha, env_seen)
    return result
