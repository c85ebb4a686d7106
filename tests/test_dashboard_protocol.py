"""Pure dashboard protocol logic: bytes/headers in, data or typed errors out."""

from __future__ import annotations

import json

import pytest

from nfu_tui.clients import _dashboard_protocol as p
from nfu_tui.domain import timeparse
from nfu_tui.errors import CsrfRejected, DashboardError, DashboardUnavailable, LoginFailed, SessionExpired
from nfu_tui.models import UNKNOWN_CHECK, CompartmentState

INIT_HOST = {
    "agent_outdated": False,
    "agent_version": "3.1.5",
    "available_ops": ["pull", "switch", "test", "reboot"],
    "device_type": "server",
    "generation": "a1b2c3d",
    "host_type": "nixos",
    "hostname": "hsb1",
    "id": "hsb1",
    "last_seen": "2025-12-28T14:30:05Z",
    "location": "home",
    "metrics": {"cpu": 7.5, "load": 0.31, "ram": 41.2, "swap": 0},
    "pending_command": "",
    "status": "online",
    "theme_color": "#7aa2f7",
    "update_status": {
        "git": {"checked_at": "2025-12-28T14:30:07Z", "message": "Up to date with remote", "status": "ok"},
        "lock": {"checked_at": "2025-12-28T14:30:05Z", "message": "flake.lock is current", "status": "ok"},
        "system": {"checked_at": "2025-12-28T12:02:11Z", "message": "Switch successful (exit 0)", "status": "ok"},
        "tests": None,
        "repo_dir": "/var/lib/nixfleet-agent/repo",
        "repo_url": "git@github.com:o/nixcfg.git",
    },
}


# ------------------------------------------------------------------------ times


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-12-28T14:30:05Z", "2025-12-28T14:30:05Z"),
        ("2025-12-28T14:30:05.123456789Z", "2025-12-28T14:30:05Z"),
        ("2025-12-28T15:30:05.5+01:00", "2025-12-28T14:30:05Z"),
        ("2025-12-28 14:30:05", "2025-12-28T14:30:05Z"),
        ("0001-01-01T00:00:00Z", ""),
        ("", ""),
        (None, ""),
        ("yesterday", "yesterday"),
    ],
)
def test_normalize_time(raw: object, expected: str) -> None:
    assert timeparse.normalize_time(raw) == expected


def test_parse_time_is_aware_utc() -> None:
    parsed = timeparse.parse_time("2025-12-28T14:30:05.123456789+02:00")
    assert parsed is not None and parsed.utcoffset().total_seconds() == 0
    assert (parsed.hour, parsed.microsecond) == (12, 123456)
    assert timeparse.parse_time("0001-01-01T00:00:00Z") is None
    assert timeparse.parse_time(12345) is None


# ------------------------------------------------------------------------ hosts


def test_init_host_normalised() -> None:
    host = p.host_from_json(INIT_HOST)
    assert host is not None
    assert (host.id, host.hostname, host.status, host.pending_command) == ("hsb1", "hsb1", "online", "")
    assert host.git.state is CompartmentState.OK and host.git.message == "Up to date with remote"
    assert host.tests == UNKNOWN_CHECK
    assert host.metrics == {"cpu": 7.5, "load": 0.31, "ram": 41.2, "swap": 0.0}
    assert host.repo_url == "git@github.com:o/nixcfg.git"
    assert host.available_ops == ("pull", "switch", "test", "reboot")
    assert host.agent_outdated is False


def test_rest_row_with_nulls() -> None:
    row = {
        "agent_version": None, "comment": None, "generation": None, "host_type": "macos", "hostname": "imac0",
        "id": "imac0", "last_seen": None, "nixpkgs_version": None, "os_version": None,
        "pending_command": None, "status": "offline",
    }  # fmt: skip
    host = p.host_from_json(row, "3.1.5")
    assert host is not None
    assert (host.agent_version, host.generation, host.last_seen, host.pending_command) == ("", "", "", "")
    assert host.host_type == "macos" and not host.online and host.available_ops == ()
    assert host.agent_outdated is False  # never registered: not outdated


def test_host_without_identity_is_dropped() -> None:
    assert p.host_from_json({"status": "online"}) is None
    assert p.host_from_json({"hostname": "x"}).id == "x"  # type: ignore[union-attr]


