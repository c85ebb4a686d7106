"""Deploy planning: which hosts get the update, in which order, and why the others don't.

Pure functions over :class:`~nfu_tui.models.Host` and the configuration; no I/O. The
plan is a frozen value the UI shows before anything happens, the engine executes and
the journal stores (``to_dict``/``from_dict``) so that a resumed run follows exactly the
plan that was confirmed.

Rules (the product owner's issue, step 1):

* Candidates are all dashboard hosts, or the ``targets`` selection. Named targets the
  dashboard does not know, and configured hosts it does not know, are reported.
* Held hosts are skipped; ``auto_update = false`` hosts are skipped for automatic runs.
* Offline hosts by ``deploy_strategy``: ``all`` keeps them *queued* (deployed when they
  come back online while nfu-tui runs), ``online-only`` skips them, ``none`` deploys no
  host at all (merge only).
* Order: canaries first (their own wave), then explicit ``priority`` (lower first; hosts
  without a priority come after every host with one), then the default tiering, then the
  name (natural order: ``hsb2`` before ``hsb10``).

Default tiering (least critical first): workstations (desktop, laptop, gaming, and
macOS machines that are not servers) → home servers → work servers → hosts whose kind
or location is unknown → cloud servers. Cloud servers are last because they are the
most likely to serve others.

An offline canary cannot gate anything: it is queued/skipped like any offline host and
the plan carries a warning saying so.

A **converge** plan (``lag`` given) merges nothing: it brings the hosts whose
generation is behind the default branch's head (``head_sha``, the target) to it, with
the same waves, canaries and queueing. Hosts that are not behind (at the head, ahead of
it, or where it cannot be told) are skipped saying so; :class:`HostLag` per host comes
from :func:`nfu_tui.core.converge.fleet_lag`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Mapping

from nfu_tui.backends.base import info_for
from nfu_tui.config import Config, HostConfig
from nfu_tui.models import LOCATIONS, SERVER_TYPES, WORKSTATION_TYPES, Host

STRATEGIES = ("all", "online-only", "none")


class Tier(enum.IntEnum):
    """Default deploy tier (lower deploys first)."""

    WORKSTATION = 0
    HOME_SERVER = 1
    WORK_SERVER = 2
    OTHER = 3
    CLOUD_SERVER = 4

    @property
    def label(self) -> str:
        return _TIER_LABELS[self]


_TIER_LABELS = {
    Tier.WORKSTATION: "workstation",
    Tier.HOME_SERVER: "home server",
    Tier.WORK_SERVER: "work server",
    Tier.OTHER: "other",
    Tier.CLOUD_SERVER: "cloud server",
}


def tier_of(host: Host) -> Tier:
    """The default tier of a host, from the dashboard's ``device_type``/``location``/``host_type``."""
    device = host.device_type.strip().lower()
    location = LOCATIONS.get(host.location.strip().lower(), "")
    if device in WORKSTATION_TYPES:
        return Tier.WORKSTATION
    if device in SERVER_TYPES:
        return {"home": Tier.HOME_SERVER, "work": Tier.WORK_SERVER, "cloud": Tier.CLOUD_SERVER}.get(location, Tier.OTHER)
    if host.host_type.strip().lower() == "macos":
        return Tier.WORKSTATION
    return Tier.CLOUD_SERVER if location == "cloud" else Tier.OTHER


class SkipReason(str, enum.Enum):
    """Why a host is not deployed now."""

    HELD = "held"
    OFFLINE = "offline"  # online-only strategy
    EXCLUDED = "excluded"  # auto_update = false, automatic run
    NOT_SELECTED = "not-selected"
    UNKNOWN_HOST = "unknown-host"
    MERGE_ONLY = "merge-only"  # strategy none
    NOT_BEHIND = "not-behind"  # converge: at the target already (or ahead, or cannot tell)


