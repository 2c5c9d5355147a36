"""Freeze and deploy windows: whether an environment may be deployed to at an instant, and when it may again.

Pure: no clock, no I/O. The caller passes `now` (an aware datetime; the release gate
takes it from the ledger's clock, which tests inject).

A window opens at each fire time of its cron `schedule`, read in its `timezone`'s
wall-clock time, and stays open for `duration` of elapsed time: it is open at t
when some fire time s has s <= t < s + duration. Across DST changes:

- a fire time is a wall-clock time: `0 16 * * FRI` opens at 16:00 local, summer or winter;
- a wall-clock time that a spring-forward gap skips fires at the first instant after the gap
  (as cron and croniter do); one that a fall-back repeats fires once, at its first occurrence;
- the end is `duration` later in elapsed time, so a 64h freeze that spans a change ends an
  hour earlier or later on the wall clock.

Deny wins over allow; with any allow window, an instant outside every allow window is refused.
croniter enumerates naive wall-clock times (it is DST-free there); this module maps them to instants.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import croniter

from cdkit.config import Window

UTC = timezone.utc
# Offset changes are looked for this far around an instant: wider than any change ever made (DST is 1h;
# Samoa skipped a whole day in 2011). Offsets are sampled hourly: none has ever lasted less than an hour.
_NEAR = 26
# How far ahead `resume_at` looks, and how many openings it steps over, before saying deploys never resume.
HORIZON = timedelta(days=400)
MAX_STEPS = 5000


@dataclass(frozen=True)
class Opening:
    """One time a window is open: [start, end)."""

    window: Window
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Verdict:
    """Whether deploys are allowed at `at`; when not, which window blocks and when deploys resume."""

    at: datetime
    allowed: bool
    window: Window | None = None  # the deny window that holds, or the allow window that opens next
    outside_allow: bool = False  # refused because no allow window is open (not a deny window)
    resume: datetime | None = None  # None when refused: not within HORIZON

    @property
    def message(self) -> str:
        """`weekend freeze until Mon 08:00 Europe/Berlin`, or why deploys are allowed now."""
        if self.allowed:
            return "no window holds deploys now"
        assert self.window is not None
        until = f"until {when(self.resume, self.window.timezone, self.at)}" if self.resume else \
            "with no end in sight (nothing opens within a year)"
        if self.outside_allow:
            return f"outside every allow window; deploys resume when {self.window.name} opens, {until.removeprefix('until ')}"
        return f"{self.window.name} {until}"

    def as_data(self) -> dict[str, object]:
        return {"allowed": self.allowed, "window": self.window.name if self.window else None,
                "kind": None if self.window is None else ("outside allow" if self.outside_allow else "deny"),
                "resume": self.resume.isoformat() if self.resume else None, "message": self.message}


def when(instant: datetime | None, zone: str, now: datetime | None = None) -> str:
    """`Mon 08:00 Europe/Berlin`, with the date when it is a week or more after `now`."""
    if instant is None:
        return "never"
    local = instant.astimezone(_zone(zone))
    far = now is not None and instant - now >= timedelta(days=6)
    return local.strftime("%a %Y-%m-%d %H:%M" if far else "%a %H:%M") + f" {zone}"


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a naive wall-clock fire time means in `zone` (see the module docstring for gaps and folds)."""
    first = wall.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return first.astimezone(UTC)  # exists (the first of two, in a repeated hour)
    # In a spring-forward gap: the first instant whose wall time is past `wall`. Before the gap the
    # offset is the earlier one (fold=0 gives that); after it, the later one (fold=1).
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())  # before the change
    high = int(first.timestamp())  # after it
    while low + 1 < high:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) > wall:
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, UTC)


def _walls(window: Window, start: datetime, *, backwards: bool) -> Iterator[datetime]:
    iterator = croniter(window.schedule, start, ret_type=datetime)
    step = iterator.get_prev if backwards else iterator.get_next
    while True:
        yield step(datetime)


def _local(now: datetime, zone: ZoneInfo) -> datetime:
    return now.astimezone(zone).replace(tzinfo=None)


