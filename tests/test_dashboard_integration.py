"""DashboardClient + FleetModel against the fake NixFleet dashboard (nfu_tui.sim.dashboard).

The fake is started on its own (``FakeDashboard`` with a settable desired state
instead of the fake GitHub), on the fast scenario: heartbeats every 0.2 s, commands
100x faster. Waits are bounded guards on observed state, never timing assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from nfu_tui.clients.dashboard import Connected, DashboardClient, Disconnected, Message
from nfu_tui.clients.fleet import ChangeKind, FleetModel
from nfu_tui.domain.totp import totp
from nfu_tui.errors import DashboardError, LoginFailed
from nfu_tui.models import CompartmentState
from nfu_tui.sim.agents import DesiredState
from nfu_tui.sim.dashboard import FakeDashboard
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario

GUARD = 15.0  # seconds; only protects against a hang
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@dataclass
class Remote:
    """A mutable stand-in for the config repo's version.json."""

    state: DesiredState

    def __call__(self) -> DesiredState:
        return self.state


@dataclass
class Dash:
    server: FakeDashboard
    remote: Remote
    url: str
    password: str


@pytest_asyncio.fixture
async def dash(request: pytest.FixtureRequest) -> AsyncIterator[Dash]:
    scenario = fast_scenario(**getattr(request, "param", {}))
    remote = Remote(DesiredState("1a2b3c4d" * 5, "ab" * 32, "flake.lock: Update"))
    server = FakeDashboard(scenario, desired_state=remote)
    url = await server.start()
    yield Dash(server, remote, url, scenario.password)
    await server.stop()


async def quick_sleep(_delay: float) -> None:
    await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def client(dash: Dash) -> AsyncIterator[DashboardClient]:
    c = DashboardClient(url=dash.url, password=dash.password, sleep=quick_sleep)
    yield c
    await c.aclose()


class Live:
    """Runs ``client.follow(model)`` in the background and lets tests wait for states."""

    def __init__(self, client: DashboardClient) -> None:
        self.client = client
        self.model = FleetModel()
        self.events: list[Any] = []
        self.kinds: list[ChangeKind] = []
        self.seen_status: dict[str, list[str]] = {}
        self._cond = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Live:
        self._task = asyncio.create_task(self._run())
        await self.until(lambda m: m.synced)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async for event, changes in self.client.follow(self.model):
            self.events.append(event)
            for change in changes:
                self.kinds.append(change.kind)
                if change.kind is ChangeKind.HOST_CHANGED:
                    host = self.model.host(change.id)
                    if host is not None:
                        self.seen_status.setdefault(change.id, []).append(host.status)
            async with self._cond:
                self._cond.notify_all()

    async def until(self, predicate: Callable[[FleetModel], bool]) -> None:
        async with asyncio.timeout(GUARD):
            async with self._cond:
                await self._cond.wait_for(lambda: predicate(self.model))


def command_status(model: FleetModel, command_id: str) -> str:
    command = model.command(command_id)
    return command.status if command else ""


# ------------------------------------------------------------------- REST


async def test_login_hosts_and_version(client: DashboardClient, dash: Dash) -> None:
    hosts = await client.hosts()
    assert len(hosts) == len(dash.server.hosts) == 12
    assert [h.hostname for h in hosts] == sorted(h.hostname for h in hosts)
    by_id = {h.id: h for h in hosts}
    assert not by_id["hsb8"].online and by_id["hsb1"].online
    assert by_id["hsb1"].generation == "1a2b3c4"
    assert client.dashboard_version == "3.1.5"


async def test_full_state_snapshot(client: DashboardClient) -> None:
    snap = await client.full_state()
    assert snap.synced and snap.version is not None and len(snap.hosts) == 12
    hsb1 = snap.hosts["hsb1"]
    assert hsb1.git.state is CompartmentState.OK and hsb1.lock.state is CompartmentState.OK
    assert hsb1.available_ops == ("pull", "switch", "test", "reboot") and not hsb1.agent_outdated
    assert snap.hosts["hsb8"].available_ops == ()
    assert snap.dashboard_version == "3.1.5"


