"""The simulator against the real NixFleet 3.1.5 dashboard on the same scripted deploy.

Three hosts, web1 the canary, db1's switch fails: ``nfu-tui deploy --pr 42`` runs once
against the real dashboard and agents and once against the simulator, while a second
client records ``/ws``. The normalised traces (see trace.py) must agree, so the fast
everyday tests on the simulator exercise what the real dashboard does.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario
from tests.real.conftest import FleetFactory, cli_env
from tests.real.trace import Recorder, Trace

HOSTS = {"hosts": {"web1": {"canary": True, "priority": 1}, "web2": {"priority": 2}, "db1": {"priority": 3}}}
SCENARIO = fast_scenario(hosts=[HostSpec("web1"), HostSpec("web2"), HostSpec("db1", faults={"switch_fails"})],
                         speed=20.0, heartbeat_seconds=1.0)


async def record_deploy(url: str, password: str, config: Path) -> tuple[Trace, str]:
    recorder = Recorder(url, password)
    await recorder.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfu_tui", "--config", str(config), "deploy", "--pr", "42", "--yes",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=cli_env())
    async with asyncio.timeout(240):
        out, _ = await proc.communicate()
    await asyncio.sleep(3)  # the last agent restart and its status reports
    trace = await recorder.stop()
    return trace, out.decode()


def normalise(trace: Trace) -> dict[str, Any]:
    return {"kinds": sorted(trace.kinds), "hosts": trace.per_host(), "final": trace.final()}


async def test_simulator_matches_the_real_dashboard_on_a_scripted_deploy(real_fleet: FleetFactory,
                                                                         sim_factory: Any, tmp_path: Path) -> None:
    # version.json catches up with the merge only after the deploy (a slow CI), on both: every pull
    # ends PARTIAL and System stays outdated; with a lag in between the outcome would depend on timing.
    fleet = await asyncio.to_thread(real_fleet, fail_hosts="db1", publish_delay=300, config=HOSTS)
    real, real_out = await record_deploy(fleet.url, fleet.info["password"], fleet.config)
    sim = await sim_factory(SCENARIO)
    sim.publish_delay = 300.0
    cfg = sim.write_config(tmp_path / "sim-cfg", flake_updates={"automation": {"canary_wait_minutes": 0}}, **HOSTS)
    for var in ("XDG_STATE_HOME",):  # a fresh journal for the second deploy
        os.environ[var] = str(tmp_path / "sim-state")
    simulated, sim_out = await record_deploy(sim.dashboard.url, SCENARIO.password, cfg)
    assert "db1: failed (switch)" in real_out and "db1: failed (switch)" in sim_out, real_out + sim_out
    r, s = normalise(real), normalise(simulated)
    (Path(os.environ.get("NFU_TRACE_DIR") or tmp_path) / "real-trace.json").write_text(json.dumps(r, indent=1))
    # What the scenario must show on the real side, or the comparison proves little.
    assert r["hosts"]["web1"]["commands"] == ["pull VALIDATING EXECUTING PARTIAL",
                                              "switch VALIDATING EXECUTING AWAITING_RECONNECT SUCCESS"], r["hosts"]
    assert r["hosts"]["web1"]["links"] == ["offline"]  # the agent restarted after its switch
    assert r["hosts"]["db1"]["commands"][-1] == "switch VALIDATING EXECUTING ERROR"
    if s != r:
        diff = difflib.unified_diff(json.dumps(r, indent=1, sort_keys=True).splitlines(),
                                    json.dumps(s, indent=1, sort_keys=True).splitlines(), "real", "simulator", lineterm="")
        raise AssertionError("the simulator differs from the real dashboard:\n" + "\n".join(diff))
