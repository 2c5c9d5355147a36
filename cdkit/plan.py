"""Trigger + Pipeline -> Plan: which stages run, and why each other stage does not."""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import NamedTuple

from cdkit.config import Pipeline, Stage
from cdkit.events import Trigger


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


@functools.lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """GitHub Actions filter semantics: `*` and `?` stay within a directory, `**` crosses them."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif c == "*":
            out += "[^/]*"
            i += 1
        elif c == "?":
            out += "[^/]"
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(c)
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out += f"[{body}]"
                i = end + 1
        else:
            out += re.escape(c)
            i += 1
    if pattern.endswith("/"):
        out += ".*"  # a directory pattern matches everything below it
    return re.compile(out + r"\Z", re.DOTALL)


def glob_match(pattern: str, path: str) -> bool:
    return _glob_regex(pattern).match(path) is not None


def matching_files(patterns: Iterable[str], files: Iterable[str]) -> list[str]:
    """Files selected by `patterns`, where a later `!pattern` removes earlier matches."""
    patterns = tuple(patterns)
    selected = []
    for path in files:
        keep = False
        for pattern in patterns:
            if pattern.startswith("!"):
                if keep and glob_match(pattern[1:], path):
                    keep = False
            elif not keep and glob_match(pattern, path):
                keep = True
        if keep:
            selected.append(path)
    return selected


def parse_skip(value: str | None) -> frozenset[str]:
    """CDKIT_SKIP=a,b (spaces allowed) -> the stage names to skip."""
    return frozenset(s.strip() for s in (value or "").split(",") if s.strip())


def _decide(stage: Stage, trigger: Trigger, *, skip: frozenset[str], only: frozenset[str]) -> PlannedStage:
    if only and stage.name not in only:
        return PlannedStage(stage, False, "not selected (--stage)")
    if trigger.kind not in stage.on:
        return PlannedStage(stage, False, f"not on {trigger.kind} (runs on: {', '.join(stage.on)})")
    if stage.name in skip:
        return PlannedStage(stage, False, "skipped by CDKIT_SKIP")
    if stage.paths is None:
        return PlannedStage(stage, True, "no paths filter")
    matched = matching_files(stage.paths, trigger.changed_files)
    if not matched:
        return PlannedStage(
            stage, False,
            f"paths did not match any of {len(trigger.changed_files)} changed file(s) ({', '.join(stage.paths)})",
        )
    more = f" and {len(matched) - 1} more" if len(matched) > 1 else ""
    return PlannedStage(stage, True, f"paths matched {matched[0]}{more}")


def make_plan(
    pipeline: Pipeline,
    trigger: Trigger,
    *,
    skip: Iterable[str] = (),
    only: Iterable[str] = (),
) -> Plan:
    skip_set, only_set = frozenset(skip), frozenset(only)
    return Plan(trigger, tuple(_decide(s, trigger, skip=skip_set, only=only_set) for s in pipeline.stages))
