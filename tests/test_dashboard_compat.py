"""Compliance of the dashboard client, fleet model and deploy engine with the contract,
against a faithful-but-different NixFleet dashboard.

Each test answers the way an independent implementation of
``shared/contracts/nixfleet-dashboard-api.md`` may (section numbers in the docstrings)
where our own simulator happens to answer differently: exact §4.7 message sequences
with the §4.4 races replayed by a tiny ``websockets`` server on 127.0.0.1, REST answers
through ``httpx.MockTransport`` with the real body styles (chi's plain text, empty-body
panics, 302-only login with its ``error`` variants and cookie attributes).

The engine findings of the review (cancel, send_failed, TIMEOUT_PENDING, a forgotten
command) are reproduced at the end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from nfu_tui.clients import _dashboard_protocol as p
from nfu_tui.clients._dashboard_protocol import (
    Connected,
    DispatchResult,
    Message,
    SyncAction,
)
from nfu_tui.clients.dashboard import DashboardClient
from nfu_tui.clients.fleet import FleetModel
from nfu_tui.config import Config
from nfu_tui.core.engine import (
    CancelRequested,
    DeployEngine,
    HostProgress,
    HostStarted,
    Outcome,
    RunStatus,
    Timeouts,
)
from nfu_tui.core.live import LiveFleet
from nfu_tui.core.plan import make_plan
from nfu_tui.core.store import DeployLock, Store
from nfu_tui.errors import DashboardError, DashboardUnavailable, LoginFailed
from nfu_tui.models import CIStatus, CIVerdict, Command, UpdatePR

PASSWORD = "compat password, not a secret"
COOKIE = "c29tZS1yYW5kb20tc2Vzc2lvbi1ieXRlcy0zMi0tLS0="  # 44 chars, base64url with padding (§2.3)
CSRF = "Y3NyZi10b2tlbi1ieXRlcy0zMi1sb25nLS0tLS0tLS0="
ZERO = "0001-01-01T00:00:00Z"

# ===================================================================== messages (§4.4–§4.7, §5, §6.3)


def host(hid: str, **over: Any) -> dict[str, Any]:
    """An init/full_state host (§5.1): ``pending_command`` is ``""`` when idle, never null."""
    data = {
        "agent_outdated": False, "agent_version": "3.1.5", "available_ops": ["pull", "switch", "test", "reboot"],
        "device_type": "server", "generation": "a1b2c3d", "host_type": "nixos", "hostname": hid, "id": hid,
        "last_seen": "2025-12-28T14:30:05Z", "location": "home", "metrics": {"cpu": 7.5, "load": 0.31, "ram": 41.2, "swap": 0},
        "pending_command": "", "status": "online", "theme_color": "#7aa2f7",
        "update_status": {
            "git": {"checked_at": "2025-12-28T14:30:07Z", "message": "Up to date with remote", "status": "ok"},
            "lock": {"checked_at": "2025-12-28T14:30:05Z", "message": "flake.lock is current", "status": "ok"},
            "system": {"checked_at": "2025-12-28T12:02:11Z", "message": "Switch successful (exit 0)", "status": "ok"},
            "tests": None, "repo_dir": "/var/lib/nixfleet-agent/repo", "repo_url": "git@github.com:o/nixcfg.git",
        },
    }  # fmt: skip
    data.update(over)
    return data


def command(cid: str, hid: str, op: str, status: str, **over: Any) -> dict[str, Any]:
    """A command object as deltas and legacy ``command_state`` carry it (§6.3): local offsets, zero times."""
    data = {
        "id": cid, "host_id": hid, "op": op, "pipeline_id": "", "status": status,
        "created_at": "2025-12-28T15:30:05.123456789+01:00", "started_at": ZERO, "finished_at": ZERO,
        "exit_code": None, "error": "", "output_file": "",
    }  # fmt: skip
    data.update(over)
    return data


def snapshot(version: int, hosts: list[dict] | None, commands: list[dict] | None = None, kind: str = "init") -> dict:
    return {"type": kind, "version": version,
            "payload": {"hosts": hosts, "commands": commands, "pipelines": None, "events": None}}  # fmt: skip


def delta(version: int, change: dict) -> dict:
    return {"type": "delta", "version": version, "payload": change}


def host_updated(version: int, hid: str, **fields: Any) -> dict:
    return delta(version, {"type": "host_updated", "id": hid, "fields": fields})


def heartbeat(version: int, hid: str, **fields: Any) -> dict:
    """§4.5 heartbeat delta: ``update_status`` always has ``git``, other compartments only when known."""
    base = {"status": "online", "last_seen": "2025-12-28T14:30:10Z", "generation": "a1b2c3d", "metrics": None,
            "update_status": {"git": {"checked_at": "2025-12-28T14:30:10Z", "message": "Up to date with remote",
                                      "status": "ok"}}}  # fmt: skip
    base.update(fields)
    return host_updated(version, hid, **base)


def cmd_delta(version: int, cmd: dict) -> dict:
    """The change type and the place of the object follow the server's rule (lifecycle_adapter, §4.5)."""
    if cmd["status"] in ("SUCCESS", "ERROR", "TIMEOUT", "SKIPPED", "BLOCKED", "PARTIAL"):
        return delta(version, {"type": "command_finished", "id": cmd["id"], "fields": cmd})
    if cmd["started_at"] != ZERO:
        return delta(version, {"type": "command_started", "id": cmd["id"], "payload": cmd})
    return delta(version, {"type": "command_progress", "id": cmd["id"], "fields": cmd})


def legacy_state(cmd: dict) -> dict:
    return {"type": "command_state", "payload": {"host_id": cmd["host_id"], "command": cmd}}


def event(version: int, eid: int, hid: str, op: str, level: str, message: str) -> dict:
    return delta(version, {"type": "event", "payload": {
        "action": f"op:{op}", "actor": "system", "category": "ops", "details": None, "host_id": hid, "id": eid,
        "level": level, "message": message, "timestamp": "2025-12-28T14:30:05Z"}})  # fmt: skip


def out(hid: str, line: str) -> dict:
    return {"type": "command_output", "payload": {"host_id": hid, "line": line, "command": "", "is_error": False}}


def at(cmd: dict, status: str, **over: Any) -> dict:
    return {**cmd, "status": status, **over}


PULL = command("20251228-153005.123-7777", "hsb1", "pull", "VALIDATING")
PULL_EXEC = at(PULL, "EXECUTING", started_at="2025-12-28T15:30:05.140012+01:00")
PULL_DONE = at(PULL_EXEC, "SUCCESS", exit_code=0, finished_at="2025-12-28T15:31:02.41+01:00")


