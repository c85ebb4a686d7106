"""Shared value types of the core: hosts, commands, update PRs, CI verdicts.

Plain frozen-ish dataclasses, no I/O and no Textual. The dashboard client and the
fleet model produce :class:`Host` / :class:`Command`; the GitHub client produces
:class:`UpdatePR`; the engine, the TUI and the headless mode read them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any


class CompartmentState(str, enum.Enum):
    """Colour state of one host compartment (dashboard contract §5.3)."""

    OK = "ok"
    OUTDATED = "outdated"
    ERROR = "error"
    WORKING = "working"
    UNKNOWN = "unknown"
    UNREACHABLE = "unreachable"  # SSH backend, Agent only: the host did not answer (the reason is the message)

    @classmethod
    def parse(cls, value: Any) -> "CompartmentState":
        try:
            return cls(str(value).lower())
        except ValueError:
            return cls.UNKNOWN


COMPARTMENTS: tuple[str, ...] = ("agent", "git", "lock", "system", "tests")


@dataclass(frozen=True, slots=True)
class StatusCheck:
    state: CompartmentState = CompartmentState.UNKNOWN
    message: str = ""
    checked_at: str = ""

    @classmethod
    def from_json(cls, data: Any) -> "StatusCheck | None":
        if not isinstance(data, dict):
            return None
        return cls(
            CompartmentState.parse(data.get("status")),
            str(data.get("message") or ""),
            str(data.get("checked_at") or ""),
        )


UNKNOWN_CHECK = StatusCheck()

# What a host is, in the dashboard's words (``device_type``, ``location``): the deploy planner's
# default tiers (core/plan.py) and the SSH backend's ``[hosts.NAME] role`` (config.py) use them.
WORKSTATION_TYPES = frozenset({"desktop", "laptop", "gaming", "workstation", "notebook", "pc"})
SERVER_TYPES = frozenset({"server", "vm", "vps"})
LOCATIONS = {  # as written → the tier's location
    "home": "home",
    "work": "work",
    "office": "work",
    "cloud": "cloud",
    "vps": "cloud",
    "datacenter": "cloud",
    "dc": "cloud",
}

AVAILABLE_OPS: tuple[str, ...] = ("pull", "switch", "test", "reboot")

TERMINAL_COMMAND_STATES = frozenset(
    {"SUCCESS", "ERROR", "TIMEOUT", "SKIPPED", "BLOCKED", "PARTIAL", "KILLED", "STALE_BINARY", "SUSPICIOUS",
     "ORPHANED"}  # ORPHANED: given up after a dashboard restart (§6.4, CORE-003 recovery)
)


@dataclass(frozen=True, slots=True)
class Command:
    """A lifecycle command on one host (dashboard contract §6.3)."""

    id: str
    host_id: str
    op: str
    status: str
    created_at: str = ""
    started_at: str = ""
    finished_at: str = ""
    exit_code: int | None = None
    error: str = ""
    reconnect_deadline: str = ""

    @property
    def terminal(self) -> bool:
        return self.status.upper() in TERMINAL_COMMAND_STATES

    @property
    def succeeded(self) -> bool:
        return self.status.upper() == "SUCCESS"


@dataclass(frozen=True, slots=True)
class Host:
    """One host of the fleet, normalised from the dashboard's several shapes (§5)."""

    id: str
    hostname: str = ""
    host_type: str = "nixos"
    device_type: str = ""
    location: str = ""
    status: str = "unknown"  # online | offline | running | unknown
    last_seen: str = ""
    generation: str = ""
    agent_version: str = ""
    agent_outdated: bool = False
    pending_command: str = ""  # "" when idle
    theme_color: str = ""
    metrics: dict[str, float] | None = None
    git: StatusCheck = UNKNOWN_CHECK
    lock: StatusCheck = UNKNOWN_CHECK
    system: StatusCheck = UNKNOWN_CHECK
    tests: StatusCheck = UNKNOWN_CHECK
    repo_url: str = ""
    repo_dir: str = ""
    os_version: str = ""  # only from registration deltas and GET /api/hosts
    nixpkgs_version: str = ""
    reboot_needed: bool | None = None  # SSH backend: booted vs current kernel/initrd/modules; None = unknown
    agent_check: StatusCheck | None = None  # SSH backend: reachability (None: derived from the agent version)
    system_generation: int | None = None  # SSH backend: the system profile's generation number (system-N-link)

    @property
    def name(self) -> str:
        return self.hostname or self.id

    @property
    def online(self) -> bool:
        return self.status in ("online", "running")

    @property
    def busy(self) -> bool:
        return bool(self.pending_command)

    @property
    def available_ops(self) -> tuple[str, ...]:
        """The dashboard's UI hint (§5.1): only for status ``online`` (not legacy ``running``) and idle."""
        return AVAILABLE_OPS if self.status == "online" and not self.pending_command else ()

    @property
    def agent(self) -> StatusCheck:
        """The fifth compartment, derived from the agent version (§5.3); the SSH backend reports its own
        (reachable, unreachable with the reason, or a refused host key)."""
        if self.agent_check is not None:
            return self.agent_check
        if not self.agent_version:
            return StatusCheck(CompartmentState.UNKNOWN, "Agent version unknown")
        if self.agent_outdated:
            return StatusCheck(CompartmentState.ERROR, f"Agent {self.agent_version} differs from dashboard")
        return StatusCheck(CompartmentState.OK, f"Agent {self.agent_version}")

    def compartment(self, name: str) -> StatusCheck:
        return getattr(self, name)

    def with_changes(self, **changes: Any) -> "Host":
        return replace(self, **changes)


