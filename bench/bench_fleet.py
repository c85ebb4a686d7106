"""Benchmark the fleet model and the log sanitizer.

    .venv/bin/python bench/bench_fleet.py [--hosts 1000] [--deltas 100000] [--lines 100000]

Prints figures only (no pass/fail): heartbeat deltas applied per second (from decoded
dicts and from JSON text, as off the socket), snapshot cost for the whole fleet, and
sanitized log lines per second on typical nixos-rebuild output. The targets from the
design: 1,000 hosts at 50 host updates/s is nothing; the sanitizer does >= 100k lines/s.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from nfu_tui.clients.fleet import FleetModel
from nfu_tui.sanitize import sanitize_line


def init_message(hosts: int) -> dict:
    rows = [
        {
            "id": f"host-{i:04d}", "hostname": f"host-{i:04d}", "status": "online", "agent_version": "3.1.5",
            "agent_outdated": False, "pending_command": "", "last_seen": "2025-12-28T14:30:05Z",
            "generation": "a1b2c3d", "host_type": "nixos", "device_type": "server", "location": "home",
            "theme_color": "#7aa2f7", "metrics": {"cpu": 5.0, "ram": 40.0, "swap": 0.0, "load": 0.3},
            "update_status": {
                "git": {"status": "ok", "message": "Up to date with remote", "checked_at": "2025-12-28T14:30:05Z"},
                "lock": {"status": "ok", "message": "flake.lock is current", "checked_at": "2025-12-28T14:30:05Z"},
                "system": {"status": "ok", "message": "Last switch succeeded", "checked_at": ""},
                "tests": None, "repo_url": "", "repo_dir": "",
            },
        }
        for i in range(hosts)
    ]  # fmt: skip
    return {"type": "init", "version": 0, "payload": {"hosts": rows, "commands": None, "pipelines": None, "events": None}}


def heartbeats(hosts: int, count: int, rng: random.Random) -> list[dict]:
    out = []
    for version in range(1, count + 1):
        second = version % 60
        out.append(
            {
                "type": "delta",
                "version": version,
                "payload": {
                    "type": "host_updated",
                    "id": f"host-{rng.randrange(hosts):04d}",
                    "fields": {
                        "status": "online",
                        "last_seen": f"2025-12-28T14:31:{second:02d}Z",
                        "generation": "a1b2c3d",
                        "metrics": {"cpu": round(rng.uniform(0, 100), 1), "ram": 41.3, "swap": 0, "load": 0.29},
                        "update_status": {
                            "git": {"checked_at": f"2025-12-28T14:31:{second:02d}Z", "message": "Up to date with remote", "status": "ok"},
                            "lock": {"checked_at": f"2025-12-28T14:31:{second:02d}Z", "message": "flake.lock is current", "status": "ok"},
                        },
                    },
                },
            }
        )  # fmt: skip
    return out


REBUILD_LINES = [
    "building the system configuration...",
    "these 42 derivations will be built:",
    "  /nix/store/8f9c2a1kq3v0y7w5x4z6b1n2m3p4r5s6-nixos-system-hsb1-25.11.20251220.1a2b3c4.drv",
    "copying path '/nix/store/1qk2l3m4n5o6p7q8r9s0t1u2v3w4x5y6-openssl-3.0.15' from 'https://cache.nixos.org'...",
    "building '/nix/store/zz1a2b3c4d5e6f7g8h9i0j1k2l3m4n5o-etc.drv'...",
    "activating the configuration...",
    "setting up /etc...",
    "reloading user units for admin...",
    "restarting sysinit-reactivation.target",
    "\x1b[1;32m✅ Switch completed successfully\x1b[0m",
    "[14:30:05] warning: Git tree '/var/lib/nixfleet-agent/repo' is dirty",
    "\x1b[31;1merror:\x1b[0m builder for '/nix/store/abc-foo.drv' failed with exit code 1",
    "downloading 'https://github.com/NixOS/nixpkgs/archive/1a2b3c4.tar.gz'\r[12.3 MiB DL]",
]


def bench_deltas(hosts: int, count: int) -> None:
    rng = random.Random(1)
    model = FleetModel()
    model.apply(init_message(hosts))
    msgs = heartbeats(hosts, count, rng)
    texts = [json.dumps(m) for m in msgs]

    start = time.perf_counter()
    for msg in msgs:
        model.apply(msg)
    elapsed = time.perf_counter() - start
    print(f"fleet: {count:,} heartbeat deltas on {hosts:,} hosts (decoded): {count / elapsed:,.0f} deltas/s")

    model = FleetModel()
    model.apply(init_message(hosts))
    start = time.perf_counter()
    for text in texts:
        model.apply(json.loads(text))
    elapsed = time.perf_counter() - start
    print(f"fleet: {count:,} heartbeat deltas incl. json.loads: {count / elapsed:,.0f} deltas/s")
    assert model.version == count and not model.needs_resync

    start = time.perf_counter()
    rounds = 200
    for i in range(rounds):
        model.apply(msgs[0] | {"version": count + 1 + i})
        model.snapshot()
    elapsed = time.perf_counter() - start
    print(f"fleet: delta + snapshot of {hosts:,} hosts: {elapsed / rounds * 1e3:.2f} ms each")

    start = time.perf_counter()
    model.apply(init_message(hosts) | {"type": "full_state"})
    print(f"fleet: full_state of {hosts:,} hosts applied in {(time.perf_counter() - start) * 1e3:.1f} ms")


def bench_sanitize(count: int) -> None:
    lines = [REBUILD_LINES[i % len(REBUILD_LINES)] for i in range(count)]
    start = time.perf_counter()
    for line in lines:
        sanitize_line(line)
    elapsed = time.perf_counter() - start
    print(f"sanitize: {count:,} typical nixos-rebuild lines: {count / elapsed:,.0f} lines/s")

    raw = [line.encode() for line in lines]
    start = time.perf_counter()
    for line in raw:
        sanitize_line(line)
    elapsed = time.perf_counter() - start
    print(f"sanitize: the same as bytes: {count / elapsed:,.0f} lines/s")

    hostile = ("\x1b]8;;https://x/\x1b\\" + "y" * 20 + "\x1b[31m") * 20_000
    start = time.perf_counter()
    sanitize_line(hostile)
    print(f"sanitize: one {len(hostile) / 1e6:.1f} MB hostile line: {(time.perf_counter() - start) * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--deltas", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    bench_deltas(args.hosts, args.deltas)
    bench_sanitize(args.lines)


if __name__ == "__main__":
    main()