def _offset_change(at: datetime, zone: ZoneInfo, *, hours: range) -> timedelta:
    """The largest amount by which the UTC offset at `at + h` (h in `hours`) exceeds the offset at `at`."""
    here = at.astimezone(zone).utcoffset() or timedelta(0)
    others = ((at + timedelta(hours=h)).astimezone(zone).utcoffset() or timedelta(0) for h in hours)
    return max(timedelta(0), max(others) - here)


def latest_start(window: Window, now: datetime) -> datetime | None:
    """The window's last fire time at or before `now` (an instant)."""
    zone = _zone(window.timezone)
    # Fire instants never decrease as wall times increase, and a fire at or before `now` has a wall time
    # no later than now's, plus however much the offset was higher shortly before: walk back from there.
    start = _local(now, zone) + _offset_change(now, zone, hours=range(-_NEAR, 1))
    for wall in _walls(window, start + timedelta(seconds=1), backwards=True):
        instant = _instant(wall, zone)
        if instant <= now:
            return instant
    return None  # pragma: no cover - croniter's iterators do not end


def next_start(window: Window, after: datetime) -> datetime | None:
    """The window's first fire time strictly after `after`."""
    zone = _zone(window.timezone)
    # The mirror image of `latest_start`: walk forward from after's wall time, less any coming fall in offset.
    here = after.astimezone(zone).utcoffset() or timedelta(0)
    drop = max(timedelta(0), here - min((after + timedelta(hours=h)).astimezone(zone).utcoffset() or timedelta(0)
                                        for h in range(0, _NEAR + 1)))
    for wall in _walls(window, _local(after, zone) - drop - timedelta(seconds=1), backwards=False):
        instant = _instant(wall, zone)
        if instant > after:
            return instant
    return None  # pragma: no cover - croniter's iterators do not end


def opening_at(window: Window, at: datetime) -> Opening | None:
    """The opening of `window` that `at` falls in (the latest one, when openings overlap), or None."""
    start = latest_start(window, at)
    if start is None:
        return None
    end = start + timedelta(seconds=window.duration)
    return Opening(window, start, end) if at < end else None


def evaluate(windows: Sequence[Window], now: datetime) -> Verdict:
    """Whether deploys are allowed at `now`, which window blocks, and when deploys resume."""
    if now.tzinfo is None:
        raise ValueError("evaluate needs an aware datetime (a naive one has no instant)")
    blocked = _block(windows, now)
    if blocked is None:
        return Verdict(now, True)
    window, outside_allow, _until = blocked
    return Verdict(now, False, window, outside_allow, resume_at(windows, now))


def holds(windows: Sequence[Window], at: datetime) -> bool:
    """Whether some window holds deploys at `at` (`evaluate` without working out when they resume)."""
    return _block(windows, at) is not None


def _block(windows: Sequence[Window], at: datetime) -> tuple[Window, bool, datetime] | None:
    """What holds deploys at `at`: (deny window, False, its end), (next allow window, True, its next opening)."""
    denies = [o for o in (opening_at(w, at) for w in windows if w.kind == "deny") if o is not None]
    if denies:
        latest = max(denies, key=lambda o: o.end)
        return latest.window, False, latest.end
    allows = [w for w in windows if w.kind == "allow"]
    if not allows or any(opening_at(w, at) is not None for w in allows):
        return None
    upcoming = [(start, w) for w in allows if (start := next_start(w, at)) is not None]
    if not upcoming:
        return allows[0], True, at + HORIZON
    start, window = min(upcoming, key=lambda pair: pair[0])
    return window, True, start


def resume_at(windows: Sequence[Window], now: datetime) -> datetime | None:
    """The first instant at or after `now` when no window holds deploys; None when not within HORIZON.

    Jumps from the end of each holding deny opening (or to the next allow opening) until
    nothing holds, so the answer is never inside a deny window nor outside every allow window.
    """
    at = now
    for _ in range(MAX_STEPS):
        if at - now > HORIZON:
            break
        blocked = _block(windows, at)
        if blocked is None:
            return at
        at = max(blocked[2], at + timedelta(seconds=1))
    return None
