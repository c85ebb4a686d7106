"""Fake NixFleet dashboard: aiohttp server with login/session/CSRF, the REST API and ``/ws``.

Faithful to ``/work/shared/contracts/nixfleet-dashboard-api.md`` (§ numbers below refer
to it), including its odd corners: every login outcome is a 302, unauthenticated
``/`` and ``/api/*`` redirect to ``/login``, two error-body styles, ``null``
collections, ``/api/dispatch`` answering 200 with per-host results, a ``/kill``
that kills nothing, and the ``/ws`` sync protocol with a global version counter.

The state and the lifecycle live in :class:`nfu_tui.sim.agents.Fleet`; this module
owns HTTP, sessions and the WebSocket fan-out (:class:`SyncHub`).

Deliberate choices where the real server is unusable or unknowable:

* ``POST /api/dispatch/pipeline`` validates like the real handler and answers 200
  ``started`` but runs nothing (the real one crashes the process, §3.20; §10 allows this).
* ``/api/flake-updates/*`` answer 501 (GitHub integration off, the default).
* Command ids are unique even within one millisecond (the real generator may collide).
* ``refresh-git`` recomputes Git against the last *published* ``version.json``
  (``remote_changed()`` is the publication), so it cannot skip the publish lag.
* Legacy and sync messages share one ordered per-connection queue (256 frames,
  overflow dropped); the real server may also reorder them (§4.4 race 7).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote_plus, urlsplit

from aiohttp import WSMsgType, web

from nfu_tui.sim.agents import (
    OPS,
    PIPELINES,
    RUNTIME_FAULTS,
    DesiredState,
    Fleet,
    SimCommand,
    SimHost,
    utcnow,
)
from nfu_tui.sim.scenario import HOST_FAULTS, HostSpec, Scenario

__all__ = ["DesiredState", "FakeDashboard", "RateLimiter", "SyncHub", "check_origin", "go_json", "totp_code", "totp_valid"]

log = logging.getLogger(__name__)

SESSION_COOKIE = "nixfleet_session"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-XSS-Protection": "1; mode=block",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_SESSION: web.RequestKey[Session] = web.RequestKey("session", "Session")
_CONSUMED = web.RequestKey("body_consumed", bool)
_COLOR_RE = re.compile(r"^#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")


# --- pure helpers --------------------------------------------------------------


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def go_json(value: Any) -> str:
    """JSON as Go's encoder writes it: sorted map keys, UTF-8, ``<>&`` and U+2028/9 escaped.

    A lone surrogate (the ``garbled_output`` fault) is written as its ``\\udcff`` escape:
    legal JSON that a client decodes into a string it cannot encode as UTF-8.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _strip_port(hostport: str) -> str:
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def check_origin(origin: str | None, host: str, allowed: Sequence[str] = ()) -> bool:
    """handlers.go:checkOrigin (§4.1): first matching rule wins."""
    if not origin:
        return True
    if origin in allowed:
        return True
    try:
        parts = urlsplit(origin)
        netloc = parts.netloc
    except ValueError:
        return False
    if not parts.scheme or not netloc:
        return False
    if _strip_port(host) in _LOCAL_HOSTS:
        return _strip_port(netloc) in _LOCAL_HOSTS
    return origin == "https://" + host


class RateLimiter:
    """Sliding-window limiter keyed by client IP (auth.go:RateLimiter, §2.2)."""

    def __init__(self, limit: int = 5, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float) -> bool:
        """Record and allow an attempt, or refuse it (refusals are not recorded)."""
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def reset(self, key: str) -> None:
        self._hits.pop(key, None)

    def clear(self) -> None:
        self._hits.clear()


def totp_code(secret_b32: str, counter: int) -> str:
    """RFC 6238 TOTP value for one 30 s step (SHA-1, 6 digits)."""
    cleaned = secret_b32.upper().replace(" ", "")
    key = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def totp_valid(secret_b32: str, code: str, now: float) -> bool:
    """pquerna/otp defaults: ±1 step of skew, no replay protection (§2.8)."""
    if not (len(code) == 6 and code.isdigit()):
        return False
    step = int(now // 30)
    return any(hmac.compare_digest(totp_code(secret_b32, step + d), code) for d in (-1, 0, 1))


def real_ip(headers: Any, remote: str | None) -> str:
    """chi RealIP: True-Client-IP, X-Real-IP, then the first X-Forwarded-For entry."""
    for name in ("True-Client-IP", "X-Real-IP"):
        if headers.get(name):
            return headers[name].strip()
    if headers.get("X-Forwarded-For"):
        return headers["X-Forwarded-For"].split(",", 1)[0].strip()
    return remote or ""


_GO_TYPES: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "list": lambda v: isinstance(v, list) and all(x is None or isinstance(x, str) for x in v),
}
_ZERO: dict[str, Any] = {"str": "", "bool": False, "int": 0, "list": []}


