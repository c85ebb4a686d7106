"""Contract tests of the fake NixFleet dashboard, from the outside (httpx + websockets).

The expectations come from /work/shared/contracts/nixfleet-dashboard-api.md (§ numbers).
Pure pieces (origin rule, rate limiter, TOTP, Go-style JSON decoding, compartments and
gating, validators) are tested directly at the end.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets
from websockets.asyncio.client import ClientConnection, connect

from nfu_tui.sim.agents import (
    CommandIds,
    ValidationView,
    fmt_local,
    gate_system,
    gate_tests_heartbeat,
    gate_tests_snapshot,
    git_status,
    lock_status,
    status_check,
    validate_op,
)
from nfu_tui.sim.dashboard import (
    DesiredState,
    FakeDashboard,
    RateLimiter,
    check_origin,
    decode_go_json,
    go_json,
    totp_code,
    totp_valid,
)
from nfu_tui.sim.scenario import HostSpec, Scenario
from nfu_tui.sim.testing import fast_scenario

SAFETY = 10.0  # seconds; only a guard against hanging, never an assertion about speed
HEAD = DesiredState("a1b2c3d" + "0" * 33, "11" * 32, "Initial configuration")
MERGED = DesiredState("9f8e7d6" + "1" * 33, "22" * 32, "Merge pull request #42 from alice/update_flake_lock_action")
COMMAND_KEYS = {"id", "host_id", "op", "pipeline_id", "status", "created_at", "started_at", "finished_at",
                "exit_code", "error", "output_file"}


def plain_http(url: str) -> httpx.AsyncClient:
    """A client that never follows redirects; plain HTTP on loopback, so no CA bundle is loaded."""
    return httpx.AsyncClient(base_url=url, follow_redirects=False, verify=False)


class Remote:
    """A stand-in for version.json: tests flip ``state`` and call ``remote_changed()``."""

    def __init__(self) -> None:
        self.state = HEAD

    def __call__(self) -> DesiredState:
        return self.state


class Stream:
    """A browser's /ws connection that records every message it reads."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), SAFETY))
        self.seen.append(msg)
        return msg

    async def until(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            while True:
                msg = await self.next()
                if pred(msg):
                    return msg

        return await asyncio.wait_for(scan(), SAFETY)

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(msg))


@dataclass
class Browser:
    url: str
    http: httpx.AsyncClient
    csrf: str = ""
    streams: list[Stream] = field(default_factory=list)

    async def login(self, password: str = "demo", **form: str) -> httpx.Response:
        resp = await self.http.post("/login", data={"password": password, **form})
        if resp.headers.get("location") == "/":
            page = await self.http.get("/")
            self.csrf = re.search(r'data-csrf-token="([^"]*)"', page.text).group(1)
        return resp

    @property
    def cookie(self) -> str:
        return f"nixfleet_session={self.http.cookies.get('nixfleet_session')}"

    async def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        content = b"" if body is None else json.dumps(body).encode()
        return await self.http.post(path, content=content, headers={"X-CSRF-Token": self.csrf}, **kw)

    async def dispatch(self, op: str, *hosts: str, **extra: Any) -> dict[str, Any]:
        resp = await self.post("/api/dispatch", {"op": op, "hosts": list(hosts), **extra})
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def ws(self, **headers: str) -> Stream:
        ws = await connect(self.url.replace("http://", "ws://") + "/ws", additional_headers={"Cookie": self.cookie, **headers})
        stream = Stream(ws)
        self.streams.append(stream)
        return stream


@dataclass
class Env:
    dash: FakeDashboard
    remote: Remote
    browser: Browser


@pytest_asyncio.fixture
async def make_env() -> AsyncIterator[Callable[..., Awaitable[Env]]]:
    made: list[Env] = []

    async def make(scenario: Scenario | None = None, *, login: bool = True, **kw: Any) -> Env:
        remote = Remote()
        dash = FakeDashboard(scenario or fast_scenario(), desired_state=remote, **kw)
        url = await dash.start()
        env = Env(dash, remote, Browser(url, plain_http(url)))
        made.append(env)
        if login:
            assert (await env.browser.login()).headers["location"] == "/"
        return env

    yield make
    for env in made:
        for stream in env.browser.streams:
            await stream.ws.close()
        await env.browser.http.aclose()
        await env.dash.stop()


@pytest_asyncio.fixture
async def env(make_env: Callable[..., Awaitable[Env]]) -> Env:
    return await make_env()


