"""Maintenance windows: when automatic deploys may run. Pure, no I/O.

Syntax (case-insensitive, one window per string)::

    DAYS HH:MM-HH:MM [ZONE]

    Sat 02:00-05:00 Europe/Vienna     one day, IANA zone
    Mon-Fri 22:00-23:30               range, local zone
    Sun,Wed 01:00-03:00 UTC           list
    Fri-Mon 01:00-03:00               range wrapping over the week end
    daily 03:00-04:00                 also: weekdays (Mon-Fri), weekends (Sat,Sun)
    Fri 23:00-02:00                   crosses midnight: starts Friday, ends Saturday
    Sat 00:00-24:00                   the whole Saturday

DAYS name the days a window *starts* on. An end at or before the start means the
next day; ``24:00`` (or ``00:00``) as end means midnight at the end of the day.
Without ZONE the local zone (``TZ``, else ``/etc/localtime``) is used at the time
the window is evaluated.

DST rule: each boundary is the *first instant at which the zone's wall clock reads
that time or later* on that day. Consequences:

* spring forward (Europe/Vienna, last Sunday of March, 02:00 → 03:00): a boundary
  in the skipped hour moves to the moment the clocks jump, so ``02:30-04:00`` runs
  03:00–04:00 CEST and ``02:00-03:00`` is empty that day (skipped, never opened);
* fall back (last Sunday of October, 03:00 → 02:00): a boundary in the repeated
  hour is taken at its first occurrence, so ``02:00-03:00`` lasts two real hours
  and ``01:00-02:30`` closes at the first 02:30 (CEST).

Every occurrence is therefore one contiguous interval ``[start, end)`` that never
extends beyond the wall-clock times written. All methods take and return
timezone-aware datetimes; results carry the tzinfo of the argument.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
EXAMPLE = "'Sat 02:00-05:00 Europe/Vienna'"
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX: dict[str, int] = {
    **{abbr.lower(): i for i, abbr in enumerate(WEEKDAYS)},
    **{name: i for i, name in enumerate(_FULL_NAMES)},
}
_DAY_SETS: dict[str, frozenset[int]] = {
    "daily": frozenset(range(7)),
    "weekdays": frozenset(range(5)),
    "weekends": frozenset({5, 6}),
}
_UTC_ALIASES = {"utc", "z", "gmt", "etc/utc"}
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")
_DAY_MINUTES = 24 * 60
# Occurrences to scan before giving up; no zone skips a window's hours two weeks running.
_SCAN_DAYS = 22


@functools.lru_cache(maxsize=8)
def _zone_for_tz_env(tz_env: str) -> tzinfo:
    key = tz_env.lstrip(":")
    if key:
        try:
            return ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass  # a POSIX rule string such as "CET-1CEST": let the C library handle it below
    else:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            try:
                return ZoneInfo(target.split("zoneinfo/", 1)[1])
            except (ZoneInfoNotFoundError, ValueError, OSError):
                pass
        try:
            with open("/etc/localtime", "rb") as fh:
                return ZoneInfo.from_file(fh, key="localtime")
        except (OSError, ValueError):
            pass
    return datetime.now().astimezone().tzinfo or timezone.utc  # fixed offset: last resort


def local_zone() -> tzinfo:
    """The local time zone with its DST rules (``TZ`` first, then ``/etc/localtime``)."""
    return _zone_for_tz_env(os.environ.get("TZ", ""))


def _require_aware(dt: datetime) -> None:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"maintenance windows need a timezone-aware datetime, got naive {dt.isoformat()}")


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _resolve(naive: datetime, tz: tzinfo) -> datetime:
    """First instant (UTC) at which the wall clock of ``tz`` reads ``naive`` or later."""
    first = naive.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
    if _wall(first, tz) == naive:
        return first  # exists (for a repeated time: its first occurrence)
    # ``naive`` lies in a gap. PEP 495: fold=0 maps it past the jump, fold=1 before
    # it; bisect for the jump itself, to the second.
    lo = int(naive.replace(tzinfo=tz, fold=1).timestamp())
    hi = int(first.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(datetime.fromtimestamp(mid, timezone.utc), tz) >= naive:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, timezone.utc)


def _format_minutes(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _format_days(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "daily"
    parts: list[str] = []
    for first in sorted(days):
        if (first - 1) % 7 in days:
            continue  # not the start of a run
        length = 1
        while (first + length) % 7 in days:
            length += 1
        if length >= 3:
            parts.append(f"{WEEKDAYS[first]}-{WEEKDAYS[(first + length - 1) % 7]}")
        else:
            parts.extend(WEEKDAYS[(first + i) % 7] for i in range(length))
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A weekly recurring window; build it with :func:`parse_window`."""

    days: frozenset[int]  # weekdays the window starts on, 0 = Monday
    start: int  # minutes after midnight, 0..1439
    end: int  # minutes after midnight, 1..1440; <= start means the next day
    zone: str | None = None  # IANA key; None = local zone at evaluation time

    def __post_init__(self) -> None:
        if not self.days or not self.days <= frozenset(range(7)):
            raise ValueError(f"days must be a non-empty set of weekdays 0..6, got {sorted(self.days)}")
        if not 0 <= self.start < _DAY_MINUTES or not 0 < self.end <= _DAY_MINUTES or self.start == self.end:
            raise ValueError(f"invalid window times {self.start}..{self.end} (minutes after midnight)")
        if self.zone is not None:
            ZoneInfo(self.zone)

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    @property
    def duration(self) -> timedelta:
        """Nominal length (wall clock); DST days may differ, see the module docs."""
        return timedelta(minutes=(self.end - self.start) % _DAY_MINUTES or _DAY_MINUTES)

    def tz(self) -> tzinfo:
        return ZoneInfo(self.zone) if self.zone else local_zone()

    def occurrence(self, day: date) -> tuple[datetime, datetime]:
        """``[start, end)`` in UTC of the occurrence starting on ``day`` (the window's zone).

        Both may be equal on a DST day (empty occurrence). ``day``'s weekday is not checked.
        """
        tz = self.tz()
        midnight = datetime.combine(day, time())
        end = self.end + (_DAY_MINUTES if self.crosses_midnight else 0)
        return (
            _resolve(midnight + timedelta(minutes=self.start), tz),
            _resolve(midnight + timedelta(minutes=end), tz),
        )

    def _occurrence_at(self, dt: datetime) -> tuple[datetime, datetime] | None:
        _require_aware(dt)
        today = dt.astimezone(self.tz()).date()
        # Windows last at most a day (25 h across DST), so one starting yesterday or today.
        for day in (today - timedelta(days=1), today):
            if day.weekday() in self.days:
                start, end = self.occurrence(day)
                if start <= dt < end:
                    return start, end
        return None

    def contains(self, dt: datetime) -> bool:
        """Whether ``dt`` lies inside an occurrence (start inclusive, end exclusive)."""
        return self._occurrence_at(dt) is not None

    def current_end(self, dt: datetime) -> datetime | None:
        """End of the occurrence containing ``dt``, or None when ``dt`` is outside."""
        found = self._occurrence_at(dt)
        return found[1].astimezone(dt.tzinfo) if found else None

    def next_start(self, after: datetime) -> datetime:
        """Start of the first non-empty occurrence strictly after ``after``."""
        _require_aware(after)
        today = after.astimezone(self.tz()).date()
        for offset in range(_SCAN_DAYS):
            day = today + timedelta(days=offset)
            if day.weekday() in self.days:
                start, end = self.occurrence(day)
                if start < end and start > after:
                    return start.astimezone(after.tzinfo)
        raise RuntimeError(f"window {self} has no occurrence within {_SCAN_DAYS} days of {after.isoformat()}")

    def __str__(self) -> str:
        text = f"{_format_days(self.days)} {_format_minutes(self.start)}-{_format_minutes(self.end)}"
        return f"{text} {self.zone}" if self.zone else text


