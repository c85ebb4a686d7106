"""The TUI tells the truth: the pending update ends with the merge, hosts are unknown (not online)
while the dashboard is unreachable, a half-deployed fleet is converged with `c`, and quitting during
a run says — and does — what happens to it. Pilot tests against the simulator's real servers."""

from __future__ import annotations

from typing import Any

from test_ui_app import (
    SIZE, _render, fleet_ready, footer_keys, make_app, prs_ready, shows_key, start_deploy, wait_for,
)

from nfu_tui.core.engine import HostFinished
from nfu_tui.core.store import Store, local_actor
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario
from nfu_tui.ui.screens.confirm import ConfirmScreen, DeployConfirmScreen
from nfu_tui.ui.screens.deploy import DeployScreen
from nfu_tui.ui.screens.host_detail import HostDetailScreen
from nfu_tui.ui.screens.main import MainScreen
from nfu_tui.ui.screens.resume import ResumeScreen

THREE = [HostSpec("a1", "desktop"), HostSpec("a2", "desktop"), HostSpec("a3", "desktop")]



def status_line(app: Any) -> str:
    return app.screen_stack[0].query_one("#status-line").content.plain


async def test_the_pending_update_ends_with_the_merge_not_the_next_poll(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(hosts=[HostSpec("a1", "desktop", faults={"slow"})], speed=20.0))
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot, 1)
        await prs_ready(pilot)
        assert "Update PR pending" in status_line(app) and "⇡" in (g.row_text("a1") or "")
        polled = app.service.status.last_poll
        view = await start_deploy(pilot, ["a1"], fleet=1)
        await wait_for(pilot, lambda: view.merge_sha, "the merge")
        await pilot.press("escape")  # back to the fleet while the host deploys
        await wait_for(pilot, lambda: "Update PR pending" not in status_line(app), "the banner to end")
        assert "⇡" not in (g.row_text("a1") or "") and not g.has_class("-glow")
        assert app.service.pending_update() is None
        assert app.service.status.last_poll == polled  # the merge result said it, not a GitHub poll
        assert not view.finished  # and long before the deploy ends


async def test_hosts_are_unknown_not_online_while_the_dashboard_is_unreachable(sim, tmp_path):
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        assert "● online" in (g.row_text("gpc0") or "")
        sim.dashboard.set_unreachable(True)
        try:
            await wait_for(pilot, lambda: "◌ unknown" in (g.row_text("gpc0") or ""), "hosts shown as unknown")
            assert not any("● online" in (g.row_text(h) or "") for h in g.visible_ids)
            title = app.screen.query_one("#fleet-title").content.plain
            assert "dashboard unreachable since" in title and "online" not in title
            g.move_to("gpc0")
            await pilot.press("enter")
            assert isinstance(app.screen, HostDetailScreen)
            summary = _render(app.screen.query_one("#host-summary").content)
            assert "◌ unknown — the dashboard is unreachable; last seen live " in summary
            assert "● online" not in summary
            await pilot.press("escape")
        finally:
            sim.dashboard.set_unreachable(False)
        await wait_for(pilot, lambda: "● online" in (g.row_text("gpc0") or ""), "online again", timeout=30)
        assert "online" in app.screen.query_one("#fleet-title").content.plain


