"""The one boundary for text from outside: valid, inert, and without secrets.

Every text nfu-tui did not write itself — host output (``command_output`` frames,
``/api/hosts/{id}/output``), HTTP error bodies and messages, exception strings —
passes :func:`sanitize_line` (one display line) or :func:`sanitize_text` (several
lines) before it reaches the screen, stdout/stderr, a log record, the JSON log of
``nfu-tui auto``, the SQLite journal and audit trail, or a notification. The sinks
(:class:`nfu_tui.errors.NfuError`, the store, the JSON log, the notifier, the CLI's
output streams, the TUI's toasts and a log-record factory) call them, so a path that
forgets is still covered by the next sink.

Three things happen, in this order:

1. **Valid text.** Bytes are decoded as UTF-8 (invalid sequences → U+FFFD); lone
   surrogates (``"\\udcff"`` from a JSON escape or ``surrogateescape``) become U+FFFD,
   so nothing downstream (SQLite, a UTF-8 stream) can fail to encode it.
2. **No secrets** (:data:`redactor`). Every registered secret value — the GitHub
   token(s), the dashboard password and TOTP secret (registered by
   :func:`nfu_tui.config.resolve_secrets` and the clients), the session cookie and
   the CSRF token (registered by the dashboard client when it learns them) — is
   replaced by ``***`` in plain, URL-encoded (any case, ``+`` for space),
   HTML-entity/JSON-escaped and base64 form (standard and URL-safe alphabet, at any
   offset inside a larger base64 text). So are common credential shapes:
   ``Authorization: …``, ``Cookie: …``, ``Bearer …``, ``token <long value>``,
   ``ghp_…``/``gho_…``/``ghu_…``/``ghs_…``/``ghr_…``/``github_pat_…``,
   ``password=…``/``…token=…``/``nixfleet_session=…``, ``"password": "…"`` and the
   password of a ``scheme://user:password@host`` URL.
3. **Inert text.** ANSI/VT escape sequences (colours, cursor movement, OSC 52
   clipboard writes, OSC 0/2 title sets, OSC 8 hyperlinks, DCS/APC payloads), 8-bit
   C1 controls, carriage-return progress overprints, backspaces, NUL bytes and
   Unicode bidi overrides ("Trojan Source") are removed or neutralised.

Limits: a secret shorter than :data:`MIN_SECRET_CHARS` characters is not searched
for (it would match ordinary words), nor are its base64 forms below
:data:`MIN_BASE64_BYTES` bytes; a secret transformed in other ways (split across
two writes, hex-encoded, hashed, encrypted) is not recognised.

Textual/Rich markup such as ``[bold]`` or ``[/nix/store/…]`` is deliberately **not**
altered here: it is ordinary text in a log line. The UI must render log lines with
markup disabled (``markup=False`` / ``Text(line)``), never as markup.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "DEFAULT_MAX_LEN",
    "MIN_SECRET_CHARS",
    "Redactor",
    "add_secret",
    "redact",
    "redactor",
    "sanitize_data",
    "sanitize_line",
    "sanitize_text",
    "valid_text",
]

DEFAULT_MAX_LEN = 4000
TEXT_MAX_LEN = 64 * 1024
MIN_SECRET_CHARS = 4
MIN_BASE64_BYTES = 6
MASK = "***"

# --- 1. valid text ------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: object) -> str:
    """``text`` as a valid Unicode string (bytes decoded as UTF-8, surrogates → U+FFFD)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", "replace")
    if not isinstance(text, str):
        text = str(text)
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


# --- 2. secrets -----------------------------------------------------------------------