# --- parsing ----------------------------------------------------------------


class _SpecError(ValueError):
    pass


def _parse_day(name: str) -> int:
    try:
        return _DAY_INDEX[name.lower()]
    except KeyError:
        raise _SpecError(
            f"unknown day {name!r} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, a range like Mon-Fri, "
            "a list like Sun,Wed, or daily/weekdays/weekends)"
        ) from None


def _parse_days(token: str) -> frozenset[int]:
    if token.lower() in _DAY_SETS:
        return _DAY_SETS[token.lower()]
    if _TIME_RE.match(token):
        raise _SpecError("the days come first (write 'daily' for every day)")
    days: set[int] = set()
    for item in token.split(","):
        if not item:
            raise _SpecError(f"empty entry in the day list {token!r}")
        first, dash, last = item.partition("-")
        if not dash:
            days.add(_parse_day(item))
            continue
        a, b = _parse_day(first), _parse_day(last)
        if a == b:
            raise _SpecError(f"day range {item!r} names a single day; write {WEEKDAYS[a]}")
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _parse_time(text: str, *, is_end: bool) -> int:
    m = _TIME_RE.fullmatch(text)
    if not m:
        raise _SpecError(f"{text!r} is not a time; use 24-hour HH:MM")
    hours, minutes = int(m[1]), int(m[2])
    if is_end and (hours, minutes) == (24, 0):
        return _DAY_MINUTES
    if hours > 23 or minutes > 59:
        limit = "00:00-23:59, or 24:00 as an end" if is_end else "00:00-23:59"
        raise _SpecError(f"time {text!r} is out of range ({limit})")
    return hours * 60 + minutes


