"""Webhook notifications in the ntfy format (works with ntfy.sh, a self-hosted ntfy,
and anything that accepts its plain POST).

Request: ``POST <url>``, body = the message (UTF-8 text, at most 4096 bytes: ntfy's
message limit), headers ``Title``, ``Priority`` (error → ``high`` (4), warning →
``default`` (3), information → ``low`` (2)) and ``Tags`` (comma-separated) when
there are tags. Non-ASCII header values are sent as RFC 2047 encoded words, which
ntfy decodes. Credentials in the URL (``https://user:pass@host/topic``) are sent as
HTTP Basic auth; a query (``?auth=…``) is kept on the request.

:meth:`WebhookNotifier.send` never raises: a failure returns False and logs one
warning that names only the scheme and host (an ntfy topic is as good as a password,
so neither the path nor the query nor the userinfo is ever logged or shown in repr;
a filter also masks them in httpx's own INFO request log).

Notify-once: :func:`notify_once` sends only when ``state`` has not yet recorded
``value`` for ``key`` and records it *after a successful delivery*, so a failed
webhook is retried at the next occasion and a delivered one is never repeated, not
even by another process sharing the state file.
"""

from __future__ import annotations

import asyncio
import base64
import logging

import httpx

from nfu_tui.core.sanitize import sanitize_text
from nfu_tui.core.state import AppState
from nfu_tui.errors import ConfigError
from nfu_tui.models import Notification

log = logging.getLogger(__name__)


class _RedactFilter(logging.Filter):
    """Removes webhook paths/queries from httpx's own request log (INFO ``HTTP Request: …``)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            redacted = text
            for secret in sorted(self.secrets, key=len, reverse=True):
                redacted = redacted.replace(secret, "/***" if secret.startswith("/") else "***")
            if redacted != text:
                record.msg, record.args = redacted, ()
        return True


_httpx_redactor = _RedactFilter()
logging.getLogger("httpx").addFilter(_httpx_redactor)

TIMEOUT_SECONDS = 10.0
MAX_BODY_BYTES = 4096
PRIORITIES = {"error": "high", "warning": "default", "information": "low"}
_USER_AGENT = "nfu-tui"


def _header_value(text: str) -> str:
    """One-line header value; non-ASCII as an RFC 2047 encoded word."""
    flat = " ".join(text.split())
    if flat.isascii():
        return flat
    return "=?UTF-8?B?" + base64.b64encode(flat.encode()).decode("ascii") + "?="


def _body(message: str) -> bytes:
    data = message.encode()
    if len(data) <= MAX_BODY_BYTES:
        return data
    marker = "\n… (truncated)".encode()
    return data[: MAX_BODY_BYTES - len(marker)].decode(errors="ignore").encode() + marker


class WebhookNotifier:
    """Sends :class:`~nfu_tui.models.Notification` to an ntfy-compatible URL (None = off)."""

    def __init__(
        self,
        url: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self._url: httpx.URL | None = None
        self._auth: tuple[str, str] | None = None
        self._secrets: tuple[str, ...] = ()
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.display_url = ""
        if not url:
            return
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise ConfigError("the webhook URL is not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"the webhook URL must be http(s)://host/…, got scheme {parsed.scheme or 'none'!r}")
        self.display_url = f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"
        if parsed.path not in ("", "/"):
            self.display_url += "/…"
        userinfo = parsed.userinfo.decode("ascii")
        if userinfo:
            self._auth = (parsed.username, parsed.password)
            parsed = parsed.copy_with(username=None, password=None)
        self._url = parsed
        pieces = (url, userinfo, parsed.path, parsed.query.decode("ascii"), *(self._auth or ()))
        self._secrets = tuple(p for p in pieces if len(p) > 1)
        _httpx_redactor.secrets.update(p for p in (parsed.path, parsed.query.decode("ascii")) if len(p) > 1)

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.display_url or None!r})"

    @property
    def enabled(self) -> bool:
        return self._url is not None

    async def send(self, n: Notification) -> bool:
        """POST ``n``; True when the server answered 2xx. Never raises."""
        if self._url is None:
            return False
        title, message = sanitize_text(n.title), sanitize_text(n.message)  # the redaction boundary
        headers = {
            "Title": _header_value(title),
            "Priority": PRIORITIES.get(n.severity, "low"),
            "Content-Type": "text/plain; charset=utf-8",
        }
        if n.tags:
            headers["Tags"] = _header_value(sanitize_text(",".join(n.tags)))
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http().post(self._url, content=_body(message), headers=headers, auth=self._auth)
        except Exception as exc:  # never raise: a notification must not break a deploy
            log.warning("webhook %s failed: %s", self.display_url, self._describe(exc))
            return False
        if response.is_success:
            return True
        log.warning("webhook %s answered HTTP %d", self.display_url, response.status_code)
        return False

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=self._timeout,
                headers={"User-Agent": _USER_AGENT},
            )
        return self._client

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self._timeout:g} s"
        text = str(exc)
        if not text or any(secret in text for secret in self._secrets):
            return type(exc).__name__
        return f"{type(exc).__name__}: {text}"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> "WebhookNotifier":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def notify_once(state: AppState, key: str, value: str, notifier: WebhookNotifier, n: Notification) -> bool:
    """Send ``n`` unless ``key`` is already marked with ``value``; mark it once delivered.

    Returns True only when this call delivered the notification.
    """
    if not state.should_notify(key, value):
        return False
    if not await notifier.send(n):
        return False
    await asyncio.to_thread(state.mark_notified, key, value)
    return True
