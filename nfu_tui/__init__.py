"""nfu-tui: keep a NixOS fleet current from the terminal."""

__version__ = "0.1.0"
