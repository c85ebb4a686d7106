"""`nfu-tui serve`: the TUI in a web browser (textual-serve), for admins without a terminal at hand.

    nfu-tui serve [--host 127.0.0.1] [--port 8000] [--allow-remote] [--public-url URL] [--demo]

Every browser tab that connects starts its own ``nfu-tui`` process (with the same
``--config``), which uses the configured credentials: whoever reaches the page can merge
and deploy. So it listens on loopback unless ``--allow-remote`` is given (then it warns);
reach it through an SSH tunnel (``ssh -L 8000:127.0.0.1:8000 host``) or put an
authenticating reverse proxy (with TLS) in front and pass ``--public-url``. ``--demo``
serves ``nfu-tui demo`` (a simulator per tab) instead.
Exit codes: 0 stopped (Ctrl+C / SIGTERM), 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import sys

PROG = "nfu-tui serve"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the TUI in a web browser (textual-serve), loopback by default",
                       description="Serve the TUI to a web browser; each browser tab runs its own nfu-tui.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host: anyone who reaches the page acts with your credentials")
    p.add_argument("--public-url", metavar="URL",
                   help="the URL browsers use (behind a reverse proxy), e.g. https://fleet-tui.example.com")
    p.add_argument("--demo", action="store_true", help="serve `nfu-tui demo` (the simulator) instead")


def app_command(args: argparse.Namespace) -> str:
    """The shell command textual-serve runs for each browser tab."""
    import shlex

    words = [sys.executable, "-m", "nfu_tui"]
    if args.config:
        words += ["--config", args.config]
    if args.insecure:
        words.append("--insecure")
    if args.demo:
        words.append("demo")
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from nfu_tui.config import is_loopback_host

    if not 0 < args.port < 65536:
        print(f"{PROG}: --port must be between 1 and 65535", file=sys.stderr)
        return 2
    if not is_loopback_host(args.host):
        if not args.allow_remote:
            print(f"{PROG}: refusing to listen on {args.host}: the page runs nfu-tui with your GitHub token and "
                  "dashboard password, and has no login of its own.\n"
                  "  Use an SSH tunnel to 127.0.0.1, or pass --allow-remote behind an authenticating reverse proxy.",
                  file=sys.stderr)
            return 2
        print(f"{PROG}: WARNING: listening on {args.host} (--allow-remote): anyone who reaches this port can merge "
              "and deploy with your credentials. Keep it behind an authenticating reverse proxy with TLS.",
              file=sys.stderr)
    if not args.demo:
        from nfu_tui.config import load_settings
        from nfu_tui.errors import ConfigError

        try:  # fail here, not in every browser tab
            cfg, _secrets = load_settings(args.config)
        except ConfigError as exc:
            print(f"{PROG}: {exc.message}", file=sys.stderr)
            return 2
        if not cfg.github.repo and not cfg.dashboard.url and not cfg.uses_ssh:
            print(f"{PROG}: nothing to serve: neither github.repo nor dashboard.url is configured "
                  "(try --demo)", file=sys.stderr)
            return 2
    from textual_serve.server import Server

    shown = f"[{args.host}]" if ":" in args.host else args.host
    server = Server(app_command(args), host=args.host, port=args.port, title="nfu-tui",
                    public_url=args.public_url or f"http://{shown}:{args.port}")
    try:
        server.serve()
    except OSError as exc:  # the port is taken, the address is not ours
        print(f"{PROG}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
