"""FleetService against the simulator's real servers: live fleet, PR detection and explanation, holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.core.service import FleetService, ServiceEvent
from nfu_tui.core.state import AppState
from nfu_tui.core.store import Store
from nfu_tui.errors import LoginFailed
from nfu_tui.models import CIVerdict


async def wait_for(predicate, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def service(sim, sim_config: Path):
    cfg = load_config(sim_config)
    secrets = resolve_secrets(cfg, env={}, use_gh=False)
    svc = FleetService(cfg, secrets)
    events: list[ServiceEvent] = []
    svc.subscribe(events.append)
    svc.events = events  # type: ignore[attr-defined]
    await svc.start()
    yield svc
    await svc.stop()


async def test_live_fleet_and_pending_update(service: FleetService, sim) -> None:
    await wait_for(lambda: service.status.fleet == "live")
    hosts = service.hosts()
    assert len(hosts) >= 10
    assert any(not h.online for h in hosts), "the default scenario has an offline host"
    await wait_for(lambda: service.prs and not service.prs[0].loading)
    state = service.pending_update()
    assert state is not None and state.pr.number == 42
    assert state.error == ""
    assert state.pr.ci is not None and state.pr.ci.verdict is CIVerdict.GREEN
    assert state.pr.lock_only is True
    exp = state.explanation
    assert exp is not None and exp.summary_text.startswith("• Updated input")
    headline = service.update_headline()
    assert headline and headline.startswith("nixpkgs ") and "→" in headline
    assert service.status.github == "ok" and service.status.rate.remaining is not None
    kinds = {e.kind for e in service.events}  # type: ignore[attr-defined]
    assert {"fleet", "prs", "status"} <= kinds


async def test_heartbeats_update_hosts_live(service: FleetService) -> None:
    await wait_for(lambda: service.status.fleet == "live")
    online = next(h for h in service.hosts() if h.online)
    first_seen = online.last_seen
    await wait_for(lambda: (service.host(online.id) or online).last_seen != first_seen)
    fleet_events = [e for e in service.events if e.kind == "fleet" and online.id in e.host_ids]  # type: ignore[attr-defined]
    assert fleet_events


async def test_hold_is_persisted_and_audited(service: FleetService) -> None:
    await wait_for(lambda: service.status.fleet == "live")
    await service.set_hold(["gpc0", "hsb1"], True)
    assert AppState.load().held >= {"gpc0", "hsb1"}
    await service.set_hold(["hsb1"], False)
    assert AppState.load().held == {"gpc0"}
    actions = [(e.action, e.details.get("hosts")) for e in Store().audit_entries()]
    assert ("hold", ["gpc0", "hsb1"]) in actions and ("unhold", ["hsb1"]) in actions
    plan = service.plan(42)
    assert "gpc0" in {s.host for s in plan.skipped}


async def test_idle_polling_is_free(service: FleetService, sim) -> None:
    await wait_for(lambda: service.prs and not service.prs[0].loading)
    # Reading the PR once makes GitHub compute its test merge commit, which the list shows:
    # one more full answer, after which an unchanged repository only costs 304s.
    await service.poll_once()
    before = sim.github.request_count()
    for _ in range(5):
        await service.poll_once()
    assert sim.github.request_count() - before == 5, "an unchanged repo costs one conditional request per poll"
    assert [r.status for r in sim.github.request_log[-5:]] == [304] * 5, sim.github.request_log[-8:]


async def test_login_required_without_password(sim, sim_config: Path) -> None:
    cfg = load_config(sim_config)
    secrets = resolve_secrets(cfg, env={}, use_gh=False)
    secrets.dashboard_password = None
    svc = FleetService(cfg, secrets)
    await svc.start()
    try:
        await wait_for(lambda: svc.status.fleet == "login-required")
        with pytest.raises(LoginFailed):
            await svc.login("wrong-password")
        await svc.login(sim.info()["password"])
        await wait_for(lambda: svc.status.fleet == "live")
    finally:
        await svc.stop()
