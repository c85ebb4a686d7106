"""The footer of the full screens: their keys, with ``?`` Help (and ``^p`` palette) pinned right.

Textual's :class:`~textual.widgets.Footer` lists the focused widget's keys first and the
app's last, so at 80 columns the app's ``? Help`` fell off the end of the line. Here the
key that leads to every other key — the help — is docked right and always shown, with the
command palette's key from NARROW columns on (below, the help names the palette and the
screen's own keys need the room); the screen's keys fill the rest (cut on the right if they
must). The help binding is ``show=False`` in the app's ``BINDINGS`` so it is not listed twice.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import HorizontalGroup
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

PINNED = ("app.help",)
"""Binding ids shown at the right end of the footer whatever the width (then the palette)."""
NARROW = 100
"""Below this many columns the palette's key is left out (``?`` lists it)."""


class KeyFooter(Footer):
    """A footer whose help and palette keys never scroll off at narrow widths."""

    DEFAULT_CSS = """
    KeyFooter #pinned-keys { dock: right; width: auto; height: 1; background: $footer-background; }
    KeyFooter #pinned-keys FooterKey.-command-palette { dock: none; }
    KeyFooter.-narrow #pinned-keys FooterKey.-command-palette { display: none; }
    """

    def __init__(self) -> None:
        super().__init__(show_command_palette=False)  # yielded in the pinned group instead

    def on_resize(self) -> None:
        self.set_class(self.size.width < NARROW, "-narrow")

    def compose(self) -> ComposeResult:
        yield from super().compose()
        if not self._bindings_ready:
            return
        active = self.screen.active_bindings
        pinned = [a for a in active.values() if a.binding.id in PINNED]
        palette = active.get(self.app.COMMAND_PALETTE_BINDING) if self.app.ENABLE_COMMAND_PALETTE else None
        with HorizontalGroup(id="pinned-keys"):
            for _, binding, enabled, tooltip in pinned:
                yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                                disabled=not enabled, tooltip=tooltip).data_bind(compact=Footer.compact)
            if palette is not None:
                _, binding, enabled, tooltip = palette
                yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                                classes="-command-palette", disabled=not enabled,
                                tooltip=binding.tooltip or binding.description).data_bind(compact=Footer.compact)
