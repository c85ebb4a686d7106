"""Widget behaviour that needs no services: the log's follow mode and bounds."""

from __future__ import annotations

from textual.app import App, ComposeResult

from nfu_tui.ui.widgets.log_view import HostLog


class LogApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.follow_changes: list[bool] = []

    def compose(self) -> ComposeResult:
        yield HostLog(max_lines=500)

    def on_host_log_follow_changed(self, message: HostLog.FollowChanged) -> None:
        self.follow_changes.append(message.following)


async def test_follow_pauses_when_scrolled_up_and_resumes_at_the_end():
    app = LogApp()
    async with app.run_test(size=(60, 12)) as pilot:
        log = app.query_one(HostLog)
        log.focus()
        log.show_lines([f"line {i}" for i in range(100)])
        await pilot.pause()
        assert log.following and log.is_vertical_scroll_end
        await pilot.press("up", "up")
        assert not log.following
        top = log.scroll_y
        log.add_lines([f"new {i}" for i in range(20)])
        await pilot.pause()
        assert log.scroll_y == top  # paused: new output does not pull the view down
        assert log.lines[-1] == "new 19"
        await pilot.press("end")
        await pilot.pause()
        assert log.following and log.is_vertical_scroll_end
        log.add_lines(["one more"])
        await pilot.pause()
        assert log.is_vertical_scroll_end  # following again
        assert app.follow_changes == [False, True]


async def test_sync_appends_only_new_lines_and_stays_bounded():
    app = LogApp()
    async with app.run_test(size=(60, 12)) as pilot:
        log = app.query_one(HostLog)
        buffer = [f"l{i}" for i in range(300)]
        log.sync(buffer)
        buffer = buffer[100:] + [f"l{i}" for i in range(300, 400)]  # a bounded source rotated
        log.sync(buffer)
        await pilot.pause()
        assert list(log.lines[-3:]) == ["l397", "l398", "l399"]
        assert log.line_count == 400  # nothing shown twice
        log.sync([f"m{i}" for i in range(1000)])  # cannot line up: shown afresh, bounded
        await pilot.pause()
        assert log.line_count == 500 and log.lines[-1] == "m999"


async def test_lines_are_painted_literally():
    app = LogApp()
    async with app.run_test(size=(70, 5)) as pilot:
        log = app.query_one(HostLog)
        log.show_lines(["[bold]x[/bold] [/nix/store/abc] [red]r"])
        await pilot.pause()
        assert log.render_line(0).text.startswith("[bold]x[/bold] [/nix/store/abc] [red]r")


# --- pure texts: the automation badge and status line, span tidying ------------------------


def _decision(state: str, template: str, **kw):
    from nfu_tui.core.automation import AutoState, Decision

    return Decision(AutoState(state), template, **kw)


def test_the_automation_badge_and_line_say_what_automation_does():
    from datetime import datetime, timedelta, timezone

    from nfu_tui.ui.widgets.header import (
        AutomationStatus,
        automation_badge,
        automation_text,
        header_text,
    )

    now = datetime(2026, 8, 12, 14, 0, tzinfo=timezone.utc)
    waiting = _decision("waiting-delay", "merging PR #42 in {in} — waiting for CI", due=now + timedelta(minutes=37),
                        window="next window Sat 02:00")
    on = AutomationStatus(waiting, enabled=True)
    assert automation_badge(on) == ("auto wait", "cyan")
    assert automation_text(on, now).plain == " ⚙ AUTO  merging PR #42 in 37 min — waiting for CI · next window Sat 02:00"
    assert automation_text(on, now + timedelta(minutes=36, seconds=30)).plain.endswith("<1 min — waiting for CI · next window Sat 02:00")
    window = _decision("waiting-window", "PR #42 ready — next window Sat 02:00", window="next window Sat 02:00")
    assert automation_text(AutomationStatus(window, enabled=True), now).plain.count("next window") == 1
    # the runner reports "busy" while it runs a rollback with automation off: still "off"
    busy = AutomationStatus(_decision("busy", "deploying PR #43 (run #4)"), enabled=False)
    assert automation_badge(busy) == ("auto off", "dim") and automation_text(busy, now) is None
    assert automation_badge(AutomationStatus()) is None  # before the first decision
    failed = AutomationStatus(waiting, "RuntimeError: boom; retrying in 30 s", enabled=True)
    assert automation_badge(failed) == ("auto ✗", "bold red")
    assert "automation stopped: RuntimeError: boom" in automation_text(failed, now).plain
    from nfu_tui.core.service import ConnectionStatus

    status = ConnectionStatus(fleet="live", github="ok")
    line = header_text(status, now, compact=True, automation=on).plain
    assert line.startswith(" nfu-tui  │ auto wait │ dash ● live") and len(line) <= 80
    attention = ConnectionStatus(fleet="live", github="ok", attention="run #12 paused · ✉ 1 unsent")
    line = header_text(attention, now, compact=True, automation=on).plain
    assert line.startswith(" nfu-tui  │ auto wait │ run #12 paused · ✉ 1 unsent │ dash ● live")


