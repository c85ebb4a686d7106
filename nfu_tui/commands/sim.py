"""`nfu-tui sim`: run the fake GitHub and the fake NixFleet dashboard until Ctrl-C/SIGTERM.

The first stdout line is one JSON object with the connection facts
(``github_url``, ``dashboard_url``, ``repo``, ``token``, ``password`` — all fake),
so scripts can start the simulator and read where it listens.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim",
        help="run the embedded simulator (fake GitHub + fake NixFleet dashboard on 127.0.0.1)",
        description="Serve a fake GitHub and a fake NixFleet dashboard on 127.0.0.1 until interrupted. "
        "The first line on stdout is a JSON object with the URLs and the fake credentials.",
    )
    p.add_argument("--scenario", metavar="FILE", help="scenario TOML (default: a dozen hosts, one update PR)")
    p.add_argument("--hosts", type=int, metavar="N", help="replace the scenario's hosts by N generated ones")
    p.add_argument("--speed", type=float, metavar="X", help="simulated commands run X times faster")
    p.add_argument("--github-port", type=int, default=0, metavar="PORT", help="fake GitHub port (default: any free)")
    p.add_argument("--dashboard-port", type=int, default=0, metavar="PORT", help="fake dashboard port (default: any free)")
    p.add_argument("--write-config", metavar="DIR", help="also write DIR/config.toml (+ secret files) for nfu-tui")


def _fail(message: str) -> int:
    print(f"nfu-tui sim: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import signal
    from pathlib import Path

    from nfu_tui.sim.scenario import ScenarioError, load_scenario

    if args.hosts is not None and not 1 <= args.hosts <= 5000:
        return _fail("--hosts must be between 1 and 5000")
    if args.speed is not None and not args.speed > 0:
        return _fail("--speed must be positive")
    for name in ("github_port", "dashboard_port"):
        if not 0 <= getattr(args, name) <= 65535:
            return _fail(f"--{name.replace('_', '-')} must be between 0 and 65535")
    try:
        scenario = load_scenario(args.scenario, hosts=args.hosts)
    except ScenarioError as exc:
        return _fail(str(exc))
    if args.speed is not None:
        scenario.speed = args.speed

    from nfu_tui.sim.runner import Simulator

    async def serve() -> int:
        sim = Simulator(scenario, github_port=args.github_port, dashboard_port=args.dashboard_port)
        try:
            await sim.start()
        except OSError as exc:
            return _fail(f"cannot listen: {exc.strerror or exc}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            print(json.dumps(sim.info()), flush=True)
            hosts = len(scenario.hosts)
            print(f"fake GitHub     {sim.github.url}  (repo {scenario.repo}, GraphQL {sim.github.url}/graphql)")
            print(f"fake dashboard  {sim.dashboard.url}  ({hosts} hosts, speed ×{scenario.speed:g})")
            if args.write_config:
                try:
                    path = sim.write_config(Path(args.write_config).expanduser())
                except OSError as exc:
                    return _fail(f"cannot write the configuration: {exc.strerror or exc}")
                print(f"config written  {path}  →  nfu-tui --config {path}")
            else:
                print("point nfu-tui at it with --write-config DIR, then: nfu-tui --config DIR/config.toml")
            print("Ctrl-C to stop", flush=True)
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await sim.stop()
        return 0

    return asyncio.run(serve())