def decode_go_json(raw: bytes, schema: dict[str, str]) -> dict[str, Any] | None:
    """Decode a request body like Go's ``json.Decoder`` into a struct; ``None`` = 400.

    Empty body (EOF), malformed JSON and type mismatches fail; unknown fields are
    ignored; keys match case-insensitively; only the first JSON value is read.
    """
    text = raw.decode("utf-8", "replace").lstrip()
    if not text:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return None
    out = {k: [] if t == "list" else _ZERO[t] for k, t in schema.items()}
    lower = {k.lower(): k for k in schema}
    for key, v in value.items():
        name = key if key in schema else lower.get(key.lower())
        if name is None or v is None:
            continue
        if not _GO_TYPES[schema[name]](v):
            return None
        out[name] = [x or "" for x in v] if schema[name] == "list" else v
    return out


# --- responses ------------------------------------------------------------------


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=(go_json(value) + "\n").encode(),
                        headers={"Content-Type": "application/json"})


def _json_error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _text(status: int, message: str) -> web.Response:
    """Go ``http.Error``: message + newline, text/plain."""
    return web.Response(status=status, body=(message + "\n").encode(),
                        headers={"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"})


def _redirect(request: web.Request, location: str) -> web.Response:
    """Go ``http.Redirect`` with 302: an HTML body only for GET."""
    resp = web.Response(status=302, headers={"Location": location})
    if request.method in ("GET", "HEAD"):
        resp.headers["Content-Type"] = "text/html; charset=utf-8"
    if request.method == "GET":
        resp.body = f'<a href="{html.escape(location)}">Found</a>.\n\n'.encode()
    return resp


def _login_error(request: web.Request, message: str) -> web.Response:
    return _redirect(request, "/login?error=" + quote_plus(message))


@dataclass
class DispatchFault:
    """A fault of ``/api/dispatch`` (:meth:`FakeDashboard.set_dispatch_fault`)."""

    delay: float
    lose: bool
    ops: frozenset[str]
    times: int
    execute: bool = True


# --- sessions and the sync hub -------------------------------------------------------


@dataclass
class Session:
    token: str
    csrf: str
    expires: datetime

    def __repr__(self) -> str:  # tokens never end up in logs or assertion messages
        return f"Session(expires={self.expires.isoformat()})"


