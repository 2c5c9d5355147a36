"""Trigger + Pipeline -> Plan: which stages run, and why each other stage does not."""
from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from cdkit.config import Pipeline, Stage
from cdkit.events import Trigger
from cdkit.globs import matching_files

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


def _decide(stage: Stage, trigger: Trigger, *, skip: frozenset[str], only: frozenset[str]) -> PlannedStage:
    if only and stage.name not in only:
        return PlannedStage(stage, False, "not selected (--stage)")
    if trigger.kind not in stage.on:
        return PlannedStage(stage, False, f"not on {trigger.kind} (runs on: {', '.join(stage.on)})")
    if stage.name in skip:
        return PlannedStage(stage, False, SKIPPED_BY_USER)
    if stage.paths is None:
        return PlannedStage(stage, True, "no paths filter")
    matched = matching_files(stage.paths, trigger.changed_files)
    if not matched:
        return PlannedStage(
            stage, False,
            f"{PATHS_SKIP_PREFIX} any of {len(trigger.changed_files)} changed file(s) ({', '.join(stage.paths)})",
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
