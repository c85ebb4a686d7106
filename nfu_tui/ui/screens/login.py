"""Dashboard login, shown when the dashboard needs a password or TOTP the config lacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static

from nfu_tui.errors import LoginFailed, NfuError

if TYPE_CHECKING:
    from nfu_tui.ui.app import NfuApp


class LoginScreen(ModalScreen[bool]):
    """Password (and TOTP when asked); ``esc`` continues without the dashboard."""

    app: NfuApp

    BINDINGS = [Binding("escape", "skip", "Skip", tooltip="Continue without the dashboard", id="login.skip")]

    DEFAULT_CSS = """
    LoginScreen { align: center middle; }
    LoginScreen > Vertical {
        width: 60; max-width: 96%; height: auto;
        border: thick $primary; background: $surface; padding: 1 2;
        border-title-align: center;
    }
    LoginScreen Input { margin-bottom: 1; }
    LoginScreen #totp, LoginScreen #totp-label { display: none; }
    LoginScreen.-totp #totp, LoginScreen.-totp #totp-label { display: block; }
    LoginScreen #login-error { color: $error; height: auto; }
    LoginScreen Horizontal { height: auto; align-horizontal: right; }
    LoginScreen Button { margin-left: 2; }
    """

    def __init__(self, detail: str = "", *, needs_totp: bool = False) -> None:
        super().__init__()
        self._detail = detail
        self._needs_totp = needs_totp or "totp" in detail.lower()

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = "Log in to the NixFleet dashboard"
        with box:
            yield Static(Text(self._detail or "The dashboard needs your password.", style="dim"))
            yield Label("Password")
            yield Input(password=True, id="password")
            yield Label("TOTP code (6 digits)", id="totp-label")
            yield Input(id="totp", max_length=6, restrict=r"[0-9]*")
            yield Static(id="login-error")
            with Horizontal():
                yield Button("Log in", variant="primary", id="login")
                yield Button("Skip (esc)", id="skip")
        yield Footer()

    def on_mount(self) -> None:
        self.set_class(self._needs_totp, "-totp")
        self.query_one("#password", Input).focus()

    @on(Input.Submitted, "#password")
    def _password_done(self) -> None:
        if self.has_class("-totp"):
            self.query_one("#totp", Input).focus()
        else:
            self._submit()

    @on(Input.Submitted, "#totp")
    @on(Button.Pressed, "#login")
    def _submit(self) -> None:
        password = self.query_one("#password", Input).value
        totp = self.query_one("#totp", Input).value if self.has_class("-totp") else ""
        if not password:
            self._error("Enter the password.")
            return
        self.query_one("#login", Button).disabled = True
        self._error("Logging in…", style="dim")
        self._login(password, totp or None)

    @on(Button.Pressed, "#skip")
    def action_skip(self) -> None:
        self.dismiss(False)

    def _error(self, message: str, style: str = "") -> None:
        self.query_one("#login-error", Static).update(Text(message, style=style))

    @work(group="login", exclusive=True, exit_on_error=False, description="dashboard login")
    async def _login(self, password: str, totp: str | None) -> None:
        try:
            await self.app.service.login(password, totp)
        except LoginFailed as exc:
            self.query_one("#login", Button).disabled = False
            if exc.needs_totp and not self.has_class("-totp"):
                self.add_class("-totp")
                self._error("The dashboard asks for a TOTP code.")
                self.query_one("#totp", Input).focus()
                return
            self._error("Too many attempts; wait a minute." if exc.rate_limited else exc.message)
            self.query_one("#password", Input).value = ""
            self.query_one("#password", Input).focus()
            return
        except NfuError as exc:
            self.query_one("#login", Button).disabled = False
            self._error(f"{exc.title}: {exc}")
            return
        self.dismiss(True)