def test_heartbeat_fields_are_partial() -> None:
    fields = p.host_fields(
        {
            "generation": "a1b2c3d",
            "last_seen": "2025-12-28T14:30:10Z",
            "status": "online",
            "metrics": None,
            "update_status": {"git": {"status": "outdated", "message": "Behind", "checked_at": ""}, "lock": None},
        }
    )
    assert set(fields) == {"generation", "last_seen", "status", "metrics", "git", "lock"}
    assert fields["git"].state is CompartmentState.OUTDATED
    assert fields["lock"] == UNKNOWN_CHECK  # null = unknown
    assert fields["metrics"] is None


@pytest.mark.parametrize(
    ("raw", "expected"), [("RUNNING", "running"), ("", "unknown"), (None, "unknown"), ("online", "online")]
)
def test_status_normalised(raw: object, expected: str) -> None:
    assert p.host_fields({"status": raw})["status"] == expected


def test_legacy_running_is_online_but_gets_no_available_ops() -> None:
    host = p.host_from_json({"id": "old", "status": "running", "pending_command": None})
    assert host is not None and host.online and host.available_ops == ()


def test_agent_outdated_rules() -> None:
    assert p.agent_outdated("3.1.4", "3.1.5") is True
    assert p.agent_outdated("3.1.5", "3.1.5") is False
    assert p.agent_outdated("", "3.1.5") is False
    assert p.agent_outdated("3.1.4", None, previous=True) is True
    assert p.agent_outdated("3.1.5", "dev") is True  # a dev dashboard marks every released agent


def test_server_agent_outdated_wins_over_local_guess() -> None:
    host = p.host_from_json({**INIT_HOST, "agent_version": "3.1.4", "agent_outdated": False}, "3.1.5")
    assert host is not None and host.agent_outdated is False


def test_infer_dashboard_version() -> None:
    rows = [
        {"agent_version": "3.1.4", "agent_outdated": True},
        {"agent_version": "", "agent_outdated": False},
        {"agent_version": "3.1.5", "agent_outdated": False},
    ]
    assert p.infer_dashboard_version(rows) == "3.1.5"
    assert p.infer_dashboard_version(rows[:2]) is None


# ------------------------------------------------------------- commands, events


def test_command_object_from_delta() -> None:
    cmd = p.command_from_json(
        {
            "id": "20251228-143005.123-7777", "host_id": "hsb1", "op": "switch", "pipeline_id": "",
            "status": "AWAITING_RECONNECT", "created_at": "2025-12-28T14:30:05.123456789Z",
            "started_at": "2025-12-28T15:30:05.140012+01:00", "finished_at": "0001-01-01T00:00:00Z",
            "exit_code": None, "error": "", "output_file": "", "reconnect_deadline": "2025-12-28T14:36:41.77Z",
        }  # fmt: skip
    )
    assert cmd is not None
    assert cmd.started_at == "2025-12-28T14:30:05Z" and cmd.finished_at == ""
    assert cmd.exit_code is None and not cmd.terminal
    assert cmd.reconnect_deadline == "2025-12-28T14:36:41Z"


def test_init_command_row() -> None:
    cmd = p.command_from_json(
        {"created_at": "2025-12-28T14:35:10.5Z", "error": "System already up to date", "finished_at": "",
         "host_id": "gpc0", "id": "c2", "op": "switch", "started_at": "", "status": "BLOCKED"}  # fmt: skip
    )
    assert cmd is not None and cmd.terminal and cmd.error == "System already up to date" and cmd.started_at == ""
    assert p.command_from_json({"status": "SUCCESS"}) is None
    assert p.command_from_json(None) is None
    assert p.command_from_json({"id": "x", "exit_code": "oops"}).exit_code is None  # type: ignore[union-attr]


def test_event_shapes() -> None:
    persisted = p.event_from_json(
        {"action": "op:pull", "actor": "system", "category": "ops", "details": None, "host_id": "hsb1",
         "id": 811, "level": "info", "message": "Executing pull", "timestamp": "2025-12-28T14:30:05Z"}  # fmt: skip
    )
    assert persisted is not None and persisted.id == 811 and persisted.details is None
    rejected = p.event_from_json(
        {"category": "command", "details": {"current_command": "switch"}, "host_id": "hsb1", "level": "error",
         "message": "Agent rejected command: command already running", "timestamp": "2025-12-28T14:40:00Z"}  # fmt: skip
    )
    assert rejected is not None and rejected.id is None and rejected.details == {"current_command": "switch"}


def test_progress_payload() -> None:
    phases = p.progress_from_json({"host_id": "h", "progress": {"pull": {"current": 2, "total": 4, "status": "in_progress"}}})
    assert phases == [p.Progress("pull", 2, 4, "in_progress")]
    assert p.progress_from_json({"progress": None}) == []


# ------------------------------------------------------------------------ login


