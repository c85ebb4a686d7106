"""DashboardClient against httpx.MockTransport (REST) and a tiny local websockets server (/ws)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection, serve

from nfu_tui.clients.dashboard import Connected, DashboardClient, Disconnected, Message
from nfu_tui.clients.fleet import ChangeKind, FleetModel
from nfu_tui.domain.totp import totp, verify
from nfu_tui.errors import (
    CsrfRejected,
    DashboardError,
    DashboardUnavailable,
    LoginFailed,
    NfuError,
    SessionExpired,
)

PASSWORD = "correct horse battery staple"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


class FakeRest:
    """Just enough of the dashboard's HTTP side (§2, §3) to drive the client."""

    def __init__(self, *, totp_secret: str | None = None) -> None:
        self.totp_secret = totp_secret
        self.sessions: dict[str, str] = {}  # cookie → csrf token
        self.logins = 0
        self.login_forms: list[dict[str, list[str]]] = []
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = {}
        self.rate_limited = False
        self.stale_csrf_for: int = 0  # next N mutating requests see a "rotated" token → 403
        self.redirect_all = False  # every session is refused (e.g. clock skew, broken proxy)
        self.login_errors: list[int] = []  # statuses the next login attempts answer with

    def expire_all(self) -> None:
        self.sessions.clear()

    def route(self, method: str, path: str) -> Callable:
        def deco(fn: Callable[[httpx.Request], httpx.Response]) -> Callable:
            self.routes[(method, path)] = fn
            return fn

        return deco

    def _cookie(self, request: httpx.Request) -> str | None:
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "nixfleet_session":
                return value
        return None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        method, path = request.method, request.url.raw_path.split(b"?")[0].decode()
        if (method, path) == ("POST", "/login"):
            return self._login(request)
        cookie = self._cookie(request)
        if cookie not in self.sessions or self.redirect_all:
            body = b'<a href="/login">Found</a>.\n' if method == "GET" else b""
            return httpx.Response(302, headers={"location": "/login"}, content=body)
        if (method, path) == ("GET", "/"):
            html = f'<html><body data-csrf-token="{self.sessions[cookie]}"><footer>NixFleet 3.1.5 (abc1234)</footer></body></html>'
            return httpx.Response(200, headers={"content-type": "text/html; charset=utf-8"}, text=html)
        if method not in ("GET", "HEAD", "OPTIONS"):
            if self.stale_csrf_for > 0 or request.headers.get("x-csrf-token") != self.sessions[cookie]:
                self.stale_csrf_for = max(0, self.stale_csrf_for - 1)
                return httpx.Response(403, headers={"content-type": "text/plain; charset=utf-8"}, text="Forbidden\n")
        handler = self.routes.get((method, path))
        if handler is None:
            return httpx.Response(404, text="404 page not found\n")
        return handler(request)

    def _login(self, request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        self.login_forms.append(form)
        if self.login_errors:
            return httpx.Response(self.login_errors.pop(0), text="Bad Gateway\n")
        if self.rate_limited:
            return httpx.Response(302, headers={"location": "/login?error=Too+many+attempts.+Please+wait."})
        if form.get("password") != [PASSWORD]:
            return httpx.Response(302, headers={"location": "/login?error=Invalid+password"})
        if self.totp_secret and not verify(self.totp_secret, (form.get("totp") or [""])[0]):
            return httpx.Response(302, headers={"location": "/login?error=Invalid+TOTP+code"})
        self.logins += 1
        cookie = f"session{self.logins}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        self.sessions[cookie] = f"csrf{self.logins}-token="
        return httpx.Response(
            302,
            headers={
                "location": "/",
                "set-cookie": f"nixfleet_session={cookie}; Path=/; Expires=Mon, 29 Dec 2099 14:30:05 GMT; HttpOnly; SameSite=Lax",
            },
        )


def json_response(status: int, data: Any) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/json"}, content=json.dumps(data).encode() + b"\n")


def text_response(status: int, text: str) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "text/plain; charset=utf-8"}, text=text)


@pytest.fixture
def rest() -> FakeRest:
    return FakeRest()


def make_client(rest: FakeRest, url: str = "http://127.0.0.1:8000", **kw: Any) -> DashboardClient:
    kw.setdefault("password", PASSWORD)
    return DashboardClient(url=url, transport=httpx.MockTransport(rest), **kw)


