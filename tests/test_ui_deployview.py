"""The deploy screen's model, folded from real engine events."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from nfu_tui.config import Config, RollbackConfig
from nfu_tui.core import engine as eng
from nfu_tui.core.plan import make_plan
from nfu_tui.models import Host
from nfu_tui.ui.deployview import DeployView
from nfu_tui.ui.fleetview import Progress
from nfu_tui.ui.screens.deploy import can_roll_back, failure_text, next_steps, row_cells

T0 = datetime(2026, 5, 17, 12, 0, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def plan():
    hosts = [
        Host(id=n, hostname=n, status="offline" if n == "hsb8" else "online", device_type=d, location="home")
        for n, d in (("gpc0", "gaming"), ("hsb0", "server"), ("hsb1", "server"), ("hsb8", "server"))
    ]
    cfg = Config.model_validate({"hosts": {"gpc0": {"canary": True}}})
    return make_plan(hosts, cfg, held={"hsb1"}, pr_number=42, head_sha="a" * 40)


def result(status, outcomes=()):
    return eng.RunResult(7, status, 42, merge_sha="m" * 40, outcomes=tuple(outcomes))


def test_rows_follow_the_plan_order_with_queued_hosts_marked():
    view = DeployView.from_plan(plan(), lambda: at(0))
    assert view.order == ["gpc0", "hsb0", "hsb8"]  # hsb1 held: not a row
    assert view.rows["gpc0"].canary and view.rows["hsb8"].state == "queued"
    assert view.counts() == (0, 3) and not view.finished


def test_a_failed_run_folds_into_rows_stage_and_a_failure_panel():
    clock = [at(0)]
    view = DeployView.from_plan(plan(), lambda: clock[0])
    events = [
        eng.RunStarted(at=at(0), run_id=7, pr_number=42, head_sha="a" * 40, hosts=("gpc0", "hsb0", "hsb8")),
        eng.MergeRequested(at=at(1), run_id=7, pr_number=42, head_sha="a" * 40),
        eng.Merged(at=at(2), run_id=7, pr_number=42, merge_sha="m" * 40),
        eng.HostStarted(at=at(3), run_id=7, host="gpc0", phase="pull"),
        eng.HostStarted(at=at(8), run_id=7, host="gpc0", phase="switch"),
    ]
    assert not any(view.apply(e) for e in events)
    clock[0] = at(20)
    row = view.rows["gpc0"]
    assert (row.state, row.phase, row.elapsed(clock[0])) == ("running", "switch", "0:17")
    assert view.stage == "deploying" and view.merge_sha == "m" * 40 and view.run_id == 7
    hostile = ("error: builder failed", "[bold]not markup[/bold] [/nix/store/abc]")
    failed = eng.HostOutcome("gpc0", eng.Outcome.FAILED, "switch", "exit 1", hostile, executed="ERROR", proven=True)
    view.apply(eng.HostFinished(at=at(30), run_id=7, host="gpc0", outcome=failed))
    skipped = eng.HostOutcome("hsb0", eng.Outcome.SKIPPED, detail="an earlier host failed")
    view.apply(eng.HostFinished(at=at(30), run_id=7, host="hsb0", outcome=skipped))
    assert view.rows["gpc0"].elapsed(at(99)) == "0:27"  # frozen once finished
    res = result(eng.RunStatus.FAILED, [failed, skipped])
    finished = eng.RunFinished(at=at(31), run_id=7, result=res, notification=eng.notification_for(res))
    assert view.apply(finished) is True
    assert view.finished and view.succeeded is False
    assert view.counts() == (2, 3)
    panel = failure_text(view, RollbackConfig(strategy="alert-only"))
    assert panel is not None
    assert "✗ gpc0 failed in switch: exit 1" in panel.plain
    assert "[bold]not markup[/bold] [/nix/store/abc]" in panel.plain  # shown literally
    assert "(rollback strategy: alert-only)" in panel.plain and "Nothing is reverted automatically" in panel.plain
    cells = [c.plain for c in row_cells(view.rows["gpc0"], at(40))]
    assert cells[:7] == ["1", "gpc0 ★", "✗ failed", "✗··", "switch", "", "0:27"]


def test_a_running_row_shows_the_dashboard_progress():
    view = DeployView.from_plan(plan(), lambda: at(0))
    view.apply(eng.HostStarted(at=at(1), run_id=7, host="hsb0", phase="pull"))
    cells = [c.plain for c in row_cells(view.rows["hsb0"], at(5), Progress("pull", 2, 4))]
    assert cells[3:7] == ["", "pull", "2/4 ▰▰▱▱▱", "0:04"]
    idle = [c.plain for c in row_cells(view.rows["gpc0"], at(5), Progress("pull", 2, 4))]
    assert idle[5] == ""  # only running rows show progress


def test_refused_merge_and_worker_errors_explain_themselves():
    view = DeployView.from_plan(plan(), lambda: at(0))
    view.apply(eng.MergeRefused(at=at(1), run_id=7, pr_number=42, reason="CI is failing"))
    view.finish(eng.RunResult(7, eng.RunStatus.REFUSED, 42, message="CI is failing"))
    panel = failure_text(view)
    assert panel is not None and "Merge refused: CI is failing" in panel.plain
    assert "Nothing was merged or deployed" in panel.plain

    other = DeployView.from_plan(plan(), lambda: at(0))
    assert failure_text(other) is None
    other.fail("Another deploy is running: deploy running in nfu-tui auto (pid 1, a@b)")
    assert other.finished and "nfu-tui auto" in failure_text(other).plain


def test_queued_hosts_leave_the_run_waiting():
    view = DeployView.from_plan(plan(), lambda: at(0))
    view.apply(eng.Merged(at=at(1), run_id=7, pr_number=42, merge_sha="m" * 40))
    for host in ("gpc0", "hsb0"):
        view.apply(eng.HostStarted(at=at(2), run_id=7, host=host, phase="pull"))
        view.apply(eng.HostFinished(at=at(3), run_id=7, host=host, outcome=eng.HostOutcome(host, eng.Outcome.OK)))
    assert view.stage == "waiting-queued"
    assert view.headline == "hsb8 offline: deployed when back online"  # not the last event's stale line
    assert view.counts() == (2, 3)


def failed_view(**changes) -> DeployView:
    """A finished manual run of PR #42 (merged) in which gpc0 failed."""
    view = DeployView.from_plan(plan(), lambda: at(0))
    view.apply(eng.Merged(at=at(1), run_id=7, pr_number=42, merge_sha="m" * 40))
    failed = eng.HostOutcome("gpc0", eng.Outcome.FAILED, "switch", "exit 1", executed="ERROR", proven=True)
    view.finish(result(eng.RunStatus.FAILED, [failed]))
    for key, value in changes.items():
        setattr(view, key, value)
    return view