@dataclass(frozen=True, slots=True)
class HostLag:
    """Converge: whether a host's generation is behind the target, and by what (human text)."""

    behind: bool | None  # True behind; False at (or ahead of) the target; None cannot tell
    text: str  # e.g. "a1b2c3d → 9f8e7d6, 3 commits behind"


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """A host the plan deploys (now, or when it comes online if ``queued``)."""

    host: str
    wave: int  # 0 = canaries, 1 = the rest
    canary: bool = False
    priority: int | None = None
    tier: Tier = Tier.OTHER
    queued: bool = False  # offline now; deployed when it comes back online
    badges: tuple[str, ...] = ()
    behind: str = ""  # converge: by what the host is behind the target

    @property
    def reason(self) -> str:
        """Why the host sits where it does in the order, e.g. ``canary`` / ``priority 5`` / ``home server``."""
        if self.canary:
            return "canary"
        if self.priority is not None:
            return f"priority {self.priority}"
        return self.tier.label


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    host: str
    reason: SkipReason
    detail: str = ""

    def describe(self) -> str:
        return f"{self.host}: {self.detail or self.reason.value}"


@dataclass(frozen=True, slots=True)
class DeployPlan:
    """What a deploy will do; shown for confirmation, executed by the engine, stored in the journal."""

    pr_number: int
    head_sha: str
    strategy: str
    max_parallel: int
    canary_wait_minutes: float
    entries: tuple[PlanEntry, ...] = ()  # deploy order, canaries first; excludes queued hosts
    queued: tuple[PlanEntry, ...] = ()  # offline hosts deployed when they come online (strategy all)
    skipped: tuple[SkippedEntry, ...] = ()
    automatic: bool = False
    warnings: tuple[str, ...] = ()
    converge: bool = False  # no merge: bring the hosts behind ``branch`` to its head ``head_sha``
    branch: str = ""  # converge: the default branch

    @property
    def subject(self) -> str:
        """What the run is about: ``PR #42`` or ``converge to main 9f8e7d6``."""
        if self.converge:
            return f"converge to {self.branch or 'the default branch'} {self.head_sha[:7]}"
        return f"PR #{self.pr_number}"

    @property
    def waves(self) -> tuple[tuple[PlanEntry, ...], tuple[PlanEntry, ...]]:
        """(canaries, the rest) among the hosts deployed now."""
        return (
            tuple(e for e in self.entries if e.wave == 0),
            tuple(e for e in self.entries if e.wave != 0),
        )

    @property
    def merge_only(self) -> bool:
        return self.strategy == "none"

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host this plan may deploy: now, then the queued ones."""
        return tuple(e.host for e in self.entries) + tuple(e.host for e in self.queued)

    def entry(self, host: str) -> PlanEntry | None:
        for e in self.entries + self.queued:
            if e.host == host:
                return e
        return None

    def describe(self) -> list[str]:
        """Human lines for the confirmation dialog and the CLI."""
        sha = self.head_sha[:7] if self.head_sha else "?"
        if self.converge:
            lines = [f"Converge to {self.branch} ({sha}), no merge: deploy {len(self.entries)} host(s) behind it"
                     + (f", {len(self.queued)} queued until online" if self.queued else "")
                     + f"; strategy {self.strategy}, at most {self.max_parallel} at a time"]
        else:
            lines = [f"Plan for PR #{self.pr_number} (head {sha}): merge, then "
                     + ("no deploy (merge only)" if self.merge_only else
                        f"deploy {len(self.entries)} host(s)"
                        + (f", {len(self.queued)} queued until online" if self.queued else "")
                        + f"; strategy {self.strategy}, at most {self.max_parallel} at a time")]
        canaries, rest = self.waves
        n = 0
        if canaries:
            lines.append(f"Wave 1 — canaries (then wait {self.canary_wait_minutes:g} min and require them healthy):")
            for e in canaries:
                n += 1
                lines.append(f"  {n:>2}. {_entry_line(e)}")
        if rest:
            lines.append("Wave 2 — the rest:" if canaries else "Hosts, in order:")
            for e in rest:
                n += 1
                lines.append(f"  {n:>2}. {_entry_line(e)}")
        if self.queued:
            lines.append("Queued (offline; deployed when they come back online while nfu-tui runs):")
            for e in self.queued:
                lines.append(f"   - {_entry_line(e)}")
        shown = [s for s in self.skipped if s.reason is not SkipReason.NOT_SELECTED]
        unselected = [s.host for s in self.skipped if s.reason is SkipReason.NOT_SELECTED]
        if shown or unselected:
            lines.append("Skipped:")
            for s in shown:
                lines.append(f"   - {s.describe()}")
            if unselected:
                lines.append(f"   - not selected: {', '.join(unselected)}")
        for w in self.warnings:
            lines.append(f"Warning: {w}")
        if not self.entries and not self.queued and not self.merge_only:
            lines.append(f"Nothing to deploy: every host is at {self.branch} or skipped." if self.converge
                         else "Nothing to deploy: no host qualifies.")
        return lines

    # --- journal serialisation ------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("entries", "queued"):
            for e in data[key]:
                e["tier"] = int(e["tier"])
                e["badges"] = list(e["badges"])
        for s in data["skipped"]:
            s["reason"] = s["reason"].value
        data["warnings"] = list(self.warnings)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DeployPlan":
        def entry(d: Mapping[str, Any]) -> PlanEntry:
            return PlanEntry(
                host=str(d["host"]),
                wave=int(d.get("wave", 1)),
                canary=bool(d.get("canary", False)),
                priority=None if d.get("priority") is None else int(d["priority"]),
                tier=Tier(int(d.get("tier", Tier.OTHER))),
                queued=bool(d.get("queued", False)),
                badges=tuple(d.get("badges") or ()),
                behind=str(d.get("behind", "")),
            )

        return cls(
            pr_number=int(data["pr_number"]),
            head_sha=str(data.get("head_sha", "")),
            strategy=str(data.get("strategy", "all")),
            max_parallel=int(data.get("max_parallel", 1)),
            canary_wait_minutes=float(data.get("canary_wait_minutes", 0)),
            entries=tuple(entry(d) for d in data.get("entries") or ()),
            queued=tuple(entry(d) for d in data.get("queued") or ()),
            skipped=tuple(
                SkippedEntry(str(d["host"]), SkipReason(d["reason"]), str(d.get("detail", "")))
                for d in data.get("skipped") or ()
            ),
            automatic=bool(data.get("automatic", False)),
            warnings=tuple(data.get("warnings") or ()),
            converge=bool(data.get("converge", False)),
            branch=str(data.get("branch", "")),
        )


def _entry_line(e: PlanEntry) -> str:
    extra = f" [{', '.join(e.badges)}]" if e.badges else ""
    behind = f": {e.behind}" if e.behind else ""
    return f"{e.host} ({e.reason}){extra}{behind}"


_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key putting ``hsb2`` before ``hsb10`` (case-insensitive, then exact as tie-breaker)."""
    parts = _NUM.split(name.casefold())
    return (tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p), name)


