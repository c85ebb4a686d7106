"""Rich ``Text`` tidying shared by the screens (no Textual)."""

from __future__ import annotations

from rich.style import Style
from rich.text import Span, Text

GAP = "dim"
"""Style given to spaces between a span and unstyled text (invisible on spaces; see :func:`unlead`)."""


def _foreground_only(style: str | Style) -> bool:
    parsed = Style.parse(style) if isinstance(style, str) else style
    return parsed.bgcolor is None and not parsed.reverse


def unlead(text: Text) -> Text:
    """Keep runs of text from starting with a space (in place; returns ``text``).

    Each differently styled run becomes its own ``<text>`` element in an SVG export,
    and some renderers (rsvg, used to view the screenshots) misplace its leading
    space: "failed" + " in switch" shows as "failedin switch ". Leading spaces of a
    foreground-only span move out of it, and spaces between a span and unstyled text
    get :data:`GAP`, so that spaces form runs of their own (which render right).
    Spans with a background or reverse (badges) keep their spaces.
    """
    plain = text.plain
    spans: list[Span] = []
    for span in text.spans:
        start = span.start
        if _foreground_only(span.style):
            while start < span.end and plain[start] == " ":
                start += 1
        if start < span.end:
            spans.append(Span(start, span.end, span.style))
    covered = bytearray(len(plain))
    for span in spans:
        covered[span.start : span.end] = b"\x01" * (span.end - span.start)
    gaps: list[Span] = []
    for span in spans:
        end = span.end
        while end < len(plain) and plain[end] == " " and not covered[end]:
            end += 1
        if end > span.end and end < len(plain) and not covered[end] and plain[end] != "\n":
            gaps.append(Span(span.end, end, GAP))
    text.spans = spans + gaps  # gaps cover only unstyled spaces: the order of the others is kept
    return text
