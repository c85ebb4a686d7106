"""`nfu-tui` without a subcommand: the TUI on the configured services."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def run(args: argparse.Namespace) -> int:
    from nfu_tui.config import is_loopback_url, load_settings
    from nfu_tui.errors import ConfigError

    try:
        cfg, secrets = load_settings(args.config)
    except ConfigError as exc:
        print(f"nfu-tui: {exc.message}", file=sys.stderr)
        return 2
    if not cfg.github.repo and not cfg.dashboard.url:
        print(
            "nfu-tui: nothing to show: neither github.repo nor dashboard.url is configured.\n"
            "  Create a configuration with `nfu-tui config init`, or try `nfu-tui demo`.",
            file=sys.stderr,
        )
        return 2
    url = cfg.dashboard.url
    if url.startswith("http://") and not (args.insecure or cfg.dashboard.insecure or is_loopback_url(url)):
        print(
            f"nfu-tui: refusing plain http:// to {url}: the dashboard password would travel in clear.\n"
            "  Use https://, or pass --insecure (or set dashboard.insecure = true) if you really mean it.",
            file=sys.stderr,
        )
        return 2
    for warning in secrets.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    from nfu_tui.paths import unwritable_state_dir

    problem = unwritable_state_dir()
    if problem:  # the journal opens after the first frame: say it here, like every command
        print(f"nfu-tui: {problem}", file=sys.stderr)
        return 1
    return run_app(cfg, secrets, insecure=args.insecure)


def run_app(cfg: Any, secrets: Any, *, insecure: bool = False, lock_label: str = "the nfu-tui TUI") -> int:
    """Run the Textual app on a FleetService built from ``cfg``/``secrets`` (created after the first frame)."""
    from nfu_tui.errors import NfuError
    from nfu_tui.ui.app import NfuApp

    def factory() -> Any:
        from nfu_tui.core.service import FleetService

        return FleetService(cfg, secrets, insecure=insecure, lock_label=lock_label)

    try:
        app = NfuApp(service_factory=factory, bell=cfg.notify.bell, keymap=cfg.keys)
        return int(app.run() or 0)
    except NfuError as exc:
        print(f"nfu-tui: {exc}", file=sys.stderr)
        return 1
