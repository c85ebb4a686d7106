#!/usr/bin/env python3
"""Parallel deploys keep the pipe full: 200 simulated hosts, ``max_parallel = 20``.

The simulator runs in its own process with 200 hosts whose durations are known: each
host's switch takes a fixed time (27–33 simulated seconds, spread over the hosts), its
pull 2.8 s, the agent's restart after the switch 2.5 s, the post-switch tests 8 s (the
engine verifies each host and runs its tests: ``post_switch_tests = "always"``);
everything runs ``--speed`` times faster. The agents send a heartbeat right after each
result and after a restart (legacy repo mode), so no step waits for the next regular
heartbeat. One host is a canary (``canary_wait_minutes`` below). The client is the
real ``nfu-tui deploy --pr 42 --yes`` in its own process.

From the run's journal (host_started / host_finished / canary_gate timestamps) it prints

* the **makespan**: first host started → last host finished;
* the **ideal**: the canary phase (the canary's duration + the canary wait) plus the sum
  of the other hosts' durations / 20 — what a scheduler without any overhead and without
  idle slots would need; target: makespan ≤ 1.05 × ideal;
* for information, the same split per phase, what greedy list scheduling in the run's
  start order would need with zero overhead (durations differ, so the last slots cannot
  all end together), the mean time a host took against its known duration (the
  per-host overhead of dispatch, following and the dashboard), and the most hosts that
  ran at once;
* the client's CPU seconds for the whole run (user + system of the ``deploy`` process).

Every host must end ``ok`` (the dashboard refuses a second command on a busy host, so a
broken one-command-per-host rule would show as failures).

Usage: bench/bench_parallel_deploy.py [--hosts 200] [--parallel 20] [--speed 5]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from datetime import datetime
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.05
PULL_S = 2.8  # the simulated pull: 0.6 + 1.2 + 1.0 s of output bursts
AFTER_SWITCH_S = 0.5  # the agent's pause between reporting the switch and restarting
RESTART_S = 2.0
TEST_S = 8.0  # the post-switch test op: 8 test scripts, 1 s each (flake_updates.post_switch_tests = "always")
CANARY_WAIT_MIN = 0.05


def switch_seconds(i: int) -> float:
    return 27.0 + (i * 7 % 13) * 0.5  # 27 … 33 s, spread over the hosts


def host_name(i: int) -> str:
    return f"h{i:03d}"


def scenario_toml(hosts: int, speed: float) -> str:
    data = {
        "speed": speed,
        "heartbeat_seconds": 5.0,
        "heartbeat_after_command": True,  # a pull ends with the agent's result, not up to 5 s later
        "sync_seconds": 30.0,
        "hosts": [
            {"name": host_name(i), "device_type": "server", "location": "cloud",
             "switch_seconds": switch_seconds(i), "restart_seconds": RESTART_S}
            for i in range(hosts)
        ],
        "prs": [{"number": 42, "labels": ["dependencies"], "ci": "success"}],
    }  # fmt: skip
    return tomli_w.dumps(data)


def known_duration(i: int, speed: float) -> float:
    return (PULL_S + switch_seconds(i) + AFTER_SWITCH_S + RESTART_S + TEST_S) / speed


def greedy(durations: list[float], slots: int) -> float:
    """Makespan of list scheduling: each job starts on the first free slot, in order."""
    free = [0.0] * slots
    end = 0.0
    for d in durations:
        start = heapq.heappop(free)
        heapq.heappush(free, start + d)
        end = max(end, start + d)
    return end


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--speed", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nfu-bench-parallel-") as tmp:
        base = Path(tmp)
        env = dict(os.environ)
        for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
            (base / var).mkdir()
            env[var] = str(base / var)
        scenario = base / "scenario.toml"
        scenario.write_text(scenario_toml(args.hosts, args.speed))
        sim = subprocess.Popen(
            [sys.executable, "-m", "nfu_tui", "sim", "--scenario", str(scenario), "--write-config", str(base / "sim")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert sim.stdout is not None
            json.loads(sim.stdout.readline())
            while not sim.stdout.readline().startswith("config written"):
                pass
            config = base / "sim" / "config.toml"
            data = tomllib.loads(config.read_text())
            data["flake_updates"] = {"post_switch_tests": "always",
                                     "automation": {"max_parallel": args.parallel,
                                                    "canary_wait_minutes": CANARY_WAIT_MIN}}
            data["hosts"] = {host_name(0): {"canary": True}}
            config.write_text(tomli_w.dumps(data))
            deploy = subprocess.Popen(
                [sys.executable, "-m", "nfu_tui", "--config", str(config), "deploy", "--pr", "42", "--yes"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            assert deploy.stdout is not None
            output = deploy.stdout.read()
            _, status, usage = os.wait4(deploy.pid, 0)
            deploy.returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
        finally:
            sim.terminate()
            sim.wait(timeout=10)
        if deploy.returncode != 0:
            print(output[-3000:])
            raise SystemExit(f"the deploy failed (exit {deploy.returncode})")
        os.environ.update({k: env[k] for k in ("XDG_STATE_HOME",)})
        from nfu_tui.core.store import Store

        with Store() as store:
            run = store.get_run(store.list_runs()[0].id)
    assert run.steps is not None
    started: dict[str, datetime] = {}
    finished: dict[str, datetime] = {}
    gate: datetime | None = None
    for step in run.steps:
        if step.step == "host_started" and step.host and step.host not in started:
            started[step.host] = step.at
        elif step.step == "host_finished" and step.host:
            finished[step.host] = step.at
        elif step.step == "canary_gate":
            gate = step.at
    bad = {h: o for h, o in run.host_outcomes.items() if o != "ok"}
    if len(finished) != args.hosts or bad:
        raise SystemExit(f"not every host deployed: {len(finished)}/{args.hosts} finished; not ok: {bad}")
    index = {host_name(i): i for i in range(args.hosts)}
    canary = host_name(0)
    t0 = min(started.values())
    makespan = (max(finished.values()) - t0).total_seconds()
    d_canary = known_duration(0, args.speed)
    canary_ideal = d_canary + CANARY_WAIT_MIN * 60
    rest = sorted((h for h in started if h != canary), key=lambda h: started[h])
    rest_sum = sum(known_duration(index[h], args.speed) for h in rest)
    rest_ideal = rest_sum / args.parallel
    ideal = canary_ideal + rest_ideal
    assert gate is not None
    canary_actual = (gate - t0).total_seconds()
    rest_actual = (max(finished.values()) - gate).total_seconds()
    list_sched = greedy([known_duration(index[h], args.speed) for h in rest], args.parallel)
    took = [(finished[h] - started[h]).total_seconds() for h in started]
    extra = sorted(t - known_duration(index[h], args.speed) for h, t in zip(started, took))
    overhead = sum(extra) / len(extra)
    events = sorted([(started[h], 1) for h in started] + [(finished[h], -1) for h in started])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    ratio = makespan / ideal
    print(f"hosts                      {args.hosts}  (max_parallel {args.parallel}, 1 canary, speed ×{args.speed:g}; "
          f"known durations {min(known_duration(i, args.speed) for i in range(args.hosts)):.2f}–"
          f"{max(known_duration(i, args.speed) for i in range(args.hosts)):.2f} s)")
    print(f"canary phase               {canary_actual:6.1f} s   ideal {canary_ideal:6.1f} s "
          f"(its duration {d_canary:.2f} s + the {CANARY_WAIT_MIN * 60:g} s canary wait)")
    print(f"the other hosts            {rest_actual:6.1f} s   ideal {rest_ideal:6.1f} s (sum {rest_sum:.1f} s / "
          f"{args.parallel}); zero-overhead list scheduling {list_sched:.1f} s")
    print(f"per host                   {overhead * 1000:6.0f} ms more than its known duration on average "
          f"(median {extra[len(extra) // 2] * 1000:.0f}, max {extra[-1] * 1000:.0f})")
    print(f"most hosts at once         {peak}")
    print(f"makespan                   {makespan:6.1f} s   ideal {ideal:6.1f} s")
    print(f"makespan / ideal           {ratio:6.3f}×   (target ≤ {TARGET}×)  {'ok' if ratio <= TARGET else 'MISSED'}")
    print(f"client CPU (deploy)        {cpu:6.1f} s   for the whole run ({cpu / makespan * 100:.0f} % of a core over the makespan)")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
