"""A Textual SVG screenshot as text: what snapshot mismatches print (conftest.py) and what tests read off
the screen (tests/test_backend_seam.py)."""

from __future__ import annotations

import html
import re


def svg_lines(svg: str, *, styled: bool) -> list[str]:
    """A Textual SVG screenshot as text lines (with each run's style class when ``styled``)."""
    lines: dict[int, list[tuple[float, str]]] = {}
    pattern = r'<text class="([^"]*)" x="([\d.]+)"[^>]*clip-path="url\(#[\w-]*line-(\d+)\)">([^<]*)</text>'
    for cls, x, line, body in re.findall(pattern, svg):
        text = html.unescape(body).replace("\xa0", " ")
        style = cls.rsplit("-", 1)[-1]
        lines.setdefault(int(line), []).append((float(x), f"[{style}]{text}" if styled else text))
    return ["".join(run for _, run in sorted(runs)) for _, runs in sorted(lines.items())]
