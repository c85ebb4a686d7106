"""The fleet backend seam: what the core needs from a way of reaching the hosts.

Two backends implement :class:`FleetBackend`: the NixFleet dashboard client
(:class:`~nfu_tui.clients.dashboard.DashboardClient`) and the SSH backend
(:class:`~nfu_tui.backends.ssh.SshFleet`); ``[fleet] backend = "nixfleet" | "ssh"`` picks
one (:func:`nfu_tui.clients.factory.fleet_backend`). The engine, the service, the live
fleet, rollback and preview talk to this interface only:

* **the live stream** (:meth:`~FleetBackend.follow`): stream events applied to a
  :class:`~nfu_tui.clients.fleet.FleetModel` (hosts, their compartments, commands,
  output), :meth:`~FleetBackend.full_state` once, :meth:`~FleetBackend.request_state`
  to ask for a fresh one;
* **operations** (:meth:`~FleetBackend.dispatch`): one result per host, with the id
  of the command it started, followed on the stream to its end;
  :meth:`~FleetBackend.timeout_action` frees (``ignore``), stops (``kill``) or extends
  (``wait``) a running command; :meth:`~FleetBackend.command_states`,
  :meth:`~FleetBackend.events` and :meth:`~FleetBackend.output` are the evidence a lost
  answer or a missed output tail is searched in;
* **a session** (``needs_password``, :meth:`~FleetBackend.login`): the dashboard's
  login; nothing to do for SSH;
* **what the texts need** (:attr:`~FleetBackend.info`, a :class:`BackendInfo`): the
  backend's short label and the noun sentences use, and the capabilities where the
  backends differ. With ``backend = "ssh"`` nothing says "dashboard".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from nfu_tui.clients._dashboard_protocol import DispatchResult
    from nfu_tui.clients.fleet import FleetChange, FleetModel, FleetSnapshot
    from nfu_tui.models import Command


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What the user-facing texts say about a backend, and where backends differ."""

    kind: str
    """``fleet.backend``: ``nixfleet`` or ``ssh``."""
    label: str
    """Short name for the header and status lines: ``dashboard``, ``ssh``."""
    title: str
    """The label as a heading: ``Dashboard``, ``SSH``."""
    noun: str
    """The backend in a sentence: "no switch command appeared on {noun}"."""
    stops_commands: bool
    """``timeout_action`` ``ignore``/``kill`` really stops the command on the host (the dashboard's cannot)."""
    unreachable_title: str
    """The title of the error when no fleet state comes."""

    @property
    def subject(self) -> str:
        """:attr:`noun` at the start of a sentence."""
        return self.noun[:1].upper() + self.noun[1:]


NIXFLEET = BackendInfo(kind="nixfleet", label="dashboard", title="Dashboard", noun="the dashboard",
                       stops_commands=False, unreachable_title="Dashboard unreachable")
SSH = BackendInfo(kind="ssh", label="ssh", title="SSH", noun="the SSH backend",
                  stops_commands=True, unreachable_title="SSH hosts unreachable")


def info_for(config: Any) -> BackendInfo:
    """The :class:`BackendInfo` of the backend a configuration (``fleet.backend``) picks."""
    return SSH if config.uses_ssh else NIXFLEET


def info_of(backend: object) -> BackendInfo:
    """The backend's :class:`BackendInfo`; a stand-in without one (tests' fakes) is taken for the dashboard,
    and so is no backend at all (the configuration's default)."""
    info = getattr(backend, "info", None)
    return info if isinstance(info, BackendInfo) else NIXFLEET


@runtime_checkable
class FleetBackend(Protocol):
    """See the module docstring. Both backends satisfy it (tests/test_backend_seam.py checks)."""

    info: BackendInfo

    @property
    def needs_password(self) -> bool:
        """A password must be supplied (:meth:`set_password`) before :meth:`login`."""

    def set_password(self, password: Any) -> None: ...

    async def login(self, *, totp_code: str | None = None) -> None: ...

    def follow(self, model: FleetModel) -> AsyncIterator[tuple[Any, list[FleetChange]]]:
        """Apply the fleet's stream to ``model``; yields each event with the changes it made."""

    async def full_state(self) -> FleetSnapshot:
        """The whole fleet once (``nfu-tui status``)."""

    async def request_state(self) -> bool:
        """Ask for a fresh full state on the stream (False: not possible now)."""

    async def dispatch(self, op: str, hosts: list[str], *, force: bool = False,
                       totp: str | None = None) -> list[DispatchResult]:
        """Start ``op`` on each host: one result per host (``started`` with its command id, ``blocked``, ``error``)."""

    async def timeout_action(self, host: str, action: str, minutes: int | None = None) -> None:
        """``wait`` (more time), ``ignore`` (free the host) or ``kill`` for the host's running command."""

    async def command_states(self) -> dict[str, Command]:
        """Host id → its latest command (evidence for a dispatch whose answer was lost)."""

    async def events(self, limit: int = 100, host: str | None = None) -> list[dict[str, Any]]:
        """The fleet's (or a host's) recent events, newest first (evidence, as above)."""

    async def output(self, host: str, lines: int = 500, *, bare: bool = False) -> list[str]:
        """A host's recent output, sanitized (the tail a stream missed)."""

    async def aclose(self) -> None: ...


__all__ = ["NIXFLEET", "SSH", "BackendInfo", "FleetBackend", "info_for", "info_of"]
