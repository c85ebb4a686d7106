"""Several admins, one fleet: the simulator's Deployments API (contract §7b), each run recorded as a
GitHub deployment, another client's in-progress deployment as a lock (who, since, stale), a token
without "Deployments: write" (warned once, local lock only), and runs from elsewhere in the history."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.core import history as hist
from nfu_tui.core.service import FleetService
from nfu_tui.core.state import AppState
from nfu_tui.core.store import DeployLock, Store
from nfu_tui.errors import DeployLocked
from nfu_tui.sim.testing import fast_scenario

HEADERS = {"User-Agent": "t", "X-GitHub-Api-Version": "2022-11-28"}


# ------------------------------------------------------------------ the simulator's endpoints


async def api(sim: Any, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
    headers = {**HEADERS, "Authorization": f"Bearer {token or sim.github.token}"}
    async with httpx.AsyncClient(base_url=sim.github.url, headers=headers) as client:
        return await client.request(method, f"/repos/{sim.github.repo}{path}", **kw)


async def test_sim_deployments_follow_the_rest_contract(sim: Any) -> None:
    head, _ = sim.github.default_branch_head()
    # defaults: required contexts must be green, and a ref behind the default branch is auto-merged
    sim.github.set_ci(head, "failure")
    r = await api(sim, "POST", "/deployments", json={"ref": head, "environment": "fleet"})
    assert r.status_code == 409 and r.json()["message"].startswith("Conflict: Commit status checks failed")
    parent = (await api(sim, "GET", f"/commits/{head}")).json()["parents"][0]["sha"]  # behind main
    r = await api(sim, "POST", "/deployments", json={"ref": parent, "required_contexts": []})
    assert r.status_code == 202 and "Auto-merged" in r.json()["message"]
    r = await api(sim, "POST", "/deployments", json={"ref": "no-such-ref", "auto_merge": False})
    assert r.status_code == 422
    # what nfu-tui sends
    body = {"ref": head, "auto_merge": False, "required_contexts": [], "environment": "fleet",
            "description": "first", "payload": {"run": 1}}
    first = (await api(sim, "POST", "/deployments", json=body)).json()
    second = (await api(sim, "POST", "/deployments", json={**body, "description": "second"})).json()
    assert first["sha"] == head and first["payload"] == {"run": 1} and first["creator"]["login"] == "alice"
    assert first["production_environment"] is False and second["id"] > first["id"]
    r = await api(sim, "POST", f"/deployments/{first['id']}/statuses", json={"state": "in_progress"})
    assert r.status_code == 201 and r.json()["state"] == "in_progress"
    r = await api(sim, "POST", f"/deployments/{first['id']}/statuses", json={"state": "done"})
    assert r.status_code == 422
    r = await api(sim, "POST", f"/deployments/{first['id']}/statuses", json={"state": "success", "description": "x" * 141})
    assert r.status_code == 422
    # success of the newer one marks the older one inactive (auto_inactive)
    await api(sim, "POST", f"/deployments/{second['id']}/statuses", json={"state": "success", "description": "ok"})
    statuses = (await api(sim, "GET", f"/deployments/{first['id']}/statuses")).json()
    assert [s["state"] for s in statuses] == ["inactive", "in_progress"]  # newest first
    listed = (await api(sim, "GET", "/deployments", params={"environment": "fleet", "per_page": 1})).json()
    assert [d["id"] for d in listed] == [second["id"]]
    assert (await api(sim, "GET", "/deployments", params={"environment": "production"})).json() == []
    # only an inactive deployment (or the only one) can be deleted
    assert (await api(sim, "DELETE", f"/deployments/{second['id']}")).status_code == 422
    assert (await api(sim, "DELETE", f"/deployments/{first['id']}")).status_code == 204
    assert (await api(sim, "GET", f"/deployments/{first['id']}")).status_code == 404
    # a token without "Deployments: write"
    sim.github.add_token("no-deploy", login="carol", deployments=False)
    r = await api(sim, "GET", "/deployments", token="no-deploy")
    assert r.status_code == 403 and r.headers["x-accepted-github-permissions"] == "deployments=read"


# ------------------------------------------------------------------ two admins on one fleet


def make_service(sim: Any, base: Path, *, token: str | None = None, login: str = "alice") -> FleetService:
    cfg = load_config(sim.write_config(base / "cfg", flake_updates={"automation": {"canary_wait_minutes": 0}}))
    secrets = resolve_secrets(cfg, env={}, use_gh=False)
    if token is not None:
        sim.github.add_token(token, login=login)
        secrets = dataclasses.replace(secrets, github_token=SecretStr(token))
    (base / "state").mkdir(parents=True, exist_ok=True)
    return FleetService(cfg, secrets, store=Store(base / "state" / "nfu-tui.db"),
                        state=AppState.load(base / "state" / "state.json"), lock_label=f"{login}'s TUI")


async def deploy(service: FleetService, hosts: list[str]) -> Any:
    """A manual deploy of PR #42 under this "machine's" own local lock (beside its journal)."""
    directory = service.store.path.parent
    return await service.deploy(service.plan(42, hosts), lock=lambda: DeployLock(directory, label=service.lock_label))