def test_login_success_only_on_redirect_to_root() -> None:
    p.interpret_login(302, "/")
    p.interpret_login(303, "https://fleet.example.org/")


@pytest.mark.parametrize(
    ("location", "needs_totp", "rate_limited", "fragment"),
    [
        ("/login?error=Invalid+password", False, False, "Wrong dashboard password"),
        ("/login?error=Invalid+TOTP+code", True, False, "TOTP"),
        ("/login?error=Too+many+attempts.+Please+wait.", False, True, "Too many login attempts"),
        ("/login?error=Invalid+request", False, False, "Invalid request"),
        ("/login", False, False, "no reason given"),
        ("/elsewhere", False, False, "unexpected redirect"),
        ("/?x=1", False, False, "unexpected redirect"),
    ],
)
def test_login_failures(location: str, needs_totp: bool, rate_limited: bool, fragment: str) -> None:
    with pytest.raises(LoginFailed) as info:
        p.interpret_login(302, location)
    assert info.value.needs_totp is needs_totp
    assert info.value.rate_limited is rate_limited
    assert fragment in info.value.message


def test_login_non_redirect_answers() -> None:
    with pytest.raises(LoginFailed, match="instead of a redirect"):
        p.interpret_login(200, "")
    with pytest.raises(DashboardUnavailable):
        p.interpret_login(502, "")


def test_session_cookie_extraction() -> None:
    value = "q" * 43 + "="
    headers = ["other=1; Path=/", f"nixfleet_session={value}; Path=/; Expires=Mon, 29 Dec 2025 14:30:05 GMT; HttpOnly; SameSite=Lax"]
    assert p.session_cookie(headers) == value
    assert p.session_cookie(["nixfleet_session=; Path=/; Max-Age=0"]) is None
    assert p.session_cookie([]) is None


def test_login_redirect_detection() -> None:
    assert p.is_login_redirect(302, "/login")
    assert p.is_login_redirect(302, "http://127.0.0.1:8000/login")
    assert not p.is_login_redirect(302, "/")
    assert not p.is_login_redirect(200, "/login")


# ------------------------------------------------------------------------- HTML


def test_scrape_csrf_from_body_attribute_and_form() -> None:
    html = '<html><body class="x" data-csrf-token="AbC-_=="><form><input type="hidden" name="csrf_token" value="AbC-_=="/>'
    assert p.scrape_csrf(html) == "AbC-_=="
    assert p.scrape_csrf('<body data-csrf-token=""><input type="hidden" name="csrf_token" value="tok"/>') == "tok"
    assert p.scrape_csrf('<body data-csrf-token="">') is None  # the login page: no token


def test_scrape_version() -> None:
    footer = '<footer><span>NixFleet 3.1.5 (abc1234)</span></footer>'
    assert p.scrape_version(footer) == "3.1.5"
    login = '<p style="color: var(--fg-darker);">v3.1.5</p>'
    assert p.scrape_version(login) == "3.1.5"
    assert p.scrape_version("<footer>NixFleet dev (unknown)</footer>") == "dev"
    assert p.scrape_version("<html>nothing</html>") is None


# --------------------------------------------------------------------- responses


def test_error_message_both_styles() -> None:
    assert p.error_message(404, "text/plain; charset=utf-8", b"Host not found\n") == "Host not found"
    assert p.error_message(400, "application/json", b'{"error":"unknown op: nope"}') == "unknown op: nope"
    assert p.error_message(500, "text/plain", b"") == "HTTP 500 with an empty body"
    assert p.error_message(502, "text/html", b"<html><h1>502 Bad Gateway</h1></html>") == "502 Bad Gateway"
    assert "\x1b" not in p.error_message(400, "text/plain", b"bad \x1b[31mthing")


@pytest.mark.parametrize(
    ("method", "status", "ctype", "location", "body", "error", "fragment"),
    [
        ("GET", 302, "", "/login", b'<a href="/login">Found</a>.', SessionExpired, "expired"),
        ("POST", 302, "", "/login", b"", SessionExpired, "expired"),
        ("POST", 403, "text/plain", "", b"Forbidden\n", CsrfRejected, "CSRF"),
        ("POST", 403, "application/json", "", b'{"error":"TOTP must be configured for this operation"}', DashboardError, "TOTP must"),
        ("POST", 401, "application/json", "", b'{"error":"Invalid TOTP code"}', DashboardError, "Invalid TOTP code"),
        ("POST", 500, "", "", b"", DashboardError, "handler crashed"),
        ("GET", 500, "text/plain", "", b"Internal Server Error\n", DashboardError, "Internal Server Error"),
        ("GET", 503, "text/html", "", b"<h1>down</h1>", DashboardUnavailable, "unavailable"),
        ("POST", 409, "text/plain", "", b"No active command for host\n", DashboardError, "No active command"),
        ("GET", 301, "", "/elsewhere", b"", DashboardError, "unexpected redirect"),
    ],
)
def test_check_response_maps_errors(
    method: str, status: int, ctype: str, location: str, body: bytes, error: type, fragment: str
) -> None:
    with pytest.raises(error) as info:
        p.check_response(method, "/api/x", status, ctype, location, body)
    assert type(info.value) is error
    assert fragment in info.value.message
    assert info.value.status == status


