"""`nfu-tui demo`: the TUI against the embedded simulator (no token, no fleet needed).

``--backend ssh`` serves the scenario's hosts over SSH instead (:mod:`nfu_tui.sim.sshhosts`):
one in-process asyncssh server per host, stand-in nix tools, real git clones of the fake
GitHub's repository."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the TUI against the embedded simulator (fake GitHub + fake dashboard on 127.0.0.1)",
    )
    p.add_argument("--scenario", metavar="FILE", help="scenario TOML (default: a dozen hosts, one update PR)")
    p.add_argument("--hosts", type=int, metavar="N", help="replace the default hosts by N generated ones")
    p.add_argument("--speed", type=float, default=None, metavar="X", help="simulated commands run X times faster")
    p.add_argument("--backend", choices=("nixfleet", "ssh"), default="nixfleet",
                   help="reach the simulated hosts through the fake dashboard (default) or over SSH "
                        "(an in-process SSH server per host, stand-in nix tools; needs bash, git, setsid, tail)")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the demo's settings (holds, UI overrides, the automation toggle) here instead of a throw-away "
             "directory; the journal starts afresh with each demo, as the simulator does",
    )


# The demo's own settings: poll often, one canary with a short soak so a deploy shows every phase.
DEMO_SETTINGS = {
    "github": {"poll_minutes": 1},
    "flake_updates": {"automation": {"canary_wait_minutes": 0.25}},
    "hosts": {"gpc0": {"canary": True, "priority": 1}, "web-01": {"auto_update": False}},
}


def fresh_journal() -> None:
    """Move the last demo's journal aside (``*.previous``): the simulator starts afresh each time,
    so its runs (merged PRs, unfinished deploys to resume) describe a fleet that no longer exists."""
    from nfu_tui.core.store import DB_NAME
    from nfu_tui.paths import state_dir

    directory = state_dir()
    for path in sorted(directory.glob(DB_NAME + "*")):
        if not path.name.endswith(".previous"):
            path.replace(path.with_name(path.name + ".previous"))


def run(args: argparse.Namespace) -> int:
    import os
    import tempfile
    from pathlib import Path

    from nfu_tui.sim.scenario import ScenarioError, load_scenario

    if args.hosts is not None and not 1 <= args.hosts <= 5000:
        print("nfu-tui demo: --hosts must be between 1 and 5000", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario, hosts=args.hosts)
    except ScenarioError as exc:
        print(f"nfu-tui demo: {exc}", file=sys.stderr)
        return 2
    if args.speed is not None:
        if args.speed <= 0:
            print("nfu-tui demo: --speed must be positive", file=sys.stderr)
            return 2
        scenario.speed = args.speed

    with tempfile.TemporaryDirectory(prefix="nfu-tui-demo-") as tmp:
        base = Path(args.state_dir).expanduser() if args.state_dir else Path(tmp)
        # The demo's state, cache and config live apart from the user's real ones.
        for var, sub in (("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config")):
            d = base / sub
            d.mkdir(parents=True, exist_ok=True)
            os.environ[var] = str(d)
        from nfu_tui.config import load_config, resolve_secrets
        from nfu_tui.commands.tui import run_app
        from nfu_tui.sim.runner import SimulatorThread

        if args.state_dir:
            fresh_journal()

        runner = SimulatorThread(scenario)
        with runner as sim:
            settings: dict = {k: dict(v) for k, v in DEMO_SETTINGS.items()}
            server = None
            if args.backend == "ssh":
                import shutil

                from nfu_tui.sim.runner import _merge
                from nfu_tui.sim.sshhosts import missing_tools, serve_scenario

                if missing_tools():
                    print(f"nfu-tui demo: --backend ssh needs {', '.join(missing_tools())} on PATH", file=sys.stderr)
                    return 2
                shutil.rmtree(base / "ssh-hosts", ignore_errors=True)  # fresh hosts for the fresh simulator
                server, ssh_settings = runner.call(serve_scenario, sim, base / "ssh-hosts")
                _merge(settings, ssh_settings)
            try:
                config_path = sim.write_config(base / "sim", **settings)
                cfg = load_config(config_path)
                secrets = resolve_secrets(cfg, env={}, use_gh=False)
                return run_app(cfg, secrets, lock_label="the nfu-tui demo")
            finally:
                if server is not None:
                    runner.call(server.close)
