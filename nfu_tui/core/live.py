"""LiveFleet: the fleet backend's stream (the dashboard's ``/ws``, or the SSH probes) applied to a
fleet model, with waiters.

This is the engine's :class:`~nfu_tui.core.engine.FleetView`: the deploy engine reads
hosts and output from it and waits on it for commands to finish. The
:class:`~nfu_tui.core.service.FleetService` runs one for the TUI and the headless
mode (adding login handling and UI events on top); the ``deploy`` CLI runs one on
its own with :meth:`start`/:meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from nfu_tui.backends.base import FleetBackend, info_of
from nfu_tui.clients.fleet import ChangeKind, FleetChange, FleetModel
from nfu_tui.errors import DashboardError, DashboardUnavailable
from nfu_tui.models import Command, Host

log = logging.getLogger(__name__)

StreamListener = Callable[[Any, list[FleetChange]], None]

# Changes no waiter looks at (waiters watch hosts, commands and the sync state): a deploy of 20
# hosts streams hundreds of output lines a second, and each wake-up costs every waiter a check.
_UNWATCHED = frozenset({ChangeKind.OUTPUT, ChangeKind.PROGRESS, ChangeKind.EVENT})

BACKFILL_LINES = 200
"""How much of a host's stored output :meth:`LiveFleet.settle_output` reads."""
ANCHOR_LINES = 3
"""How many trailing streamed lines must match the stored output to place the missing tail."""


def missing_tail(streamed: list[str], stored: list[str]) -> list[str]:
    """The lines of ``stored`` (a host's recent output, oldest first) after the last place where
    ``streamed``'s final lines occur: what the stream has not delivered (yet).

    Empty when ``streamed`` is empty or cannot be found in ``stored`` (the output log
    mixes every command of the host, so without an anchor nothing can be attributed).
    """
    anchor = streamed[-ANCHOR_LINES:]
    if not anchor:
        return []
    n = len(anchor)
    for end in range(len(stored), n - 1, -1):
        if stored[end - n:end] == anchor:
            return stored[end:]
    return []


class LiveFleet:
    """See the module docstring. ``backend`` is a :class:`~nfu_tui.backends.base.FleetBackend` (or None: an
    empty, static fleet)."""

    def __init__(self, backend: FleetBackend | None, model: FleetModel | None = None, *,
                 on_stream: StreamListener | None = None) -> None:
        self.backend = backend
        self.model = model if model is not None else FleetModel()
        self.on_stream = on_stream
        self._tick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- following the stream ---------------------------------------------------

    async def follow(self) -> None:
        """Apply the stream to the model until it ends; stream errors (e.g. LoginFailed) propagate."""
        if self.backend is None:
            raise DashboardUnavailable("no fleet backend is configured")
        try:
            async for event, changes in self.backend.follow(self.model):
                if self.on_stream is not None:
                    self.on_stream(event, changes)
                if any(c.kind not in _UNWATCHED for c in changes):
                    self.notify()
        finally:
            self.notify()

    async def start(self, timeout: float = 30.0) -> None:
        """Follow in the background and wait for the first full state (headless use)."""
        self._task = asyncio.create_task(self.follow(), name="nfu-fleet-stream")
        task = self._task
        synced = await self.wait_until(lambda: self.model.synced or task.done(), timeout)
        if task.done() and not task.cancelled() and task.exception() is not None:
            self._task = None
            raise task.exception()  # type: ignore[misc]
        if not synced or not self.model.synced:
            await self.stop()
            info = info_of(self.backend)
            raise DashboardUnavailable(f"no fleet state from {info.noun} within {timeout:g} s",
                                       title=info.unreachable_title)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def notify(self) -> None:
        """Wake every waiter so it re-checks its condition."""
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    # --- reading ----------------------------------------------------------------

    def host(self, host_id: str) -> Host | None:
        return self.model.host(host_id)

    def hosts(self) -> list[Host]:
        return list(self.model.snapshot().hosts.values())

    def output_lines(self, host_id: str, command_id: str | None = None) -> list[str]:
        """A host's buffered output (sanitized), only ``command_id``'s lines when given."""
        return [line.text for line in self.model.output(host_id, command_id)]

    async def settle_output(self, host_id: str, command_id: str) -> None:
        """Complete a finished command's streamed output with the tail the stream missed.

        The dashboard stores each line before it broadcasts it, and its output frames
        travel apart from the command's deltas: the last lines of a command (a failing
        switch's error lines) can arrive after its final delta, or not at all when the
        stream was down. They are read from ``GET /api/hosts/{id}/output`` and added to
        the command's output; a failing read leaves the output as it is. (The SSH backend reads
        the end of the command's log on the host the same way.)
        """
        if self.backend is None:
            return
        try:
            stored = await self.backend.output(host_id, BACKFILL_LINES, bare=True)
        except DashboardError as exc:
            log.info("cannot backfill %s's output: %s", host_id, exc)
            return
        missing = missing_tail(self.output_lines(host_id, command_id), stored)
        cmd = self.model.command(command_id)
        if missing and self.model.add_output(host_id, missing, command_id=command_id, op=cmd.op if cmd else ""):
            self.notify()

    def command(self, command_id: str) -> Command | None:
        """The command as the stream last described it (any status), or None if never seen."""
        return self.model.command(command_id)

    def progress(self, host_id: str) -> tuple[str, int, int] | None:
        p = self.model.progress(host_id)
        return (p.phase, p.current, p.total) if p is not None else None

    def active_command(self, host_id: str) -> Command | None:
        return self.model.snapshot().active_command(host_id)

    def commands_for(self, host_id: str) -> tuple[Command, ...]:
        """Every command of a host the stream described (finished ones too), newest first."""
        return self.model.snapshot().commands_for(host_id)

    # --- waiting ----------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """True as soon as ``predicate()`` holds (re-checked on every change of a host, a command or
        the connection, and at least once a second), False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            tick = self._tick
            # Wake at least once a second: some conditions depend on the clock, not on changes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), min(remaining, 1.0))
        return True

    async def wait_for_command(self, command_id: str, timeout: float) -> Command:
        """The command once terminal; ``TimeoutError`` after ``timeout`` seconds."""

        def done() -> bool:
            cmd = self.model.command(command_id)
            return cmd is not None and cmd.terminal

        if not await self.wait_until(done, timeout):
            raise TimeoutError(f"command {command_id} did not finish within {timeout:g} s")
        cmd = self.model.command(command_id)
        if cmd is None:  # pragma: no cover - commands are never removed while waiting
            raise TimeoutError(f"command {command_id} vanished")
        return cmd
