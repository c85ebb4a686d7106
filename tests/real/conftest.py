"""The real NixFleet 3.1.5 dashboard and agents (``../shared/real-nixfleet``), for ``make test-real``.

Every test here carries the ``real`` marker and is left out of ``make test`` (see
``addopts`` in pyproject.toml). ``make test-real`` passes where the kit is
(``REAL_NIXFLEET_KIT``, default ``../shared/real-nixfleet`` next to the repository) and where
to build it (``NF_BIN``, default ``.build/nixfleet``, ignored by git). The kit is built once
per session (about a minute the first time, instant afterwards); where it cannot be built
(kit absent, no apt or package archives, not root) every test is skipped with the one reason
``build.sh`` gave.

``real_fleet(...)`` starts the simulator's GitHub side in a thread and the harness (real
dashboard, one real agent per host, the bridge that mirrors the simulator's main branch into
the agents' git origin and the dashboard's ``version.json``) against it, writes an nfu-tui
``config.toml`` for both, and stops everything at teardown.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.sim.runner import SimulatorThread
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario

REPO = Path(__file__).resolve().parents[2]
KIT = Path(os.environ.get("REAL_NIXFLEET_KIT") or REPO.parent / "shared" / "real-nixfleet")
NF_BIN = Path(os.environ.get("NF_BIN") or REPO / ".build" / "nixfleet")
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.real)
            item.add_marker(pytest.mark.timeout(300))  # real agents, real restarts: more than the default 120 s


SKIPPED: list[str] = []  # why the kit is unusable (said once at the end; make test-real lists no single skips)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SKIPPED:
        terminalreporter.write_sep("=", f"the real NixFleet tests were skipped: {SKIPPED[0]}", yellow=True)


def _skip(reason: str) -> None:
    SKIPPED[:] = [reason]
    pytest.skip(reason)


@pytest.fixture(scope="session")
def nixfleet_bin() -> Path:
    """The kit's build output; skips the session's real tests with build.sh's reason when it cannot be built."""
    if not (KIT / "build.sh").is_file():
        _skip(f"real NixFleet kit not found at {KIT} (set REAL_NIXFLEET_KIT or NIXFLEET_KIT)")
    try:
        r = subprocess.run(["bash", str(KIT / "build.sh"), str(NF_BIN)], capture_output=True, text=True,
                           timeout=1200)
    except subprocess.TimeoutExpired:
        _skip("real NixFleet kit: build.sh did not finish within 20 min")
    if r.returncode:
        lines = r.stderr.strip().splitlines() or [f"build.sh exited {r.returncode}"]
        _skip(f"the kit cannot be built here: {lines[-1]}")
    return NF_BIN


