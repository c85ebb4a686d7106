"""Async client for the NixFleet dashboard: REST under ``/api`` and the ``/ws`` stream.

A thin I/O shell around :mod:`nfu_tui.clients._dashboard_protocol`: httpx for REST
(redirects never followed, the session cookie and CSRF token handled here) and
``websockets`` for ``/ws`` (cookie header, no ``Origin``, reconnect with backoff).
Transport and protocol failures leave this module only as :mod:`nfu_tui.errors`
types. The password, the TOTP secret and the session cookie never appear in reprs,
errors or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from nfu_tui import __version__
from nfu_tui.backends.base import NIXFLEET
from nfu_tui.clients._dashboard_protocol import (
    GET_STATE,
    SAFE_METHODS,
    SESSION_COOKIE,
    Connected,
    Disconnected,
    DispatchResult,
    Message,
    StreamEvent,
    check_response,
    interpret_login,
    is_login_redirect,
    parse_command_response,
    parse_command_states,
    parse_dispatch,
    parse_events,
    parse_hosts,
    parse_json_body,
    parse_output,
    parse_ws_message,
    scrape_csrf,
    scrape_version,
    session_cookie,
    session_refused,
)
from nfu_tui.clients._limits import body_cap
from nfu_tui.clients.fleet import FleetChange, FleetModel, FleetSnapshot
from nfu_tui.domain.totp import totp as totp_code_for
from nfu_tui.errors import (
    CsrfRejected,
    DashboardError,
    DashboardUnavailable,
    LoginFailed,
    SessionExpired,
)
from nfu_tui.models import Command, Host, StatusCheck
from nfu_tui.sanitize import add_secret

__all__ = ["DashboardClient", "Connected", "Disconnected", "Message", "StreamEvent", "DispatchResult"]

log = logging.getLogger(__name__)


class _RedactCookies(logging.Filter):
    """websockets logs every handshake header at DEBUG; keep the session cookie out of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in ("cookie", "set-cookie"):
            record.args = (args[0], "<redacted>")
        return True


ws_log = logging.getLogger(f"{__name__}.websocket")
ws_log.addFilter(_RedactCookies())

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
# The dashboard sends a ``sync`` beacon every 30 s, so a healthy connection is never
# silent this long; pings/pongs are handled by the library and do not count.
WS_IDLE_TIMEOUT = 75.0
WS_MAX_MESSAGE = 64 * 1024 * 1024  # init with thousands of hosts is several MB
MAX_BODY_BYTES = WS_MAX_MESSAGE  # REST answers: the same bound as a /ws frame


class _RejectAllCookies(http.cookiejar.DefaultCookiePolicy):
    """The session cookie is managed explicitly; httpx's jar must not keep a copy."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class _connect_no_redirects(connect):  # noqa: N801 - a drop-in for websockets' ``connect``
    """``connect`` that reports redirects instead of following them.

    The dashboard's "no session" answer may be a redirect to ``/login``; following it
    would only hide the session loss (and loop until the redirect limit).
    """

    def process_redirect(self, exc: Exception) -> Exception:
        return exc


def _secret(value: SecretStr | str | None) -> SecretStr | None:
    if value is None or isinstance(value, SecretStr):
        return value if value is None or value.get_secret_value() else None
    return SecretStr(value) if value else None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_url(url: str, insecure: bool) -> tuple[str, str]:
    """(REST base URL without trailing slash, ``/ws`` URL) or :class:`DashboardError`."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DashboardError("The dashboard URL must look like https://host[:port].")
    if parts.username or parts.password:
        raise DashboardError("The dashboard URL must not contain credentials; configure the password separately.")
    if parts.scheme == "http" and not insecure and not _is_loopback(parts.hostname):
        raise DashboardError(
            f"Refusing plain http:// to {parts.hostname}: the dashboard password would travel unencrypted. "
            "Use https:// or pass --insecure.",
            title="Insecure dashboard URL",
        )
    path = parts.path.rstrip("/")
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    ws = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, f"{path}/ws", "", ""))
    return base, ws


