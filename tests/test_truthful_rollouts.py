"""Truthful rollouts (issue #11): every host's outcome comes from what the fleet reports.

Against the simulator's real servers: a late or lost dispatch answer, a lagging
``version.json``, failing host tests, an unknown outcome that must never be rolled back,
and ``nfu-tui hold`` from another process during a run. Pure helpers are tested directly.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from test_automation import AutoHarness, sim_scenario
from test_engine import SIM_TIMEOUTS, Deploy, scenario

from nfu_tui.config import Config, ConfigLoadError, load_config
from nfu_tui.core.engine import (
    HostFinished,
    HostOutcome,
    HostProgress,
    HostStarted,
    JournalState,
    Outcome,
    RunFinished,
    RunResult,
    RunStatus,
    command_from_events,
    continuable,
    notification_for,
    reached_target,
)
from nfu_tui.core.history import attention_text, format_run, load_run, run_json
from nfu_tui.core.state import AppState
from nfu_tui.core.store import Store
from nfu_tui.errors import StateError
from nfu_tui.models import CompartmentState, Host, StatusCheck
from nfu_tui.sim.agents import status_check
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.ui.deployview import DeployView

MERGE = "b" * 40
T0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
QUICK = SIM_TIMEOUTS.__class__(**{**vars(SIM_TIMEOUTS), "evidence": 2.0, "evidence_poll": 0.2})


# ============================================================== pure helpers


def event(message: str, level: str = "info", op: str = "switch", at: datetime = T0) -> dict[str, Any]:
    return {"timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "action": f"op:{op}", "host_id": "h",
            "level": level, "message": message, "category": "ops"}


@pytest.mark.parametrize(
    ("messages", "status", "error"),
    [
        ([("Validating switch", "info"), ("Executing switch", "info")], "EXECUTING", ""),
        ([("Executing switch", "info"), ("Switch completed - waiting for agent restart", "info"),
          ("switch completed successfully", "success")], "SUCCESS", ""),
        ([("Executing switch", "info"), ("switch failed: command failed", "error")], "ERROR",
         "switch failed: command failed"),
        ([("Executing switch", "info"), ("Reconnect timeout - verify host manually", "error")], "TIMEOUT",
         "Reconnect timeout - verify host manually"),
        ([("Blocked: System already up to date", "warn")], "BLOCKED", "System already up to date"),
    ],
)
def test_command_from_events(messages: list[tuple[str, str]], status: str, error: str) -> None:
    events = [event(m, level, at=T0 + timedelta(seconds=i)) for i, (m, level) in enumerate(messages)]
    cmd = command_from_events(reversed(events), "h", "switch", T0)  # newest first, as the dashboard sends them
    assert cmd is not None and (cmd.status, cmd.error, cmd.op) == (status, error, "switch")
    assert cmd.id.startswith("events:h:switch:")


def test_command_from_events_ignores_older_and_other_ops() -> None:
    old = event("switch completed successfully", "success", at=T0 - timedelta(minutes=5))
    other = event("pull completed successfully", "success", op="pull", at=T0 + timedelta(seconds=2))
    assert command_from_events([old, other], "h", "switch", T0) is None


def host(generation: str, git: str = "ok", lock: str = "ok", lock_at: str = "2026-03-01T12:00:05Z") -> Host:
    return Host("h", status="online", generation=generation, git=StatusCheck(CompartmentState(git)),
                lock=StatusCheck(CompartmentState(lock), "", lock_at))


def test_reached_target_by_generation_or_by_the_published_remote_state() -> None:
    assert reached_target(host(MERGE[:7]), MERGE) is True
    assert reached_target(host("1234567"), MERGE, "1234567") is False  # did not move
    # A mirror re-commits the content (other ids): moved, and Git/Lock ok after the deploy started.
    assert reached_target(host("9abcdef"), MERGE, "1234567", since=T0) is True
    # Moved, but version.json still lags the merge (Lock outdated, or not checked since): not known yet.
    assert reached_target(host("9abcdef", lock="outdated"), MERGE, "1234567", since=T0) is None
    assert reached_target(host("9abcdef", lock_at="2026-03-01T11:00:00Z"), MERGE, "1234567", since=T0) is None
    assert reached_target(host(""), MERGE) is None and reached_target(None, MERGE) is None


def test_host_outcome_facts_and_journal_round_trip() -> None:
    o = HostOutcome("h", Outcome.UNVERIFIED, "verify", "System outdated", (), "SUCCESS", True, False)
    assert o.facts() == "executed SUCCESS · reached ✓ · verified ✗"
    assert o.describe().endswith("[executed SUCCESS · reached ✓ · verified ✗]")
    assert HostOutcome.from_journal("h", json.loads(json.dumps(o.journal_data()))) == o
    # A journal written before the facts existed: a failure then counted as proven.
    old = HostOutcome.from_journal("h", {"outcome": "failed", "phase": "switch", "detail": "x"})
    assert old.proven_failure and old.facts() == ""
    unknown = HostOutcome.from_journal("h", {"outcome": "unknown", "detail": "x"})
    assert not unknown.proven_failure


def test_run_result_exit_codes_and_notifications() -> None:
    held = RunResult(1, RunStatus.SUCCEEDED, 42, MERGE, "", (HostOutcome("a", Outcome.OK),
                                                             HostOutcome("b", Outcome.HELD)))
    assert held.exit_code == 0
    for status, outcome, severity in ((RunStatus.UNKNOWN, Outcome.UNKNOWN, "error"),
                                      (RunStatus.UNVERIFIED, Outcome.UNVERIFIED, "warning")):
        result = RunResult(1, status, 42, MERGE, "", (HostOutcome("a", outcome),))
        note = notification_for(result)
        assert result.exit_code == 1 and note.severity == severity and "a" in note.title
        assert result.proven_failures() == []


def test_journal_state_keeps_a_finished_switch_for_verification() -> None:
    t = "2026-01-01T00:00:00+00:00"
    st = JournalState.from_steps([
        ("merged", {"sha": MERGE}, t),
        ("host_started", {"host": "a", "phase": "pull"}, t), ("pull_done", {"host": "a"}, t),
        ("host_started", {"host": "a", "phase": "switch"}, t),
        ("command_dispatched", {"host": "a", "phase": "switch", "command_id": "c1"}, t),
        ("switch_done", {"host": "a", "executed": "SUCCESS", "since": t, "detail": "", "tests": True}, t),
        ("host_started", {"host": "a", "phase": "test"}, t),
        ("command_dispatched", {"host": "a", "phase": "test", "command_id": "c2"}, t),
    ])
    assert st.in_flight == {} and st.switched == {"a": ("SUCCESS", t, "", True)}


@pytest.mark.parametrize("value", [-1, 1441, math.inf, math.nan])
def test_verify_minutes_is_validated(tmp_path: Path, value: float) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[flake_updates]\nverify_minutes = {value if math.isfinite(value) else str(value)}\n")
    with pytest.raises(ConfigLoadError, match="verify_minutes"):
        load_config(path)


def test_post_switch_tests_global_and_per_host() -> None:
    cfg = Config.model_validate({"flake_updates": {"post_switch_tests": "never", "verify_minutes": 2},
                                 "hosts": {"a": {"post_switch_tests": "always"}}})
    assert (cfg.post_switch_tests("a"), cfg.post_switch_tests("b"), cfg.flake_updates.verify_minutes) == (
        "always", "never", 2)
    with pytest.raises(ValueError, match="post_switch_tests"):
        Config.model_validate({"flake_updates": {"post_switch_tests": "sometimes"}})


def test_deploy_view_shows_checking_and_the_three_facts() -> None:
    from nfu_tui.core.plan import DeployPlan, PlanEntry

    plan = DeployPlan(42, "a" * 40, "all", 1, 0, (PlanEntry("a", 1, 1),))
    view = DeployView.from_plan(plan, lambda: T0)
    view.apply(HostStarted(run_id=1, host="a", phase="switch"))
    view.apply(HostProgress(run_id=1, host="a", phase="switch", message="outcome unknown — checking: no answer"))
    assert view.rows["a"].state == "checking" and view.rows["a"].active
    view.apply(HostProgress(run_id=1, host="a", phase="switch", message="switched; waiting for the agent"))
    assert view.rows["a"].state == "running"
    view.apply(HostFinished(run_id=1, host="a", outcome=HostOutcome("a", Outcome.UNVERIFIED, "verify", "lag",
                                                                    (), "SUCCESS", True, False)))
    row = view.rows["a"]
    assert (row.state, row.checks, row.done) == ("unverified", "✓✓✗", True)


# ============================================= end to end against the simulator


def dispatch_events(d: Deploy, host: str) -> list[str]:
    return [e.message for e in d.events if isinstance(e, HostProgress) and e.host == host]


async def test_switch_whose_answer_is_45_s_late_is_ok_and_the_run_goes_on(sim_factory: Any, tmp_path: Path) -> None:
    """The dashboard runs the switch but answers 45 s late; the client gives up after 1 s. The
    command (already finished, not only active ones are looked for) decides: ok, and a2 follows."""
    sim = await sim_factory(scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop")))
    sim.dashboard.set_dispatch_fault(delay=45.0, ops=("switch",), times=1)
    async with Deploy(sim, tmp_path, client_timeout=1.0) as d:
        result = await d.engine(timeouts=QUICK).run(await d.plan(), actor="t", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED and result.exit_code == 0, result.summary()
        a1 = result.outcome("a1")
        assert (a1.outcome, a1.executed, a1.reached, a1.verified) == (Outcome.OK, "SUCCESS", True, True)
        assert result.outcome("a2").outcome is Outcome.OK
        progress = dispatch_events(d, "a1")
        assert any(m.startswith("outcome unknown — checking: the switch dispatch got no answer") for m in progress)
        assert any("but the dashboard has the switch" in m for m in progress)
        switches = [c for c in sim.dashboard.commands.values() if c.op == "switch"]
        assert [(c.host_id, c.status) for c in switches] == [("a1", "SUCCESS"), ("a2", "SUCCESS")]
        assert sim.dashboard.dispatch_stalls == 1  # the answer is still being held back


async def test_lost_answer_then_a_failed_switch_is_failed(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(HostSpec("a1", "desktop", faults={"switch_fails"}), HostSpec("a2", "desktop")))
    sim.dashboard.set_dispatch_fault(lose=True, ops=("switch",), times=1)
    async with Deploy(sim, tmp_path) as d:
        failures: list[HostOutcome] = []
        result = await d.engine(timeouts=QUICK, on_failure=failures.append).run(await d.plan(), actor="t",
                                                                                queued_wait=0)
        a1 = result.outcome("a1")
        assert (a1.outcome, a1.phase, a1.executed, a1.proven) == (Outcome.FAILED, "switch", "ERROR", True)
        assert result.status is RunStatus.FAILED and failures == [a1]
        assert result.outcome("a2").outcome is Outcome.SKIPPED and "a2" not in {c.host_id for c in
                                                                                 sim.dashboard.commands.values()}


async def test_no_trace_of_the_dispatch_is_unknown_and_never_reverted(sim_factory: Any, tmp_path: Path) -> None:
    """Automation, revert-commit: the switch request is lost before the dashboard runs it. The outcome
    is unknown: the run stops and alerts; no revert PR is opened, main keeps the merge."""
    sim = await sim_factory(sim_scenario())
    sim.dashboard.set_dispatch_fault(lose=True, execute=False, ops=("switch",), times=1)
    async with AutoHarness(sim, tmp_path) as a:
        a.runner.engine_kw["timeouts"] = QUICK
        step = await a.runner.step(refresh=True)
        assert step.acted and not step.ok and "rollback" not in step.message, step.message
        (run,) = a.store.list_runs()
        assert run.kind == "deploy" and run.host_outcomes == {"gpc0": "unknown", "hsb0": "skipped",
                                                              "hsb1": "skipped"}
        assert run.status == "unknown" and "unknown" in run.summary  # journaled as it is: not "failed"
        record = load_run(a.store, run.id)  # the history, text and --json, says so too
        assert record.status == "unknown" and run_json(record)["status"] == "unknown"
        assert format_run(record)[0].endswith("— unknown (auto)")
        assert "? gpc0 unknown (switch)" in "\n".join(format_run(record))
        a.service.refresh_attention()  # the header names it until a newer run
        assert a.service.status.attention == f"run #{run.id} outcome unknown"
        assert attention_text([], 0, latest=a.store.list_runs()[0], deploying=True) == ""
        (finished,) = [e for e in a.events if isinstance(e, RunFinished)]  # the alert (toast and webhook)
        assert finished.notification.title == "PR #42 deploy stopped: outcome unknown on gpc0"
        assert finished.notification.severity == "error" and "nothing was rolled back" in finished.notification.message
        # Asked by hand, the rollback refuses too: nothing is proven.
        outcome = await a.runner.roll_back(run.id)
        assert "no proven failure: nothing rolled back" in outcome.summary
        assert [r.kind for r in a.store.list_runs()] == ["deploy"]
        head, subject = sim.github.default_branch_head()
        assert head == run.merge_sha and subject.startswith("Merge pull request #42")
        assert max(sim.github._prs) == 42 and not [p for p in sim.github._prs.values() if "revert" in p.head_ref]
        assert [c.op for c in sim.dashboard.commands.values() if c.host_id == "gpc0"] == ["pull"]


async def test_a_canary_with_a_lagging_system_waits_then_proceeds_once_verified(sim_factory: Any,
                                                                               tmp_path: Path) -> None:
    sim = await sim_factory(scenario(HostSpec("gpc0", "gaming"), HostSpec("hsb0")))
    sim.publish_delay = 2.0  # version.json is republished 2 s after the merge
    async with Deploy(sim, tmp_path, hosts={"gpc0": {"canary": True}},
                      flake_updates={"verify_minutes": 1}) as d:
        result = await d.engine().run(await d.plan(), actor="t", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        gpc0 = result.outcome("gpc0")
        assert (gpc0.outcome, gpc0.reached, gpc0.verified) == (Outcome.OK, True, True)
        waited = [m for m in dispatch_events(d, "gpc0") if m.startswith("waiting up to 1 min for the dashboard to report System ok")]
        assert waited, dispatch_events(d, "gpc0")
        order = [(type(e).__name__, e.host) for e in d.events if isinstance(e, (HostFinished, HostStarted))]
        assert order.index(("HostFinished", "gpc0")) < order.index(("HostStarted", "hsb0"))
        assert sim.dashboard.hosts["gpc0"].agent.system_commit == result.merge_sha
        # The System stored while version.json lagged stays "outdated (flake.lock is behind)" (P3800): the
        # agent's ok since the switch, masked by the lag; once Lock is ok it verifies without asking again.
        assert sim.dashboard.hosts["gpc0"].system["message"] == "System outdated (flake.lock is behind)"
        assert ("gpc0", "refresh-system") not in d.ops() and "System ok since the switch" in gpc0.detail
        assert d.ops() == [("gpc0", "pull"), ("gpc0", "switch"), ("hsb0", "pull"), ("hsb0", "switch")]


async def test_a_system_the_agent_calls_outdated_is_checked_with_refresh_system(sim_factory: Any,
                                                                              tmp_path: Path) -> None:
    # Not the lag's mask: the agent itself reported "System needs rebuild" since the switch. Once Git and
    # Lock are ok the engine asks it to check again (refresh-system), which verifies it.
    sim = await sim_factory(scenario(HostSpec("gpc0", "gaming"), HostSpec("hsb0")))
    sim.publish_delay = 2.0
    stale_after_switch(sim, "gpc0")
    async with Deploy(sim, tmp_path, hosts={"gpc0": {"canary": True}},
                      flake_updates={"verify_minutes": 1}) as d:
        result = await d.engine().run(await d.plan(), actor="t", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        gpc0 = result.outcome("gpc0")
        assert (gpc0.outcome, gpc0.reached, gpc0.verified) == (Outcome.OK, True, True)
        assert ("gpc0", "refresh-system") in d.ops() and "System is current" in gpc0.detail


def stale_after_switch(sim: Any, host: str) -> None:
    """The host's agent reports System outdated "System needs rebuild" after its switch (a stale value)."""
    agent = sim.dashboard.hosts[host].agent
    switch = agent._switch

    async def stale_switch(*args: Any, **kwargs: Any) -> None:
        await switch(*args, **kwargs)
        agent.reported_system = status_check("outdated", "System needs rebuild", agent._now())

    agent._switch = stale_switch