@pytest.fixture
async def client(rest: FakeRest):
    c = make_client(rest)
    yield c
    await c.aclose()


def api_requests(rest: FakeRest, path: str) -> list[httpx.Request]:
    return [r for r in rest.requests if r.url.path == path]


# ----------------------------------------------------------------------- URL


@pytest.mark.parametrize("url", ["http://fleet.example.org", "http://10.0.0.5:8000"])
def test_plain_http_to_remote_host_is_refused(url: str) -> None:
    with pytest.raises(DashboardError, match="--insecure"):
        DashboardClient(url=url, password="x")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000/", "http://[::1]:8000", "https://fleet.example.org"]
)
async def test_allowed_urls(url: str) -> None:
    c = DashboardClient(url=url, password="x")
    assert not c.url.endswith("/")
    await c.aclose()


async def test_insecure_allows_plain_http() -> None:
    c = DashboardClient(url="http://fleet.example.org", password="x", insecure=True)
    await c.aclose()


@pytest.mark.parametrize("url", ["ftp://x", "fleet.example.org", "https://user:pw@fleet.example.org"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(DashboardError) as info:
        DashboardClient(url=url, password="x")
    assert "pw@" not in str(info.value)


# ---------------------------------------------------------------------- login


async def test_login_posts_form_without_following_redirects(rest: FakeRest, client: DashboardClient) -> None:
    await client.login()
    assert client.logged_in
    login = api_requests(rest, "/login")[0]
    assert login.method == "POST"
    assert login.headers["content-type"] == "application/x-www-form-urlencoded"
    assert rest.login_forms == [{"password": [PASSWORD]}]
    page = api_requests(rest, "/")[0]
    assert page.headers["cookie"].startswith("nixfleet_session=session1")
    assert client.dashboard_version == "3.1.5"
    assert page.headers["user-agent"].startswith("nfu-tui/")


async def test_csrf_and_cookie_sent_on_mutations(rest: FakeRest, client: DashboardClient) -> None:
    rest.route("POST", "/api/hosts/hsb1/refresh")(lambda r: json_response(200, {"host_id": "hsb1", "online": True}))
    assert (await client.refresh_host("hsb1"))["online"] is True
    req = api_requests(rest, "/api/hosts/hsb1/refresh")[0]
    assert req.headers["x-csrf-token"] == "csrf1-token="
    assert req.content == b"{}"  # always a JSON body where the endpoint decodes JSON
    assert client._http.cookies.jar.__len__() == 0  # the session cookie is not duplicated in httpx's jar


@pytest.mark.parametrize(
    ("setup", "needs_totp", "rate_limited"),
    [("wrong_password", False, False), ("totp_required", True, False), ("rate_limited", False, True)],
)
async def test_login_failures(setup: str, needs_totp: bool, rate_limited: bool) -> None:
    rest = FakeRest(totp_secret=TOTP_SECRET if setup == "totp_required" else None)
    rest.rate_limited = setup == "rate_limited"
    c = make_client(rest, password="nope" if setup == "wrong_password" else PASSWORD)
    with pytest.raises(LoginFailed) as info:
        await c.login()
    assert info.value.needs_totp is needs_totp and info.value.rate_limited is rate_limited
    assert c.needs_totp is needs_totp
    assert not c.logged_in
    await c.aclose()


async def test_login_without_password() -> None:
    c = make_client(FakeRest(), password=None)
    assert c.needs_password
    with pytest.raises(LoginFailed, match="No dashboard password"):
        await c.hosts()
    c.set_password(PASSWORD)
    assert not c.needs_password
    await c.aclose()


async def test_login_with_totp_secret_generates_code() -> None:
    rest = FakeRest(totp_secret=TOTP_SECRET)
    c = make_client(rest, totp_secret=SecretStr(TOTP_SECRET))
    assert c.has_totp_secret
    await c.login()
    assert len(rest.login_forms[0]["totp"][0]) == 6
    await c.aclose()


async def test_login_with_typed_totp_code() -> None:
    rest = FakeRest(totp_secret=TOTP_SECRET)
    c = make_client(rest)
    with pytest.raises(LoginFailed):
        await c.login()
    assert c.needs_totp
    await c.login(totp_code=totp(TOTP_SECRET))
    assert c.logged_in and not c.needs_totp
    # Such a session cannot be renewed without the user: expiry is reported, no blind login attempt.
    rest.route("GET", "/api/hosts")(lambda r: json_response(200, {"hosts": None}))
    rest.expire_all()
    attempts = len(rest.login_forms)
    with pytest.raises(SessionExpired, match="fresh TOTP code"):
        await c.hosts()
    assert len(rest.login_forms) == attempts
    await c.aclose()


async def test_login_without_cookie_is_a_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "/"})

    c = DashboardClient(url="http://127.0.0.1:1", password="x", transport=httpx.MockTransport(handler))
    with pytest.raises(LoginFailed, match="no session cookie"):
        await c.login()
    await c.aclose()