def delta(kind: str, id: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda m: (m.get("type") == "delta" and m["payload"]["type"] == kind
                      and (id is None or m["payload"].get("id") == id))


def finished(command_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: delta("command_finished", command_id)(m)


def label(m: dict[str, Any], host: str) -> str | None:
    """A short name for a message about ``host`` (None for anything else)."""
    t, p = m["type"], m.get("payload") or {}
    if t == "operation_progress" and p["host_id"] == host:
        (phase, v), = p["progress"].items()
        return f"progress {phase} {v['current']}/{v['total']} {v['status']}"
    if t == "command_output" and p["host_id"] == host:
        return "output"
    if t == "command_state" and p["host_id"] == host:
        return f"state {p['command']['status']}"
    if t != "delta":
        return None
    kind = p["type"]
    if kind in ("command_progress", "command_finished"):
        cmd = p["fields"]
        return f"{kind} {cmd['status']}" if cmd["host_id"] == host else None
    if kind == "command_started":
        cmd = p["payload"]
        return f"command_started {cmd['status']}" if cmd["host_id"] == host else None
    if kind == "event":
        return f"event {p['payload']['message']}" if p["payload"].get("host_id") == host else None
    if kind == "host_updated" and p["id"] == host:
        f = p["fields"]
        if set(f) == {"pending_command"}:
            return f"pending {f['pending_command']}"
        if "metrics" in f:
            return "heartbeat"
        if "hostname" in f:
            return "registration"
        if set(f) == {"status"}:
            return f"status {f['status']}"
        if set(f) == {"generation", "update_status"}:
            return "host_status"
    return None


def assert_in_order(labels: list[str], expected: list[str]) -> None:
    pos = 0
    for item in expected:
        try:
            pos = labels.index(item, pos) + 1
        except ValueError:
            raise AssertionError(f"{item!r} missing (after position {pos}) in {labels}") from None


async def wait_for(cond: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), SAFETY)


# --- auth (§2) ------------------------------------------------------------------------------


async def test_health_needs_no_session_and_is_exact(env: Env) -> None:
    async with plain_http(env.browser.url) as anon:
        resp = await anon.get("/health")
    assert resp.status_code == 200
    assert resp.content == b'{"status":"ok"}'
    assert resp.headers["content-type"] == "application/json"
    for header, value in {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
                          "x-xss-protection": "1; mode=block",
                          "referrer-policy": "strict-origin-when-cross-origin"}.items():
        assert resp.headers[header] == value
    assert "strict-transport-security" not in resp.headers


async def test_login_success_sets_session_cookie(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(login=False)
    resp = await env.browser.login()
    assert resp.status_code == 302 and resp.headers["location"] == "/"
    cookie = resp.headers["set-cookie"]
    value = re.match(r"nixfleet_session=([^;]*);", cookie).group(1)
    assert len(value) == 44 and value.endswith("=")
    attrs = [a.strip() for a in cookie.split(";")[1:]]
    assert "Path=/" in attrs and "HttpOnly" in attrs and "SameSite=Lax" in attrs and "Secure" not in attrs
    assert any(a.startswith("Expires=") and a.endswith(" GMT") for a in attrs)
    assert re.fullmatch(r"[A-Za-z0-9_=-]{44}", env.browser.csrf)
    again = await env.browser.http.get("/login")
    assert again.status_code == 302 and again.headers["location"] == "/"


async def test_cookie_is_secure_behind_a_tls_proxy(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(login=False)
    resp = await env.browser.http.post("/login", data={"password": "demo"}, headers={"X-Forwarded-Proto": "https"})
    assert "; Secure;" in resp.headers["set-cookie"]


async def test_login_failures_redirect_with_exact_locations(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(login=False)
    resp = await env.browser.login("wrong")
    assert resp.status_code == 302
    assert resp.headers["location"] == "/login?error=Invalid+password"
    assert "set-cookie" not in resp.headers
    page = await env.browser.http.get(resp.headers["location"])
    assert page.status_code == 200 and 'data-csrf-token=""' in page.text and "Invalid password" in page.text
    assert "v3.1.5" in page.text


async def test_login_rate_limit_is_per_ip_and_counts_every_attempt(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(login=False)
    http = env.browser.http
    for _ in range(5):
        resp = await http.post("/login", data={"password": "nope"}, headers={"X-Forwarded-For": "203.0.113.7"})
        assert resp.headers["location"] == "/login?error=Invalid+password"
    resp = await http.post("/login", data={"password": "demo"}, headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
    assert resp.headers["location"] == "/login?error=Too+many+attempts.+Please+wait."
    other = await http.post("/login", data={"password": "demo"}, headers={"X-Real-IP": "198.51.100.1"})
    assert other.headers["location"] == "/"


async def test_successful_login_clears_the_ip_history(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(login=False)
    ip = {"True-Client-IP": "192.0.2.55"}
    for _ in range(4):
        await env.browser.http.post("/login", data={"password": "nope"}, headers=ip)
    assert (await env.browser.http.post("/login", data={"password": "demo"}, headers=ip)).headers["location"] == "/"
    for _ in range(4):
        resp = await env.browser.http.post("/login", data={"password": "nope"}, headers=ip)
        assert resp.headers["location"] == "/login?error=Invalid+password"


async def test_totp_is_required_when_configured(make_env: Callable[..., Awaitable[Env]]) -> None:
    secret = "JBSWY3DPEHPK3PXP"
    env = await make_env(fast_scenario(totp_secret=secret), login=False)
    resp = await env.browser.login()
    assert resp.headers["location"] == "/login?error=Invalid+TOTP+code"
    resp = await env.browser.login(totp=totp_code(secret, int(time.time() // 30)))
    assert resp.headers["location"] == "/"


async def test_unauthenticated_requests_redirect_to_login(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(login=False)
    http = env.browser.http
    page = await http.get("/")
    assert page.status_code == 302 and page.headers["location"] == "/login"
    assert page.text == '<a href="/login">Found</a>.\n\n'
    api = await http.get("/api/hosts")
    assert api.status_code == 302 and api.headers["location"] == "/login"
    post = await http.post("/api/dispatch", json={"op": "pull", "hosts": ["hsb1"]})
    assert post.status_code == 302 and post.headers["location"] == "/login" and post.content == b""
    assert env.dash.commands == {}


async def test_csrf_is_required_on_mutations(env: Env) -> None:
    http = env.browser.http
    for headers in ({}, {"X-CSRF-Token": "wrong"}):
        resp = await http.post("/api/dispatch", json={"op": "pull", "hosts": ["hsb1"]}, headers=headers)
        assert resp.status_code == 403
        assert resp.text == "Forbidden\n" and resp.headers["content-type"] == "text/plain; charset=utf-8"
    ok = await http.post(f"/api/hosts/hsb1/refresh?csrf_token={env.browser.csrf}")
    assert ok.status_code == 200
    assert (await http.get("/api/hosts")).status_code == 200  # GET needs no token


async def test_csrf_form_field_consumes_a_form_encoded_body(env: Env) -> None:
    resp = await env.browser.http.post(
        "/api/dispatch", content=f"csrf_token={env.browser.csrf}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 400 and resp.json() == {"error": "Invalid request body"}


async def test_logout_with_form_token_ends_the_session(env: Env) -> None:
    http = env.browser.http
    cookie = env.browser.cookie
    resp = await http.post("/logout", data={"csrf_token": env.browser.csrf})
    assert resp.status_code == 302 and resp.headers["location"] == "/login"
    assert resp.headers["set-cookie"] == "nixfleet_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
    # Plain HTTP: the client keeps its (now dead) cookie; the server no longer knows it.
    async with plain_http(env.browser.url) as fresh:
        resp = await fresh.get("/api/hosts", headers={"Cookie": cookie})
    assert resp.status_code == 302 and resp.headers["location"] == "/login"


async def test_expired_sessions_redirect_and_login_again_works(env: Env) -> None:
    env.dash.expire_sessions()
    assert (await env.browser.http.get("/api/hosts")).headers["location"] == "/login"
    assert (await env.browser.login()).headers["location"] == "/"
    assert (await env.browser.http.get("/api/hosts")).status_code == 200


async def test_csrf_token_is_per_session_and_only_in_the_dashboard_html(env: Env) -> None:
    first = env.browser.csrf
    page = (await env.browser.http.get("/")).text
    assert f'<input type="hidden" name="csrf_token" value="{first}"/>' in page
    assert 'data-host-id="hsb1"' in page and "NixFleet 3.1.5 (" in page
    await env.browser.login()
    assert env.browser.csrf != first
    resp = await env.browser.http.post("/api/hosts/hsb1/refresh", headers={"X-CSRF-Token": first})
    assert resp.status_code == 403


async def test_unknown_paths_and_methods_use_router_defaults(env: Env) -> None:
    resp = await env.browser.http.get("/nope")
    assert resp.status_code == 404 and resp.text == "404 page not found\n"
    resp = await env.browser.http.put("/api/dispatch")
    assert resp.status_code == 405


# --- /ws handshake (§4.1) ----------------------------------------------------------------------


async def test_ws_requires_a_session_cookie(env: Env) -> None:
    url = env.browser.url.replace("http://", "ws://") + "/ws"
    for headers in ({}, {"Cookie": "nixfleet_session=bogus"}, {"Authorization": "Bearer x", "Cookie": env.browser.cookie}):
        with pytest.raises(websockets.InvalidStatus) as info:
            await connect(url, additional_headers=headers)
        assert info.value.response.status_code == 401


async def test_ws_origin_rules(env: Env) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        await env.browser.ws(Origin="http://evil.example")
    assert info.value.response.status_code == 403
    stream = await env.browser.ws(Origin="http://localhost:3000")
    assert (await stream.next())["type"] == "init"


async def test_plain_get_on_ws_is_a_bad_request(env: Env) -> None:
    resp = await env.browser.http.get("/ws")
    assert resp.status_code == 400


# --- /ws sync protocol (§4.4, §4.5, §5.1) ----------------------------------------------------


async def test_init_and_full_state_snapshot_shapes(make_env: Callable[..., Awaitable[Env]]) -> None:
    scenario = fast_scenario()
    scenario.hosts.append(HostSpec("old-agent", agent_version="3.0.0"))
    env = await make_env(scenario)
    stream = await env.browser.ws()
    init = await stream.next()
    assert init["type"] == "init" and isinstance(init["version"], int)
    payload = init["payload"]
    assert set(payload) == {"hosts", "commands", "pipelines", "events"}
    assert payload["pipelines"] is None
    hosts = {h["id"]: h for h in payload["hosts"]}
    assert [h["hostname"] for h in payload["hosts"]] == sorted(hosts)
    hsb1 = hosts["hsb1"]
    assert set(hsb1) == {"agent_outdated", "agent_version", "available_ops", "device_type", "generation", "host_type",
                         "hostname", "id", "last_seen", "location", "metrics", "pending_command", "status",
                         "theme_color", "update_status"}
    assert hsb1["pending_command"] == "" and hsb1["status"] == "online"
    assert hsb1["available_ops"] == ["pull", "switch", "test", "reboot"] and hsb1["agent_outdated"] is False
    assert hsb1["generation"] == HEAD.git_commit[:7]
    us = hsb1["update_status"]
    assert set(us) == {"git", "lock", "system", "tests", "repo_url", "repo_dir"}
    assert us["git"]["status"] == us["lock"]["status"] == us["system"]["status"] == "ok"
    assert us["system"]["message"] == "Last switch succeeded"
    assert hosts["old-agent"]["agent_outdated"] is True
    offline = hosts["hsb8"]
    assert offline["status"] == "offline" and offline["available_ops"] == []
    assert datetime.fromisoformat(offline["last_seen"].replace("Z", "+00:00")) < datetime.fromisoformat(
        hsb1["last_seen"].replace("Z", "+00:00"))
    assert hosts["imac0"]["host_type"] == "macos" and hosts["imac0"]["theme_color"] == "#bb9af7"
    await stream.send({"type": "get_state"})
    full = await stream.until(lambda m: m["type"] == "full_state")
    assert full["version"] >= init["version"] and set(full["payload"]) == set(payload)


async def test_empty_fleet_snapshot_is_all_nulls(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(fast_scenario(hosts=[]))
    stream = await env.browser.ws()
    assert (await stream.next())["payload"] == {"hosts": None, "commands": None, "pipelines": None, "events": None}
    assert (await env.browser.http.get("/api/hosts")).json() == {"hosts": None}
    assert (await env.browser.http.get("/api/events")).json() == {"events": None}


async def test_version_counts_every_change_even_without_clients(env: Env) -> None:
    start = env.dash.version
    await wait_for(lambda: env.dash.version > start + 20)  # heartbeats alone move it
    stream = await env.browser.ws()
    init = await stream.next()
    assert init["version"] >= start + 20


async def test_deltas_are_consecutive_and_sync_beacon_reports_the_version(env: Env) -> None:
    stream = await env.browser.ws()
    version = (await stream.next())["version"]
    beacon = None
    while beacon is None:
        msg = await stream.next()
        if msg["type"] == "delta":
            assert msg["version"] == version + 1
            version = msg["version"]
        elif msg["type"] == "sync":
            beacon = msg
    assert beacon == {"type": "sync", "version": version}


async def test_heartbeat_delta_fields(env: Env) -> None:
    stream = await env.browser.ws()
    msg = await stream.until(lambda m: label(m, "hsb1") == "heartbeat")
    fields = msg["payload"]["fields"]
    assert set(fields) == {"status", "last_seen", "generation", "metrics", "update_status"}
    assert fields["status"] == "online" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fields["last_seen"])
    assert set(fields["metrics"]) == {"cpu", "ram", "swap", "load"}
    assert set(fields["update_status"]) == {"git", "lock"}  # system/tests absent = unchanged
    assert fields["update_status"]["git"]["message"] == "Up to date with remote"


async def test_registration_and_offline_deltas(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    env.dash.add_host(HostSpec("newbox", "desktop", "work", host_type="macos"))
    reg = await stream.until(delta("host_updated", "newbox"))
    assert set(reg["payload"]["fields"]) == {
        "hostname", "host_type", "agent_version", "os_version", "nixpkgs_version", "generation", "theme_color",
        "location", "device_type", "repo_url", "repo_dir", "status", "pending_command", "last_seen"}
    assert reg["payload"]["fields"]["pending_command"] is None and reg["payload"]["fields"]["status"] == "online"
    env.dash.set_online("newbox", False)
    off = await stream.until(lambda m: label(m, "newbox") == "status offline")
    assert off["payload"]["fields"] == {"status": "offline"}
    env.dash.set_online("newbox", True)
    await stream.until(lambda m: label(m, "newbox") == "registration")
    env.dash.remove_host("newbox")
    gone = await stream.until(delta("host_removed", "newbox"))
    assert gone["payload"] == {"type": "host_removed", "id": "newbox"}


async def test_delta_before_init_switch(env: Env) -> None:
    env.dash.send_delta_before_init(True)
    stream = await env.browser.ws()
    first, second = await stream.next(), await stream.next()
    assert first["type"] == "delta" and second["type"] == "init"
    assert second["version"] >= first["version"]


async def next_irregular_delta(stream: Stream, last: int) -> tuple[int, dict[str, Any]]:
    """Read deltas until one does not follow its predecessor; (predecessor's version, that delta)."""
    while True:
        msg = await stream.until(lambda m: m["type"] == "delta")
        if msg["version"] != last + 1:
            return last, msg
        last = msg["version"]


async def test_dropped_delta_makes_a_gap_and_get_state_recovers(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    seen = (await stream.until(lambda m: m["type"] == "delta"))["version"]
    env.dash.drop_next_deltas(2)
    last, nxt = await next_irregular_delta(stream, seen)
    assert nxt["version"] == last + 3
    await stream.send({"type": "get_state"})
    full = await stream.until(lambda m: m["type"] == "full_state")
    assert full["version"] >= nxt["version"] and full["payload"]["hosts"]


async def test_reordered_deltas_arrive_swapped(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    seen = (await stream.until(lambda m: m["type"] == "delta"))["version"]
    env.dash.reorder_next_deltas()
    last, early = await next_irregular_delta(stream, seen)
    late = await stream.until(lambda m: m["type"] == "delta")
    assert (early["version"], late["version"]) == (last + 2, last + 1)


async def test_client_pings_are_answered(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    waiter = await stream.ws.ping()
    await asyncio.wait_for(waiter, SAFETY)


async def test_unknown_client_messages_are_ignored(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    await stream.ws.send("not json")
    await stream.send({"type": "subscribe", "payload": {"hosts": ["hsb1"]}})
    await stream.send({"type": "get_state"})
    assert (await stream.until(lambda m: m["type"] in ("full_state", "error")))["type"] == "full_state"


# --- REST (§3) ---------------------------------------------------------------------------------


async def test_get_hosts_rows(env: Env) -> None:
    await env.browser.post("/api/hosts", {"hostname": "imac9", "host_type": "macos"})
    body = (await env.browser.http.get("/api/hosts")).json()
    rows = {r["id"]: r for r in body["hosts"]}
    assert [r["hostname"] for r in body["hosts"]] == sorted(rows)
    assert set(rows["hsb1"]) == {"agent_version", "comment", "generation", "host_type", "hostname", "id", "last_seen",
                                 "nixpkgs_version", "os_version", "pending_command", "status"}
    assert rows["hsb1"]["pending_command"] is None and rows["hsb1"]["comment"] is None
    assert rows["imac9"] == {"agent_version": None, "comment": None, "generation": None, "host_type": "macos",
                             "hostname": "imac9", "id": "imac9", "last_seen": None, "nixpkgs_version": None,
                             "os_version": None, "pending_command": None, "status": "offline"}


async def test_add_and_delete_host(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    resp = await env.browser.post("/api/hosts", {"hostname": "imac0x", "host_type": "macos", "location": "work",
                                                  "theme_color": "#bb9af7", "unknown": 1})
    assert resp.status_code == 200 and resp.json() == {"host_id": "imac0x", "status": "created"}
    added = await stream.until(delta("host_added", "imac0x"))
    assert added["payload"]["payload"] == {"device_type": "desktop", "host_type": "macos", "hostname": "imac0x",
                                           "id": "imac0x", "location": "work", "pending_command": None,
                                           "status": "offline", "theme_color": "#bb9af7"}
    assert (await env.browser.post("/api/hosts", {})).text == "Hostname required\n"
    assert (await env.browser.post("/api/hosts")).text == "Bad Request\n"
    assert (await env.browser.http.delete("/api/hosts/hsb1", headers={"X-CSRF-Token": env.browser.csrf})).status_code == 409
    resp = await env.browser.http.delete("/api/hosts/nope", headers={"X-CSRF-Token": env.browser.csrf})
    assert resp.status_code == 404 and resp.text == "Host not found\n"
    resp = await env.browser.http.delete("/api/hosts/imac0x", headers={"X-CSRF-Token": env.browser.csrf})
    assert resp.json() == {"host_id": "imac0x", "status": "deleted"}
    await stream.until(delta("host_removed", "imac0x"))


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (None, 400, "Invalid request body"),
        ("{", 400, "Invalid request body"),
        ({"op": 1, "hosts": ["hsb1"]}, 400, "Invalid request body"),
        ({"hosts": ["hsb1"]}, 400, "op is required"),
        ({"op": "pull"}, 400, "hosts is required"),
        ({"op": "pull", "hosts": []}, 400, "hosts is required"),
        ({"op": "pull-switch", "hosts": ["hsb1"]}, 400, "unknown op: pull-switch"),
        ({"op": "reboot", "hosts": ["hsb1"]}, 403, "TOTP must be configured for this operation"),
    ],
)
async def test_dispatch_request_errors(env: Env, body: Any, status: int, error: str) -> None:
    content = b"" if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
    resp = await env.browser.http.post("/api/dispatch", content=content, headers={"X-CSRF-Token": env.browser.csrf})
    assert resp.status_code == status and resp.json() == {"error": error}
    assert resp.headers["content-type"] == "application/json"


async def test_dispatch_reboot_needs_totp_when_configured(make_env: Callable[..., Awaitable[Env]]) -> None:
    secret = "JBSWY3DPEHPK3PXP"
    env = await make_env(fast_scenario(totp_secret=secret), login=False)
    await env.browser.login(totp=totp_code(secret, int(time.time() // 30)))
    resp = await env.browser.post("/api/dispatch", {"op": "reboot", "hosts": ["hsb1"], "totp": "000000"})
    assert resp.status_code == 401 and resp.json() == {"error": "Invalid TOTP code"}
    body = await env.browser.dispatch("reboot", "hsb1", totp=totp_code(secret, int(time.time() // 30)))
    assert body["results"][0]["status"] == "EXECUTING"


async def test_dispatch_mixed_results(env: Env) -> None:
    body = await env.browser.dispatch("pull", "hsb1", "hsb8", "nope")
    assert body["status"] == "failed"
    assert body["summary"] == {"error": 3, "success": 0, "total": 3}
    assert body["results"] == [
        {"code": "already_current", "host_id": "hsb1", "message": "Git already up to date", "status": "blocked"},
        {"code": "offline", "host_id": "hsb8", "message": "Host is offline", "status": "blocked"},
        {"error": "Host not found", "host_id": "nope", "status": "error"},
    ]
    body = await env.browser.dispatch("test", "hsb1", "hsb1")
    assert body["status"] == "partial" and body["summary"] == {"error": 1, "success": 1, "total": 2}
    first, second = body["results"]
    assert first["status"] == "EXECUTING" and re.fullmatch(r"\d{8}-\d{6}\.\d{3}-[0-9a-f]{4}", first["command_id"])
    assert second == {"code": "command_pending", "host_id": "hsb1", "message": "Command 'test' already running",
                      "status": "blocked"}


async def test_dashboard_ops_succeed_immediately_and_do_nothing(env: Env) -> None:
    body = await env.browser.dispatch("merge-pr", "hsb1")
    assert body["results"][0]["status"] == "SUCCESS" and body["status"] == "success"
    assert env.dash.hosts["hsb1"].pending_command is None
    body = await env.browser.dispatch("remove", "hsb1")
    assert body["results"][0]["code"] == "online"
    assert (await env.browser.dispatch("remove", "hsb8"))["results"][0]["status"] == "SUCCESS"
    assert "hsb8" in env.dash.hosts


async def test_blocked_dispatch_messages(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    body = await env.browser.dispatch("switch", "hsb1")
    assert body["results"][0]["code"] == "already_current"
    assert body["results"][0]["message"] == "System already up to date"
    done = await stream.until(lambda m: label(m, "hsb1") == "command_finished BLOCKED")
    cmd = done["payload"]["fields"]
    assert cmd["error"] == "System already up to date" and cmd["finished_at"] == "0001-01-01T00:00:00Z"
    assert COMMAND_KEYS <= set(cmd)
    await stream.until(lambda m: label(m, "hsb1") == "event Blocked: System already up to date")
    labels = [x for m in stream.seen if (x := label(m, "hsb1"))]
    assert_in_order(labels, ["command_progress VALIDATING", "state VALIDATING", "event Validating switch",
                             "command_finished BLOCKED", "event Blocked: System already up to date"])
    assert not any(x.startswith("pending") for x in labels)
    states = (await env.browser.http.get("/api/command-states")).json()["states"]
    assert states["hsb1"]["status"] == "BLOCKED"  # a terminal leftover (§3.6)


async def test_lock_outdated_and_busy_codes(env: Env) -> None:
    env.remote.state = MERGED
    env.dash.remote_changed()
    body = await env.browser.dispatch("switch", "hsb1")
    assert body["results"][0]["code"] == "lock_outdated"
    assert body["results"][0]["message"] == "Pull required before switch (lock outdated)"
    env.dash.hosts["hsb0"].pending_command = "switch"  # a DB leftover without a lifecycle command
    body = await env.browser.dispatch("pull", "hsb0")
    assert body["results"][0] == {"code": "busy", "host_id": "hsb0", "message": 'Command "switch" already running',
                                  "status": "blocked"}


async def test_send_failure_leaves_an_error_in_command_states(env: Env) -> None:
    env.dash.set_fault("hsb1", "send_fails")
    body = await env.browser.dispatch("test", "hsb1")
    assert body["results"][0] == {"code": "send_failed", "host_id": "hsb1",
                                  "message": "Failed to send command to agent", "status": "blocked"}
    state = (await env.browser.http.get("/api/command-states")).json()["states"]["hsb1"]
    assert state["status"] == "ERROR" and state["exit_code"] == 1
    assert env.dash.hosts["hsb1"].pending_command is None


async def test_legacy_command_endpoint(env: Env) -> None:
    resp = await env.browser.post("/api/hosts/hsb1/command", {"command": "test", "args": ["x"]})
    assert resp.status_code == 200
    body = resp.json()
    assert body["command"] == "test" and body["status"] == "queued" and body["command_id"]
    resp = await env.browser.post("/api/hosts/hsb1/command", {"command": "test"})
    assert resp.status_code == 409
    assert resp.json() == {"status": "blocked", "validation": {
        "code": "command_pending", "message": "Command 'test' already running", "valid": False}}
    resp = await env.browser.post("/api/hosts/hsb0/command", {"command": "pull-switch"})
    assert resp.status_code == 409 and resp.json()["validation"]["code"] == "unknown_op"
    assert resp.json()["validation"]["message"] == "Unknown operation: pull-switch"
    assert (await env.browser.post("/api/hosts/nope/command", {"command": "pull"})).text == "Host not found\n"
    assert (await env.browser.post("/api/hosts/hsb0/command")).text == "Bad Request\n"


async def test_refresh_is_ungated_and_clears_a_stale_pending_without_delta(env: Env) -> None:
    env.remote.state = MERGED
    env.dash.remote_changed()
    env.dash.hosts["hsb0"].pending_command = "pull"
    resp = await env.browser.post("/api/hosts/hsb0/refresh")
    body = resp.json()
    assert set(body) == {"agent_outdated", "agent_version", "generation", "host_id", "online", "pending_pr",
                         "update_status"}
    assert body["online"] is True and body["pending_pr"] is None
    assert body["update_status"]["git"]["status"] == "outdated"
    assert body["update_status"]["system"]["status"] == "ok"  # raw stored value, no gating
    assert env.dash.hosts["hsb0"].pending_command is None
    assert (await env.browser.post("/api/hosts/nope/refresh")).status_code == 404


async def test_refresh_git_returns_git_and_broadcasts_host_status(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    resp = await env.browser.post("/api/hosts/hsb1/refresh-git")
    assert resp.json()["status"] == "ok" and set(resp.json()) == {"checked_at", "message", "status"}
    msg = await stream.until(lambda m: label(m, "hsb1") == "host_status")
    assert set(msg["payload"]["fields"]["update_status"]) == {"git", "lock", "system", "tests", "repo_url", "repo_dir"}


async def test_theme_color(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    resp = await env.browser.post("/api/hosts/hsb1/theme-color", {"color": "#112233"})
    assert resp.json() == {"color": "#112233", "host_id": "hsb1", "nixcfg": "disabled", "palette": "custom-hsb1",
                           "status": "updated"}
    msg = await stream.until(lambda m: delta("host_updated", "hsb1")(m) and "theme_color" in m["payload"]["fields"])
    assert msg["payload"]["fields"] == {"theme_color": "#112233"}
    line = await stream.until(lambda m: m["type"] == "command_output")
    assert line["payload"]["command"] == "theme-color"
    bad = await env.browser.post("/api/hosts/hsb1/theme-color", {"color": "blue"})
    assert bad.status_code == 400 and bad.text == "Invalid color format (expected #rrggbb)\n"


async def test_reboot_endpoint_check_order(make_env: Callable[..., Awaitable[Env]]) -> None:
    plain = await make_env()
    resp = await plain.browser.post("/api/hosts/hsb1/reboot", {"totp": "123456"})
    assert resp.status_code == 403 and resp.json() == {"error": "TOTP must be configured to use reboot feature"}
    assert (await plain.browser.post("/api/hosts/hsb1/reboot")).json() == {"error": "Invalid request body"}
    secret = "JBSWY3DPEHPK3PXP"
    env = await make_env(fast_scenario(totp_secret=secret, speed=5.0), login=False)  # down 0.6 s after a reboot
    await env.browser.login(totp=totp_code(secret, int(time.time() // 30)))
    code = totp_code(secret, int(time.time() // 30))
    cases = [({"totp": ""}, "hsb1", 401, "TOTP code required"), ({"totp": "000000"}, "hsb1", 401, "Invalid TOTP code"),
             ({"totp": code}, "nope", 404, "Host not found"), ({"totp": code}, "hsb8", 409, "Host is offline")]
    for body, host, status, error in cases:
        resp = await env.browser.post(f"/api/hosts/{host}/reboot", body)
        assert (resp.status_code, resp.json()) == (status, {"error": error})
    stream = await env.browser.ws()
    await stream.next()
    for _ in range(5):
        resp = await env.browser.post("/api/hosts/hsb1/reboot", {"totp": code})
        assert resp.json() == {"message": "Reboot command sent to host", "status": "queued"}
    resp = await env.browser.post("/api/hosts/hsb1/reboot", {"totp": code})
    assert resp.status_code == 429
    assert resp.json() == {"error": "Too many reboot attempts. Please wait before trying again."}
    line = await stream.until(lambda m: label(m, "hsb1") == "output")
    assert line["payload"]["line"].startswith("⚠️  Reboot command received.")
    await stream.until(lambda m: label(m, "hsb1") == "status offline")
    assert env.dash.active.get("hsb1") is None and env.dash.commands == {}  # bypasses the lifecycle


async def test_static_listings(env: Env) -> None:
    ops = (await env.browser.http.get("/api/ops")).json()["ops"]
    by_id = {o["id"]: o for o in ops}
    assert len(by_id) == 16 and by_id["pull"] == {"description": "Git fetch + reset to latest", "executor": "agent",
                                                  "id": "pull", "requires_totp": False, "retryable": True,
                                                  "timeout": "2m0s"}
    assert by_id["reboot"]["requires_totp"] is True and by_id["merge-pr"]["executor"] == "dashboard"
    pipes = {p["id"]: p["ops"] for p in (await env.browser.http.get("/api/pipelines")).json()["pipelines"]}
    assert pipes["do-all"] == ["pull", "switch", "test"] and len(pipes) == 4
    assert (await env.browser.http.get("/api/hosts/hsb1/logs")).json() == {"logs": None}
    for path in ("/api/flake-updates/status",):
        resp = await env.browser.http.get(path)
        assert resp.status_code == 501 and resp.text == "GitHub integration not configured\n"
    resp = await env.browser.post("/api/flake-updates/merge-pr", {"pr_number": 42})
    assert resp.status_code == 501


async def test_pipeline_dispatch_is_a_validated_noop(env: Env) -> None:
    resp = await env.browser.post("/api/dispatch/pipeline", {"pipeline": "do-all", "hosts": ["hsb1"]})
    assert resp.json() == {"hosts": ["hsb1"], "pipeline": "do-all", "status": "started"}
    assert env.dash.commands == {}
    resp = await env.browser.post("/api/dispatch/pipeline", {"pipeline": "do-all", "hosts": ["hsb1", "nope"]})
    assert resp.status_code == 404 and resp.json() == {"error": "host not found: nope"}
    resp = await env.browser.post("/api/dispatch/pipeline", {"pipeline": "yolo", "hosts": ["hsb1"]})
    assert resp.json() == {"error": "unknown pipeline: yolo"}


async def test_events_endpoints(env: Env) -> None:
    await env.browser.dispatch("switch", "hsb1")
    await env.browser.dispatch("pull", "hsb0")
    events = (await env.browser.http.get("/api/events", params={"limit": "3"})).json()["events"]
    assert len(events) == 3 and events[0]["id"] > events[1]["id"] > events[2]["id"]
    assert events[0]["message"] == "Blocked: Git already up to date" and events[0]["action"] == "op:pull"
    assert "details" not in events[0] and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", events[0]["timestamp"])
    host_events = (await env.browser.http.get("/api/hosts/hsb1/events")).json()["events"]
    assert {e["host_id"] for e in host_events} == {"hsb1"} and len(host_events) == 2
    assert len((await env.browser.http.get("/api/events", params={"limit": "0"})).json()["events"]) == 1
    assert len((await env.browser.http.get("/api/system-log", params={"limit": "0"})).json()["logs"]) == 4


# --- lifecycle over /ws (§4.7, §6) -----------------------------------------------------------


async def test_pull_lifecycle_order_and_output(env: Env) -> None:
    env.remote.state = MERGED
    env.dash.remote_changed()
    stream = await env.browser.ws()
    await stream.next()
    body = await env.browser.dispatch("pull", "hsb1")
    cid = body["results"][0]["command_id"]
    done = await stream.until(finished(cid))
    await stream.until(lambda m: label(m, "hsb1") == "heartbeat")
    cmd = done["payload"]["fields"]
    assert cmd["status"] == "SUCCESS" and cmd["exit_code"] == 0 and COMMAND_KEYS <= set(cmd)
    labels = [x for m in stream.seen if (x := label(m, "hsb1"))]
    assert_in_order(labels, [
        "command_progress VALIDATING", "state VALIDATING", "event Validating pull",
        "command_started EXECUTING", "state EXECUTING", "event Executing pull", "pending pull",
        "progress pull 0/4 in_progress", "output", "progress pull 4/4 complete", "host_status",
        "command_finished SUCCESS", "state SUCCESS", "event pull completed successfully", "pending None", "heartbeat",
    ])
    assert labels.index("host_status") < labels.index("command_finished SUCCESS")
    outputs = [m["payload"] for m in stream.seen if label(m, "hsb1") == "output"]
    assert all(o["command"] == "" and o["is_error"] is False and o["host_id"] == "hsb1" for o in outputs)
    assert any(o["line"].startswith(f"HEAD is now at {MERGED.git_commit[:7]}") for o in outputs)
    host = env.dash.hosts["hsb1"]
    assert host.generation == MERGED.git_commit[:7] and host.lock["status"] == "ok"
    text = (await env.browser.http.get("/api/hosts/hsb1/output", params={"lines": "2"})).text
    lines = text.splitlines()
    assert len(lines) == 2 and all(re.match(r"\[\d\d:\d\d:\d\d\] ", ln) for ln in lines)
    assert lines[-1].endswith(f"{MERGED.git_commit[:7]} {MERGED.message}")
    full = (await env.browser.http.get("/api/hosts/hsb1/output")).text
    assert full.startswith("# Command: \n# Host: hsb1\n# Started: ")
    assert (await env.browser.http.get("/api/hosts/hsb0/output")).text == ""


async def test_switch_lifecycle_order(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    body = await env.browser.dispatch("switch", "hsb1", force=True)
    cid = body["results"][0]["command_id"]
    done = await stream.until(finished(cid))
    await stream.until(lambda m: label(m, "hsb1") == "pending None")
    assert done["payload"]["fields"]["status"] == "SUCCESS" and done["payload"]["fields"]["exit_code"] == 0
    labels = [x for m in stream.seen if (x := label(m, "hsb1"))]
    assert_in_order(labels, [
        "command_started EXECUTING", "pending switch", "progress system 0/3 in_progress",
        "progress system 3/3 complete", "command_started AWAITING_RECONNECT",
        "event Switch completed - waiting for agent restart", "host_status", "status offline", "registration",
        "command_finished SUCCESS", "event switch completed successfully", "pending None",
    ])
    waiting = next(m for m in stream.seen if label(m, "hsb1") == "command_started AWAITING_RECONNECT")
    assert waiting["payload"]["payload"]["reconnect_deadline"] != "0001-01-01T00:00:00Z"
    lines = [m["payload"]["line"] for m in stream.seen if label(m, "hsb1") == "output"]
    assert "building the system configuration..." in lines and "activating the configuration..." in lines
    assert any(re.fullmatch(r"these \d+ derivations will be built:", ln) for ln in lines)
    assert any(re.fullmatch(r"  /nix/store/[0-9a-z]{32}-.+\.drv", ln) for ln in lines)
    assert lines[-1] == "✅ Switch completed successfully"
    host_status = next(m for m in stream.seen if label(m, "hsb1") == "host_status")
    us = host_status["payload"]["fields"]["update_status"]
    assert us["system"]["message"] == "Last switch succeeded"
    assert us["tests"]["message"] == "Tests need re-run after deploy"


async def test_macos_switch_uses_home_manager_output(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("switch", "imac0", force=True))["results"][0]["command_id"]
    await stream.until(finished(cid))
    lines = [m["payload"]["line"] for m in stream.seen if label(m, "imac0") == "output"]
    assert lines[0].startswith("$ home-manager switch --flake")
    assert "Starting Home Manager activation" in lines and "building the system configuration..." not in lines


async def test_heartbeats_report_working_system_during_a_slow_switch(env: Env) -> None:
    env.dash.set_fault("hsb1", "slow")
    stream = await env.browser.ws()
    await stream.next()
    await env.browser.dispatch("switch", "hsb1", force=True)
    beat = await stream.until(lambda m: label(m, "hsb1") == "heartbeat"
                              and "system" in m["payload"]["fields"]["update_status"])
    assert beat["payload"]["fields"]["update_status"]["system"]["status"] == "working"
    assert beat["payload"]["fields"]["update_status"]["system"]["message"] == "Switch in progress..."


async def test_switch_failure(env: Env) -> None:
    env.dash.set_fault("hsb1", "switch_fails")
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("switch", "hsb1", force=True))["results"][0]["command_id"]
    cmd = (await stream.until(finished(cid)))["payload"]["fields"]
    assert cmd["status"] == "ERROR" and cmd["exit_code"] == 1 and cmd["error"] == "command failed"
    lines = [m["payload"]["line"] for m in stream.seen if label(m, "hsb1") == "output"]
    assert any(ln.startswith("error: builder for '/nix/store/") for ln in lines)
    assert "progress system 0/3 error" in [label(m, "hsb1") for m in stream.seen]
    assert env.dash.hosts["hsb1"].system["status"] == "error"
    assert env.dash.hosts["hsb1"].status == "online"  # a failed switch does not restart the agent
    beat = await stream.until(lambda m: label(m, "hsb1") == "heartbeat")
    assert beat["payload"]["fields"]["update_status"]["system"] == {
        "checked_at": beat["payload"]["fields"]["update_status"]["system"]["checked_at"],
        "message": "Switch failed (exit 1)", "status": "error"}


async def test_switch_times_out_when_the_agent_never_reconnects(env: Env) -> None:
    env.dash.set_fault("hsb1", "never_reconnects")
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("switch", "hsb1", force=True))["results"][0]["command_id"]
    cmd = (await stream.until(finished(cid)))["payload"]["fields"]
    assert cmd["status"] == "TIMEOUT" and cmd["error"] == "Agent did not reconnect in time"
    await stream.until(lambda m: label(m, "hsb1") == "pending None")
    labels = [x for m in stream.seen if (x := label(m, "hsb1"))]
    assert_in_order(labels, ["command_started AWAITING_RECONNECT", "status offline", "command_finished TIMEOUT",
                             "event Reconnect timeout - verify host manually"])
    assert "registration" not in labels and env.dash.hosts["hsb1"].status == "offline"


async def test_offline_mid_deploy_then_back(env: Env) -> None:
    env.dash.set_fault("hsb1", "offline_mid_deploy")
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("switch", "hsb1", force=True))["results"][0]["command_id"]
    cmd = (await stream.until(finished(cid)))["payload"]["fields"]
    assert cmd["status"] == "TIMEOUT"
    labels = [x for m in stream.seen if (x := label(m, "hsb1"))]
    assert "progress system 3/3 complete" not in labels
    assert labels.index("status offline") < labels.index("command_started AWAITING_RECONNECT")  # P1920
    env.dash.set_online("hsb1", True)
    await stream.until(lambda m: label(m, "hsb1") == "registration")
    cid = (await env.browser.dispatch("switch", "hsb1", force=True))["results"][0]["command_id"]
    assert (await stream.until(finished(cid)))["payload"]["fields"]["status"] == "SUCCESS"  # only the first switch


async def test_pull_failure(env: Env) -> None:
    env.remote.state = MERGED
    env.dash.remote_changed()
    env.dash.set_fault("hsb1", "pull_fails")
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("pull", "hsb1"))["results"][0]["command_id"]
    cmd = (await stream.until(finished(cid)))["payload"]["fields"]
    assert cmd["status"] == "ERROR" and cmd["exit_code"] == 1
    assert "progress pull 0/4 error" in [label(m, "hsb1") for m in stream.seen]
    assert any("fatal: unable to access" in m["payload"]["line"] for m in stream.seen if label(m, "hsb1") == "output")
    assert env.dash.hosts["hsb1"].generation == HEAD.git_commit[:7]


async def test_pull_is_partial_when_version_json_lacks_lock_hash(env: Env) -> None:
    env.dash.drop_lock_hash()
    stream = await env.browser.ws()
    init = await stream.next()
    hsb1 = next(h for h in init["payload"]["hosts"] if h["id"] == "hsb1")
    assert hsb1["update_status"]["lock"]["message"] == "Remote version missing lockHash (version.json)"
    assert hsb1["update_status"]["system"]["message"] == "Remote verification degraded (Git/Lock error)"
    cid = (await env.browser.dispatch("pull", "hsb1", force=True))["results"][0]["command_id"]
    cmd = (await stream.until(finished(cid)))["payload"]["fields"]
    assert cmd["status"] == "PARTIAL" and cmd["exit_code"] == 0 and cmd["error"] == "Lock status not ok after pull"


async def test_merge_then_pull_turns_git_and_lock_ok(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    env.remote.state = MERGED
    blocked = await env.browser.dispatch("pull", "hsb1")
    assert blocked["results"][0]["code"] == "already_current"  # version.json not refetched yet (§8 #42)
    env.dash.remote_changed()
    status = await stream.until(lambda m: label(m, "hsb1") == "host_status")
    us = status["payload"]["fields"]["update_status"]
    assert us["git"]["status"] == "outdated" and us["git"]["message"].startswith("Behind remote (a1b2c3d → 9f8e7d6): ")
    assert us["lock"]["status"] == "outdated" and us["system"]["message"] == "System not current vs remote (Git/Lock behind)"
    cid = (await env.browser.dispatch("pull", "hsb1"))["results"][0]["command_id"]
    await stream.until(finished(cid))
    beat = await stream.until(lambda m: label(m, "hsb1") == "heartbeat")
    assert beat["payload"]["fields"]["update_status"]["git"]["status"] == "ok"
    assert beat["payload"]["fields"]["update_status"]["lock"]["status"] == "ok"
    again = await env.browser.dispatch("switch", "hsb1")
    assert again["results"][0]["code"] == "already_current"  # isolated-repo mode (§8 #19)


async def test_test_op_updates_tests_compartment(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("test", "hsb0"))["results"][0]["command_id"]
    assert (await stream.until(finished(cid)))["payload"]["fields"]["status"] == "SUCCESS"
    labels = [label(m, "hsb0") for m in stream.seen]
    assert "progress tests 8/8 complete" in labels
    assert env.dash.hosts["hsb0"].tests["message"] in ("Tests passed", "All tests passed")
    assert env.dash.hosts["hsb0"].tests_generation == env.dash.hosts["hsb0"].generation


async def test_rollback_and_unknown_agent_ops(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("rollback", "hsb0"))["results"][0]["command_id"]
    assert (await stream.until(finished(cid)))["payload"]["fields"]["status"] == "SUCCESS"
    cid = (await env.browser.dispatch("bump-flake", "hsb0"))["results"][0]["command_id"]
    cmd = (await stream.until(finished(cid)))["payload"]["fields"]
    assert cmd["status"] == "ERROR" and cmd["error"] == "unknown command"


async def test_kill_on_a_busy_agent_errors_the_command_but_the_switch_goes_on(env: Env) -> None:
    env.dash.set_fault("hsb1", "slow")
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("switch", "hsb1", force=True))["results"][0]["command_id"]
    await stream.until(lambda m: label(m, "hsb1") == "progress system 0/3 in_progress")
    resp = await env.browser.post("/api/hosts/hsb1/kill", {})
    assert resp.json() == {"signal": "SIGTERM", "status": "sent"}
    cmd = (await stream.until(finished(cid)))["payload"]["fields"]
    assert cmd["status"] == "ERROR"
    assert cmd["error"] == "Agent rejected command: command already running (agent running: switch)"
    rejected = await stream.until(lambda m: delta("event")(m) and m["payload"]["payload"].get("category") == "command")
    assert rejected["payload"]["payload"]["details"]["current_command"] == "switch"
    labels = [x for m in stream.seen if (x := label(m, "hsb1"))]
    assert_in_order(labels, ["command_started KILLING", "command_finished ERROR", "pending None"])
    await stream.until(lambda m: label(m, "hsb1") == "progress system 3/3 complete")  # nothing was stopped
    await stream.until(lambda m: label(m, "hsb1") == "registration")


async def test_kill_on_an_idle_agent_leaves_killing_until_ignore(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("restart", "hsb0"))["results"][0]["command_id"]
    await stream.until(lambda m: label(m, "hsb0") == "registration")  # restart never reports a result
    blocked = await env.browser.dispatch("test", "hsb0")
    assert blocked["results"][0]["code"] == "command_pending"  # §8 #27
    resp = await env.browser.post("/api/hosts/hsb0/kill", {"signal": "SIGKILL"})
    assert resp.json() == {"signal": "SIGKILL", "status": "sent"}
    killing = await stream.until(lambda m: label(m, "hsb0") == "command_started KILLING")
    assert killing["payload"]["payload"]["kill_signal"] == "SIGKILL"
    await stream.until(lambda m: label(m, "hsb0") == "heartbeat")
    await stream.until(lambda m: label(m, "hsb0") == "heartbeat")
    assert env.dash.active["hsb0"].status == "KILLING"
    resp = await env.browser.post("/api/hosts/hsb0/timeout-action", {"action": "ignore"})
    assert resp.json() == {"action": "ignore", "status": "ok"}
    cmd = (await stream.until(finished(cid)))["payload"]["fields"]
    assert cmd["status"] == "SKIPPED" and cmd["error"] == "Cancelled by user"
    assert (await env.browser.dispatch("test", "hsb0"))["results"][0]["status"] == "EXECUTING"


async def test_agent_rejecting_commands(env: Env) -> None:
    env.dash.set_fault("hsb1", "rejects_commands")
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("test", "hsb1"))["results"][0]["command_id"]
    cmd = (await stream.until(finished(cid)))["payload"]["fields"]
    assert cmd["status"] == "ERROR" and cmd["exit_code"] == 1
    assert cmd["error"] == "Agent rejected command: command already running (agent running: switch)"
    event = await stream.until(lambda m: delta("event")(m) and m["payload"]["payload"].get("category") == "command")
    assert set(event["payload"]["payload"]) == {"category", "details", "host_id", "level", "message", "timestamp"}
    assert_in_order([x for m in stream.seen if (x := label(m, "hsb1"))],
                    ["command_finished ERROR", "pending None", "event Agent rejected command: command already running"])
    env.dash.set_fault("hsb1", "rejects_commands", on=False)
    cid = (await env.browser.dispatch("test", "hsb1"))["results"][0]["command_id"]
    assert (await stream.until(finished(cid)))["payload"]["fields"]["status"] == "SUCCESS"


async def test_offline_fault_toggles_the_host(env: Env) -> None:
    stream = await env.browser.ws()
    await stream.next()
    env.dash.set_fault("hsb1", "offline")
    await stream.until(lambda m: label(m, "hsb1") == "status offline")
    assert (await env.browser.dispatch("pull", "hsb1"))["results"][0]["code"] == "offline"
    env.dash.set_fault("hsb1", "offline", on=False)
    await stream.until(lambda m: label(m, "hsb1") == "registration")
    with pytest.raises(ValueError):
        env.dash.set_fault("hsb1", "explode")


async def test_stale_pending_command_is_cleaned_up(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(timeout_scale=0.001)  # cleanup every 60 ms, stale after 300 ms
    env.dash.set_fault("hsb1", "slow")
    await env.browser.dispatch("switch", "hsb1", force=True)
    env.dash.restart_dashboard()  # the lifecycle forgets the switch, the DB keeps pending_command
    env.dash.set_online("hsb1", False)  # and the agent never comes back
    stream = await env.browser.ws()
    await stream.next()
    msg = await stream.until(lambda m: delta("host_updated", "hsb1")(m) and "pending_command" in m["payload"]["fields"])
    assert msg["payload"]["fields"] == {"status": "offline", "pending_command": None}


async def test_kill_and_timeout_action_errors(env: Env) -> None:
    post = env.browser.post
    assert (await post("/api/hosts/hsb1/kill")).text == "Bad Request\n"
    bad = await post("/api/hosts/hsb1/kill", {"signal": "SIGHUP"})
    assert bad.status_code == 400 and bad.text == "Invalid signal (must be SIGTERM or SIGKILL)\n"
    none = await post("/api/hosts/hsb1/kill", {})
    assert none.status_code == 409 and none.text == "No active command for host\n"
    assert (await post("/api/hosts/hsb1/timeout-action", {"action": "nap"})).text == "Invalid action\n"
    resp = await post("/api/hosts/hsb1/timeout-action", {"action": "ignore"})
    assert resp.status_code == 409 and resp.text == "No active command for host\n"


async def test_timeouts_wait_and_panic(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(timeout_scale=0.001)  # warn after 0.3 s, hard after 0.9 s, reconnect 0.09 s
    stream = await env.browser.ws()
    await stream.next()
    cid = (await env.browser.dispatch("restart", "hsb0"))["results"][0]["command_id"]
    warn = await stream.until(lambda m: label(m, "hsb0") == "command_started RUNNING_WARNING")
    assert warn["payload"]["payload"]["warning_at"]
    resp = await env.browser.post("/api/hosts/hsb0/timeout-action", {"action": "wait", "minutes": 0})
    assert resp.json() == {"action": "wait", "status": "ok"}
    extended = await stream.until(lambda m: label(m, "hsb0") == "command_started EXECUTING")
    assert extended["payload"]["payload"]["timeout_extended"] == 300_000_000_000
    hard = await stream.until(lambda m: label(m, "hsb0") == "command_started TIMEOUT_PENDING")
    assert hard["payload"]["payload"]["id"] == cid and hard["payload"]["payload"]["hard_timeout_at"]
    assert env.dash.hosts["hsb0"].pending_command is None  # cleared by the re-registration, lifecycle still holds it
    await env.browser.post("/api/hosts/hsb0/timeout-action", {"action": "ignore"})
    await stream.until(finished(cid))


async def test_wait_after_the_watcher_stopped_is_a_500(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(timeout_scale=1.0)  # a 90 s reconnect window: plenty of time to poke it
    env.dash.set_fault("hsb1", "never_reconnects")
    stream = await env.browser.ws()
    await stream.next()
    await env.browser.dispatch("switch", "hsb1", force=True)
    await stream.until(lambda m: label(m, "hsb1") == "command_started AWAITING_RECONNECT")
    await stream.until(lambda m: label(m, "hsb1") == "status offline")  # the agent exited and stays away
    resp = await env.browser.post("/api/hosts/hsb1/timeout-action", {"action": "wait", "minutes": 1})
    assert resp.status_code == 500 and resp.content == b""
    assert env.dash.active["hsb1"].status == "EXECUTING"  # flipped before the panic (§3.8)


async def test_restart_dashboard(env: Env) -> None:
    stream = await env.browser.ws()
    before = (await stream.next())["version"]
    env.dash.set_fault("hsb1", "slow")
    await env.browser.dispatch("switch", "hsb1", force=True)
    assert "hsb1" in env.dash.active
    env.dash.restart_dashboard()
    assert all(h.status == "offline" for h in env.dash.hosts.values())
    assert env.dash.hosts["hsb1"].pending_command == "switch"  # a DB leftover until the agent registers
    assert env.dash.active == {} and (await env.browser.http.get("/api/command-states")).json() == {"states": {}}
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await stream.next()
    fresh = await env.browser.ws()  # the session survived
    init = await fresh.next()
    assert init["version"] > before
    await fresh.until(lambda m: label(m, "hsb1") == "registration")
    assert env.dash.hosts["hsb1"].pending_command is None
    orphan = next(c for c in init["payload"]["commands"] if c["host_id"] == "hsb1")
    assert orphan["status"] == "EXECUTING" and orphan["started_at"] == ""


# --- pure logic ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "fleet.example.com", True),
        ("https://fleet.example.com", "fleet.example.com", True),
        ("http://fleet.example.com", "fleet.example.com", False),
        ("https://fleet.example.com", "fleet.example.com:8443", False),
        ("https://fleet.example.com:8443", "fleet.example.com:8443", True),
        ("http://localhost:5173", "127.0.0.1:8000", True),
        ("http://evil.example", "127.0.0.1:8000", False),
        ("http://[::1]:8000", "[::1]:8000", False),
        ("https://allowed.example", "fleet.example.com", True),
        ("not a url", "fleet.example.com", False),
    ],
)
def test_check_origin(origin: str | None, host: str, ok: bool) -> None:
    assert check_origin(origin, host, ["https://allowed.example"]) is ok


def test_rate_limiter_sliding_window() -> None:
    limiter = RateLimiter(limit=5, window=60)
    assert all(limiter.allow("ip", t) for t in (0, 1, 2, 3, 4))
    assert not limiter.allow("ip", 30)
    assert not limiter.allow("ip", 59.9)  # refusals are not recorded but do not help either
    assert limiter.allow("ip", 60.5)
    assert limiter.allow("other", 30)
    limiter.reset("ip")
    assert all(limiter.allow("ip", 61) for _ in range(5))


def test_totp_rfc6238_vectors() -> None:
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # "12345678901234567890"
    assert totp_code(secret, 59 // 30) == "287082"
    assert totp_code(secret, 1111111109 // 30) == "081804"
    assert totp_valid(secret, "081804", 1111111109 + 30)
    assert not totp_valid(secret, "081804", 1111111109 + 90)
    assert not totp_valid(secret, "81804", 1111111109)


def test_decode_go_json() -> None:
    schema = {"op": "str", "hosts": "list", "force": "bool", "minutes": "int"}
    assert decode_go_json(b"", schema) is None
    assert decode_go_json(b"   ", schema) is None
    assert decode_go_json(b"[1]", schema) is None
    assert decode_go_json(b"null", schema) == {"op": "", "hosts": [], "force": False, "minutes": 0}
    assert decode_go_json(b'{"OP":"pull","Hosts":["a",null],"x":1} trailing', schema) == {
        "op": "pull", "hosts": ["a", ""], "force": False, "minutes": 0}
    assert decode_go_json(b'{"force":"yes"}', schema) is None
    assert decode_go_json(b'{"minutes":1.5}', schema) is None
    assert decode_go_json(b'{"minutes":true}', schema) is None


def test_go_json_sorts_keys_and_escapes_html() -> None:
    assert go_json({"b": "<x>&", "a": "→"}) == '{"a":"→","b":"\\u003cx\\u003e\\u0026"}'


NOW = datetime(2025, 12, 28, 14, 30, 5, tzinfo=timezone.utc)


def test_git_status_cases() -> None:
    remote = DesiredState("9f8e7d6" + "0" * 33, "aa", "Merge #42")
    assert git_status(None, "a1b2c3d", NOW)["message"] == "Remote version not available"
    assert git_status(DesiredState("", "aa", ""), "a1b2c3d", NOW)["message"] == \
        "Remote version missing gitCommit (version.json)"
    assert git_status(remote, "", NOW)["status"] == "unknown"
    assert git_status(remote, "9f8e7d6", NOW)["status"] == "ok"
    assert git_status(remote, "a1b2c3d", NOW) == {
        "checked_at": "2025-12-28T14:30:05Z", "message": "Behind remote (a1b2c3d → 9f8e7d6): Merge #42",
        "status": "outdated"}


def test_lock_status_cases() -> None:
    remote = DesiredState("c", "5e6f7a8b" + "0" * 56, "")
    assert lock_status(remote, "", NOW)["status"] == "unknown"
    assert lock_status(remote, remote.lock_hash, NOW)["message"] == "flake.lock is current"
    assert lock_status(remote, "1a2b3c4d" + "f" * 56, NOW)["message"] == \
        "flake.lock outdated (host: 1a2b3c4d, latest: 5e6f7a8b)"
    assert lock_status(DesiredState("c", "", ""), "1a", NOW)["status"] == "error"


def test_system_and_tests_gating() -> None:
    ok, outdated, err, unknown = (status_check(s, s) for s in ("ok", "outdated", "error", "unknown"))
    stored = status_check("ok", "Last switch succeeded", "2025-12-28T12:00:00Z")
    assert gate_system(stored, ok, ok) is stored
    assert gate_system(stored, outdated, ok)["message"] == "System not current vs remote (Git/Lock behind)"
    assert gate_system(stored, ok, err)["message"] == "Remote verification degraded (Git/Lock error)"
    assert gate_system(stored, unknown, ok)["status"] == "unknown"
    assert gate_system(stored, ok, None)["status"] == "unknown"
    assert gate_system(None, ok, ok) is None
    assert gate_system(None, ok, outdated)["checked_at"] == ""
    failed = status_check("error", "Switch failed (exit 1)")
    assert gate_system(failed, outdated, ok) is failed
    tests = status_check("ok", "Tests passed")
    assert gate_tests_snapshot(tests, "a1b2c3d", "a1b2c3d") is tests
    assert gate_tests_snapshot(tests, "a1b2c3d", "9f8e7d6")["message"] == "Tests outdated for current deployed state"
    assert gate_tests_snapshot(None, "", "x") is None
    assert gate_tests_heartbeat(tests, ok, ok, ok, "t") is tests
    assert gate_tests_heartbeat(tests, ok, outdated, ok, "t")["message"] == "Tests outdated for current remote state"
    assert gate_tests_heartbeat(tests, ok, ok, err, "t")["message"] == "Remote verification degraded (Git/Lock error)"
    assert gate_tests_heartbeat(tests, ok, unknown, ok, "t")["status"] == "unknown"
    assert gate_tests_heartbeat(tests, failed, ok, ok, "t")["message"] == "Tests outdated for current deployed state"


def _view(**kw: Any) -> ValidationView:
    base = {"online": True, "pending": "", "git": "outdated", "lock": "ok", "system": "outdated",
            "agent_outdated": False}
    return ValidationView(**(base | kw))


@pytest.mark.parametrize(
    ("op", "view", "code"),
    [
        ("pull", _view(), None),
        ("pull", _view(online=False), "offline"),
        ("pull", _view(pending="switch"), "busy"),
        ("pull", _view(git="ok"), "already_current"),
        ("switch", _view(lock="outdated"), "lock_outdated"),
        ("switch", _view(system="ok"), "already_current"),
        ("switch", _view(system="ok", agent_outdated=True), None),
        ("switch", _view(lock="error"), None),
        ("test", _view(git="ok", system="ok"), None),
        ("reboot", _view(pending="switch"), None),
        ("stop", _view(), "no_pending"),
        ("stop", _view(online=False, pending="switch"), None),
        ("remove", _view(), "online"),
        ("merge-pr", _view(online=False), None),
    ],
)
def test_validators(op: str, view: ValidationView, code: str | None) -> None:
    result = validate_op(op, view)
    assert (result[0] if result else None) == code


def test_command_ids_and_go_times() -> None:
    ids = CommandIds()
    now = datetime(2025, 12, 28, 14, 30, 5, 123456).astimezone()
    made = {ids.new(now) for _ in range(500)}
    assert len(made) == 500
    assert all(re.fullmatch(r"20251228-\d{6}\.123-[0-9a-f]{4}", i) for i in made)
    assert fmt_local(None) == "0001-01-01T00:00:00Z"
    assert re.fullmatch(r"2025-12-28T\d\d:30:05\.123456(Z|[+-]\d\d:\d\d)", fmt_local(now))