async def test_a_system_error_our_own_refresh_system_provoked_is_unverified_not_a_failure(sim_factory: Any,
                                                                                          tmp_path: Path) -> None:
    # The real agent in a container cannot read /run/current-system: refresh-system ends ERROR and turns
    # System error. The switch succeeded and the host reached the merge: no proof it broke, no rollback.
    sim = await sim_factory(scenario(HostSpec("gpc0", "gaming", faults={"refresh_system_fails"}), HostSpec("hsb0")))
    sim.publish_delay = 2.0
    stale_after_switch(sim, "gpc0")
    async with Deploy(sim, tmp_path, hosts={"gpc0": {"canary": True}},
                      flake_updates={"verify_minutes": 1}) as d:
        result = await d.engine().run(await d.plan(), actor="t", queued_wait=0)
        gpc0 = result.outcome("gpc0")
        assert ("gpc0", "refresh-system") in d.ops()
        assert [c.status for c in sim.dashboard.commands.values() if c.op == "refresh-system"] == ["ERROR"]
        assert (gpc0.outcome, gpc0.phase, gpc0.proven, gpc0.executed, gpc0.reached, gpc0.verified) == (
            Outcome.UNVERIFIED, "verify", False, "SUCCESS", True, False), gpc0
        assert "Cannot read current system" in gpc0.detail and "verify the host manually" in gpc0.detail
        assert result.proven_failures() == [] and result.status is RunStatus.UNVERIFIED
        assert "canary gpc0 unverified" in result.outcome("hsb0").detail  # held back, as any unverified canary


