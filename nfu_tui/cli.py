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

COMMAND_MODULES = ("config", "lock_diff", "sim", "demo", "status", "deploy", "rollback", "preview", "auto",
                   "history", "hold", "notify", "serve")


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


# Commands whose stdout is a terminal UI (Textual draws it) or carries the simulator's
# fake credentials on purpose: their streams are not wrapped.
_UNWRAPPED = (None, "demo", "sim")


def _tui_args(argv: list[str]) -> argparse.Namespace | None:
    """The arguments of a plain ``nfu-tui [--config PATH] [--insecure]`` (the TUI), or None for anything else.

    Parsed without the subcommands' parsers, which take longer to build than the TUI takes to
    import its first screen; anything else (a subcommand, ``--help``, a typo) goes to the full parser.
    """
    if any(a in ("-h", "--help", "--version") for a in argv):
        return None
    parser = argparse.ArgumentParser(prog="nfu-tui", add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--config")
    parser.add_argument("--insecure", action="store_true")
    try:
        args, rest = parser.parse_known_args(argv)
    except argparse.ArgumentError:  # e.g. --config without a value: the full parser says what is wrong
        return None
    if rest:
        return None
    args.command = None
    return args


def main(argv: list[str] | None = None) -> int:
    from nfu_tui.sanitize import RedactingStream, install_log_redaction

    install_log_redaction()
    argv = sys.argv[1:] if argv is None else argv
    args = _tui_args(argv)
    if args is None:
        args = build_parser().parse_args(argv)
    if args.command is None:
        from nfu_tui.commands import tui

        return tui.run(args)
    name = getattr(args, "module", None) or args.command.replace("-", "_")  # `unhold` lives in hold.py
    module = importlib.import_module(f"nfu_tui.commands.{name}")
    if args.command in _UNWRAPPED:
        return _run(module, args)
    # The redaction boundary of the CLI: whatever reaches stdout/stderr (tracebacks included)
    # is redacted, and a reader that went away ends the output quietly.
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        return _run(module, args)
    finally:
        sys.stdout.flush()
        sys.stdout, sys.stderr = streams


def _run(module, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from nfu_tui.errors import StateError

    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except StateError as exc:  # e.g. a state directory that cannot be written
        print(f"nfu-tui {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
