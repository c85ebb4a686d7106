"""Pure presentation logic of the fleet grid: glyphs, ages, sorting, filtering, row layout.

No Textual here (only ``rich.cells`` for cell widths), so everything that decides what a
row *says* is unit-tested without an app. :class:`nfu_tui.ui.widgets.host_grid.HostGrid`
turns the ``(text, style)`` runs produced here into styled strips.

Legend (also shown by the help screen). Every state carries a glyph, so the grid reads
the same in 16-colour and ``NO_COLOR`` terminals:

====  =========  ===========================================
 ✓    ok         current / passed (green)
 ↑    outdated   behind remote, needs action (yellow)
 ✗    error      failure (red)
 ⟳    working    an operation is running (blue)
 ?    unknown    no signal yet (grey)
 ⇡    pending    Lock only: current, and an update PR is waiting
====  =========  ===========================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from rich.cells import cell_len, set_cell_size

from nfu_tui.domain.timeparse import parse_time
from nfu_tui.models import COMPARTMENTS, CompartmentState, Host

STATE_GLYPHS: dict[CompartmentState, str] = {
    CompartmentState.OK: "✓",
    CompartmentState.OUTDATED: "↑",
    CompartmentState.ERROR: "✗",
    CompartmentState.WORKING: "⟳",
    CompartmentState.UNKNOWN: "?",
    CompartmentState.UNREACHABLE: "⊘",
}
PENDING_GLYPH = "⇡"
COMPARTMENT_TITLES: dict[str, str] = {
    "agent": "Agent",
    "git": "Git",
    "lock": "Lock",
    "system": "System",
    "tests": "Tests",
}
LEGEND: tuple[tuple[str, str, str], ...] = (
    ("✓", "ok", "current / passed"),
    ("↑", "outdated", "behind remote, needs action"),
    ("✗", "error", "failure"),
    ("⟳", "working", "an operation is running"),
    ("?", "unknown", "no signal yet"),
    ("⊘", "unreachable", "Agent, SSH backend: the host did not answer (the reason is in its detail)"),
    (PENDING_GLYPH, "pending", "Lock current, an update PR is waiting (pulses)"),
    ("●", "online", "agent connected"),
    ("○", "offline", "agent disconnected (with last seen)"),
    ("◌", "unknown", "not known now: the fleet state is lost (with when it was last seen live)"),
    ("◆", "selected", "part of the next deploy"),
    ("HOLD", "held", "skipped by every deploy and by automation"),
    ("canary", "canary", "deployed first, checked before the rest"),
    ("p1", "priority", "lower deploys earlier"),
    ("no-auto", "excluded", "excluded from automatic updates"),
)

Run = tuple[str, str]
"""A piece of row text and the name of its style (see ``HostGrid.COMPONENT_CLASSES``)."""


# --- time ---------------------------------------------------------------------


def ago(then: datetime | None, now: datetime) -> str:
    """A short age: ``now``, ``42s``, ``5m``, ``3h``, ``2d``, ``7w``; ``?`` when unknown."""
    if then is None:
        return "?"
    seconds = (now - then).total_seconds()
    if seconds < 5:
        return "now"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit == "w" else 1):
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


# --- per-host facts the grid shows besides the Host itself ----------------------


@dataclass(frozen=True, slots=True)
class HostMeta:
    """What the app knows about a host beyond the dashboard's view."""

    held: bool = False
    selected: bool = False
    canary: bool = False
    priority: int | None = None
    auto_update: bool = True


@dataclass(frozen=True, slots=True)
class Progress:
    phase: str
    current: int
    total: int


def worst_state(host: Host) -> CompartmentState:
    """The most alarming compartment state of a host."""
    states = {host.compartment(name).state for name in COMPARTMENTS}
    for state in (
        CompartmentState.ERROR,
        CompartmentState.WORKING,
        CompartmentState.UNREACHABLE,
        CompartmentState.OUTDATED,
        CompartmentState.UNKNOWN,
    ):
        if state in states:
            return state
    return CompartmentState.OK


# --- sorting ------------------------------------------------------------------


class SortMode(str, enum.Enum):
    NAME = "name"
    STATUS = "status"
    PRIORITY = "priority"

    def next(self) -> "SortMode":
        modes = list(SortMode)
        return modes[(modes.index(self) + 1) % len(modes)]


_SEVERITY = {
    CompartmentState.ERROR: 0,
    CompartmentState.WORKING: 1,
    CompartmentState.UNREACHABLE: 2,
    CompartmentState.OUTDATED: 3,
    CompartmentState.UNKNOWN: 4,
    CompartmentState.OK: 5,
}


def sort_key(mode: SortMode, host: Host, meta: HostMeta) -> tuple:
    """Key for ordering rows: by name; by status (worst first, offline after busy); by deploy priority."""
    name = host.name.lower()
    if mode is SortMode.STATUS:
        rank = _SEVERITY[worst_state(host)]
        if host.busy:
            rank = min(rank, 1)
        if not host.online:
            rank = 2
        return (rank, name)
    if mode is SortMode.PRIORITY:
        return (not meta.canary, meta.priority if meta.priority is not None else 1 << 30, name)
    return (name,)