class DashboardClient:
    """Session-handling client of one NixFleet dashboard (see the module docstring).

    Every REST call logs in lazily, re-logs in once when the session turned out to be
    expired (a 302 to ``/login`` or a plain 401 happens before any handler runs, so
    retrying is safe for POSTs too) and re-scrapes the CSRF token once on a 403
    ``Forbidden``.
    """

    info = NIXFLEET

    def __init__(
        self,
        *,
        url: str,
        password: SecretStr | str | None,
        totp_secret: SecretStr | str | None = None,
        insecure: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        user_agent: str = f"nfu-tui/{__version__}",
        timeout: float = 30.0,
        ws_idle_timeout: float = WS_IDLE_TIMEOUT,
    ) -> None:
        self._base, self._ws_url = validate_url(url, insecure)
        self._password = _secret(password)
        self._totp_secret = _secret(totp_secret)
        add_secret(self._password, self._totp_secret)  # never shown, whatever the dashboard echoes
        self._sleep = sleep
        self._user_agent = user_agent
        self._timeout = timeout
        self._ws_idle_timeout = ws_idle_timeout
        self._http = httpx.AsyncClient(
            base_url=self._base,
            transport=transport,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"User-Agent": user_agent},
            cookies=http.cookiejar.CookieJar(policy=_RejectAllCookies()),
            event_hooks={"response": [body_cap(MAX_BODY_BYTES, DashboardError, "The dashboard")]},
        )
        self._cookie: str | None = None
        self._csrf: str | None = None
        self._session = 0  # incremented by every successful login
        self._manual_totp = False  # the session was opened with a code typed by the user
        self._login_lock = asyncio.Lock()
        self._ws: ClientConnection | None = None
        self._closed = False
        self.dashboard_version: str | None = None
        self.needs_totp = False  # the dashboard demanded a TOTP code we could not supply

    def __repr__(self) -> str:
        return f"DashboardClient(url={self._base!r}, logged_in={self.logged_in})"

    async def __aenter__(self) -> DashboardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ what a login screen needs

    @property
    def url(self) -> str:
        return self._base

    @property
    def needs_password(self) -> bool:
        """No password is configured: ask the user before :meth:`login`."""
        return self._password is None

    @property
    def has_totp_secret(self) -> bool:
        """Codes are generated automatically (no prompt needed)."""
        return self._totp_secret is not None

    @property
    def logged_in(self) -> bool:
        return self._cookie is not None

    def set_password(self, password: SecretStr | str) -> None:
        """Supply the password typed into a login screen."""
        self._password = _secret(password)
        add_secret(self._password)

    # ------------------------------------------------------------------- session

    async def login(self, *, totp_code: str | None = None) -> None:
        """Log in (``POST /login``, §2.9), then fetch ``/`` for the CSRF token and version.

        Without ``totp_code`` a code is generated from the configured TOTP secret, if any.
        Raises :class:`LoginFailed` (``needs_totp``/``rate_limited`` tell why) or
        :class:`DashboardUnavailable`.
        """
        async with self._login_lock:
            await self._login_locked(totp_code)

    async def _login_locked(self, totp_code: str | None) -> None:
        if self._password is None:
            raise LoginFailed("No dashboard password is configured.")
        code = totp_code.strip() if totp_code else None
        if code is None and self._totp_secret is not None:
            try:
                code = totp_code_for(self._totp_secret.get_secret_value())
            except ValueError as exc:
                raise LoginFailed(f"The configured TOTP secret is unusable: {exc}.") from None
        form = {"password": self._password.get_secret_value()}
        if code:
            form["totp"] = code
        response = await self._send("POST", "/login", data=form, session=False)
        try:
            interpret_login(response.status_code, response.headers.get("location", ""))
        except LoginFailed as exc:
            if exc.needs_totp and not code:
                self.needs_totp = True
            raise
        cookie = session_cookie(response.headers.get_list("set-cookie"))
        if cookie is None:
            raise LoginFailed("The dashboard accepted the login but set no session cookie.")
        add_secret(cookie)  # learned at run time: redacted from every text from now on
        self._cookie = cookie
        self._session += 1
        self._manual_totp = totp_code is not None and self._totp_secret is None
        self.needs_totp = False
        await self._refresh_csrf()

    async def _refresh_csrf(self) -> None:
        response = await self._send("GET", "/")
        if session_refused(response.status_code, response.headers.get("location", ""), response.content):
            self._cookie = None
            raise SessionExpired("The dashboard session was not accepted right after login.")
        check_response("GET", "/", response.status_code, response.headers.get("content-type", ""), "", response.content)
        html = response.text
        token = scrape_csrf(html)
        if token is None:
            raise DashboardError("The dashboard page carries no CSRF token; is the URL a NixFleet dashboard?")
        add_secret(token)
        self._csrf = token
        self.dashboard_version = scrape_version(html) or self.dashboard_version

    async def _ensure_session(self) -> None:
        """Log in unless a session exists (concurrent callers share one login)."""
        if self._cookie is not None:
            return
        async with self._login_lock:
            if self._cookie is None:
                await self._login_locked(None)

    async def _relogin(self, seen_session: int) -> None:
        """Log in again unless another task already did since ``seen_session``."""
        async with self._login_lock:
            if self._session != seen_session and self._cookie is not None:
                return
            self._cookie = None
            if self._manual_totp:
                raise SessionExpired(
                    "The dashboard session expired; log in again with a fresh TOTP code.",
                    hint="no TOTP secret is configured",
                )
            await self._login_locked(None)

    async def logout(self) -> None:
        """End the session on the dashboard (``POST /logout``) and forget it locally."""
        if self._cookie is None:
            return
        try:
            await self._send("POST", "/logout", headers={"X-CSRF-Token": self._csrf or ""})
        finally:
            self._cookie = None
            self._csrf = None

    # ------------------------------------------------------------------- requests

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        session: bool = True,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if session and self._cookie is not None:
            all_headers["Cookie"] = f"{SESSION_COOKIE}={self._cookie}"
        try:
            return await self._http.request(method, path, json=json, data=data, params=params, headers=all_headers)
        except httpx.TimeoutException:
            raise DashboardUnavailable(f"The dashboard at {self._base} did not answer {method} {path} in time.") from None
        except httpx.HTTPError as exc:
            raise DashboardUnavailable(
                f"Cannot reach the dashboard at {self._base} ({type(exc).__name__}: {exc})."
            ) from None

    async def _request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        """Send with session + CSRF, re-login once when the session is refused (302 → /login or a
        plain 401), re-scrape CSRF once on 403 ``Forbidden``."""
        await self._ensure_session()
        mutating = method.upper() not in SAFE_METHODS
        relogged = rescraped = False
        while True:
            seen = self._session
            headers = {"X-CSRF-Token": self._csrf or ""} if mutating else None
            response = await self._send(method, path, json=json, params=params, headers=headers)
            status = response.status_code
            if session_refused(status, response.headers.get("location", ""), response.content):
                if relogged:
                    raise SessionExpired(f"{method} {path}: the dashboard keeps refusing the session.", status=status)
                relogged = True
                log.info("dashboard session expired; logging in again")
                await self._relogin(seen)
                continue
            if mutating and status == 403 and response.text.strip() == "Forbidden":
                if rescraped:
                    raise CsrfRejected(f"{method} {path}: the dashboard rejected the CSRF token.", status=status)
                rescraped = True
                try:
                    await self._refresh_csrf()
                except SessionExpired:
                    if relogged:
                        raise
                    relogged = True
                    await self._relogin(seen)
                continue
            return response

    async def _json(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        response = await self._request(method, path, json=json, params=params)
        self._check(method, path, response)
        return parse_json_body(response.content, f"{method} {path}")

    @staticmethod
    def _check(method: str, path: str, response: httpx.Response) -> None:
        check_response(
            method,
            path,
            response.status_code,
            response.headers.get("content-type", ""),
            response.headers.get("location", ""),
            response.content,
        )

    @staticmethod
    def _host_path(host: str, tail: str) -> str:
        return f"/api/hosts/{quote(host, safe='')}/{tail}"

    # ------------------------------------------------------------------------ REST

    async def hosts(self) -> list[Host]:
        """``GET /api/hosts``: the flat host listing (no compartments, §3.1)."""
        return parse_hosts(await self._json("GET", "/api/hosts"), self.dashboard_version)

    async def dispatch(
        self, op: str, hosts: list[str], *, force: bool = False, totp: str | None = None
    ) -> list[DispatchResult]:
        """``POST /api/dispatch``: one :class:`DispatchResult` per requested host (§3.4).

        Request-level refusals (unknown op, TOTP missing/invalid/not configured) raise
        :class:`DashboardError` with the dashboard's message and status.
        """
        if not hosts:
            return []
        code = totp
        if code is None and self._totp_secret is not None:
            try:
                code = totp_code_for(self._totp_secret.get_secret_value())
            except ValueError as exc:
                raise DashboardError(f"The configured TOTP secret is unusable: {exc}.") from None
        body = {"op": op, "hosts": list(hosts), "force": force, "totp": code or ""}
        return parse_dispatch(await self._json("POST", "/api/dispatch", json=body), list(hosts))

    async def command(self, host: str, op: str, *, force: bool = False) -> DispatchResult:
        """Legacy ``POST /api/hosts/{id}/command`` (409 → blocked result, 404 → error result)."""
        path = self._host_path(host, "command")
        response = await self._request("POST", path, json={"command": op, "args": [], "force": force})
        return parse_command_response(
            host,
            response.status_code,
            response.headers.get("content-type", ""),
            response.headers.get("location", ""),
            response.content,
        )

    async def kill(self, host: str, signal: str = "SIGTERM") -> str:
        """``POST /api/hosts/{id}/kill``; returns the dashboard's status word (``sent``).

        Note (§3.7): this does not stop anything on the host with the current agent.
        """
        data = await self._json("POST", self._host_path(host, "kill"), json={"signal": signal})
        return str(data.get("status") or "") if isinstance(data, Mapping) else ""

    async def timeout_action(self, host: str, action: str, minutes: int | None = None) -> None:
        """``POST /api/hosts/{id}/timeout-action`` with ``wait`` (``minutes``), ``kill`` or ``ignore``."""
        body: dict[str, Any] = {"action": action}
        if minutes is not None:
            body["minutes"] = minutes
        await self._json("POST", self._host_path(host, "timeout-action"), json=body)

    async def output(self, host: str, lines: int = 500, *, bare: bool = False) -> list[str]:
        """``GET /api/hosts/{id}/output?lines=N``: recent raw output of the host, sanitized
        (``bare``: only the output lines, without the log file's header and time stamps)."""
        path = self._host_path(host, "output")
        response = await self._request("GET", path, params={"lines": lines})
        self._check("GET", path, response)
        return parse_output(response.content, bare=bare)

    async def events(self, limit: int = 100, host: str | None = None) -> list[dict[str, Any]]:
        """``GET /api/events`` (or a host's events), newest first."""
        path = "/api/events" if host is None else self._host_path(host, "events")
        return parse_events(await self._json("GET", path, params={"limit": limit}))

    async def command_states(self) -> dict[str, Command]:
        """``GET /api/command-states``: host id → the lifecycle's latest command (may be terminal, §8 #33)."""
        return parse_command_states(await self._json("GET", "/api/command-states"))

    async def refresh_host(self, host: str) -> dict[str, Any]:
        """``POST /api/hosts/{id}/refresh``: the raw, ungated host status (§3.11)."""
        data = await self._json("POST", self._host_path(host, "refresh"), json={})
        return dict(data) if isinstance(data, Mapping) else {}

    async def refresh_git(self, host: str) -> StatusCheck | None:
        """``POST /api/hosts/{id}/refresh-git``: refetch ``version.json`` and return the Git compartment."""
        return StatusCheck.from_json(await self._json("POST", self._host_path(host, "refresh-git"), json={}))

    # ---------------------------------------------------------------------- /ws

    def _ws_connect(self) -> connect:
        return _connect_no_redirects(
            self._ws_url,
            additional_headers={"Cookie": f"{SESSION_COOKIE}={self._cookie}"},
            user_agent_header=self._user_agent,
            compression=None,
            max_size=WS_MAX_MESSAGE,
            open_timeout=self._timeout,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            logger=ws_log,
        )

    @contextlib.asynccontextmanager
    async def _open_ws(self) -> AsyncIterator[ClientConnection]:
        """An open ``/ws`` connection, closed with 1000 (normal closure) however its use ends.

        websockets' own ``async with`` closes with 1011 (internal error) when an exception
        leaves the block — and a cancelled task (quitting, a stopped deploy) or a consumer
        that stops iterating is such an exception, though for us it is a normal end.
        """
        ws = await self._ws_connect()
        try:
            yield ws
        finally:
            await ws.close()

    async def full_state(self) -> FleetSnapshot:
        """One-shot fleet state: open ``/ws``, take ``init``, close (for ``nfu-tui status``)."""
        for attempt in range(2):
            await self._ensure_session()
            model = FleetModel(dashboard_version=self.dashboard_version)
            try:
                async with self._open_ws() as ws:
                    model.apply_event(Connected(self._ws_url))
                    async with asyncio.timeout(self._timeout):
                        while not model.synced:
                            data = parse_ws_message(await ws.recv())
                            if data is not None:
                                model.apply(data)
                return model.snapshot()
            except InvalidStatus as exc:
                refused = exc.response.status_code == 401 or is_login_redirect(
                    exc.response.status_code, exc.response.headers.get("Location", "")
                )
                if refused and attempt == 0:
                    self._cookie = None  # session gone: log in again once
                    continue
                raise DashboardUnavailable(
                    f"The dashboard refused the WebSocket (HTTP {exc.response.status_code}).",
                    status=exc.response.status_code,
                ) from None
            except TimeoutError:
                raise DashboardUnavailable(
                    "The dashboard did not open /ws or send its initial state in time."
                ) from None
            except (OSError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
                raise DashboardUnavailable(f"Cannot open the dashboard WebSocket: {_describe(exc)}.") from None
        raise SessionExpired("The dashboard refused the WebSocket session twice.")  # pragma: no cover

    async def request_state(self) -> bool:
        """Send ``get_state`` on the live stream connection; False if there is none."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(GET_STATE)
        except ConnectionClosed:
            return False
        return True

    async def stream(self) -> AsyncIterator[StreamEvent]:
        """``/ws`` as typed events, forever (until :meth:`aclose` or the consumer stops).

        Yields :class:`Connected` for each new connection (an ``init`` message follows),
        one :class:`Message` per frame, and :class:`Disconnected` (with the reason and
        the retry delay) whenever the connection fails; reconnects with backoff 1 s
        doubling to 30 s, logs in again after a 401, and treats a connection silent
        for longer than ``ws_idle_timeout`` as dead. Wrong credentials
        (:class:`LoginFailed` other than rate limiting) end the stream with that error,
        as does an expired session that was opened with a typed TOTP code
        (:class:`SessionExpired`): both need the user. Other dashboard errors are
        reported as :class:`Disconnected` and retried.
        """
        delay = BACKOFF_START
        while not self._closed:
            reason = ""
            try:
                await self._ensure_session()
                async with self._open_ws() as ws:
                    self._ws = ws
                    yield Connected(self._ws_url)
                    delay = BACKOFF_START
                    while True:
                        try:
                            async with asyncio.timeout(self._ws_idle_timeout):
                                frame = await ws.recv()
                        except TimeoutError:
                            reason = f"no message from the dashboard for {self._ws_idle_timeout:g} s"
                            break
                        data = parse_ws_message(frame)
                        if data is not None:
                            yield Message(data)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status == 401 or is_login_redirect(status, exc.response.headers.get("Location", "")):
                    self._cookie = None
                    if self._manual_totp:
                        raise SessionExpired(
                            "The dashboard session expired; log in again with a fresh TOTP code.", status=401
                        ) from None
                    reason = f"the dashboard refused the session (HTTP {status}); logging in again"
                else:
                    reason = f"WebSocket handshake refused (HTTP {status})"
            except ConnectionClosed as exc:
                reason = "the dashboard closed the connection" if exc.rcvd is not None else "connection lost"
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                reason = f"cannot connect: {_describe(exc)}"
            except LoginFailed as exc:
                if not exc.rate_limited:
                    raise  # wrong password / TOTP needed: retrying cannot help
                reason = exc.message
            except DashboardError as exc:  # unreachable, 5xx, odd answers: transient
                reason = exc.message
            finally:
                self._ws = None
            if self._closed:
                return
            log.info("dashboard stream disconnected: %s; retrying in %g s", reason, delay)
            yield Disconnected(reason, delay)
            await self._sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def follow(self, model: FleetModel) -> AsyncIterator[tuple[StreamEvent, list[FleetChange]]]:
        """Feed :meth:`stream` into ``model``, sending ``get_state`` whenever it asks to resync.

        Yields each stream event with the model changes it caused.
        """
        async for event in self.stream():
            changes = model.apply_event(event)
            if isinstance(event, Connected):
                changes += model.set_dashboard_version(self.dashboard_version)
            if model.take_resync_request():
                await self.request_state()
            yield event, changes

    async def aclose(self) -> None:
        """Stop the stream (if running) and close the HTTP client."""
        self._closed = True
        ws = self._ws
        if ws is not None:
            await ws.close()
        await self._http.aclose()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
