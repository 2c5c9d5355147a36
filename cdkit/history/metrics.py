"""The four DORA keys, computed from deployments and the changes they brought (pure: no I/O, no clock).

Definitions (README "History and metrics" says where they come from and where cdkit differs):

- deployment frequency: live deployments (deployed, verified, or live until rolled back) that
  started in the window, per day and per week, and DORA's band for it;
- lead time for changes: for each change a live deployment brought first, from the change's first
  commit (author date) to that deployment's finish; median and p90 (nearest rank);
- change failure rate: of the deployments that finished in the window, those that failed,
  failed verification, were quarantined, cancelled, timed out or crashed, were rolled back
  (the next live deployment was a rollback), or were followed within FIX_WINDOW by a deployment
  bringing a fix (`Revert "…"`, `fix:`, `hotfix:` subjects);
- time to restore: from a failing deployment's finish to the finish of the next deployment that
  restored the environment: a verified one, or a deployed one where the environment never verifies.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cdkit.history.changes import Change
from cdkit.history.records import FAILED, LIVE, NOT_COUNTED, Deployment, without_gc

DAY = 86400.0
WEEK = 7 * DAY
FIX_WINDOW = DAY  # a fix deployed within a day of a deployment says that deployment failed

# DORA's deployment-frequency bands, as deployments per day at least.
BANDS = (("elite", 1.0), ("high", 1 / 7), ("medium", 1 / 30))


def band(per_day: float) -> str:
    """elite: daily or more (on demand); high: weekly to daily; medium: monthly to weekly; low: less."""
    for name, at_least in BANDS:
        if per_day >= at_least:
            return name
    return "low"


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest rank: the smallest value with at least `fraction` of all values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


class Failure(NamedTuple):
    deployment: Deployment
    reason: str  # "failed", "rolled back by ledger:7", "fixed by ledger:9"...


class Restore(NamedTuple):
    failed: Deployment
    restored_by: Deployment | None  # None: still not restored
    seconds: float | None


@dataclass(frozen=True)
class EnvironmentMetrics:
    environment: str
    since: float
    until: float
    deployments: tuple[Deployment, ...]  # counted (finished) deployments in the window
    live: tuple[Deployment, ...]
    lead_times: tuple[float, ...]  # seconds, one per change
    failures: tuple[Failure, ...]
    restores: tuple[Restore, ...]
    restore_outcome: str
    fix_detection: bool

    @property
    def days(self) -> float:
        return max(self.until - self.since, 0.0) / DAY

    @property
    def per_day(self) -> float:
        return len(self.live) / self.days if self.days else 0.0

    @property
    def failure_rate(self) -> float | None:
        return len(self.failures) / len(self.deployments) if self.deployments else None

    @property
    def restore_times(self) -> tuple[float, ...]:
        return tuple(r.seconds for r in self.restores if r.seconds is not None)

    def as_data(self) -> dict[str, Any]:
        restored = self.restore_times
        return {
            "deployment_frequency": {
                "deployments": len(self.live), "days": round(self.days, 6), "per_day": round(self.per_day, 6),
                "per_week": round(self.per_day * 7, 6), "band": band(self.per_day),
            },
            "lead_time_for_changes": {
                "changes": len(self.lead_times), "median_seconds": median(self.lead_times),
                "p90_seconds": percentile(self.lead_times, 0.9),
            },
            "change_failure_rate": {
                "deployments": len(self.deployments), "failed": len(self.failures),
                "rate": None if self.failure_rate is None else round(self.failure_rate, 6),
                "failures": [{"deployment": f.deployment.key, "sha": f.deployment.sha, "reason": f.reason}
                             for f in self.failures],
                "fix_detection": self.fix_detection,
            },
            "time_to_restore": {
                "restores": len(restored), "median_seconds": median(restored),
                "p90_seconds": percentile(restored, 0.9), "restored_by": self.restore_outcome,
                "not_restored": [{"deployment": r.failed.key, "since": r.failed.done_at}
                                 for r in self.restores if r.restored_by is None],
            },
        }


def _next_live(deployments: Sequence[Deployment]) -> list[int | None]:
    """For each deployment, the index of the next live one in its environment (built once: 100,000 stay fast)."""
    following: int | None = None
    result: list[int | None] = [None] * len(deployments)
    for index in range(len(deployments) - 1, -1, -1):
        result[index] = following
        if deployments[index].outcome in LIVE:
            following = index
    return result


def failure_reason(deployments: Sequence[Deployment], index: int, next_live: Sequence[int | None],
                   changes: Mapping[str, Sequence[Change]]) -> str | None:
    """Why deployment `index` counts as a failed change, or None (see the module docstring)."""
    d = deployments[index]
    outcome = d.outcome
    if outcome in FAILED:
        return outcome
    if outcome == "rolled back":
        return "rolled back"
    following = next_live[index] if outcome in LIVE else None
    if following is None:
        return None
    nxt = deployments[following]
    if nxt.rollback:
        return f"rolled back by {nxt.key}"
    if nxt.started_at - d.done_at <= FIX_WINDOW:
        for change in changes.get(nxt.key, ()):  # a loop, not any(generator): this runs once per deployment
            if change.is_fix:
                return f"fixed by {nxt.key}"
    return None


def environment_metrics(environment: str, deployments: Sequence[Deployment],
                        changes: Mapping[str, Sequence[Change]], *, since: float | None, until: float,
                        fix_detection: bool = True) -> EnvironmentMetrics:
    """The four keys for one environment; `deployments` is its whole history in start order."""
    next_live = _next_live(deployments)
    start = since if since is not None else (deployments[0].started_at if deployments else until)
    restore_outcome = "verified" if any(d.outcome == "verified" for d in deployments) else "deployed"
    counted, live, lead_times, failures, restores = [], [], [], [], []
    broken: Deployment | None = None
    for index, d in enumerate(deployments):
        if d.outcome in NOT_COUNTED:
            continue
        inside = start <= d.started_at < until
        reason = failure_reason(deployments, index, next_live, changes)
        if inside:
            counted.append(d)
            if reason:
                failures.append(Failure(d, reason))
            if d.outcome in LIVE:
                live.append(d)
                done = d.done_at
                for change in changes.get(d.key, ()):
                    lead_times.append(max(0.0, done - change.first_commit_at))
        if reason:
            if broken is None:
                broken = d
        elif broken is not None and d.outcome == restore_outcome:
            if start <= broken.started_at < until:
                restores.append(Restore(broken, d, max(0.0, d.done_at - broken.done_at)))
            broken = None
    if broken is not None and start <= broken.started_at < until:
        restores.append(Restore(broken, None, None))
    return EnvironmentMetrics(environment, start, until, tuple(counted), tuple(live), tuple(lead_times),
                              tuple(failures), tuple(restores), restore_outcome, fix_detection)


@without_gc
def compute(deployments: Sequence[Deployment], changes: Mapping[str, Sequence[Change]], *,
            since: float | None, until: float, fix_detection: bool = True) -> dict[str, EnvironmentMetrics]:
    """Per environment (in the order each first appears), from every deployment in start order.

    Deployments before `since` still give context (what ran, what a failure was fixed by);
    nothing that started at or after `until` is looked at: the keys are as they were then.
    """
    by_env: dict[str, list[Deployment]] = {}
    for d in deployments:
        if d.started_at < until:
            by_env.setdefault(d.environment, []).append(d)
    return {env: environment_metrics(env, items, changes, since=since, until=until, fix_detection=fix_detection)
            for env, items in by_env.items()}
