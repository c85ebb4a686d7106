#!/usr/bin/env python3
"""Start-up time of nfu-tui against a bare Textual app (Header, DataTable, Footer), same run.

Two figures, each the median of ``--runs`` starts, with the targets of issue #15:

* **first frame**: process start → the first screen reaches the terminal (nfu-tui: its
  "Fleet" pane title; the bare app: its title in the Header) — target ≤ 1.3× the bare app;
* **hosts on screen**: process start → the first host name is drawn (nfu-tui: the first
  host of the fleet; the bare app: its first row) — target ≤ 2× the bare app.

nfu-tui starts as a user would, ``nfu-tui --config FILE`` against the simulator (its own
process, 12 hosts), with the fleet cache of its previous session (a warm-up start that
quits with ``q``): its first frame shows the last known fleet, marked stale, while it
connects. For information, also without that cache (a first start ever: the hosts come
from the dashboard) and until the dashboard is live (the header says "● live").

Each app runs in a child process on a pseudo-terminal (80×24); a clock stops when its
marker shows up in the output, and the CPU time the process had used by then is read
from ``/proc``. Up to the first frame both apps only compute (nothing waits for the
network), so on an idle machine the two clocks agree; on a shared one the wall clock
mostly measures the others' load, so the verdict is taken on CPU time (10 ms ticks) and
the wall clock is printed for information. Starts alternate between the apps so that
load on the machine hits them alike.
Both run with bytecode caches, as an installed program does (a throw-away
``PYTHONPYCACHEPREFIX`` filled by warm-up starts, even under ``PYTHONDONTWRITEBYTECODE``).

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
FIRST_FRAME_TARGET = 1.3
HOSTS_TARGET = 2.0

BARE_APP = """
from textual.app import App
from textual.widgets import DataTable, Footer, Header


class BareApp(App):
    TITLE = "BareApp"

    def compose(self):
        yield Header()
        yield DataTable()
        yield Footer()

    def on_mount(self):
        table = self.query_one(DataTable)
        table.add_columns("Host", "Status")
        table.add_rows([(f"host{i:02d}", "online") for i in range(12)])


BareApp().run()
"""


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def timed_start(cmd: list[str], markers: list[bytes], env: dict[str, str], *, quit_key: bytes = b"",
                timeout: float = 30.0) -> tuple[list[float], list[float]]:
    """Seconds from spawning ``cmd`` on a pty until each of ``markers`` first appears in its output:
    wall-clock time, and the CPU time the process had used by then.

    Then the app is ended: with ``quit_key`` typed (and its exit awaited), else SIGTERM.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = b""
    found: dict[bytes, float] = {}
    cpu: dict[bytes, float] = {}
    try:
        while len(found) < len(markers):
            if time.perf_counter() - start > timeout:
                missing = [m for m in markers if m not in found]
                raise TimeoutError(f"{missing} not shown by {cmd[-1]!r} within {timeout:g} s; output: {seen[-300:]!r}")
            ready, _, _ = select.select([master], [], [], 0.01)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:  # child closed the pty
                    raise RuntimeError(f"{cmd[-1]!r} exited early: {seen[-300:]!r}") from None
                now = time.perf_counter() - start
                used = None
                for marker in markers:
                    if marker not in found and marker in seen:
                        found[marker] = now
                        used = cpu_seconds(proc.pid) if used is None else used
                        cpu[marker] = used
        if quit_key:
            os.write(master, quit_key)
            deadline = time.perf_counter() + 15
            while proc.poll() is None and time.perf_counter() < deadline:
                if select.select([master], [], [], 0.05)[0]:
                    try:
                        os.read(master, 65536)
                    except OSError:
                        break
            proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
        return [found[m] for m in markers], [cpu[m] for m in markers]
    finally:
        if proc.poll() is None:
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


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:5.0f} ms (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nfu-bench-startup-") as tmp:
        base = Path(tmp)
        env = dict(os.environ, TERM="xterm-256color", TEXTUAL_ANIMATIONS="none")
        # Bytecode as an installed program has it (pip compiles on install): written by the warm-up
        # starts to a throw-away prefix for both apps, whatever PYTHONDONTWRITEBYTECODE says.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
        for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
            (base / var).mkdir()
            env[var] = str(base / var)
        cache = base / "XDG_STATE_HOME" / "nfu-tui" / "fleet-cache.json"
        bare_script = base / "bare_app.py"
        bare_script.write_text(BARE_APP)
        sim = start_simulator(base / "sim")
        try:
            ours_cmd = [PYTHON, "-m", "nfu_tui", "--config", str(base / "sim" / "config.toml")]
            bare_cmd = [PYTHON, str(bare_script)]
            ours_markers = [b"Fleet", b"csb0", "● live".encode()]
            bare_markers = [b"BareApp", b"host00"]
            # warm-up (bytecode caches, page cache); nfu-tui's quits with q and leaves its fleet cache
            timed_start(bare_cmd, bare_markers, env)
            timed_start(ours_cmd, ours_markers, env, quit_key=b"q")
            if not cache.exists():
                raise SystemExit("nfu-tui left no fleet cache after quitting")
            saved = cache.read_bytes()
            ours: list[tuple[list[float], list[float]]] = []
            cold: list[tuple[list[float], list[float]]] = []
            bare: list[tuple[list[float], list[float]]] = []
            for _ in range(args.runs):
                cache.write_bytes(saved)
                ours.append(timed_start(ours_cmd, ours_markers, env))
                bare.append(timed_start(bare_cmd, bare_markers, env))
                cache.unlink()
                cold.append(timed_start(ours_cmd, ours_markers, env))
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    load = os.getloadavg()[0]

    def col(runs: list[tuple[list[float], list[float]]], i: int, kind: int = 0) -> list[float]:
        return [r[kind][i] for r in runs]

    ok = True
    print(f"runs per app                     {args.runs} (medians; 80×24 pty; simulator with 12 hosts; "
          f"load average {load:.1f} on {os.cpu_count()} cores)")
    for label, i, j, target, note in (
        ("first frame", 0, 0, FIRST_FRAME_TARGET, ""),
        ("hosts on screen", 1, 1, HOSTS_TARGET, "   (from its fleet cache, marked stale)"),
    ):
        print(f"{label:<17}nfu-tui         wall {median_ms(col(ours, i))}{note}")
        print(f"{'':<17}bare app        wall {median_ms(col(bare, j))}")
        wall = statistics.median(col(ours, i)) / statistics.median(col(bare, j))
        print(f"{'':<17}ratio (wall)      {wall:6.2f}×   (target ≤ {target}×; information: depends on the load)")
        print(f"{'':<17}nfu-tui         CPU  {median_ms(col(ours, i, 1))}")
        print(f"{'':<17}bare app        CPU  {median_ms(col(bare, j, 1))}")
        cpu = statistics.median(col(ours, i, 1)) / statistics.median(col(bare, j, 1))
        ok = ok and cpu <= target
        print(f"{'':<17}ratio (CPU)       {cpu:6.2f}×   (target ≤ {target}×)  {'ok' if cpu <= target else 'MISSED'}")
    print(f"dashboard live   nfu-tui         wall {median_ms(col(ours, 2))}   (information)")
    b_rows = statistics.median(col(bare, 1))
    print(f"without a cache  first frame     wall {median_ms(col(cold, 0))}   (information: a first start ever)")
    print(f"                 hosts on screen wall {median_ms(col(cold, 1))}   "
          f"({statistics.median(col(cold, 1)) / b_rows:.2f}× the bare app)")
    print(f"                 dashboard live  wall {median_ms(col(cold, 2))}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
