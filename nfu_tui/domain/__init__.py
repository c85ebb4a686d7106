"""Pure domain code: flake.lock diffs, changelogs, time parsing, maintenance windows, TOTP.

No I/O clients, no engine, no configuration: this layer imports only :mod:`nfu_tui.errors`,
:mod:`nfu_tui.models` and :mod:`nfu_tui.sanitize` (the layers are enforced by the
import-linter contracts in pyproject.toml).
"""