class CIVerdict(str, enum.Enum):
    """CI verdict for a head SHA (GitHub contract §2.9)."""

    GREEN = "green"
    RED = "red"
    PENDING = "pending"
    NO_CI = "no-ci"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CIStatus:
    verdict: CIVerdict
    summary: str = ""  # e.g. "2/3 checks passed; 'build hosts' failed"
    failing: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdatePR:
    """An open pull request that updates flake.lock."""

    number: int
    title: str
    author: str
    html_url: str
    head_ref: str
    head_sha: str
    base_ref: str
    base_sha: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    node_id: str = ""
    labels: tuple[str, ...] = ()
    draft: bool = False
    body: str = ""
    # Filled by PR detail:
    files: tuple[str, ...] = ()  # changed file paths (empty = not fetched yet)
    mergeable: bool | None = None
    mergeable_state: str = "unknown"
    ci: CIStatus | None = None
    superseded_by: int | None = None  # number of the newer update PR, if any
    # Lifecycle (from the single-PR endpoint; list items are always open):
    state: str = "open"  # open | closed
    merged: bool = False
    merge_commit_sha: str = ""  # only once merged (before, GitHub's value is a test merge)

    @property
    def lock_only(self) -> bool | None:
        """True when every changed file is a flake.lock; None while files are unknown."""
        if not self.files:
            return None
        return all(f == "flake.lock" or f.endswith("/flake.lock") for f in self.files)

    def with_changes(self, **changes: Any) -> "UpdatePR":
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class RateBudget:
    """Primary GitHub rate-limit budget as last reported by response headers."""

    limit: int | None = None
    remaining: int | None = None
    reset_epoch: int | None = None
    resource: str = "core"


@dataclass(slots=True)
class Notification:
    """Something worth telling the admin (toast, bell, webhook)."""

    title: str
    message: str
    severity: str = "information"  # information | warning | error
    tags: list[str] = field(default_factory=list)
    click: str = ""  # a link to open (ntfy ``Click``), e.g. the PR
    event_id: str = ""  # stable id: the outbox sends one notification per id (empty: derived from the text)