# --- filtering ----------------------------------------------------------------

_STATE_WORDS = {s.value for s in CompartmentState}
KEYWORDS = frozenset(
    {"online", "offline", "held", "canary", "selected", "busy", "no-auto", "macos", "nixos"} | _STATE_WORDS
)


def _keyword_matches(word: str, host: Host, meta: HostMeta) -> bool:
    if word == "online":
        return host.online
    if word == "offline":
        return not host.online
    if word == "held":
        return meta.held
    if word == "canary":
        return meta.canary
    if word == "selected":
        return meta.selected
    if word == "busy":
        return host.busy
    if word == "no-auto":
        return not meta.auto_update
    if word in ("macos", "nixos"):
        return host.host_type == word
    if word == CompartmentState.OK.value:
        return worst_state(host) is CompartmentState.OK
    return any(host.compartment(c).state.value == word for c in COMPARTMENTS)


@dataclass(frozen=True, slots=True)
class HostFilter:
    """``/`` filter: every whitespace-separated term must match (AND); ``!term`` negates.

    A term matches the name, location, device or host type as a substring, or a state
    keyword (``online offline held canary selected busy no-auto ok outdated error
    working unknown``), or ``compartment:state`` such as ``lock:outdated``.
    """

    terms: tuple[tuple[bool, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "HostFilter":
        terms = []
        for raw in text.lower().split():
            negate = raw.startswith(("!", "-")) and len(raw) > 1
            terms.append((negate, raw[1:] if negate else raw))
        return cls(tuple(terms))

    @property
    def active(self) -> bool:
        return bool(self.terms)

    def matches(self, host: Host, meta: HostMeta) -> bool:
        return all(self._term(term, host, meta) != negate for negate, term in self.terms)

    @staticmethod
    def _term(term: str, host: Host, meta: HostMeta) -> bool:
        comp, sep, state = term.partition(":")
        if sep and comp in COMPARTMENTS:
            return host.compartment(comp).state.value.startswith(state)
        if term in KEYWORDS and _keyword_matches(term, host, meta):
            return True
        return any(
            term in field.lower() for field in (host.name, host.location, host.device_type, host.host_type)
        )


# --- row layout ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    width: int


CELL_WIDTH = 3
CELLS_WIDTH = CELL_WIDTH * len(COMPARTMENTS)


def layout(width: int) -> tuple[Column, ...]:
    """Columns for a grid ``width`` cells wide: compact at 80, more columns when wider."""
    wide = width >= 120
    cols: list[tuple[str, str, int]] = [("mark", "", 2), ("name", "Host", 0), ("cells", "", CELLS_WIDTH)]
    cols.append(("conn", "Conn", 9))
    if width >= 90:
        cols.append(("kind", "Type", 17))
    if width >= 110:
        cols.append(("gen", "Gen", 7))
    if width >= 130:
        cols.append(("agent", "Agent", 7))
    cols.append(("cmd", "Command", 0))
    cols.append(("badges", "Badges", 22 if wide else 15))
    fixed = sum(w for _, _, w in cols) + (len(cols) - 1)
    free = max(0, width - fixed)
    name_w = max(8, min(24 if wide else 14, free // 2))
    cmd_w = max(6, free - name_w)
    return tuple(
        Column(key, title, name_w if key == "name" else cmd_w if key == "cmd" else w) for key, title, w in cols
    )


def fit(text: str, width: int) -> str:
    """Pad or crop ``text`` to exactly ``width`` cells, with ``…`` when cropped."""
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    return set_cell_size(text, width - 1) + "…"


def progress_text(progress: Progress | None, command: str, width: int) -> str:
    """``switch 3/4 ▰▰▰▱`` (bar dropped when narrow), the bare op name, or empty when idle."""
    if progress is None or progress.total <= 0:
        return command
    label = f"{progress.phase or command} {progress.current}/{progress.total}"
    room = width - cell_len(label) - 1
    if room >= 4:
        bar_w = min(room, 10)
        done = round(bar_w * min(progress.current, progress.total) / progress.total)
        label += " " + "▰" * done + "▱" * (bar_w - done)
    return label


def badges(meta: HostMeta, host: Host | None = None) -> list[Run]:
    runs: list[Run] = []
    if host is not None and host.reboot_needed:  # the SSH backend's booted vs current kernel; None = unknown
        runs.append(("reboot", "outdated"))
    if meta.held:
        runs.append(("HOLD", "held"))
    if meta.canary:
        runs.append(("canary", "canary"))
    if meta.priority is not None:
        runs.append((f"p{meta.priority}", "badge"))
    if not meta.auto_update:
        runs.append(("no-auto", "badge"))
    out: list[Run] = []
    for i, run in enumerate(runs):
        if i:
            out.append((" ", "base"))
        out.append(run)
    return out


def _crop_runs(runs: list[Run], width: int) -> list[Run]:
    out: list[Run] = []
    used = 0
    for text, style in runs:
        w = cell_len(text)
        if used + w > width:
            out.append((fit(text, width - used), style))
            return out
        out.append((text, style))
        used += w
    if used < width:
        out.append((" " * (width - used), "base"))
    return out


def cell_runs(host: Host, pending_lock: bool) -> list[Run]:
    """The five compartment cells ``Agent Git Lock System Tests``, 3 cells each.

    A pending update PR shows in a Lock that is otherwise ok; a Lock with a problem of its
    own (outdated, error, working) keeps showing that.
    """
    runs: list[Run] = []
    for name in COMPARTMENTS:
        state = host.compartment(name).state
        if name == "lock" and pending_lock and state is CompartmentState.OK:
            runs.append((f" {PENDING_GLYPH} ", "pending"))
        else:
            runs.append((f" {STATE_GLYPHS[state]} ", state.value))
    return runs


def last_seen_live(host: Host, unreachable_since: datetime) -> str:
    """``last seen live 12:03``: the host's last report, or when the dashboard became unreachable."""
    seen = parse_time(host.last_seen) or unreachable_since
    return f"last seen live {min(seen, unreachable_since).astimezone().strftime('%H:%M')}"


def conn_text(host: Host, now: datetime, unreachable_since: datetime | None = None) -> tuple[str, str]:
    """The Conn column; every host is ``◌ unknown`` while the dashboard is unreachable (``unreachable_since``)."""
    if unreachable_since is not None:
        return "◌ unknown", "offline"
    if host.online:
        return "● online", "online"
    if host.status == "unknown":
        return "◌ unknown", "offline"
    age = ago(parse_time(host.last_seen), now)
    return ("○ offline" if age == "?" else f"○ {age} ago"), "offline"


def row_runs(
    host: Host,
    meta: HostMeta,
    cols: tuple[Column, ...],
    *,
    now: datetime,
    progress: Progress | None = None,
    pending_lock: bool = False,
    cursor: bool = False,
    unreachable_since: datetime | None = None,
) -> list[Run]:
    """One grid row as styled runs, exactly ``sum(widths) + gaps`` cells wide.

    ``unreachable_since``: the dashboard is unreachable since then, so nothing about the
    host is known now (its connection shows as unknown, its name dimmed)."""
    live = unreachable_since is None
    runs: list[Run] = []
    for i, col in enumerate(cols):
        if i:
            runs.append((" ", "base"))
        key, w = col.key, col.width
        if key == "mark":
            runs.append(("▶" if cursor else " ", "cursor-mark"))
            runs.append(("◆" if meta.selected else " ", "selected"))
        elif key == "name":
            runs.append((fit(host.name, w), "name" if host.online and live else "dim"))
        elif key == "cells":
            runs.extend(cell_runs(host, pending_lock))
        elif key == "conn":
            text, style = conn_text(host, now, unreachable_since)
            runs.append((fit(text, w), style))
        elif key == "kind":
            kind = "/".join(p for p in (host.device_type, host.location) if p)
            if host.host_type == "macos":
                kind += " mac"
            runs.append((fit(kind, w), "dim"))
        elif key == "gen":
            runs.append((fit(host.generation[:7], w), "dim"))
        elif key == "agent":
            runs.append((fit(host.agent_version, w), "error" if host.agent_outdated else "dim"))
        elif key == "cmd":
            runs.append((fit(progress_text(progress, host.pending_command, w), w), "progress"))
        elif key == "badges":
            runs.extend(_crop_runs(badges(meta, host), w))
    return runs


def header_runs(cols: tuple[Column, ...]) -> list[Run]:
    runs: list[Run] = []
    for i, col in enumerate(cols):
        if i:
            runs.append((" ", "header"))
        if col.key == "cells":
            runs.append(("".join(f" {COMPARTMENT_TITLES[c][0]} " for c in COMPARTMENTS), "header"))
        else:
            runs.append((fit(col.title, col.width), "header"))
    return runs


def cell_x(cols: tuple[Column, ...], compartment: str) -> int:
    """Column where ``compartment``'s 3-cell glyph box starts in a row."""
    offset = 0
    for col in cols:
        if col.key == "cells":
            return offset + COMPARTMENTS.index(compartment) * CELL_WIDTH
        offset += col.width + 1
    raise ValueError("the layout has no compartment cells")


def compartment_at(cols: tuple[Column, ...], x: int) -> str | None:
    """Which compartment's cell is at column ``x`` of a row (for tooltips and clicks)."""
    offset = 0
    for col in cols:
        if col.key == "cells" and offset <= x < offset + col.width:
            return COMPARTMENTS[(x - offset) // CELL_WIDTH]
        offset += col.width + 1
    return None