def test_check_response_passes_2xx() -> None:
    p.check_response("GET", "/api/hosts", 200, "application/json", "", b"{}")


def test_get_403_is_not_csrf() -> None:
    with pytest.raises(DashboardError) as info:
        p.check_response("GET", "/api/hosts", 403, "text/plain", "", b"Forbidden\n")
    assert not isinstance(info.value, CsrfRejected)


def test_null_collections() -> None:
    assert p.parse_hosts({"hosts": None}) == []
    assert p.parse_events({"events": None}) == []
    assert p.parse_command_states({"states": {}}) == {}
    assert p.parse_hosts(None) == []


def test_parse_json_body() -> None:
    assert p.parse_json_body(b'{"a":1}\n', "GET /x") == {"a": 1}
    assert p.parse_json_body(b"null", "GET /x") is None
    with pytest.raises(DashboardError, match="invalid JSON"):
        p.parse_json_body(b"<html>", "GET /x")


def test_parse_dispatch_mixed_results() -> None:
    body = {
        "results": [
            {"command_id": "20251228-143005.123-7777", "host_id": "hsb1", "status": "EXECUTING"},
            {"code": "already_current", "host_id": "gpc0", "message": "Git already up to date", "status": "blocked"},
            {"error": "Host not found", "host_id": "nope", "status": "error"},
            {"command_id": "c4", "host_id": "dash", "status": "SUCCESS"},
        ],
        "status": "partial",
        "summary": {"error": 2, "success": 2, "total": 4},
    }
    results = p.parse_dispatch(body, ["hsb1", "gpc0", "nope", "dash"])
    assert [r.outcome for r in results] == ["started", "blocked", "error", "started"]
    assert results[0].command_id == "20251228-143005.123-7777" and results[0].started
    assert (results[1].code, results[1].message) == ("already_current", "Git already up to date")
    assert results[1].blocked and results[2].message == "Host not found"
    assert results[3].status == "SUCCESS"


def test_parse_dispatch_is_lenient_about_case_but_needs_a_command_id() -> None:
    results = p.parse_dispatch(
        {"results": [
            {"command_id": "c1", "host_id": "a", "status": "executing"},
            {"host_id": "b", "status": "EXECUTING"},
            {"host_id": "c", "status": "Blocked", "code": "busy", "message": "m"},
        ]},
        ["a", "b", "c"],
    )  # fmt: skip
    assert [r.outcome for r in results] == ["started", "error", "blocked"]
    assert "no status" not in results[1].message and "EXECUTING" in results[1].message


def test_parse_dispatch_without_results_is_an_error() -> None:
    with pytest.raises(DashboardError):
        p.parse_dispatch({"results": None}, ["a"])
    assert p.parse_dispatch({"results": None}, []) == []


def test_parse_command_response_variants() -> None:
    ok = p.parse_command_response(
        "hsb1", 200, "application/json", "", b'{"command":"switch","command_id":"c1","status":"queued"}\n'
    )
    assert ok.started and ok.command_id == "c1" and ok.status == "queued"
    blocked = p.parse_command_response(
        "hsb1", 409, "application/json", "",
        b'{"status":"blocked","validation":{"code":"busy","message":"Command \\"pull\\" already running","valid":false}}',
    )  # fmt: skip
    assert blocked.blocked and blocked.code == "busy" and "already running" in blocked.message
    missing = p.parse_command_response("nope", 404, "text/plain", "", b"Host not found\n")
    assert missing.outcome == "error" and missing.message == "Host not found"
    with pytest.raises(DashboardError, match="Bad Request"):
        p.parse_command_response("hsb1", 400, "text/plain", "", b"Bad Request\n")
    with pytest.raises(SessionExpired):
        p.parse_command_response("hsb1", 302, "", "/login", b"")


def test_parse_command_states() -> None:
    states = p.parse_command_states(
        {"states": {"hsb1": {"id": "c1", "host_id": "hsb1", "op": "pull", "status": "BLOCKED"}, "bad": {"x": 1}}}
    )
    assert list(states) == ["hsb1"] and states["hsb1"].terminal


