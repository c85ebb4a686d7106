"""Record a dashboard's ``/ws`` stream during a deploy and normalise it for comparing dashboards.

Used by test_sim_vs_real.py to hold the simulator to what the real NixFleet 3.1.5
dashboard sends on the same scripted scenario. Times, ids, versions and line counts are
normalised away; what stays is, per host and per channel, the order of things:

* ``commands``: each command's op and the statuses its deltas carried (``pull VALIDATING
  EXECUTING SUCCESS``), consecutive repeats folded;
* ``events``: the level and text of the dashboard's ``event`` deltas;
* ``progress``: the legacy ``operation_progress`` steps (``pull 4/4 complete``);
* ``legacy``: the statuses of the legacy ``command_state`` broadcasts;
* ``links``: the host going offline/online while a command ran (the agent's restart);
* ``presence``: every online/offline change of the host;
* ``output``: whether ``command_output`` lines came;

and overall the set of message kinds (top-level types, ``delta:<kind>``), the fields each kind
carried (``shapes``: the union of their keys, for init its hosts' and commands' keys too) and
each host's final state (online, idle, Git/Lock states, System/Tests with their messages, its last
command's op and statuses).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from nfu_tui.clients.dashboard import DashboardClient, Message
from nfu_tui.clients.fleet import FleetModel

# Periodic or timing-only messages: how many come depends on the clock, not on the deploy.
PERIODIC = {"sync", "host_heartbeat"}


@dataclass
class Trace:
    kinds: set[str] = field(default_factory=set)
    commands: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    events: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    progress: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    legacy: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    links: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    presence: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    output: set[str] = field(default_factory=set)
    shapes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    model: FleetModel = field(default_factory=FleetModel)
    _cmd_index: dict[str, tuple[str, int]] = field(default_factory=dict)
    _status: dict[str, str] = field(default_factory=dict)
    _busy: dict[str, bool] = field(default_factory=dict)

    def add(self, data: dict[str, Any]) -> None:
        kind = str(data.get("type"))
        payload = data.get("payload") or {}
        if kind == "delta":
            sub = str(payload.get("type"))
            self.kinds.add(f"delta:{sub}")
            self._delta(sub, payload)
            inner = payload.get("fields") or payload.get("payload") or {}
            self.shapes[f"delta:{sub}"] |= set(inner) if isinstance(inner, dict) else set()
        else:
            self.kinds.add(kind)
            self.shapes[kind] |= set(payload) if isinstance(payload, dict) else set()
        if kind == "init":
            for h in payload.get("hosts") or ():
                self.shapes["init.hosts"] |= set(h)
                self.shapes["init.hosts.update_status"] |= set(h.get("update_status") or {})
            for c in payload.get("commands") or ():
                self.shapes["init.commands"] |= set(c)
        if kind == "operation_progress":
            host = str(payload.get("host_id"))
            for phase, value in (payload.get("progress") or {}).items():
                _fold(self.progress[host], f"{phase} {value.get('current')}/{value.get('total')} {value.get('status')}")
        elif kind == "command_state":
            cmd = payload.get("command") or {}
            _fold(self.legacy[str(cmd.get("host_id"))], f"{cmd.get('op')} {cmd.get('status')}")
        elif kind == "command_output":
            self.output.add(str(payload.get("host_id")))

    def _delta(self, sub: str, payload: dict[str, Any]) -> None:
        if sub in ("command_progress", "command_started", "command_finished"):
            fields = payload.get("fields") or payload.get("payload") or {}
            cid, host = str(fields.get("id") or payload.get("id")), str(fields.get("host_id"))
            if cid not in self._cmd_index:
                self._cmd_index[cid] = (host, len(self.commands[host]))
                self.commands[host].append(str(fields.get("op")))
            h, i = self._cmd_index[cid]
            status = str(fields.get("status"))
            if not self.commands[h][i].endswith(f" {status}"):
                self.commands[h][i] += f" {status}"
        elif sub == "event":
            ev = payload.get("payload") or {}
            if ev.get("category") == "ops":
                self.events[str(ev.get("host_id"))].append(f"{ev.get('level')}: {ev.get('message')}")
        elif sub == "host_updated":
            host = str(payload.get("id"))
            fields = payload.get("fields") or {}
            if "pending_command" in fields:
                self._busy[host] = bool(fields["pending_command"])
            status = fields.get("status")
            if status in ("online", "offline") and status != self._status.setdefault(host, status):
                self._status[host] = status
                self.presence[host].append(status)
                if self._busy.get(host):
                    self.links[host].append(status)

    def final(self) -> dict[str, dict[str, Any]]:
        snap = self.model.snapshot()
        out: dict[str, dict[str, Any]] = {}
        for h in snap.hosts.values():
            last = self.commands.get(h.id, [""])[-1] if self.commands.get(h.id) else ""
            out[h.id] = {"online": h.online, "busy": bool(h.pending_command), "git": h.git.state.value,
                         "lock": h.lock.state.value, "system": _text(h.system), "tests": _text(h.tests),
                         "last_command": last}
        return out

    def per_host(self) -> dict[str, dict[str, Any]]:
        hosts = set(self.commands) | set(self.events) | set(self.progress) | set(self.legacy)
        return {h: {"commands": self.commands.get(h, []), "events": self.events.get(h, []),
                    "progress": self.progress.get(h, []), "legacy": self.legacy.get(h, []),
                    "links": self.links.get(h, []), "presence": self.presence.get(h, []),
                    "output": h in self.output} for h in sorted(hosts)}


def _text(check: Any) -> str:
    return f"{check.state.value}: {check.message}"


def _fold(seq: list[str], item: str) -> None:
    if not seq or seq[-1] != item:
        seq.append(item)


class Recorder:
    """Follow a dashboard's ``/ws`` into a :class:`Trace` until :meth:`stop`."""

    def __init__(self, url: str, password: str) -> None:
        self.client = DashboardClient(url=url, password=password)
        self.trace = Trace()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(30):
            while not self.trace.model.synced:
                await asyncio.sleep(0.05)

    async def _run(self) -> None:
        async for event, _ in self.client.follow(self.trace.model):
            if isinstance(event, Message) and event.data.get("type") not in PERIODIC:
                self.trace.add(event.data)

    async def run(self, op: str, host: str, timeout: float = 120) -> str:
        """Dispatch ``op`` on ``host`` through the recording client; its final status."""
        (result,) = await self.client.dispatch(op, [host])
        assert result.command_id, result
        async with asyncio.timeout(timeout):
            while (cmd := self.trace.model.command(result.command_id)) is None or not cmd.terminal:
                await asyncio.sleep(0.1)
        return cmd.status

    async def stop(self) -> Trace:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()
        return self.trace
