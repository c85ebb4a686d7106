"""Hostile log lines become inert display text (nfu_tui.sanitize)."""

from __future__ import annotations

import pytest

from nfu_tui.sanitize import DEFAULT_MAX_LEN, sanitize_line

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


# --- the redaction boundary: secrets, credential shapes, valid text ----------------------

import base64  # noqa: E402
import re  # noqa: E402
from urllib.parse import quote, quote_plus  # noqa: E402

from hypothesis import example, given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nfu_tui.sanitize import redactor, sanitize_data, sanitize_text  # noqa: E402

TOKEN = "ghp_" + "Zx81" * 9
PASSWORD = "Fleet pw/ä+5:Zq9"


@pytest.fixture
def secrets() -> None:
    redactor.add(TOKEN, PASSWORD)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"Validation failed: request had Authorization: Bearer {TOKEN}", "Validation failed: request had Authorization: Bearer ***"),
        (f"Internal error while handling Bearer {TOKEN}", "Internal error while handling Bearer ***"),
        (f"Authorization: token {TOKEN} rest", "Authorization: token *** rest"),
        (f"bad {quote(PASSWORD, safe='')} and {quote_plus(PASSWORD)}", "bad *** and ***"),
        (f"bad {re.sub('%[0-9A-F]{2}', lambda m: m.group().lower(), quote(PASSWORD, safe=''))}", "bad ***"),
        (f"basic {base64.b64encode(f'user:{PASSWORD}'.encode()).decode()}!", "basic dXNlcjp***Q==!"),  # the last partial character carries 2 bits
        (f"b64 {base64.urlsafe_b64encode(TOKEN.encode()).decode()}", "b64 ***Q=="),
        (f'json {{"p": "{PASSWORD.replace("/", chr(92) + "/")}"}}', 'json {"p": "***"}'),
        (f"html {PASSWORD.replace('+', '&#43;')}", "html ***"),
    ],
)
def test_registered_secrets_in_every_form(secrets: None, raw: str, expected: str) -> None:
    assert sanitize_line(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
        ("authorization=Basic dXNlcjpwdw==", "authorization=Basic ***"),
        ("req Cookie: nixfleet_session=abc; other=1", "req Cookie: ***"),
        ("Set-Cookie: nixfleet_session=abc; Path=/", "Set-Cookie: ***"),
        ("sending bearer eyJhbGciOi.x-y_z", "sending bearer ***"),
        ("token 0123456789abcdef0123456789", "token ***"),
        ("leaked ghp_0123456789abcdefABCDEF and gho_0123456789abcdefABCDEF", "leaked *** and ***"),
        ("ghu_0123456789abcdefABCDEF ghs_0123456789abcdefABCDEF ghr_0123456789abcdefABCDEF", "*** *** ***"),
        ("pat github_pat_11ABCDEFG0_abcdefghijklmnopqrstuv", "pat ***"),
        ("form password=hunter2&user=x", "form password=***&user=x"),
        ("q?access_token=abc123&x=1", "q?access_token=***&x=1"),
        ("nixfleet_session=abcdef==; Path=/", "nixfleet_session=***; Path=/"),
        ('{"password": "hunter2", "csrf_token": "x\\"y", "n": 1}', '{"password": "***", "csrf_token": "***", "n": 1}'),
        ("clone https://user:s3cret@github.com/a/b.git", "clone https://user:***@github.com/a/b.git"),
        # ordinary words stay
        ("the token is missing, wrong, expired or revoked", "the token is missing, wrong, expired or revoked"),
        ("Dashboard login failed: wrong password", "Dashboard login failed: wrong password"),
        ("the session cookie expired", "the session cookie expired"),
    ],
)
def test_credential_shapes(raw: str, expected: str) -> None:
    assert sanitize_line(raw) == expected


