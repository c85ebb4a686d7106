"""The simulator against the real NixFleet 3.1.5 dashboard on the same scripted deploy.

Three hosts, web1 the canary, db1's switch fails: ``nfu-tui deploy --pr 42``, then a
rollback of web2 and db1's agent going away and coming back, once against the real
dashboard and agents and once against the simulator, while a second client records ``/ws``. The normalised traces (see trace.py) must agree, so the fast
everyday tests on the simulator exercise what the real dashboard does.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import sys
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario
from tests.real.conftest import FleetFactory, cli_env
from tests.real.trace import Recorder, Trace

HOSTS = {"hosts": {"web1": {"canary": True, "priority": 1}, "web2": {"priority": 2}, "db1": {"priority": 3}}}
# version.json lags the whole script (below): System is never verified; the canary ends unverified on both
# after a few seconds (the real one, a mirror, not even proven reached) and the run stops there.
VERIFY = {"flake_updates": {"verify_minutes": 0.05}}
# Hosts are added once the simulator runs: like the harness's, they register for the first time
# (no stored System/Tests history, which the scenario's hosts would have).
SCENARIO = fast_scenario(hosts=[], speed=20.0, heartbeat_seconds=1.0)
SIM_HOSTS = [HostSpec("web1"), HostSpec("web2"), HostSpec("db1", faults={"switch_fails"})]


async def record(url: str, password: str, config: Path, offline: Callable[[str, bool], Awaitable[None]]) -> tuple[Trace, str]:
    """The script: deploy PR 42 (CLI), roll web2 back, take db1's agent away and bring it back."""
    recorder = Recorder(url, password)
    await recorder.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfu_tui", "--config", str(config), "deploy", "--pr", "42", "--yes",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=cli_env())
    async with asyncio.timeout(240):
        out, _ = await proc.communicate()
    model = recorder.trace.model
    async with asyncio.timeout(30):  # web2 back from its post-switch restart
        while not ((h := model.host("web2")) and h.online and not h.pending_command):
            await asyncio.sleep(0.1)
    await recorder.run("rollback", "web2")
    await offline("db1", True)
    async with asyncio.timeout(30):
        while (h := model.host("db1")) is None or h.online:
            await asyncio.sleep(0.1)
    await offline("db1", False)
    async with asyncio.timeout(30):
        while (h := model.host("db1")) is None or not h.online:
            await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # the last agent restart and its status reports
    trace = await recorder.stop()
    return trace, out.decode()


def normalise(trace: Trace) -> dict[str, Any]:
    return {"kinds": sorted(trace.kinds), "hosts": trace.per_host(), "final": trace.final(),
            "shapes": {k: sorted(v) for k, v in trace.shapes.items()}}


async def test_simulator_matches_the_real_dashboard_on_a_scripted_deploy(real_fleet: FleetFactory,
                                                                         sim_factory: Any, tmp_path: Path) -> None:
    # version.json catches up with the merge only after the deploy (a slow CI), on both: every pull
    # ends PARTIAL and System stays outdated; with a lag in between the outcome would depend on timing.
    fleet = await asyncio.to_thread(real_fleet, fail_hosts="db1", publish_delay=300, config={**HOSTS, **VERIFY})

    async def agent(host: str, away: bool) -> None:
        await asyncio.to_thread(fleet.harness, "agent-stop" if away else "agent-start", host)

    real, real_out = await record(fleet.url, fleet.info["password"], fleet.config, agent)
    sim = await sim_factory(SCENARIO)
    sim.publish_delay = 300.0
    for spec in SIM_HOSTS:
        sim.dashboard.fleet.add_host(spec)
    cfg = sim.write_config(tmp_path / "sim-cfg", flake_updates={"automation": {"canary_wait_minutes": 0},
                                                                "verify_minutes": 0.05}, **HOSTS)
    os.environ["XDG_STATE_HOME"] = str(tmp_path / "sim-state")  # a fresh journal for the second deploy

    async def sim_agent(host: str, away: bool) -> None:
        sim.dashboard.set_online(host, not away)

    simulated, sim_out = await record(sim.dashboard.url, SCENARIO.password, cfg, sim_agent)
    assert "web2: skipped" in real_out and "web2: skipped" in sim_out, real_out + sim_out  # the canary stopped it
    r, s = normalise(real), normalise(simulated)
    (Path(os.environ.get("NFU_TRACE_DIR") or tmp_path) / "real-trace.json").write_text(json.dumps(r, indent=1))
    # What the scenario must show on the real side, or the comparison proves little.
    assert r["hosts"]["web1"]["commands"] == ["pull VALIDATING EXECUTING PARTIAL",
                                              "switch VALIDATING EXECUTING AWAITING_RECONNECT SUCCESS"], r["hosts"]
    assert r["hosts"]["web1"]["links"] == ["offline"]  # the agent restarted after its switch
    if s != r:
        diff = difflib.unified_diff(json.dumps(r, indent=1, sort_keys=True).splitlines(),
                                    json.dumps(s, indent=1, sort_keys=True).splitlines(), "real", "simulator", lineterm="")
        raise AssertionError("the simulator differs from the real dashboard:\n" + "\n".join(diff))