async def test_dispatch_blocked_and_error_codes(client: DashboardClient) -> None:
    results = await client.dispatch("pull", ["hsb1", "hsb8", "nope"])
    assert [(r.host_id, r.outcome, r.code) for r in results] == [
        ("hsb1", "blocked", "already_current"),
        ("hsb8", "blocked", "offline"),
        ("nope", "error", ""),
    ]
    assert results[2].message == "Host not found"
    with pytest.raises(DashboardError) as info:
        await client.dispatch("frobnicate", ["hsb1"])
    assert info.value.status == 400 and "unknown op" in info.value.message


async def test_legacy_command_and_kill_semantics(client: DashboardClient) -> None:
    blocked = await client.command("hsb1", "switch")
    assert blocked.blocked and blocked.code == "already_current"
    missing = await client.command("nope", "pull")
    assert missing.outcome == "error"
    with pytest.raises(DashboardError) as info:
        await client.kill("gpc0")
    assert info.value.status == 409 and "No active command" in info.value.message


async def test_expired_session_is_renewed_transparently(client: DashboardClient, dash: Dash) -> None:
    await client.login()
    dash.server.expire_sessions()
    assert len(await client.hosts()) == 12
    results = await client.dispatch("pull", ["hsb8"])  # a mutating call after expiry too
    assert results[0].code == "offline"


async def test_events_and_command_states(client: DashboardClient) -> None:
    await client.dispatch("pull", ["hsb1"])  # blocked: leaves a BLOCKED record and events
    events = await client.events(limit=5)
    assert 0 < len(events) <= 5 and all("message" in e for e in events)
    assert all(e.get("host_id") == "hsb1" for e in await client.events(limit=5, host="hsb1"))
    states = await client.command_states()
    assert states["hsb1"].status == "BLOCKED"  # terminal leftovers stay (§8 #33)


@pytest.mark.parametrize("dash", [{"totp_secret": TOTP_SECRET}], indirect=True)
async def test_totp_login(dash: Dash) -> None:
    without = DashboardClient(url=dash.url, password=dash.password)
    with pytest.raises(LoginFailed) as info:
        await without.login()
    assert info.value.needs_totp and without.needs_totp
    await without.login(totp_code=totp(TOTP_SECRET))
    assert without.logged_in
    await without.aclose()
    auto = DashboardClient(url=dash.url, password=dash.password, totp_secret=TOTP_SECRET)
    assert len(await auto.hosts()) == 12
    await auto.aclose()


async def test_wrong_password(dash: Dash) -> None:
    c = DashboardClient(url=dash.url, password="not-" + dash.password)
    with pytest.raises(LoginFailed) as info:
        await c.login()
    assert not info.value.needs_totp and "Wrong dashboard password" in info.value.message
    await c.aclose()


# ------------------------------------------------------------- live stream


async def test_pull_lifecycle_over_ws(client: DashboardClient) -> None:
    async with Live(client) as live:
        [result] = await client.dispatch("pull", ["hsb1"], force=True)
        assert result.started and result.status == "EXECUTING"
        await live.until(lambda m: command_status(m, result.command_id) == "SUCCESS")
        await live.until(lambda m: not m.host("hsb1").busy)  # type: ignore[union-attr]
        lines = live.model.output("hsb1", result.command_id)
        assert any("HEAD is now at" in line.text for line in lines)
        assert all(line.op == "pull" for line in lines)
        progress = live.model.snapshot().progress["hsb1"]
        assert (progress.phase, progress.current, progress.total, progress.status) == ("pull", 4, 4, "complete")
        assert not live.model.needs_resync
    rest_lines = await client.output("hsb1", lines=50)
    assert any("HEAD is now at" in line for line in rest_lines)


async def test_switch_lifecycle_offline_and_back(client: DashboardClient) -> None:
    async with Live(client) as live:
        [result] = await client.dispatch("switch", ["hsb1"], force=True)
        assert result.started
        await live.until(lambda m: command_status(m, result.command_id) in ("SUCCESS", "TIMEOUT", "ERROR"))
        assert command_status(live.model, result.command_id) == "SUCCESS"
        await live.until(lambda m: m.host("hsb1").online and not m.host("hsb1").busy)  # type: ignore[union-attr]
        assert "offline" in live.seen_status["hsb1"]  # the agent restarted itself (§6.6)
        assert any("Switch completed" in line.text for line in live.model.output("hsb1", result.command_id))