_SHAPES = re.compile(
    r"""
    (?P<auth>\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?P<scheme>(?:bearer|token|basic|digest)\s+)?[^\s,;"']+
  | (?P<cookie>\b(?:set-)?cookie["']?\s*[:=]\s*)[^\r\n"'\\<>]+
  | (?P<bearer>\bbearer\s+)[A-Za-z0-9._~+/-]+=*
  | (?P<tokenword>\btoken\s+)[A-Za-z0-9_.-]{16,}
  | \b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,})
  | (?P<jkey>"[\w-]*(?:password|passwd|passphrase|secret|token|session|csrf|api[_-]?key)[\w-]*"\s*:\s*)"(?:[^"\\]|\\.)*"
  | (?P<key>\b[\w-]*(?:password|passwd|passphrase|secret|token|session|csrf|api[_-]?key)[\w-]*\s*=\s*)(?:"[^"]*"|[^\s&;,"'<>]+)
  | (?P<userinfo>\b[a-z][a-z0-9+.-]*://[^/\s:@"'\\]+:)[^/\s@"'\\]+@
    """,
    re.IGNORECASE | re.VERBOSE,
)


# Fast pre-check on the lower-cased text: a case-sensitive scan for the shapes' key words
# is ~15× faster than the case-insensitive shapes regex itself (host output is mostly clean).
_SHAPE_HINT = re.compile(r"authorization|cookie|bearer|token|gh[pousr]_|github_pat_|pass|secret|session|csrf|api.?key")


def _may_hold_shape(text: str) -> bool:
    return _SHAPE_HINT.search(text.lower()) is not None or ("@" in text and "://" in text)


def _shape(match: re.Match[str]) -> str:
    groups = match.groupdict()
    if groups["auth"] is not None:
        return f"{groups['auth']}{groups['scheme'] or ''}{MASK}"
    if groups["userinfo"] is not None:
        return f"{groups['userinfo']}{MASK}@"
    if groups["jkey"] is not None:
        return f'{groups["jkey"]}"{MASK}"'
    for name in ("cookie", "bearer", "tokenword", "key"):
        if groups[name] is not None:
            return groups[name] + MASK
    return MASK


def _char_pattern(ch: str) -> str:
    """``ch`` itself or any of its common encodings (percent, ``+``, HTML entity, JSON escape)."""
    if ch.isascii() and ch.isalnum():
        return re.escape(ch)
    forms = [re.escape(ch)]
    encoded = ch.encode("utf-8")
    forms.append("".join(f"%(?:{b:02X}|{b:02x})" for b in encoded))
    if ch == " ":
        forms.append(r"\+")
    forms.append(f"&#0*{ord(ch)};")
    forms.append(f"&#[xX]0*(?:{ord(ch):X}|{ord(ch):x});")
    if ord(ch) < 0x10000:
        forms.append(f"\\\\u(?:{ord(ch):04X}|{ord(ch):04x})")
    if ch in "\"\\/":
        forms.append(re.escape("\\" + ch))
    return "(?:" + "|".join(forms) + ")"


