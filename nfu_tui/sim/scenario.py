"""Simulator scenarios: hosts, update PRs, CI states and fault knobs, loaded from TOML.

A scenario is deterministic for a given ``seed``. The default scenario has about a
dozen hosts across home/work/cloud, one offline, one canary, and one pending update
PR with green CI.

TOML shape (every key optional)::

    seed = 7
    repo = "alice/nixcfg"
    default_branch = "main"
    password = "demo"            # dashboard password
    totp_secret = ""             # base32; empty = no TOTP
    token = "ghp_simulated..."   # GitHub token the fake accepts
    speed = 1.0                  # >1 makes simulated commands faster
    heartbeat_seconds = 5.0
    heartbeat_after_command = false  # true: a heartbeat right after each command result and restart
    sync_seconds = 30.0

    [[hosts]]
    name = "gpc0"
    device_type = "gaming"       # server | desktop | laptop | gaming
    location = "home"            # home | work | cloud
    host_type = "nixos"          # nixos | macos
    online = true
    faults = ["switch_fails"]    # offline | slow | pull_fails | switch_fails | never_reconnects | offline_mid_deploy
                                 # | garbled_output
    switch_seconds = 0.0         # > 0: the switch's build + activation time (else random 20-40 s)
    restart_seconds = 0.0        # > 0: the agent's restart after a switch (else random 1.5-4 s)

    [[prs]]
    number = 42
    title = "flake.lock: Update"
    labels = ["dependencies"]
    ci = "success"               # success | pending | failure | none
    nixpkgs_commits = 180
    days = 7
    extra_files = []             # e.g. ["flake.nix"]
    age_hours = 20
    conflict = false
"""

from __future__ import annotations

import dataclasses
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST_FAULTS = frozenset(
    {"offline", "slow", "pull_fails", "switch_fails", "tests_fail", "never_reconnects", "offline_mid_deploy",
     "offline_after_switch", "garbled_output", "refresh_system_fails", "rollback_fails"}
)
CI_STATES = frozenset({"success", "pending", "failure", "none"})


@dataclass
class HostSpec:
    name: str
    device_type: str = "server"
    location: str = "home"
    host_type: str = "nixos"
    online: bool = True
    faults: set[str] = field(default_factory=set)
    agent_version: str | None = None  # None = same as the dashboard's version
    switch_seconds: float = 0.0  # > 0: fixed build + activation time of a switch (simulated seconds)
    restart_seconds: float = 0.0  # > 0: fixed agent restart time after a switch (simulated seconds)

    def has(self, fault: str) -> bool:
        return fault in self.faults


@dataclass
class PRSpec:
    number: int
    title: str = "flake.lock: Update"
    labels: list[str] = field(default_factory=list)
    ci: str = "success"
    nixpkgs_commits: int = 120
    days: int = 7
    extra_files: list[str] = field(default_factory=list)
    age_hours: float = 20.0
    conflict: bool = False
    draft: bool = False
    author: str = "github-actions[bot]"
    head_ref: str = "update_flake_lock_action"


@dataclass
class Scenario:
    seed: int = 7
    repo: str = "alice/nixcfg"
    default_branch: str = "main"
    password: str = "demo"
    totp_secret: str = ""
    token: str = "ghp_simulatedToken0000000000000000000000"
    speed: float = 1.0
    heartbeat_seconds: float = 5.0
    # The agent sends a heartbeat right after a command's result (legacy repo mode, contract §4 flow A
    # step 9) and right after it restarted from a switch, so a deferred post-check or the System
    # verification never waits for the next regular heartbeat.
    heartbeat_after_command: bool = False
    sync_seconds: float = 30.0
    dashboard_version: str = "3.1.5"
    hosts: list[HostSpec] = field(default_factory=list)
    prs: list[PRSpec] = field(default_factory=list)

    def rng(self, salt: str = "") -> random.Random:
        """A deterministic random generator for one purpose (``salt``)."""
        return random.Random(f"{self.seed}:{salt}")


DEFAULT_HOSTS: list[HostSpec] = [
    HostSpec("gpc0", "gaming", "home"),
    HostSpec("imac0", "desktop", "home", host_type="macos"),
    HostSpec("mba-mbp-work", "laptop", "work", host_type="macos"),
    HostSpec("hsb0", "server", "home"),
    HostSpec("hsb1", "server", "home"),
    HostSpec("hsb8", "server", "home", online=False, faults={"offline"}),
    HostSpec("nixbook", "laptop", "home"),
    HostSpec("mbp-work", "laptop", "work"),
    HostSpec("workstation", "desktop", "work"),
    HostSpec("csb0", "server", "cloud"),
    HostSpec("csb1", "server", "cloud"),
    HostSpec("web-01", "server", "cloud"),
]

