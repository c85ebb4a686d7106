"""`nfu-tui status` (not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("status", help="(not available yet)")


def run(args: argparse.Namespace) -> int:
    print("nfu-tui status: not available yet", file=sys.stderr)
    return 2