def _parse_times(token: str) -> tuple[int, int]:
    first, dash, last = token.partition("-")
    if not dash:
        raise _SpecError(f"{token!r} is not a time range; write START-END like 02:00-05:00")
    start, end = _parse_time(first, is_end=False), _parse_time(last, is_end=True)
    if start == end:
        raise _SpecError(f"the window starts and ends at {first}; for a whole day write 00:00-24:00")
    return start, end or _DAY_MINUTES  # "22:00-00:00" ends at midnight: 24:00


def _parse_zone(token: str) -> str:
    if token.lower() in _UTC_ALIASES:
        return "UTC"
    try:
        return ZoneInfo(token).key
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _SpecError(f"unknown time zone {token!r}; use an IANA name like Europe/Vienna, or UTC") from None


def parse_window(spec: str) -> MaintenanceWindow:
    """Parse ``"DAYS HH:MM-HH:MM [ZONE]"``; ValueError says what is wrong, with an example."""
    # Accept typographic dashes and spaces around "-" and ",": "Mon - Fri 22:00 – 23:30".
    text = re.sub(r"\s*([-,])\s*", r"\1", spec.strip().replace("\u2013", "-").replace("\u2014", "-"))
    try:
        parts = text.split()
        if not parts:
            raise _SpecError("it is empty")
        if len(parts) == 1 and _TIME_RE.match(parts[0]):
            raise _SpecError("the days are missing (write 'daily' for every day)")
        if len(parts) not in (2, 3):
            raise _SpecError("expected DAYS HH:MM-HH:MM [ZONE]")
        days = _parse_days(parts[0])
        start, end = _parse_times(parts[1])
        zone = _parse_zone(parts[2]) if len(parts) == 3 else None
    except _SpecError as exc:
        raise ValueError(f"invalid maintenance window {spec!r}: {exc}; example: {EXAMPLE}") from None
    return MaintenanceWindow(days, start, end, zone)


# --- sets of windows --------------------------------------------------------


class WindowSet:
    """The configured windows; no windows at all means deploys may run any time."""

    # closes_at follows back-to-back windows this far before calling them endless.
    _CHAIN_HORIZON = timedelta(days=8)

    def __init__(self, specs: Iterable[str | MaintenanceWindow] = ()) -> None:
        self.windows: tuple[MaintenanceWindow, ...] = tuple(
            parse_window(s) if isinstance(s, str) else s for s in specs
        )

    @property
    def always_open(self) -> bool:
        return not self.windows

    def is_open(self, now: datetime) -> bool:
        _require_aware(now)
        return self.always_open or any(w.contains(now) for w in self.windows)

    def next_open(self, now: datetime) -> datetime:
        """``now`` when open, else the start of the next window."""
        if self.is_open(now):
            return now
        return min(w.next_start(now) for w in self.windows)

    def closes_at(self, now: datetime) -> datetime | None:
        """When the open period containing ``now`` ends (back-to-back windows merge).

        None when closed now, and when it never closes (no windows, or windows that
        cover every moment).
        """
        if self.always_open or not self.is_open(now):
            return None
        end = now
        horizon = now + self._CHAIN_HORIZON
        while end < horizon:
            ends = [e for w in self.windows if (e := w.current_end(end)) is not None]
            if not ends:
                return end
            end = max(ends)
        return None

    def describe_next(self, now: datetime) -> str:
        """One line for the UI, in the zone the window was configured in: ``"next window Sat 02:00
        Europe/Vienna"`` (no zone name for windows in the local zone)."""
        if self.always_open:
            return "no maintenance window: deploys may run any time"
        if self.is_open(now):
            closes = self.closes_at(now)
            return f"window open until {self.display(closes, now)}" if closes else "window always open"
        return f"next window {self.display(self.next_open(now), now)}"

    def display(self, dt: datetime, now: datetime) -> str:
        """``dt`` (a window boundary) as ``Sat 02:00 Europe/Vienna`` in the zone of the window it belongs to."""
        window = self._window_at(dt)
        tz = window.tz() if window is not None else local_zone()
        text = _display(dt, now, tz)
        return f"{text} {window.zone}" if window is not None and window.zone else text

    def _window_at(self, dt: datetime) -> MaintenanceWindow | None:
        """The window that starts, ends or is open at ``dt`` (the first configured one), if any."""
        for w in self.windows:
            if w.contains(dt) or w.current_end(dt - timedelta(seconds=1)) == dt:
                return w
        return None

    def __str__(self) -> str:
        return "; ".join(str(w) for w in self.windows) or "always open"

    def __repr__(self) -> str:
        return f"WindowSet({[str(w) for w in self.windows]!r})"


def _display(dt: datetime, now: datetime, tz: tzinfo | None = None) -> str:
    tz = tz or local_zone()
    local = dt.astimezone(tz)
    if (local.date() - now.astimezone(tz).date()).days >= 7:
        return f"{WEEKDAYS[local.weekday()]} {local:%Y-%m-%d %H:%M}"
    return f"{WEEKDAYS[local.weekday()]} {local:%H:%M}"
