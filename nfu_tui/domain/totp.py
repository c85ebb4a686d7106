"""RFC 6238 time-based one-time passwords (the dashboard's TOTP: SHA-1, 6 digits, 30 s).

Stdlib only. The secret is the base32 string an authenticator app is given (spaces,
dashes, lower case and missing ``=`` padding are tolerated) or an ``otpauth://`` URI
carrying ``secret=``. Error messages never contain the secret.
"""

from __future__ import annotations

import base64
import hmac
import struct
import time
import urllib.parse

__all__ = ["decode_secret", "hotp", "seconds_left", "totp", "verify"]

STEP = 30
DIGITS = 6


def decode_secret(secret: str) -> bytes:
    """Decode a base32 TOTP secret (or an ``otpauth://`` URI) to key bytes.

    Raises ``ValueError`` (without echoing the secret) when it is not valid base32.
    """
    value = secret.strip()
    if value.lower().startswith("otpauth://"):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(value).query)
        value = (query.get("secret") or [""])[0]
    value = "".join(value.split()).replace("-", "").upper().rstrip("=")
    if not value:
        raise ValueError("TOTP secret is empty")
    try:
        key = base64.b32decode(value + "=" * (-len(value) % 8))
    except ValueError:  # binascii.Error is a ValueError
        raise ValueError("TOTP secret is not valid base32") from None
    if not key:
        raise ValueError("TOTP secret is empty")
    return key


def hotp(key: bytes, counter: int, *, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226 HOTP value of ``counter`` as a zero-padded decimal string."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    code = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def totp(
    secret: str | bytes,
    at: float | None = None,
    *,
    step: int = STEP,
    digits: int = DIGITS,
    digest: str = "sha1",
) -> str:
    """The TOTP code for Unix time ``at`` (default: now). ``secret`` is base32 text or raw key bytes."""
    key = secret if isinstance(secret, bytes) else decode_secret(secret)
    now = time.time() if at is None else at
    return hotp(key, int(now // step), digits=digits, digest=digest)


def verify(secret: str | bytes, code: str, at: float | None = None, *, skew: int = 1) -> bool:
    """True if ``code`` matches the step of ``at`` or one of ``skew`` neighbouring steps."""
    code = code.strip()
    if not (code.isdigit() and len(code) == DIGITS):
        return False
    key = secret if isinstance(secret, bytes) else decode_secret(secret)
    now = time.time() if at is None else at
    counter = int(now // STEP)
    return any(
        hmac.compare_digest(hotp(key, counter + delta), code) for delta in range(-skew, skew + 1)
    )


def seconds_left(at: float | None = None, *, step: int = STEP) -> float:
    """Seconds until the current code expires (for a login screen countdown)."""
    now = time.time() if at is None else at
    return step - (now % step)
