"""Turn hostile terminal output into inert, single-line display text.

Log lines from hosts (``command_output`` frames, ``/api/hosts/{id}/output``) are raw
process output: they may carry ANSI/VT escape sequences (colours, cursor movement,
OSC 52 clipboard writes, OSC 0/2 title sets, OSC 8 hyperlinks, DCS/APC payloads),
8-bit C1 controls, carriage-return progress overprints, backspaces, NUL bytes,
invalid UTF-8 and Unicode bidi overrides ("Trojan Source"). :func:`sanitize_line`
removes or neutralises all of that so a line can be shown verbatim.

Textual/Rich markup such as ``[bold]`` or ``[/nix/store/…]`` is deliberately **not**
altered here: it is ordinary text in a log line. The UI must render log lines with
markup disabled (``markup=False`` / ``Text(line)``), never as markup.
"""

from __future__ import annotations

import re

__all__ = ["sanitize_line", "DEFAULT_MAX_LEN"]

DEFAULT_MAX_LEN = 4000

# Anything that needs more than the fast path: C0 controls (tab included), DEL,
# C1 controls, bidi embeddings/overrides/isolates, Unicode line/paragraph separators.
_NEEDS_WORK = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")

# Escape sequences, longest forms first. Negated classes keep every branch linear even
# on megabyte lines full of unterminated sequences.
_ESCAPES = re.compile(
    r"""
    (?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?          # CSI (7- and 8-bit); final byte optional if cut off
  | (?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?         # OSC: title, OSC 8 links, OSC 52 …; BEL or ST
  | (?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?  # DCS, SOS, PM, APC up to ST
  | \x1b[\x20-\x2f]+[\x30-\x7e]?                                  # nF: charset designation etc.
  | \x1b[\x30-\x7e]?                                              # Fp/Fe/Fs single-character escapes, lone ESC
    """,
    re.VERBOSE,
)

_C1 = re.compile("[\x80-\x9f]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_BIDI_NAMES = {
    "\u202a": "LRE", "\u202b": "RLE", "\u202c": "PDF", "\u202d": "LRO", "\u202e": "RLO",
    "\u2066": "LRI", "\u2067": "RLI", "\u2068": "FSI", "\u2069": "PDI",
}  # fmt: skip

# After escapes are gone: whitespace-like controls become a space, the rest vanish.
_CONTROL_TABLE = {c: None for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))}
_CONTROL_TABLE.update({0x0A: " ", 0x0B: " ", 0x0C: " ", 0x2028: " ", 0x2029: " "})
del _CONTROL_TABLE[0x09]  # tabs are expanded separately
del _CONTROL_TABLE[0x08]  # backspaces are applied separately


def sanitize_line(text: str | bytes, *, max_len: int = DEFAULT_MAX_LEN) -> str:
    """Return ``text`` as inert display text (see the module docstring).

    Steps: decode bytes as UTF-8 (invalid sequences → U+FFFD); drop a trailing line
    ending; remove every escape sequence; keep only what follows the last carriage
    return (progress-bar overprint); apply backspaces; expand tabs; remove the other
    control characters (newline/VT/FF/U+2028/U+2029 become a space); show bidi
    controls as ``<RLO>``-style tags; cut lines longer than ``max_len`` characters and
    append ``… [N more chars]``.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", "replace")
    if _NEEDS_WORK.search(text) is not None:
        text = _clean(text)
    if len(text) > max_len:
        rest = len(text) - max_len
        text = f"{text[:max_len]}… [{rest} more chars]"
    return text


def _clean(text: str) -> str:
    text = text.rstrip("\r\n")
    if "\x1b" in text or _C1.search(text) is not None:
        text = _ESCAPES.sub("", text)
    if "\r" in text:
        text = text.rsplit("\r", 1)[1]
    if "\b" in text:
        text = _apply_backspaces(text)
    if "\t" in text:
        text = text.expandtabs(8)
    text = text.translate(_CONTROL_TABLE)
    if _BIDI.search(text) is not None:
        text = _BIDI.sub(lambda m: f"<{_BIDI_NAMES[m.group()]}>", text)
    return text


def _apply_backspaces(text: str) -> str:
    out: list[str] = []
    for ch in text:
        if ch == "\b":
            if out:
                out.pop()
        else:
            out.append(ch)
    return "".join(out)
