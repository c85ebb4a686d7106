"""Subcommands of the ``nfu-tui`` CLI (see :mod:`nfu_tui.cli`)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

WEEK_MINUTES = 7 * 24 * 60


def number(low: float, high: float, *, above: bool = False, whole: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in [low, high] (``above``: > low), else exit 2 with a clear line.

    ``nan``, ``inf`` and ``1e300`` are refused like words: an option's value is bounded as a
    configuration key's is.
    """

    def parse(text: str) -> float:
        try:
            value: float = int(text) if whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if whole else ''}number") from None
        if not math.isfinite(value) or value > high or (value <= low if above else value < low):
            raise argparse.ArgumentTypeError(
                f"{text!r} is out of range: {'more than' if above else 'from'} {low:g} up to {high:g}"
            )
        return value

    parse.__name__ = "number"  # argparse names the type in some messages
    return parse
