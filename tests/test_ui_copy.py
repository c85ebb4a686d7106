"""``y`` copies what is under the cursor (OSC 52 through App.copy_to_clipboard) and says so;
in confirmation dialogs ``y`` stays "yes". The app runs on the real FleetService against the
simulator (127.0.0.1)."""

from __future__ import annotations

from typing import Any

from textual.notifications import Notify
from textual.widgets import DataTable

from nfu_tui.core.store import Store
from nfu_tui.ui.screens.confirm import ConfirmScreen
from nfu_tui.ui.screens.deploy import DeployScreen
from nfu_tui.ui.screens.history import HistoryScreen, RunDetailScreen
from nfu_tui.ui.screens.host_detail import HostDetailScreen
from nfu_tui.ui.widgets.log_view import HostLog
from test_ui_app import SIZE, fleet_ready, make_app, prs_ready, shared, wait_for  # noqa: F401 (fixture)


def toasts(seen: list[Any]) -> list[tuple[str, str, str]]:
    return [(m.notification.title, m.notification.message, m.notification.severity) for m in seen
            if isinstance(m, Notify)]


async def test_y_copies_the_pr_url_and_a_hosts_error_lines(shared, tmp_path):  # noqa: F811
    app = make_app(shared.sim, tmp_path)
    seen: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        g = await fleet_ready(pilot)
        await prs_ready(pilot)
        # the host under the cursor: its last output lines (and compartments in error)
        fleet = shared.sim.dashboard.fleet
        for line in ("building the system configuration...", "error: builder for '/nix/store/x-foo.drv' failed"):
            shared.call(fleet.agent_output, fleet.hosts["gpc0"].agent, line)
        await wait_for(pilot, lambda: any("x-foo.drv" in line for line in app.service.output_lines("gpc0")), "output")
        g.move_to("gpc0")
        await pilot.press("y")
        assert app.clipboard.endswith("error: builder for '/nix/store/x-foo.drv' failed")
        assert "building the system configuration..." in app.clipboard
        title, message, _ = toasts(seen)[-1]
        assert title == "Copied" and message.startswith("gpc0: ") and "lines" in message
        # the focused PR: its URL
        await pilot.press("tab")
        await pilot.press("y")
        assert app.clipboard == "https://github.com/alice/nixcfg/pull/42"
        assert toasts(seen)[-1][:2] == ("Copied", "PR #42's URL")
        # the host detail: the host's lines; in its output, the line at the bottom of the view
        await pilot.press("tab", "tab")
        g.move_to("gpc0")
        await pilot.press("enter")
        assert isinstance(app.screen, HostDetailScreen)
        app.copy_to_clipboard("")
        await pilot.press("y")
        assert "x-foo.drv" in app.clipboard
        app.screen.query_one(HostLog).focus()
        await pilot.press("y")
        assert app.clipboard == "error: builder for '/nix/store/x-foo.drv' failed"
        assert toasts(seen)[-1][:2] == ("Copied", "a log line of gpc0")


async def test_y_in_a_confirmation_dialog_answers_yes_and_copies_nothing(shared, tmp_path):  # noqa: F811
    app = make_app(shared.sim, tmp_path)
    answers: list[bool | None] = []
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        g.move_to("gpc0")
        app.copy_to_clipboard("before")
        app.push_screen(ConfirmScreen("Really?", yes="Do it", no="Don't"), answers.append)
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert answers == [True] and app.clipboard == "before"


async def test_y_on_a_host_with_nothing_to_copy_says_so(shared, tmp_path):  # noqa: F811
    app = make_app(shared.sim, tmp_path)
    seen: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        g = await fleet_ready(pilot)
        quiet = next(h.id for h in app.service.hosts() if not app.service.output_lines(h.id)
                     and all(h.compartment(c).state.value != "error" for c in ("agent", "git", "lock", "system", "tests")))
        g.move_to(quiet)
        app.copy_to_clipboard("before")
        await pilot.press("y")
        assert app.clipboard == "before"
        assert toasts(seen)[-1] == ("Copy", f"{quiet}: no errors and no output to copy.", "warning")


async def test_y_on_the_deploy_and_history_screens(sim, tmp_path):
    sim.dashboard.set_fault("hsb0", "switch_fails")
    app = make_app(sim, tmp_path)
    seen: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        g = await fleet_ready(pilot)
        await prs_ready(pilot)
        for host in ("gpc0", "hsb0"):
            g.move_to(host)
            await pilot.press("space")
        await pilot.press("m", "y")  # the plan's "yes"
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen), "the deploy screen")
        view = app.deploy_view
        await wait_for(pilot, lambda: view.finished, "the deploy to finish", timeout=60)
        screen = app.screen
        table = screen.query_one(DataTable)
        table.move_cursor(row=view.order.index("hsb0"))
        await pilot.press("y")
        failed = view.rows["hsb0"]
        assert failed.state == "failed" and failed.last_lines
        assert app.clipboard.splitlines()[-len(failed.last_lines):] == list(failed.last_lines)
        assert toasts(seen)[-1][1].startswith("hsb0: ") and "last error lines" in toasts(seen)[-1][1]
        await pilot.press("tab")  # the log
        log = screen.query_one(HostLog)
        assert log.has_focus and log.line_count
        await pilot.press("y")
        assert app.clipboard in log.lines and "\n" not in app.clipboard
        # history: the run's merge commit, the one GitHub has
        await pilot.press("escape", "H")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.history, "the history")
        await pilot.press("y")
        with Store() as store:
            run = store.list_runs(1)[0]
        assert run.merge_sha and app.clipboard == run.merge_sha
        assert sim.github.default_branch_head()[0] == run.merge_sha
        assert toasts(seen)[-1][1] == f"merge commit {run.merge_sha[:12]} of run #{run.id}"
        await pilot.press("enter")
        assert isinstance(app.screen, RunDetailScreen)
        app.copy_to_clipboard("")
        await pilot.press("y")
        assert app.clipboard == run.merge_sha