def test_next_steps_follow_the_rollback_strategy():
    revert = next_steps(failed_view(), RollbackConfig(strategy="revert-commit")).plain
    assert " b  roll back now: revert PR #42, redeploy the hosts that had switched" in revert
    assert " h  hold gpc0" in revert and " R  roll the highlighted host back alone" in revert
    pr = next_steps(failed_view(), RollbackConfig(strategy="revert-pr")).plain
    assert " b  open a revert PR of #42 now" in pr
    alert = next_steps(failed_view(), RollbackConfig(strategy="alert-only")).plain
    assert " b " not in alert and "Nothing is reverted automatically" in alert
    off = next_steps(failed_view(), RollbackConfig(enabled=False)).plain
    assert "(rollback strategy: disabled)" in off and " b " not in off
    auto = next_steps(failed_view(trigger="auto"), RollbackConfig()).plain
    assert " b " not in auto and "Automation applies the strategy (revert-commit) itself" in auto
    redeploy = next_steps(failed_view(recovery=True), RollbackConfig()).plain
    assert " b " not in redeploy and "rollback's redeploy" in redeploy
    held = next_steps(failed_view(), RollbackConfig(), held={"gpc0"}).plain
    assert " h " not in held and "gpc0 held" in held
    started = failed_view(rollback_note="⟳ rolling back (revert-commit)…")
    assert not can_roll_back(started, RollbackConfig())
    assert "Rollback: ⟳ rolling back (revert-commit)…" in next_steps(started, RollbackConfig()).plain
    assert can_roll_back(failed_view(), RollbackConfig()) and not can_roll_back(failed_view(merge_sha=""), RollbackConfig())


def test_the_result_is_the_final_word_when_it_arrives_before_the_last_events():
    view = DeployView.from_plan(plan(), lambda: at(9))
    outcome = eng.HostOutcome("gpc0", eng.Outcome.OK, "switch")
    res = result(eng.RunStatus.SUCCEEDED, [outcome])
    view.finish(res)  # the deploy worker returned before the batched events were applied
    late = [
        eng.HostStarted(at=at(3), run_id=7, host="gpc0", phase="pull"),
        eng.RunFinished(at=at(5), run_id=7, result=res, notification=eng.notification_for(res)),
    ]
    assert [view.apply(e) for e in late] == [False, True]  # the toast still comes with RunFinished
    assert view.finished and view.rows["gpc0"].state == "ok" and len(view.events) == 2


