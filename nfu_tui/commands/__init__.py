"""Subcommands of the ``nfu-tui`` CLI (see :mod:`nfu_tui.cli`)."""