def test_cookie_and_csrf_learned_at_run_time_are_redacted_from_then_on() -> None:
    cookie, csrf = "P9xW-2kq_LmZ0vB7nR4tY6uI8oA1sD3f=", "c5rF_t0KeN-value"
    assert cookie in sanitize_line(f"echo {cookie}")
    redactor.add(cookie, csrf)
    assert sanitize_line(f"echo {cookie} and {csrf}") == "echo *** and ***"


def test_short_values_are_not_searched_for() -> None:
    redactor.add("abc", "", None, "  ")
    assert len(redactor) == 0 and sanitize_line("abc") == "abc"


def test_lone_surrogates_and_invalid_bytes_become_replacement_characters() -> None:
    assert sanitize_line("bad \udcff name") == "bad \ufffd name"
    assert sanitize_text("a\udc80\nb\udfff") == "a\ufffd\nb\ufffd"
    assert sanitize_line(b"x\xff\xfey") == "x\ufffd\ufffdy"
    sanitize_line("\udcff").encode("utf-8")  # never raises


def test_multi_line_text_keeps_line_breaks_and_drops_controls(secrets: None) -> None:
    raw = f"Traceback:\n  \x1b[31mline\x1b[0m\r\n  Bearer {TOKEN}\n\x07end"
    assert sanitize_text(raw) == "Traceback:\n  line\n  Bearer ***\nend"


def test_sanitize_data_walks_json_values(secrets: None) -> None:
    data = {"msg": f"x {TOKEN}", "n": 3, "ok": True, "none": None, "lines": ["\udcff", ("t",)], TOKEN: 1.5}
    assert sanitize_data(data) == {"msg": "x ***", "n": 3, "ok": True, "none": None, "lines": ["\ufffd", ["t"]],
                                   "***": 1.5}


# Property tests: any input is valid, inert text without the secret.

ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=300)
SECRET = st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=8, max_size=40).filter(
    lambda s: s == s.strip()
)


def assert_valid_inert(text: str) -> None:
    text.encode("utf-8")  # no lone surrogates
    assert_inert(text)


@given(st.binary(max_size=600))
def test_any_bytes_give_valid_inert_text(raw: bytes) -> None:
    assert_valid_inert(sanitize_line(raw))
    for line in sanitize_text(raw).split("\n"):
        assert_valid_inert(line)


@given(ANY_TEXT)
@example("\udcff")
@example("\x1b]52;c;Zm9v\x07\ud800\u202e")
def test_any_text_gives_valid_inert_text(raw: str) -> None:
    assert_valid_inert(sanitize_line(raw))
    for line in sanitize_text(raw).split("\n"):
        assert_valid_inert(line)


@given(SECRET, ANY_TEXT, ANY_TEXT, st.sampled_from(["plain", "quote", "quote_plus", "base64", "urlsafe_base64"]),
       st.binary(max_size=5), st.binary(max_size=5))
@example("ghp_" + "a" * 36, "\x1b", "", "plain", b"", b"")
@example("pass word/ä", "x%", "", "quote", b"", b"")
def test_a_registered_secret_never_survives(secret: str, before: str, after: str, form: str, pre: bytes,
                                            post: bytes) -> None:
    redactor.clear()
    redactor.add(secret)
    if form in ("plain", "quote", "quote_plus"):
        middle = {"plain": secret, "quote": quote(secret, safe=""), "quote_plus": quote_plus(secret)}[form]
        carried = middle
    else:
        encode = base64.b64encode if form == "base64" else base64.urlsafe_b64encode
        blob = encode(pre + secret.encode() + post).decode()
        middle = blob
        start, end = -(-8 * len(pre) // 6), 8 * (len(pre) + len(secret.encode())) // 6
        carried = blob[start:end]  # the characters made only of the secret's bits
    note(f"middle={middle!r} carried={carried!r}")
    for result in (sanitize_line(before + middle + after, max_len=10_000), sanitize_text(before + middle + after)):
        assert secret not in result and carried not in result
        for line in result.split("\n"):
            assert_valid_inert(line)
