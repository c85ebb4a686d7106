"""What a headless run is waiting for: ``nfu-tui deploy`` and ``nfu-tui auto`` say it.

:class:`RunWatch` folds the deploy engine's events and the fleet backend's connection into
two kinds of line: a line when that connection is lost and when it is back
(:meth:`RunWatch.connection`), and — when nothing was said for :data:`QUIET_SECONDS` —
what the run is waiting for (:meth:`RunWatch.waiting`): the backend, GitHub's merge
answer, a host's command, the canary check, the deploy gate, offline hosts. Pure: the
caller prints or logs the lines and keeps the time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from nfu_tui.backends.base import NIXFLEET, BackendInfo
from nfu_tui.core import engine as eng

QUIET_SECONDS = 30.0
"""A headless run says what it waits for at least this often."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _clock_time(at: datetime) -> str:
    return at.astimezone().strftime("%H:%M:%S")


def _elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class RunWatch:
    """See the module docstring. ``live``: whether the fleet backend's state is live now; ``info`` names the
    backend in the lines."""

    def __init__(self, *, live: bool = True, clock: Callable[[], datetime] = _now,
                 info: BackendInfo = NIXFLEET) -> None:
        self.live = live
        self.info = info
        self.lost_at: datetime | None = None
        self.clock = clock
        self.running: dict[str, tuple[str, datetime]] = {}  # host -> (phase, started)
        self.queued: set[str] = set()
        self.canary_until: datetime | None = None
        self.paused = ""
        self.merging = False
        self.cancelling = False

    # --- the fleet backend connection -------------------------------------------------

    def connection(self, live: bool, detail: str = "") -> str | None:
        """A line when the connection was lost or is back, else None (no change)."""
        if live == self.live:
            return None
        self.live = live
        now = self.clock()
        if not live:
            self.lost_at = now
            why = f" ({detail})" if detail else ""
            return (f"{self.info.label} connection lost{why}; retrying — hosts' states are unknown until it is back, "
                    "running commands go on on the hosts")
        since = f" after {_elapsed((now - self.lost_at).total_seconds())}" if self.lost_at else ""
        self.lost_at = None
        return f"{self.info.label} connection back{since}: fleet state resynced"

    # --- the engine ---------------------------------------------------------------------

    def engine(self, event: Any) -> None:
        """Fold one engine event."""
        if isinstance(event, eng.MergeRequested):
            self.merging = True
        elif isinstance(event, (eng.Merged, eng.MergeRefused)):
            self.merging = False
        elif isinstance(event, eng.HostStarted):
            self.running[event.host] = (event.phase, event.at)
            self.queued.discard(event.host)
        elif isinstance(event, eng.HostProgress) and event.host in self.running:
            self.running[event.host] = (event.phase, self.running[event.host][1])
        elif isinstance(event, eng.HostProgress) and event.phase == "queue":
            self.queued.discard(event.host)
        elif isinstance(event, eng.HostQueued):
            self.running.pop(event.host, None)
            self.queued.add(event.host)
        elif isinstance(event, eng.HostFinished):
            self.running.pop(event.host, None)
            self.queued.discard(event.host)
        elif isinstance(event, eng.WaitingForCanaries):
            self.canary_until = event.until
        elif isinstance(event, eng.CanaryGate):
            self.canary_until = None
        elif isinstance(event, eng.Paused):
            self.paused = event.reason
        elif isinstance(event, eng.Unpaused):
            self.paused = ""
        elif isinstance(event, eng.CancelRequested):
            self.cancelling = True
        elif isinstance(event, eng.RunFinished):
            self.running.clear()
            self.queued.clear()
            self.canary_until, self.paused, self.merging = None, "", False

    def waiting(self) -> str:
        """``waiting for …``: everything the run waits on now."""
        now = self.clock()
        parts: list[str] = []
        if not self.live:
            since = f" since {_clock_time(self.lost_at)}" if self.lost_at else ""
            parts.append(f"{self.info.noun} (unreachable{since}; retrying)")
        if self.merging:
            parts.append("GitHub's answer to the merge")
        for host, (phase, started) in sorted(self.running.items()):
            parts.append(f"{host} {phase} ({_elapsed((now - started).total_seconds())} so far)")
        if self.canary_until is not None:
            parts.append(f"the canary check at {_clock_time(self.canary_until)}")
        if self.paused:
            parts.append(f"the deploy gate ({self.paused})")
        if self.queued:
            parts.append(f"offline host(s) to come back: {', '.join(sorted(self.queued))}")
        text = "waiting for " + ("; ".join(parts) if parts else "the next step")
        return text + (" (cancel requested: no new host starts)" if self.cancelling else "")


__all__ = ["QUIET_SECONDS", "RunWatch"]