async def test_a_canary_whose_tests_fail_stops_the_run(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(HostSpec("gpc0", "gaming", faults={"tests_fail"}), HostSpec("hsb0"),
                                     HostSpec("hsb1")))
    async with Deploy(sim, tmp_path, hosts={"gpc0": {"canary": True, "post_switch_tests": "always"}}) as d:
        result = await d.engine().run(await d.plan(), actor="t", queued_wait=0)
        gpc0 = result.outcome("gpc0")
        assert (gpc0.outcome, gpc0.phase, gpc0.proven, gpc0.executed, gpc0.verified) == (
            Outcome.FAILED, "test", True, "SUCCESS", False)
        assert "tests failed" in gpc0.detail
        assert result.status is RunStatus.FAILED and result.proven_failures() == ["gpc0"]
        assert d.ops() == [("gpc0", "pull"), ("gpc0", "switch"), ("gpc0", "test")]
        assert {result.outcome(h).outcome for h in ("hsb0", "hsb1")} == {Outcome.SKIPPED}


async def test_a_host_not_verified_in_time_is_unverified_not_ok(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop")))
    sim.publish_delay = 600.0  # version.json never catches up during the test
    async with Deploy(sim, tmp_path, flake_updates={"verify_minutes": 0.02}) as d:
        result = await d.engine().run(await d.plan(), actor="t", queued_wait=0)
        a1 = result.outcome("a1")
        assert (a1.outcome, a1.executed, a1.reached, a1.verified) == (Outcome.UNVERIFIED, "SUCCESS", True, False)
        assert "did not confirm it within 0.02 min" in a1.detail and "System outdated" in a1.detail
        assert result.status is RunStatus.UNVERIFIED and result.exit_code == 1 and result.proven_failures() == []
        assert result.outcome("a2").outcome is Outcome.UNVERIFIED  # a warning: the run went on


async def test_nfu_tui_hold_during_a_run_keeps_the_host_untouched(sim_factory: Any, tmp_path: Path) -> None:
    """`nfu-tui hold a3` in another process while a1 deploys: a3 is never touched and reported held;
    a run whose only deviation is a hold succeeds."""
    sim = await sim_factory(scenario(HostSpec("a1", "desktop", faults={"slow"}), HostSpec("a2", "desktop"),
                                     HostSpec("a3", "desktop"), speed=60.0))
    async with Deploy(sim, tmp_path) as d:
        d.service.state = AppState.load()  # the shared state file the CLI writes
        task = asyncio.create_task(d.engine().run(await d.plan(), actor="t", queued_wait=0))
        assert await d.service.wait_until(lambda: ("a1", "pull") in d.ops(), 20)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nfu_tui", "--config", str(d.cfg.source), "hold", "a3", "--reason", "disk check",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0 and out.decode() == "a3: held\n", err.decode()
        assert "a3" not in {h for h, _ in d.ops()}, "the hold came too late for this test"
        result = await task
        assert result.status is RunStatus.SUCCEEDED and result.exit_code == 0, result.summary()
        a3 = result.outcome("a3")
        assert a3.outcome is Outcome.HELD and "held during the run" in a3.detail
        assert "a3" not in {c.host_id for c in sim.dashboard.commands.values()}
        assert sim.dashboard.hosts["a3"].agent.system_commit != result.merge_sha
        assert d.store.get_run(result.run_id).host_outcomes["a3"] == "held"
    with Store() as store:
        (entry,) = [e for e in store.audit_entries() if e.action == "hold"]
        assert entry.details == {"hosts": ["a3"], "source": "cli", "reason": "disk check"}


def test_hold_and_unhold_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nfu_tui.cli import main

    cfg = tmp_path / "config.toml"
    cfg.write_text('[hosts.gpc0]\ncanary = true\n[hosts.hsb0]\n')  # offline: known hosts from the config
    assert main(["--config", str(cfg), "hold", "nope", "gpc0"]) == 2
    assert "unknown host(s): nope (known: gpc0, hsb0)" in capsys.readouterr().err
    assert AppState.load().held == set()  # nothing half-done
    assert main(["--config", str(cfg), "hold", "gpc0", "hsb0"]) == 0
    assert capsys.readouterr().out == "gpc0: held\nhsb0: held\n"
    assert main(["--config", str(cfg), "hold", "gpc0"]) == 0 and "already held" in capsys.readouterr().out
    assert main(["--config", str(cfg), "unhold", "gpc0"]) == 0
    assert AppState.load().held == {"hsb0"}
    with Store() as store:
        assert [(e.action, e.details["hosts"]) for e in reversed(store.audit_entries())] == [
            ("hold", ["gpc0", "hsb0"]), ("unhold", ["gpc0"])]


# ============================================= scheduling against in-memory ports

from test_engine import FLEET, FakePorts, Script, cfg, engine_for, plan_for, store  # noqa: E402,F401


async def test_an_unverified_canary_stops_the_run_without_a_rollback(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET, {"hsb1": Script(system="stale")})
    config = cfg(hosts={"hsb1": {"canary": True}}, verify_minutes=0.005)
    failures: list[HostOutcome] = []
    eng, _ = engine_for(ports, store, config, tmp_path, on_failure=failures.append)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    hsb1 = result.outcome("hsb1")
    assert (hsb1.outcome, hsb1.executed, hsb1.reached, hsb1.verified) == (Outcome.UNVERIFIED, "SUCCESS", True, False)
    assert ports.order("switch") == ["hsb1"] and failures == []
    assert result.status is RunStatus.UNVERIFIED and result.exit_code == 1
    assert all(result.outcome(h).outcome is Outcome.SKIPPED and "canary hsb1 unverified" in result.outcome(h).detail
               for h in ("gpc0", "hsb0", "csb0"))


async def test_continue_unverified_deploys_the_rest_once_and_only_after_unverified_canaries(store: Store,
                                                                                               tmp_path: Path) -> None:
    """The admin's "continue anyway" (the TUI's o): a new run carries the merge and the canary over, opens
    the canary gate with a journaled, audited canary_accepted step, and deploys the rest; nothing else may
    be continued so."""
    ports = FakePorts(FLEET, {"hsb1": Script(system="stale")})
    config = cfg(hosts={"hsb1": {"canary": True}}, verify_minutes=0.005)
    eng, _ = engine_for(ports, store, config, tmp_path)
    stopped = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert [o.host for o in continuable(store.get_run(stopped.run_id))] == ["hsb1"]
    result = await eng.continue_unverified(stopped.run_id, actor="alice@box", queued_wait=0)
    assert result.run_id == stopped.run_id + 1 and len(ports.merges) == 1
    assert ports.order("switch") == ["hsb1", "gpc0", "hsb0", "csb0"]  # the canary is not switched again
    assert {o.host: o.outcome for o in result.outcomes} == {
        "hsb1": Outcome.UNVERIFIED, "gpc0": Outcome.OK, "hsb0": Outcome.OK, "csb0": Outcome.OK}
    assert result.status is RunStatus.UNVERIFIED and result.merge_sha == stopped.merge_sha  # hsb1 stays unproven
    steps = [s.step for s in store.get_run(result.run_id).steps]
    assert steps.index("merged") < steps.index("canary_accepted") < steps.index("resumed")
    (entry,) = [e for e in store.audit_entries() if e.action == "continue_unverified"]
    assert (entry.actor, entry.details["from_run"], entry.details["hosts"]) == ("alice@box", stopped.run_id, ["hsb1"])
    assert continuable(store.get_run(result.run_id)) == []  # it went past its canaries
    for run_id in (stopped.run_id, result.run_id):  # continued already; nothing to continue
        with pytest.raises(StateError, match="nothing to continue anyway"):
            await eng.continue_unverified(run_id, actor="t")
    assert len(ports.order("switch")) == 4 and len(store.list_runs()) == 2


async def test_a_host_held_during_the_run_is_never_started(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET)
    config = cfg()
    held: set[str] = set()
    eng, _ = engine_for(ports, store, config, tmp_path, is_held=held.__contains__)
    eng.subscribe(lambda ev: held.update({"hsb1", "gpc0"}) if isinstance(ev, HostStarted) and ev.host == "gpc0"
                  and ev.phase == "switch" else None)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.outcome("gpc0").outcome is Outcome.OK  # already running: it finishes its step
    assert result.outcome("hsb1").outcome is Outcome.HELD and "hsb1" not in ports.order("pull")
    assert ports.order("switch") == ["gpc0", "hsb0", "csb0"]
    assert result.status is RunStatus.SUCCEEDED and result.exit_code == 0
    assert store.get_run(result.run_id).host_outcomes["hsb1"] == "held"


async def test_a_host_held_between_its_pull_and_its_switch_is_not_switched(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:2])
    config = cfg()
    held: set[str] = set()
    eng, _ = engine_for(ports, store, config, tmp_path, is_held=held.__contains__)
    eng.subscribe(lambda ev: held.add("gpc0") if isinstance(ev, HostProgress) and ev.host == "gpc0"
                  and ev.phase == "pull" and ev.message.startswith("done") else None)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.outcome("gpc0").outcome is Outcome.HELD and ports.order("switch") == ["hsb0"]


