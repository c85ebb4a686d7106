"""The dashboard's time formats (contract nixfleet-dashboard-api.md §1.3) as aware UTC datetimes.

Pure: the dashboard protocol, the SSH backend and the deploy engine all read times through here.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any


_ZERO_TIME_PREFIX = "0001-01-01"
_FRACTION = re.compile(r"(\.\d{6})\d+")
_CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
# Go's time.Time.String(): "2025-12-28 15:30:05.123456789 +0100 CET m=+0.5" (a DB column may hold it)
_GO_STRING_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d(?:\.\d+)?) ([+-]\d\d)(\d\d)(?: [A-Za-z][\w+-]*)?(?: m=[+-][\d.]+)?"
)


def parse_time(value: Any) -> datetime | None:
    """Parse any of the dashboard's time formats (§1.3) to an aware UTC datetime.

    RFC 3339 with or without fraction (nanoseconds are cut to microseconds), any
    offset, ``Z``, a space instead of ``T``, Go's ``time.Time.String()`` form; naive
    values are taken as UTC. ``""``, ``null``, Go's zero time and garbage give ``None``.
    """
    if not isinstance(value, str) or not value or value.startswith(_ZERO_TIME_PREFIX):
        return None
    text = value.strip()
    go = _GO_STRING_TIME.fullmatch(text)
    if go is not None:
        text = f"{go[1]}T{go[2]}{go[3]}:{go[4]}"
    text = _FRACTION.sub(r"\1", text)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def normalize_time(value: Any) -> str:
    """A dashboard time as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, seconds) or ``""`` when unset.

    Unparseable non-empty strings are kept verbatim rather than lost.
    """
    if _CANONICAL_TIME.fullmatch(value if isinstance(value, str) else "") and not value.startswith(_ZERO_TIME_PREFIX):
        return value  # fast path: the heartbeat format is already canonical
    parsed = parse_time(value)
    if parsed is not None:
        return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and value and not value.startswith(_ZERO_TIME_PREFIX):
        return value
    return ""
