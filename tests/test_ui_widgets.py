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