_NAME_PREFIX = {"server": "srv", "desktop": "pc", "laptop": "nb", "gaming": "gpc"}


def generated_hosts(count: int, seed: int) -> list[HostSpec]:
    """``count`` plausible hosts (used by ``--hosts N``), deterministic for ``seed``."""
    rng = random.Random(f"{seed}:hosts")
    hosts: list[HostSpec] = []
    for i in range(count):
        device = rng.choices(["server", "desktop", "laptop", "gaming"], [6, 2, 2, 1])[0]
        location = rng.choices(["home", "work", "cloud"], [3, 2, 4])[0]
        host_type = "macos" if device in ("laptop", "desktop") and rng.random() < 0.2 else "nixos"
        online = rng.random() > 0.04
        hosts.append(
            HostSpec(
                f"{location[0]}{_NAME_PREFIX[device]}-{i:04d}",
                device,
                location,
                host_type=host_type,
                online=online,
                faults=set() if online else {"offline"},
            )
        )
    return hosts


def default_scenario(hosts: int | None = None, seed: int = 7) -> Scenario:
    """The demo scenario; ``hosts`` replaces the dozen default hosts by N generated ones."""
    specs = generated_hosts(hosts, seed) if hosts else [HostSpec(**vars(h)) for h in DEFAULT_HOSTS]
    for h in specs:
        h.faults = set(h.faults)
    return Scenario(
        seed=seed,
        hosts=specs,
        prs=[PRSpec(number=42, labels=["dependencies"], ci="success", nixpkgs_commits=180, days=7)],
    )


class ScenarioError(ValueError):
    pass


def _rows(value: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise ScenarioError(f"{key} must be an array of tables ([[{key}]] sections)")
    return value


def _check_type(f: dataclasses.Field[Any], value: Any, where: str) -> None:
    """Type-check a scenario value against its field's default (bool, int, float, str or a list)."""
    if f.default is not dataclasses.MISSING and f.default is not None:
        want: tuple[type, ...] = (type(f.default),)
        if want == (float,):
            want = (int, float)
        ok = isinstance(value, want) and not (isinstance(value, bool) and bool not in want)
    elif f.default_factory is not dataclasses.MISSING:
        ok = isinstance(value, list)
    else:  # a required field: its annotation is a plain type name
        want = {"int": int, "str": str}.get(str(f.type), object)
        ok = isinstance(value, want) and not isinstance(value, bool)
    if not ok:
        raise ScenarioError(f"{where}.{f.name}: {value!r} has the wrong type")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key, value in data.items():
        _check_type(fields[key], value, where)
    return cls(**data)


def parse_scenario(data: dict[str, Any], *, hosts: int | None = None) -> Scenario:
    data = dict(data)
    host_rows = data.pop("hosts", None)
    pr_rows = data.pop("prs", None)
    scn = _build(Scenario, data, "scenario")
    if hosts:
        scn.hosts = generated_hosts(hosts, scn.seed)
    elif host_rows is not None:
        scn.hosts = []
        for i, row in enumerate(_rows(host_rows, "hosts")):
            spec = _build(HostSpec, dict(row), f"hosts[{i}]")
            spec.faults = set(spec.faults)
            bad = spec.faults - HOST_FAULTS
            if bad:
                raise ScenarioError(f"hosts[{i}]: unknown fault(s) {', '.join(sorted(bad))}")
            if "offline" in spec.faults:
                spec.online = False
            scn.hosts.append(spec)
    else:
        scn.hosts = default_scenario(seed=scn.seed).hosts
    if pr_rows is not None:
        scn.prs = []
        for i, row in enumerate(_rows(pr_rows, "prs")):
            pr = _build(PRSpec, dict(row), f"prs[{i}]")
            if pr.ci not in CI_STATES:
                raise ScenarioError(f"prs[{i}]: ci must be one of {sorted(CI_STATES)}")
            scn.prs.append(pr)
    else:
        scn.prs = default_scenario(seed=scn.seed).prs
    return scn


def load_scenario(path: str | Path | None = None, *, hosts: int | None = None) -> Scenario:
    """Load a scenario TOML file (or the default scenario when ``path`` is None)."""
    if path is None:
        return default_scenario(hosts)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {path} is not valid TOML: {exc}") from exc
    except TypeError as exc:  # pragma: no cover - defensive
        raise ScenarioError(str(exc)) from exc
    try:
        return parse_scenario(data, hosts=hosts)
    except TypeError as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from exc
