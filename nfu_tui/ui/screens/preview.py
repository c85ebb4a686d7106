"""``v``: preview an update PR — build it on each host (not activated) and show what it changes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from nfu_tui.core.preview import change_line, summary_line
from nfu_tui.ui.widgets.scrolling import Scroller


def preview_text(hosts: Iterable[str], results: Mapping[str, Any], *, running: bool = True) -> Text:
    """Per host: builds (package changes, security fixes first; closure delta; reboot) or why not."""
    text = Text()
    for host in hosts:
        p = results.get(host)
        if p is None:
            text.append(f"{host}: {'building…' if running else 'not built'}\n", style="dim italic")
            continue
        style = "green" if p.ok and p.reboot_needed is False else "yellow" if p.ok else "bold red"
        text.append(summary_line(p) + "\n", style=style)
        if p.ok:
            for c in p.changes:
                text.append(f"  {change_line(c)}\n", style="bold yellow" if c.security_ids else "")
        else:
            for line in p.last_lines:
                text.append(f"  | {line}\n", style="dim")
    return text


class PreviewScreen(ModalScreen[None]):
    """Builds PR ``pr`` on ``hosts`` in a worker (cached results show at once); ``f`` builds again."""

    BINDINGS = [
        Binding("f", "fresh", "Build again", tooltip="Build again even where a result for this head is cached",
                id="preview.fresh"),
        Binding("escape,q", "dismiss(None)", "Close", id="preview.close"),
    ]

    DEFAULT_CSS = """
    PreviewScreen { align: center middle; }
    PreviewScreen > Vertical {
        width: 100; max-width: 98%; height: auto; max-height: 96%;
        border: thick $accent; background: $surface; padding: 0 1;
        border-title-align: center; border-title-style: bold;
    }
    PreviewScreen Scroller { height: auto; max-height: 100%; }
    """

    def __init__(self, service: Any, pr: Any, hosts: list[str]) -> None:
        super().__init__()
        self.service, self.pr, self.hosts = service, pr, hosts
        self.results: dict[str, Any] = {}
        self.running = False

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = f"Preview PR #{self.pr.number} at {self.pr.head_sha[:7]} — built, not activated"
        with box, Scroller(id="preview-scroll"):
            yield Static(id="preview")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Scroller).focus()
        self._start(fresh=False)

    def _start(self, *, fresh: bool) -> None:
        self.results = {} if fresh else dict(self.service.cached_previews(self.pr, self.hosts))
        self.running = True
        self._render_results()
        self.run_worker(self._build(fresh), exclusive=True, group="preview")

    async def _build(self, fresh: bool) -> None:
        from nfu_tui.errors import NfuError

        def arrived(p: Any) -> None:
            self.results[p.host] = p
            self._render_results()

        try:
            await self.service.preview(self.pr, self.hosts, fresh=fresh, on_result=arrived)
        except NfuError as exc:
            self.app.notify(exc.message, title=exc.title, severity="error", markup=False)
        finally:
            self.running = False
            if self.is_attached:  # not when closed mid-build (the worker is cancelled with the screen)
                self._render_results()

    def _render_results(self) -> None:
        self.query_one("#preview", Static).update(preview_text(self.hosts, self.results, running=self.running))

    def action_fresh(self) -> None:
        if not self.running:
            self._start(fresh=True)