def test_a_run_started_elsewhere_is_shown_from_the_journal(tmp_path):
    from nfu_tui.core.store import Store

    with Store(tmp_path / "j.sqlite3") as store:
        run_id = store.create_run("deploy", actor="root@box", trigger="auto", pr=43, plan=plan().to_dict())
        store.record(run_id, "revert_redeploy", parent=1)
        view = DeployView.from_run(store.get_run(run_id), lambda: at(0), resumed=False)
    assert (view.run_id, view.trigger, view.recovery) == (run_id, "auto", True)
    assert view.headline == f"automatic run #{run_id} started" and view.order == ["gpc0", "hsb0", "hsb8"]
    assert view.rows["gpc0"].state == "waiting"


def test_an_unknown_or_unproven_outcome_offers_no_rollback():
    """Only a proven failure is ever rolled back: an unknown outcome, or a failure without proof (the
    dashboard refused the op, the host did not reach the target), gets no ``b``."""
    view = DeployView.from_plan(plan(), lambda: at(0))
    view.apply(eng.Merged(at=at(1), run_id=7, pr_number=42, merge_sha="m" * 40))
    unknown = eng.HostOutcome("gpc0", eng.Outcome.UNKNOWN, "switch", "no trace of the switch")
    unverified = eng.HostOutcome("hsb0", eng.Outcome.UNVERIFIED, "verify", "System outdated", (), "SUCCESS", True,
                                 False)
    view.finish(result(eng.RunStatus.UNKNOWN, [unknown, unverified]))
    assert not can_roll_back(view, RollbackConfig())
    panel = failure_text(view, RollbackConfig()).plain
    assert "? gpc0 outcome unknown in switch: no trace of the switch" in panel
    assert "≈ hsb0 not verified in verify: System outdated" in panel
    assert "No proven failure" in panel and " b " not in panel and " h  hold gpc0" in panel
    assert [c.plain for c in row_cells(view.rows["hsb0"], at(5))][2:4] == ["≈ unverified", "✓✓✗"]
    unproven = failed_view()
    unproven.rows["gpc0"] = replace(unproven.rows["gpc0"], proven=False)
    assert not can_roll_back(unproven, RollbackConfig())


def test_continue_anyway_is_offered_only_after_a_stop_on_unverified_canaries():
    """``o`` applies when the canaries ended unverified and nothing else started; the continued view keeps
    the canaries as they ended and starts the rest afresh. An unverified host that reached the merge is not
    left behind (converge would skip it)."""
    view = DeployView.from_plan(plan(), lambda: at(0))
    view.apply(eng.Merged(at=at(1), run_id=7, pr_number=42, merge_sha="m" * 40))
    canary = eng.HostOutcome("gpc0", eng.Outcome.UNVERIFIED, "verify", "System outdated", (), "SUCCESS", True, False)
    skipped = eng.HostOutcome("hsb0", eng.Outcome.SKIPPED, "", "not started: canary gpc0 unverified")
    queued = eng.HostOutcome("hsb8", eng.Outcome.QUEUED, "", "offline")
    view.finish(result(eng.RunStatus.UNVERIFIED, [canary, skipped, queued]))
    assert [r.host for r in view.unverified_canaries()] == ["gpc0"] and view.left_behind() == ["hsb0", "hsb8"]
    panel = failure_text(view, RollbackConfig()).plain
    assert " o  continue anyway: deploy the 2 remaining host(s)" in panel
    continued = view.continued()
    assert (continued.run_id, continued.result, continued.merge_sha) == (None, None, "m" * 40)
    assert [continued.rows[h].state for h in continued.order] == ["unverified", "waiting", "queued"]
    assert continued.headline == "Continuing run #7 without gpc0 verified…"
    continued.apply(eng.RunStarted(at=at(9), run_id=8, pr_number=42, head_sha="a" * 40, resumed=True,
                                   hosts=("gpc0", "hsb0", "hsb8")))
    assert (continued.run_id, continued.stage) == (8, "deploying")  # merged already: not "merging"
    # Anything else started, failed or was unknown: no offer.
    went_on = replace(view, result=result(eng.RunStatus.UNVERIFIED, [canary, replace(skipped, outcome=eng.Outcome.OK)]))
    went_on.rows = {**view.rows, "hsb0": replace(view.rows["hsb0"], state="ok")}
    assert went_on.unverified_canaries() == []
    failed = replace(view, result=result(eng.RunStatus.FAILED, [canary]))
    assert failed.unverified_canaries() == []
    assert " o " not in failure_text(failed, RollbackConfig()).plain
