"""Simulator cost at fleet scale: start-up time and CPU use of heartbeats.

Usage: ``python bench/bench_sim.py [--hosts 1000] [--seconds 10]``

Prints the time to start the whole simulator (fake GitHub + fake dashboard) with N
hosts, then the CPU share of this process over a window of real heartbeats (every
5 s per online host, as in production): once with no browser connected and once
with one ``/ws`` client reading every delta.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
from websockets.asyncio.client import connect

from nfu_tui.sim.runner import Simulator
from nfu_tui.sim.scenario import default_scenario


async def cpu_share(seconds: float) -> float:
    """Fraction of one core this process used while the loop idled for ``seconds``."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (time.process_time() - cpu0) / (time.perf_counter() - wall0)


async def main(hosts: int, seconds: float) -> None:
    scenario = default_scenario(hosts=hosts)
    scenario.heartbeat_seconds = 5.0
    sim = Simulator(scenario)
    t0 = time.perf_counter()
    await sim.start()
    started = time.perf_counter() - t0
    online = sum(1 for h in sim.dashboard.hosts.values() if h.status == "online")
    print(f"hosts                 {hosts} ({online} online)")
    print(f"simulator start       {started * 1000:.0f} ms")
    try:
        await asyncio.sleep(scenario.heartbeat_seconds)  # let the staggered heartbeats settle
        v0 = sim.dashboard.version
        share = await cpu_share(seconds)
        rate = (sim.dashboard.version - v0) / seconds
        print(f"no client             {share * 100:5.1f} % CPU, {rate:.0f} changes/s")

        async with httpx.AsyncClient(base_url=sim.dashboard.url, follow_redirects=False, verify=False) as http:
            await http.post("/login", data={"password": scenario.password})
            cookie = f"nixfleet_session={http.cookies.get('nixfleet_session')}"
        url = sim.dashboard.url.replace("http://", "ws://") + "/ws"
        async with connect(url, additional_headers={"Cookie": cookie}, max_size=None) as ws:
            init = await ws.recv()
            frames = 0

            async def drain() -> None:
                nonlocal frames
                async for _ in ws:
                    frames += 1

            reader = asyncio.create_task(drain())
            share = await cpu_share(seconds)
            reader.cancel()
            print(f"one /ws client        {share * 100:5.1f} % CPU (server + client), {frames / seconds:.0f} frames/s, "
                  f"init {len(init) / 1024:.0f} KiB")
    finally:
        await sim.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    ns = parser.parse_args()
    asyncio.run(main(ns.hosts, ns.seconds))
