#!/usr/bin/env python3
"""Fleet grid under load: 5,000 hosts, a steady ~250 host updates per second.

The simulator runs in its own process (``nfu-tui sim --hosts 5000`` with a heartbeat
every 19 s per host ≈ 263 updates/s nominal, so that at least 250/s arrive when the
machine is busy); this process runs the real pipeline — dashboard
client → fleet model → FleetService → the app's coalescing → HostGrid — in a headless
160×48 app, and presses ``j``/``k`` every 200 ms meanwhile. Prints the host updates the
grid applied per second, the delay between a key press and its effect (from posting
the key event, as the terminal driver does, until the grid has rendered the line with
the moved cursor) and the CPU time this process (the UI: client, model, app) used per
second of the measurement, as a share of one core. Targets (issue #15): key → effect
p95 < 50 ms and UI CPU < 50 % of a core at 5,000 hosts / 250 updates/s.

Usage: bench/bench_grid.py [--hosts N] [--seconds S] [--heartbeat SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_simulator(directory: Path, hosts: int, heartbeat: float) -> subprocess.Popen[str]:
    scenario = directory / "scenario.toml"
    scenario.write_text(f"heartbeat_seconds = {heartbeat}\nsync_seconds = 30.0\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nfu_tui", "sim", "--scenario", str(scenario), "--hosts", str(hosts),
         "--write-config", str(directory / "sim")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())
    return proc


async def run(config: Path, hosts: int, seconds: float) -> dict[str, float]:
    from textual import events

    from nfu_tui.config import load_config, resolve_secrets
    from nfu_tui.core.service import FleetService
    from nfu_tui.ui.app import NfuApp
    from nfu_tui.ui.widgets.host_grid import HostGrid

    cfg = load_config(config)
    service = FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False))
    received = 0

    def count(_event: object) -> None:
        nonlocal received
        received += 1

    service.subscribe(count)
    app = NfuApp(service)
    app.animation_level = "none"
    async with app.run_test(size=(160, 48)) as pilot:
        grid = app.screen.query_one(HostGrid)
        t_start = time.perf_counter()
        while grid.total < hosts or service.status.fleet != "live":
            if time.perf_counter() - t_start > 120:
                raise SystemExit(f"the grid did not fill: {grid.total}/{hosts} hosts")
            await pilot.pause(0.1)
        loaded = time.perf_counter() - t_start
        await pilot.pause(2.0)  # let the initial burst settle
        applied0, received0, t0 = grid.updates_applied, received, time.perf_counter()
        cpu0 = time.process_time()
        latencies: list[float] = []
        rendered: list[float] = [0.0]
        before: list[str | None] = [None]
        render_line = grid.render_line

        def timed_render_line(y: int):  # records when the grid paints the cursor's line
            if grid.cursor_host != before[0] and int(grid.scroll_offset.y) + y - 1 == grid.cursor_row:
                rendered[0] = time.perf_counter()
            return render_line(y)

        grid.render_line = timed_render_line  # type: ignore[method-assign]
        key = "j"
        while time.perf_counter() - t0 < seconds:
            before[0] = grid.cursor_host
            t_key = time.perf_counter()
            app.post_message(events.Key(key, key))
            while rendered[0] < t_key:
                if time.perf_counter() - t_key > 10:
                    raise SystemExit("a key press had no visible effect within 10 s")
                await asyncio.sleep(0.0005)
            latencies.append(rendered[0] - t_key)
            key = "k" if key == "j" else "j"
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        applied, events = grid.updates_applied - applied0, received - received0
    return {
        "load": loaded,
        "elapsed": elapsed,
        "cpu_share": cpu / elapsed,
        "events_per_s": events / elapsed,
        "applied_per_s": applied / elapsed,
        "presses": len(latencies),
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": sorted(latencies)[int(len(latencies) * 0.95) - 1] * 1000,
        "max_ms": max(latencies) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--heartbeat", type=float, default=19.0,
                        help="seconds between heartbeats of one host (19: ~263/s nominal, ≥ 250/s on a busy machine)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nfu-bench-grid-") as tmp:
        base = Path(tmp)
        for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
            (base / var).mkdir()
            os.environ[var] = str(base / var)
        sim = start_simulator(base, args.hosts, args.heartbeat)
        try:
            r = asyncio.run(run(base / "sim" / "config.toml", args.hosts, args.seconds))
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    print(f"hosts                          {args.hosts}  (heartbeat every {args.heartbeat:g} s each)")
    print(f"grid filled after              {r['load']:.1f} s")
    print(f"measured                       {r['elapsed']:.1f} s")
    print(f"service host events            {r['events_per_s']:.1f} /s")
    print(f"host updates applied by grid   {r['applied_per_s']:.1f} /s   (at least 250 /s)")
    print(f"key presses (j/k)              {r['presses']}")
    print(f"key → effect, median           {r['median_ms']:.1f} ms")
    print(f"key → effect, p95              {r['p95_ms']:.1f} ms   (target < 50 ms)")
    print(f"key → effect, worst            {r['max_ms']:.1f} ms")
    ok = r["p95_ms"] < 50 and r["cpu_share"] < 0.5 and r["applied_per_s"] >= 250
    print(f"UI process CPU                 {r['cpu_share'] * 100:.0f} % of a core   (target < 50 %)")
    print(f"targets                        {'ok' if ok else 'MISSED'}  (load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
