#!/usr/bin/env python3
"""Regenerate ``screenshots/metrics.txt``: what ``nfu-tui auto --metrics-listen`` serves.

``nfu-tui auto`` runs as a process against the embedded simulator (four hosts; ``hsb0``
fails its switch, ``csb0`` is held), merges PR #42, deploys, fails on hsb0 and rolls back;
then ``/metrics`` is scraped once. Usage: ``.venv/bin/python screenshots/make_metrics.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


async def main(base: Path) -> str:
    import httpx

    from nfu_tui.core.state import AppState
    from nfu_tui.sim.runner import Simulator
    from nfu_tui.sim.scenario import HostSpec, PRSpec
    from nfu_tui.sim.testing import fast_scenario

    hosts = [HostSpec("gpc0", "gaming", "home"), HostSpec("hsb0", "server", "home", faults={"switch_fails"}),
             HostSpec("hsb1", "server", "home"), HostSpec("csb0", "server", "cloud")]
    scenario = fast_scenario(hosts=hosts, prs=[PRSpec(42, labels=["dependencies"], ci="success")], speed=200.0,
                             heartbeat_seconds=0.05)
    async with Simulator(scenario) as sim:
        cfg = sim.write_config(base / "cfg", flake_updates={"automation": {
            "enabled": True, "delay_minutes": 0, "canary_wait_minutes": 0}})
        state = AppState.load()
        state.held.add("csb0")
        state.save()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nfu_tui", "--config", str(cfg), "auto", "--metrics-listen", "127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        url = ""
        try:
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), 120)
                if not line:
                    raise SystemExit("nfu-tui auto exited early")
                event = json.loads(line)
                if event["event"] == "metrics":
                    url = event["url"]
                if event["event"] == "rollback_finished":
                    break
            async with httpx.AsyncClient() as client:
                return (await client.get(url, timeout=10)).text
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="nfu-metrics-") as tmp:
        for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
            os.environ[var] = str(Path(tmp) / var.lower())
        text = asyncio.run(main(Path(tmp)))
    (HERE / "metrics.txt").write_text(text)
    print(f"wrote {HERE / 'metrics.txt'} ({len(text.splitlines())} lines)")