def test_unlead_keeps_runs_from_starting_with_a_space():
    from rich.text import Span, Text

    from nfu_tui.ui.spans import GAP, unlead

    text = Text()
    text.append("✗ hsb0 failed", style="bold red")
    text.append(" in switch", style="bold red")  # leading space of a foreground span: moved out
    text.append(": boom\n")
    text.append(" o ", style="bold reverse")  # a badge keeps its spaces
    text.append(" deploy anyway")  # unstyled text after spaces: the spaces get their own run
    unlead(text)
    plain = text.plain
    assert plain == "✗ hsb0 failed in switch: boom\n o  deploy anyway"
    assert Span(14, 23, "bold red") in text.spans
    assert Span(30, 33, "bold reverse") in text.spans and Span(33, 34, GAP) in text.spans
    assert all(plain[s.start] != " " for s in text.spans if s.style not in ("bold reverse", GAP))


def test_the_resume_dialog_says_what_the_journal_knows(tmp_path):
    from nfu_tui.core.store import Store
    from nfu_tui.ui.screens.resume import run_text

    with Store(tmp_path / "journal.sqlite3") as store:
        deploy = store.create_run("deploy", actor="alice@box", pr=42, head_sha="a" * 40,
                                  plan={"pr_number": 42, "entries": [{"host": "gpc0"}, {"host": "hsb0"}]})
        store.record(deploy, "merged", sha="b" * 40)
        store.record(deploy, "host_finished", host="gpc0", outcome="ok", phase="switch")
        store.record(deploy, "host_started", host="hsb0", phase="switch")
        revert = store.create_run("revert", actor="alice@box", pr=42, plan={
            "strategy": "revert-commit", "failed_run": deploy, "reverts_pr": 42, "hosts": ["gpc0"]})
        store.record(revert, "revert_opened", revert_pr=43, head_sha="c" * 40, url="")
        store.record(revert, "merge_requested", pr=43, sha="c" * 40)
        text = run_text(store.get_run(deploy)).plain
        assert f"Deploy run #{deploy} of PR #42 did not finish" in text and "Merge: done as bbbbbbb" in text
        assert "Hosts: 1 of 2 finished (gpc0 ok)" in text
        assert "In flight: hsb0 (switch) — resume follows its command on the dashboard" in text
        text = run_text(store.get_run(revert)).plain
        assert f"Rollback run #{revert} of PR #42 did not finish" in text
        assert f"Strategy: revert-commit after the failed run #{deploy}" in text
        assert "Revert PR: #43, merge requested" in text and "Redeploy: not started (gpc0 to redeploy)" in text
        assert "never opening or merging a revert twice" in text


class GridApp(App[None]):
    def compose(self):
        from nfu_tui.ui.widgets.host_grid import HostGrid

        yield HostGrid()


async def test_the_grid_keeps_its_online_count_per_update_as_a_full_count_would():
    import random

    from nfu_tui.models import Host
    from nfu_tui.ui.widgets.host_grid import HostGrid

    rng = random.Random(3)
    app = GridApp()
    async with app.run_test(size=(100, 20)) as pilot:
        grid = app.query_one(HostGrid)
        hosts = {f"h{i:02d}": Host(f"h{i:02d}", hostname=f"h{i:02d}", status="online") for i in range(40)}
        grid.set_hosts(hosts.values())
        for step in range(300):
            if step == 100:
                grid.set_filter("online")
            if step == 200:
                grid.set_filter("")
            changed = [hosts[h].with_changes(status=rng.choice(["online", "offline"])) for h in rng.sample(sorted(hosts), 5)]
            hosts.update((h.id, h) for h in changed)
            grid.update_hosts(changed)
            expected = sum(1 for h in grid.visible_ids if hosts[h].online)
            assert grid.shown_online == expected and grid.shown_count == len(grid.visible_ids)
        await pilot.pause()
