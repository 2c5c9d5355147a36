"""Freeze and deploy windows (issue 10 §4): the pure module, its config, and its DST behaviour (hypothesis).

The brute-force oracle below decides membership minute by minute from croniter's field
matcher alone (`croniter.match` on a wall-clock time), with the documented rules for DST
gaps and folds; `cdkit.windows` computes it by iterating fire times. They must agree.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdkit import windows
from cdkit.config import ConfigError, Window, load_text
from tests.helpers import config

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
FREEZE = Window("weekend freeze", "deny", "0 16 * * FRI", 64 * 3600, "Europe/Berlin")
HOURS = Window("business hours", "allow", "0 9 * * MON-FRI", 8 * 3600, "Europe/Berlin")

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo", "Asia/Tehran", "UTC"]
SCHEDULES = ["0 16 * * FRI", "30 2 * * *", "0 2 * * SUN", "*/20 1-3 * * *", "0 0 1 * *", "15 3 * * *",
             "0 9 * * MON-FRI", "45 1 * 3,10 SUN"]


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


# --- examples ------------------------------------------------------------------------------------


def test_the_weekend_freeze_holds_from_friday_16_00_and_names_when_deploys_resume() -> None:
    inside = windows.evaluate([FREEZE], berlin(2026, 12, 4, 17, 0))
    assert not inside.allowed and inside.window == FREEZE
    assert inside.message == "weekend freeze until Mon 08:00 Europe/Berlin"
    assert inside.resume == berlin(2026, 12, 7, 8, 0)
    # Positive controls: a minute before it opens, and the instant it ends, deploys are allowed.
    assert windows.evaluate([FREEZE], berlin(2026, 12, 4, 15, 59)).allowed
    assert windows.evaluate([FREEZE], berlin(2026, 12, 7, 8, 0)).allowed
    assert not windows.evaluate([FREEZE], berlin(2026, 12, 4, 16, 0)).allowed  # the start is inside


def test_outside_every_allow_window_is_refused_naming_the_next_opening() -> None:
    evening = windows.evaluate([HOURS], berlin(2026, 12, 2, 20, 0))
    assert not evening.allowed and evening.outside_allow
    assert evening.message == "outside every allow window; deploys resume when business hours opens, " \
        "Thu 09:00 Europe/Berlin"
    assert windows.evaluate([HOURS], berlin(2026, 12, 2, 12, 0)).allowed


def test_deny_wins_over_allow_and_resume_respects_both() -> None:
    friday_afternoon = berlin(2026, 12, 4, 16, 30)  # inside business hours and inside the freeze
    verdict = windows.evaluate([FREEZE, HOURS], friday_afternoon)
    assert not verdict.allowed and verdict.window == FREEZE and not verdict.outside_allow
    # The freeze ends Monday 08:00, but business hours open at 09:00: that is when deploys resume.
    assert verdict.message == "weekend freeze until Mon 09:00 Europe/Berlin"


def test_across_the_autumn_change_the_freeze_lasts_64_hours_of_elapsed_time() -> None:
    verdict = windows.evaluate([FREEZE], berlin(2026, 10, 23, 17, 0))  # clocks go back on Sunday the 25th
    assert verdict.message == "weekend freeze until Mon 07:00 Europe/Berlin"
    opening = windows.opening_at(FREEZE, berlin(2026, 10, 23, 17, 0))
    assert opening is not None and opening.start == berlin(2026, 10, 23, 16, 0)
    assert opening.end - opening.start == timedelta(hours=64)


def test_a_time_skipped_by_spring_forward_fires_after_the_gap_and_a_repeated_one_fires_once() -> None:
    nightly = Window("nightly", "deny", "30 2 * * *", 3600, "Europe/Berlin")
    assert windows.next_start(nightly, berlin(2026, 3, 28, 12, 0)) == berlin(2026, 3, 29, 3, 0)
    first = windows.next_start(nightly, berlin(2026, 10, 24, 12, 0))
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 summer time, the first 02:30
    assert windows.next_start(nightly, first) == berlin(2026, 10, 26, 2, 30)


def test_a_window_that_never_ends_says_so() -> None:
    always = Window("always", "deny", "* * * * *", 120, "UTC")
    verdict = windows.evaluate([always], datetime(2026, 1, 1, tzinfo=UTC))
    assert verdict.resume is None and verdict.message == "always with no end in sight (nothing opens within a year)"


def test_far_resume_times_carry_the_date_and_a_naive_now_is_refused() -> None:
    yearly = Window("year-end freeze", "deny", "0 0 15 12 *", 30 * 86400, "UTC")
    verdict = windows.evaluate([yearly], datetime(2026, 12, 20, tzinfo=UTC))
    assert verdict.message == "year-end freeze until Thu 2027-01-14 00:00 UTC"
    with pytest.raises(ValueError, match="aware datetime"):
        windows.evaluate([yearly], datetime(2026, 12, 20))


# --- config ----------------------------------------------------------------------------------------


def pipeline_with(windows_yaml: str, extra: str = "") -> str:
    return config("""
        version: 1
        stages:
          - name: test
            run: "true"
        environments:
          - name: production
            deploy: ./deploy.sh
        """) + "".join(f"    {line}\n" for line in (extra + windows_yaml).splitlines())


def test_windows_and_break_glass_load() -> None:
    pipeline = load_text(pipeline_with("""windows:
  - name: weekend freeze
    deny: {schedule: "0 16 * * FRI", duration: 64h, timezone: Europe/Berlin}
  - name: business hours
    allow: {schedule: "0 9 * * MON-FRI", duration: 8h}""", "break_glass: {required: 2}\n"))
    env = pipeline.environments[0]
    assert env.windows == (FREEZE, HOURS._replace(timezone="UTC")) and env.break_glass == 2
    assert load_text(pipeline_with("")).environments[0].break_glass is None


@pytest.mark.parametrize(("spec", "message"), [
    ('deny: {schedule: "0 16 * FRI", duration: 1h}',
     '.cdkit.yml:10:26: environments[0].windows[0].deny.schedule: "0 16 * FRI" has 4 field(s); a schedule has five'),
    ('deny: {schedule: "61 16 * * FRI", duration: 1h}',
     '.cdkit.yml:10:26: environments[0].windows[0].deny.schedule: "61 16 * * FRI" is not a valid cron schedule'),
    ('deny: {schedule: "H 16 * * FRI", duration: 1h}',
     '.cdkit.yml:10:26: environments[0].windows[0].deny.schedule: "H 16 * * FRI" is not a valid cron schedule'),
    ('deny: {schedule: "0 16 * * FRI", duration: 30s}',
     '.cdkit.yml:10:52: environments[0].windows[0].deny.duration: "30s" is shorter than a minute'),
    ('deny: {schedule: "0 16 * * FRI", duration: 2d}',
     '.cdkit.yml:10:52: environments[0].windows[0].deny.duration: "2d" is not a duration (use e.g. 10m, 90s, 1h30m)'),
    ('deny: {schedule: "0 16 * * FRI", duration: 1h, timezone: Europe/Berln}',
     '.cdkit.yml:10:66: environments[0].windows[0].deny.timezone: "Europe/Berln" is not an IANA time zone'),
    ('deny: {schedule: "0 16 * * FRI", duration: 1h, timezone: Europe}',
     '.cdkit.yml:10:66: environments[0].windows[0].deny.timezone: "Europe" is not an IANA time zone'),
    ('deny: {schedule: "0 16 * * FRI", duration: 1h, timezone: ../../etc/passwd}',
     '.cdkit.yml:10:66: environments[0].windows[0].deny.timezone: "../../etc/passwd" is not an IANA time zone'),
    ('allow: {schedule: "0 9 * * *", duration: 1h}\n    deny: {schedule: "0 9 * * *", duration: 1h}',
     ".cdkit.yml:9:9: environments[0].windows[0]: a window is either `deny:` (a freeze) or `allow:` (deploys only "
     "then), with exactly one of them; this one has deny and allow"),
    ("{}", ".cdkit.yml:9:9: environments[0].windows[0]: a window is either `deny:`"),
])
def test_a_bad_window_is_a_clear_error_at_its_line(spec: str, message: str) -> None:
    text = pipeline_with(f"windows:\n  - name: freeze\n    {spec}")
    with pytest.raises(ConfigError) as info:
        load_text(text.replace("    {}", ""), ".cdkit.yml")
    assert any(m.startswith(message) for m in info.value.messages), info.value.messages


def test_duplicate_window_names_and_a_bad_break_glass_are_errors() -> None:
    text = pipeline_with("""windows:
  - name: freeze
    deny: {schedule: "0 16 * * FRI", duration: 1h}
  - name: freeze
    deny: {schedule: "0 17 * * FRI", duration: 1h}""", "break_glass: {required: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_text(text, ".cdkit.yml")
    assert [m.split(": ")[1] for m in info.value.messages] == ["environments[0].break_glass.required"], \
        info.value.messages
    text = text.replace("required: 0", "required: 1")
    with pytest.raises(ConfigError) as info:
        load_text(text, ".cdkit.yml")
    assert info.value.messages == [".cdkit.yml:12:15: environments[0].windows[1].name: duplicate window name 'freeze' "
                                   "(also window 1 of this environment); window names must be unique"]


def test_the_hook_cache_keeps_windows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cdkit.hook_entry import load_pipeline_cached

    path = tmp_path / ".cdkit.yml"
    path.write_text(pipeline_with("""windows:
  - name: weekend freeze
    deny: {schedule: "0 16 * * FRI", duration: 64h, timezone: Europe/Berlin}""", "break_glass: {required: 2}\n"))
    first = load_pipeline_cached(path, tmp_path / "cache")
    again = load_pipeline_cached(path, tmp_path / "cache")  # from the marshal cache
    assert again == first and again.environments[0].windows == (FREEZE,)


# --- DST properties (hypothesis) ---------------------------------------------------------------------

# Instants around the DST changes of 2000-2037 and anywhere in between.
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31),
                        timezones=st.just(UTC))


@lru_cache(maxsize=None)
def _matches(schedule: str, wall: datetime) -> bool:
    return bool(croniter.match(schedule, wall))  # ~0.4 ms a call: the oracle's whole cost


def _oracle_fires(schedule: str, u: datetime, zone: ZoneInfo) -> bool:
    """Whether the UTC minute `u` is a fire time, from croniter's field matcher and the documented DST rules."""
    here = u.astimezone(zone)
    if here.fold == 1:
        return False  # a repeated wall-clock time fires at its first occurrence only
    wall = here.replace(tzinfo=None)
    if _matches(schedule, wall):
        return True
    before = (u - timedelta(minutes=1)).astimezone(zone).replace(tzinfo=None)
    skipped = before + timedelta(minutes=1)
    while skipped < wall:  # a spring-forward gap ends at `u`: its wall times fire now
        if _matches(schedule, skipped):
            return True
        skipped += timedelta(minutes=1)
    return False


