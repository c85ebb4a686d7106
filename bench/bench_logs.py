"""Benchmark log ingestion during a deploy: 50 hosts streaming build output at once.

    .venv/bin/python bench/bench_logs.py [--hosts 50] [--lines 1000000] [--buffer 2000]

Every line takes the path the deploy screen relies on: a ``command_output`` WebSocket
frame (JSON text, as off the socket) → ``parse_ws_message`` → ``FleetModel.apply``
(attribution to the host's running command, ``sanitize_line``, the per-host ring
buffer). The engine's "last error lines" then come from those buffers.

Prints figures only (no pass/fail): lines/s through the model (sanitize + ring
buffer, frames already decoded — JSON decoding is shared by every message and not
specific to logs) and through the whole path including ``json.loads``; then the
memory held by the model (tracemalloc peak and retained) after half of the lines
and after all of them — with bounded ring buffers both must be about the same. Target
from the issue: >= 100k lines/s with bounded memory. Throughput is measured without
tracemalloc (which slows Python down several times); memory in a separate traced pass.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import tracemalloc

from nfu_tui.clients._dashboard_protocol import parse_ws_message
from nfu_tui.clients.fleet import FleetModel

_PKGS = ["openssl-3.0.15", "glibc-2.40-36", "systemd-256.8", "linux-6.12.4", "python3-3.12.8", "nginx-1.26.2",
         "firefox-133.0", "mesa-24.2.8", "rustc-1.83.0", "gcc-14.2.0", "curl-8.11.0", "postgresql-16.6"]


def _store_path(rng: random.Random, name: str) -> str:
    digest = "".join(rng.choice("0123456789abcdfghijklmnpqrsvwxyz") for _ in range(32))
    return f"/nix/store/{digest}-{name}"


def output_lines(rng: random.Random, count: int) -> list[str]:
    """Typical nixos-rebuild output, some of it coloured, a few progress overprints and long lines."""
    templates = [
        lambda: f"copying path '{_store_path(rng, rng.choice(_PKGS))}' from 'https://cache.nixos.org'...",
        lambda: f"building '{_store_path(rng, rng.choice(_PKGS) + '.drv')}'...",
        lambda: f"\x1b[1;32m[{rng.randint(1, 400)}/{rng.randint(400, 900)} built]\x1b[0m {rng.choice(_PKGS)}",
        lambda: "  " + _store_path(rng, rng.choice(_PKGS) + ".drv"),
        lambda: f"\r[{rng.randint(0, 99)}%] downloading\r[100%] downloaded {rng.choice(_PKGS)}",
        lambda: "activating the configuration...",
        lambda: f"\x1b[31merror:\x1b[0m builder for '{_store_path(rng, 'foo.drv')}' failed with exit code 2",
        lambda: "gcc -O2 -fPIC " + " ".join(f"-I/nix/store/{'x' * 32}-inc{i}" for i in range(rng.randint(5, 40))),
    ]
    weights = [30, 25, 10, 15, 5, 2, 3, 10]
    return [rng.choices(templates, weights)[0]() for _ in range(count)]


def frames(hosts: int, lines: list[str], total: int) -> list[str]:
    """``command_output`` frames round-robin over the hosts (50 builds interleaved)."""
    out = []
    n = len(lines)
    for i in range(total):
        payload = {"host_id": f"host-{i % hosts:02d}", "line": lines[i % n], "command": "", "is_error": False}
        out.append(json.dumps({"type": "command_output", "payload": payload}))
    return out


def prepared_model(hosts: int, buffer: int) -> FleetModel:
    """A synced model where every host runs a switch (so output is attributed to it)."""
    model = FleetModel(output_lines=buffer)
    rows = [{"id": f"host-{i:02d}", "hostname": f"host-{i:02d}", "status": "online", "pending_command": "switch",
             "agent_version": "3.1.5", "generation": "a1b2c3d", "host_type": "nixos", "update_status": {}}
            for i in range(hosts)]
    commands = [{"id": f"20260101-000000.000-{i:04x}", "host_id": f"host-{i:02d}", "op": "switch",
                 "status": "EXECUTING", "created_at": "", "started_at": "", "finished_at": ""} for i in range(hosts)]
    model.apply({"type": "init", "version": 1, "payload": {"hosts": rows, "commands": commands,
                                                           "pipelines": None, "events": None}})
    return model


def ingest(model: FleetModel, batch: list[str]) -> None:
    """The whole path: frame text → decoded message → model."""
    for frame in batch:
        data = parse_ws_message(frame)
        if data is not None:
            model.apply(data)


def ingest_decoded(model: FleetModel, messages: list[dict]) -> None:
    """The model part only: sanitize, attribute, ring buffer."""
    apply = model.apply
    for message in messages:
        apply(message)


def rate(label: str, count: int, run) -> None:  # type: ignore[no-untyped-def]
    """Lines per second of wall time and of CPU time (the latter is steadier on a busy machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<28} {count / wall:>10,.0f} lines/s wall ({wall:.2f} s), {count / cpu:>10,.0f} lines/s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--lines", type=int, default=500_000, help="total lines over all hosts")
    parser.add_argument("--buffer", type=int, default=2000, help="ring buffer size per host")
    args = parser.parse_args()

    rng = random.Random(7)
    sample = output_lines(rng, 20_000)
    batch = frames(args.hosts, sample, args.lines)
    mean = sum(len(s) for s in sample) / len(sample)
    print(f"{args.hosts} hosts, {args.lines:,} lines (mean {mean:.0f} chars), ring buffer {args.buffer} lines/host")

    decoded = [json.loads(frame) for frame in batch]
    model = prepared_model(args.hosts, args.buffer)
    rate("model (sanitize + buffer)", args.lines, lambda: ingest_decoded(model, decoded))
    decoded.clear()  # free the decoded frames before the next measurement
    model = prepared_model(args.hosts, args.buffer)
    rate("whole path (+ json.loads)", args.lines, lambda: ingest(model, batch))
    kept = sum(len(model.output(f"host-{i:02d}")) for i in range(args.hosts))
    print(f"retained lines               {kept:>10,}")

    tracemalloc.start()
    model = prepared_model(args.hosts, args.buffer)
    quarter = len(batch) // 2  # the ring buffers are full after hosts × buffer lines
    ingest(model, batch[:quarter])
    q_current, q_peak = tracemalloc.get_traced_memory()
    ingest(model, batch[quarter:])
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mib = 1024 * 1024
    print(f"memory after {quarter:>9,} lines: retained {q_current / mib:6.1f} MiB, peak {q_peak / mib:6.1f} MiB")
    print(f"memory after {len(batch):>9,} lines: retained {current / mib:6.1f} MiB, peak {peak / mib:6.1f} MiB")


if __name__ == "__main__":
    main()