# ====================================================================== pure protocol


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Go's time.Time.String() (what a SQLite TEXT column may hold and an init row pass through, §1.3)
        ("2025-12-28 15:30:05.123456789 +0100 CET", "2025-12-28T14:30:05Z"),
        ("2025-12-28 15:30:05.123456789 +0100 CET m=+12.000000001", "2025-12-28T14:30:05Z"),
        ("2025-12-28 14:30:05 +0000 UTC", "2025-12-28T14:30:05Z"),
        # SQLite datetime('now') and the modernc driver's own format
        ("2025-12-28 14:30:05", "2025-12-28T14:30:05Z"),
        ("2025-12-28 15:30:05.5+01:00", "2025-12-28T14:30:05Z"),
        # Go RFC 3339 with nanoseconds and local offset; zero time; init's ""
        ("2025-12-28T09:30:05.123456789-05:00", "2025-12-28T14:30:05Z"),
        (ZERO, ""),
        ("", ""),
        (None, ""),
    ],
)
def test_every_time_format_of_section_1_3_normalises(raw: Any, expected: str) -> None:
    """§1.3, §8 #13: command rows in init are "RFC 3339-ish" strings straight from the DB."""
    assert p.normalize_time(raw) == expected


def test_command_rows_in_go_string_format_order_correctly() -> None:
    """§4.4 init ``commands``: creation times from the DB order a host's commands (newest first)."""
    model = FleetModel()
    model.apply(snapshot(10, [host("hsb1", pending_command="switch")], [
        command("b", "hsb1", "switch", "EXECUTING", created_at="2025-12-28 15:40:00.5 +0100 CET"),
        command("a", "hsb1", "pull", "SUCCESS", created_at="2025-12-28T14:35:00Z", exit_code=0),
    ]))  # fmt: skip
    snap = model.snapshot()
    assert [c.id for c in snap.commands_for("hsb1")] == ["b", "a"]
    assert snap.active_command("hsb1").id == "b"


def test_stale_and_duplicate_deltas_after_a_snapshot_are_not_gaps() -> None:
    """§4.4 races 1–3: the snapshot's version is read before its state is assembled, so a
    delta with a version ≤ the local one is already reflected. It must not cost a full_state
    (with 200 deltas/s a late one after every snapshot would otherwise resync forever)."""
    tracker = p.SyncTracker()
    assert tracker.decide("init", 100) is SyncAction.SNAPSHOT
    assert tracker.decide("delta", 99) is SyncAction.IGNORE  # sent before init, delivered after
    assert tracker.decide("delta", 100) is SyncAction.IGNORE  # duplicate of what the snapshot has
    assert tracker.decide("delta", 101) is SyncAction.APPLY
    assert tracker.decide("delta", 101) is SyncAction.IGNORE  # duplicate delivery
    assert tracker.decide("delta", 103) is SyncAction.RESYNC  # a real gap still resyncs…
    assert tracker.decide("delta", 102) is SyncAction.APPLY  # …and the late one still applies


def test_sync_beacon_behind_the_local_version_is_not_a_gap() -> None:
    """§4.4: the beacon reads the counter and is sent by another goroutine than the deltas;
    a beacon older than what was applied says nothing is missing."""
    tracker = p.SyncTracker()
    tracker.decide("init", 100)
    tracker.decide("delta", 101)
    assert tracker.decide("sync", 100) is SyncAction.IGNORE
    assert tracker.decide("sync", 101) is SyncAction.IGNORE
    assert tracker.decide("sync", 105) is SyncAction.RESYNC  # ahead: deltas were dropped


@pytest.mark.parametrize(
    ("location", "error", "flags"),
    [
        ("/login?error=Server+error", DashboardUnavailable, {}),  # session could not be stored: transient
        ("/login?error=Server%20error", DashboardUnavailable, {}),
        ("/login?error=Too+many+attempts.+Please+wait.", LoginFailed, {"rate_limited": True}),
        ("/login?error=Invalid+TOTP+code", LoginFailed, {"needs_totp": True}),
        ("/login?error=Invalid+password", LoginFailed, {}),
        ("/login?error=Invalid+request", LoginFailed, {}),
        ("https://fleet.example.org/login?error=Invalid+password", LoginFailed, {}),
    ],
)
def test_login_302_error_variants(location: str, error: type[Exception], flags: dict[str, bool]) -> None:
    """§2.1: every outcome is a 302; "Server error" is the dashboard's own failure, not the user's."""
    with pytest.raises(error) as info:
        p.interpret_login(302, location)
    assert type(info.value) is error
    for name, value in flags.items():
        assert getattr(info.value, name) is value


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([f"nixfleet_session={COOKIE}; Path=/; Expires=Mon, 29 Dec 2025 14:30:05 GMT; HttpOnly; SameSite=Lax"], COOKIE),
        ([f"nixfleet_session={COOKIE}; Path=/; Expires=Mon, 29 Dec 2025 14:30:05 GMT; HttpOnly; Secure; SameSite=Lax"],
         COOKIE),
        (["lb=abc; Path=/", f'nixfleet_session="{COOKIE}"; Path=/'], COOKIE),
        # an implementation that first clears a previous session cookie, then sets the new one
        (["nixfleet_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
          f"nixfleet_session={COOKIE}; Path=/; HttpOnly; SameSite=Lax"], COOKIE),
        ([f"nixfleet_session={COOKIE}; Path=/; Max-Age=0"], None),
        (["nixfleet_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"], None),
    ],
)
def test_session_cookie_attributes(headers: list[str], expected: str | None) -> None:
    """§2.3 cookie attributes, §2.6 the clearing cookie (``Max-Age=0``)."""
    assert p.session_cookie(headers) == expected


def test_csrf_token_escaped_by_an_html_template() -> None:
    """§2.4: a template engine may escape the attribute (Go's html/template writes ``+`` as ``&#43;``)."""
    assert p.scrape_csrf('<body class="x" data-csrf-token="ab&#43;c&#61;">') == "ab+c="


def test_dispatch_results_are_matched_to_hosts_in_request_order() -> None:
    """§3.4: one result per requested entry, in request order; uppercase success, lowercase failures."""
    body = {"results": [
        {"command_id": "20251228-143005.123-7777", "status": "EXECUTING"},
        {"code": "send_failed", "message": "Failed to send command to agent", "status": "blocked"},
        {"error": "Host not found", "status": "error"},
    ], "status": "partial", "summary": {"error": 2, "success": 1, "total": 3}}  # fmt: skip
    results = p.parse_dispatch(body, ["hsb1", "gpc0", "nope"])
    assert [(r.host_id, r.outcome, r.code) for r in results] == [
        ("hsb1", "started", ""), ("gpc0", "blocked", "send_failed"), ("nope", "error", "")]


