"""Simulated NixFleet hosts, their agents, and the dashboard's command lifecycle.

This is the "database + hub + lifecycle" half of the fake dashboard
(:mod:`nfu_tui.sim.dashboard` is the HTTP/WebSocket half). Everything here follows
``/work/shared/contracts/nixfleet-dashboard-api.md``; section numbers (§) refer to it.

Layout:

* pure helpers (time formats, compartments and gating §5.4, validators §6.2) —
  unit-tested directly;
* :class:`SimCommand` (§6.3), :class:`SimHost` (the DB row + stored compartments),
  :class:`SimAgent` (the process on the host: checkout, running command, output);
* :class:`Fleet`: registration/heartbeat/offline handling (hub.go), the lifecycle
  (lifecycle.go: validation, broadcasts, deferred post-checks, switch reconnect,
  timeouts, kill/ignore/wait), the event and command stores, per-host output logs.

The fleet reports every state change to a :class:`Sink` (``change`` = one sync
delta, ``legacy`` = one legacy message); the dashboard turns those into WebSocket
frames. All timers run on the asyncio loop (``call_later``; one timer per online
host for heartbeats), so 1,000 hosts cost a heap of handles, not 1,000 tasks.
Durations of simulated commands are divided by ``Scenario.speed``; lifecycle
timeouts (§6.7) are multiplied by ``timeout_scale`` (default ``1 / speed``).

Per-host faults (``HostSpec.faults``, or at run time via the dashboard's ``set_fault``):

* ``offline`` — the host is down; ``set_online(host, True)`` brings it up.
* ``slow`` — every command takes five times longer.
* ``pull_fails`` — ``git fetch`` fails (exit 1, ``command failed``).
* ``switch_fails`` — a derivation fails to build: exit 1, System ``error``; the agent keeps running.
* ``tests_fail`` — the host's tests (the ``test`` op) fail: exit 1, Tests ``error``.
* ``rollback_fails`` — the ``rollback`` op's activation fails: exit 1, System ``error``; the running
  system stays (``agent.system_commit``; a successful rollback goes back to the one before the last switch).
* ``never_reconnects`` — the switch exits 0, the agent exits and never returns → ``TIMEOUT``.
* ``offline_mid_deploy`` — the host drops off the network in the middle of its first switch
  (→ ``AWAITING_RECONNECT`` → ``TIMEOUT``) and stays away until ``set_online(host, True)``.
* ``garbled_output`` — the switch prints lines that are not valid text: a lone surrogate
  (``\udcff``, sent as a legal JSON escape on ``/ws`` and as the raw byte 0xFF by
  ``/api/hosts/{id}/output``), invalid UTF-8, escape sequences and a bidi override.
* ``refresh_system_fails`` — ``refresh-system`` cannot inspect the running system (the real agent in a
  container: "Cannot read current system: lstat /run/current-system"): exit 1, System ``error``.
* ``offline_after_switch`` — a switch that breaks networking: the first switch succeeds (the
  agent restarts, reconnects, the command ends ``SUCCESS`` on the new generation), then the
  host drops off the network and stays away until ``set_online(host, True)``.
* run time only: ``rejects_commands`` (the agent answers ``command_rejected`` as if a
  stray process were running), ``send_fails`` (the dashboard cannot hand the command
  to the agent: ``send_failed``) and ``late_output`` (the last lines of a failing switch
  are stored in the host's output log at once but reach ``/ws`` only a second after the
  command's final delta, as the real hub's separate queues allow; a client that reads the
  excerpt at the final delta misses them unless it backfills from ``/output``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from nfu_tui.sim.scenario import HOST_FAULTS, HostSpec, Scenario

# --- time formats (§1.3) -------------------------------------------------------

ZERO_TIME = "0001-01-01T00:00:00Z"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def fmt_seconds(dt: datetime) -> str:
    """RFC 3339, UTC, second precision (deltas, ``checked_at``, ``last_seen``)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _frac(dt: datetime) -> str:
    digits = f"{dt.microsecond:06d}".rstrip("0")
    return f".{digits}" if digits else ""


def fmt_nano(dt: datetime) -> str:
    """RFC 3339 UTC with trimmed fractional seconds (Go ``RFC3339Nano``)."""
    u = dt.astimezone(timezone.utc)
    return u.strftime("%Y-%m-%dT%H:%M:%S") + _frac(u) + "Z"


def fmt_local(dt: datetime | None) -> str:
    """Go ``time.Time`` JSON in the server's local offset; ``None`` is Go's zero time."""
    if dt is None:
        return ZERO_TIME
    local = dt.astimezone()
    offset = local.utcoffset() or timedelta(0)
    if not offset:
        return local.strftime("%Y-%m-%dT%H:%M:%S") + _frac(local) + "Z"
    return local.strftime("%Y-%m-%dT%H:%M:%S") + _frac(local) + local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]


# --- desired state and compartments (§5.3, §5.4) -------------------------------


@dataclass(frozen=True)
class DesiredState:
    """What ``version.json`` publishes: the config repo's head commit and its flake.lock hash."""

    git_commit: str
    lock_hash: str
    message: str


def status_check(status: str, message: str, checked_at: str = "") -> dict[str, str]:
    return {"checked_at": checked_at, "message": message, "status": status}


def git_status(remote: DesiredState | None, generation: str, now: datetime) -> dict[str, str]:
    """Git compartment, computed live from the host's generation vs the remote commit."""
    at = fmt_seconds(now)
    if remote is None:
        return status_check("error", "Remote version not available", at)
    if not remote.git_commit:
        return status_check("error", "Remote version missing gitCommit (version.json)", at)
    if not generation:
        return status_check("unknown", "Agent has not reported generation", at)
    if generation == remote.git_commit or generation[:7] == remote.git_commit[:7]:
        return status_check("ok", "Up to date with remote", at)
    return status_check(
        "outdated", f"Behind remote ({generation[:7]} → {remote.git_commit[:7]}): {remote.message}", at
    )


def lock_status(remote: DesiredState | None, lock_hash: str, now: datetime) -> dict[str, str]:
    """Lock compartment from the heartbeat's flake.lock hash vs the remote ``lockHash``."""
    at = fmt_seconds(now)
    if remote is None:
        return status_check("error", "Remote version not available", at)
    if not remote.lock_hash:
        return status_check("error", "Remote version missing lockHash (version.json)", at)
    if not lock_hash:
        return status_check("unknown", "Agent has not reported lock hash", at)
    if lock_hash == remote.lock_hash:
        return status_check("ok", "flake.lock is current", at)
    return status_check("outdated", f"flake.lock outdated (host: {lock_hash[:8]}, latest: {remote.lock_hash[:8]})", at)


def _state(check: dict[str, str] | None) -> str:
    return check["status"] if check else ""


_BEHIND = "System not current vs remote (Git/Lock behind)"
_DEGRADED = "Remote verification degraded (Git/Lock error)"


def gate_system(
    stored: dict[str, str] | None, git: dict[str, str], lock: dict[str, str] | None, checked_at: str = ""
) -> dict[str, str] | None:
    """Remote gating of the System compartment (§5.4); synthesised values get ``checked_at``."""
    states = (_state(git), _state(lock))
    if stored is None:
        if "outdated" in states:
            return status_check("outdated", _BEHIND, checked_at)
        if "error" in states:
            return status_check("outdated", _DEGRADED, checked_at)
        return None
    if stored["status"] == "ok" and states != ("ok", "ok"):
        if "outdated" in states:
            return status_check("outdated", _BEHIND, checked_at)
        if "error" in states:
            return status_check("outdated", _DEGRADED, checked_at)
        return status_check("unknown", "Cannot verify System vs remote (insufficient signal)", checked_at)
    return stored


def gate_tests_snapshot(
    stored: dict[str, str] | None, tests_generation: str, generation: str
) -> dict[str, str] | None:
    """Tests in init/full_state and BroadcastHostStatus deltas: scoped to the generation they ran on."""
    if stored is not None and tests_generation != generation:
        return status_check("outdated", "Tests outdated for current deployed state")
    return stored