async def test_c_converges_a_cancelled_run_without_a_second_merge(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(hosts=THREE, speed=100.0, heartbeat_seconds=0.1))
    app = make_app(sim, tmp_path, flake_updates={"automation": {"canary_wait_minutes": 0}})
    async with app.run_test(size=SIZE) as pilot:
        await fleet_ready(pilot, 3)
        app.service.subscribe(lambda ev: app.service.cancel_deploy() if ev.kind == "deploy"
                              and isinstance(ev.payload, HostFinished) and ev.payload.host == "a1" else None)
        view = await start_deploy(pilot, ["a1", "a2", "a3"], fleet=3)
        await wait_for(pilot, lambda: view.finished, "the cancelled run", timeout=60)
        assert view.result.status.value == "cancelled" and view.left_behind() == ["a2", "a3"]
        screen = app.screen
        assert isinstance(screen, DeployScreen)
        await wait_for(pilot, lambda: " c  converge: bring the 2 host(s)" in _render(
            screen.query_one("#failure-text").content), "the failure panel's converge offer")
        panel = _render(screen.query_one("#failure-text").content)
        assert "⊘ Run cancelled: a2, a3 not deployed." in panel and " c  converge: bring the 2 host(s)" in panel
        await pilot.press("escape")
        await wait_for(pilot, lambda: "Run #1 cancelled: 2 host(s) not deployed · c converge" in status_line(app),
                       "the status line's converge offer")
        head, _ = sim.github.default_branch_head()
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployConfirmScreen), "the converge plan")
        confirm = app.screen
        plan = _render(confirm.query_one("#plan").content)
        assert f"1. No merge: the target is main's head {head[:7]}" in plan
        assert "a2" in plan and f"→ {head[:7]}" in plan and f"at main {head[:7]}" in plan
        await wait_for(pilot, lambda: {"Converge", "Cancel"} <= footer_keys(confirm), "the converge plan's keys")
        assert "Merge & Deploy" not in footer_keys(confirm)  # a converge merges nothing
        await pilot.press("y")
        await wait_for(pilot, lambda: app.deploy_view is not view and app.deploy_view.finished, "the converge",
                       timeout=60)
        converge = app.deploy_view
        assert converge.succeeded and converge.plan.converge and sorted(converge.rows) == ["a2", "a3"]
        assert {h.generation for h in sim.dashboard.hosts.values()} == {head[:7]}
        assert sim.github.request_count("/repos/alice/nixcfg/pulls/42/merge") == 1
        assert sim.github.default_branch_head()[0] == head
        assert app.screen.query_one("#deploy-title").content.plain.startswith(f"Converge to main {head[:7]} · run #2")
        await wait_for(pilot, lambda: "not deployed" not in status_line(app), "the status line without the cancelled run")


async def test_no_toast_covers_the_cancelled_runs_panel_at_80x24(sim_factory, tmp_path):
    """The panel names the hosts left and the converge key: the run's toast must not cover it (the cancel
    toast, one line per host, took half the screen)."""
    sim = await sim_factory(fast_scenario(hosts=THREE, speed=100.0, heartbeat_seconds=0.1))
    app = make_app(sim, tmp_path, flake_updates={"automation": {"canary_wait_minutes": 0}})
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await fleet_ready(pilot, 3)
        app.service.subscribe(lambda ev: app.service.cancel_deploy() if ev.kind == "deploy"
                              and isinstance(ev.payload, HostFinished) and ev.payload.host == "a1" else None)
        view = await start_deploy(pilot, ["a1", "a2", "a3"], fleet=3)
        await wait_for(pilot, lambda: view.finished, "the cancelled run", timeout=60)
        await wait_for(pilot, lambda: " c  converge" in _render(app.screen.query_one("#failure-text").content),
                       "the cancelled run's panel")
        await pilot.pause(0.5)  # the run's last events arrive after its result
        toasts = [n.title for n in app._notifications]
        assert not any("cancelled" in title for title in toasts), toasts  # the panel says it, uncovered


async def test_quit_during_a_run_leaves_it_resumable_as_the_dialog_says(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(hosts=[HostSpec("a1", "desktop", faults={"slow"}), HostSpec("a2", "desktop")],
                                          speed=5.0, heartbeat_seconds=0.1))
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await fleet_ready(pilot, 2)
        view = await start_deploy(pilot, ["a1", "a2"], fleet=2)
        await wait_for(pilot, lambda: view.run_id is not None and view.rows["a1"].state == "running", "a1 running")
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        question = " ".join(_render(app.screen.query_one("Static").content, width=1000).split())
        assert f"Quitting does not cancel it: run #{view.run_id} is left resumable" in question
        assert "The next start offers to resume it" in question and "is cancelled" not in question
        await wait_for(pilot, lambda: {"Quit, leave it resumable", "Stay"} <= footer_keys(app.screen),
                       "the footer naming the buttons")
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    run_id = view.run_id
    with Store() as store:
        run = store.get_run(run_id)
        assert run.status == "running" and not run.cancel_requested  # interrupted, not cancelled
    again = make_app(sim, tmp_path)
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(again.screen, ResumeScreen) and again.screen.query("#run"), "the resume offer")
        assert f"Deploy run #{run_id} of PR #42 did not finish" in _render(again.screen.query_one("#run").content)
        await pilot.press("escape")
        assert isinstance(again.screen, MainScreen)


