"""`nfu-tui lock-diff` (not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("lock-diff", help="(not available yet)")


def run(args: argparse.Namespace) -> int:
    print("nfu-tui lock-diff: not available yet", file=sys.stderr)
    return 2