@dataclass
class RealFleet:
    """One harness run: the real dashboard + agents, the simulator's GitHub, an nfu-tui config."""

    info: dict[str, Any]
    rundir: Path
    gh: SimulatorThread
    config: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def sim(self) -> Any:
        return self.gh.sim

    @property
    def url(self) -> str:
        return self.info["dashboard_url"]

    @property
    def hosts(self) -> list[str]:
        return list(self.info["hosts"])

    def harness(self, *args: str, timeout: float = 120, **env: str) -> str:
        r = subprocess.run(["bash", str(KIT / "harness.sh"), args[0], str(self.rundir), *args[1:]],
                           capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env, **env})
        assert r.returncode == 0, f"harness.sh {' '.join(args)}: {r.stderr}"
        return r.stdout

    def knob(self, host: str, name: str, value: str | None = "") -> None:
        """Set (``value`` text) or remove (``None``) a per-host knob file."""
        path = self.rundir / "hosts" / host / name
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(value)

    def cli(self, *argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nfu_tui", "--config", str(self.config), *argv],
                              capture_output=True, text=True, timeout=timeout, env=cli_env())

    def spawn(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "nfu_tui", "--config", str(self.config), *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())

    def merges(self, pr: int = 42) -> int:
        return sum(1 for r in self.sim.github.request_log if r.method == "PUT" and r.path.endswith(f"/pulls/{pr}/merge"))

    def host_output(self, host: str) -> str:
        """Everything the dashboard stored of ``host``'s output since this run started (all its log files)."""
        return "".join(p.read_text(errors="replace") for p in sorted((self.rundir / "data" / "logs" / host).glob("*.log")))

    def runs_of(self, host: str, what: str) -> int:
        """How often ``host`` ran the fake ``nixos-rebuild`` ``what`` (e.g. ``switch --flake``)."""
        return self.host_output(host).count(f"fake-nixos-rebuild {what}")

    def requests(self, method: str, path: str, status: int | None = None) -> int:
        """How many ``method path`` requests the dashboard served (its request log, one line each),
        only those answered ``status`` when given."""
        answer = rf'.* - {status} ' if status is not None else ""
        pattern = re.compile(rf'"{method} https?://[^/]+{re.escape(path)}[ ?]{answer}')
        log = self.rundir / "logs" / "dashboard.log"
        return sum(1 for line in log.read_text(errors="replace").splitlines() if pattern.search(line))


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def read_until(proc: subprocess.Popen[str], needle: str, seen: list[str], timeout: float = 120) -> None:
    """Read ``proc``'s stdout lines into ``seen`` until one contains ``needle``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"process ended before {needle!r}: {''.join(seen)}"
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"no {needle!r} within {timeout:g} s: {''.join(seen)}")


def wait_for(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _secret_file(path: Path, value: str) -> str:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


FleetFactory = Callable[..., RealFleet]


@pytest.fixture
def real_fleet(nixfleet_bin: Path, tmp_path: Path) -> Iterator[FleetFactory]:
    """``real_fleet(hosts=..., fail_hosts=..., publish_delay=..., totp_secret=..., dash_env=..., knobs=...,
    config=...)`` → a started :class:`RealFleet`; everything is stopped at teardown."""
    started: list[RealFleet] = []
    threads: list[SimulatorThread] = []

    def make(*, hosts: str = "web1,web2,db1", fail_hosts: str = "", publish_delay: float = 2,
             totp_secret: str = "", dash_env: str = "", knobs: dict[str, dict[str, str]] | None = None,
             config: dict[str, Any] | None = None) -> RealFleet:
        n = len(started)
        # The GitHub side: the simulator's (its fake dashboard is started too but not used).
        gh = SimulatorThread(fast_scenario(hosts=[HostSpec("unused")]))
        sim = gh.__enter__()
        threads.append(gh)
        rundir = tmp_path / f"fleet{n}"
        for host, files in (knobs or {}).items():
            (rundir / "hosts" / host).mkdir(parents=True, exist_ok=True)
            for name, value in files.items():
                (rundir / "hosts" / host / name).write_text(value)
        env = {"NF_BIN": str(nixfleet_bin), "GITHUB_API_URL": sim.github.url, "GITHUB_REPO": sim.github.repo,
               "GITHUB_TOKEN": sim.github.token, "HOSTS": hosts, "FAIL_HOSTS": fail_hosts,
               "PUBLISH_DELAY": f"{publish_delay:g}", "TOTP_SECRET": totp_secret,
               "DASH_ENV": " ".join(filter(None, ["NIXFLEET_RATE_LIMIT=100 NIXFLEET_VERSION_FETCH_TTL=1s", dash_env]))}
        r = subprocess.run(["bash", str(KIT / "harness.sh"), "start", str(rundir)], capture_output=True, text=True,
                           timeout=120, env={**os.environ, **env})
        if r.returncode:
            raise AssertionError(f"harness.sh start failed: {r.stderr[-2000:]}")
        info = json.loads(r.stdout.strip().splitlines()[-1])
        cfg_dir = tmp_path / f"cfg{n}"
        cfg_dir.mkdir()
        dashboard = {"url": info["dashboard_url"],
                     "password_file": _secret_file(cfg_dir / "nixfleet-password", info["password"])}
        if totp_secret:
            dashboard["totp_secret_file"] = _secret_file(cfg_dir / "nixfleet-totp", totp_secret)
        overrides: dict[str, Any] = {"dashboard": dashboard,
                                     "flake_updates": {"automation": {"canary_wait_minutes": 0}}}
        _merge(overrides, config or {})
        fleet = RealFleet(info, rundir, gh, sim.write_config(cfg_dir, **overrides), env)
        started.append(fleet)
        return fleet

    yield make
    for fleet in reversed(started):
        subprocess.run(["bash", str(KIT / "harness.sh"), "stop", str(fleet.rundir)], capture_output=True, timeout=60)
    for gh in reversed(threads):
        gh.__exit__(None, None, None)
    for fleet in started:  # it crashes the 3.1.5 dashboard (README of the kit)
        assert fleet.requests("POST", "/api/dispatch/pipeline") == 0
