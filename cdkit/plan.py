"""Trigger + Pipeline -> Plan: which stages run, and why each other stage does not."""
from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence

from cdkit.config import Pipeline, Stage
from cdkit.events import Trigger
from cdkit.globs import Matcher, SortedFiles

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from cdkit.ntuple import NamedTuple

# Reasons of stages a run did not judge at all (another trigger, not selected): such a result
# says nothing about the commit, so it never replaces a real one (status, gates, GitHub).
NOT_JUDGED_PREFIXES = ("not selected", "not on ")
# The reason of a stage the user skipped (CDKIT_SKIP): recorded, but never reported as a pass.
SKIPPED_BY_USER = "skipped by CDKIT_SKIP"
# How the reason of a stage whose `paths` matched none of the changed files begins.
PATHS_SKIP_PREFIX = "paths did not match"


class PlannedStage(NamedTuple):
    stage: Stage
    runs: bool
    reason: str  # why it runs, or why not


class Plan(NamedTuple):
    trigger: Trigger
    stages: tuple[PlannedStage, ...]

    @property
    def to_run(self) -> tuple[Stage, ...]:
        return tuple(p.stage for p in self.stages if p.runs)


def parse_skip(value: str | None) -> frozenset[str]:
    """CDKIT_SKIP=a,b (spaces allowed) -> the stage names to skip."""
    return frozenset(s.strip() for s in (value or "").split(",") if s.strip())


def _decide(stage: Stage, trigger: Trigger, files: _ChangedFiles, *, skip: frozenset[str],
            only: frozenset[str]) -> PlannedStage:
    if only and stage.name not in only:
        return PlannedStage(stage, False, "not selected (--stage)")
    if trigger.kind not in stage.on:
        return PlannedStage(stage, False, f"not on {trigger.kind} (runs on: {', '.join(stage.on)})")
    if stage.name in skip:
        return PlannedStage(stage, False, SKIPPED_BY_USER)
    if stage.paths is None:
        return PlannedStage(stage, True, "no paths filter")
    matcher = compiled(stage.paths)
    matched = matcher.first_match(files.direct)
    if matched is not None:
        return PlannedStage(stage, True, f"paths matched {matched}")
    via_link = matcher.first_match(files.through_links())
    if via_link is not None:
        return PlannedStage(stage, True, f"paths matched {via_link} (through a symlink)")
    return PlannedStage(
        stage, False,
        f"{PATHS_SKIP_PREFIX} any of {len(trigger.changed_files)} changed file(s) ({', '.join(stage.paths)})",
    )


@functools.lru_cache(maxsize=256)
def compiled(patterns: tuple[str, ...]) -> Matcher:
    return Matcher(patterns)


class _ChangedFiles:
    """A trigger's changed files, sorted once; their paths through the commit's symlinks, read only if needed."""

    def __init__(self, changed: Sequence[str], symlinks: Callable[[], Mapping[str, str]] | None) -> None:
        self.direct = SortedFiles(changed)
        self._symlinks = symlinks
        self._aliases: SortedFiles | None = None

    def through_links(self) -> SortedFiles:
        if self._aliases is None:
            links = self._symlinks() if self._symlinks is not None and len(self.direct) else {}
            self._aliases = SortedFiles(paths_through_links(self.direct, links))
        return self._aliases


def paths_through_links(files: SortedFiles, links: Mapping[str, str]) -> list[str]:
    """The paths a change also has through tracked symlinks: `src/shared -> ../lib` and a change to
    `lib/x.py` give `src/shared/x.py`; a link whose target itself changed is a change of its own path.

    `links` maps each link's path to its target (as `git ls-tree` stores it); targets outside the
    repository or through too many links are ignored (nothing in the change set can be under them).
    """
    resolved = {link: target for link in links if (target := _resolve(link, links)) is not None}
    aliases = []
    for link, target in resolved.items():
        if target == "":
            continue  # a link to the repository root: every path would alias; its own path is the change
        for path in files.starting_with(target):
            if path == target or path[len(target)] == "/":
                aliases.append(link + path[len(target):])
    return aliases


def _resolve(link: str, links: Mapping[str, str], hops: int = 40) -> str | None:
    """`link`'s target as a repository path ("" for the root), following links on the way;
    None outside the repository or after too many links (a loop)."""
    path = link
    while hops > 0:
        hops -= 1
        target = links[path]
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        if target.startswith("/") or joined == ".." or joined.startswith("../"):
            return None
        real = "" if joined == "." else _through_linked_dirs(joined, links, hops)
        if real is None or real not in links:
            return real
        path = real  # the target is itself a link: follow it
    return None


def _through_linked_dirs(path: str, links: Mapping[str, str], hops: int) -> str | None:
    """`path` with each leading directory that is a link replaced by where it points."""
    parts = path.split("/")
    for cut in range(1, len(parts)):
        head = "/".join(parts[:cut])
        if head in links:
            inner = _resolve(head, links, hops - 1) if hops > 0 else None
            if inner is None:
                return None
            rest = "/".join(parts[cut:])
            return _through_linked_dirs(f"{inner}/{rest}" if inner else rest, links, hops - 1)
    return path


def make_plan(
    pipeline: Pipeline,
    trigger: Trigger,
    *,
    skip: Iterable[str] = (),
    only: Iterable[str] = (),
    symlinks: Callable[[], Mapping[str, str]] | None = None,
) -> Plan:
    """Decide each stage; `symlinks` (the head commit's tracked links, read only when a `paths`
    filter matched nothing directly) lets a change reach a stage's paths through a link."""
    skip_set, only_set = frozenset(skip), frozenset(only)
    files = _ChangedFiles(trigger.changed_files, symlinks)
    return Plan(trigger, tuple(_decide(s, trigger, files, skip=skip_set, only=only_set) for s in pipeline.stages))


def stages_with_needs(pipeline: Pipeline, names: Iterable[str]) -> tuple[str, ...]:
    """`names` and every stage they need, transitively, in pipeline order (unknown names kept, for the error)."""
    known = {s.name: s for s in pipeline.stages}
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        todo.extend(known[name].needs if name in known else ())
    return tuple(s.name for s in pipeline.stages if s.name in wanted) + tuple(sorted(wanted - set(known)))