def test_dispatch_failed_with_only_blocked_and_error_entries() -> None:
    """§3.4, §8 #22: HTTP 200 with ``"status":"failed"``; nothing raised, every entry reported."""
    body = {"results": [
        {"code": "command_pending", "host_id": "hsb1", "message": "Command 'switch' already running", "status": "blocked"},
        {"error": "Host not found", "host_id": "nope", "status": "error"},
    ], "status": "failed", "summary": {"error": 2, "success": 0, "total": 2}}  # fmt: skip
    results = p.parse_dispatch(body, ["hsb1", "nope"])
    assert [(r.outcome, r.code, r.message) for r in results] == [
        ("blocked", "command_pending", "Command 'switch' already running"), ("error", "", "Host not found")]


# ========================================================================= fleet model


def test_terminal_command_survives_a_full_state_that_no_longer_lists_it() -> None:
    """§4.4: init/full_state ``commands`` is a window (50 newest rows), not the whole set. A
    command whose ``command_finished`` was applied must stay finished when a resync follows
    before anybody looked (a waiting deploy would otherwise never see its end)."""
    model = FleetModel()
    model.apply(snapshot(10, [host("hsb1")]))
    for i, msg in enumerate([PULL, PULL_EXEC, PULL_DONE], start=11):
        model.apply(cmd_delta(i, msg))
    model.apply(heartbeat(20, "hsb1"))  # gap → get_state
    assert model.take_resync_request()
    others = [command(f"20251228-1540{i:02d}.000-1111", f"h{i}", "pull", "EXECUTING") for i in range(50)]
    model.apply(snapshot(80, [host("hsb1")], others, kind="full_state"))
    finished = model.command(PULL["id"])
    assert finished is not None and finished.status == "SUCCESS" and finished.exit_code == 0


def test_full_state_still_replaces_what_it_lists() -> None:
    """A command the snapshot lists takes the snapshot's (newer) state; a finished one is never resurrected."""
    model = FleetModel()
    model.apply(snapshot(10, [host("hsb1", pending_command="pull")], [PULL_EXEC]))
    model.apply(snapshot(20, [host("hsb1")], [at(PULL_DONE, "PARTIAL", error="Lock status not ok after pull")],
                         kind="full_state"))
    assert model.command(PULL["id"]).status == "PARTIAL"
    model.apply(snapshot(30, [host("hsb1")], [PULL_EXEC], kind="full_state"))  # an older row: ignored
    assert model.command(PULL["id"]).status == "PARTIAL"


def test_late_legacy_command_state_does_not_hide_timeout_pending() -> None:
    """§4.4 race 7, §6.7: legacy ``command_state`` travels through another queue; the copy of an
    older state must not overwrite the ``TIMEOUT_PENDING`` that needs a user action."""
    model = FleetModel()
    switch = command("20251228-153005.123-5555", "hsb1", "switch", "EXECUTING", started_at="2025-12-28T15:30:06+01:00")
    model.apply(snapshot(10, [host("hsb1", pending_command="switch")], [switch]))
    warn = at(switch, "RUNNING_WARNING", warning_at="2025-12-28T15:40:06+01:00")
    pending = at(warn, "TIMEOUT_PENDING", hard_timeout_at="2025-12-28T16:00:06+01:00")
    model.apply(cmd_delta(11, warn))
    model.apply(cmd_delta(12, pending))
    model.apply(legacy_state(warn))  # late
    assert model.command(switch["id"]).status == "TIMEOUT_PENDING"
    model.apply(legacy_state(at(pending, "SKIPPED", error="Cancelled by user")))  # early terminal copy: taken
    assert model.command(switch["id"]).status == "SKIPPED"


def test_output_is_not_attributed_to_a_command_that_never_reached_the_agent() -> None:
    """§6.5: the agent gets a command only after ``EXECUTING``; a ``VALIDATING`` or ``BLOCKED``
    switch owns no output. Late pull lines (legacy queue, §4.4 race 7) stay with the pull."""
    clock = [1000.0]
    model = FleetModel(clock=lambda: clock[0])
    model.apply(snapshot(10, [host("hsb1")]))
    v = 11
    for msg in (PULL, PULL_EXEC, PULL_DONE):
        model.apply(cmd_delta(v, msg))
        v += 1
    blocked = command("20251228-153103.000-6666", "hsb1", "switch", "VALIDATING")
    model.apply(cmd_delta(v, blocked))
    model.apply(cmd_delta(v + 1, at(blocked, "BLOCKED", error="Pull required before switch (lock outdated)")))
    forced = command("20251228-153103.100-6666", "hsb1", "switch", "VALIDATING")
    model.apply(cmd_delta(v + 2, forced))
    model.apply(out("hsb1", "HEAD is now at 9f8e7d6 flake.lock: Update"))  # the pull's last line, late
    model.apply(cmd_delta(v + 3, at(forced, "EXECUTING", started_at="2025-12-28T15:31:03.2+01:00")))
    model.apply(out("hsb1", "building the system configuration..."))
    lines = model.output("hsb1")
    assert [(line.command_id, line.op) for line in lines] == [(PULL["id"], "pull"), (forced["id"], "switch")]


def test_host_added_for_a_known_host_leaves_its_connection_state_alone() -> None:
    """§3.2/§4.5: ``POST /api/hosts`` upserts (type/location/device/color; status untouched) and
    emits ``host_added`` with the 8-field payload (``status:"offline"``, ``pending_command:null``)
    also for an existing host. That must not make an online, busy host look offline and idle."""
    model = FleetModel()
    model.apply(snapshot(10, [host("hsb1", pending_command="switch")]))
    payload = {"device_type": "desktop", "host_type": "nixos", "hostname": "hsb1", "id": "hsb1", "location": "work",
               "pending_command": None, "status": "offline", "theme_color": "#bb9af7"}  # fmt: skip
    model.apply(delta(11, {"type": "host_added", "id": "hsb1", "payload": payload}))
    h = model.host("hsb1")
    assert (h.location, h.device_type, h.theme_color) == ("work", "desktop", "#bb9af7")
    assert h.online and h.busy and h.pending_command == "switch"


def test_orphaned_command_is_finished() -> None:
    """§6.4 ``ORPHANED`` ("Dashboard restarted", CORE-003 recovery): an implementation that runs
    the startup recovery lists such rows in init; the dashboard will never finish them."""
    model = FleetModel()
    orphan = at(PULL_EXEC, "ORPHANED", error="Dashboard restarted")
    model.apply(snapshot(10, [host("hsb1")], [orphan]))
    assert model.command(PULL["id"]).terminal and model.snapshot().active_command("hsb1") is None