def test_parse_output_bare_drops_the_log_decoration() -> None:
    body = (b"# Command: \n# Host: web1\n# Started: 2025-12-28T15:30:00Z\n\n[14:30:05] a\tb\n"
            b"[14:30:06] [ERR] error: x\n[14:30:07] \n# Exit code: 1\n")
    assert p.parse_output(body, bare=True) == ["a       b", "error: x", ""]  # tabs expand as on the stream


def test_parse_output_sanitizes() -> None:
    body = b"# Command: \n[14:30:05] \x1b[32mok\x1b[0m\n[14:30:06] 50%\r100%\n"
    assert p.parse_output(body) == ["# Command: ", "[14:30:05] ok", "100%"]
    assert p.parse_output(b"") == []


# ------------------------------------------------------------------- websocket


def test_parse_ws_message() -> None:
    assert p.parse_ws_message('{"type":"sync","version":3}') == {"type": "sync", "version": 3}
    assert p.parse_ws_message(b'{"type":"init"}') == {"type": "init"}
    for bad in ("[1,2]", "not json", '{"no_type":1}', '{"type":5}', b"\xff"):
        assert p.parse_ws_message(bad) is None
    assert json.loads(p.GET_STATE) == {"type": "get_state"}


def test_message_version() -> None:
    assert p.message_version({"version": 5}) == 5
    for bad in ({"version": "5"}, {"version": True}, {"version": -1}, {}):
        assert p.message_version(bad) is None


A = p.SyncAction


def run(tracker: p.SyncTracker, *msgs: tuple[str, int | None]) -> list[p.SyncAction]:
    return [tracker.decide(t, v) for t, v in msgs]


def test_sync_deltas_before_init_are_ignored() -> None:
    tr = p.SyncTracker()
    assert run(tr, ("delta", 5), ("sync", 5), ("init", 5), ("delta", 6)) == [A.IGNORE, A.IGNORE, A.SNAPSHOT, A.APPLY]
    assert tr.version == 6


def test_sync_gap_requests_once_and_ignores_until_full_state() -> None:
    tr = p.SyncTracker()
    actions = run(tr, ("init", 10), ("delta", 12), ("delta", 13), ("delta", 14), ("full_state", 14), ("delta", 15))
    assert actions == [A.SNAPSHOT, A.RESYNC, A.IGNORE, A.IGNORE, A.SNAPSHOT, A.APPLY]


def test_sync_out_of_order_delta_applies_while_waiting() -> None:
    tr = p.SyncTracker()
    assert run(tr, ("init", 10), ("delta", 12), ("delta", 11)) == [A.SNAPSHOT, A.RESYNC, A.APPLY]
    assert tr.awaiting_full_state


def test_sync_duplicate_or_stale_delta_is_ignored() -> None:
    # ≤ local: already applied or part of the snapshot (its version is read before its state)
    tr = p.SyncTracker()
    assert run(tr, ("init", 10), ("delta", 11), ("delta", 11), ("delta", 9)) == [A.SNAPSHOT, A.APPLY, A.IGNORE, A.IGNORE]
    assert tr.version == 11 and not tr.awaiting_full_state


def test_sync_beacon_mismatch_and_lost_full_state() -> None:
    tr = p.SyncTracker()
    assert run(tr, ("init", 10), ("sync", 10)) == [A.SNAPSHOT, A.IGNORE]
    # mismatch → request; a lost full_state is asked for again on the second beacon after
    assert run(tr, ("sync", 12), ("sync", 13), ("sync", 14), ("sync", 15)) == [A.RESYNC, A.IGNORE, A.RESYNC, A.IGNORE]


def test_sync_accepts_lower_snapshot_versions() -> None:
    tr = p.SyncTracker()
    assert run(tr, ("init", 100), ("full_state", 7), ("delta", 8)) == [A.SNAPSHOT, A.SNAPSHOT, A.APPLY]


def test_sync_legacy_and_reset() -> None:
    tr = p.SyncTracker()
    assert run(tr, ("command_output", None), ("init", 1)) == [A.LEGACY, A.SNAPSHOT]
    tr.reset()
    assert run(tr, ("delta", 2)) == [A.IGNORE]
    assert tr.request_resync() is False  # nothing to resync before init


def test_sync_delta_without_version_is_a_gap() -> None:
    tr = p.SyncTracker()
    assert run(tr, ("init", 1), ("delta", None)) == [A.SNAPSHOT, A.RESYNC]