async def ready(service: FleetService) -> None:
    await service.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not (service.fleet.synced and service.prs and service.prs[0].explanation is not None):
        assert loop.time() < deadline, "service not ready"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("sim", [fast_scenario(speed=40.0)], indirect=True)
async def test_a_run_elsewhere_is_a_lock_and_is_recorded_on_github(sim: Any, tmp_path: Path) -> None:
    alice, bob = make_service(sim, tmp_path / "alice"), make_service(sim, tmp_path / "bob", token="bob-token",
                                                                      login="bob")
    notes: list[Any] = []
    alice.subscribe(lambda ev: notes.append(ev.payload) if ev.kind == "notify" else None)
    bob_run: asyncio.Task[Any] = asyncio.ensure_future(asyncio.sleep(0))
    try:
        await ready(alice)
        await ready(bob)
        bob_run = asyncio.create_task(deploy(bob, ["gpc0", "hsb0"]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not any(d["state"] == "in_progress" for d in sim.github.deployments()):
            assert loop.time() < deadline and not bob_run.done(), "bob's deployment never went in_progress"
            await asyncio.sleep(0.02)
        with pytest.raises(DeployLocked) as locked:
            await deploy(alice, ["csb0"])
        message = str(locked.value)
        assert "a deploy runs elsewhere:" in message and "bob's TUI" in message and "since " in message
        assert "run #1 of PR #42" in message and "(GitHub deployment " in message and "by bob" in message
        assert alice.store.list_runs() == []  # nothing journaled, nothing merged by alice
        result = await asyncio.wait_for(bob_run, 60)
        assert result.ok
        await bob.deployments.flush()
        (dep,) = sim.github.deployments()
        assert dep["sha"] == result.merge_sha == sim.github.default_branch_head()[0]
        assert dep["environment"] == "fleet" and dep["creator"]["login"] == "bob"
        payload = dep["payload"]
        assert payload["actor"] and payload["run"] == result.run_id and payload["pr"] == 42
        assert set(payload["hosts"]) == {"gpc0", "hsb0"} and payload["trigger"] == "manual"
        states = [s["state"] for s in dep["statuses"]]
        assert states[0] == "in_progress" and states[-1] == "success" and set(states[1:-1]) <= {"in_progress"}
        assert dep["statuses"][-1]["description"] == result.summary()[:140]
        assert "2 of 2 hosts done" in [s["description"] for s in dep["statuses"]][-2]
        # alice's history has bob's run, from GitHub
        history = await hist.load_history_async(alice.store, 20, alice.deployments)
        (remote,) = history.runs
        assert remote.origin.startswith(f"GitHub deployment {dep['id']}") and remote.status == "succeeded"
        assert remote.merge_sha == result.merge_sha and remote.pr == 42 and remote.github_login == "bob"
        assert remote.ref == "elsewhere" and "2 ok" in remote.summary
        # ... and bob's own history does not list his run twice
        mine = await hist.load_history_async(bob.store, 20, bob.deployments)
        assert [r.origin for r in mine.runs] == [""]
        assert not [n for n in notes if n.title == "GitHub deployments off"]
    finally:
        if not bob_run.done():
            bob_run.cancel()
        await alice.stop()
        await bob.stop()


async def test_a_stale_deployment_elsewhere_is_no_lock(sim: Any, tmp_path: Path) -> None:
    alice = make_service(sim, tmp_path / "alice")
    try:
        await ready(alice)
        head, _ = sim.github.default_branch_head()
        r = await api(sim, "POST", "/deployments", json={
            "ref": head, "auto_merge": False, "required_contexts": [], "environment": "fleet",
            "payload": {"client": "elsewhere", "actor": "dave@old-laptop", "run": 3, "pr": 41}})
        await api(sim, "POST", f"/deployments/{r.json()['id']}/statuses", json={"state": "in_progress"})
        with pytest.raises(DeployLocked, match="dave@old-laptop, run #3 of PR #41"):
            await alice.deployments.check_lock()
        later = alice.deployments.clock() + timedelta(minutes=121)
        alice.deployments.clock = lambda: later  # the default staleness is 120 minutes
        await alice.deployments.check_lock()
        result = await deploy(alice, ["gpc0"])
        assert result.ok
    finally:
        await alice.stop()
    assert [d["state"] for d in sim.github.deployments()] == ["success", "inactive"]  # auto_inactive


async def test_without_deployments_write_it_warns_once_and_keeps_the_local_lock(sim: Any, tmp_path: Path) -> None:
    sim.github.set_deployments_permission(sim.github.token, False)
    alice = make_service(sim, tmp_path / "alice")
    notes: list[Any] = []
    alice.subscribe(lambda ev: notes.append(ev.payload) if ev.kind == "notify" else None)
    try:
        await ready(alice)
        result = await deploy(alice, ["gpc0"])
        assert result.ok and alice.store.list_runs()[0].status == "succeeded"
        await alice.deployments.check_lock()
        assert await alice.deployments.remote_runs() == []
    finally:
        await alice.stop()
    warnings = [n for n in notes if n.title == "GitHub deployments off"]
    assert len(warnings) == 1 and "Deployments: write" in warnings[0].message
    assert sim.github.deployments() == []


async def test_deployments_can_be_turned_off(sim: Any, tmp_path: Path) -> None:
    cfg = load_config(sim.write_config(tmp_path / "cfg", github={"deployments": False}))
    service = FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False))
    assert service.deployments is None
    await service.stop()