def test_init_null_arrays_empty_strings_and_legacy_status() -> None:
    """§4.4 fresh install; §5.1 ``""`` strings and ``pending_command``; §5.2 legacy ``running``."""
    model = FleetModel()
    model.apply({"type": "init", "version": 0, "payload": {"hosts": None, "commands": None, "pipelines": None,
                                                           "events": None}})  # fmt: skip
    assert model.synced and not model.snapshot().hosts
    model.apply(snapshot(1, [host("old", status="running", last_seen="", generation="", agent_version="",
                                  metrics=None, update_status={"git": None, "lock": None, "system": None,
                                                               "tests": None, "repo_url": "", "repo_dir": ""})]))
    old = model.host("old")
    assert old.online and not old.busy and old.available_ops == () and old.last_seen == ""
    model.apply(host_updated(2, "old", pending_command=None, last_seen=None))
    assert model.host("old").pending_command == "" and model.host("old").last_seen == ""


# ================================================================ REST (httpx.MockTransport)


class Dash:
    """The HTTP side of an independent dashboard: routes answer with recorded-style bodies."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response] | list[httpx.Response]] = {}
        self.requests: list[httpx.Request] = []
        self.login_answers: list[httpx.Response] = []
        self.valid_cookie = COOKIE
        self.unauthorized = 302  # how a missing session is answered under /api: 302 → /login, or 401

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path)
        if key == ("POST", "/login"):
            if self.login_answers:
                return self.login_answers.pop(0)
            return login_ok()
        if f"nixfleet_session={self.valid_cookie}" not in request.headers.get("cookie", ""):
            if self.unauthorized == 401 and request.url.path.startswith("/api/"):
                return text(401, "Unauthorized")
            return httpx.Response(302, headers={"location": "/login"},
                                  content=b'<a href="/login">Found</a>.\n' if request.method == "GET" else b"")
        if key == ("GET", "/"):
            return httpx.Response(200, headers={"content-type": "text/html; charset=utf-8"},
                                  text=f'<html><body data-csrf-token="{CSRF}"><footer>NixFleet 3.1.5 (abc1234)</footer>')
        if request.method != "GET" and request.headers.get("x-csrf-token") != CSRF:
            return text(403, "Forbidden")
        route = self.routes.get(key)
        if route is None:  # chi's defaults (§1.1): text 404; a 405 has an empty body
            return text(404, "404 page not found")
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route(request)

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if (r.method, r.url.path) == (method, path))


def login_ok(cookie: str = COOKIE, *extra: str) -> httpx.Response:
    """§2.1 success: 302 to ``/`` with the §2.3 cookie (after any ``extra`` Set-Cookie headers)."""
    attributes = "Path=/; Expires=Mon, 29 Dec 2099 14:30:05 GMT; HttpOnly; SameSite=Lax"
    headers = [("location", "/"), *[("set-cookie", c) for c in extra],
               ("set-cookie", f"nixfleet_session={cookie}; {attributes}")]  # fmt: skip
    return httpx.Response(302, headers=headers)


def login_error(error: str) -> httpx.Response:
    return httpx.Response(302, headers={"location": "/login?error=" + error})


def text(status: int, body: str) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "text/plain; charset=utf-8"}, text=body + "\n")


def jsonr(status: int, data: Any) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/json"}, content=json.dumps(data).encode() + b"\n")


def client_for(dash: Dash, url: str = "http://127.0.0.1:8000", **kw: Any) -> DashboardClient:
    return DashboardClient(url=url, password=PASSWORD, transport=httpx.MockTransport(dash), **kw)


async def test_login_accepts_a_clearing_cookie_before_the_new_one() -> None:
    """§2.3/§2.6: the session cookie is the last non-cleared ``nixfleet_session``."""
    dash = Dash()
    dash.login_answers = [login_ok(COOKIE, "nixfleet_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")]
    async with client_for(dash) as c:
        await c.login()
        assert c.logged_in
    assert dash.count("GET", "/") == 1


async def test_rest_relogin_on_server_error_reports_unavailable_not_a_bad_password() -> None:
    """§2.1 ``/login?error=Server+error`` (session not stored) is the dashboard's failure."""
    dash = Dash()
    dash.login_answers = [login_error("Server+error")]
    async with client_for(dash) as c:
        with pytest.raises(DashboardUnavailable):
            await c.hosts()


async def test_plain_401_on_the_api_is_a_lost_session() -> None:
    """§2.5: ``requireCSRF`` has a 401 ``Unauthorized`` branch for a missing session; an
    implementation that checks it before ``requireAuth`` answers 401, not 302. Log in again
    once — but a JSON 401 (dispatch's ``Invalid TOTP code``, §3.4) is not a session problem."""
    dash = Dash()
    dash.unauthorized = 401
    dash.routes[("POST", "/api/hosts/hsb1/refresh")] = lambda r: jsonr(200, {"host_id": "hsb1", "online": True})
    dash.routes[("POST", "/api/dispatch")] = [jsonr(401, {"error": "Invalid TOTP code"})]
    async with client_for(dash) as c:
        await c.login()
        dash.valid_cookie = "rotated" + COOKIE[7:]  # the dashboard forgot the session
        dash.login_answers = [login_ok(dash.valid_cookie)]
        assert (await c.refresh_host("hsb1"))["online"] is True
        with pytest.raises(DashboardError) as info:
            await c.dispatch("reboot", ["hsb1"])
    assert dash.count("POST", "/login") == 2 and dash.count("POST", "/api/hosts/hsb1/refresh") == 2
    assert info.value.status == 401 and "Invalid TOTP code" in info.value.message


async def test_rate_limited_login_is_not_hammered() -> None:
    """§2.2: a refused attempt is reported once (``rate_limited``), not retried in a loop."""
    dash = Dash()
    dash.login_answers = [login_error("Too+many+attempts.+Please+wait.")] * 3
    async with client_for(dash) as c:
        with pytest.raises(LoginFailed) as info:
            await c.dispatch("pull", ["hsb1"])
    assert info.value.rate_limited and dash.count("POST", "/login") == 1


async def test_chi_plain_text_404_405_and_empty_500() -> None:
    """§1.1: chi's ``404 page not found``, an empty-bodied 405, and Recoverer's empty 500."""
    dash = Dash()
    dash.routes[("POST", "/api/hosts/hsb1/kill")] = [httpx.Response(405)]
    dash.routes[("POST", "/api/hosts/hsb1/timeout-action")] = [httpx.Response(500)]
    async with client_for(dash) as c:
        with pytest.raises(DashboardError) as e404:
            await c.command_states()  # route absent on this implementation
        with pytest.raises(DashboardError) as e405:
            await c.kill("hsb1")
        with pytest.raises(DashboardError) as e500:
            await c.timeout_action("hsb1", "wait", 5)
    assert e404.value.status == 404 and "404 page not found" in e404.value.message
    assert e405.value.status == 405 and "empty body" in e405.value.message
    assert e500.value.status == 500 and "crashed" in e500.value.message


