"""Command-line entry point: ``nfu-tui [--config PATH] [COMMAND]``.

Each subcommand lives in ``nfu_tui/commands/<name>.py`` and exposes
``add_parser(subparsers)`` (building its argparse parser, with ``help``) and
``run(args) -> int``. Those modules import only ``argparse`` at top level so that
``--help`` and start-up stay fast; heavy imports happen inside ``run``.
Exit codes: 0 ok, 1 operational failure, 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nfu_tui import __version__

COMMAND_MODULES = ("config", "lock_diff", "sim", "demo", "status", "deploy", "auto", "history", "hold")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfu-tui",
        description="Detect, explain, merge and deploy flake.lock update PRs across a NixOS fleet.",
    )
    parser.add_argument("--version", action="version", version=f"nfu-tui {__version__}")
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: XDG config path)")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a plain http:// dashboard URL on a non-loopback host (password travels in clear)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"nfu_tui.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from nfu_tui.commands import tui

        return tui.run(args)
    name = getattr(args, "module", None) or args.command.replace("-", "_")  # `unhold` lives in hold.py
    module = importlib.import_module(f"nfu_tui.commands.{name}")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
