"""What the app hands its screens after coalescing the service's events.

The fleet service calls back once per dashboard change (50+/s with a big fleet). The
app feeds each event to an :class:`EventBatcher` and, at most every flush interval,
publishes one :class:`ServiceUpdate` to its screens: host ids are merged into a set
(the latest state is read from the service), deploy events and notifications are kept
in order and never merged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ServiceUpdate:
    """Coalesced changes since the previous flush."""

    hosts: frozenset[str] = frozenset()
    all_hosts: bool = False  # after init/resync: re-read every host
    prs: bool = False
    status: bool = False
    output: frozenset[str] = frozenset()
    deploy: tuple[Any, ...] = ()
    notifications: tuple[Any, ...] = ()
    automation: bool = False  # the automation state changed (published by the app, not the service)

    @property
    def fleet(self) -> bool:
        return self.all_hosts or bool(self.hosts)


@dataclass(slots=True)
class EventBatcher:
    """Accumulates ``ServiceEvent``-shaped objects (``kind``, ``host_ids``, ``payload``)."""

    _hosts: set[str] = field(default_factory=set)
    _all_hosts: bool = False
    _prs: bool = False
    _status: bool = False
    _output: set[str] = field(default_factory=set)
    _deploy: list[Any] = field(default_factory=list)
    _notifications: list[Any] = field(default_factory=list)
    events: int = 0

    def add(self, event: Any) -> None:
        self.events += 1
        kind = event.kind
        if kind == "fleet":
            if event.host_ids:
                self._hosts.update(event.host_ids)
            else:
                self._all_hosts = True
        elif kind == "prs":
            self._prs = True
        elif kind == "status":
            self._status = True
        elif kind == "output":
            self._output.update(event.host_ids)
        elif kind == "deploy":
            self._deploy.append(event.payload)
        elif kind == "notify":
            self._notifications.append(event.payload)

    @property
    def empty(self) -> bool:
        return not (
            self._hosts or self._all_hosts or self._prs or self._status or self._output or self._deploy
            or self._notifications
        )

    def take(self) -> ServiceUpdate:
        """The accumulated update; the batcher starts over empty."""
        update = ServiceUpdate(
            hosts=frozenset(() if self._all_hosts else self._hosts),
            all_hosts=self._all_hosts,
            prs=self._prs,
            status=self._status,
            output=frozenset(self._output),
            deploy=tuple(self._deploy),
            notifications=tuple(self._notifications),
        )
        self._hosts, self._all_hosts, self._prs, self._status = set(), False, False, False
        self._output, self._deploy, self._notifications = set(), [], []
        return update