@dataclass(slots=True)
class _Settings:
    auto_update: bool
    priority: int | None
    canary: bool


def _settings(name: str, config: Config, overrides: Mapping[str, Mapping[str, Any]]) -> _Settings:
    base: HostConfig = config.host(name)
    s = _Settings(base.auto_update, base.priority, base.canary)
    for key, value in (overrides.get(name) or {}).items():
        if key == "auto_update" and isinstance(value, bool):
            s.auto_update = value
        elif key == "canary" and isinstance(value, bool):
            s.canary = value
        elif key == "priority" and (value is None or (isinstance(value, int) and not isinstance(value, bool))):
            s.priority = value
    return s


def _badges(host: Host, s: _Settings) -> tuple[str, ...]:
    badges = []
    if host.host_type.lower() == "macos":
        badges.append("macOS")
    if host.busy:
        badges.append(f"busy: {host.pending_command}")
    if host.agent_outdated:
        badges.append("agent outdated")
    if not s.auto_update:
        badges.append("manual only")
    return tuple(badges)


def make_plan(
    hosts: Iterable[Host],
    config: Config,
    held: Iterable[str],
    *,
    targets: list[str] | None = None,
    automatic: bool = False,
    pr_number: int = 0,
    head_sha: str = "",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    lag: Mapping[str, HostLag] | None = None,
    branch: str = "",
) -> DeployPlan:
    """Build the plan for ``hosts`` (the fleet backend's view) under ``config``.

    ``held`` are the held host ids; ``targets`` restricts to a selection (None = all);
    ``automatic`` applies ``auto_update = false`` exclusions; ``overrides`` are per-host
    settings changed in the UI (keys ``auto_update``, ``priority``, ``canary``), which win
    over the configuration file. ``lag`` makes it a converge plan to ``branch`` at
    ``head_sha`` (no merge): only hosts whose lag says behind are deployed.
    """
    auto = config.flake_updates.automation
    strategy = auto.deploy_strategy
    if lag is not None and strategy == "none":
        strategy = "all"  # "merge only" means nothing for a converge, which merges nothing
    if strategy not in STRATEGIES:  # pragma: no cover - the config model guarantees it
        raise ValueError(f"unknown deploy strategy {strategy!r}")
    overrides = overrides or {}
    held_set = set(held)
    by_id: dict[str, Host] = {}
    for h in hosts:
        by_id.setdefault(h.id, h)
    selected: set[str] | None = None
    skipped: list[SkippedEntry] = []
    noun = info_for(config).noun
    if targets is not None:
        selected = set()
        for name in dict.fromkeys(t.strip() for t in targets if t.strip()):
            if name in by_id:
                selected.add(name)
            else:
                skipped.append(SkippedEntry(name, SkipReason.UNKNOWN_HOST, f"{name}: not known to {noun}"))
    for name in sorted(set(config.hosts) - set(by_id), key=natural_key):
        if selected is None:
            skipped.append(SkippedEntry(name, SkipReason.UNKNOWN_HOST, f"configured but not known to {noun}"))

    now: list[tuple[tuple[Any, ...], PlanEntry]] = []
    queued: list[tuple[tuple[Any, ...], PlanEntry]] = []
    warnings: list[str] = []
    for host in sorted(by_id.values(), key=lambda h: natural_key(h.id)):
        name = host.id
        s = _settings(name, config, overrides)
        if selected is not None and name not in selected:
            skipped.append(SkippedEntry(name, SkipReason.NOT_SELECTED, "not selected"))
            continue
        if name in held_set:
            skipped.append(SkippedEntry(name, SkipReason.HELD, "held"))
            continue
        if automatic and not s.auto_update:
            skipped.append(SkippedEntry(name, SkipReason.EXCLUDED, "auto_update = false (manual deploys only)"))
            continue
        if strategy == "none":
            skipped.append(SkippedEntry(name, SkipReason.MERGE_ONLY, "strategy none: merge only, no deploy"))
            continue
        behind = ""
        if lag is not None:
            host_lag = lag.get(name) or HostLag(None, "cannot tell: no generation reported")
            if host_lag.behind is not True:
                skipped.append(SkippedEntry(name, SkipReason.NOT_BEHIND, host_lag.text))
                continue
            behind = host_lag.text
        tier = tier_of(host)
        entry = PlanEntry(
            host=name,
            wave=0 if s.canary else 1,
            canary=s.canary,
            priority=s.priority,
            tier=tier,
            queued=not host.online,
            badges=_badges(host, s),
            behind=behind,
        )
        key = (0 if s.canary else 1, 0 if s.priority is not None else 1, s.priority or 0, int(tier), natural_key(name))
        if host.online:
            now.append((key, entry))
        elif strategy == "all":
            queued.append((key, entry))
            if s.canary:
                warnings.append(f"canary {name} is offline: it cannot gate this deploy")
        else:
            skipped.append(SkippedEntry(name, SkipReason.OFFLINE, "offline (strategy online-only)"))
            if s.canary:
                warnings.append(f"canary {name} is offline: it cannot gate this deploy")
    now.sort(key=lambda kv: kv[0])
    queued.sort(key=lambda kv: kv[0])
    # A queued canary deploys like any other late host: it no longer belongs to wave 0.
    queued_entries = tuple(
        PlanEntry(e.host, 1, e.canary, e.priority, e.tier, True, e.badges, e.behind) for _, e in queued
    )
    return DeployPlan(
        pr_number=pr_number,
        head_sha=head_sha,
        strategy=strategy,
        max_parallel=auto.max_parallel,
        canary_wait_minutes=auto.canary_wait_minutes,
        entries=tuple(e for _, e in now),
        queued=queued_entries,
        skipped=tuple(skipped),
        automatic=automatic,
        warnings=tuple(warnings),
        converge=lag is not None,
        branch=branch,
    )


def merge_only(plan: DeployPlan) -> DeployPlan:
    """``plan`` as a merge without a deploy (``nfu-tui deploy --merge-only``): every host is skipped."""
    skipped = tuple(SkippedEntry(e.host, SkipReason.MERGE_ONLY, "merge only, no deploy (--merge-only)")
                    for e in plan.entries + plan.queued)
    return replace(plan, strategy="none", entries=(), queued=(), skipped=plan.skipped + skipped, warnings=())


__all__ = [
    "DeployPlan",
    "HostLag",
    "PlanEntry",
    "SkipReason",
    "SkippedEntry",
    "Tier",
    "make_plan",
    "merge_only",
    "natural_key",
    "tier_of",
]
