"""The key bindings by id, and the ``[keys]`` table that remaps them (no Textual here).

Every binding of the TUI has an id ``SCOPE.NAME`` (``main.merge-deploy``, ``grid.hold``);
:data:`DEFAULTS` lists them with their default keys (``tests/test_keymap.py`` checks it
against the UI's own ``BINDINGS``, so the two cannot drift). ``config.toml`` may remap any::

    [keys]
    "main.merge-deploy" = "M"
    "grid.hold" = "x,ctrl+h"

The app hands the table to ``App.set_keymap``. :func:`keymap_problems` finds unknown ids,
malformed keys and clashes — a key that would then mean two things on one screen (only
clashes your ``[keys]`` create: a screen's ``r`` deliberately shadows the global
``r``) — and ``load_config`` reports them as configuration errors naming the key.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping

# id -> default keys (comma-separated, Textual's key names)
DEFAULTS: dict[str, str] = {
    # everywhere
    "app.quit": "q",
    "app.help": "question_mark",
    "app.refresh": "r",
    "app.automation": "A",
    "app.history": "H",
    # main screen and its panes
    "main.next-pane": "tab",
    "main.prev-pane": "shift+tab",
    "main.filter": "slash",
    "main.merge-deploy": "m",
    "main.deploy-view": "D",
    "main.converge": "c",
    "main.preview": "v",
    "main.copy": "y",
    "filter.cancel": "escape",
    "grid.down": "j,down",
    "grid.up": "k,up",
    "grid.page-down": "pagedown,ctrl+d",
    "grid.page-up": "pageup,ctrl+u",
    "grid.first": "home,g",
    "grid.last": "end,G",
    "grid.select": "space",
    "grid.select-online": "a",
    "grid.clear": "escape",
    "grid.hold": "h",
    "grid.rollback": "R",
    "grid.open": "enter",
    "grid.sort": "s",
    "prs.down": "j",
    "prs.up": "k",
    "prs.first": "g",
    "prs.last": "G",
    "prs.page-down": "ctrl+d",
    "prs.page-up": "ctrl+u",
    # host detail, deploy, logs
    "host.back": "escape",
    "host.hold": "h",
    "host.rollback": "R",
    "host.copy": "y",
    "deploy.back": "escape",
    "deploy.log": "enter",
    "deploy.interleave": "i",
    "deploy.cancel": "c",
    "deploy.converge": "c",  # shown instead of cancel once the run has ended
    "deploy.continue": "o",  # only after a run stopped on unverified canaries
    "deploy.stop-waiting": "w",
    "deploy.roll-back": "b",
    "deploy.hold-failed": "h",
    "deploy.rollback-host": "R",
    "deploy.switch": "tab",
    "deploy.copy": "y",
    "log.follow": "end,G,F",
    # any scrolling pane (PR detail, logs, help, plan, a history run) and the tables (deploy, history)
    "scroll.down": "j,down",
    "scroll.up": "k,up",
    "scroll.page-down": "pagedown,ctrl+d",
    "scroll.page-up": "pageup,ctrl+u",
    "scroll.top": "home,g",
    "scroll.bottom": "end,G",
    "table.down": "j",
    "table.up": "k",
    "table.first": "home,g",
    "table.last": "end,G",
    "table.page-down": "ctrl+d",
    "table.page-up": "ctrl+u",
    # history
    "history.back": "escape",
    "history.reload": "r",
    "history.copy": "y",
    "history.detail.back": "escape",
    "history.detail.copy": "y",
    # dialogs
    "confirm.yes": "y",
    "confirm.no": "n,escape",
    "deploy-confirm.yes": "y",
    "deploy-confirm.override": "o",
    "deploy-confirm.no": "n,escape",
    "help.close": "escape,q,question_mark",
    "preview.fresh": "f",
    "preview.close": "escape,q",
    "resume.resume": "r",
    "resume.abandon": "a",
    "resume.later": "escape",
    "login.skip": "escape",
}

# The scopes whose bindings are active together (focused widget → screen → app).
# The test keeps this in step with the UI (which class owns which scope, which screens are modal).
CONTEXTS: dict[str, tuple[str, ...]] = {
    "the fleet grid": ("app", "main", "grid"),
    "the PR list": ("app", "main", "prs"),
    "the PR detail": ("app", "main", "scroll"),
    "the filter box": ("app", "main", "filter"),
    "the host detail": ("app", "host", "log", "scroll"),
    "the deploy log": ("app", "deploy", "log", "scroll"),
    "the deploy table": ("app", "deploy", "table"),
    "the history": ("app", "history", "table"),
    "a history run": ("app", "history.detail", "scroll"),
    # modal screens: the app's bindings do not reach past them
    "a confirmation": ("confirm",),
    "the deploy plan": ("deploy-confirm", "scroll"),
    "the help": ("help", "scroll"),
    "the preview": ("preview", "scroll"),
    "the resume dialog": ("resume",),
    "the login screen": ("login",),
}

# Textual's own keys: the command palette, quit, copy.
RESERVED = {"ctrl+p": "the command palette", "ctrl+q": "quit", "ctrl+c": "copy / quit"}

_KEY_RE = re.compile(r"(?:(?:ctrl|shift|alt|super|meta|hyper)\+)*(?:[a-z][a-z0-9_]*|[A-Za-z0-9])")
_REPLACEMENTS = {"solidus": "slash", "reverse_solidus": "backslash", "commercial_at": "at", "hyphen_minus": "minus",
                 "plus_sign": "plus", "low_line": "underscore"}


def scope(binding_id: str) -> str:
    return binding_id.rsplit(".", 1)[0]


def normalize_key(key: str) -> str:
    """``"?"`` → ``"question_mark"``, ``"/"`` → ``"slash"`` (as Textual names keys); others unchanged."""
    key = key.strip()
    if len(key) == 1 and not key.isalnum():
        try:
            name = unicodedata.name(key).lower().replace("-", "_").replace(" ", "_")
        except ValueError:
            return key
        return _REPLACEMENTS.get(name, name)
    return key


def keys_of(value: str) -> list[str]:
    return [normalize_key(k) for k in value.split(",")]


def keymap_problems(keys: Mapping[str, object]) -> list[tuple[str, str, str]]:
    """``[keys]`` problems as (binding id, message, hint); empty when the table is fine."""
    problems: list[tuple[str, str, str]] = []
    valid: dict[str, list[str]] = {}
    for binding_id, value in keys.items():
        if binding_id not in DEFAULTS:
            close = difflib.get_close_matches(binding_id, DEFAULTS, n=1)
            problems.append((binding_id, "no key binding has this id",
                             f"did you mean '{close[0]}'?" if close else "the ids are listed in README.md"))
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append((binding_id, f"{value!r} is not a key", 'write keys as a string, e.g. "x" or "ctrl+x,f5"'))
            continue
        parsed = keys_of(value)
        bad = [k for k in parsed if not k or not _KEY_RE.fullmatch(k)]
        if bad:
            problems.append((binding_id, f"{bad[0]!r} is not a key name",
                             'e.g. "x", "X", "ctrl+x", "f5", "question_mark"; several separated by commas'))
            continue
        reserved = [k for k in parsed if k in RESERVED]
        if reserved:
            problems.append((binding_id, f"{reserved[0]} is reserved for {RESERVED[reserved[0]]}", "choose another key"))
            continue
        valid[binding_id] = parsed
    effective = {bid: valid.get(bid, keys_of(default)) for bid, default in DEFAULTS.items()}
    changed = {bid for bid, parsed in valid.items() if parsed != keys_of(DEFAULTS[bid])}
    reported: set[tuple[str, str]] = set()
    for where, scopes in CONTEXTS.items():
        ids = [bid for bid in DEFAULTS if scope(bid) in scopes]
        for i, first in enumerate(ids):
            for second in ids[i + 1:]:
                if first not in changed and second not in changed:
                    continue  # the defaults' own shadowing is deliberate
                common = [k for k in effective[first] if k in effective[second]]
                if not common:
                    continue
                mine, other = (first, second) if first in changed else (second, first)
                if (mine, other) in reported:
                    continue
                reported.add((mine, other))
                problems.append((mine, f"{common[0]} is also {other} on {where}",
                                 f"choose another key, or remap '{other}' too"))
    return problems


__all__ = ["CONTEXTS", "DEFAULTS", "RESERVED", "keymap_problems", "keys_of", "normalize_key", "scope"]