def _oracle_open(window: Window, t: datetime) -> bool:
    zone = ZoneInfo(window.timezone)
    u = t.replace(second=0, microsecond=0)
    earliest = t - timedelta(seconds=window.duration)
    while u > earliest:  # fire times s with t - duration < s <= t
        if _oracle_fires(window.schedule, u, zone):
            return True
        u -= timedelta(minutes=1)
    return False


def _near_a_change(zone_name: str, t: datetime) -> datetime:
    """Move `t` to within a few hours of the zone's next UTC offset change in that year, when it has one."""
    zone = ZoneInfo(zone_name)
    probe, offset = t, t.astimezone(zone).utcoffset()
    for _ in range(24 * 400):
        probe += timedelta(hours=1)
        if probe.astimezone(zone).utcoffset() != offset:
            return probe - timedelta(hours=3) + timedelta(minutes=(t.minute * 7) % 360)
        if probe - t > timedelta(days=370):
            break
    return t


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=instants, zone=st.sampled_from(ZONES), schedule=st.sampled_from(SCHEDULES),
       minutes=st.integers(min_value=1, max_value=4 * 60), near=st.booleans())
def test_membership_agrees_with_a_brute_force_minute_scan(t: datetime, zone: str, schedule: str, minutes: int,
                                                          near: bool) -> None:
    at = _near_a_change(zone, t) if near else t
    window = Window("w", "deny", schedule, minutes * 60.0, zone)
    assert (windows.opening_at(window, at) is not None) == _oracle_open(window, at)