async def test_timeout_action_ignore_releases_a_stuck_restart(client: DashboardClient) -> None:
    async with Live(client) as live:
        [result] = await client.dispatch("restart", ["gpc0"])
        assert result.started
        await live.until(lambda m: command_status(m, result.command_id) == "EXECUTING")
        await client.timeout_action("gpc0", "ignore")
        await live.until(lambda m: command_status(m, result.command_id) == "SKIPPED")
        assert live.model.command(result.command_id).error == "Cancelled by user"  # type: ignore[union-attr]


async def test_remote_change_then_pull(client: DashboardClient, dash: Dash) -> None:
    async with Live(client) as live:
        dash.remote.state = DesiredState("9f8e7d6c" * 5, "cd" * 32, "Merge pull request #42")
        dash.server.remote_changed()
        await live.until(lambda m: m.host("hsb1").git.state is CompartmentState.OUTDATED)  # type: ignore[union-attr]
        [result] = await client.dispatch("pull", ["hsb1"])  # no force needed: Git is outdated now
        assert result.started
        await live.until(lambda m: command_status(m, result.command_id) == "SUCCESS")
        await live.until(lambda m: m.host("hsb1").git.state is CompartmentState.OK)  # type: ignore[union-attr]
        assert live.model.host("hsb1").generation == "9f8e7d6"  # type: ignore[union-attr]


async def test_dropped_deltas_trigger_one_resync(client: DashboardClient, dash: Dash) -> None:
    async with Live(client) as live:
        assert live.kinds.count(ChangeKind.RESYNCED) == 1
        dash.server.drop_next_deltas(3)
        await live.until(lambda m: live.kinds.count(ChangeKind.RESYNCED) >= 2)
        assert live.kinds.count(ChangeKind.RESYNCED) == 2
        resync_at = len(live.events)
        await live.until(lambda m: len(live.events) > resync_at + 20)  # deltas flow in order again
        assert live.kinds.count(ChangeKind.RESYNCED) == 2


async def test_reordered_deltas_recover(client: DashboardClient, dash: Dash) -> None:
    async with Live(client) as live:
        dash.server.reorder_next_deltas()
        await live.until(lambda m: live.kinds.count(ChangeKind.RESYNCED) >= 2)
        await live.until(lambda m: m.synced and not m.needs_resync)


async def test_delta_before_init_is_ignored(client: DashboardClient, dash: Dash) -> None:
    dash.server.send_delta_before_init()
    async with Live(client) as live:
        assert isinstance(live.events[0], Connected)
        first = live.events[1]
        assert isinstance(first, Message) and first.type == "delta"  # the race really happened
        count = len(live.events)
        await live.until(lambda m: len(live.events) > count + 10)
        assert live.kinds.count(ChangeKind.RESYNCED) == 1  # no get_state was needed


async def test_new_agent_and_removed_host(client: DashboardClient, dash: Dash) -> None:
    async with Live(client) as live:
        dash.server.add_host(HostSpec("newbox", "server", "cloud"))
        await live.until(lambda m: m.host("newbox") is not None and m.host("newbox").online)  # type: ignore[union-attr]
        assert live.kinds.count(ChangeKind.RESYNCED) >= 2  # host_updated for an unknown id → get_state
        dash.server.remove_host("newbox")
        await live.until(lambda m: m.host("newbox") is None)
        assert ChangeKind.HOST_REMOVED in live.kinds


async def test_dashboard_restart_reconnects_and_resyncs(client: DashboardClient, dash: Dash) -> None:
    async with Live(client) as live:
        dash.server.restart_dashboard()
        await live.until(lambda m: any(isinstance(e, Disconnected) for e in live.events))
        await live.until(lambda m: m.connected and m.synced)
        assert sum(isinstance(e, Connected) for e in live.events) == 2
        await live.until(lambda m: m.host("hsb1").online)  # type: ignore[union-attr]  # agents came back
