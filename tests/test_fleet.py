"""The live fleet model: sync rules (§4.4), idempotent merging, output attribution."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nfu_tui.clients._dashboard_protocol import Connected, Disconnected, Message
from nfu_tui.clients.fleet import ChangeKind, FleetChange, FleetModel, OutputLine
from nfu_tui.models import UNKNOWN_CHECK, CompartmentState


def host(hid: str, **over: Any) -> dict[str, Any]:
    data = {
        "agent_outdated": False, "agent_version": "3.1.5", "available_ops": [], "device_type": "server",
        "generation": "a1b2c3d", "host_type": "nixos", "hostname": hid, "id": hid,
        "last_seen": "2025-12-28T14:30:05Z", "location": "home", "metrics": None, "pending_command": "",
        "status": "online", "theme_color": "#7aa2f7",
        "update_status": {
            "git": {"checked_at": "", "message": "Up to date with remote", "status": "ok"},
            "lock": {"checked_at": "", "message": "flake.lock is current", "status": "ok"},
            "system": {"checked_at": "", "message": "Last switch succeeded", "status": "ok"},
            "tests": None, "repo_dir": "", "repo_url": "",
        },
    }  # fmt: skip
    data.update(over)
    return data


def cmd(cid: str, host_id: str, status: str, op: str = "pull", **over: Any) -> dict[str, Any]:
    data = {
        "id": cid, "host_id": host_id, "op": op, "pipeline_id": "", "status": status,
        "created_at": "2025-12-28T14:30:05.1Z", "started_at": "0001-01-01T00:00:00Z",
        "finished_at": "0001-01-01T00:00:00Z", "exit_code": None, "error": "", "output_file": "",
    }  # fmt: skip
    data.update(over)
    return data


def init(version: int, hosts: list[dict] | None = None, commands=None, events=None, kind: str = "init") -> dict:
    return {"type": kind, "version": version, "payload": {"hosts": hosts, "commands": commands, "pipelines": None, "events": events}}


def delta(version: int, change: dict) -> dict:
    return {"type": "delta", "version": version, "payload": change}


def heartbeat(version: int, hid: str, **fields: Any) -> dict:
    base = {"status": "online", "last_seen": "2025-12-28T14:30:10Z", "generation": "a1b2c3d", "metrics": None,
            "update_status": {"git": {"checked_at": "", "message": "Up to date with remote", "status": "ok"}}}  # fmt: skip
    base.update(fields)
    return delta(version, {"type": "host_updated", "id": hid, "fields": base})


def output(hid: str, line: str, command: str = "") -> dict:
    return {"type": "command_output", "payload": {"host_id": hid, "line": line, "command": command, "is_error": False}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def model() -> FleetModel:
    m = FleetModel()
    m.apply(init(100, [host("hsb1"), host("gpc0"), host("imac0", status="offline", host_type="macos")]))
    return m


# ----------------------------------------------------------------- snapshots


def test_init_replaces_everything_and_orders_hosts(model: FleetModel) -> None:
    snap = model.snapshot()
    assert snap.version == 100 and snap.synced
    assert list(snap.hosts) == ["gpc0", "hsb1", "imac0"]
    assert snap.dashboard_version == "3.1.5"  # inferred from a non-outdated agent
    changes = model.apply(init(7, [host("new")], kind="full_state"))
    assert changes == [FleetChange(ChangeKind.RESYNCED)]
    assert list(model.snapshot().hosts) == ["new"] and model.version == 7


def test_fresh_install_nulls() -> None:
    m = FleetModel()
    assert m.apply({"type": "init", "version": 0, "payload": {"hosts": None, "commands": None, "pipelines": None, "events": None}})
    snap = m.snapshot()
    assert snap.hosts == {} and snap.commands == {} and snap.events == ()


def test_snapshot_is_immutable_and_cached(model: FleetModel) -> None:
    snap = model.snapshot()
    assert model.snapshot() is snap
    with pytest.raises(TypeError):
        snap.hosts["x"] = snap.hosts["hsb1"]  # type: ignore[index]
    model.apply(heartbeat(101, "hsb1", last_seen="2025-12-28T14:31:00Z"))
    new = model.snapshot()
    assert new is not snap
    assert snap.hosts["hsb1"].last_seen == "2025-12-28T14:30:05Z"  # the old view did not change
    assert new.hosts["hsb1"].last_seen == "2025-12-28T14:31:00Z"


# --------------------------------------------------------------- sync rules


def test_deltas_before_init_are_ignored() -> None:
    m = FleetModel()
    assert m.apply(heartbeat(5, "hsb1")) == []
    assert not m.needs_resync and m.snapshot().hosts == {}
    m.apply(init(5, [host("hsb1")]))
    assert m.apply(heartbeat(6, "hsb1", last_seen="2025-12-28T15:00:00Z")) == [FleetChange(ChangeKind.HOST_CHANGED, "hsb1")]


def test_version_gap_requests_one_resync(model: FleetModel) -> None:
    assert model.apply(heartbeat(102, "hsb1")) == []
    assert model.needs_resync
    assert model.take_resync_request() is True
    assert model.take_resync_request() is False
    model.apply(heartbeat(103, "hsb1"))
    model.apply(heartbeat(105, "hsb1"))
    assert not model.needs_resync  # one outstanding get_state only
    model.apply(init(104, [host("hsb1")], kind="full_state"))
    assert model.apply(heartbeat(105, "hsb1", last_seen="2025-12-28T16:00:00Z"))
    assert model.version == 105


def test_sync_beacon_mismatch_requests_resync(model: FleetModel) -> None:
    model.apply({"type": "sync", "version": 100})
    assert not model.needs_resync
    model.apply({"type": "sync", "version": 140})
    assert model.take_resync_request()


def test_host_updated_for_unknown_id_requests_resync(model: FleetModel) -> None:
    registration = {"hostname": "newbox", "host_type": "nixos", "agent_version": "3.1.5", "status": "online", "pending_command": None}
    assert model.apply(delta(101, {"type": "host_updated", "id": "newbox", "fields": registration})) == []
    assert model.take_resync_request()
    assert model.snapshot().host("newbox") is None
    assert model.version == 101  # the delta itself was in order


def test_connection_events_reset_sync_position(model: FleetModel) -> None:
    assert model.apply_event(Disconnected("lost", 1.0)) == [FleetChange(ChangeKind.CONNECTION)]
    snap = model.snapshot()
    assert not snap.connected and not snap.synced
    assert list(snap.hosts) == ["gpc0", "hsb1", "imac0"]  # last known state stays visible
    model.apply_event(Connected("ws://x/ws"))
    assert model.snapshot().connected
    assert model.apply_event(Message(heartbeat(101, "hsb1"))) == []  # before the new init
    model.apply_event(Message(init(300, [host("hsb1")])))
    assert model.version == 300 and model.snapshot().synced


# ------------------------------------------------------------------ merging


def test_heartbeat_merges_per_compartment(model: FleetModel) -> None:
    model.apply(
        heartbeat(101, "hsb1", metrics={"cpu": 6.1, "ram": 41.3, "swap": 0, "load": 0.29},
                  update_status={"git": {"status": "outdated", "message": "Behind remote", "checked_at": "2025-12-28T14:30:10Z"},
                                 "tests": None})
    )  # fmt: skip
    h = model.host("hsb1")
    assert h is not None
    assert h.git.state is CompartmentState.OUTDATED
    assert h.lock.state is CompartmentState.OK  # absent = unchanged
    assert h.system.message == "Last switch succeeded"
    assert h.tests == UNKNOWN_CHECK  # null = unknown
    assert h.metrics == {"cpu": 6.1, "ram": 41.3, "swap": 0.0, "load": 0.29}


def test_identical_delta_reports_no_change(model: FleetModel) -> None:
    change = heartbeat(101, "gpc0", last_seen="2025-12-28T14:30:05Z")
    change["payload"]["fields"]["update_status"] = {}
    assert model.apply(change) == []
    assert model.version == 101


def test_pending_command_set_and_cleared(model: FleetModel) -> None:
    model.apply(delta(101, {"type": "host_updated", "id": "hsb1", "fields": {"pending_command": "pull"}}))
    h = model.host("hsb1")
    assert h is not None and h.busy and h.available_ops == ()
    model.apply(delta(102, {"type": "host_updated", "id": "hsb1", "fields": {"pending_command": None}}))
    h = model.host("hsb1")
    assert h is not None and h.pending_command == "" and h.available_ops == ("pull", "switch", "test", "reboot")


def test_offline_and_registration_deltas(model: FleetModel) -> None:
    model.apply(delta(101, {"type": "host_updated", "id": "hsb1", "fields": {"status": "offline"}}))
    assert not model.host("hsb1").online  # type: ignore[union-attr]
    reg = {
        "hostname": "hsb1", "host_type": "nixos", "agent_version": "3.1.4", "os_version": "25.11",
        "nixpkgs_version": "25.11.20251220.1a2b3c4", "generation": "9f8e7d6", "theme_color": "#7aa2f7",
        "location": "home", "device_type": "server", "repo_url": "git@x:o/r.git", "repo_dir": "/r",
        "status": "online", "pending_command": None, "last_seen": "2025-12-28T14:35:00Z",
    }  # fmt: skip
    model.apply(delta(102, {"type": "host_updated", "id": "hsb1", "fields": reg}))
    h = model.host("hsb1")
    assert h is not None and h.online and h.os_version == "25.11" and h.repo_dir == "/r"
    assert h.agent_outdated is True  # 3.1.4 vs the dashboard's 3.1.5
    assert h.agent.state is CompartmentState.ERROR


def test_agent_outdated_without_known_dashboard_version_keeps_previous() -> None:
    m = FleetModel()
    m.apply(init(1, [host("a", agent_version="3.0.0", agent_outdated=True)]))
    assert m.dashboard_version is None
    m.apply(delta(2, {"type": "host_updated", "id": "a", "fields": {"status": "online"}}))
    assert m.host("a").agent_outdated is True  # type: ignore[union-attr]
    changes = m.set_dashboard_version("3.0.0")
    assert changes == [FleetChange(ChangeKind.HOST_CHANGED, "a")]
    assert m.host("a").agent_outdated is False  # type: ignore[union-attr]
    assert m.set_dashboard_version("3.0.0") == []


def test_host_added_removed(model: FleetModel) -> None:
    payload = {"device_type": "desktop", "host_type": "macos", "hostname": "imac1", "id": "imac1",
               "location": "work", "pending_command": None, "status": "offline", "theme_color": "#bb9af7"}  # fmt: skip
    assert model.apply(delta(101, {"type": "host_added", "id": "imac1", "payload": payload})) == [
        FleetChange(ChangeKind.HOST_ADDED, "imac1")
    ]
    h = model.host("imac1")
    assert h is not None and h.host_type == "macos" and h.git == UNKNOWN_CHECK and h.last_seen == ""
    # host_added is also sent for an update of an existing host: merge
    changed = {**payload, "location": "home"}
    assert model.apply(delta(102, {"type": "host_added", "id": "imac1", "payload": changed})) == [
        FleetChange(ChangeKind.HOST_CHANGED, "imac1")
    ]
    assert model.apply(delta(103, {"type": "host_removed", "id": "imac1"})) == [FleetChange(ChangeKind.HOST_REMOVED, "imac1")]
    assert model.host("imac1") is None
    assert model.apply(delta(104, {"type": "host_removed", "id": "imac1"})) == []


def test_unknown_change_type_advances_version(model: FleetModel) -> None:
    assert model.apply(delta(101, {"type": "pipeline_changed", "id": "x"})) == []
    assert model.version == 101


def test_merge_rest_hosts(model: FleetModel) -> None:
    from nfu_tui.clients._dashboard_protocol import parse_hosts

    rows = parse_hosts({"hosts": [
        {"agent_version": "3.1.5", "comment": None, "generation": "1234567", "host_type": "nixos", "hostname": "hsb1",
         "id": "hsb1", "last_seen": "2025-12-28T15:00:00Z", "nixpkgs_version": "25.11.x", "os_version": "25.11",
         "pending_command": None, "status": "online"},
        {"agent_version": None, "comment": None, "generation": None, "host_type": "nixos", "hostname": "zz",
         "id": "zz", "last_seen": None, "nixpkgs_version": None, "os_version": None, "pending_command": None,
         "status": "offline"},
    ]}, "3.1.5")  # fmt: skip
    changes = model.merge_rest_hosts(rows)
    assert set(changes) == {FleetChange(ChangeKind.HOST_CHANGED, "hsb1"), FleetChange(ChangeKind.HOST_ADDED, "zz")}
    h = model.host("hsb1")
    assert h is not None and h.generation == "1234567" and h.nixpkgs_version == "25.11.x"
    assert h.git.state is CompartmentState.OK  # compartments untouched by the flat listing
    assert model.merge_rest_hosts(rows) == []


# ----------------------------------------------------------------- commands


def test_command_lifecycle_upserts_by_id(model: FleetModel) -> None:
    v = 100
    for change in (
        {"type": "command_progress", "id": "c1", "fields": cmd("c1", "hsb1", "VALIDATING")},
        {"type": "command_started", "id": "c1", "payload": cmd("c1", "hsb1", "EXECUTING")},
        {"type": "command_started", "id": "c1", "payload": cmd("c1", "hsb1", "RUNNING_WARNING")},
        {"type": "command_finished", "id": "c1", "fields": cmd("c1", "hsb1", "SUCCESS", exit_code=0)},
    ):
        v += 1
        assert model.apply(delta(v, change)) == [FleetChange(ChangeKind.COMMAND_CHANGED, "c1")]
    snap = model.snapshot()
    assert list(snap.commands) == ["c1"]
    assert snap.commands["c1"].succeeded and snap.commands["c1"].exit_code == 0


def test_finished_command_is_never_resurrected(model: FleetModel) -> None:
    model.apply(delta(101, {"type": "command_finished", "id": "c1", "fields": cmd("c1", "hsb1", "SUCCESS", exit_code=0)}))
    # late legacy command_state (different queue) and an overlapping older delta
    assert model.apply({"type": "command_state", "payload": {"host_id": "hsb1", "command": cmd("c1", "hsb1", "EXECUTING")}}) == []
    assert model.apply(delta(102, {"type": "command_started", "id": "c1", "payload": cmd("c1", "hsb1", "EXECUTING")})) == []
    assert model.command("c1").status == "SUCCESS"  # type: ignore[union-attr]


def test_legacy_command_state_upserts(model: FleetModel) -> None:
    changes = model.apply({"type": "command_state", "payload": {"host_id": "hsb1", "command": cmd("c9", "hsb1", "EXECUTING")}})
    assert changes == [FleetChange(ChangeKind.COMMAND_CHANGED, "c9")]


def test_commands_arriving_before_dispatch_response_are_kept(model: FleetModel) -> None:
    model.apply(delta(101, {"type": "command_progress", "id": "cX", "fields": cmd("cX", "gpc0", "VALIDATING")}))
    assert model.command("cX") is not None  # the engine can look it up once dispatch returns its id


def test_orphaned_init_command_is_not_active() -> None:
    m = FleetModel()
    m.apply(init(1, [host("idle"), host("busy", pending_command="switch")],
                 commands=[cmd("old", "idle", "EXECUTING", created_at="2025-01-01T00:00:00Z", started_at=""),
                           cmd("live", "busy", "EXECUTING", op="switch", started_at="")]))  # fmt: skip
    snap = m.snapshot()
    assert snap.active_command("idle") is None
    live = snap.active_command("busy")
    assert live is not None and live.id == "live"
    assert [c.id for c in snap.commands_for("idle")] == ["old"]


def test_command_map_is_bounded() -> None:
    m = FleetModel(max_commands=5)
    m.apply(init(0, [host("h")]))
    m.apply(delta(1, {"type": "command_started", "id": "run", "payload": cmd("run", "h", "EXECUTING")}))
    for i in range(20):
        m.apply(delta(2 + i, {"type": "command_finished", "id": f"f{i}", "fields": cmd(f"f{i}", "h", "SUCCESS")}))
    ids = list(m.snapshot().commands)
    assert len(ids) == 5 and "run" in ids and "f19" in ids


# ------------------------------------------------------------------- events


def event(eid: int | None, msg: str = "m") -> dict:
    data = {"action": "op:pull", "actor": "system", "category": "ops", "details": None, "host_id": "hsb1",
            "level": "info", "message": msg, "timestamp": "2025-12-28T14:30:05Z"}  # fmt: skip
    if eid is not None:
        data["id"] = eid
    return data


def test_events_dedupe_by_id_and_order_newest_first() -> None:
    m = FleetModel()
    m.apply(init(10, [host("hsb1")], events=[event(812, "newer"), event(811, "older")]))
    assert m.apply(delta(11, {"type": "event", "payload": event(812, "newer")})) == []  # overlap with init
    assert m.apply(delta(12, {"type": "event", "payload": event(813, "newest")})) == [FleetChange(ChangeKind.EVENT, "813")]
    assert m.apply(delta(13, {"type": "event", "payload": event(None, "rejected")})) == [FleetChange(ChangeKind.EVENT, "")]
    assert [e.message for e in m.snapshot().events] == ["rejected", "newest", "newer", "older"]


def test_event_buffer_is_bounded_and_forgets_evicted_ids() -> None:
    m = FleetModel(max_events=3)
    m.apply(init(0, []))
    for i in range(1, 6):
        m.apply(delta(i, {"type": "event", "payload": event(i)}))
    assert [e.id for e in m.snapshot().events] == [5, 4, 3]
    assert m.apply(delta(6, {"type": "event", "payload": event(1)}))  # evicted id may come back


# ------------------------------------------------------------ output, progress


def test_output_attributed_to_current_command_and_sanitized(model: FleetModel) -> None:
    model.apply(delta(101, {"type": "command_started", "id": "c1", "payload": cmd("c1", "hsb1", "EXECUTING", op="switch")}))
    model.apply(delta(102, {"type": "host_updated", "id": "hsb1", "fields": {"pending_command": "switch"}}))
    assert model.apply(output("hsb1", "\x1b[1mbuilding\x1b[0m '/nix/store/x.drv'")) == [FleetChange(ChangeKind.OUTPUT, "hsb1")]
    assert model.output("hsb1") == [OutputLine("building '/nix/store/x.drv'", "c1", "switch")]
    assert model.output("hsb1", "c1") == model.output("hsb1")
    assert model.output("hsb1", "other") == []


def test_late_output_goes_to_the_just_finished_command() -> None:
    clock = Clock()
    m = FleetModel(clock=clock)
    m.apply(init(0, [host("h")]))
    m.apply(delta(1, {"type": "command_started", "id": "c1", "payload": cmd("c1", "h", "EXECUTING")}))
    m.apply(delta(2, {"type": "command_finished", "id": "c1", "fields": cmd("c1", "h", "SUCCESS")}))
    clock.now += 2
    m.apply(output("h", "late line"))
    clock.now += 10
    m.apply(output("h", "much later"))
    assert [(o.text, o.command_id) for o in m.output("h")] == [("late line", "c1"), ("much later", "")]


def test_output_without_command_and_theme_color_lines(model: FleetModel) -> None:
    model.apply(output("gpc0", "⚠️  Reboot command received."))
    model.apply(output("gpc0", "✓ Database updated", command="theme-color"))
    assert model.output("gpc0") == [OutputLine("⚠️  Reboot command received.", "", ""), OutputLine("✓ Database updated", "", "theme-color")]


def test_output_keyed_by_hostname_maps_to_id() -> None:
    m = FleetModel()
    m.apply(init(0, [host("host-id", hostname="host.name")]))
    m.apply(output("host.name", "line"))
    assert [o.text for o in m.output("host-id")] == ["line"]


def test_output_before_init_is_kept() -> None:
    m = FleetModel()
    assert m.apply(output("hsb1", "early")) == [FleetChange(ChangeKind.OUTPUT, "hsb1")]
    assert [o.text for o in m.output("hsb1")] == ["early"]


def test_output_ring_buffer_is_bounded() -> None:
    m = FleetModel(output_lines=10)
    m.apply(init(0, [host("h")]))
    for i in range(25):
        m.apply(output("h", f"line {i}"))
    assert [o.text for o in m.output("h")] == [f"line {i}" for i in range(15, 25)]
    assert m.add_output("h", [b"\x1b[31mfrom rest\x1b[0m"]) == [FleetChange(ChangeKind.OUTPUT, "h")]
    assert m.output("h")[-1].text == "from rest"


def test_operation_progress(model: FleetModel) -> None:
    msg = {"type": "operation_progress", "payload": {"host_id": "hsb1", "progress": {"system": {"current": 1, "total": 3, "status": "in_progress"}}}}
    assert model.apply(msg) == [FleetChange(ChangeKind.PROGRESS, "hsb1")]
    prog = model.snapshot().progress["hsb1"]
    assert (prog.phase, prog.current, prog.total, prog.status) == ("system", 1, 3, "in_progress")
    model.apply({"type": "test_progress", "payload": {"host_id": "hsb1", "current": 2, "total": 8, "passed": 2, "running": True}})
    assert model.snapshot().progress["hsb1"].phase == "tests"
    # a resync drops progress of hosts that are no longer busy
    model.apply(init(200, [host("hsb1")], kind="full_state"))
    assert model.snapshot().progress == {}


def test_unknown_legacy_messages_are_ignored(model: FleetModel) -> None:
    before = model.snapshot()
    for msg in ({"type": "pr_merged", "payload": {"pr_number": 42}}, {"type": "flake_update_job", "payload": {}}, {"type": "x"}):
        assert model.apply(msg) == []
    assert model.snapshot() is before


def test_applying_the_same_snapshot_twice_is_idempotent() -> None:
    msg = init(10, [host("a"), host("b")], commands=[cmd("c", "a", "SUCCESS")], events=[event(1)])
    m1, m2 = FleetModel(), FleetModel()
    m1.apply(msg)
    m2.apply(msg)
    m2.apply(copy.deepcopy(msg))
    s1, s2 = m1.snapshot(), m2.snapshot()
    assert (dict(s1.hosts), dict(s1.commands), s1.events) == (dict(s2.hosts), dict(s2.commands), s2.events)


def test_missing_tail_is_what_follows_the_streamed_lines_in_the_stored_output() -> None:
    from nfu_tui.core.live import missing_tail

    stored = ["old", "b", "c", "a", "b", "c", "error: x", "error: y"]
    assert missing_tail(["a", "b", "c"], stored) == ["error: x", "error: y"]  # the last occurrence anchors
    assert missing_tail(["a", "b", "c", "error: x", "error: y"], stored) == []  # nothing missed
    assert missing_tail([], stored) == []  # no anchor: nothing can be attributed
    assert missing_tail(["z"], stored) == []  # not in the stored output (e.g. a newer log file)
    assert missing_tail(["y", "c"], ["c"]) == []