async def test_continue_anyway_after_an_unverified_canary_deploys_the_rest_once(sim_factory, tmp_path):
    """The canary switched but the fleet never confirmed its System (version.json lags the merge past
    verify_minutes): the run stops, nothing is rolled back, and ``o`` — shown only now — asks, naming what is
    unproven, then deploys the remaining hosts in a new run: no second merge, the canary not switched again,
    the decision journaled and audited with the actor."""
    sim = await sim_factory(fast_scenario(hosts=THREE, speed=100.0, heartbeat_seconds=0.1))
    sim.publish_delay = 600.0  # version.json is not republished after the merge: System stays outdated
    app = make_app(sim, tmp_path, hosts={"a1": {"canary": True}},
                   flake_updates={"verify_minutes": 0.02, "post_switch_tests": "never",
                                  "automation": {"canary_wait_minutes": 0}})
    async with app.run_test(size=(80, 24)) as pilot:
        await fleet_ready(pilot, 3)
        view = await start_deploy(pilot, [], fleet=3)
        screen = app.screen
        assert "Continue anyway" not in footer_keys(screen)
        await wait_for(pilot, lambda: view.finished, "the run to stop on the canary", timeout=60)
        assert view.result.status.value == "unverified" and view.rows["a1"].state == "unverified"
        assert [view.rows[h].state for h in ("a2", "a3")] == ["skipped", "skipped"]
        assert not view.proven_failures() and {h for h, _ in switches(sim)} == {"a1"}
        await wait_for(pilot, lambda: shows_key(screen, "Continue anyway"), "the o key in the footer")
        panel = _render(screen.query_one("#failure-text").content)
        assert "≈ a1 not verified" in panel and " o  continue anyway: deploy the 2 remaining host(s)" in panel
        assert view.left_behind() == ["a2", "a3"] and "the 2 host(s) left behind (a2, a3)" in panel
        sim.dashboard.remote_changed()  # the fleet catches up meanwhile: the rest can be verified
        await pilot.press("o")
        assert isinstance(app.screen, ConfirmScreen)
        question = " ".join(_render(app.screen.query_one("Static").content, width=1000).split())
        assert f"Deploy the rest of run #{view.run_id} although a1 was never verified?" in question
        assert "• a1 (executed SUCCESS, reached ✓): " in question and "System outdated" in question
        assert "Not proven: that a1 runs the new generation healthily" in question
        actor = local_actor()
        assert ("The 2 other host(s) (a2, a3) are deployed in a new run, each verified as usual; no second merge, "
                f"a1 not redeployed. Journaled and audited as {actor}.") in question
        await pilot.press("y")
        await wait_for(pilot, lambda: app.deploy_view is not view and app.deploy_view.finished,
                       "the continued run", timeout=60)
        continued = app.deploy_view
        assert app.screen is screen and screen.view is continued and continued.run_id == view.run_id + 1
        assert [continued.rows[h].state for h in ("a1", "a2", "a3")] == ["unverified", "ok", "ok"]
        assert "Continue anyway" not in footer_keys(screen)  # a run that went past its canaries: no second offer
        assert continued.left_behind() == [] and app.converge_hint() == ""  # a1 reached the merge: not behind
        # The fleet: every host at the merge, one merge, one switch per host (the canary not again).
        merge = view.merge_sha
        assert {h.agent.system_commit for h in sim.dashboard.hosts.values()} == {merge}
        assert sorted(switches(sim)) == [("a1", "switch"), ("a2", "switch"), ("a3", "switch")]
        assert sim.github.request_count("/repos/alice/nixcfg/pulls/42/merge") == 1
    with Store() as store:
        steps = store.get_run(continued.run_id).steps
        (accepted,) = [s for s in steps if s.step == "canary_accepted"]
        assert accepted.data["from_run"] == view.run_id and accepted.data["actor"] == actor
        assert accepted.data["hosts"] == ["a1"] and "System outdated" in accepted.data["unproven"]["a1"]
        (entry,) = [e for e in store.audit_entries() if e.action == "continue_unverified"]
        assert (entry.actor, entry.details["from_run"], entry.details["hosts"]) == (actor, view.run_id, ["a1"])
        assert store.get_run(view.run_id).status == "unverified"  # the stopped run stays as it ended


def switches(sim: Any) -> list[tuple[str, str]]:
    return [(c.host_id, c.op) for c in sim.dashboard.commands.values() if c.op == "switch"]

