"""`nfu-tui history` (not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("history", help="(not available yet)")


def run(args: argparse.Namespace) -> int:
    print("nfu-tui history: not available yet", file=sys.stderr)
    return 2