async def test_an_interrupted_verification_resumes_without_switching_again(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop")))
    sim.publish_delay = 600.0  # a1 waits in verification until version.json is published below
    async with Deploy(sim, tmp_path, flake_updates={"verify_minutes": 1}) as d:
        task = asyncio.create_task(d.engine().run(await d.plan(), actor="t", queued_wait=0))
        assert await d.service.wait_until(lambda: any(m.startswith("waiting up to") for m in dispatch_events(d, "a1")), 20)
        task.cancel()  # the process dies while a1 is being verified
        with pytest.raises(asyncio.CancelledError):
            await task
        (run,) = d.store.unfinished_runs()
        sim.dashboard.remote_changed()  # version.json catches up meanwhile
        result = await d.engine().resume(run.id, actor="t", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        assert (result.outcome("a1").executed, result.outcome("a1").verified) == ("SUCCESS", True)
        assert [op for h, op in d.ops() if h == "a1"].count("switch") == 1  # verified, not switched again


async def test_a_mirror_host_while_version_json_lags_is_unverified_not_failed(sim_factory: Any,
                                                                              tmp_path: Path) -> None:
    # The hosts pull from a mirror (other commit ids): the generation moved, but whether it is the merge is
    # only proven by Git and Lock ok against the version.json published after it, which never comes here.
    sim = await sim_factory(scenario(HostSpec("a1", "desktop")))
    sim.mirror, sim.publish_delay = True, 600.0
    async with Deploy(sim, tmp_path, flake_updates={"verify_minutes": 0.02}) as d:
        result = await d.engine().run(await d.plan(), actor="t", queued_wait=0)
        a1 = result.outcome("a1")
        assert sim.dashboard.hosts["a1"].generation != result.merge_sha[:7]
        assert (a1.outcome, a1.executed, a1.reached, a1.verified, a1.proven) == (
            Outcome.UNVERIFIED, "SUCCESS", None, False, False), a1
        assert "did not confirm it within 0.02 min" in a1.detail
        assert result.status is RunStatus.UNVERIFIED and result.proven_failures() == []


async def test_a_mirror_host_killed_mid_switch_is_verified_on_resume(sim_factory: Any, tmp_path: Path) -> None:
    # On resume the host's generation is already the mirror's commit: only the generation journaled before
    # the deploy shows it moved (then Git and Lock ok against the published version.json prove it reached).
    sim = await sim_factory(scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop", faults={"slow"})))
    sim.mirror, sim.publish_delay = True, 1.0
    async with Deploy(sim, tmp_path, flake_updates={"verify_minutes": 0.2}) as d:
        task = asyncio.create_task(d.engine().run(await d.plan(), actor="t", queued_wait=0))
        assert await d.service.wait_until(lambda: ("a2", "switch") in d.ops(), 30)
        task.cancel()  # the process dies during a2's switch
        with pytest.raises(asyncio.CancelledError):
            await task
        (run,) = d.store.unfinished_runs()
        assert run.hosts_in_flight == {"a2": "switch"}
        result = await d.engine().resume(run.id, actor="t", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        a2 = result.outcome("a2")
        assert (a2.outcome, a2.reached, a2.verified) == (Outcome.OK, True, True), a2
        assert sim.dashboard.hosts["a2"].generation != result.merge_sha[:7]
        assert [op for h, op in d.ops() if h == "a2"].count("switch") == 1  # followed, not switched again


async def test_a_canary_that_only_went_offline_is_unverified_and_never_reverted(sim_factory: Any,
                                                                                tmp_path: Path) -> None:
    """The canary switched and was verified, then dropped off the network before the canary gate: not a
    proven failure (no command error, no failed tests, no System error). Automation stops and alerts."""
    sim = await sim_factory(sim_scenario(HostSpec("gpc0", "gaming", "home", faults={"offline_after_switch"}),
                                         HostSpec("hsb0", "server", "home")))
    async with AutoHarness(sim, tmp_path, hosts={"gpc0": {"canary": True}}, canary_wait_minutes=0.02) as a:
        step = await a.runner.step(refresh=True)
        assert step.acted and not step.ok and "rollback" not in step.message, step.message
        (run,) = a.store.list_runs()
        assert run.host_outcomes == {"gpc0": "unverified", "hsb0": "skipped"}
        steps = a.store.get_run(run.id).steps
        gpc0 = [s for s in steps if s.step == "host_finished" and s.host == "gpc0"][-1].data
        assert gpc0["phase"] == "health" and "no longer verified" in gpc0["detail"] and "offline" in gpc0["detail"]
        (finished,) = [e for e in a.events if isinstance(e, RunFinished)]
        assert finished.notification.severity == "warning" and "not verified on gpc0" in finished.notification.title
        assert not [p for p in sim.github._prs.values() if "revert" in p.head_ref]


def test_the_converge_hint_counts_unknown_hosts_apart_and_unverified_ones_as_deployed() -> None:
    from types import SimpleNamespace

    from nfu_tui.ui.app import NfuApp

    def hint(status: RunStatus, *outcomes: Outcome) -> str:
        result = RunResult(7, status, 42, MERGE, outcomes=tuple(HostOutcome(f"h{i}", o) for i, o in enumerate(outcomes)))
        return NfuApp.converge_hint(SimpleNamespace(deploy_view=SimpleNamespace(result=result)))  # type: ignore[arg-type]

    assert hint(RunStatus.UNKNOWN, Outcome.OK, Outcome.UNKNOWN, Outcome.SKIPPED) == (
        "Run #7 unknown: 1 host(s) not deployed, 1 host(s) outcome unknown · c converge")
    assert hint(RunStatus.UNVERIFIED, Outcome.OK, Outcome.UNVERIFIED) == ""  # every host reached the target
    assert hint(RunStatus.CANCELLED, Outcome.OK, Outcome.CANCELLED) == "Run #7 cancelled: 1 host(s) not deployed · c converge"
