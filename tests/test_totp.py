"""RFC 6238 TOTP (nfu_tui.domain.totp) against the RFC's own test vectors."""

from __future__ import annotations

import base64

import pytest

from nfu_tui.domain import totp as t

# RFC 6238 Appendix B: SHA-1 seed "12345678901234567890", 8 digits.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("at", "code"), RFC_VECTORS)
def test_rfc6238_sha1_vectors(at: int, code: str) -> None:
    assert t.totp(RFC_SECRET, at, digits=8) == code
    assert t.totp(RFC_SECRET, at) == code[-6:]  # 6 digits = the same value mod 10**6


def test_rfc4226_hotp_vectors() -> None:
    key = b"12345678901234567890"
    expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
    assert [t.hotp(key, i) for i in range(10)] == expected


def test_secret_formats_are_tolerated() -> None:
    code = t.totp(RFC_SECRET, 59)
    messy = " ".join(RFC_SECRET.lower().rstrip("=")[i : i + 4] for i in range(0, 32, 4))
    assert t.totp(messy, 59) == code
    uri = f"otpauth://totp/NixFleet:admin?secret={RFC_SECRET.rstrip('=')}&issuer=NixFleet"
    assert t.totp(uri, 59) == code
    assert t.totp(b"12345678901234567890", 59) == code


def test_same_code_within_a_step_and_new_code_after() -> None:
    assert t.totp(RFC_SECRET, 60) == t.totp(RFC_SECRET, 89)
    assert t.totp(RFC_SECRET, 89) != t.totp(RFC_SECRET, 90)


def test_verify_allows_one_step_of_skew() -> None:
    code = t.totp(RFC_SECRET, 1000)
    assert t.verify(RFC_SECRET, code, 1000)
    assert t.verify(RFC_SECRET, code, 1029)
    assert t.verify(RFC_SECRET, code, 1000 + 30)
    assert not t.verify(RFC_SECRET, code, 1000 + 90)
    assert not t.verify(RFC_SECRET, "12345", 1000)
    assert not t.verify(RFC_SECRET, "abcdef", 1000)


@pytest.mark.parametrize("bad", ["", "   ", "not base32!", "otpauth://totp/x?issuer=y", "1111"])
def test_invalid_secret_raises_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        t.totp(bad, 0)
    if bad.strip():
        assert bad not in str(info.value)


def test_seconds_left() -> None:
    assert t.seconds_left(60) == 30
    assert t.seconds_left(89.5) == pytest.approx(0.5)
