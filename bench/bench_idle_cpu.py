"""CPU of a deploy that is only waiting: a queued offline host, a long switch, a dashboard outage.

Usage: ``python bench/bench_idle_cpu.py [--seconds 6]``

Runs the simulator in this process and ``nfu-tui deploy --pr 42 --yes`` as a child
process against it: one online host whose switch takes a while, one offline host (queued).
While the switch runs, the child's CPU time is sampled from ``/proc`` over three windows:
waiting for the switch, a dashboard outage (it answers 502 and drops the WebSocket), and
after the dashboard is back. Prints CPU seconds per wall second for each (target: at most
0.02, i.e. 2 % of a core); exits 1 when a window misses the target. ``--code DIR`` runs the
child from another checkout, to compare (e.g. before a change).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from nfu_tui.sim.runner import Simulator
from nfu_tui.sim.scenario import HostSpec, PRSpec, default_scenario

TARGET = 0.02
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux ``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def window(pid: int, seconds: float) -> float:
    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - cpu0) / (time.perf_counter() - wall0)


async def main(seconds: float, code: str | None) -> int:
    scenario = default_scenario()
    scenario.hosts = [HostSpec("a1", "desktop"), HostSpec("q1", "desktop", online=False, faults={"offline"})]
    scenario.prs = [PRSpec(42, labels=["dependencies"], ci="success")]
    scenario.speed = 0.6  # a switch takes 30-70 s: long enough for every window
    scenario.heartbeat_seconds = 5.0
    sim = Simulator(scenario)
    await sim.start()
    with tempfile.TemporaryDirectory(prefix="nfu-bench-") as tmp:
        cfg = sim.write_config(Path(tmp) / "cfg", flake_updates={"automation": {"canary_wait_minutes": 0}})
        env = {**os.environ, "XDG_STATE_HOME": f"{tmp}/state", "XDG_CACHE_HOME": f"{tmp}/cache",
               "XDG_CONFIG_HOME": f"{tmp}/config", "PYTHONUNBUFFERED": "1"}
        if code:  # compare with another checkout's nfu_tui (e.g. before a change)
            env["PYTHONPATH"] = code
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nfu_tui", "--config", str(cfg), "deploy", "--pr", "42", "--yes",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=tmp)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(120):
                while b"a1 switch started" not in (line := await proc.stdout.readline()):
                    if not line:
                        raise RuntimeError("the deploy ended before the switch started")
            drain = asyncio.ensure_future(proc.stdout.read())
            await asyncio.sleep(1.0)
            figures = {"waiting for the switch": await window(proc.pid, seconds)}
            sim.dashboard.set_unreachable(True)
            figures["dashboard outage"] = await window(proc.pid, seconds)
            sim.dashboard.set_unreachable(False)
            await asyncio.sleep(1.0)
            figures["dashboard back"] = await window(proc.pid, seconds)
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
            await sim.stop()
    print(f"deploy child, queued offline host q1, a1 switching (windows of {seconds:g} s)")
    for name, share in figures.items():
        print(f"{name:<24} {share:.4f} CPU s / wall s {'ok' if share <= TARGET else 'OVER'} (target ≤ {TARGET})")
    drain.cancel()
    return 0 if all(share <= TARGET for share in figures.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each measuring window")
    parser.add_argument("--code", metavar="DIR", help="run the deploy child with DIR's nfu_tui (to compare)")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.seconds, args.code)))
