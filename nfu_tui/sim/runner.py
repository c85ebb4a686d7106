"""The embedded simulator: the fake GitHub and the fake dashboard, wired together.

The dashboard's "desired state" (its ``version.json``) is the config repo's default
branch head on the fake GitHub: ``gitCommit`` = head sha, ``lockHash`` = sha256 of
its ``flake.lock``, ``message`` = the head commit's subject. When the default branch
moves (a merge), the dashboard refetches after ``publish_delay`` seconds — the time
the config repo's CI takes to republish ``version.json`` (30 s, divided by the
scenario's speed) — so right after a merge a plain ``pull`` is still blocked
``already_current``, exactly like the real thing (contract §8 #42). With
``Simulator.mirror`` the hosts pull from (and ``version.json`` names) a mirror's
commit ids, which differ from GitHub's.

:class:`SimulatorThread` runs a :class:`Simulator` on its own event loop in a daemon
thread, for synchronous code (sync tests, Textual snapshot tests, ``nfu-tui demo``).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from nfu_tui.sim.dashboard import DesiredState, FakeDashboard
from nfu_tui.sim.github import FakeGitHub
from nfu_tui.sim.scenario import Scenario

__all__ = ["Simulator", "SimulatorThread"]

PUBLISH_SECONDS = 30.0


class Simulator:
    """Fake GitHub + fake dashboard on 127.0.0.1 (ephemeral ports unless given)."""

    def __init__(self, scenario: Scenario, *, github_port: int = 0, dashboard_port: int = 0) -> None:
        self.scenario = scenario
        self.github = FakeGitHub(scenario)
        self.dashboard = FakeDashboard(scenario, desired_state=self.desired_state)
        self.publish_delay = PUBLISH_SECONDS / max(scenario.speed, 1e-6)
        # Hosts pull from a mirror that re-commits the branch (other commit ids, same content), and
        # version.json is published from it: as the real-dashboard harness's local origin.
        self.mirror = False
        self._ports = (github_port, dashboard_port)
        self._pending: set[asyncio.TimerHandle] = set()
        self._started = False

    def __repr__(self) -> str:
        return f"Simulator(github={self.github.url!r}, dashboard={self.dashboard.url!r})"

    def desired_state(self) -> DesiredState:
        """What ``version.json`` would say now: the default branch head and its flake.lock hash."""
        sha, subject = self.github.default_branch_head()
        lock = self.github.file_at(sha, "flake.lock")
        lock_hash = hashlib.sha256(lock).hexdigest() if lock is not None else ""
        if self.mirror:
            sha = hashlib.sha1(f"mirror:{sha}".encode()).hexdigest()
        return DesiredState(sha, lock_hash, subject)

    async def start(self) -> None:
        await self.github.start("127.0.0.1", self._ports[0])
        self.github.on_branch_moved(self._branch_moved)
        try:
            await self.dashboard.start("127.0.0.1", self._ports[1])
        except BaseException:
            await self.github.stop()
            raise
        self._started = True

    async def stop(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self._started:
            self._started = False
            await self.dashboard.stop()
            await self.github.stop()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _branch_moved(self, branch: str, sha: str) -> None:
        if branch != self.scenario.default_branch or not self._started:
            return

        def publish() -> None:
            self._pending.discard(handle)
            self.dashboard.remote_changed()

        handle = self.dashboard.fleet.loop.call_later(self.publish_delay, publish)
        self._pending.add(handle)

    def info(self) -> dict[str, str]:
        """Connection facts for clients (fake credentials): the first line of ``nfu-tui sim``."""
        return {
            "github_url": self.github.url,
            "dashboard_url": self.dashboard.url,
            "repo": self.github.repo,
            "token": self.github.token,
            "password": self.scenario.password,
        }

    def write_config(self, directory: Path, **overrides: Any) -> Path:
        """Write ``directory/config.toml`` pointing nfu-tui at this simulator.

        Secrets go to separate mode-600 files referenced by ``token_file`` /
        ``password_file`` (and ``totp_secret_file`` when the scenario has TOTP).
        ``overrides`` are tables merged into the generated ones, e.g.
        ``write_config(d, github={"poll_minutes": 1}, hosts={"gpc0": {"canary": True}})``.
        """
        import tomli_w

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        token_file = _write_secret(directory / "github-token", self.github.token)
        password_file = _write_secret(directory / "dashboard-password", self.scenario.password)
        data: dict[str, Any] = {
            "github": {"repo": self.github.repo, "token_file": str(token_file), "api_url": self.github.url,
                       "poll_minutes": 5},
            "dashboard": {"url": self.dashboard.url, "password_file": str(password_file)},
        }
        if self.scenario.totp_secret:
            data["dashboard"]["totp_secret_file"] = str(_write_secret(directory / "totp-secret", self.scenario.totp_secret))
        _merge(data, overrides)
        path = directory / "config.toml"
        _write_private(path, tomli_w.dumps(data))
        return path


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its old mode on O_CREAT
    return path


def _write_secret(path: Path, value: str) -> Path:
    return _write_private(path, value + "\n")


class SimulatorThread:
    """Run a :class:`Simulator` on a private event loop in a daemon thread.

    ``with SimulatorThread(scenario) as sim:`` yields the started simulator; use
    :meth:`call` to run control hooks (plain functions or coroutines) on its loop.
    """

    def __init__(self, scenario: Scenario, *, start_timeout: float = 30.0) -> None:
        self.scenario = scenario
        self.timeout = start_timeout
        self.sim: Simulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Simulator:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="nfu-tui-sim", daemon=True)
        self._thread.start()
        sim = Simulator(self.scenario)
        try:
            asyncio.run_coroutine_threadsafe(sim.start(), loop).result(self.timeout)
        except BaseException:
            self._shutdown()
            raise
        self.sim = sim
        return sim

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.sim is not None and self._loop is not None:
                asyncio.run_coroutine_threadsafe(self.sim.stop(), self._loop).result(self.timeout)
        finally:
            self.sim = None
            self._shutdown()

    def _shutdown(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout)
        if not self._thread.is_alive():
            self._loop.close()
        self._loop = self._thread = None

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the simulator's loop (awaiting it if it returns an awaitable)."""
        if self._loop is None:
            raise RuntimeError("the simulator thread is not running")

        async def invoke() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(self.timeout)