class _Client:
    """One browser ``/ws`` connection with its 256-frame outbound buffer (§4.2)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        self.writer = asyncio.get_running_loop().create_task(self._write())

    def send(self, text: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a full buffer drops silently, like the hub
            self.queue.put_nowait(text)

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                text = await self.queue.get()
                await self.ws.send_str(text)


class SyncHub:
    """The version counter and fan-out of sync deltas and legacy messages (sync.go, hub.go).

    Fault switches reproduce the races of §4.4: ``drop`` (next N deltas never sent),
    ``reorder`` (the next two deltas swap places), ``delta_before_init``.
    """

    def __init__(self, version: int) -> None:
        self.version = version
        self.clients: set[_Client] = set()
        self.drop = 0
        self.reorder = False
        self.delta_before_init = False
        self._held: str | None = None

    def change(self, kind: str, id: str = "", fields: dict[str, Any] | None = None,
               payload: dict[str, Any] | None = None) -> None:
        self.version += 1
        if not self.clients:
            return
        body: dict[str, Any] = {"type": kind}
        if id:
            body["id"] = id
        if fields:
            body["fields"] = fields
        if payload:
            body["payload"] = payload
        if self.drop > 0:
            self.drop -= 1
            return
        text = go_json({"type": "delta", "version": self.version, "payload": body})
        if self.reorder:
            if self._held is None:
                self._held = text
                return
            self._send_all(text)
            text, self._held, self.reorder = self._held, None, False
        self._send_all(text)

    def legacy(self, kind: str, payload: dict[str, Any]) -> None:
        if self.clients:
            self._send_all(go_json({"type": kind, "payload": payload}))

    def beacon(self) -> None:
        if self._held is not None:
            self._send_all(self._held)
            self._held, self.reorder = None, False
        if self.clients:
            self._send_all(go_json({"type": "sync", "version": self.version}))

    def _send_all(self, text: str) -> None:
        for client in self.clients:
            client.send(text)


# --- the server ----------------------------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeDashboard:
    """The fake NixFleet dashboard (REST + ``/ws``) over a simulated fleet.

    ``desired_state`` returns what the config repo's ``version.json`` would publish;
    it is read at start, on :meth:`remote_changed` and by agents when they pull.
    Read access for assertions: :attr:`hosts`, :attr:`commands`, :attr:`active`,
    :attr:`version`, :attr:`fleet`.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        desired_state: Callable[[], DesiredState],
        timeout_scale: float | None = None,
        allowed_origins: Sequence[str] = (),
        session_hours: float = 24.0,
        login_limit: int = 5,
        login_window: float = 60.0,
    ) -> None:
        self.scenario = scenario
        self.hub = SyncHub(48000 + scenario.rng("version").randint(0, 999))
        self.fleet = Fleet(scenario, self.hub, desired_state, timeout_scale=timeout_scale)
        self.allowed_origins = tuple(allowed_origins)
        self.session_duration = timedelta(hours=session_hours)
        self._limiter = RateLimiter(login_limit, login_window)
        self._sessions: dict[str, Session] = {}
        self._reboots: dict[str, deque[float]] = {}
        self._rng = scenario.rng("dashboard")
        self._build = f"{self._rng.getrandbits(28):07x}"
        self._runner: web.AppRunner | None = None
        self._beacon: asyncio.Task[None] | None = None
        self.unreachable = False  # see set_unreachable
        self.url = ""
        self.dispatch_fault: DispatchFault | None = None
        self.dispatch_stalls = 0  # dispatch answers currently held back by a fault (for tests)
        self.ws_close_codes: list[int | None] = []  # per finished /ws connection: the close code it ended with
        # Fault: the next N requests whose path contains echo_secrets_path answer 500 with an error
        # that repeats the password (plain, URL-encoded, base64), the Cookie header, session and CSRF token.
        self.echo_secrets_next = 0
        self.echo_secrets_path = ""  # exact path, or "*" for any
        self.sessions_issued: list[Session] = []  # every session ever handed out (tests look for leaked cookies)

    def __repr__(self) -> str:
        return f"FakeDashboard(url={self.url!r}, hosts={len(self.fleet.hosts)})"

    # -- read access ---------------------------------------------------------------

    @property
    def hosts(self) -> dict[str, SimHost]:
        return self.fleet.hosts

    @property
    def commands(self) -> dict[str, SimCommand]:
        return self.fleet.commands

    @property
    def active(self) -> dict[str, SimCommand]:
        return self.fleet.active

    @property
    def version(self) -> int:
        return self.hub.version

    @property
    def password(self) -> str:
        return self.scenario.password

    # -- life -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start the fleet and serve on ``host:port`` (0 = ephemeral); returns the base URL."""
        app = web.Application(middlewares=[self._middleware])
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{bound[0]}:{bound[1]}"
        self.fleet.start()
        self._beacon = asyncio.get_running_loop().create_task(self._beacon_loop())
        return self.url

    async def stop(self) -> None:
        if self._beacon:
            self._beacon.cancel()
        self.fleet.stop()
        await self._close_clients()
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def _beacon_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scenario.sync_seconds)
            self.hub.beacon()

    async def _close_clients(self) -> None:
        clients, self.hub.clients = list(self.hub.clients), set()
        for client in clients:
            client.writer.cancel()
            with contextlib.suppress(Exception):
                await client.ws.close()

    # -- control hooks ------------------------------------------------------------------

    def remote_changed(self) -> None:
        """``version.json`` was republished and refetched: recompute Git/Lock now (one delta per connected host)."""
        self.fleet.remote_changed()

    def drop_lock_hash(self) -> None:
        """Publish a ``version.json`` without ``lockHash`` (§8 #20) until the next :meth:`remote_changed`."""
        self.fleet.drop_lock_hash()

    def set_online(self, host: str, online: bool) -> None:
        """Bring a host's agent up (it registers) or take the host off the network (offline delta)."""
        agent = self.fleet.hosts[host].agent
        if agent is None:
            raise ValueError(f"host {host!r} has no agent")
        if online and not agent.up:
            agent.start()
        elif not online:
            agent.kill_process()

    def set_fault(self, host: str, fault: str, on: bool = True) -> None:
        """Toggle a fault of :data:`~nfu_tui.sim.scenario.HOST_FAULTS` (or ``rejects_commands``/``send_fails``)."""
        if fault not in HOST_FAULTS | RUNTIME_FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        if fault == "offline":
            self.set_online(host, not on)
            return
        agent = self.fleet.hosts[host].agent
        if agent is None:
            raise ValueError(f"host {host!r} has no agent")
        if on:
            agent.faults.add(fault)
        else:
            agent.faults.discard(fault)

    def restart_dashboard(self) -> None:
        """Simulate a dashboard restart: browsers dropped, every host offline, lifecycle map
        empty, login limiter reset; sessions, commands, events and the version survive."""
        asyncio.get_running_loop().create_task(self._close_clients())
        self._limiter.clear()
        self.fleet.restart()

    def set_dispatch_fault(self, *, delay: float = 0.0, lose: bool = False, ops: Sequence[str] = ("switch",),
                           times: int = 1, execute: bool = True) -> None:
        """The next ``times`` ``/api/dispatch`` calls for one of ``ops`` run as usual (commands, deltas,
        events), then their answer comes ``delay`` seconds late, or is lost (``lose``: the connection
        is closed without an answer after the delay) — what a client sees on a slow or broken network.
        ``execute=False``: the request is lost on its way in (nothing runs, no answer)."""
        self.dispatch_fault = DispatchFault(delay, lose, frozenset(ops), times, execute)

    def set_unreachable(self, on: bool = True) -> None:
        """An outage between nfu-tui and the dashboard (its reverse proxy answers 502 to everything and the
        open WebSockets drop) while the fleet behind it goes on; ``False`` ends it."""
        self.unreachable = on
        if on:
            asyncio.get_running_loop().create_task(self._close_clients())

    def drop_next_deltas(self, n: int = 1) -> None:
        self.hub.drop += n

    def reorder_next_deltas(self) -> None:
        self.hub.reorder = True

    def send_delta_before_init(self, on: bool = True) -> None:
        """New ``/ws`` connections get one real delta before their ``init`` (needs an online host)."""
        self.hub.delta_before_init = on

    def expire_sessions(self) -> None:
        """Every session expires (open WebSockets stay open, like the real server)."""
        self._sessions.clear()

    def add_host(self, spec: HostSpec) -> SimHost:
        """A new machine: its agent registers now if ``spec.online`` (``host_updated`` for an unknown id)."""
        return self.fleet.add_host(spec)

    def remove_host(self, host: str) -> None:
        """Shut the host's agent down and delete the host (``host_removed``)."""
        self.fleet.remove_host(host)

    # -- routing and guards --------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/health", self._health)
        r.add_get("/login", self._login_page)
        r.add_post("/login", self._login)
        r.add_get("/ws", self._ws)
        r.add_get("/", self._guard(self._dashboard, csrf=False))
        r.add_post("/logout", self._guard(self._logout))
        api: list[tuple[str, str, Handler]] = [
            ("GET", "/api/hosts", self._get_hosts),
            ("POST", "/api/hosts", self._add_host),
            ("DELETE", "/api/hosts/{id}", self._delete_host),
            ("POST", "/api/hosts/{id}/command", self._command),
            ("POST", "/api/hosts/{id}/refresh", self._refresh),
            ("POST", "/api/hosts/{id}/refresh-git", self._refresh_git),
            ("POST", "/api/hosts/{id}/theme-color", self._theme_color),
            ("POST", "/api/hosts/{id}/reboot", self._reboot),
            ("GET", "/api/hosts/{id}/logs", self._logs),
            ("GET", "/api/hosts/{id}/output", self._output),
            ("POST", "/api/hosts/{id}/kill", self._kill),
            ("POST", "/api/hosts/{id}/timeout-action", self._timeout_action),
            ("GET", "/api/hosts/{id}/events", self._host_events),
            ("GET", "/api/command-states", self._command_states),
            ("GET", "/api/system-log", self._system_log),
            ("GET", "/api/flake-updates/status", self._flake_off),
            ("POST", "/api/flake-updates/check", self._flake_off),
            ("POST", "/api/flake-updates/merge-pr", self._flake_off),
            ("POST", "/api/flake-updates/merge-and-deploy", self._flake_off),
            ("POST", "/api/dispatch", self._dispatch),
            ("POST", "/api/dispatch/pipeline", self._dispatch_pipeline),
            ("GET", "/api/ops", self._ops),
            ("GET", "/api/pipelines", self._pipelines),
            ("GET", "/api/events", self._events),
        ]
        for method, path, handler in api:
            r.add_route(method, path, self._guard(handler, csrf=method != "GET"))

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.unreachable:
            return _text(502, "Bad Gateway")
        try:
            if self.echo_secrets_next > 0 and self.echo_secrets_path in (request.path, "*"):
                self.echo_secrets_next -= 1
                return self._echo_secrets(request)
            resp = await handler(request)
        except web.HTTPNotFound:
            resp = _text(404, "404 page not found")
        except web.HTTPMethodNotAllowed:
            resp = web.Response(status=405)
        except web.HTTPException as exc:
            resp = _text(exc.status, exc.reason)
        except asyncio.CancelledError:
            raise
        except Exception:  # chi Recoverer: a handler panic is a 500 with an empty body
            log.exception("fake dashboard handler failed")
            resp = web.Response(status=500)
        if not resp.prepared:
            for key, value in SECURITY_HEADERS.items():
                resp.headers.setdefault(key, value)
        return resp

    def _echo_secrets(self, request: web.Request) -> web.Response:
        session = self._session(request)
        password = self.scenario.password
        return _json_error(500, (
            f"internal error in {request.method} {request.path}: request Cookie: {request.headers.get('Cookie', '')}; "
            f"session {session.token if session else '-'} with CSRF {session.csrf if session else '-'}; "
            f"configured password={quote_plus(password)} (that is {password}, "
            f"{base64.b64encode(password.encode()).decode()} in base64)"))

    def _session(self, request: web.Request) -> Session | None:
        token = ""
        for part in request.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE:
                token = value.strip('"')
                break
        session = self._sessions.get(token) if token else None
        if session and session.expires <= utcnow():
            del self._sessions[token]  # expired sessions are deleted on first use
            return None
        return session

    async def _csrf_ok(self, request: web.Request, session: Session) -> bool:
        token = request.headers.get("X-CSRF-Token", "")
        if not token:
            token = request.query.get("csrf_token", "")
            ctype = request.content_type
            if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                request[_CONSUMED] = True  # Go's FormValue parses (and consumes) the body
                with contextlib.suppress(Exception):
                    form = await request.post()
                    token = str(form.get("csrf_token", "")) or token
        return bool(token) and hmac.compare_digest(token.encode(), session.csrf.encode())

    def _guard(self, handler: Handler, *, csrf: bool = True) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            session = self._session(request)
            if session is None:
                return _redirect(request, "/login")
            if csrf and not await self._csrf_ok(request, session):
                return _text(403, "Forbidden")
            request[_SESSION] = session
            return await handler(request)

        return guarded

    async def _body(self, request: web.Request, schema: dict[str, str]) -> dict[str, Any] | None:
        raw = b"" if request.get(_CONSUMED) else await request.read()
        return decode_go_json(raw, schema)

    def _host(self, request: web.Request) -> SimHost | None:
        return self.fleet.hosts.get(request.match_info["id"])

    # -- auth pages -------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', headers={"Content-Type": "application/json"})

    async def _login_page(self, request: web.Request) -> web.Response:
        if self._session(request):
            return _redirect(request, "/")
        error = request.query.get("error", "")
        totp = ('<label>TOTP code <input type="text" name="totp" inputmode="numeric" autocomplete="one-time-code">'
                "</label>") if self.scenario.totp_secret else ""
        page = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>NixFleet - Login</title></head>\n'
            f'<body data-csrf-token=""><main class="login"><h1>NixFleet</h1>'
            f'<p class="version">v{html.escape(self.scenario.dashboard_version)}</p>'
            + (f'<p class="error">{html.escape(error)}</p>' if error else "")
            + '<form method="POST" action="/login"><label>Password <input type="password" name="password" '
            f'autofocus></label>{totp}<button type="submit">Login</button></form></main></body></html>\n'
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _login(self, request: web.Request) -> web.Response:
        ip = real_ip(request.headers, request.remote)
        if not self._limiter.allow(ip, time.monotonic()):
            return _login_error(request, "Too many attempts. Please wait.")
        try:
            form = await request.post()
        except Exception:
            return _login_error(request, "Invalid request")
        password = str(form.get("password") or request.query.get("password", ""))
        if not hmac.compare_digest(password.encode(), self.scenario.password.encode()):
            return _login_error(request, "Invalid password")
        if self.scenario.totp_secret:
            code = str(form.get("totp") or request.query.get("totp", ""))
            if not totp_valid(self.scenario.totp_secret, code, time.time()):
                return _login_error(request, "Invalid TOTP code")
        token = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        session = Session(token, base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                          utcnow() + self.session_duration)
        self._sessions[token] = session
        self.sessions_issued.append(session)
        self._limiter.reset(ip)
        resp = _redirect(request, "/")
        secure = "; Secure" if request.headers.get("X-Forwarded-Proto") == "https" or request.secure else ""
        resp.headers["Set-Cookie"] = (f"{SESSION_COOKIE}={token}; Path=/; "
                                      f"Expires={format_datetime(session.expires, usegmt=True)}; HttpOnly{secure}; SameSite=Lax")
        return resp

    async def _logout(self, request: web.Request) -> web.Response:
        self._sessions.pop(request[_SESSION].token, None)
        resp = _redirect(request, "/login")
        resp.headers["Set-Cookie"] = f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
        return resp

    async def _dashboard(self, request: web.Request) -> web.Response:
        csrf = html.escape(request[_SESSION].csrf)
        rows = []
        for h in self.fleet.sorted_hosts():
            ops = ",".join(self.fleet.snapshot_host(h)["available_ops"])
            rows.append(
                f'<tr data-host-id="{html.escape(h.id)}" data-hostname="{html.escape(h.hostname)}" '
                f'data-host-type="{h.host_type}" data-theme-color="{h.theme_color}" data-generation="{h.generation}" '
                f'data-agent-version="{html.escape(h.agent_version)}" '
                f'data-agent-outdated="{str(self.fleet.agent_outdated(h)).lower()}" '
                f'data-pending-command="{h.pending_command or ""}" data-available-ops="{ops}">'
                f"<td>{html.escape(h.hostname)}</td><td>{h.status}</td></tr>"
            )
        version = html.escape(self.scenario.dashboard_version)
        page = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>NixFleet</title></head>\n'
            f'<body data-csrf-token="{csrf}"><header><h1>NixFleet</h1>'
            f'<form method="POST" action="/logout"><input type="hidden" name="csrf_token" value="{csrf}"/>'
            '<button type="submit">Logout</button></form></header>\n'
            f'<table id="hosts"><tbody>{"".join(rows)}</tbody></table>\n'
            f"<footer>NixFleet {version} ({self._build})</footer></body></html>\n"
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    # -- WebSocket ---------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization", "").startswith("Bearer "):
            return _text(401, "Unauthorized")  # treated as an agent; no agent token is accepted here
        if self._session(request) is None:
            return _text(401, "Unauthorized")
        if not check_origin(request.headers.get("Origin"), request.headers.get("Host", ""), self.allowed_origins):
            return _text(403, "Forbidden")
        ws = web.WebSocketResponse(heartbeat=54.0, max_msg_size=512 * 1024, compress=False)
        if not ws.can_prepare(request).ok:
            return _text(400, "Bad Request")
        await ws.prepare(request)
        client = _Client(ws)
        self.hub.clients.add(client)  # registered for deltas before init is queued (§4.4 race 1)
        if self.hub.delta_before_init:
            agent = next((h.agent for h in self.fleet.sorted_hosts() if h.agent and h.agent.connected), None)
            if agent:
                self.fleet.agent_heartbeat(agent)
        client.send(self._state_message("init"))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                with contextlib.suppress(ValueError):
                    data = json.loads(msg.data)
                    if isinstance(data, dict) and data.get("type") == "get_state":
                        client.send(self._state_message("full_state"))
        finally:
            self.hub.clients.discard(client)
            client.writer.cancel()
            self.ws_close_codes.append(ws.close_code)
        return ws

    def _state_message(self, kind: str) -> str:
        version = self.hub.version  # read before the state is assembled
        return go_json({"type": kind, "version": version, "payload": self.fleet.full_state()})

    # -- REST ---------------------------------------------------------------------------------

    async def _get_hosts(self, request: web.Request) -> web.Response:
        rows = [self.fleet.host_row(h) for h in self.fleet.sorted_hosts()]
        return _json({"hosts": rows or None})

    async def _add_host(self, request: web.Request) -> web.Response:
        body = await self._body(request, {"hostname": "str", "host_type": "str", "location": "str",
                                          "device_type": "str", "theme_color": "str"})
        if body is None:
            return _text(400, "Bad Request")
        if not body["hostname"]:
            return _text(400, "Hostname required")
        self.fleet.upsert_manual(body["hostname"], body["host_type"] or "nixos", body["location"] or "home",
                                 body["device_type"] or "desktop", body["theme_color"] or "#7aa2f7")
        return _json({"host_id": body["hostname"], "status": "created"})

    async def _delete_host(self, request: web.Request) -> web.Response:
        host_id = request.match_info["id"]
        h = self.fleet.hosts.get(host_id)
        if h is not None and h.agent is not None and h.agent.connected:
            return _text(409, "Cannot delete online host")
        if h is None:
            return _text(404, "Host not found")
        self.fleet.remove_host(host_id)
        return _json({"host_id": host_id, "status": "deleted"})

    async def _dispatch(self, request: web.Request) -> web.Response:
        body = await self._body(request, {"op": "str", "hosts": "list", "force": "bool", "totp": "str"})
        if body is None:
            return _json_error(400, "Invalid request body")
        op, hosts = body["op"], body["hosts"]
        if not op:
            return _json_error(400, "op is required")
        if not hosts:
            return _json_error(400, "hosts is required")
        spec = OPS.get(op)
        if spec is None:
            return _json_error(400, f"unknown op: {op}")
        if spec.requires_totp:
            if not self.scenario.totp_secret:
                return _json_error(403, "TOTP must be configured for this operation")
            if not totp_valid(self.scenario.totp_secret, body["totp"], time.time()):
                return _json_error(401, "Invalid TOTP code")
        fault = self.dispatch_fault
        if fault is not None and op in fault.ops and fault.times > 0 and not fault.execute:
            fault.times -= 1
            if request.transport is not None:
                request.transport.close()  # lost on the way in: nothing ran
            return web.Response(status=500)
        results = []
        for host_id in hosts:
            if host_id not in self.fleet.hosts:
                results.append({"error": "Host not found", "host_id": host_id, "status": "error"})
            else:
                results.append(self.fleet.execute_op(host_id, op, force=body["force"]).to_json())
        errors = sum(1 for r in results if r["status"] in ("blocked", "error"))
        success = len(results) - errors
        status = "success" if not errors else "failed" if not success else "partial"
        if fault is not None and op in fault.ops and fault.times > 0:
            fault.times -= 1
            self.dispatch_stalls += 1
            try:
                await asyncio.sleep(fault.delay)
            finally:
                self.dispatch_stalls -= 1
            if fault.lose:
                if request.transport is not None:
                    request.transport.close()  # no answer at all
                return web.Response(status=500)
        return _json({"results": results, "status": status,
                      "summary": {"error": errors, "success": success, "total": len(results)}})

    async def _command(self, request: web.Request) -> web.Response:
        body = await self._body(request, {"command": "str", "args": "list", "force": "bool"})
        if body is None:
            return _text(400, "Bad Request")
        host = self._host(request)
        if host is None:
            return _text(404, "Host not found")
        res = self.fleet.execute_op(host.id, body["command"], force=body["force"])
        if res.status == "blocked":
            return _json({"status": "blocked", "validation": {"code": res.code, "message": res.message, "valid": False}},
                         409)
        return _json({"command": body["command"], "command_id": res.command_id, "status": "queued"})

    async def _kill(self, request: web.Request) -> web.Response:
        body = await self._body(request, {"signal": "str"})
        if body is None:
            return _text(400, "Bad Request")
        signal = body["signal"] or "SIGTERM"
        if signal not in ("SIGTERM", "SIGKILL"):
            return _text(400, "Invalid signal (must be SIGTERM or SIGKILL)")
        error = self.fleet.kill(request.match_info["id"], signal)
        if error:
            return _text(409, error)
        return _json({"signal": signal, "status": "sent"})

    async def _timeout_action(self, request: web.Request) -> web.Response:
        body = await self._body(request, {"action": "str", "minutes": "int"})
        if body is None:
            return _text(400, "Bad Request")
        host_id, action = request.match_info["id"], body["action"]
        if action == "wait":
            error = self.fleet.extend_timeout(host_id, body["minutes"] if body["minutes"] > 0 else 5)
            if error == "panic":
                return web.Response(status=500)
        elif action == "kill":
            error = self.fleet.kill(host_id, "SIGTERM")
        elif action == "ignore":
            error = self.fleet.cancel(host_id)
        else:
            return _text(400, "Invalid action")
        if error:
            return _text(409, error)
        return _json({"action": action, "status": "ok"})

    async def _output(self, request: web.Request) -> web.Response:
        logfile = self.fleet.logs.get(request.match_info["id"])
        try:
            lines = int(request.query.get("lines", "0"))
        except ValueError:
            lines = 0
        text = logfile.text(lines) if logfile else ""
        body = text.encode("utf-8", "surrogateescape")  # garbled_output: the raw invalid bytes
        return web.Response(body=body, headers={"Content-Type": "text/plain; charset=utf-8"})

    async def _logs(self, request: web.Request) -> web.Response:
        return _json({"logs": None})  # table command_logs is never written in this version (§3.10)

    async def _refresh(self, request: web.Request) -> web.Response:
        h = self._host(request)
        if h is None:
            return _text(404, "Host not found")
        if h.pending_command and h.agent and h.agent.connected and h.id not in self.fleet.active:
            h.pending_command = None  # DB only: no delta (§8 #21)
        return _json({
            "agent_outdated": self.fleet.agent_outdated(h), "agent_version": h.agent_version,
            "generation": h.generation, "host_id": h.id, "online": h.online, "pending_pr": None,
            "update_status": self.fleet.update_status(h, gated=False),
        })

    async def _refresh_git(self, request: web.Request) -> web.Response:
        h = self._host(request)
        if h is None:
            return _text(404, "Host not found")
        self.fleet.broadcast_host_status(h)
        return _json(self.fleet.update_status(h, gated=False)["git"])

    async def _theme_color(self, request: web.Request) -> web.Response:
        body = await self._body(request, {"color": "str", "palette": "str"})
        if body is None:
            return _text(400, "Bad Request")
        if not _COLOR_RE.match(body["color"]):
            return _text(400, "Invalid color format (expected #rrggbb)")
        h = self._host(request)
        if h is None:
            return _text(404, "Host not found")
        h.theme_color = body["color"]
        palette = body["palette"] or f"custom-{h.id}"
        self.hub.change("host_updated", h.id, {"theme_color": h.theme_color})
        for line in (f"🎨 Setting theme color {h.theme_color}", "✓ Database updated", f"✓ Palette {palette}"):
            self.hub.legacy("command_output", {"host_id": h.id, "command": "theme-color", "line": line, "is_error": False})
        return _json({"color": h.theme_color, "host_id": h.id, "nixcfg": "disabled", "palette": palette,
                      "status": "updated"})

    async def _reboot(self, request: web.Request) -> web.Response:
        body = await self._body(request, {"totp": "str"})
        if body is None:
            return _json_error(400, "Invalid request body")
        secret = self.scenario.totp_secret
        if not secret:
            return _json_error(403, "TOTP must be configured to use reboot feature")
        if not body["totp"]:
            return _json_error(401, "TOTP code required")
        if not totp_valid(secret, body["totp"], time.time()):
            return _json_error(401, "Invalid TOTP code")
        host_id = request.match_info["id"]
        attempts = self._reboots.setdefault(host_id, deque())
        now = time.monotonic()
        while attempts and attempts[0] <= now - 3600:
            attempts.popleft()
        if len(attempts) >= 5:
            return _json_error(429, "Too many reboot attempts. Please wait before trying again.")
        h = self.fleet.hosts.get(host_id)
        if h is None:
            return _json_error(404, "Host not found")
        if h.agent is None or not h.agent.connected:
            return _json_error(409, "Host is offline")
        attempts.append(now)
        h.agent.direct_reboot()
        return _json({"message": "Reboot command sent to host", "status": "queued"})

    async def _host_events(self, request: web.Request) -> web.Response:
        limit = _limit(request, default=50, maximum=200)
        return _json({"events": self.fleet.recent_events(limit, request.match_info["id"]) or None})

    async def _events(self, request: web.Request) -> web.Response:
        return _json({"events": self.fleet.recent_events(_limit(request, default=100, maximum=500)) or None})

    async def _system_log(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", ""))
        except ValueError:
            limit = 100
        if not 1 <= limit <= 500:
            limit = 100
        return _json({"logs": self.fleet.recent_events(limit) or None})

    async def _command_states(self, request: web.Request) -> web.Response:
        return _json({"states": self.fleet.command_states()})

    async def _ops(self, request: web.Request) -> web.Response:
        ops = [{"description": o.description, "executor": o.executor, "id": o.id, "requires_totp": o.requires_totp,
                "retryable": o.retryable, "timeout": o.timeout} for o in OPS.values()]
        self._rng.shuffle(ops)  # Go map iteration order
        return _json({"ops": ops})

    async def _pipelines(self, request: web.Request) -> web.Response:
        rows = [{"description": d, "id": pid, "ops": ops} for pid, (d, ops) in PIPELINES.items()]
        self._rng.shuffle(rows)
        return _json({"pipelines": rows})

    async def _dispatch_pipeline(self, request: web.Request) -> web.Response:
        """Validated like the real handler, then a no-op 200 (the real one crashes the dashboard, §3.20)."""
        body = await self._body(request, {"pipeline": "str", "hosts": "list", "totp": "str"})
        if body is None:
            return _json_error(400, "Invalid request body")
        if not body["pipeline"]:
            return _json_error(400, "pipeline is required")
        if not body["hosts"]:
            return _json_error(400, "hosts is required")
        if body["pipeline"] not in PIPELINES:
            return _json_error(400, f"unknown pipeline: {body['pipeline']}")
        for host_id in body["hosts"]:
            if host_id not in self.fleet.hosts:
                return _json_error(404, f"host not found: {host_id}")
        return _json({"hosts": body["hosts"], "pipeline": body["pipeline"], "status": "started"})

    async def _flake_off(self, request: web.Request) -> web.Response:
        return _text(501, "GitHub integration not configured")


def _limit(request: web.Request, *, default: int, maximum: int) -> int:
    try:
        value = int(request.query.get("limit", ""))
    except ValueError:
        return default
    return max(1, min(maximum, value))