@settings(max_examples=200, deadline=None)
@given(t=instants, near=st.booleans())
def test_the_friday_freeze_always_opens_at_16_00_berlin_and_lasts_64_elapsed_hours(t: datetime, near: bool) -> None:
    at = _near_a_change("Europe/Berlin", t) if near else t
    start = windows.latest_start(FREEZE, at)
    following = windows.next_start(FREEZE, at)
    for instant in (start, following):
        assert instant is not None
        local = instant.astimezone(BERLIN)
        assert (local.strftime("%a"), local.hour, local.minute) == ("Fri", 16, 0)
    assert start is not None and following is not None
    assert start <= at < following and following - start in (timedelta(days=7), timedelta(days=7, hours=1),
                                                              timedelta(days=7, hours=-1))
    opening = windows.opening_at(FREEZE, at)
    if opening is not None:
        assert opening.end - opening.start == timedelta(hours=64)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=instants, zone=st.sampled_from(ZONES), deny=st.sampled_from(SCHEDULES), allow=st.sampled_from(SCHEDULES),
       deny_hours=st.integers(min_value=1, max_value=30), allow_hours=st.integers(min_value=1, max_value=12),
       with_allow=st.booleans(), near=st.booleans())
def test_resume_is_never_inside_a_deny_window_nor_outside_every_allow_window(
        t: datetime, zone: str, deny: str, allow: str, deny_hours: int, allow_hours: int, with_allow: bool,
        near: bool) -> None:
    at = _near_a_change(zone, t) if near else t
    rules = [Window("freeze", "deny", deny, deny_hours * 3600.0, zone)]
    if with_allow:
        rules.append(Window("open", "allow", allow, allow_hours * 3600.0, zone))
    verdict = windows.evaluate(rules, at)
    if verdict.allowed:
        return
    resume = verdict.resume
    if resume is None:
        return  # nothing opens within the horizon (e.g. an allow window swallowed by the freeze)
    assert resume > at
    assert not _oracle_open(rules[0], resume)
    if with_allow:
        assert _oracle_open(rules[1], resume)
    assert not windows.holds(rules, resume)
    # Nothing earlier is allowed: sampled each half hour back to `at` (up to a day).
    probe = resume - timedelta(minutes=1)
    while probe > at and resume - probe < timedelta(days=1):
        assert windows.holds(rules, probe)
        probe -= timedelta(minutes=30)