async def test_hosts_null_and_dispatch_partial_over_http() -> None:
    """§3.1 ``{"hosts":null}``; §3.4 200 ``partial`` with mixed case statuses."""
    dash = Dash()
    dash.routes[("GET", "/api/hosts")] = [jsonr(200, {"hosts": None})]

    def dispatch(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body == {"op": "pull", "hosts": ["hsb1", "gpc0"], "force": True, "totp": ""}
        return jsonr(200, {"results": [
            {"command_id": "20251228-143005.123-7777", "host_id": "hsb1", "status": "EXECUTING"},
            {"code": "offline", "host_id": "gpc0", "message": "Host is offline", "status": "blocked"}],
            "status": "partial", "summary": {"error": 1, "success": 1, "total": 2}})  # fmt: skip

    dash.routes[("POST", "/api/dispatch")] = dispatch
    async with client_for(dash) as c:
        assert await c.hosts() == []
        results = await c.dispatch("pull", ["hsb1", "gpc0"], force=True)
    assert results == [
        DispatchResult("hsb1", "started", "EXECUTING", "20251228-143005.123-7777"),
        DispatchResult("gpc0", "blocked", "blocked", "", "offline", "Host is offline"),
    ]


# ====================================================================== /ws replay server


Script = Callable[[ServerConnection, "Replay"], Awaitable[None]]


class Replay:
    """A local ``/ws`` (127.0.0.1, random port) that replays exact message sequences."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.received: list[dict[str, Any]] = []
        self.port = 0

    async def __aenter__(self) -> Replay:
        self.server = await serve(self._handle, "127.0.0.1", 0, process_request=self._auth, compression=None)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    def _auth(self, connection: ServerConnection, request: Any) -> Any:
        if f"nixfleet_session={COOKIE}" not in request.headers.get("Cookie", ""):
            return connection.respond(401, "Unauthorized\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        await self.scripts.pop(0)(ws, self)

    async def send(self, ws: ServerConnection, *messages: dict) -> None:
        for message in messages:
            await ws.send(json.dumps(message))

    async def expect_get_state(self, ws: ServerConnection) -> None:
        msg = json.loads(await ws.recv())
        self.received.append(msg)
        assert msg == {"type": "get_state"}


def count_resyncs(c: DashboardClient, model: FleetModel) -> list[int | None]:
    """Record the model's version each time the client sends ``get_state``."""
    asked_at: list[int | None] = []
    send = c.request_state

    async def request_state() -> bool:
        asked_at.append(model.version)
        return await send()

    c.request_state = request_state  # type: ignore[method-assign]
    return asked_at


async def follow_until(c: DashboardClient, model: FleetModel, done: Callable[[FleetModel], bool]) -> None:
    async with asyncio.timeout(10):  # a hang guard, not a timing assertion
        async for _event, _changes in c.follow(model):
            if done(model):
                return


async def test_sequence_a_pull_with_every_race() -> None:
    """§4.7 A replayed with the §4.4 races: deltas before init, overlap with the snapshot,
    duplicates, a late legacy ``command_state`` after ``command_finished``, a late output line,
    then a dropped delta that costs exactly one ``get_state``."""

    async def script(ws: ServerConnection, srv: Replay) -> None:
        await srv.send(
            ws,
            heartbeat(199, "hsb1"),  # race 1: registered for deltas before init is queued
            snapshot(200, [host("hsb1", pending_command="pull")], [PULL_EXEC]),  # already EXECUTING inside
            cmd_delta(199, PULL), legacy_state(PULL),  # race 2: older than the snapshot
            event(201, 811, "hsb1", "pull", "info", "Executing pull"),
            event(201, 811, "hsb1", "pull", "info", "Executing pull"),  # duplicate delivery
            {"type": "operation_progress", "payload": {"host_id": "hsb1", "progress": {
                "pull": {"current": 0, "total": 4, "status": "in_progress"}}}},
            out("hsb1", "From github.com:o/nixcfg"),
            host_updated(202, "hsb1", generation="9f8e7d6", update_status={
                "git": {"checked_at": "2025-12-28T14:31:01Z", "message": "Up to date with remote", "status": "ok"},
                "lock": {"checked_at": "2025-12-28T14:31:01Z", "message": "flake.lock is current", "status": "ok"},
                "system": None, "tests": None, "repo_url": "", "repo_dir": ""}),
            cmd_delta(203, PULL_DONE),
            legacy_state(PULL_EXEC),  # race 7: legacy copy of an older state, after the finish
            event(204, 812, "hsb1", "pull", "success", "pull completed successfully"),
            host_updated(205, "hsb1", pending_command=None),
            out("hsb1", "HEAD is now at 9f8e7d6 flake.lock: Update"),  # late output
            heartbeat(206, "hsb1", generation="9f8e7d6"),
            {"type": "sync", "version": 205},  # beacon read before the last delta
            heartbeat(208, "hsb1", generation="9f8e7d6"),  # 207 dropped (full buffer): the only gap
        )  # fmt: skip
        await srv.expect_get_state(ws)
        await srv.send(ws, heartbeat(208, "hsb1", generation="9f8e7d6"),  # in flight: ignored, no 2nd get_state
                       snapshot(209, [host("hsb1", generation="9f8e7d6")], [PULL_DONE], kind="full_state"))
        await ws.wait_closed()

    model = FleetModel()
    async with Replay(script) as srv, client_for(Dash(), url=f"http://127.0.0.1:{srv.port}") as c:
        asked_at = count_resyncs(c, model)
        await follow_until(c, model, lambda m: m.version == 209)
    assert asked_at == [206] and srv.received == [{"type": "get_state"}]  # only the real gap (207) cost a resync
    snap = model.snapshot()
    done = snap.commands[PULL["id"]]
    assert (done.status, done.exit_code, done.created_at) == ("SUCCESS", 0, "2025-12-28T14:30:05Z")
    assert snap.active_command("hsb1") is None and not snap.hosts["hsb1"].busy
    assert snap.hosts["hsb1"].generation == "9f8e7d6"
    assert [(line.text, line.command_id) for line in model.output("hsb1")] == [
        ("From github.com:o/nixcfg", PULL["id"]), ("HEAD is now at 9f8e7d6 flake.lock: Update", PULL["id"])]


async def test_stream_retries_a_login_the_dashboard_failed_to_store() -> None:
    """§2.1 ``/login?error=Server+error``: the stream reports it and retries; it does not end
    as if the password were wrong."""

    async def script(ws: ServerConnection, srv: Replay) -> None:
        await srv.send(ws, snapshot(1, [host("hsb1")]))
        await ws.wait_closed()

    dash = Dash()
    dash.login_answers = [login_error("Server+error")]
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    events: list[Any] = []
    async with Replay(script) as srv, client_for(dash, url=f"http://127.0.0.1:{srv.port}", sleep=sleep) as c:
        async with asyncio.timeout(10):
            async for ev in c.stream():
                events.append(ev)
                if isinstance(ev, Message):
                    break
    assert [type(e).__name__ for e in events] == ["Disconnected", "Connected", "Message"]
    assert "could not store the session" in events[0].reason and delays == [1.0]


async def test_sequence_b_switch_reconnect_with_a_long_running_warning() -> None:
    """§4.7 B + §6.7: a long switch passes ``RUNNING_WARNING``, exits 0 → ``AWAITING_RECONNECT``,
    the agent goes offline, re-registers (registration field set), then ``SUCCESS``."""
    switch = command("20251228-153510.000-3333", "hsb1", "switch", "VALIDATING")
    running = at(switch, "EXECUTING", started_at="2025-12-28T15:35:10.2+01:00")
    awaiting = at(running, "AWAITING_RECONNECT", warning_at="2025-12-28T15:45:10+01:00",
                  reconnect_deadline="2025-12-28T15:48:11.77+01:00")
    reg = {"hostname": "hsb1", "host_type": "nixos", "agent_version": "3.1.5", "os_version": "25.11",
           "nixpkgs_version": "25.11.20251220.1a2b3c4", "generation": "9f8e7d6", "theme_color": "#7aa2f7",
           "location": "home", "device_type": "server", "repo_url": "", "repo_dir": "/var/lib/nixfleet-agent/repo",
           "status": "online", "pending_command": None, "last_seen": "2025-12-28T14:47:00Z"}  # fmt: skip

    async def script(ws: ServerConnection, srv: Replay) -> None:
        await srv.send(
            ws,
            snapshot(300, [host("hsb1")]),
            cmd_delta(301, switch), cmd_delta(302, running), host_updated(303, "hsb1", pending_command="switch"),
            heartbeat(304, "hsb1", update_status={"git": {"status": "ok", "message": "", "checked_at": ""},
                                                  "system": {"status": "working", "message": "Switch in progress...",
                                                             "checked_at": "2025-12-28T14:35:15Z"}}),
            cmd_delta(305, at(running, "RUNNING_WARNING", warning_at="2025-12-28T15:45:10+01:00")),
            cmd_delta(306, awaiting),
            host_updated(307, "hsb1", status="offline"),
            host_updated(308, "hsb1", **reg),
            cmd_delta(309, at(awaiting, "SUCCESS", exit_code=0, finished_at="2025-12-28T15:46:59+01:00")),
            host_updated(310, "hsb1", pending_command=None),
        )  # fmt: skip
        await ws.wait_closed()

    model = FleetModel()
    seen: list[str] = []
    async with Replay(script) as srv, client_for(Dash(), url=f"http://127.0.0.1:{srv.port}") as c:
        asked_at = count_resyncs(c, model)
        async with asyncio.timeout(10):
            async for _event, _changes in c.follow(model):
                cmd = model.command(switch["id"])
                if cmd is not None and (not seen or seen[-1] != cmd.status):
                    seen.append(cmd.status)
                if model.version == 310:
                    break
    assert seen == ["VALIDATING", "EXECUTING", "RUNNING_WARNING", "AWAITING_RECONNECT", "SUCCESS"]
    h = model.host("hsb1")
    assert h.online and not h.busy and h.generation == "9f8e7d6" and h.os_version == "25.11"
    assert model.command(switch["id"]).reconnect_deadline == "2025-12-28T14:48:11Z"
    assert asked_at == []


async def test_sequence_c_blocked_and_silent_command_pending_over_http_and_ws() -> None:
    """§4.7 C: the blocked command's deltas arrive *before* the HTTP answer; ``command_pending``
    produces no message at all. Neither leaves the host looking busy."""
    blocked = command("20251228-153510.500-3333", "hsb1", "switch", "VALIDATING")
    sent = asyncio.Event()

    async def script(ws: ServerConnection, srv: Replay) -> None:
        await srv.send(ws, snapshot(400, [host("hsb1")]))
        await sent.wait()
        await ws.wait_closed()

    dash = Dash()
    replay = Replay(script)
    model = FleetModel()

    async def dispatch(request: httpx.Request) -> httpx.Response:
        return jsonr(200, {"results": [{"code": "already_current", "host_id": "hsb1",
                                        "message": "System already up to date", "status": "blocked"}],
                           "status": "failed", "summary": {"error": 1, "success": 0, "total": 1}})  # fmt: skip

    dash.routes[("POST", "/api/dispatch")] = dispatch
    async with replay as srv, client_for(dash, url=f"http://127.0.0.1:{srv.port}") as c:
        async with asyncio.timeout(10):
            async for _event, _changes in c.follow(model):
                if model.synced:
                    break
        for msg in (cmd_delta(401, blocked), event(402, 900, "hsb1", "switch", "info", "Validating switch"),
                    cmd_delta(403, at(blocked, "BLOCKED", error="System already up to date")),
                    event(404, 901, "hsb1", "switch", "warn", "Blocked: System already up to date")):
            model.apply(msg)  # what the stream delivered before the HTTP answer
        (result,) = await c.dispatch("switch", ["hsb1"])
        sent.set()
    assert result.blocked and result.code == "already_current"
    snap = model.snapshot()
    assert snap.commands[blocked["id"]].status == "BLOCKED" and snap.active_command("hsb1") is None
    assert not snap.hosts["hsb1"].busy and snap.hosts["hsb1"].available_ops


# =============================================================== the engine on a live model


HEAD = "a" * 40
MERGE = "9f8e7d6" + "b" * 33


class Stage:
    """GitHub + dashboard ports for the engine whose fleet view is a real :class:`FleetModel`
    fed by scripted ``/ws`` messages (``push``), as :class:`LiveFleet` consumes them.

    Messages pushed in one go are applied without the engine running in between, which
    makes the §4.4 races deterministic.
    """

    def __init__(self, *hosts: dict) -> None:
        self.answer: Callable[[str, str, str], DispatchResult] = lambda op, h, cid: DispatchResult(
            h, "started", "EXECUTING", cid)
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        self.version = 10
        self.queue.put_nowait(snapshot(self.version, list(hosts)))
        self.on_dispatch: Callable[[str, str, bool, str], list[dict]] = lambda op, h, force, cid: []
        self.dispatched: list[tuple[str, str, bool]] = []
        self.kills: list[str] = []
        self.actions: list[tuple[str, str]] = []
        self.states: dict[str, Command] = {}
        self.pr = UpdatePR(number=42, title="flake.lock: Update", author="bot", html_url="", head_ref="u",
                           head_sha=HEAD, base_ref="main", base_sha="c" * 40, mergeable=True, mergeable_state="clean")

    def next_version(self, skip: int = 0) -> int:
        self.version += 1 + skip
        return self.version

    def push(self, *messages: dict) -> None:
        for message in messages:
            self.queue.put_nowait(message)

    async def follow(self, model: FleetModel) -> AsyncIterator[tuple[Any, list]]:
        yield Connected("ws://127.0.0.1/ws"), model.apply_event(Connected("ws://127.0.0.1/ws"))
        while True:
            data = await self.queue.get()
            yield Message(data), model.apply(data)

    # GitHub port
    async def get_pull(self, number: int, *, wait_mergeable: bool = True) -> UpdatePR:
        return self.pr

    async def ci_status(self, sha: str) -> CIStatus:
        return CIStatus(CIVerdict.GREEN, "green")

    async def merge(self, number: int, sha: str, *, method: str = "merge") -> str:
        self.pr = self.pr.with_changes(state="closed", merged=True, merge_commit_sha=MERGE)
        return MERGE

    async def wait_for_branch_contains(self, branch: str, sha: str, *, timeout: float = 60) -> None:
        return None

    async def viewer_login(self) -> str:
        return "alice"

    # dashboard port
    async def dispatch(self, op: str, hosts: list[str], *, force: bool = False) -> list[DispatchResult]:
        (h,) = hosts
        self.dispatched.append((op, h, force))
        cid = f"20251228-1530{len(self.dispatched):02d}.000-7777"
        self.push(*self.on_dispatch(op, h, force, cid))  # deltas before the HTTP answer (§4.7, §8 #23)
        return [self.answer(op, h, cid)]

    async def kill(self, host_id: str, signal: str = "SIGTERM") -> str:
        self.kills.append(host_id)
        return "sent"

    async def timeout_action(self, host_id: str, action: str, minutes: int | None = None) -> None:
        self.actions.append((host_id, action))

    async def command_states(self) -> dict[str, Command]:
        return dict(self.states)

    async def output(self, host: str, lines: int = 500, *, bare: bool = False) -> list[str]:
        return []  # the stage streams every line it scripts: nothing to backfill

    def lifecycle(self, cid: str, hid: str, op: str, *, until: str = "SUCCESS") -> list[dict]:
        """The sync messages of one op (§4.7 A/B), stopping at the status ``until``."""
        v = self.next_version
        c = command(cid, hid, op, "VALIDATING")
        run = at(c, "EXECUTING", started_at="2025-12-28T15:30:06+01:00")
        msgs = [cmd_delta(v(), c), cmd_delta(v(), run), host_updated(v(), hid, pending_command=op)]
        if until == "EXECUTING":
            return msgs
        if until in ("RUNNING_WARNING", "TIMEOUT_PENDING"):
            msgs.append(cmd_delta(v(), at(run, "RUNNING_WARNING")))
            return msgs + ([cmd_delta(v(), at(run, "TIMEOUT_PENDING"))] if until == "TIMEOUT_PENDING" else [])
        if op == "switch":
            msgs.append(cmd_delta(v(), at(run, "AWAITING_RECONNECT", reconnect_deadline="2025-12-28T15:40:00+01:00")))
            # §4.7 B1: with AWAITING_RECONNECT the dashboard stores System ok and broadcasts the host's status
            # (BroadcastHostStatus: every compartment) — what the engine verifies the switch by.
            msgs.append(host_updated(v(), hid, generation=MERGE[:7], update_status={
                "git": {"checked_at": "2025-12-28T14:31:00Z", "message": "Up to date with remote", "status": "ok"},
                "lock": {"checked_at": "2025-12-28T14:31:00Z", "message": "flake.lock is current", "status": "ok"},
                "system": {"checked_at": "2025-12-28T14:31:00Z", "message": "Last switch succeeded", "status": "ok"},
                "tests": None, "repo_dir": "/var/lib/nixfleet-agent/repo", "repo_url": "git@github.com:o/nixcfg.git"}))
            if until == "AWAITING_RECONNECT":
                return msgs
        else:
            msgs.append(host_updated(v(), hid, generation=MERGE[:7]))
        return msgs + [cmd_delta(v(), at(run, until, exit_code=0, finished_at="2025-12-28T15:31:00+01:00")),
                       host_updated(v(), hid, pending_command=None)]


async def run_engine(stage: Stage, tmp_path: Path, timeouts: Timeouts, *, guard: float = 20,
                     cancel_when: Callable[[Any], bool] | None = None,
                     release: bool = False) -> tuple[Any, list[Any]]:
    config = Config.model_validate({"flake_updates": {"automation": {"canary_wait_minutes": 0}}, "hosts": {}})
    store = Store(tmp_path / "journal.sqlite3")
    view = LiveFleet(stage)
    events: list[Any] = []

    def on_event(ev: Any) -> None:
        events.append(ev)
        if cancel_when is not None and cancel_when(ev):
            engine.cancel(release_hosts=release)

    engine = DeployEngine(stage, stage, view, store, config, lock=lambda: DeployLock(tmp_path, label="compat"),
                          on_event=on_event, timeouts=timeouts)
    try:
        await view.start(timeout=5)
        plan = make_plan(view.hosts(), config, set(), pr_number=42, head_sha=HEAD)
        async with asyncio.timeout(guard):  # a hang guard, not a timing assertion
            result = await engine.run(plan, actor="compat", queued_wait=0)
    finally:
        await view.stop()
        store.close()
    return result, events


FAST = Timeouts(pull=5, switch=5, gate_poll=0.01, queued_poll=0.05, resume_lookup=0.05)


async def test_engine_sees_a_finish_that_a_resync_immediately_dropped(tmp_path: Path) -> None:
    """§4.4 + the 50-row init window: ``command_finished`` applied, then a ``full_state`` that no
    longer lists the command arrives before the engine looks. The deploy must still finish."""
    stage = Stage(host("hsb1"))
    fillers = [command(f"20251228-1540{i:02d}.000-1111", f"h{i}", "pull", "EXECUTING") for i in range(50)]

    def on_dispatch(op: str, h: str, force: bool, cid: str) -> list[dict]:
        msgs = stage.lifecycle(cid, h, op)
        if op == "pull":  # the finish, a dropped delta, the resync's full_state without the command
            msgs += [heartbeat(stage.next_version(skip=1), h, generation=MERGE[:7]),
                     snapshot(stage.next_version(), [host(h, generation=MERGE[:7])], fillers, kind="full_state")]
        return msgs

    stage.on_dispatch = on_dispatch
    result, _ = await run_engine(stage, tmp_path, FAST)
    assert result.status is RunStatus.SUCCEEDED, result.summary()
    assert [(op, force) for op, _, force in stage.dispatched] == [("pull", True), ("switch", True)]


# ---------------------------------------------------------------- engine findings


@pytest.mark.parametrize("release", [False, True])
async def test_engine_cancel_must_not_kill_a_switch_awaiting_reconnect(tmp_path: Path, release: bool) -> None:
    """§3.7/§6.6: ``/kill`` turns an ``AWAITING_RECONNECT`` switch into ``KILLING``; the agent's
    re-registration then no longer completes it (HandleAgentReconnect only accepts
    AWAITING_RECONNECT) and the host refuses every op with ``command_pending`` until
    ``timeout-action ignore``. A cancel must stop scheduling and let the running command
    finish (following it to its real outcome), never send ``/kill`` — nor release a switch
    that has finished, even when asked to release hosts."""
    stage = Stage(host("hsb1"))
    switch: dict[str, Any] = {}

    def on_dispatch(op: str, h: str, force: bool, cid: str) -> list[dict]:
        if op == "switch":
            switch["id"] = cid
        return stage.lifecycle(cid, h, op, until="AWAITING_RECONNECT" if op == "switch" else "SUCCESS")

    def cancel_when(ev: Any) -> bool:
        if isinstance(ev, CancelRequested):  # the agent comes back: registration, then SUCCESS (§4.7 B3)
            run = at(command(switch["id"], "hsb1", "switch", "AWAITING_RECONNECT"), "AWAITING_RECONNECT",
                     started_at="2025-12-28T15:30:06+01:00")
            stage.push(host_updated(stage.next_version(), "hsb1", status="online", pending_command=None),
                       cmd_delta(stage.next_version(), at(run, "SUCCESS", exit_code=0,
                                                          finished_at="2025-12-28T15:31:30+01:00")))
        return isinstance(ev, HostStarted) and ev.phase == "switch"

    stage.on_dispatch = on_dispatch
    result, events = await run_engine(stage, tmp_path, FAST, cancel_when=cancel_when, release=release)
    assert stage.kills == [] and stage.actions == []
    assert result.status is RunStatus.CANCELLED
    assert result.outcome("hsb1").outcome is Outcome.OK and result.still_running == ()
    (cancel,) = [ev for ev in events if isinstance(ev, CancelRequested)]
    assert cancel.still_running == ("hsb1",) and "cannot stop a running command" in cancel.line()


async def test_engine_reports_timeout_pending_as_needing_a_user_action(tmp_path: Path) -> None:
    """§6.7: ``TIMEOUT_PENDING`` is non-terminal and waits for ``timeout-action``; the engine
    must say so (a progress event while it waits, and a failure detail naming the state and
    the actions) instead of a generic "did not finish"."""
    stage = Stage(host("hsb1"))
    stage.on_dispatch = lambda op, h, force, cid: stage.lifecycle(cid, h, op, until="TIMEOUT_PENDING")
    result, events = await run_engine(stage, tmp_path, Timeouts(pull=0.5, switch=0.5, resume_lookup=0.05))
    assert any(isinstance(ev, HostProgress) and "TIMEOUT_PENDING" in ev.message for ev in events)
    assert "timeout-action" in result.outcome("hsb1").detail
    assert stage.actions == [] and stage.kills == []


async def test_engine_judges_a_command_the_dashboard_forgot(tmp_path: Path) -> None:
    """§6.8/§8 #34: after a dashboard restart the lifecycle has forgotten the command; its DB
    row stays ``EXECUTING`` forever (init lists it), the agent's re-registration made the host
    idle, and ``/api/command-states`` no longer holds it. The engine must judge it from the
    dashboard (command-states, host events, generation/System) instead of waiting its
    guard (here 10 min) and reporting "did not finish"."""
    stage = Stage(host("hsb1"))

    def on_dispatch(op: str, h: str, force: bool, cid: str) -> list[dict]:
        msgs = stage.lifecycle(cid, h, op, until="EXECUTING")
        orphan = at(command(cid, h, op, "EXECUTING"), "EXECUTING", started_at="2025-12-28T15:30:06+01:00")
        stage.version += 1000  # the restart: the counter continues, a new connection starts with init
        return msgs + [snapshot(stage.version, [host(h, generation=MERGE[:7])], [orphan])]

    stage.on_dispatch = on_dispatch
    result, _ = await run_engine(stage, tmp_path, Timeouts(pull=600, switch=600, resume_lookup=0.05), guard=5)
    o = result.outcome("hsb1")
    assert "did not finish" not in o.detail
    # The pull is judged done by the generation (the merge commit); the switch left no System
    # result since it started (checked_at 12:02Z < 14:30Z): its outcome is unknown (it used to be
    # "failed"), saying why — no evidence, so nothing may be rolled back.
    assert [(op, force) for op, _, force in stage.dispatched] == [("pull", True), ("switch", True)]
    assert o.outcome is Outcome.UNKNOWN and o.phase == "switch" and not o.proven
    assert "lost track of the switch" in o.detail and "no switch result since it started" in o.detail


async def test_engine_does_not_hammer_a_host_whose_send_failed(tmp_path: Path) -> None:
    """§3.4/§6.2 ``send_failed``: the DB says online but the dashboard has no agent socket (or
    its queue is full), so the host stays *online* in the model. The engine requeues it as
    offline and, seeing it online, dispatches again at once, in a loop without any delay."""
    stage = Stage(host("hsb1"))
    send_failed = DispatchResult("hsb1", "blocked", "blocked", "", "send_failed", "Failed to send command to agent")

    def answer(op: str, h: str, cid: str) -> DispatchResult:
        if len(stage.dispatched) == 10:  # stop the loop: the socket's unregister finally arrives
            stage.push(host_updated(stage.next_version(), h, status="offline"))
        return send_failed

    stage.answer = answer
    result, _ = await run_engine(stage, tmp_path, replace(FAST, send_retry=0.05))
    assert len(stage.dispatched) <= 2
    assert "Failed to send command to agent" in result.outcome("hsb1").detail