# -------------------------------------------------------------- session expiry


async def test_expired_session_relogs_in_once_and_retries(rest: FakeRest, client: DashboardClient) -> None:
    rest.route("GET", "/api/hosts")(lambda r: json_response(200, {"hosts": None}))
    assert await client.hosts() == []
    rest.expire_all()
    assert await client.hosts() == []
    assert rest.logins == 2
    assert len(api_requests(rest, "/api/hosts")) == 3  # ok, 302, retried ok


async def test_post_after_expiry_is_retried_once_with_new_csrf(rest: FakeRest, client: DashboardClient) -> None:
    calls: list[httpx.Request] = []

    def dispatch(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return json_response(200, {"results": [{"command_id": "c1", "host_id": "hsb1", "status": "EXECUTING"}],
                                   "status": "success", "summary": {"error": 0, "success": 1, "total": 1}})  # fmt: skip

    rest.route("POST", "/api/dispatch")(dispatch)
    await client.login()
    rest.expire_all()
    results = await client.dispatch("pull", ["hsb1"])
    assert [r.command_id for r in results] == ["c1"]
    assert len(calls) == 1 and calls[0].headers["x-csrf-token"] == "csrf2-token="


async def test_persistent_redirect_gives_session_expired(rest: FakeRest, client: DashboardClient) -> None:
    await client.login()
    rest.redirect_all = True
    with pytest.raises(SessionExpired):
        await client.hosts()


async def test_concurrent_requests_share_one_relogin(rest: FakeRest, client: DashboardClient) -> None:
    rest.route("GET", "/api/hosts")(lambda r: json_response(200, {"hosts": None}))
    await client.login()
    rest.expire_all()
    await asyncio.gather(*(client.hosts() for _ in range(5)))
    assert rest.logins == 2


async def test_csrf_rejected_rescrapes_once(rest: FakeRest, client: DashboardClient) -> None:
    rest.route("POST", "/api/hosts/hsb1/kill")(lambda r: json_response(200, {"signal": "SIGTERM", "status": "sent"}))
    await client.login()
    rest.stale_csrf_for = 1
    assert await client.kill("hsb1") == "sent"
    assert len(api_requests(rest, "/")) == 2  # login scrape + one re-scrape
    rest.stale_csrf_for = 2
    with pytest.raises(CsrfRejected):
        await client.kill("hsb1")


# ---------------------------------------------------------------- endpoints


async def test_hosts_and_null_collections(rest: FakeRest, client: DashboardClient) -> None:
    rows = [{"agent_version": "3.1.4", "comment": None, "generation": None, "host_type": "nixos", "hostname": "hsb1",
             "id": "hsb1", "last_seen": None, "nixpkgs_version": None, "os_version": None, "pending_command": None,
             "status": "online"}]  # fmt: skip
    rest.route("GET", "/api/hosts")(lambda r: json_response(200, {"hosts": rows}))
    rest.route("GET", "/api/events")(lambda r: json_response(200, {"events": None}))
    rest.route("GET", "/api/hosts/hsb1/events")(lambda r: json_response(200, {"events": [{"id": 1, "message": "x"}]}))
    rest.route("GET", "/api/command-states")(lambda r: json_response(200, {"states": {}}))
    [h] = await client.hosts()
    assert h.id == "hsb1" and h.last_seen == "" and h.agent_outdated  # 3.1.4 vs scraped 3.1.5
    assert await client.events() == []
    assert await client.events(limit=5, host="hsb1") == [{"id": 1, "message": "x"}]
    assert api_requests(rest, "/api/hosts/hsb1/events")[0].url.params["limit"] == "5"
    assert await client.command_states() == {}


async def test_dispatch_mixed_results_and_body(rest: FakeRest, client: DashboardClient) -> None:
    body = {"results": [
        {"command_id": "20251228-143005.123-7777", "host_id": "hsb1", "status": "EXECUTING"},
        {"code": "already_current", "host_id": "gpc0", "message": "Git already up to date", "status": "blocked"},
        {"error": "Host not found", "host_id": "nope", "status": "error"}],
        "status": "partial", "summary": {"error": 2, "success": 1, "total": 3}}  # fmt: skip
    rest.route("POST", "/api/dispatch")(lambda r: json_response(200, body))
    results = await client.dispatch("pull", ["hsb1", "gpc0", "nope"], force=True)
    assert [(r.host_id, r.outcome) for r in results] == [("hsb1", "started"), ("gpc0", "blocked"), ("nope", "error")]
    sent = json.loads(api_requests(rest, "/api/dispatch")[0].content)
    assert sent == {"op": "pull", "hosts": ["hsb1", "gpc0", "nope"], "force": True, "totp": ""}
    assert await client.dispatch("pull", []) == []


async def test_dispatch_request_level_errors(rest: FakeRest, client: DashboardClient) -> None:
    rest.route("POST", "/api/dispatch")(lambda r: json_response(401, {"error": "Invalid TOTP code"}))
    with pytest.raises(DashboardError) as info:
        await client.dispatch("reboot", ["hsb1"], totp="000000")
    assert info.value.status == 401 and "Invalid TOTP code" in info.value.message
    assert not isinstance(info.value, SessionExpired)
    assert json.loads(api_requests(rest, "/api/dispatch")[0].content)["totp"] == "000000"


async def test_dispatch_uses_configured_totp_secret(rest: FakeRest) -> None:
    rest.route("POST", "/api/dispatch")(lambda r: json_response(200, {"results": [{"command_id": "c", "host_id": "h", "status": "EXECUTING"}]}))
    c = make_client(rest, totp_secret=TOTP_SECRET)
    await c.dispatch("reboot", ["h"])
    assert verify(TOTP_SECRET, json.loads(api_requests(rest, "/api/dispatch")[0].content)["totp"])
    await c.aclose()


async def test_legacy_command_endpoint(rest: FakeRest, client: DashboardClient) -> None:
    rest.route("POST", "/api/hosts/hsb1/command")(
        lambda r: json_response(409, {"status": "blocked", "validation": {"code": "busy", "message": 'Command "pull" already running', "valid": False}})
    )
    rest.route("POST", "/api/hosts/gpc0/command")(lambda r: json_response(200, {"command": "switch", "command_id": "c7", "status": "queued"}))
    rest.route("POST", "/api/hosts/nope/command")(lambda r: text_response(404, "Host not found\n"))
    blocked = await client.command("hsb1", "switch")
    assert blocked.blocked and blocked.code == "busy"
    started = await client.command("gpc0", "switch", force=True)
    assert started.started and started.command_id == "c7"
    assert json.loads(api_requests(rest, "/api/hosts/gpc0/command")[0].content) == {"command": "switch", "args": [], "force": True}
    missing = await client.command("nope", "pull")
    assert missing.outcome == "error" and missing.message == "Host not found"


async def test_kill_409_and_body(rest: FakeRest, client: DashboardClient) -> None:
    rest.route("POST", "/api/hosts/hsb1/kill")(lambda r: text_response(409, "No active command for host\n"))
    with pytest.raises(DashboardError, match="No active command for host") as info:
        await client.kill("hsb1", "SIGKILL")
    assert info.value.status == 409
    assert json.loads(api_requests(rest, "/api/hosts/hsb1/kill")[0].content) == {"signal": "SIGKILL"}


async def test_timeout_action_panic_500(rest: FakeRest, client: DashboardClient) -> None:
    rest.route("POST", "/api/hosts/hsb1/timeout-action")(lambda r: httpx.Response(500, content=b""))
    with pytest.raises(DashboardError, match="handler crashed"):
        await client.timeout_action("hsb1", "wait", 5)
    assert json.loads(api_requests(rest, "/api/hosts/hsb1/timeout-action")[0].content) == {"action": "wait", "minutes": 5}
    rest.route("POST", "/api/hosts/hsb1/timeout-action")(lambda r: json_response(200, {"action": "ignore", "status": "ok"}))
    await client.timeout_action("hsb1", "ignore")
    assert json.loads(api_requests(rest, "/api/hosts/hsb1/timeout-action")[-1].content) == {"action": "ignore"}


async def test_output_is_sanitized(rest: FakeRest, client: DashboardClient) -> None:
    raw = b"# Command: \n[14:30:05] \x1b]52;c;cGF5bG9hZA==\x07copying path\n[14:30:06] \xff\n"
    rest.route("GET", "/api/hosts/web%2F01/output")(lambda r: httpx.Response(200, content=raw))
    assert await client.output("web/01", lines=50) == ["# Command: ", "[14:30:05] copying path", "[14:30:06] \ufffd"]
    assert api_requests(rest, "/api/hosts/web/01/output")[0].url.params["lines"] == "50"


async def test_refresh_git(rest: FakeRest, client: DashboardClient) -> None:
    rest.route("POST", "/api/hosts/hsb1/refresh-git")(
        lambda r: json_response(200, {"checked_at": "2025-12-28T14:31:00Z", "message": "Behind remote", "status": "outdated"})
    )
    check = await client.refresh_git("hsb1")
    assert check is not None and check.state.value == "outdated"


async def test_logout(rest: FakeRest, client: DashboardClient) -> None:
    rest.route("POST", "/logout")(lambda r: httpx.Response(302, headers={"location": "/login"}))
    await client.login()
    await client.logout()
    assert not client.logged_in
    assert api_requests(rest, "/logout")[0].headers["x-csrf-token"] == "csrf1-token="


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")])
async def test_transport_errors_become_unavailable(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    c = DashboardClient(url="http://127.0.0.1:9", password=PASSWORD, transport=httpx.MockTransport(handler))
    with pytest.raises(DashboardUnavailable) as info:
        await c.hosts()
    assert "127.0.0.1:9" in info.value.message
    await c.aclose()


async def test_secrets_never_leak(rest: FakeRest) -> None:
    rest.totp_secret = TOTP_SECRET
    c = make_client(rest, password=SecretStr(PASSWORD), totp_secret=TOTP_SECRET)
    await c.login()
    cookie = next(iter(rest.sessions))
    texts = [repr(c), str(vars(c).get("_password")), str(vars(c).get("_totp_secret"))]
    rest.route("POST", "/api/dispatch")(lambda r: json_response(400, {"error": "unknown op: x"}))
    for call in (lambda: c.dispatch("x", ["h"]), lambda: c.kill("h")):
        with pytest.raises(NfuError) as info:
            await call()
        texts += [str(info.value), repr(info.value), info.value.message]
    bad = make_client(FakeRest(), password="wrong-" + PASSWORD)
    with pytest.raises(LoginFailed) as info:
        await bad.login()
    texts += [str(info.value), repr(bad)]
    for text in texts:
        assert PASSWORD not in text and TOTP_SECRET not in text and cookie not in text
    await c.aclose()
    await bad.aclose()


# ------------------------------------------------------------------ WebSocket


Script = Callable[[ServerConnection, "WSServer"], Awaitable[None]]


class WSServer:
    """A local /ws endpoint that checks the session cookie against a FakeRest."""

    def __init__(self, rest: FakeRest) -> None:
        self.rest = rest
        self.scripts: list[Script] = []
        self.handshakes: list[dict[str, str]] = []
        self.received: list[dict[str, Any]] = []
        self.reject: list[int] = []
        self.unauth_redirect = False  # answer a bad session with 302 → /login instead of 401
        self.port = 0

    async def __aenter__(self) -> WSServer:
        self.server = await serve(self._handle, "127.0.0.1", 0, process_request=self._process, compression=None)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _process(self, connection: ServerConnection, request: Any) -> Any:
        self.handshakes.append({k.lower(): v for k, v in request.headers.raw_items()})
        if self.reject:
            return connection.respond(self.reject.pop(0), "refused\n")
        cookie = self.rest._cookie(httpx.Request("GET", "http://x", headers={"cookie": request.headers.get("Cookie", "")}))
        if cookie not in self.rest.sessions:
            if self.unauth_redirect:
                response = connection.respond(HTTPStatus.FOUND, "")
                response.headers["Location"] = "/login"
                return response
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        script = self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]
        await script(ws, self)

    async def read_into(self, ws: ServerConnection) -> dict[str, Any]:
        msg = json.loads(await ws.recv())
        self.received.append(msg)
        return msg


def ws_host(hid: str, **over: Any) -> dict[str, Any]:
    return {"id": hid, "hostname": hid, "status": "online", "agent_version": "3.1.5", "agent_outdated": False,
            "pending_command": "", "last_seen": "", "generation": "", "update_status": {"git": None}, **over}  # fmt: skip


def init_msg(version: int, *hosts: dict, kind: str = "init") -> str:
    return json.dumps({"type": kind, "version": version, "payload": {"hosts": list(hosts), "commands": None, "pipelines": None, "events": None}})


def hb(version: int, hid: str, last_seen: str = "2025-12-28T14:30:10Z") -> str:
    return json.dumps({"type": "delta", "version": version, "payload": {"type": "host_updated", "id": hid, "fields": {"status": "online", "last_seen": last_seen}}})


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


async def hang(ws: ServerConnection) -> None:
    await ws.wait_closed()


async def collect(client: DashboardClient, stop: Callable[[list[Any]], bool]) -> list[Any]:
    events: list[Any] = []
    async with asyncio.timeout(10):  # guard against a hang, not a timing assertion
        async for event in client.stream():
            events.append(event)
            if stop(events):
                break
    return events


async def test_stream_handshake_headers_and_messages(rest: FakeRest) -> None:
    async def script(ws: ServerConnection, srv: WSServer) -> None:
        await ws.send(init_msg(10, ws_host("hsb1")))
        await ws.send(hb(11, "hsb1"))
        await ws.send("not json")
        await ws.send(json.dumps({"type": "command_output", "payload": {"host_id": "hsb1", "line": "x"}}))
        await hang(ws)

    async with WSServer(rest) as srv:
        srv.scripts = [script]
        c = make_client(rest, url=srv.url)
        events = await collect(c, lambda ev: len(ev) == 4)
        await c.aclose()
    assert isinstance(events[0], Connected) and events[0].url == f"ws://127.0.0.1:{srv.port}/ws"
    assert [e.type for e in events[1:]] == ["init", "delta", "command_output"]
    headers = srv.handshakes[0]
    assert "origin" not in headers and "authorization" not in headers
    assert headers["cookie"].startswith("nixfleet_session=session1")
    assert headers["user-agent"].startswith("nfu-tui/")
    assert "sec-websocket-extensions" not in headers


async def test_websocket_debug_log_redacts_the_cookie(rest: FakeRest, caplog: pytest.LogCaptureFixture) -> None:
    async def script(ws: ServerConnection, srv: WSServer) -> None:
        await ws.send(init_msg(1))
        await hang(ws)

    caplog.set_level(logging.DEBUG)
    async with WSServer(rest) as srv:
        srv.scripts = [script]
        c = make_client(rest, url=srv.url)
        await collect(c, lambda ev: isinstance(ev[-1], Message))
        await c.aclose()
    cookie = next(iter(rest.sessions))
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server"))
    # the client's handshake was logged (the CLI's log-record redaction, once installed, masks it first)…
    assert "> Cookie: <redacted>" in ours or "> Cookie: ***" in ours
    assert cookie not in ours and PASSWORD not in ours  # …without the secret


async def test_stream_reconnects_with_doubling_backoff(rest: FakeRest) -> None:
    async def close_after_init(ws: ServerConnection, srv: WSServer) -> None:
        await ws.send(init_msg(10, ws_host("hsb1")))
        await ws.close()

    sleep = FakeSleep()
    async with WSServer(rest) as srv:
        srv.scripts = [close_after_init]
        c = make_client(rest, url=srv.url, sleep=sleep)
        # connect ok → dropped → two refused handshakes → connect ok
        events: list[Any] = []
        async with asyncio.timeout(10):
            async for ev in c.stream():
                events.append(ev)
                if isinstance(ev, Disconnected) and len(sleep.delays) == 0:
                    srv.reject = [503, 503]
                if sum(isinstance(e, Connected) for e in events) == 2:
                    break
        await c.aclose()
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Connected", "Message", "Disconnected", "Disconnected", "Disconnected", "Connected"]
    assert sleep.delays == [1.0, 2.0, 4.0]
    assert "closed" in events[2].reason and "503" in events[3].reason
    assert [e.retry_in for e in events if isinstance(e, Disconnected)] == [1.0, 2.0, 4.0]


async def test_backoff_caps_at_30_seconds(rest: FakeRest) -> None:
    sleep = FakeSleep()
    async with WSServer(rest) as srv:
        srv.scripts = [lambda ws, s: hang(ws)]
        srv.reject = [500] * 8
        c = make_client(rest, url=srv.url, sleep=sleep)
        await collect(c, lambda ev: isinstance(ev[-1], Connected))
        await c.aclose()
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


@pytest.mark.parametrize("redirect", [False, True], ids=["401", "302-to-login"])
async def test_stream_401_relogs_in(rest: FakeRest, redirect: bool) -> None:
    async def script(ws: ServerConnection, srv: WSServer) -> None:
        await ws.send(init_msg(1))
        await hang(ws)

    async with WSServer(rest) as srv:
        srv.scripts = [script]
        srv.unauth_redirect = redirect
        c = make_client(rest, url=srv.url, sleep=FakeSleep())
        await c.login()
        rest.expire_all()  # the dashboard forgot the session: /ws answers 401
        events = await collect(c, lambda ev: isinstance(ev[-1], Connected))
        await c.aclose()
    assert isinstance(events[0], Disconnected) and ("302" if redirect else "401") in events[0].reason
    assert rest.logins == 2
    assert srv.handshakes[-1]["cookie"].startswith("nixfleet_session=session2")


async def test_stream_wrong_password_ends_stream(rest: FakeRest) -> None:
    async with WSServer(rest) as srv:
        srv.scripts = [lambda ws, s: hang(ws)]
        c = make_client(rest, url=srv.url, password="bad")
        with pytest.raises(LoginFailed):
            await collect(c, lambda ev: False)
        await c.aclose()


async def test_stream_manual_totp_session_expiry_needs_the_user(rest: FakeRest) -> None:
    rest.totp_secret = TOTP_SECRET
    async with WSServer(rest) as srv:
        srv.scripts = [lambda ws, s: hang(ws)]
        c = make_client(rest, url=srv.url, sleep=FakeSleep())
        await c.login(totp_code=totp(TOTP_SECRET))
        rest.expire_all()
        with pytest.raises(SessionExpired, match="fresh TOTP code"):
            await collect(c, lambda ev: False)
        await c.aclose()
    assert rest.logins == 1  # no blind login attempt


async def test_stream_login_server_error_is_transient(rest: FakeRest) -> None:
    sleep = FakeSleep()
    async with WSServer(rest) as srv:
        srv.scripts = [lambda ws, s: hang(ws)]
        rest.login_errors = [502, 500]
        c = make_client(rest, url=srv.url, sleep=sleep)
        events = await collect(c, lambda ev: isinstance(ev[-1], Connected))
        await c.aclose()
    assert [type(e).__name__ for e in events] == ["Disconnected", "Disconnected", "Connected"]
    assert "502" in events[0].reason and sleep.delays == [1.0, 2.0]


async def test_stream_unreachable_dashboard_keeps_retrying(rest: FakeRest) -> None:
    sleep = FakeSleep()
    async with WSServer(rest) as srv:
        url = srv.url
    # server gone: connection refused
    c = make_client(rest, url=url, sleep=sleep)
    events = await collect(c, lambda ev: len(ev) == 3)
    await c.aclose()
    assert all(isinstance(e, Disconnected) and "cannot connect" in e.reason for e in events)
    assert [e.retry_in for e in events] == [1.0, 2.0, 4.0]
    assert sleep.delays == [1.0, 2.0]  # the third wait had not started when the consumer stopped


async def test_silent_server_triggers_reconnect(rest: FakeRest) -> None:
    async def silent(ws: ServerConnection, srv: WSServer) -> None:
        await ws.send(init_msg(1))
        await hang(ws)  # the library still answers pings; no data frames arrive

    async with WSServer(rest) as srv:
        srv.scripts = [silent]
        c = make_client(rest, url=srv.url, sleep=FakeSleep(), ws_idle_timeout=0.2)
        events = await collect(c, lambda ev: sum(isinstance(e, Connected) for e in ev) == 2)
        await c.aclose()
    disconnects = [e for e in events if isinstance(e, Disconnected)]
    assert len(disconnects) == 1 and "no message from the dashboard" in disconnects[0].reason
    assert len(srv.handshakes) == 2


async def test_follow_resyncs_on_gap_and_beacon_mismatch(rest: FakeRest) -> None:
    got_state = asyncio.Event()

    async def script(ws: ServerConnection, srv: WSServer) -> None:
        await ws.send(hb(9, "hsb1"))  # delta before init: ignored
        await ws.send(init_msg(10, ws_host("hsb1")))
        await ws.send(hb(11, "hsb1"))
        await ws.send(hb(13, "hsb1"))  # gap → get_state
        await ws.send(hb(14, "hsb1"))  # still waiting: no second get_state
        assert (await srv.read_into(ws)) == {"type": "get_state"}
        await ws.send(init_msg(14, ws_host("hsb1"), ws_host("newbox"), kind="full_state"))
        await ws.send(json.dumps({"type": "sync", "version": 20}))  # mismatch → get_state
        assert (await srv.read_into(ws)) == {"type": "get_state"}
        await ws.send(init_msg(20, ws_host("hsb1"), kind="full_state"))
        got_state.set()
        await hang(ws)

    model = FleetModel()
    async with WSServer(rest) as srv:
        srv.scripts = [script]
        c = make_client(rest, url=srv.url)
        seen: list[tuple[Any, list]] = []
        async with asyncio.timeout(10):
            async for event, changes in c.follow(model):
                seen.append((event, changes))
                if isinstance(event, Message) and event.type == "full_state" and event.data["version"] == 20:
                    break
        await c.aclose()
    assert srv.received == [{"type": "get_state"}, {"type": "get_state"}]
    assert model.version == 20 and list(model.snapshot().hosts) == ["hsb1"]
    assert model.dashboard_version == "3.1.5"
    resyncs = [changes for _, changes in seen if any(ch.kind is ChangeKind.RESYNCED for ch in changes)]
    assert len(resyncs) == 3


async def test_full_state_one_shot(rest: FakeRest) -> None:
    async def script(ws: ServerConnection, srv: WSServer) -> None:
        await ws.send(hb(4, "x"))
        await ws.send(init_msg(5, ws_host("b"), ws_host("a", agent_version="3.1.4", agent_outdated=True)))
        await hang(ws)

    async with WSServer(rest) as srv:
        srv.scripts = [script]
        c = make_client(rest, url=srv.url)
        await c.login()
        rest.expire_all()  # first handshake 401 → one re-login
        snap = await c.full_state()
        await c.aclose()
    assert snap.version == 5 and list(snap.hosts) == ["a", "b"]
    assert snap.hosts["a"].agent_outdated and not snap.hosts["b"].agent_outdated
    assert rest.logins == 2


async def test_full_state_unreachable(rest: FakeRest) -> None:
    async with WSServer(rest) as srv:
        url = srv.url
    c = make_client(rest, url=url)
    with pytest.raises(DashboardUnavailable, match="WebSocket"):
        await c.full_state()
    await c.aclose()


async def test_aclose_stops_a_running_stream(rest: FakeRest) -> None:
    async def script(ws: ServerConnection, srv: WSServer) -> None:
        await ws.send(init_msg(1))
        await hang(ws)

    async with WSServer(rest) as srv:
        srv.scripts = [script]
        c = make_client(rest, url=srv.url)
        events: list[Any] = []

        async def consume() -> None:
            async for ev in c.stream():
                events.append(ev)
                if isinstance(ev, Message):
                    await c.aclose()

        async with asyncio.timeout(10):
            await consume()
    assert [type(e).__name__ for e in events] == ["Connected", "Message"]


async def test_request_state_without_connection(client: DashboardClient) -> None:
    assert await client.request_state() is False


def test_the_app_never_calls_the_pipeline_endpoint_nor_sends_timeout_action_wait() -> None:
    """On the real 3.1.5 dashboard ``POST /api/dispatch/pipeline`` crashes it, and ``wait`` on a leftover
    BLOCKED command resurrects it as EXECUTING (../shared/real-nixfleet/README.md): no code path may do either."""
    import re
    from pathlib import Path

    import nfu_tui

    root = Path(nfu_tui.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.parts[-2] == "sim":  # the simulator serves these endpoints
            continue
        text = path.read_text()
        if "dispatch/pipeline" in text:
            offenders.append(f"{path.name}: dispatch/pipeline")
        for call in re.findall(r"timeout_action\(([^)]*)\)", text):
            if "wait" in call or not re.search(r"""["'](ignore|kill)["']|action: str""", call):
                offenders.append(f"{path.name}: timeout_action({call})")
    assert offenders == []