def _base64_cores(raw: bytes) -> set[str]:
    """The base64 characters that only ``raw`` determines, at each of the 3 byte offsets."""
    cores: set[str] = set()
    n = len(raw)
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw + b"\0\0").decode()
        start = -(-8 * offset // 6)  # first character made only of ``raw``'s bits
        end = (8 * (offset + n)) // 6  # last character before the padding's bits
        core = encoded[start:end]
        cores.add(core)
        cores.add(core.replace("+", "-").replace("/", "_"))
    return cores


class Redactor:
    """The secret values to hide, and :meth:`redact` that hides them (and credential shapes).

    Thread-safe: :meth:`add` builds a new pattern and swaps it in; readers never lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def __repr__(self) -> str:  # never the values
        return f"Redactor({len(self._values)} secrets)"

    def __len__(self) -> int:
        return len(self._values)

    def add(self, *values: Any) -> None:
        """Hide these values from now on (``SecretStr``, ``str`` or None; short ones are ignored)."""
        new = set()
        for value in values:
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            value = valid_text(value).strip()
            if len(value) >= MIN_SECRET_CHARS:
                new.add(value)
        with self._lock:
            if new <= self._values:
                return
            self._values = self._values | new
            self._pattern = self._compile(self._values)

    def clear(self) -> None:
        """Forget every value (tests; a process normally keeps them until it exits)."""
        with self._lock:
            self._values = frozenset()
            self._pattern = None

    @staticmethod
    def _compile(values: Iterable[str]) -> re.Pattern[str]:
        forms: set[str] = set()
        for value in values:
            forms.add("".join(_char_pattern(ch) for ch in value))
            raw = value.encode("utf-8")
            if len(raw) >= MIN_BASE64_BYTES:
                forms.update(re.escape(core) for core in _base64_cores(raw) if len(core) >= MIN_SECRET_CHARS)
        return re.compile("|".join(sorted(forms, key=len, reverse=True)))

    def redact(self, text: str) -> str:
        """``text`` with every secret value and credential shape replaced by ``***``."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        if _may_hold_shape(text):
            text = _SHAPES.sub(_shape, text)
        return text


redactor = Redactor()
"""The process-wide redactor every sink uses."""


def add_secret(*values: Any) -> None:
    """Register secret values with :data:`redactor` (see :meth:`Redactor.add`)."""
    redactor.add(*values)


def redact(text: str) -> str:
    """``text`` (made valid) without secrets; controls are kept (see :func:`sanitize_text` for those)."""
    return redactor.redact(valid_text(text))

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


# --- 3. inert text ---------------------------------------------------------------------


def sanitize_line(text: str | bytes, *, max_len: int = DEFAULT_MAX_LEN) -> str:
    """Return ``text`` as one valid, secret-free, inert display line (see the module docstring).

    Steps: decode bytes as UTF-8 (invalid sequences → U+FFFD) and replace lone
    surrogates; redact secrets; drop a trailing line ending; remove every escape
    sequence; keep only what follows the last carriage return (progress-bar
    overprint); apply backspaces; expand tabs; remove the other control characters
    (newline/VT/FF/U+2028/U+2029 become a space); show bidi controls as
    ``<RLO>``-style tags; redact again if anything was removed (so deleted controls
    cannot join the pieces of a secret); cut lines longer than ``max_len``
    characters and append ``… [N more chars]``.
    """
    text = redactor.redact(valid_text(text))
    if _NEEDS_WORK.search(text) is not None:
        text = redactor.redact(_clean(text))
    return _cut(text, max_len)


def sanitize_text(text: object, *, max_len: int = TEXT_MAX_LEN) -> str:
    """Like :func:`sanitize_line` but keeps line breaks (``\\n``): for error bodies, tracebacks, notifications."""
    text = redactor.redact(valid_text(text))
    if _NEEDS_WORK.search(text) is not None:
        text = redactor.redact("\n".join(_clean(line) for line in text.split("\n")))
    return _cut(text, max_len)


def sanitize_data(value: Any) -> Any:
    """A JSON-like value with every string (keys included) passed through :func:`sanitize_text`.

    Numbers, booleans and None stay; other objects become their sanitized ``str``.
    """
    if isinstance(value, str):
        return sanitize_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {sanitize_text(str(k)): sanitize_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [sanitize_data(v) for v in value]
    return sanitize_text(str(value))


def _cut(text: str, max_len: int) -> str:
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


# --- sinks: log records and the CLI's output streams -----------------------------------


def install_log_redaction() -> None:
    """Make every log record's message pass :func:`sanitize_text` when it is created (idempotent)."""
    import logging

    previous = logging.getLogRecordFactory()
    if getattr(previous, "nfu_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: keep its raw text, redacted
            message = str(record.msg)
        record.msg, record.args = sanitize_text(message), ()
        return record

    factory.nfu_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class RedactingStream:
    """A text stream that redacts (and makes valid) everything written to it, for the CLI's
    stdout/stderr. A reader that went away (``nfu-tui status | head -1``) is not an
    error: further output is dropped quietly and the command carries on.
    """

    buffer = None  # no way around the boundary: binary writers fall back to write()

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.closed_by_reader = False

    def write(self, text: str) -> int:
        if not self.closed_by_reader:
            safe = redact(text)
            try:
                try:
                    self.inner.write(safe)
                except UnicodeEncodeError:  # a non-UTF-8 locale: the output (• → ✓) is UTF-8 anyway
                    self.inner.flush()
                    self.inner.buffer.write(safe.encode("utf-8"))
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.closed_by_reader:
            try:
                self.inner.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        import os

        self.closed_by_reader = True
        try:  # the interpreter flushes the real stream at exit: give it somewhere to go
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.inner.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