def gate_tests_heartbeat(
    tests: dict[str, str], system: dict[str, str] | None, git: dict[str, str], lock: dict[str, str] | None, now: str
) -> dict[str, str]:
    """Tests in heartbeat deltas: an ``ok`` only stands while System, Git and Lock are all ``ok``."""
    if tests["status"] != "ok" or (_state(system), _state(git), _state(lock)) == ("ok", "ok", "ok"):
        return tests
    states = (_state(git), _state(lock))
    if "outdated" in states:
        return status_check("outdated", "Tests outdated for current remote state", now)
    if "error" in states:
        return status_check("outdated", _DEGRADED, now)
    if states != ("ok", "ok"):
        return status_check("unknown", "Cannot verify Tests vs remote (insufficient signal)", now)
    return status_check("outdated", "Tests outdated for current deployed state", now)


# --- op registry and validation (§6.1, §6.2) -----------------------------------


@dataclass(frozen=True)
class OpSpec:
    id: str
    description: str
    executor: str  # agent | dashboard
    timeout: str  # the registry's (unenforced) Go duration string shown by /api/ops
    retryable: bool
    requires_totp: bool = False
    warn_seconds: float = 300.0  # enforced by the lifecycle (§6.7)
    hard_seconds: float = 900.0


OPS: dict[str, OpSpec] = {
    o.id: o
    for o in (
        OpSpec("pull", "Git fetch + reset to latest", "agent", "2m0s", True, warn_seconds=120, hard_seconds=300),
        OpSpec("switch", "Apply configuration (nixos-rebuild/home-manager switch)", "agent", "10m0s", True,
               warn_seconds=600, hard_seconds=1800),
        OpSpec("test", "Run host test scripts", "agent", "5m0s", True, warn_seconds=300, hard_seconds=600),
        OpSpec("rollback", "Roll back to the previous generation", "agent", "5m0s", False),
        OpSpec("restart", "Restart the agent", "agent", "1m0s", False),
        OpSpec("stop", "Stop the running command", "agent", "30s", False),
        OpSpec("reboot", "Reboot the host", "agent", "5m0s", False, requires_totp=True),
        OpSpec("check-version", "Report the agent version", "agent", "10s", True),
        OpSpec("refresh-git", "Refresh Git status", "agent", "30s", True),
        OpSpec("refresh-lock", "Refresh flake.lock status", "agent", "30s", True),
        OpSpec("refresh-system", "Check whether the system needs a rebuild (nix build --dry-run)", "agent", "5m0s", True),
        OpSpec("bump-flake", "Update flake.lock inputs", "agent", "2m0s", True),
        OpSpec("force-rebuild", "Rebuild and restart the agent", "agent", "15m0s", True),
        OpSpec("merge-pr", "Merge the pending flake.lock PR", "dashboard", "30s", True),
        OpSpec("set-color", "Set the host's theme color", "dashboard", "5s", True),
        OpSpec("remove", "Remove the host from the dashboard", "dashboard", "5s", False),
    )
}

PIPELINES: dict[str, tuple[str, list[str]]] = {
    "do-all": ("Full update cycle", ["pull", "switch", "test"]),
    "merge-deploy": ("Merge PR and deploy", ["merge-pr", "pull", "switch", "test"]),
    "update-agent": ("Update the agent", ["bump-flake", "pull", "switch", "restart"]),
    "force-update": ("Force agent update", ["force-rebuild", "restart"]),
}

RECONNECT_SECONDS = 90.0
GARBLED_LINES = (
    "warning: unreadable file name /nix/store/\udcff\udcfe-broken (lone surrogates)",
    "\x1b[31merror:\x1b[0m \x1b]0;owned title\x07bad \udc80 byte\u202e gnirts",
)
"""Output of the ``garbled_output`` fault: surrogates stand for the invalid bytes a host printed."""
RUNTIME_FAULTS = frozenset({"rejects_commands", "send_fails", "late_output"})
"""Faults only settable at run time: the agent answers ``command_rejected`` / the send fails (§6.2)."""
TERMINAL = frozenset({"SUCCESS", "ERROR", "TIMEOUT", "SKIPPED", "BLOCKED", "PARTIAL", "KILLED", "STALE_BINARY", "SUSPICIOUS"})
_PRUNED = frozenset({"SUCCESS", "ERROR", "TIMEOUT", "SKIPPED", "BLOCKED"})


@dataclass(frozen=True)
class ValidationView:
    """What an op validator sees: raw stored values, live Git, online = online|running."""

    online: bool
    pending: str
    git: str
    lock: str
    system: str
    agent_outdated: bool


def validate_op(op: str, v: ValidationView) -> tuple[str, str] | None:
    """The registry validators (§6.1): ``(code, message)`` when blocked, else ``None``."""
    if op in ("merge-pr", "set-color"):
        return None
    if op == "remove":
        return ("online", "Cannot remove online host") if v.online else None
    if op == "stop":
        return None if v.pending else ("no_pending", "No command running to stop")
    if not v.online:
        return ("offline", "Host is offline")
    if op in ("pull", "switch", "test", "rollback") and v.pending:
        return ("busy", f'Command "{v.pending}" already running')
    if op == "pull" and v.git == "ok":
        return ("already_current", "Git already up to date")
    if op == "switch":
        if v.lock == "outdated":
            return ("lock_outdated", "Pull required before switch (lock outdated)")
        if v.system == "ok" and not v.agent_outdated:
            return ("already_current", "System already up to date")
    return None


# --- commands (§6.3) -----------------------------------------------------------


class CommandIds:
    """``YYYYMMDD-HHMMSS.mmm-XXXX`` in local time (§1.2), made unique within this process."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def new(self, now: datetime) -> str:
        local = now.astimezone()
        stem = local.strftime("%Y%m%d-%H%M%S") + f".{local.microsecond // 1000:03d}-"
        digit = time.monotonic_ns() % 16
        for i in range(16 * 65536):
            suffix = f"{digit:x}" * 4 if i == 0 else f"{(digit * 4369 + i) % 65536:04x}"
            if stem + suffix not in self._seen:
                self._seen.add(stem + suffix)
                return stem + suffix
        raise RuntimeError("command id space exhausted")  # pragma: no cover - 1M ids in one millisecond


@dataclass
class SimCommand:
    """A lifecycle command (contract §6.3); ``to_json`` is the delta/legacy/command-states shape."""

    id: str
    host_id: str
    op: str
    created_at: datetime
    status: str = "PENDING"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    row_finished_at: datetime | None = None  # the DB row gets a time even for BLOCKED
    exit_code: int | None = None
    error: str = ""
    warning_at: datetime | None = None
    hard_timeout_at: datetime | None = None
    timeout_extended_ns: int = 0
    kill_initiated_at: datetime | None = None
    kill_signal: str = ""
    reconnect_deadline: datetime | None = None
    post_check_deferred: bool = False
    deferred_exit_code: int | None = None
    deferred_message: str = ""
    watching: bool = False  # the timeout watcher's stop channel is open (§3.8: `wait` panics otherwise)
    timers: list[asyncio.TimerHandle] = field(default_factory=list, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def cancel_timers(self) -> None:
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "host_id": self.host_id,
            "op": self.op,
            "pipeline_id": "",
            "status": self.status,
            "created_at": fmt_local(self.created_at),
            "started_at": fmt_local(self.started_at),
            "finished_at": fmt_local(self.finished_at),
            "exit_code": self.exit_code,
            "error": self.error,
            "output_file": "",
        }
        if self.warning_at:
            out["warning_at"] = fmt_local(self.warning_at)
        if self.hard_timeout_at:
            out["hard_timeout_at"] = fmt_local(self.hard_timeout_at)
        if self.timeout_extended_ns:
            out["timeout_extended"] = self.timeout_extended_ns
        if self.kill_initiated_at:
            out["kill_initiated_at"] = fmt_local(self.kill_initiated_at)
            out["kill_signal"] = self.kill_signal
        if self.reconnect_deadline:
            out["reconnect_deadline"] = fmt_local(self.reconnect_deadline)
        if self.post_check_deferred:
            out["deferred_exit_code"] = self.deferred_exit_code
            if not self.terminal:  # the real lifecycle clears the flag and the message once the post-check decided
                out["post_check_deferred"] = True
                out["deferred_message"] = self.deferred_message
        return out

    def row(self) -> dict[str, Any]:
        """The init/full_state ``commands`` row (DB strings; ``started_at`` is never written)."""
        out: dict[str, Any] = {
            "id": self.id,
            "host_id": self.host_id,
            "op": self.op,
            "status": self.status,
            "created_at": fmt_nano(self.created_at),
            "started_at": "",
            "finished_at": fmt_nano(self.row_finished_at) if self.row_finished_at else "",
        }
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class OpResult:
    """Outcome of starting one op on one host (what ``/api/dispatch`` reports per host)."""

    host_id: str
    status: str  # EXECUTING | SUCCESS | blocked | error
    command_id: str = ""
    code: str = ""
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.status == "error":
            return {"error": self.message, "host_id": self.host_id, "status": "error"}
        if self.status == "blocked":
            return {"code": self.code, "host_id": self.host_id, "message": self.message, "status": "blocked"}
        return {"command_id": self.command_id, "host_id": self.host_id, "status": self.status}


# --- hosts and agents ----------------------------------------------------------


@dataclass
class SimHost:
    """One ``hosts`` row plus the dashboard's stored compartments."""

    id: str
    host_type: str = "nixos"
    device_type: str = "desktop"
    location: str = "home"
    theme_color: str = "#7aa2f7"
    status: str = "offline"
    last_seen: datetime | None = None
    agent_version: str = ""
    os_version: str | None = None
    nixpkgs_version: str | None = None
    generation: str = ""
    pending_command: str | None = None
    lock: dict[str, str] | None = None
    system: dict[str, str] | None = None
    tests: dict[str, str] | None = None
    tests_generation: str = ""
    metrics: dict[str, float] | None = None
    repo_url: str = ""
    repo_dir: str = ""
    agent: SimAgent | None = field(default=None, repr=False)

    @property
    def hostname(self) -> str:
        return self.id

    @property
    def online(self) -> bool:
        return self.status in ("online", "running")


NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
_PKGS = (
    "openssl-3.0.15", "systemd-257.2", "linux-6.12.8", "firefox-133.0.3", "python3-3.12.8", "git-2.47.1",
    "curl-8.11.1", "nginx-1.26.2", "glibc-2.40-36", "mesa-24.2.8", "dbus-1.14.10", "bash-interactive-5.2p37",
    "nix-2.24.11", "tailscale-1.78.1", "podman-5.3.1", "openssh-9.9p1", "sqlite-3.47.2", "zstd-1.5.6",
    "libxml2-2.13.5", "gnutls-3.8.8", "rustc-1.83.0", "go-1.23.4", "nodejs-22.12.0", "ffmpeg-7.1",
    "pipewire-1.2.7", "neovim-0.10.3", "ripgrep-14.1.1", "htop-3.3.0", "coreutils-9.5", "util-linux-2.40.2",
)
_DRVS = (
    "etc-os-release", "system-path", "etc", "dbus-1", "unit-nixfleet-agent.service", "unit-sshd.service",
    "X-Restart-Triggers-systemd-journald", "system-units", "user-units", "etc-nix-nix.conf", "initrd-linux",
    "boot.json", "activate", "perl-5.40.0-env", "udev-rules", "firmware", "set-environment", "issue",
)
_TESTS = (
    "01-ssh-reachable.sh", "02-systemd-failed-units.sh", "03-disk-space.sh", "04-dns.sh", "05-ntp-sync.sh",
    "06-nixfleet-agent.sh", "07-firewall.sh", "08-backups-recent.sh",
)


def store_path(rng: random.Random, name: str) -> str:
    return "/nix/store/" + "".join(rng.choice(NIX32) for _ in range(32)) + "-" + name


