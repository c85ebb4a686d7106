"""`nfu-tui` without a subcommand: the TUI on the configured services."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from nfu_tui.config import ConfigLoadError, load_config

    try:
        load_config(args.config)
    except ConfigLoadError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    print("nfu-tui: the TUI is not available yet; try `nfu-tui demo` or `nfu-tui --help`", file=sys.stderr)
    return 2
