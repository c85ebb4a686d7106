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

The **outbox** (:class:`Outbox`): every notification is written to the state store
first (table ``outbox``, keyed by the notification's stable ``event_id``, so enqueueing
the same event twice is a no-op), then delivered. A delivery counts only on a 2xx;
a failed one is retried with capped exponential backoff and jitter (30 s, 1 min,
2 min, … at most 1 h, each ×0.5–1.0), also after a restart (the rows survive it) and
by whichever process sharing the store gets there first (a row is claimed for the
attempt, so two processes never send it twice). A notification still undelivered
after :data:`FAILING_AFTER` attempts is *failing*: logged at warning and shown by
``status``, ``history`` and the TUI header until it is delivered.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from nfu_tui.backends.base import NIXFLEET, BackendInfo
from nfu_tui.errors import ConfigError
from nfu_tui.models import Notification
from nfu_tui.sanitize import sanitize_text

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
LOG_LEVELS = {"error": "error", "warning": "warning", "information": "info"}  # severity -> JSON log level
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
        self.last_error = ""  # why the last send failed (no secrets)
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
        if n.click:
            headers["Click"] = _header_value(sanitize_text(n.click))
        self.last_error = ""
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http().post(self._url, content=_body(message), headers=headers, auth=self._auth)
        except Exception as exc:  # never raise: a notification must not break a deploy
            self.last_error = self._describe(exc)
            log.warning("webhook %s failed: %s", self.display_url, self.last_error)
            return False
        if response.is_success:
            return True
        self.last_error = f"HTTP {response.status_code}"
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


# ==================================================================== outbox

RETRY_BASE_SECONDS = 30.0
RETRY_CAP_SECONDS = 3600.0
FAILING_AFTER = 3
"""Attempts after which an undelivered notification is logged at warning as failing."""
CLAIM_SECONDS = 60.0


def retry_delay(attempts: int, *, rng: Callable[[], float] = random.random, base: float = RETRY_BASE_SECONDS,
                cap: float = RETRY_CAP_SECONDS) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: capped doubling, ×0.5–1.0 jitter."""
    return min(cap, base * 2 ** max(0, attempts - 1)) * (0.5 + rng() / 2)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Outbox:
    """Durable delivery of notifications through ``notifier`` (a :class:`WebhookNotifier`), see the module docs.

    ``send(n)`` has the notifier's signature, so the deploy engine can use an outbox as its notifier.
    """

    def __init__(self, store: Any, notifier: Any, *, clock: Callable[[], datetime] = _utcnow,
                 rng: Callable[[], float] = random.random, on_change: Callable[[], None] | None = None) -> None:
        self.store = store
        self.notifier = notifier
        self._on_change = on_change
        self._clock = clock
        self._rng = rng
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Outbox({self.notifier!r})"

    @property
    def enabled(self) -> bool:
        return self.notifier is not None and bool(getattr(self.notifier, "enabled", True))

    def enqueue(self, n: Notification) -> str:
        """Write ``n`` to the outbox (before any delivery attempt) and return its event id; enqueueing
        an event already there changes nothing. "" when no webhook is configured."""
        if not self.enabled:
            return ""
        event_id = n.event_id or f"once:{uuid.uuid4().hex}"
        self.store.enqueue_notification(event_id, title=n.title, message=n.message, severity=n.severity,
                                        tags=n.tags, click=n.click)
        self._wake.set()
        return event_id

    async def send(self, n: Notification) -> bool:
        """Enqueue ``n`` and deliver what is due; True when ``n``'s event has been delivered (now or before)."""
        return await self.deliver(self.enqueue(n))

    async def deliver(self, event_id: str) -> bool:
        """Deliver what is due now; True when ``event_id`` has been delivered (now or before)."""
        if not event_id:
            return False
        await self.deliver_due()
        entry = self.store.notification(event_id)
        return entry is not None and entry.delivered_at is not None

    async def deliver_due(self, *, everything: bool = False) -> int:
        """Try every notification due now once (``everything``: every undelivered one, without waiting for
        its next attempt; ``nfu-tui notify --retry``); returns how many were delivered."""
        if not self.enabled:
            return 0
        delivered = 0
        async with self._lock:
            claimed = self.store.claim_notifications(CLAIM_SECONDS, limit=1000 if everything else 20,
                                                     due_only=not everything)
            for entry in claimed:
                n = Notification(entry.title, entry.message, entry.severity, list(entry.tags), entry.click, entry.id)
                if await self.notifier.send(n):
                    self.store.notification_delivered(entry.id)
                    delivered += 1
                    continue
                attempts = entry.attempts + 1
                error = getattr(self.notifier, "last_error", "") or "not delivered"
                later = self._clock() + timedelta(seconds=retry_delay(attempts, rng=self._rng))
                self.store.notification_failed(entry.id, error, later)
                if attempts >= FAILING_AFTER:
                    log.warning("notification %r still undelivered after %d attempts (%s); next attempt at %s",
                                entry.title, attempts, error, later.astimezone().strftime("%H:%M:%S"))
        if claimed and self._on_change is not None:
            self._on_change()
        return delivered

    def undelivered(self) -> list[Any]:
        """Undelivered notifications (oldest first), each with ``attempts`` and ``last_error``."""
        return self.store.undelivered_notifications() if self.enabled else []

    def next_due(self) -> datetime | None:
        pending = self.undelivered()
        return min((e.next_attempt_at for e in pending), default=None)

    async def run(self) -> None:
        """Deliver forever: at each due time and as soon as something is enqueued (no busy waiting)."""
        while True:
            self._wake.clear()
            try:
                await self.deliver_due()
            except Exception:  # the store or a bug: keep the loop alive, try again later
                log.exception("notification delivery failed")
            due = self.next_due()
            # Still due right after a round: another process holds its claim; look again a bit later.
            timeout = RETRY_CAP_SECONDS if due is None else max(5.0, (due - self._clock()).total_seconds())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass


# ============================================================ what to say


def pr_link(api_url: str, repo: str, number: int) -> str:
    """The web address of PR ``number`` (github.com, GitHub Enterprise ``…/api/v3``, or the API host itself)."""
    if not repo or not number:
        return ""
    try:
        url = httpx.URL(api_url or "https://api.github.com")
    except (httpx.InvalidURL, TypeError):
        return ""
    if url.host == "api.github.com":
        base = "https://github.com"
    else:
        path = url.path.rstrip("/")
        path = path[: -len("/api/v3")] if path.endswith("/api/v3") else path
        base = f"{url.scheme}://{url.netloc.decode('ascii')}{path}"
    return f"{base}/{repo}/pull/{number}"


def run_notification(result: Any, plan: Any = None, link: str = "", *,
                     automation_resumes: bool = False, backend: BackendInfo = NIXFLEET,
                     continuable: bool = False) -> Notification:
    """The toast/webhook message for a finished deploy run: a title that says what happened, a body
    with the hosts deployed, those left behind (offline, held, skipped, failed) and what to do next
    (``automation_resumes``: automation resumes this run when its offline hosts are back; ``backend``
    names the fleet backend; ``continuable``: the run stopped on unverified canaries alone, see
    :func:`nfu_tui.core.engine.continuable`)."""
    from nfu_tui.core.engine import Outcome, RunStatus

    n = result.pr_number
    what = result.subject.capitalize() if getattr(result, "subject", "") else f"PR #{n}"  # or a converge
    tags = ["nfu-tui", "converge" if what != f"PR #{n}" else f"pr-{n}"]
    deployed = result.hosts_with(Outcome.OK)
    waiting = result.hosts_with(Outcome.QUEUED)
    failed = [o for o in result.outcomes if o.outcome is Outcome.FAILED]
    unverified = [o for o in result.outcomes if o.outcome is Outcome.UNVERIFIED]
    unfinished = [o for o in result.outcomes
                  if o.outcome not in (Outcome.OK, Outcome.QUEUED, Outcome.FAILED, Outcome.UNVERIFIED)]
    skipped = [s for s in (plan.skipped if plan is not None else ()) if s.reason.value != "not-selected"]
    merge_only = plan is not None and plan.merge_only
    status = result.status
    lines: list[str] = []
    if result.merge_sha:
        lines.append(f"{what} merged as {result.merge_sha[:7]}.")
    if deployed:
        lines.append(f"Deployed: {', '.join(deployed)}.")
    if waiting:
        resume = f"`nfu-tui deploy --resume {result.run_id}`"
        lines.append(f"Waiting (offline): {', '.join(waiting)} — run #{result.run_id} stays open; "
                     + (f"automation deploys it when it reconnects (by hand: {resume})." if automation_resumes else
                        f"once it is back, resume it: {resume} or the TUI (automation resumes only its own runs)."))
    for o in failed:
        lines.append(f"Failed: {o.host} ({o.phase or 'deploy'}: {o.detail}).")
    for o in unverified:
        lines.append(f"Not verified: {o.host} ({o.detail}).")
    if unfinished:  # hosts left for the same reason (a cancel leaves them all alike) named together
        reasons: dict[str, list[str]] = {}
        for o in unfinished:
            reasons.setdefault(o.outcome.value + (f": {o.detail}" if o.detail else ""), []).append(o.host)
        lines.append("Not deployed: " + "; ".join(f"{', '.join(hosts)} ({reason})"
                                                   for reason, hosts in reasons.items()) + ".")
    left = [s.host for s in skipped if not merge_only]
    if left:
        lines.append("Left behind: " + "; ".join(s.describe() for s in skipped) + ".")
    if status is RunStatus.REFUSED:
        return Notification(f"{what} not merged", result.message, "warning", tags + ["no_entry"], link,
                            f"run:{result.run_id}:refused")
    behind = [o.host for o in unfinished] + left
    if status is RunStatus.SUCCEEDED and merge_only:
        lines.append(f'deploy_strategy = "none": no host was deployed. Deploy it: `nfu-tui deploy --pr {n}`.')
        title, severity, extra = f"{what} merged, not deployed", "information", ["white_check_mark"]
    elif status is RunStatus.SUCCEEDED and not deployed and not behind:
        title, severity, extra = f"{what}: no host deployed", "warning", ["warning"]
    elif status in (RunStatus.SUCCEEDED, RunStatus.WAITING):
        title = f"{what} deployed" + (f" to {', '.join(deployed)}" if behind or waiting else "")
        if waiting:
            title += f"; waiting for {', '.join(waiting)} (offline)"
        if behind:
            title += f"; left behind: {', '.join(behind)}"
            later = f"--pr {n}" if what == f"PR #{n}" else "--converge"
            lines.append(f"To deploy them later: `nfu-tui deploy {later} --hosts {','.join(behind)}`.")
        severity = "information" if not behind else "warning"
        extra = ["white_check_mark"]
    elif status is RunStatus.CANCELLED:
        title, severity, extra = f"{what} deploy cancelled", "warning", ["warning"]
        if result.merge_sha or what != f"PR #{n}":
            lines.append("To finish it: `nfu-tui deploy --converge`.")
    elif status is RunStatus.UNKNOWN:  # no evidence of what happened: alert, never roll back
        where = ", ".join(result.hosts_with(Outcome.UNKNOWN)) or "a host"
        title, severity, extra = f"{what} deploy stopped: outcome unknown on {where}", "error", ["question"]
        lines.append(f"Stopped: nothing was rolled back: check the host(s) on {backend.noun}.")
    elif status is RunStatus.UNVERIFIED:
        where = ", ".join(o.host for o in unverified) or "a host"
        title, severity, extra = f"{what} deployed but not verified on {where}", "warning", ["warning"]
        if continuable:
            from nfu_tui.core.engine import continue_command

            lines.append(f"Stopped at the canaries: {continue_command(result.run_id)} (or `o` in the TUI).")
    else:
        where = ", ".join(o.host for o in failed) or "the run"
        title, severity, extra = f"{what} deploy failed on {where}", "error", ["rotating_light"]
        if result.message:
            lines.append(f"Stopped: {result.message}.")
    if not lines:
        lines.append(result.summary())
    event = f"run:{result.run_id}:{status.value}" + (f":{','.join(waiting)}" if waiting else "")
    return Notification(title, "\n".join(lines), severity, tags + extra, link, event)