class SimAgent:
    """The nixfleet agent process on one host: its checkout, its running command, its output.

    The agent talks to the dashboard only through :class:`Fleet`'s ``agent_*`` methods
    (registration, heartbeat, status result, output, progress, rejection), which drop
    messages while the agent is not connected.
    """

    def __init__(self, fleet: Fleet, host: SimHost, spec: HostSpec, desired: DesiredState, version: str) -> None:
        self.fleet = fleet
        self.host = host
        self.faults: set[str] = set(spec.faults)
        self.switch_seconds = spec.switch_seconds
        self.restart_seconds = spec.restart_seconds
        self.version = version
        self.os_version = ""
        self.nixpkgs_version = ""
        self.commit = desired.git_commit  # the checkout's HEAD
        self.lock_hash = desired.lock_hash
        self.system_commit = desired.git_commit  # what the running system was built from
        self.earlier_systems: list[str] = []  # the commits of older system generations (rollback goes back one)
        self.connected = False
        self.up = False  # process running (False: host down / agent dead)
        self.running: str | None = None
        self.pid = 0
        self.reported_system: dict[str, str] | None = None
        self.reported_tests: dict[str, str] | None = None
        self.switches = 0
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._beat: asyncio.TimerHandle | None = None
        self._wake: asyncio.TimerHandle | None = None
        self.rng = fleet.scenario.rng(f"agent:{host.id}")
        self._has_metrics = host.host_type == "nixos" or self.rng.random() < 0.5
        self._base = {"cpu": self.rng.uniform(2, 30), "ram": self.rng.uniform(20, 70),
                      "swap": self.rng.choice([0.0, 0.0, self.rng.uniform(0, 8)]), "load": self.rng.uniform(0.05, 1.5)}
        self._metrics = dict(self._base)

    @property
    def generation(self) -> str:
        return self.commit[:7]

    # -- process life ---------------------------------------------------------

    def start(self, delay: float = 0.0) -> None:
        """Start the agent process; it registers after ``delay`` seconds."""
        self.up = True
        self.reported_system = self.reported_tests = None
        self._cancel_wake()
        if delay > 0:
            self._wake = self.fleet.loop.call_later(delay, self._connect)
        else:
            self._connect()

    def _connect(self) -> None:
        self._wake = None
        if self.up and not self.connected:
            self.connected = True
            self.fleet.agent_registered(self)
            if self.fleet.scenario.heartbeat_after_command and self.switches:
                self.fleet.agent_heartbeat(self)  # a restarted agent reports at once (legacy repo mode)
            self.schedule_heartbeat(self.fleet.heartbeat_seconds * self.rng.uniform(0.05, 1.0))

    def shutdown(self) -> None:
        """Simulator stop: cancel every timer and task without telling the dashboard."""
        self.up = self.connected = False
        self._cancel_wake()
        if self._beat:
            self._beat.cancel()
        for task in [self._task, *self._side_tasks]:
            if task:
                task.cancel()

    def lose_dashboard(self, retry_after: float) -> None:
        """The dashboard went away (restart): reconnect after ``retry_after``; a running command goes on."""
        if self._beat:
            self._beat.cancel()
            self._beat = None
        self.connected = False
        self._cancel_wake()
        self._wake = self.fleet.loop.call_later(retry_after, self._connect)

    def disconnect(self) -> None:
        """The WebSocket to the dashboard closes (the process may live on)."""
        if self._beat:
            self._beat.cancel()
            self._beat = None
        if self.connected:
            self.connected = False
            self.fleet.agent_unregistered(self)

    def kill_process(self) -> None:
        """The process dies (host down, agent exit): connection and running command are gone."""
        self.up = False
        self._cancel_wake()
        if self._task and not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()
        self.running = None
        self.disconnect()

    def restart(self, down_for: float) -> None:
        """Exit now, be started again by the service manager after ``down_for`` seconds."""
        self.kill_process()
        if "never_reconnects" not in self.faults:
            self.start(down_for)

    def _cancel_wake(self) -> None:
        if self._wake:
            self._wake.cancel()
            self._wake = None

    def schedule_heartbeat(self, delay: float) -> None:
        if self._beat:
            self._beat.cancel()
        self._beat = self.fleet.loop.call_later(delay, self._on_beat)

    def _on_beat(self) -> None:
        self._beat = None
        if self.connected:
            self.fleet.agent_heartbeat(self)
            self.schedule_heartbeat(self.fleet.heartbeat_seconds)

    def next_metrics(self) -> dict[str, float] | None:
        if not self._has_metrics:
            return None
        m, base, r = self._metrics, self._base, self.rng
        busy = 35.0 if self.running else 0.0  # a build shows up in the load
        for key, noise, top in (("cpu", 4.0, 100.0), ("ram", 1.5, 99.0), ("load", 0.15, 64.0)):
            target = base[key] + (busy if key == "cpu" else busy / 20 if key == "load" else 0.0)
            m[key] = min(top, max(0.0, m[key] + 0.3 * (target - m[key]) + r.gauss(0, noise)))
        return {k: round(v, 2) if k == "load" else round(v, 1) for k, v in m.items()}

    # -- commands -------------------------------------------------------------

    def receive(self, op: str) -> None:
        """A ``{"type":"command"}`` frame arrives (the reply is asynchronous, like the network)."""
        self.fleet.loop.call_soon(self._handle, op)

    def _handle(self, op: str) -> None:
        if not self.connected:
            return
        if op == "stop":
            self._stop()
            return
        if self.running or "rejects_commands" in self.faults:  # the fault: a stray process the agent thinks it runs
            self.fleet.agent_rejected(self, "command already running", self.running or "switch", self.pid or 4242)
            return
        script = {
            "pull": self._pull, "switch": self._switch, "test": self._test, "rollback": self._rollback,
            "restart": self._restart, "reboot": self._reboot, "check-version": self._check_version,
            "refresh-git": self._refresh_git, "refresh-lock": self._refresh_lock,
            "refresh-system": self._refresh_system,
        }.get(op)
        if script is None:
            self.fleet.agent_status(self, op, 1, "unknown command")
            return
        self.running = op
        self.pid = self.rng.randint(2000, 60000)
        self._task = self.fleet.loop.create_task(self._run(op, script))

    async def _run(self, op: str, script: Callable[[], Any]) -> None:
        try:
            await script()
        finally:
            if self._task is asyncio.current_task():
                self.running = None
                self._task = None

    def _stop(self) -> None:
        if self.running and self._task:
            killed = self.running
            self._task.cancel()
            self.running = None
            self.out(f"⏹ Stopped {killed} (SIGTERM)")
            self.fleet.agent_status(self, killed, -1, "command failed")
        else:
            self.fleet.agent_status(self, "stop", 1, "no command running")

    def _scale(self) -> float:
        return self.fleet.scale * (5.0 if "slow" in self.faults else 1.0)

    async def _lines(self, lines: list[str], seconds: float) -> None:
        """Emit ``lines`` spread over ``seconds`` (scaled), in a handful of bursts."""
        if not lines:
            await asyncio.sleep(seconds * self._scale())
            return
        per = -(-len(lines) // min(len(lines), 12))
        chunks = [lines[i : i + per] for i in range(0, len(lines), per)]
        pause = seconds * self._scale() / len(chunks)
        for chunk in chunks:
            await asyncio.sleep(pause)
            for line in chunk:
                self.out(line)

    def out(self, line: str, *, late: bool = False) -> None:
        self.fleet.agent_output(self, line, late=late)

    def progress(self, phase: str, current: int, total: int, status: str) -> None:
        value: dict[str, Any] = {"current": current, "total": total, "status": status}
        if phase == "tests":
            value = {"current": current, "total": total, "results": None, "status": status}
        self.fleet.agent_progress(self, phase, value)

    def _now(self) -> str:
        return fmt_seconds(utcnow())

    async def _pull(self) -> None:
        repo = self.fleet.scenario.repo
        self.progress("pull", 0, 4, "in_progress")
        await self._lines([f"$ git -C {self.host.repo_dir} fetch origin {self.fleet.scenario.default_branch}"], 0.6)
        if "pull_fails" in self.faults:
            await self._lines([f"fatal: unable to access 'https://github.com/{repo}.git/': "
                               "Could not resolve host: github.com"], 0.8)
            self.progress("pull", 0, 4, "error")
            self.fleet.agent_status(self, "pull", 1, "command failed")
            return
        target = self.fleet.read_desired()
        branch = self.fleet.scenario.default_branch
        lines = []
        if target.git_commit[:7] != self.commit[:7]:
            lines += [f"From github.com:{repo}", f"   {self.commit[:7]}..{target.git_commit[:7]}  {branch:<10} -> origin/{branch}"]
        await self._lines(lines, 1.2)
        self.commit, self.lock_hash = target.git_commit, target.lock_hash
        await self._lines([f"HEAD is now at {target.git_commit[:7]} {target.message}"], 1.0)
        self.progress("pull", 4, 4, "complete")
        self.fleet.agent_status(self, "pull", 0, "Pull completed")

    def _switch_lines(self, fail: bool) -> tuple[list[str], list[str], list[str]]:
        rng = random.Random(f"{self.host.id}:{self.commit}:{self.switches}")
        name = self.host.id
        version = self.host.nixpkgs_version or "25.11"
        top = f"nixos-system-{name}-{version}" if self.host.host_type == "nixos" else "home-manager-generation"
        drvs = [store_path(rng, f"{d}.drv") for d in rng.sample(_DRVS, min(len(_DRVS), rng.randint(8, 14)))]
        drvs += [store_path(rng, f"{p}.drv") for p in rng.sample(_PKGS, rng.randint(6, 20))]
        drvs.append(store_path(rng, f"{top}.drv"))
        fetched = [store_path(rng, p) for p in rng.sample(_PKGS, rng.randint(8, 16))]
        build = ["building the system configuration..." if self.host.host_type == "nixos" else "Starting home-manager switch...",
                 f"these {len(drvs)} derivations will be built:"]
        build += [f"  {d}" for d in drvs]
        build.append(f"these {len(fetched)} paths will be fetched ({rng.uniform(20, 400):.2f} MiB download, "
                     f"{rng.uniform(100, 1600):.2f} MiB unpacked):")
        build += [f"  {p}" for p in fetched]
        copy = [f"copying path '{p}' from 'https://cache.nixos.org'..." for p in fetched]
        copy += [f"building '{d}'..." for d in drvs]
        if fail:
            bad = drvs[len(drvs) // 2]
            copy = copy[: len(copy) // 2] + [
                f"error: builder for '{bad}' failed with exit code 2;",
                "       last 4 log lines:",
                "       > checking for references to /build/ in /nix/store/...",
                "       > error: undefined reference to `EVP_MD_CTX_get0_md'",
                "       > collect2: error: ld returned 1 exit status",
                "       > make: *** [Makefile:412: all] Error 1",
                f"       For full logs, run 'nix log {bad}'.",
                f"error: 1 dependencies of derivation '{drvs[-1]}' failed to build",
            ]
            return build, copy, []
        if self.host.host_type == "nixos":
            activate = ["activating the configuration...", "setting up /etc...",
                        "reloading user units for admin...", "restarting sysinit-reactivation.target",
                        "the following new units were started: nixfleet-agent.service"]
        else:
            activate = ["Starting Home Manager activation", "Activating checkFilesChanged", "Activating checkLaunchAgents",
                        "Activating checkLinkTargets", "Activating writeBoundary", "Activating installPackages",
                        "replacing old 'home-manager-path'", "installing 'home-manager-path'",
                        "Activating linkGeneration", "Cleaning up orphan links from /Users/admin",
                        "Creating home file links in /Users/admin", "Activating onFilesChange",
                        "Activating setupLaunchAgents"]
        return build, copy, activate + ["✅ Switch completed successfully"]

    async def _switch(self) -> None:
        self.switches += 1
        fail = "switch_fails" in self.faults
        self.reported_system = status_check("working", "Switch in progress...", self._now())
        self.progress("system", 0, 3, "in_progress")
        cmd = (f"$ sudo nixos-rebuild switch --flake {self.host.repo_dir}#{self.host.id}" if self.host.host_type == "nixos"
               else f"$ home-manager switch --flake {self.host.repo_dir}#{self.host.id}")
        self.out(cmd)
        build, copy, activate = self._switch_lines(fail)
        if "garbled_output" in self.faults:
            copy = [*GARBLED_LINES, *copy, *GARBLED_LINES]
        total = self.switch_seconds or self.rng.uniform(20, 40)
        await self._lines(build, total * 0.15)
        if "offline_mid_deploy" in self.faults and self.switches == 1:
            await self._lines(copy[: len(copy) // 3], total * 0.2)
            self.kill_process()  # the host drops off the network mid-build; back only via set_online
            return
        await self._lines(copy, total * 0.6)
        if fail:
            self.out("❌ Switch failed (exit code 1)", late="late_output" in self.faults)
            self.reported_system = status_check("error", "Switch failed (exit 1)", self._now())
            self.progress("system", 0, 3, "error")
            self.fleet.agent_status(self, "switch", 1, "command failed")
            return
        await self._lines(activate, total * 0.25)
        self.progress("system", 3, 3, "complete")
        self.earlier_systems.append(self.system_commit)
        self.system_commit = self.commit
        self.reported_system = status_check("ok", "Switch successful (exit 0)", self._now())
        self.reported_tests = status_check("outdated", "Tests not run — run Test to verify system", self._now())
        self.fleet.agent_status(self, "switch", 0, "Switch completed successfully")
        if self.connected:
            self.fleet.agent_heartbeat(self)
        await asyncio.sleep(0.5 * self._scale())
        down = (self.restart_seconds or self.rng.uniform(1.5, 4.0)) * self._scale()
        self.restart(down)  # exit 101 → systemd/launchd restart
        if "offline_after_switch" in self.faults and self.switches == 1:
            # Networking breaks a moment after the agent is back (a few heartbeats later).
            self.fleet.loop.call_later(down + 3 * self.fleet.heartbeat_seconds, self.kill_process)

    async def _test(self) -> None:
        self.reported_tests = status_check("working", "Tests running...", self._now())
        self.progress("tests", 0, 8, "in_progress")
        self.out(f"Running {len(_TESTS)} tests for {self.host.id}...")
        for i, name in enumerate(_TESTS, 1):
            if "tests_fail" in self.faults and i == 2:
                await self._lines([f"[{i}/{len(_TESTS)}] {name} ... ❌ failed: 3 failed units"], 1.0)
                self.out(f"❌ Tests failed ({i - 1}/{len(_TESTS)} passed)")
                self.reported_tests = status_check("error", "Tests failed (exit 1)", self._now())
                self.progress("tests", 0, 8, "error")
                self.fleet.agent_status(self, "test", 1, "Tests failed (exit 1)")
                return
            await self._lines([f"[{i}/{len(_TESTS)}] {name} ... ✅ passed"], 1.0)
            self.progress("tests", i, 8, "in_progress" if i < 8 else "complete")
        self.out(f"✅ All tests passed ({len(_TESTS)}/{len(_TESTS)})")
        self.reported_tests = status_check("ok", "All tests passed", self._now())
        self.fleet.agent_status(self, "test", 0, "All tests passed")

    async def _rollback(self) -> None:
        if self.host.host_type == "nixos":
            gen = self.rng.randint(90, 400)
            lines = ["$ sudo nixos-rebuild --rollback switch", f"switching profile from version {gen} to {gen - 1}",
                     "activating the configuration...", "setting up /etc...", "reloading user units for admin...",
                     "restarting sysinit-reactivation.target"]
        else:
            lines = ["Activating previous home-manager generation", "Starting Home Manager activation",
                     "Activating linkGeneration", "Creating home file links in /Users/admin"]
        self.reported_system = status_check("working", "Rollback in progress...", self._now())
        if "rollback_fails" in self.faults:
            await self._lines(lines[:2] + ["error: activation script failed"], 5.0)
            self.out("❌ Rollback failed (exit code 1)")
            self.reported_system = status_check("error", "Rollback failed (exit 1)", self._now())
            self.fleet.agent_status(self, "rollback", 1, "command failed")
            return
        await self._lines(lines, 10.0)
        if self.earlier_systems:  # the previous generation runs again (the checkout stays where it is)
            self.system_commit = self.earlier_systems.pop()
        self.reported_system = status_check("ok", "Rollback successful (exit 0)", self._now())
        self.reported_tests = status_check("outdated", "Tests not run — run Test to verify system after rollback",
                                           self._now())
        self.fleet.agent_status(self, "rollback", 0, "Rollback completed")

    async def _restart(self) -> None:
        self.out("🔄 Restarting agent...")
        await asyncio.sleep(0.2 * self._scale())
        self.restart(self.rng.uniform(1.5, 4.0) * self._scale())

    async def _reboot(self) -> None:
        self.out("⚠️  Reboot command received. System will reboot in 3 seconds...")
        await asyncio.sleep(3.0 * self._scale())
        self.reboot_now()

    def direct_reboot(self) -> None:
        """``POST /api/hosts/{id}/reboot``: no lifecycle; whatever runs dies with the host 3 s later."""
        task = self.fleet.loop.create_task(self._reboot())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def reboot_now(self) -> None:
        self.kill_process()
        self.start(self.rng.uniform(30, 60) * self._scale())

    async def _check_version(self) -> None:
        await self._lines([f"nixfleet-agent {self.version}"], 0.3)
        self.fleet.agent_status(self, "check-version", 0, f"Agent version {self.version}")

    async def _refresh_git(self) -> None:
        await self._lines(["git status check is dashboard-side"], 0.2)
        self.fleet.agent_status(self, "refresh-git", 0, "git status check is dashboard-side")

    async def _refresh_lock(self) -> None:
        await self._lines([f"flake.lock sha256 {self.lock_hash[:16]}…"], 0.5)
        self.fleet.agent_status(self, "refresh-lock", 0, "Lock status refreshed")

    async def _refresh_system(self) -> None:
        await self._lines([f"$ nix build --dry-run .#nixosConfigurations.{self.host.id}.config.system.build.toplevel"], 5.0)
        if "refresh_system_fails" in self.faults:  # as the real agent in a container without /run/current-system
            msg = "Cannot read current system: lstat /run/current-system: no such file or directory"
            self.out(msg)
            self.reported_system = status_check("error", msg, self._now())
            self.fleet.agent_status(self, "refresh-system", 1, msg)
            return
        current = self.system_commit[:7] == self.commit[:7]
        msg = "System is current" if current else "System needs rebuild"
        self.out(msg)
        self.reported_system = status_check("ok" if current else "outdated", msg, self._now())
        self.fleet.agent_status(self, "refresh-system", 0, msg)


# --- the dashboard side ----------------------------------------------------------


class Sink(Protocol):
    """Where the fleet reports changes: one sync delta per ``change``, one legacy message per ``legacy``."""

    def change(self, kind: str, id: str = "", fields: dict[str, Any] | None = None,
               payload: dict[str, Any] | None = None) -> None: ...

    def legacy(self, kind: str, payload: dict[str, Any]) -> None: ...


@dataclass
class HostLog:
    """The newest ``<timestamp>-.log`` of a host (§3.9): every command's output in one file."""

    host: str
    started: datetime
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=20000))

    def text(self, last: int = 0) -> str:
        header = ["# Command: ", f"# Host: {self.host}", f"# Started: {fmt_local(self.started.replace(microsecond=0))}", ""]
        every = header + list(self.lines)
        if last > 0:
            every = every[-last:]
        return "".join(line + "\n" for line in every)


class Fleet:
    """Hosts, agents, lifecycle, events: the state behind the fake dashboard."""

    def __init__(self, scenario: Scenario, sink: Sink, desired_state: Callable[[], DesiredState], *,
                 timeout_scale: float | None = None) -> None:
        self.scenario = scenario
        self.sink = sink
        self.read_desired = desired_state
        self.scale = 1.0 / max(scenario.speed, 1e-6)
        self.timeout_scale = self.scale if timeout_scale is None else timeout_scale
        self.heartbeat_seconds = scenario.heartbeat_seconds
        self.dashboard_version = scenario.dashboard_version
        self.remote: DesiredState | None = None
        self.hosts: dict[str, SimHost] = {}
        self.active: dict[str, SimCommand] = {}  # the lifecycle map: host id → latest command
        self.commands: dict[str, SimCommand] = {}  # the commands table
        self.events: deque[dict[str, Any]] = deque(maxlen=5000)  # newest last
        self.logs: dict[str, HostLog] = {}
        self._restarted_at = datetime.min.replace(tzinfo=timezone.utc)
        self._event_id = 800 + scenario.rng("events").randint(0, 400)
        self._ids = CommandIds()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cleanup: asyncio.TimerHandle | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the simulated fleet is not started")
        return self._loop

    # -- start / stop -----------------------------------------------------------

    def start(self) -> None:
        """Create the scenario's hosts (current with the desired state) and connect the online agents."""
        self._loop = asyncio.get_running_loop()
        self.remote = self.read_desired()
        rng = self.scenario.rng("hosts")
        for spec in self.scenario.hosts:
            self._create(spec, rng)
        for host in self.sorted_hosts():
            if host.agent and host.agent.up:
                host.agent.start()
        self._schedule_cleanup()

    def stop(self) -> None:
        if self._cleanup:
            self._cleanup.cancel()
        for cmd in self.active.values():
            cmd.cancel_timers()
        for host in self.hosts.values():
            if host.agent:
                host.agent.shutdown()

    def _create(self, spec: HostSpec, rng: random.Random, *, fresh: bool = False) -> SimHost:
        """A host row + its agent; ``fresh`` = never registered before (nothing stored yet)."""
        now = utcnow()
        remote = self.remote or self.read_desired()
        macos = spec.host_type == "macos"
        version = spec.agent_version or self.dashboard_version
        host = SimHost(
            id=spec.name,
            host_type=spec.host_type,
            device_type=spec.device_type,
            location=spec.location,
            theme_color="#bb9af7" if macos else "#7aa2f7",
            repo_url=f"git@github.com:{self.scenario.repo}.git",
            repo_dir="/Users/admin/.local/share/nixfleet-agent/repo" if macos else "/var/lib/nixfleet-agent/repo",
        )
        agent = host.agent = SimAgent(self, host, spec, remote, version)
        agent.os_version = "15.2" if macos else "25.11"
        agent.nixpkgs_version = f"25.11.2025{rng.randint(1001, 1231)}.{rng.getrandbits(28):07x}"
        online = spec.online and "offline" not in spec.faults
        agent.up = online
        self.hosts[host.id] = host
        if fresh:
            return host
        host.agent_version, host.generation = version, agent.generation
        host.os_version, host.nixpkgs_version = agent.os_version, agent.nixpkgs_version
        switched = now - timedelta(hours=rng.uniform(2, 70))
        host.lock = lock_status(remote, remote.lock_hash, now)
        host.system = status_check("ok", "Last switch succeeded", fmt_seconds(switched))
        if rng.random() < 0.6:
            host.tests = status_check("ok", "Tests passed", fmt_seconds(switched + timedelta(minutes=3)))
            host.tests_generation = host.generation
        else:
            host.tests = status_check("outdated", "Tests need re-run after deploy", fmt_seconds(switched))
            host.tests_generation = ""
        if not online:
            host.last_seen = now - timedelta(days=rng.uniform(2, 12))
        return host

    def sorted_hosts(self) -> list[SimHost]:
        return [self.hosts[k] for k in sorted(self.hosts)]

    # -- hub: agent messages (hub.go) -------------------------------------------

    def agent_registered(self, agent: SimAgent) -> None:
        h = agent.host
        now = utcnow()
        h.status, h.last_seen, h.pending_command = "online", now, None
        h.agent_version, h.generation = agent.version, agent.generation
        h.os_version, h.nixpkgs_version = agent.os_version, agent.nixpkgs_version
        self.sink.change("host_updated", h.id, {
            "hostname": h.hostname, "host_type": h.host_type, "agent_version": h.agent_version,
            "os_version": h.os_version, "nixpkgs_version": h.nixpkgs_version, "generation": h.generation,
            "theme_color": h.theme_color, "location": h.location, "device_type": h.device_type,
            "repo_url": h.repo_url, "repo_dir": h.repo_dir, "status": "online", "pending_command": None,
            "last_seen": fmt_seconds(now),
        })
        cmd = self.active.get(h.id)
        if cmd and cmd.op == "switch" and cmd.status == "AWAITING_RECONNECT":
            self._finish(cmd, "SUCCESS", exit_code=0, event=("success", "switch completed successfully"))

    def agent_unregistered(self, agent: SimAgent) -> None:
        h = agent.host
        h.status = "offline"
        self.sink.change("host_updated", h.id, {"status": "offline"})
        cmd = self.active.get(h.id)
        if cmd and cmd.op == "switch" and cmd.status in ("EXECUTING", "RUNNING_WARNING"):
            self._await_reconnect(cmd)  # P1920: lost connection mid-switch counts as exit 0

    def agent_heartbeat(self, agent: SimAgent) -> None:
        if not agent.connected:
            return
        h, now = agent.host, utcnow()
        at = fmt_seconds(now)
        h.status, h.last_seen, h.generation = "online", now, agent.generation
        h.metrics = agent.next_metrics()
        git = git_status(self.remote, h.generation, now)
        h.lock = lock = lock_status(self.remote, agent.lock_hash, now)
        reported = agent.reported_system
        if reported is not None:
            if lock["status"] == "outdated" and reported["status"] == "ok":
                reported = status_check("outdated", "System outdated (flake.lock is behind)", at)
            h.system = reported
        if agent.reported_tests is not None:
            h.tests = agent.reported_tests
        cmd = self.active.get(h.id)
        if cmd and cmd.post_check_deferred and not cmd.terminal:
            self._post_check(cmd)
        update: dict[str, Any] = {"git": git, "lock": lock}
        # The delta gates what this heartbeat reported, not the stored value (hub.go:handleHeartbeat): an agent
        # that restarted reports no System, so a stored "error" shows as "not current" while Git/Lock lag.
        system = gate_system(reported, git, lock, at)
        if system is not None:
            update["system"] = system
        if agent.reported_tests is not None and h.tests is not None:
            update["tests"] = gate_tests_heartbeat(h.tests, system, git, lock, at)
        self.sink.change("host_updated", h.id, {
            "status": "online", "last_seen": at, "generation": h.generation, "metrics": h.metrics,
            "update_status": update,
        })

    def agent_status(self, agent: SimAgent, op: str, exit_code: int, message: str) -> None:
        """The agent's ``status`` result for ``op`` (hub.go:handleStatus)."""
        if not agent.connected:
            return
        h, now = agent.host, utcnow()
        at = fmt_seconds(now)
        h.generation = agent.generation
        if op in ("switch", "rollback"):
            word = "switch" if op == "switch" else "rollback"
            if exit_code == 0:
                h.system = status_check("ok", f"Last {word} succeeded", at)
                h.tests = status_check("outdated", "Tests need re-run after deploy", at)
            else:
                h.system = status_check("error", message or f"Last {word} failed", at)
        elif op == "test":
            h.tests = status_check("ok", "Tests passed", at) if exit_code == 0 else status_check("error", message, at)
            h.tests_generation = h.generation
        cmd = self.active.get(h.id)
        if cmd and cmd.op == op and not cmd.terminal and cmd.status != "AWAITING_RECONNECT":
            cmd.cancel_timers()
            cmd.watching = False
            if exit_code != 0:  # the event carries the agent's message alone ("command failed"), as the real one
                self._finish(cmd, "ERROR", exit_code=exit_code, error=message, event=("error", message))
            elif op == "switch":
                self._await_reconnect(cmd)
            else:
                cmd.post_check_deferred, cmd.deferred_exit_code, cmd.deferred_message = True, 0, message
        self.broadcast_host_status(h)
        if self.scenario.heartbeat_after_command:
            self.agent_heartbeat(agent)

    def agent_rejected(self, agent: SimAgent, reason: str, running: str, pid: int) -> None:
        h = agent.host
        cmd = self.active.get(h.id)
        message = f"Agent rejected command: {reason}"
        if cmd and not cmd.terminal:
            cmd.cancel_timers()
            self._finish(cmd, "ERROR", exit_code=1, error=f"{message} (agent running: {running})",
                         event=("error", f"{message} (agent running: {running})"))
        self.sink.change("event", payload={
            "category": "command", "details": {"current_command": running, "current_pid": pid}, "host_id": h.id,
            "level": "error", "message": message, "timestamp": fmt_seconds(utcnow()),
        })

    def agent_output(self, agent: SimAgent, line: str, *, late: bool = False) -> None:
        """Store ``line`` in the host's output log and stream it (``late``: a second after what follows it)."""
        if not agent.connected:
            return
        log = self.logs.get(agent.host.id)
        if log is None or log.started < self._restarted_at:
            log = self.logs[agent.host.id] = HostLog(agent.host.id, utcnow())
        log.lines.append(f"[{datetime.now().strftime('%H:%M:%S')}] {line}")
        frame = {"host_id": agent.host.id, "line": line, "command": "", "is_error": False}
        if late:
            self.loop.call_later(1.0, self.sink.legacy, "command_output", frame)
        else:
            self.sink.legacy("command_output", frame)

    def agent_progress(self, agent: SimAgent, phase: str, value: dict[str, Any]) -> None:
        if agent.connected:
            self.sink.legacy("operation_progress", {"host_id": agent.host.id, "progress": {phase: value}})

    # -- host views ---------------------------------------------------------------

    def update_status(self, h: SimHost, *, gated: bool) -> dict[str, Any]:
        now = utcnow()
        git = git_status(self.remote, h.generation, now)
        system, tests = h.system, h.tests
        if gated:
            system = gate_system(h.system, git, h.lock)
            tests = gate_tests_snapshot(h.tests, h.tests_generation, h.generation)
        return {"git": git, "lock": h.lock, "system": system, "tests": tests,
                "repo_url": h.repo_url, "repo_dir": h.repo_dir}

    def agent_outdated(self, h: SimHost) -> bool:
        return bool(h.agent_version) and h.agent_version != self.dashboard_version

    def snapshot_host(self, h: SimHost) -> dict[str, Any]:
        """The init/full_state host (§5.1)."""
        return {
            "id": h.id, "hostname": h.hostname, "host_type": h.host_type, "agent_version": h.agent_version,
            "agent_outdated": self.agent_outdated(h), "status": h.status,
            "last_seen": fmt_seconds(h.last_seen) if h.last_seen else "", "generation": h.generation,
            "pending_command": h.pending_command or "", "theme_color": h.theme_color, "location": h.location,
            "device_type": h.device_type,
            "available_ops": ["pull", "switch", "test", "reboot"] if h.status == "online" and not h.pending_command else [],
            "metrics": h.metrics, "update_status": self.update_status(h, gated=True),
        }

    def host_row(self, h: SimHost) -> dict[str, Any]:
        """The flat ``GET /api/hosts`` row (§3.1), nulls for empty columns."""
        return {
            "agent_version": h.agent_version or None, "comment": None, "generation": h.generation or None,
            "host_type": h.host_type, "hostname": h.hostname, "id": h.id,
            "last_seen": fmt_seconds(h.last_seen) if h.last_seen else None,
            "nixpkgs_version": h.nixpkgs_version, "os_version": h.os_version,
            "pending_command": h.pending_command, "status": h.status,
        }

    def full_state(self) -> dict[str, Any]:
        """The init/full_state payload (§4.4); empty collections are ``null``."""
        hour_ago = utcnow() - timedelta(hours=1)
        rows = [c.row() for c in reversed(self.commands.values())
                if c.status != "PENDING" and (c.status not in _PRUNED or c.created_at >= hour_ago)][:50]
        events = [{k: e[k] or "" for k in ("id", "timestamp", "category", "level", "actor", "host_id", "action", "message")}
                  | {"timestamp": fmt_nano(e["timestamp"])} for e in list(reversed(self.events))[:100]]
        hosts = [self.snapshot_host(h) for h in self.sorted_hosts()]
        return {"hosts": hosts or None, "commands": rows or None, "pipelines": None, "events": events or None}

    def broadcast_host_status(self, h: SimHost) -> None:
        """hub.go:BroadcastHostStatus: generation + full gated update_status."""
        self.sink.change("host_updated", h.id, {"generation": h.generation, "update_status": self.update_status(h, gated=True)})

    def validation_view(self, h: SimHost) -> ValidationView:
        git = git_status(self.remote, h.generation, utcnow())
        return ValidationView(online=h.online, pending=h.pending_command or "", git=git["status"],
                              lock=_state(h.lock), system=_state(h.system), agent_outdated=self.agent_outdated(h))

    # -- events ------------------------------------------------------------------

    def log_event(self, level: str, message: str, *, host_id: str = "", action: str = "", category: str = "ops",
                  actor: str = "system", details: dict[str, Any] | None = None) -> dict[str, Any]:
        self._event_id += 1
        now = utcnow()
        event = {"id": self._event_id, "timestamp": now, "category": category, "level": level, "actor": actor,
                 "host_id": host_id, "action": action, "message": message, "details": details}
        self.events.append(event)
        self.sink.change("event", payload=event | {"timestamp": fmt_seconds(now)})
        return event

    def event_json(self, e: dict[str, Any]) -> dict[str, Any]:
        """``/api/events`` shape: optional keys omitted when empty."""
        out = {"id": e["id"], "timestamp": fmt_nano(e["timestamp"]), "category": e["category"], "level": e["level"],
               "message": e["message"]}
        for key in ("actor", "host_id", "action", "details"):
            if e[key]:
                out[key] = e[key]
        return out

    def recent_events(self, limit: int, host_id: str | None = None) -> list[dict[str, Any]]:
        out = []
        for e in reversed(self.events):
            if host_id is None or e["host_id"] == host_id:
                out.append(self.event_json(e))
                if len(out) >= limit:
                    break
        return out

    # -- lifecycle (lifecycle.go) ---------------------------------------------------

    def _broadcast(self, cmd: SimCommand) -> None:
        body = cmd.to_json()
        if cmd.terminal:
            self.sink.change("command_finished", cmd.id, fields=body)
        elif cmd.started_at is None:
            self.sink.change("command_progress", cmd.id, fields=body)
        else:
            self.sink.change("command_started", cmd.id, payload=body)
        self.sink.legacy("command_state", {"host_id": cmd.host_id, "command": body})

    def _event(self, cmd: SimCommand, level: str, message: str) -> None:
        self.log_event(level, message, host_id=cmd.host_id, action=f"op:{cmd.op}")

    def set_pending(self, h: SimHost, op: str | None) -> None:
        h.pending_command = op
        self.sink.change("host_updated", h.id, {"pending_command": op})

    def execute_op(self, host_id: str, op: str, *, force: bool = False) -> OpResult:
        """lifecycle.go:ExecuteOp for one host; every broadcast happens before this returns (§4.7)."""
        spec = OPS.get(op)
        if spec is None:
            return OpResult(host_id, "blocked", code="unknown_op", message=f"Unknown operation: {op}")
        current = self.active.get(host_id)
        if current and not current.terminal:
            return OpResult(host_id, "blocked", code="command_pending", message=f"Command '{current.op}' already running")
        h = self.hosts[host_id]
        now = utcnow()
        cmd = SimCommand(self._ids.new(now), host_id, op, now)
        self.commands[cmd.id] = cmd
        while len(self.commands) > 5000:
            self.commands.pop(next(iter(self.commands)))
        if current:
            current.cancel_timers()
        self.active[host_id] = cmd
        cmd.status = "VALIDATING"
        self._broadcast(cmd)
        self._event(cmd, "info", f"Validating {op}")
        if not force:
            blocked = validate_op(op, self.validation_view(h))
            if blocked:
                cmd.status, cmd.error, cmd.row_finished_at = "BLOCKED", blocked[1], utcnow()
                self._broadcast(cmd)
                self._event(cmd, "warn", f"Blocked: {blocked[1]}")
                return OpResult(host_id, "blocked", code=blocked[0], message=blocked[1])
        cmd.started_at = utcnow()
        cmd.status = "EXECUTING"
        self._broadcast(cmd)
        self._event(cmd, "info", f"Executing {op}")
        if spec.executor == "dashboard":
            self._finish(cmd, "SUCCESS", event=("success", f"{op} completed successfully"), clear_pending=False)
            return OpResult(host_id, "SUCCESS", command_id=cmd.id)
        self.set_pending(h, op)
        agent = h.agent
        if agent is None or not agent.connected or "send_fails" in agent.faults:
            message = "Failed to send command to agent"
            self._finish(cmd, "ERROR", exit_code=1, error=message, event=("error", message), keep=True)
            return OpResult(host_id, "blocked", code="send_failed", message=message)
        agent.receive(op)
        self._start_watcher(cmd, spec.warn_seconds, spec.hard_seconds)
        return OpResult(host_id, "EXECUTING", command_id=cmd.id)

    def _finish(self, cmd: SimCommand, status: str, *, exit_code: int | None = None, error: str = "",
                event: tuple[str, str] | None = None, keep: bool = False, clear_pending: bool = True) -> None:
        cmd.cancel_timers()
        cmd.watching = False
        cmd.status, cmd.error = status, error
        if exit_code is not None:
            cmd.exit_code = exit_code
        cmd.finished_at = cmd.row_finished_at = utcnow()
        if not keep and self.active.get(cmd.host_id) is cmd:
            del self.active[cmd.host_id]
        self._broadcast(cmd)
        if event:
            self._event(cmd, *event)
        h = self.hosts.get(cmd.host_id)
        if clear_pending and h is not None:
            self.set_pending(h, None)

    def _post_check(self, cmd: SimCommand) -> None:
        h = self.hosts[cmd.host_id]
        failure = ""
        if cmd.op == "pull" and _state(h.lock) != "ok":
            failure = "Lock status not ok after pull"
        elif cmd.op == "rollback" and _state(h.system) != "ok":
            failure = "System status not ok after rollback"
        if failure:
            self._finish(cmd, "PARTIAL", exit_code=0, error=failure, event=("warn", f"Partial: {failure}"))
        else:
            self._finish(cmd, "SUCCESS", exit_code=0, event=("success", f"{cmd.op} completed successfully"))

    def _await_reconnect(self, cmd: SimCommand) -> None:
        cmd.cancel_timers()
        cmd.watching = False
        cmd.status = "AWAITING_RECONNECT"
        cmd.reconnect_deadline = utcnow() + timedelta(seconds=RECONNECT_SECONDS * self.timeout_scale)
        self._broadcast(cmd)
        self._event(cmd, "info", "Switch completed - waiting for agent restart")
        cmd.timers.append(self.loop.call_later(RECONNECT_SECONDS * self.timeout_scale, self._reconnect_timeout, cmd))

    def _reconnect_timeout(self, cmd: SimCommand) -> None:
        if cmd.status == "AWAITING_RECONNECT" and self.active.get(cmd.host_id) is cmd:
            self._finish(cmd, "TIMEOUT", error="Agent did not reconnect in time",
                         event=("error", "Reconnect timeout - verify host manually"))

    def _start_watcher(self, cmd: SimCommand, warn: float, hard: float) -> None:
        extra = cmd.timeout_extended_ns / 1e9
        cmd.cancel_timers()
        cmd.watching = True
        cmd.timers.append(self.loop.call_later((warn + extra) * self.timeout_scale, self._warn, cmd))
        cmd.timers.append(self.loop.call_later((hard + extra) * self.timeout_scale, self._hard, cmd))

    def _warn(self, cmd: SimCommand) -> None:
        if cmd.status == "EXECUTING":
            cmd.status, cmd.warning_at = "RUNNING_WARNING", utcnow()
            self._broadcast(cmd)
            self._event(cmd, "warn", f"{cmd.op} is taking longer than expected")

    def _hard(self, cmd: SimCommand) -> None:
        if cmd.status in ("EXECUTING", "RUNNING_WARNING"):
            cmd.status, cmd.hard_timeout_at = "TIMEOUT_PENDING", utcnow()
            self._broadcast(cmd)
            self._event(cmd, "error", f"{cmd.op} hard timeout reached - action required")

    def kill(self, host_id: str, signal: str) -> str | None:
        """``/kill`` (§3.7): the error text for a 409, else ``None``. Nothing is ever stopped."""
        cmd = self.active.get(host_id)
        if cmd is None:
            return "No active command for host"
        h = self.hosts[host_id]
        if h.agent is None or not h.agent.connected:
            cmd.cancel_timers()
            cmd.status, cmd.exit_code, cmd.error = "ERROR", 1, "Failed to send kill signal"
            cmd.finished_at = cmd.row_finished_at = utcnow()
            self._broadcast(cmd)
            return "Failed to send kill signal"
        cmd.status, cmd.kill_initiated_at, cmd.kill_signal = "KILLING", utcnow(), signal
        self._broadcast(cmd)
        self._event(cmd, "warn", f"Sending {signal} to PID")
        h.agent.receive("kill")
        return None

    def extend_timeout(self, host_id: str, minutes: int) -> str | None:
        """``timeout-action wait``: ``None`` on success, the 409 text, or ``"panic"`` (→ HTTP 500)."""
        cmd = self.active.get(host_id)
        if cmd is None:
            return "No active command for host"
        cmd.status = "EXECUTING"
        if not cmd.watching:
            return "panic"  # closing the stopped watcher's channel panics after the status flip (§3.8)
        cmd.timeout_extended_ns += minutes * 60 * 1_000_000_000
        self._broadcast(cmd)
        spec = OPS[cmd.op]
        self._start_watcher(cmd, spec.warn_seconds, spec.hard_seconds)
        return None

    def cancel(self, host_id: str) -> str | None:
        """``timeout-action ignore``: SKIPPED, released; the host keeps running whatever it runs."""
        cmd = self.active.get(host_id)
        if cmd is None:
            return "No active command for host"
        self._finish(cmd, "SKIPPED", error="Cancelled by user", event=("warn", "Cancelled by user"))
        return None

    def command_states(self) -> dict[str, Any]:
        return {host: cmd.to_json() for host, cmd in sorted(self.active.items())}

    # -- remote desired state ---------------------------------------------------

    def remote_changed(self) -> None:
        """A refetched ``version.json``: Git/Lock recomputed for every connected host, one delta each."""
        self.remote = self.read_desired()
        now = utcnow()
        for h in self.sorted_hosts():
            if h.agent and h.agent.connected:
                h.lock = lock_status(self.remote, h.agent.lock_hash, now)
                self.broadcast_host_status(h)

    def drop_lock_hash(self) -> None:
        """Publish a ``version.json`` without ``lockHash`` (§8 #20): Lock turns ``error`` everywhere."""
        remote = self.remote or self.read_desired()
        self.remote = DesiredState(remote.git_commit, "", remote.message)
        now = utcnow()
        for h in self.sorted_hosts():
            if h.agent and h.agent.connected:
                h.lock = lock_status(self.remote, h.agent.lock_hash, now)
                self.broadcast_host_status(h)

    # -- housekeeping -----------------------------------------------------------

    def _schedule_cleanup(self) -> None:
        self._cleanup = self.loop.call_later(60.0 * self.timeout_scale, self._stale_cleanup)

    def _stale_cleanup(self) -> None:
        """hub.go:cleanupStaleCommands: release hosts whose pending command outlived its agent."""
        threshold = utcnow() - timedelta(seconds=max(self.heartbeat_seconds * 120, 300) * self.timeout_scale)
        for h in self.sorted_hosts():
            if (h.pending_command and (h.last_seen is None or h.last_seen < threshold)
                    and not (h.agent and h.agent.connected) and h.id not in self.active):
                h.pending_command, h.status = None, "offline"
                self.sink.change("host_updated", h.id, {"status": "offline", "pending_command": None})
        self._schedule_cleanup()

    def restart(self) -> None:
        """A dashboard restart: lifecycle map empty, every host offline, agents reconnect on their own."""
        for cmd in self.active.values():
            cmd.cancel_timers()
        self.active.clear()
        self._restarted_at = utcnow()
        for h in self.sorted_hosts():
            if h.status == "online":
                h.status = "offline"
            if h.agent and h.agent.connected:
                h.agent.lose_dashboard(h.agent.rng.uniform(0.5, 3.0) * self.scale)

    # -- control ------------------------------------------------------------------

    def add_host(self, spec: HostSpec) -> SimHost:
        """A new host whose agent (if ``spec.online``) registers right away (no ``host_added``, §4.5)."""
        if spec.name in self.hosts:
            raise ValueError(f"host {spec.name!r} exists")
        bad = set(spec.faults) - HOST_FAULTS - RUNTIME_FAULTS
        if bad:
            raise ValueError(f"unknown fault(s) {sorted(bad)}")
        host = self._create(spec, self.scenario.rng(f"host:{spec.name}"), fresh=True)
        if host.agent and host.agent.up:
            host.agent.start()
        return host

    def upsert_manual(self, hostname: str, host_type: str, location: str, device_type: str, theme_color: str) -> None:
        """``POST /api/hosts``: create (offline, no agent) or overwrite type/location/device/color; ``host_added``."""
        h = self.hosts.get(hostname)
        if h is None:
            h = self.hosts[hostname] = SimHost(id=hostname, repo_url=f"git@github.com:{self.scenario.repo}.git")
        h.host_type, h.location, h.device_type, h.theme_color = host_type, location, device_type, theme_color
        self.sink.change("host_added", hostname, payload={
            "device_type": device_type, "host_type": host_type, "hostname": hostname, "id": hostname,
            "location": location, "pending_command": h.pending_command, "status": h.status, "theme_color": theme_color,
        })

    def remove_host(self, host_id: str) -> None:
        """Stop the host's agent and delete the host (``host_removed``)."""
        h = self.hosts[host_id]
        if h.agent:
            h.agent.kill_process()
        cmd = self.active.pop(host_id, None)
        if cmd:
            cmd.cancel_timers()
        del self.hosts[host_id]
        self.sink.change("host_removed", host_id)

