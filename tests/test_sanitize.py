"""Hostile log lines become inert display text (nfu_tui.core.sanitize)."""

from __future__ import annotations

import pytest

from nfu_tui.core.sanitize import DEFAULT_MAX_LEN, sanitize_line

ESC = "\x1b"


def assert_inert(text: str) -> None:
    for ch in text:
        code = ord(ch)
        assert ch == "\ufffd" or not (code < 0x20 or 0x7F <= code <= 0x9F), f"control {code:#x} left in {text!r}"
        assert not 0x202A <= code <= 0x202E and not 0x2066 <= code <= 0x2069, f"bidi control left in {text!r}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("building '/nix/store/abc-foo.drv'...", "building '/nix/store/abc-foo.drv'..."),
        (f"{ESC}[1;31merror:{ESC}[0m build failed", "error: build failed"),
        (f"{ESC}[38;2;255;0;0mred{ESC}[m", "red"),
        (f"{ESC}[2K{ESC}[1Gcopying path", "copying path"),
        (f"{ESC}[?25lhidden cursor{ESC}[?25h", "hidden cursor"),
        # OSC 52 clipboard write, BEL-terminated and ST-terminated
        (f"a{ESC}]52;c;ZWNobyBwd25lZA=={ESC}\\b", "ab"),
        (f"a{ESC}]52;c;ZWNobyBwd25lZA==\x07b", "ab"),
        # title set (OSC 0 / OSC 2)
        (f"{ESC}]0;pwned title\x07done", "done"),
        (f"{ESC}]2;other{ESC}\\done", "done"),
        # OSC 8 hyperlink: keep the visible text, drop the hidden target
        (f"see {ESC}]8;;https://evil.example/{ESC}\\the docs{ESC}]8;;{ESC}\\ now", "see the docs now"),
        # DCS / APC / PM / SOS payloads up to ST
        (f"x{ESC}P1$qm{ESC}\\y", "xy"),
        (f"x{ESC}_apc payload{ESC}\\y", "xy"),
        (f"x{ESC}^pm{ESC}\\y", "xy"),
        (f"x{ESC}Xsos{ESC}\\y", "xy"),
        # single-character escapes, charset designation, lone ESC
        (f"{ESC}c{ESC}7saved{ESC}8", "saved"),
        (f"{ESC}(Bplain", "plain"),
        (f"trailing{ESC}", "trailing"),
        # 8-bit C1 forms
        ("\x9b31mred\x9b0m", "red"),
        ("\x9d0;title\x9cafter", "after"),
        ("a\x85b\x90dcs\x9cc", "abc"),
        # carriage-return overprint keeps the last segment; line endings are dropped
        ("progress 10%\rprogress 55%\rprogress 100%", "progress 100%"),
        ("windows line\r\n", "windows line"),
        ("only cr\r", "only cr"),
        # backspaces erase (man-page bold too)
        ("abc\b\bX", "aX"),
        ("B\bBo\bol\bld\bd", "Bold"),
        ("\b\bstart", "start"),
        # NUL, BEL and other C0 controls vanish; tab expands; newline-ish become spaces
        ("nul\x00byte\x07bell\x01", "nulbytebell"),
        ("a\tb", "a       b"),
        ("one\ntwo\x0bthree\x0cfour", "one two three four"),
        ("del\x7fete", "delete"),
        ("line\u2028sep", "line sep"),
        # bidi overrides made visible
        ("access\u202e;tnemmoc\u202c", "access<RLO>;tnemmoc<PDF>"),
        ("\u2066isolated\u2069", "<LRI>isolated<PDI>"),
        # markup is text, left alone
        ("[bold]not markup[/bold] [/nix/store/x]", "[bold]not markup[/bold] [/nix/store/x]"),
        ("", ""),
    ],
)
def test_hostile_lines(raw: str, expected: str) -> None:
    result = sanitize_line(raw)
    assert result == expected
    assert_inert(result)


def test_bytes_with_invalid_utf8_are_replaced() -> None:
    raw = b"ok \xff\xfe broken \xc3( utf8 \xe2\x9c\x85 done\n"
    result = sanitize_line(raw)
    assert result == "ok \ufffd\ufffd broken \ufffd( utf8 ✅ done"
    assert_inert(result)


def test_bytes_with_raw_c1_and_nul() -> None:
    result = sanitize_line(b"a\x00b\x1b[31mc\x9bd")
    assert result.startswith("abc")
    assert_inert(result)


def test_megabyte_line_is_truncated_with_marker() -> None:
    raw = "x" * 1_000_000
    result = sanitize_line(raw)
    assert result == "x" * DEFAULT_MAX_LEN + f"… [{1_000_000 - DEFAULT_MAX_LEN} more chars]"


def test_megabyte_of_unterminated_escapes_is_linear_and_inert() -> None:
    raw = (f"{ESC}]8;;" + "y" * 10) * 50_000 + f"{ESC}[" * 50_000 + "tail"
    result = sanitize_line(raw)
    assert_inert(result)
    assert len(result) <= DEFAULT_MAX_LEN + 40


def test_truncation_counts_characters_after_cleaning() -> None:
    raw = f"{ESC}[31m" + "a" * 30 + f"{ESC}[0m"
    assert sanitize_line(raw, max_len=10) == "a" * 10 + "… [20 more chars]"
    assert sanitize_line("a" * 10, max_len=10) == "a" * 10


def test_csi_cut_off_at_the_end_is_removed() -> None:
    assert sanitize_line(f"text{ESC}[38;5") == "text"


def test_unicode_text_is_preserved() -> None:
    line = "✅ Switch completed successfully — größe 日本語"
    assert sanitize_line(line) == line
