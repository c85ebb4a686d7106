"""`nfu-tui auto` (not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("auto", help="(not available yet)")


def run(args: argparse.Namespace) -> int:
    print("nfu-tui auto: not available yet", file=sys.stderr)
    return 2
