"""The live fleet model: what the UI and the deploy engine read about hosts and commands.

:class:`FleetModel` is fed the dashboard's ``/ws`` messages (or the stream events of
:meth:`nfu_tui.clients.dashboard.DashboardClient.stream`) and applies the sync rules
of the contract (§4.4, via :class:`~nfu_tui.clients._dashboard_protocol.SyncTracker`):

* deltas before ``init`` are ignored; a version gap or a ``sync`` beacon mismatch asks
  for **one** ``get_state`` (:meth:`FleetModel.take_resync_request`), further gaps are
  ignored until ``full_state`` arrives; ``init``/``full_state`` replace everything
  whatever their version;
* applying is idempotent: host ``fields`` are shallow-merged, ``update_status`` per
  compartment (absent = unchanged, ``null`` = unknown); commands are upserted by id
  (a terminal command is never set back to a running state, which makes late legacy
  ``command_state`` frames and snapshot/delta overlap harmless; a legacy frame never
  overwrites the running state the sync stream gave a known command); events are
  deduplicated by id;
* a snapshot's ``commands`` is a window (the dashboard's 50 newest rows), not the
  whole set: known commands it does not list are kept (bounded by ``max_commands``),
  so a finish seen just before a resync is not lost;
* ``host_updated`` for an unknown id (a newly registered agent) asks for a resync.

It also keeps per-host output ring buffers (sanitized on ingest, attributed to the
host's command that reached the agent, or to the one that just finished: late lines
travel through the legacy queue) and per-host ``operation_progress``. Every
``apply*`` returns :class:`FleetChange` records so a UI can coalesce redraws;
:meth:`FleetModel.snapshot` returns an immutable :class:`FleetSnapshot`. Pure: no
I/O, no asyncio, no Textual.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any, NamedTuple

from nfu_tui.clients._dashboard_protocol import (
    Connected,
    Disconnected,
    Event,
    Message,
    Progress,
    StreamEvent,
    SyncAction,
    SyncTracker,
    agent_outdated,
    command_from_json,
    event_from_json,
    host_fields,
    host_from_json,
    infer_dashboard_version,
    message_version,
    progress_from_json,
)
from nfu_tui.models import Command, Host
from nfu_tui.sanitize import sanitize_line

__all__ = [
    "ChangeKind",
    "Event",
    "FleetChange",
    "FleetModel",
    "FleetSnapshot",
    "OutputLine",
    "Progress",
]

# Output that arrives this long after its command finished is still attributed to it
# (legacy output and sync deltas travel through different queues, §4.4 race 7).
LATE_OUTPUT_SECONDS = 5.0

# Attributes a GET /api/hosts row carries (§3.1); everything else stays as the stream set it.
_REST_FIELDS = (
    "hostname",
    "host_type",
    "status",
    "last_seen",
    "generation",
    "agent_version",
    "pending_command",
    "os_version",
    "nixpkgs_version",
)


# What POST /api/hosts overwrites on an existing host (§3.2); its host_added payload's
# status ("offline") and pending_command (null) are not the host's state.
_HOST_ADDED_UPDATES = ("host_type", "location", "device_type", "theme_color")


class ChangeKind(str, enum.Enum):
    HOST_CHANGED = "host_changed"
    HOST_ADDED = "host_added"
    HOST_REMOVED = "host_removed"
    COMMAND_CHANGED = "command_changed"
    OUTPUT = "output"
    PROGRESS = "progress"
    EVENT = "event"
    RESYNCED = "resynced"  # whole state replaced: redraw everything
    CONNECTION = "connection"  # connected/disconnected flag changed


@dataclass(frozen=True, slots=True)
class FleetChange:
    kind: ChangeKind
    id: str = ""  # host id, command id or event id (as text); "" for whole-model changes


class OutputLine(NamedTuple):
    """One sanitized output line of a host, attributed to a command when known.

    A named tuple rather than a dataclass: output is the hottest path of the model
    (50 hosts building at once), and tuples are several times cheaper to create.
    """

    text: str
    command_id: str = ""
    op: str = ""


@dataclass(frozen=True)
class FleetSnapshot:
    """An immutable view of the fleet at one moment (hosts ordered by name)."""

    version: int | None
    hosts: Mapping[str, Host]
    commands: Mapping[str, Command]
    events: tuple[Event, ...]  # newest first
    progress: Mapping[str, Progress]  # host id → latest phase progress
    connected: bool
    synced: bool  # an init/full_state has been applied on the current connection
    dashboard_version: str | None

    def host(self, host_id: str) -> Host | None:
        return self.hosts.get(host_id)

    @cached_property
    def _commands_by_host(self) -> dict[str, tuple[Command, ...]]:
        index: dict[str, list[Command]] = {}
        for command in sorted(self.commands.values(), key=lambda c: (c.created_at, c.id), reverse=True):
            index.setdefault(command.host_id, []).append(command)
        return {host_id: tuple(cmds) for host_id, cmds in index.items()}

    def commands_for(self, host_id: str) -> tuple[Command, ...]:
        """Commands of a host, newest first (by creation time, then id)."""
        return self._commands_by_host.get(host_id, ())

    def active_command(self, host_id: str) -> Command | None:
        """The command really running on a host, if any.

        The newest non-terminal command, but only while the host has a
        ``pending_command`` (or the command is still ``VALIDATING``): init can carry
        non-terminal rows orphaned by a dashboard restart (§8 #34).
        """
        host = self.hosts.get(host_id)
        for command in self.commands_for(host_id):
            if command.terminal:
                continue
            if command.status == "VALIDATING" or (host is not None and host.pending_command):
                return command
        return None


def _running(command: Command) -> bool:
    """Non-terminal and past ``VALIDATING``: the agent has (or had) the command (§6.5)."""
    return not command.terminal and command.status != "VALIDATING"


class FleetModel:
    """Mutable fleet state fed by dashboard messages; see the module docstring."""

    def __init__(
        self,
        *,
        dashboard_version: str | None = None,
        output_lines: int = 2000,
        max_events: int = 500,
        max_commands: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sync = SyncTracker()
        self._dashboard_version = dashboard_version
        self._hosts: dict[str, Host] = {}
        self._by_hostname: dict[str, str] = {}
        self._commands: dict[str, Command] = {}
        # host id → its newest non-terminal command that reached the agent (not VALIDATING)
        self._active: dict[str, str] = {}
        self._finished: dict[str, tuple[str, float]] = {}  # host id → (command id, finished at)
        self._events: deque[Event] = deque(maxlen=max_events)
        self._event_ids: set[int] = set()
        self._progress: dict[str, Progress] = {}
        self._output: dict[str, deque[OutputLine]] = {}
        self._output_changes: dict[str, FleetChange] = {}  # reused: FleetChange is immutable
        self._output_lines = output_lines
        self._max_commands = max_commands
        self._clock = clock
        self._connected = False
        self._resync_wanted = False
        self._snapshot: FleetSnapshot | None = None

    # ------------------------------------------------------------------ reading

    @property
    def version(self) -> int | None:
        return self._sync.version

    @property
    def synced(self) -> bool:
        return self._sync.synced

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def dashboard_version(self) -> str | None:
        return self._dashboard_version

    @property
    def needs_resync(self) -> bool:
        """A ``get_state`` should be sent (see :meth:`take_resync_request`)."""
        return self._resync_wanted

    def take_resync_request(self) -> bool:
        """True once per requested resync: the caller must now send ``get_state``."""
        wanted, self._resync_wanted = self._resync_wanted, False
        return wanted

    def host(self, host_id: str) -> Host | None:
        return self._hosts.get(host_id)

    def command(self, command_id: str) -> Command | None:
        return self._commands.get(command_id)

    def progress(self, host_id: str) -> Progress | None:
        """The latest phase progress of a host's running op (no snapshot needed)."""
        return self._progress.get(host_id)

    def output(self, host_id: str, command_id: str | None = None) -> list[OutputLine]:
        """Buffered output of a host, oldest first; only one command's lines if ``command_id``."""
        lines = self._output.get(host_id, ())
        if command_id is None:
            return list(lines)
        return [line for line in lines if line.command_id == command_id]

    def snapshot(self) -> FleetSnapshot:
        """An immutable view; cached until the next change, so calling it often is cheap."""
        if self._snapshot is None:
            hosts = sorted(self._hosts.values(), key=lambda h: (h.name, h.id))
            self._snapshot = FleetSnapshot(
                version=self._sync.version,
                hosts=MappingProxyType({h.id: h for h in hosts}),
                commands=MappingProxyType(dict(self._commands)),
                events=tuple(reversed(self._events)),
                progress=MappingProxyType(dict(self._progress)),
                connected=self._connected,
                synced=self._sync.synced,
                dashboard_version=self._dashboard_version,
            )
        return self._snapshot

    # ----------------------------------------------------------------- writing

    def apply_event(self, event: StreamEvent) -> list[FleetChange]:
        """Apply one event of ``DashboardClient.stream()``."""
        if isinstance(event, Message):
            return self.apply(event.data)
        if isinstance(event, (Connected, Disconnected)):
            # Every connection starts with its own init; drop the old sync position.
            self._sync.reset()
            self._resync_wanted = False
            self._connected = isinstance(event, Connected)
            self._snapshot = None
            return [FleetChange(ChangeKind.CONNECTION)]
        return []

    def apply(self, message: Mapping[str, Any]) -> list[FleetChange]:
        """Apply one decoded ``/ws`` message (sync or legacy) and report what changed."""
        msg_type = str(message.get("type") or "")
        if msg_type == "command_output":  # the hot path: legacy, never touches the sync state
            payload = message.get("payload")
            return self._output_frame(payload) if isinstance(payload, dict) else []
        action = self._sync.decide(msg_type, message_version(message))
        if action is SyncAction.SNAPSHOT:
            self._snapshot = None
            return self._replace(message.get("payload"))
        if action is SyncAction.APPLY:
            self._snapshot = None  # the version moved even if nothing else did
            payload = message.get("payload")
            return self._apply_change(payload) if isinstance(payload, Mapping) else []
        if action is SyncAction.RESYNC:
            self._resync_wanted = True
            return []
        if action is SyncAction.LEGACY:
            payload = message.get("payload")
            return self._apply_legacy(msg_type, payload) if isinstance(payload, Mapping) else []
        return []

    def set_dashboard_version(self, version: str | None) -> list[FleetChange]:
        """Set the dashboard version (e.g. scraped at login) and recompute ``agent_outdated``."""
        if not version or version == self._dashboard_version:
            return []
        self._dashboard_version = version
        changes: list[FleetChange] = []
        for host_id, host in list(self._hosts.items()):
            outdated = agent_outdated(host.agent_version, version, host.agent_outdated)
            if outdated != host.agent_outdated:
                self._hosts[host_id] = replace(host, agent_outdated=outdated)
                changes.append(FleetChange(ChangeKind.HOST_CHANGED, host_id))
        self._snapshot = None
        return changes

    def merge_rest_hosts(self, hosts: Iterable[Host]) -> list[FleetChange]:
        """Merge hosts from ``GET /api/hosts`` (a flat listing, §3.1) into the model.

        Only the attributes that listing carries are taken; compartments and metrics
        stay as the stream set them. Unknown hosts are added; none are removed.
        """
        changes: list[FleetChange] = []
        for new in hosts:
            old = self._hosts.get(new.id)
            if old is None:
                self._put_host(new)
                changes.append(FleetChange(ChangeKind.HOST_ADDED, new.id))
                continue
            merged = replace(old, **{name: getattr(new, name) for name in _REST_FIELDS})
            if merged.agent_version != old.agent_version:
                merged = replace(merged, agent_outdated=agent_outdated(merged.agent_version, self._dashboard_version))
            if merged != old:
                self._put_host(merged)
                changes.append(FleetChange(ChangeKind.HOST_CHANGED, new.id))
        if changes:
            self._snapshot = None
        return changes

    def add_output(self, host_id: str, lines: Iterable[str | bytes], *, command_id: str = "", op: str = "") -> list[FleetChange]:
        """Append lines fetched out of band (``GET /api/hosts/{id}/output`` after a reconnect)."""
        buffer = self._buffer(host_id)
        count = 0
        for line in lines:
            buffer.append(OutputLine(sanitize_line(line), command_id, op))
            count += 1
        return [FleetChange(ChangeKind.OUTPUT, host_id)] if count else []

    # ------------------------------------------------------------- snapshots

    def _replace(self, payload: Any) -> list[FleetChange]:
        payload = payload if isinstance(payload, Mapping) else {}
        rows = [h for h in payload.get("hosts") or () if isinstance(h, Mapping)]
        if self._dashboard_version is None:
            self._dashboard_version = infer_dashboard_version(rows)
        self._hosts = {}
        self._by_hostname = {}
        for row in rows:
            host = host_from_json(row, self._dashboard_version)
            if host is not None:
                self._put_host(host)
        for row in payload.get("commands") or ():
            command = command_from_json(row)
            if command is None:
                continue
            old = self._commands.get(command.id)
            if old is None or not old.terminal or command.terminal:  # never resurrect a finished one
                self._commands[command.id] = command
        if len(self._commands) > self._max_commands:
            self._evict_commands()
        self._active = {}
        for command in sorted(self._commands.values(), key=lambda c: (c.created_at, c.id)):
            host = self._hosts.get(command.host_id)
            # Non-terminal rows of idle hosts are orphans of a dashboard restart (§8 #34).
            if _running(command) and host is not None and host.busy:
                self._active[command.host_id] = command.id
        self._events.clear()
        self._event_ids.clear()
        for row in reversed(payload.get("events") or ()):  # init lists newest first
            self._add_event(event_from_json(row))
        # Legacy progress is never replayed; keep it only where a command still runs.
        self._progress = {
            host_id: p for host_id, p in self._progress.items() if host_id in self._hosts and self._hosts[host_id].busy
        }
        self._snapshot = None
        return [FleetChange(ChangeKind.RESYNCED)]

    # ---------------------------------------------------------------- deltas

    def _apply_change(self, change: Mapping[str, Any]) -> list[FleetChange]:
        kind = change.get("type")
        entity = str(change.get("id") or "")
        if kind == "host_updated":
            fields = change.get("fields")
            if entity not in self._hosts:  # a newly registered agent (§8 #17)
                if self._sync.request_resync():
                    self._resync_wanted = True
                return []
            return self._merge_host(entity, fields if isinstance(fields, Mapping) else {})
        if kind == "host_added":
            payload = change.get("payload")
            data = dict(payload) if isinstance(payload, Mapping) else {}
            data.setdefault("id", entity)
            host_id = str(data.get("id") or "")
            if host_id in self._hosts:  # an upsert of a known host: its status stays (§3.2)
                return self._merge_host(host_id, {k: data[k] for k in _HOST_ADDED_UPDATES if k in data})
            host = host_from_json(data, self._dashboard_version)
            if host is None:
                return []
            self._put_host(host)
            return [FleetChange(ChangeKind.HOST_ADDED, host.id)]
        if kind == "host_removed":
            return self._remove_host(entity)
        if kind in ("command_started", "command_progress", "command_finished"):
            data = change.get("payload") if kind == "command_started" else change.get("fields")
            if not isinstance(data, Mapping):  # be lenient about where the object sits
                data = change.get("fields") or change.get("payload")
            return self._upsert_command(command_from_json(data))
        if kind == "event":
            event = event_from_json(change.get("payload"))
            if event is not None and self._add_event(event):
                return [FleetChange(ChangeKind.EVENT, "" if event.id is None else str(event.id))]
        return []

    def _merge_host(self, host_id: str, data: Mapping[str, Any]) -> list[FleetChange]:
        old = self._hosts[host_id]
        fields = host_fields(data)
        fields.pop("id", None)
        if not fields:
            return []
        new = replace(old, **fields)
        if "agent_version" in fields and "agent_outdated" not in fields:
            new = replace(new, agent_outdated=agent_outdated(new.agent_version, self._dashboard_version, old.agent_outdated))
        if new == old:
            return []
        self._put_host(new)
        return [FleetChange(ChangeKind.HOST_CHANGED, host_id)]

    def _put_host(self, host: Host) -> None:
        old = self._hosts.get(host.id)
        if old is not None and old.hostname != host.hostname:
            self._by_hostname.pop(old.hostname, None)
        self._hosts[host.id] = host
        if host.hostname:
            self._by_hostname[host.hostname] = host.id

    def _remove_host(self, host_id: str) -> list[FleetChange]:
        host = self._hosts.pop(host_id, None)
        if host is None:
            return []
        self._by_hostname.pop(host.hostname, None)
        self._progress.pop(host_id, None)
        self._output.pop(host_id, None)
        self._active.pop(host_id, None)
        self._finished.pop(host_id, None)
        return [FleetChange(ChangeKind.HOST_REMOVED, host_id)]

    def _upsert_command(self, command: Command | None) -> list[FleetChange]:
        if command is None:
            return []
        old = self._commands.get(command.id)
        if old is not None:
            if old.terminal and not command.terminal:
                return []  # late or overlapping message: never resurrect a finished command
            if old == command:
                return []
        self._commands[command.id] = command
        host_id = command.host_id
        if _running(command):
            self._active[host_id] = command.id
        elif command.terminal:
            if self._active.get(host_id) == command.id:
                del self._active[host_id]
            if command.status != "BLOCKED":  # a blocked command never reached the agent: no output
                self._finished[host_id] = (command.id, self._clock())
        if old is None and len(self._commands) > self._max_commands:
            self._evict_commands()
        self._snapshot = None
        return [FleetChange(ChangeKind.COMMAND_CHANGED, command.id)]

    def _evict_commands(self) -> None:
        excess = len(self._commands) - self._max_commands
        for command_id in [cid for cid, c in self._commands.items() if c.terminal][:excess]:
            del self._commands[command_id]

    def _add_event(self, event: Event | None) -> bool:
        if event is None:
            return False
        if event.id is not None:
            if event.id in self._event_ids:
                return False
            self._event_ids.add(event.id)
        if len(self._events) == self._events.maxlen and self._events:
            dropped = self._events[0]
            if dropped.id is not None:
                self._event_ids.discard(dropped.id)
        self._events.append(event)
        self._snapshot = None
        return True

    # ---------------------------------------------------------------- legacy

    def _resolve_host(self, raw: Any) -> str:
        """Legacy messages key hosts by hostname (= id in practice, §1.2)."""
        name = str(raw or "")
        if name in self._hosts:
            return name
        return self._by_hostname.get(name, name)

    def _output_frame(self, payload: Mapping[str, Any]) -> list[FleetChange]:
        host_id = self._resolve_host(payload.get("host_id"))
        if not host_id:
            return []
        command_id, op = self._attribution(host_id, str(payload.get("command") or ""))
        self._buffer(host_id).append(OutputLine(sanitize_line(str(payload.get("line") or "")), command_id, op))
        change = self._output_changes.get(host_id)
        if change is None:
            change = self._output_changes[host_id] = FleetChange(ChangeKind.OUTPUT, host_id)
        return [change]

    def _apply_legacy(self, msg_type: str, payload: Mapping[str, Any]) -> list[FleetChange]:
        if msg_type == "command_output":
            return self._output_frame(payload)
        if msg_type == "command_state":
            command = command_from_json(payload.get("command"))
            if command is not None and not command.terminal and command.id in self._commands:
                # Its sync twin (same broadcast) carries the state; through the other queue
                # this copy may be older than what the deltas already said (§4.4 race 7).
                return []
            return self._upsert_command(command)
        if msg_type == "operation_progress":
            host_id = self._resolve_host(payload.get("host_id"))
            phases = progress_from_json(payload)
            if not host_id or not phases:
                return []
            self._progress[host_id] = phases[-1]
            self._snapshot = None
            return [FleetChange(ChangeKind.PROGRESS, host_id)]
        if msg_type == "test_progress":
            host_id = self._resolve_host(payload.get("host_id"))
            if not host_id:
                return []
            running = bool(payload.get("running"))
            phase = {"current": payload.get("current"), "total": payload.get("total")}
            phase["status"] = "in_progress" if running else "complete"
            self._progress[host_id] = progress_from_json({"progress": {"tests": phase}})[0]
            self._snapshot = None
            return [FleetChange(ChangeKind.PROGRESS, host_id)]
        return []

    def _attribution(self, host_id: str, command_name: str) -> tuple[str, str]:
        """(command id, op) for a new output line of ``host_id``.

        The agent gets a command only once it is ``EXECUTING`` (§6.5), so a ``VALIDATING``
        one owns no output yet (it is not in ``_active``); lines then belong to the command
        that just finished.
        """
        if command_name:  # e.g. "theme-color" lines: not a lifecycle command
            return "", command_name
        command_id = self._active.get(host_id)
        if command_id is None:
            finished = self._finished.get(host_id)
            if finished is not None and self._clock() - finished[1] <= LATE_OUTPUT_SECONDS:
                command_id = finished[0]
        command = self._commands.get(command_id) if command_id else None
        if command is not None:
            return command.id, command.op
        host = self._hosts.get(host_id)
        return "", host.pending_command if host is not None else ""

    def _buffer(self, host_id: str) -> deque[OutputLine]:
        buffer = self._output.get(host_id)
        if buffer is None:
            buffer = self._output[host_id] = deque(maxlen=self._output_lines)
        return buffer
