#!/usr/bin/env python3
"""Start-up time: process start → first frame, nfu-tui (against the simulator) vs a bare
Textual app showing a DataTable. Prints both medians and the ratio (target ≤ 1.5×).

Each app runs in a child process on a pseudo-terminal (80×24); the clock stops when the
app's first frame reaches the terminal (a marker text from its first screen shows up in
the output). nfu-tui reads a config written by ``nfu-tui sim --write-config`` (the
simulator runs in another process) and keeps its state in a throw-away XDG directory.

Usage: bench/bench_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

BARE_APP = """
from textual.app import App
from textual.widgets import DataTable, Footer, Header


class Bare(App):
    def compose(self):
        yield Header()
        yield DataTable()
        yield Footer()

    def on_mount(self):
        table = self.query_one(DataTable)
        table.add_columns("Host", "Status")
        table.add_rows([(f"host{i:02d}", "online") for i in range(12)])


Bare().run()
"""


def first_frame(cmd: list[str], marker: bytes, env: dict[str, str], timeout: float = 30.0) -> float:
    """Seconds from spawning ``cmd`` on a pty until ``marker`` appears in its output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        while marker not in seen:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"no first frame from {cmd[-1]!r} within {timeout:g} s; output: {seen[-300:]!r}")
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:  # child closed the pty
                    raise RuntimeError(f"{cmd[-1]!r} exited before its first frame: {seen[-300:]!r}") from None
        return time.perf_counter() - start
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)


def start_simulator(directory: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "nfu_tui", "sim", "--write-config", str(directory)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())  # the simulator is up once it printed its URLs
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nfu-bench-startup-") as tmp:
        base = Path(tmp)
        env = dict(os.environ, TERM="xterm-256color", TEXTUAL_ANIMATIONS="none")
        for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
            (base / var).mkdir()
            env[var] = str(base / var)
        bare_script = base / "bare_app.py"
        bare_script.write_text(BARE_APP)
        sim = start_simulator(base / "sim")
        try:
            config = base / "sim" / "config.toml"
            ours_cmd = [PYTHON, "-m", "nfu_tui", "--config", str(config)]
            bare_cmd = [PYTHON, str(bare_script)]
            # one warm-up each (bytecode caches, page cache)
            first_frame(ours_cmd, b"Fleet", env)
            first_frame(bare_cmd, b"host00", env)
            ours, bare = [], []
            for _ in range(args.runs):
                ours.append(first_frame(ours_cmd, b"Fleet", env))
                bare.append(first_frame(bare_cmd, b"host00", env))
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    o, b = statistics.median(ours), statistics.median(bare)
    print(f"runs per app                 {args.runs}")
    print(f"nfu-tui first frame (median) {o * 1000:7.0f} ms   (min {min(ours) * 1000:.0f}, max {max(ours) * 1000:.0f})")
    print(f"bare DataTable app  (median) {b * 1000:7.0f} ms   (min {min(bare) * 1000:.0f}, max {max(bare) * 1000:.0f})")
    print(f"ratio                        {o / b:7.2f}×   (target ≤ 1.5×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
