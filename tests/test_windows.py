"""Maintenance windows: syntax, normal form, errors, midnight, time zones and DST."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from nfu_tui.domain.windows import MaintenanceWindow, WindowSet, local_zone, parse_window

UTC = timezone.utc
VIENNA = ZoneInfo("Europe/Vienna")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # DST shift of 30 minutes


def at(zone, *args) -> datetime:
    return datetime(*args, tzinfo=zone)


# --- syntax -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "days", "start", "end", "zone", "normal"),
    [
        ("Sat 02:00-05:00 Europe/Vienna", {5}, 120, 300, "Europe/Vienna", "Sat 02:00-05:00 Europe/Vienna"),
        ("Mon-Fri 22:00-23:30", {0, 1, 2, 3, 4}, 1320, 1410, None, "Mon-Fri 22:00-23:30"),
        ("Sun,Wed 01:00-03:00 UTC", {6, 2}, 60, 180, "UTC", "Wed,Sun 01:00-03:00 UTC"),
        ("daily 03:00-04:00", set(range(7)), 180, 240, None, "daily 03:00-04:00"),
        ("Fri 23:00-02:00", {4}, 1380, 120, None, "Fri 23:00-02:00"),
        ("Fri-Mon 01:00-03:00", {4, 5, 6, 0}, 60, 180, None, "Fri-Mon 01:00-03:00"),
        ("Sat-Sun 01:00-03:00", {5, 6}, 60, 180, None, "Sat,Sun 01:00-03:00"),
        ("weekdays 9:05-17:00", {0, 1, 2, 3, 4}, 545, 1020, None, "Mon-Fri 09:05-17:00"),
        ("WEEKENDS 00:00-24:00", {5, 6}, 0, 1440, None, "Sat,Sun 00:00-24:00"),
        ("Sat 22:00-00:00", {5}, 1320, 1440, None, "Sat 22:00-24:00"),
        ("saturday,Monday 01:00-02:00 utc", {5, 0}, 60, 120, "UTC", "Mon,Sat 01:00-02:00 UTC"),
        ("Mon,Wed-Fri,Sun 01:00-02:00", {0, 2, 3, 4, 6}, 60, 120, None, "Wed-Fri,Sun,Mon 01:00-02:00"),
        ("Mon,Tue,Thu 01:00-02:00", {0, 1, 3}, 60, 120, None, "Mon,Tue,Thu 01:00-02:00"),
        ("Sun,Mon,Sat,Thu,Wed 01:00-02:00", {0, 2, 3, 5, 6}, 60, 120, None, "Wed,Thu,Sat-Mon 01:00-02:00"),
        ("  mon - fri   22:00 \u2013 23:30  ", {0, 1, 2, 3, 4}, 1320, 1410, None, "Mon-Fri 22:00-23:30"),
        ("Tue 02:00-05:00 America/Argentina/Buenos_Aires", {1}, 120, 300,
         "America/Argentina/Buenos_Aires", "Tue 02:00-05:00 America/Argentina/Buenos_Aires"),
    ],
)
def test_syntax_forms_and_normal_form(spec, days, start, end, zone, normal) -> None:
    w = parse_window(spec)
    assert (w.days, w.start, w.end, w.zone) == (frozenset(days), start, end, zone)
    assert str(w) == normal
    assert parse_window(str(w)) == w  # the normal form round-trips


def test_crossing_and_duration() -> None:
    assert parse_window("Fri 23:00-02:00").crosses_midnight
    assert parse_window("Fri 23:00-02:00").duration == timedelta(hours=3)
    assert not parse_window("Sat 00:00-24:00").crosses_midnight
    assert parse_window("Sat 00:00-24:00").duration == timedelta(hours=24)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("Sta 02:00-05:00", "unknown day 'Sta'"),
        ("Mon-Frx 02:00-05:00", "unknown day 'Frx'"),
        ("02:00-05:00", "the days are missing"),
        ("02:00-05:00 Sat", "the days come first"),
        ("Sat 02:00", "'02:00' is not a time range"),
        ("Sat 2pm-3pm", "'2pm' is not a time"),
        ("Sat 25:00-26:00", "time '25:00' is out of range"),
        ("Sat 02:60-03:00", "time '02:60' is out of range"),
        ("Sat 24:00-02:00", "time '24:00' is out of range (00:00-23:59)"),
        ("Sat 02:00-24:30", "time '24:30' is out of range (00:00-23:59, or 24:00 as an end)"),
        ("Sat 02:00-02:00", "starts and ends at 02:00"),
        ("Sat 02:00-05:00 Europe/Viena", "unknown time zone 'Europe/Viena'"),
        ("Sat 02:00-05:00 ../../etc/passwd", "unknown time zone"),
        ("Sat 02:00-05:00 UTC extra", "expected DAYS HH:MM-HH:MM [ZONE]"),
        ("Mon-Mon 01:00-02:00", "names a single day; write Mon"),
        ("Sat,,Sun 01:00-02:00", "empty entry in the day list"),
    ],
)
def test_errors_say_what_is_wrong_with_an_example(spec: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_window(spec)
    message = str(info.value)
    assert problem in message
    assert repr(spec) in message
    assert "example: 'Sat 02:00-05:00 Europe/Vienna'" in message


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError):
        MaintenanceWindow(frozenset(), 0, 60)
    with pytest.raises(ValueError):
        MaintenanceWindow(frozenset({7}), 0, 60)
    with pytest.raises(ValueError):
        MaintenanceWindow(frozenset({1}), 60, 60)


def test_naive_datetimes_are_refused() -> None:
    w = parse_window("daily 03:00-04:00 UTC")
    with pytest.raises(ValueError, match="timezone-aware"):
        w.contains(datetime(2025, 1, 1, 3, 30))
    with pytest.raises(ValueError, match="timezone-aware"):
        WindowSet(["daily 03:00-04:00 UTC"]).is_open(datetime(2025, 1, 1))


# --- membership, midnight, zones ---------------------------------------------


def test_boundaries_start_inclusive_end_exclusive() -> None:
    w = parse_window("Sat 02:00-05:00 UTC")  # 2025-01-04 is a Saturday
    assert not w.contains(at(UTC, 2025, 1, 4, 1, 59, 59))
    assert w.contains(at(UTC, 2025, 1, 4, 2, 0))
    assert w.contains(at(UTC, 2025, 1, 4, 4, 59, 59))
    assert not w.contains(at(UTC, 2025, 1, 4, 5, 0))
    assert not w.contains(at(UTC, 2025, 1, 5, 3, 0))  # Sunday
    assert w.current_end(at(UTC, 2025, 1, 4, 3, 0)) == at(UTC, 2025, 1, 4, 5, 0)
    assert w.current_end(at(UTC, 2025, 1, 4, 6, 0)) is None


def test_window_across_midnight_starts_on_the_named_day() -> None:
    w = parse_window("Fri 23:00-02:00 UTC")  # 2025-01-03 is a Friday
    assert not w.contains(at(UTC, 2025, 1, 2, 23, 30))  # Thursday night
    assert not w.contains(at(UTC, 2025, 1, 3, 1, 0))  # Friday early morning belongs to Thursday
    assert w.contains(at(UTC, 2025, 1, 3, 23, 0))
    assert w.contains(at(UTC, 2025, 1, 4, 1, 59))  # Saturday morning
    assert not w.contains(at(UTC, 2025, 1, 4, 2, 0))
    assert not w.contains(at(UTC, 2025, 1, 4, 23, 30))  # Saturday night
    assert w.current_end(at(UTC, 2025, 1, 3, 23, 30)) == at(UTC, 2025, 1, 4, 2, 0)
    assert w.next_start(at(UTC, 2025, 1, 4, 0, 30)) == at(UTC, 2025, 1, 10, 23, 0)


def test_whole_day_and_midnight_end() -> None:
    whole = parse_window("Sat 00:00-24:00 UTC")
    assert whole.contains(at(UTC, 2025, 1, 4, 0, 0))
    assert whole.contains(at(UTC, 2025, 1, 4, 23, 59, 59))
    assert not whole.contains(at(UTC, 2025, 1, 5, 0, 0))
    late = parse_window("Sat 22:00-00:00 UTC")
    assert late.current_end(at(UTC, 2025, 1, 4, 23, 0)) == at(UTC, 2025, 1, 5, 0, 0)


def test_wrapping_day_range() -> None:
    w = parse_window("Fri-Mon 01:00-03:00 UTC")
    monday = date(2025, 1, 6)
    hits = {
        (monday + timedelta(days=i)).strftime("%a")
        for i in range(7)
        if w.contains(datetime.combine(monday + timedelta(days=i), datetime.min.time(), UTC) + timedelta(hours=2))
    }
    assert hits == {"Fri", "Sat", "Sun", "Mon"}


def test_zone_is_honoured_whatever_the_argument_zone() -> None:
    w = parse_window("Sat 02:00-05:00 Europe/Vienna")
    # Winter: Vienna is UTC+1, so the window is 01:00-04:00 UTC.
    assert not w.contains(at(UTC, 2025, 1, 4, 0, 59))
    assert w.contains(at(UTC, 2025, 1, 4, 1, 0))
    assert w.contains(at(NEW_YORK, 2025, 1, 3, 22, 30))  # 04:30 in Vienna
    # Summer: UTC+2, the window is 00:00-03:00 UTC.
    assert w.contains(at(UTC, 2025, 7, 5, 0, 0))
    assert not w.contains(at(UTC, 2025, 7, 5, 3, 0))
    start = w.next_start(at(NEW_YORK, 2025, 1, 1, 12, 0))
    assert start.tzinfo is NEW_YORK  # results carry the argument's zone
    assert start == at(VIENNA, 2025, 1, 4, 2, 0)


def test_local_zone_comes_from_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    w = parse_window("Sat 02:00-05:00")
    monkeypatch.setenv("TZ", "Europe/Vienna")
    assert local_zone() == VIENNA
    assert w.contains(at(UTC, 2025, 1, 4, 1, 30))
    monkeypatch.setenv("TZ", "America/New_York")
    assert not w.contains(at(UTC, 2025, 1, 4, 1, 30))
    assert w.contains(at(UTC, 2025, 1, 4, 7, 30))


# --- DST ----------------------------------------------------------------------


def test_spring_forward_window_inside_the_gap_is_empty_that_day() -> None:
    # 2025-03-30 Europe/Vienna: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    w = parse_window("Sun 02:00-03:00 Europe/Vienna")
    start, end = w.occurrence(date(2025, 3, 30))
    assert start == end == at(UTC, 2025, 3, 30, 1, 0)
    for minute in range(-60, 120, 5):
        assert not w.contains(at(UTC, 2025, 3, 30, 1, 0) + timedelta(minutes=minute))
    # The skipped occurrence is not offered as the next start; the week after is.
    assert w.next_start(at(VIENNA, 2025, 3, 29, 12, 0)) == at(VIENNA, 2025, 4, 6, 2, 0)
    assert w.next_start(at(VIENNA, 2025, 3, 23, 12, 0)) == at(VIENNA, 2025, 4, 6, 2, 0)
    assert w.contains(at(VIENNA, 2025, 3, 23, 2, 30))  # the Sunday before is normal


def test_spring_forward_boundary_in_the_gap_moves_to_the_jump() -> None:
    w = parse_window("Sun 02:30-04:00 Europe/Vienna")
    assert w.occurrence(date(2025, 3, 30)) == (at(UTC, 2025, 3, 30, 1, 0), at(UTC, 2025, 3, 30, 2, 0))
    assert w.contains(at(VIENNA, 2025, 3, 30, 3, 0))
    assert w.next_start(at(VIENNA, 2025, 3, 30, 0, 0)) == at(VIENNA, 2025, 3, 30, 3, 0)
    crossing = parse_window("Sat 23:00-02:30 Europe/Vienna")
    assert crossing.current_end(at(VIENNA, 2025, 3, 29, 23, 30)) == at(UTC, 2025, 3, 30, 1, 0)
    ny = parse_window("Sun 01:30-02:30 America/New_York")  # 2025-03-09 02:00 EST -> 03:00 EDT
    assert ny.occurrence(date(2025, 3, 9)) == (at(UTC, 2025, 3, 9, 6, 30), at(UTC, 2025, 3, 9, 7, 0))


def test_half_hour_dst_shift() -> None:
    # 2025-10-05 Lord Howe Island: 02:00 (+10:30) jumps to 02:30 (+11:00), at 15:30 UTC the day before.
    assert parse_window("Sun 02:00-02:30 Australia/Lord_Howe").occurrence(date(2025, 10, 5)) == (
        at(UTC, 2025, 10, 4, 15, 30),
        at(UTC, 2025, 10, 4, 15, 30),
    )
    assert parse_window("Sun 02:10-03:00 Australia/Lord_Howe").occurrence(date(2025, 10, 5)) == (
        at(UTC, 2025, 10, 4, 15, 30),
        at(UTC, 2025, 10, 4, 16, 0),
    )


def test_fall_back_repeated_hour() -> None:
    # 2025-10-26 Europe/Vienna: 03:00 CEST falls back to 02:00 CET (01:00 UTC).
    w = parse_window("Sun 02:00-03:00 Europe/Vienna")
    assert w.occurrence(date(2025, 10, 26)) == (at(UTC, 2025, 10, 26, 0, 0), at(UTC, 2025, 10, 26, 2, 0))
    assert w.contains(at(UTC, 2025, 10, 26, 0, 30))  # 02:30 CEST
    assert w.contains(at(UTC, 2025, 10, 26, 1, 30))  # 02:30 CET
    assert not w.contains(at(UTC, 2025, 10, 26, 2, 0))
    # An end inside the repeated hour closes at its first occurrence.
    early = parse_window("Sun 01:00-02:30 Europe/Vienna")
    assert early.current_end(at(UTC, 2025, 10, 26, 0, 0)) == at(UTC, 2025, 10, 26, 0, 30)
    assert not early.contains(at(UTC, 2025, 10, 26, 1, 10))  # 02:10 CET, the second time round


# --- randomised cross-check against a wall-clock model (zones without DST) ------


def _wall_model(w: MaintenanceWindow, local: datetime) -> bool:
    minute, day = local.hour * 60 + local.minute, local.weekday()
    if not w.crosses_midnight:
        return day in w.days and w.start <= minute < w.end
    return (day in w.days and minute >= w.start) or ((day - 1) % 7 in w.days and minute < w.end)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/Sao_Paulo"])
def test_matches_wall_clock_model_without_dst(zone: str) -> None:
    rng = random.Random(zone)
    tz = ZoneInfo(zone)
    base = at(tz, 2025, 1, 6)  # a Monday; none of these zones has DST in 2025
    for _ in range(12):
        days = frozenset(rng.sample(range(7), rng.randint(1, 7)))
        start = rng.randrange(0, 96) * 15
        end = rng.choice([e for e in range(15, 1441, 15) if e % 1440 != start])
        w = MaintenanceWindow(days, start, end, zone)
        assert parse_window(str(w)) == w
        probe = base + timedelta(minutes=15 * rng.randrange(0, 672))
        expected_next = None
        for step in range(0, 8 * 96):
            t = base + timedelta(minutes=15 * step)
            inside = _wall_model(w, t)
            assert w.contains(t) == inside, (str(w), t)
            if expected_next is None and t > probe and inside and not _wall_model(w, t - timedelta(minutes=15)):
                expected_next = t
        if expected_next is not None and w.duration < timedelta(days=1):
            assert w.next_start(probe) == expected_next, (str(w), probe)


# --- WindowSet ------------------------------------------------------------------


def test_empty_set_is_always_open() -> None:
    ws = WindowSet([])
    now = at(UTC, 2025, 1, 1, 12)
    assert ws.always_open and ws.is_open(now)
    assert ws.next_open(now) == now
    assert ws.closes_at(now) is None
    assert ws.describe_next(now) == "no maintenance window: deploys may run any time"


def test_set_picks_the_earliest_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    ws = WindowSet(["Sat 02:00-05:00 UTC", "Wed 22:00-23:00 UTC"])
    now = at(UTC, 2025, 1, 1, 12)  # Wednesday noon
    assert not ws.is_open(now)
    assert ws.next_open(now) == at(UTC, 2025, 1, 1, 22)
    assert ws.closes_at(now) is None
    assert ws.describe_next(now) == "next window Wed 22:00 UTC"
    inside = at(UTC, 2025, 1, 1, 22, 30)
    assert ws.next_open(inside) == inside
    assert ws.closes_at(inside) == at(UTC, 2025, 1, 1, 23)
    assert ws.describe_next(inside) == "window open until Wed 23:00 UTC"


def test_back_to_back_windows_merge_in_closes_at() -> None:
    ws = WindowSet(["Mon-Fri 22:00-24:00 UTC", parse_window("Tue-Sat 00:00-02:00 UTC")])
    assert ws.closes_at(at(UTC, 2025, 1, 6, 22, 30)) == at(UTC, 2025, 1, 7, 2, 0)
    always = WindowSet(["daily 00:00-24:00 UTC"])
    assert always.closes_at(at(UTC, 2025, 1, 6, 22, 30)) is None
    assert always.describe_next(at(UTC, 2025, 1, 6, 22, 30)) == "window always open"


def test_describe_next_uses_the_zone_the_window_was_configured_in(monkeypatch: pytest.MonkeyPatch) -> None:
    ws = WindowSet(["Sat 02:00-05:00 Europe/Vienna"])
    now = at(UTC, 2025, 1, 1, 12)
    for tz in ("Europe/Vienna", "UTC", "America/New_York"):
        monkeypatch.setenv("TZ", tz)
        assert ws.describe_next(now) == "next window Sat 02:00 Europe/Vienna"
    local = WindowSet(["Sat 02:00-05:00"])  # no zone: the local zone, not named
    assert local.describe_next(now) == "next window Sat 02:00"
    assert local.describe_next(at(UTC, 2025, 1, 4, 7, 30)) == "window open until Sat 05:00"


def test_describe_next_shows_the_date_when_more_than_a_week_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Vienna")
    ws = WindowSet(["Sun 02:00-03:00 Europe/Vienna"])  # skipped on 2025-03-30 (DST)
    assert ws.describe_next(at(VIENNA, 2025, 3, 29, 12)) == "next window Sun 2025-04-06 02:00 Europe/Vienna"


def test_invalid_spec_in_a_set_raises() -> None:
    with pytest.raises(ValueError, match="unknown day 'Sta'"):
        WindowSet(["Sat 02:00-05:00", "Sta 02:00-05:00"])
    assert str(WindowSet(["sat 02:00-05:00 utc"])) == "Sat 02:00-05:00 UTC"
