"""Binding ids, the ``[keys]`` remap (validation, ``config check``, the running app) and the theme
kept in the state file."""

from __future__ import annotations

import importlib
import io
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from textual.binding import Binding
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen

import nfu_tui.ui
from nfu_tui.config import ConfigLoadError, load_config
from nfu_tui.core.state import AppState
from nfu_tui.keymap import CONTEXTS, DEFAULTS, keymap_problems, normalize_key, scope
from nfu_tui.ui.screens.help import HelpScreen, section_table
from test_ui_app import SIZE, fleet_ready, make_app, shared, wait_for  # noqa: F401 (fixture)


def ui_classes() -> list[type[DOMNode]]:
    classes = []
    for info in pkgutil.walk_packages(nfu_tui.ui.__path__, "nfu_tui.ui."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, DOMNode) and obj.__module__ == module.__name__
                    and "BINDINGS" in vars(obj)):
                classes.append(obj)
    return classes


def test_every_binding_has_an_id_listed_with_its_default_keys() -> None:
    found: dict[str, str] = {}
    for cls in ui_classes():
        scopes = set()
        for b in cls.BINDINGS:
            assert isinstance(b, Binding), f"{cls.__name__}: write Binding(...), not a tuple"
            assert b.id, f"{cls.__name__}: binding {b.key!r} → {b.action} has no id"
            assert b.id not in found, f"id {b.id} is used twice"
            found[b.id] = b.key
            scopes.add(scope(b.id))
        assert len(scopes) == 1, f"{cls.__name__} mixes scopes {scopes}"
        (own,) = scopes
        contexts = [scopes_ for scopes_ in CONTEXTS.values() if own in scopes_]
        assert contexts, f"scope {own!r} ({cls.__name__}) is in no CONTEXTS entry"
        if issubclass(cls, Screen):
            modal = issubclass(cls, ModalScreen)
            assert all(("app" in c) != modal for c in contexts), f"{own}: the app's keys reach it iff it is not modal"
    assert found == DEFAULTS


def problems(keys: dict) -> list[tuple[str, str, str]]:
    return keymap_problems(keys)


def test_no_remap_and_remaps_to_the_default_have_no_problems() -> None:
    assert problems({}) == []
    assert problems({"app.refresh": "r", "main.merge-deploy": "M", "grid.hold": "x,ctrl+h", "app.help": "?"}) == []


def test_unknown_ids_are_named_with_a_suggestion() -> None:
    (problem,) = problems({"main.merge-deplo": "M"})
    assert problem == ("main.merge-deplo", "no key binding has this id", "did you mean 'main.merge-deploy'?")


@pytest.mark.parametrize(("keys", "expected"), [
    ({"main.filter": "q"}, ("main.filter", "q is also app.quit on the fleet grid")),
    ({"grid.hold": "s"}, ("grid.hold", "s is also grid.sort on the fleet grid")),
    ({"app.quit": "h"}, ("app.quit", "h is also grid.hold on the fleet grid")),
    ({"deploy-confirm.override": "y"}, ("deploy-confirm.override", "y is also deploy-confirm.yes on the deploy plan")),
    ({"main.copy": "/"}, ("main.copy", "slash is also main.filter on the fleet grid")),
])
def test_clashes_created_by_the_remap_are_errors(keys: dict, expected: tuple[str, str]) -> None:
    assert [p[:2] for p in problems(keys)][0] == expected


def test_a_modal_dialog_does_not_clash_with_the_app() -> None:
    assert problems({"confirm.yes": "q"}) == []  # the app's q does not reach past a modal dialog


@pytest.mark.parametrize(("value", "message"), [
    ("ctrl+", "'ctrl+' is not a key name"), ("ctrl+p", "ctrl+p is reserved for the command palette"),
    ("", "'' is not a key"), (3, "3 is not a key"), ("a,,b", "'' is not a key name"),
])
def test_malformed_keys(value: object, message: str) -> None:
    (problem,) = problems({"main.merge-deploy": value})
    assert problem[:2] == ("main.merge-deploy", message)


def test_normalize_key_names_characters_like_textual() -> None:
    assert [normalize_key(k) for k in ("?", "/", "-", "@", "x", "X", "ctrl+x")] == [
        "question_mark", "slash", "minus", "at", "x", "X", "ctrl+x"]


def test_load_config_and_config_check_report_keymap_errors(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[keys]\n"main.merge-deplo" = "M"\n"main.filter" = "q"\n')
    with pytest.raises(ConfigLoadError) as info:
        load_config(path)
    keys = [p.key for p in info.value.problems]
    assert keys == ["keys.main.merge-deplo", "keys.main.filter"]
    out = subprocess.run([sys.executable, "-m", "nfu_tui", "--config", str(path), "config", "check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "keys.main.merge-deplo: no key binding has this id — did you mean 'main.merge-deploy'?" in out.stderr
    assert "keys.main.filter: q is also app.quit on the fleet grid" in out.stderr
    path.write_text('[keys]\n"main.merge-deploy" = "M"\n')
    assert load_config(path).keys == {"main.merge-deploy": "M"}


async def test_the_app_uses_the_remapped_keys(shared, tmp_path):  # noqa: F811
    app = make_app(shared.sim, tmp_path, keys={"grid.hold": "x", "app.help": "f1"})
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        g.move_to("csb0")
        await pilot.press("h")  # no longer "hold"
        await pilot.pause(0.1)
        assert app.service.held() == set()
        await pilot.press("x")
        await wait_for(pilot, lambda: app.service.held() == {"csb0"}, "the hold")
        await pilot.press("x")
        await wait_for(pilot, lambda: app.service.held() == set(), "the release")
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        console = Console(width=200, record=True, file=io.StringIO())
        from nfu_tui.ui.widgets.host_grid import HostGrid

        console.print(section_table("Fleet grid", list(HostGrid.BINDINGS), app.keymap))
        plain = console.export_text()
        assert any(line.strip().startswith("x ") and "Hold" in line for line in plain.splitlines())


async def test_the_theme_picked_in_the_palette_is_kept_and_restored(shared, tmp_path):  # noqa: F811
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await fleet_ready(pilot)
        assert app.theme != "nord"
        await pilot.press("ctrl+p", *"theme")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)
        await pilot.press(*"nord")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.theme == "nord", "the theme")
        await wait_for(pilot, lambda: AppState.load().theme == "nord", "the saved theme")
    saved = json.loads((AppState.load().path).read_text())
    assert saved["theme"] == "nord" and saved["held"] == []
    again = make_app(shared.sim, tmp_path / "again")
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert again.theme == "nord"


def test_theme_survives_another_process_saving_the_state(tmp_path: Path) -> None:
    one, two = AppState.load(tmp_path / "state.json"), AppState.load(tmp_path / "state.json")
    one.set_theme("dracula")
    two.hold("web-01")  # a stale copy saving its own change keeps the theme
    fresh = AppState.load(tmp_path / "state.json")
    assert (fresh.theme, fresh.held) == ("dracula", {"web-01"})