async def test_the_tui_history_lists_runs_from_elsewhere(sim: Any, tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from nfu_tui.ui.screens.history import HistoryScreen
    from test_ui_app import make_app, wait_for

    head, _ = sim.github.default_branch_head()
    r = await api(sim, "POST", "/deployments", json={
        "ref": head, "auto_merge": False, "required_contexts": [], "environment": "fleet",
        "payload": {"client": "elsewhere", "actor": "bob@laptop", "run": 7, "pr": 41, "trigger": "auto",
                    "hosts": {"web-01": {"wave": 1}}}})
    await api(sim, "POST", f"/deployments/{r.json()['id']}/statuses",
              json={"state": "failure", "description": "PR #41: failed (1 failed)"})
    app = make_app(sim, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.service is not None and app.service.fleet.synced, "the fleet")
        await pilot.press("H")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.history, "the history")
        (run,) = app.screen.history.runs
        assert (run.ref, run.status, run.actor, run.trigger, run.pr) == ("elsewhere", "failed", "bob@laptop", "auto", 41)
        table = app.screen.query_one("#history-runs", DataTable)
        assert [str(c) for c in table.get_row_at(0)][:3] == ["elsewhere", table.get_row_at(0)[1].plain,
                                                             "deploy PR #41"]
        await pilot.press("y")
        assert app.clipboard == head


@pytest.mark.parametrize("sim", [fast_scenario(speed=40.0)], indirect=True)
async def test_a_run_whose_outcome_is_unknown_is_an_error_on_github_and_unknown_elsewhere(sim: Any,
                                                                                          tmp_path: Path) -> None:
    """Not a proven failure: the deployment ends ``error`` (a valid state, contract §7b), not ``failure``, and
    another client's history reads it back as ``unknown``."""
    from test_engine import SIM_TIMEOUTS

    alice, bob = make_service(sim, tmp_path / "alice"), make_service(sim, tmp_path / "bob", token="bob-token",
                                                                      login="bob")
    try:
        await ready(alice)
        await ready(bob)
        sim.dashboard.set_dispatch_fault(lose=True, execute=False, ops=("switch",), times=1)  # no trace of it
        quick = dataclasses.replace(SIM_TIMEOUTS, evidence=2.0, evidence_poll=0.2)
        directory = bob.store.path.parent
        result = await bob.deploy(bob.plan(42, ["gpc0", "hsb0"]), timeouts=quick,
                                  lock=lambda: DeployLock(directory, label=bob.lock_label))
        assert result.status.value == "unknown", result.summary()
        assert bob.store.get_run(result.run_id).status == "unknown"
        await bob.deployments.flush()
        (dep,) = sim.github.deployments()
        assert dep["statuses"][-1]["state"] == "error"
        assert dep["statuses"][-1]["description"].startswith("PR #42: unknown")
        history = await hist.load_history_async(alice.store, 20, alice.deployments)
        (remote,) = history.runs
        assert remote.status == "unknown" and remote.origin.startswith(f"GitHub deployment {dep['id']}")
    finally:
        await alice.stop()
        await bob.stop()
