"""Import hygiene: the core never imports Textual or Rich, and the layers run one way.

The Textual check imports the core in a fresh interpreter and looks; the layers check runs
import-linter's contracts from pyproject.toml (``[tool.importlinter]``: the ``layers`` contract and the
simulator's ``forbidden`` one), which read every import statement, lazy ones inside functions included;
the first-frame check keeps the TUI's start-up path free of pydantic and the HTTP stacks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nfu_tui

PACKAGE = Path(nfu_tui.__file__).parent
REPO = PACKAGE.parent


def core_modules() -> list[str]:
    mods = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts
        if parts[1] == "ui" or parts[-1] == "__main__" or (len(parts) > 2 and parts[1] == "commands" and parts[2] in ("tui", "demo")):
            continue
        mods.append(".".join(p for p in parts if p != "__init__"))
    return mods


def test_core_does_not_import_textual_or_rich() -> None:
    mods = core_modules()
    assert "nfu_tui.config" in mods and "nfu_tui.models" in mods
    code = (
        "import importlib, sys\n"
        # httpx's optional command-line client (httpx._main) imports rich whenever click is installed
        # (import-linter brings click); httpx falls back cleanly without it. Not ours, so keep it out.
        "sys.modules['httpx._main'] = None\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported: {out.stdout.strip()}"


def test_layers_run_one_way() -> None:
    code = "import sys\nfrom importlinter.cli import lint_imports\nsys.exit(lint_imports(no_cache=True, no_logo=True))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "Contracts: 2 kept, 0 broken." in out.stdout, out.stdout + out.stderr
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_first_frame_needs_neither_pydantic_nor_the_http_stacks() -> None:
    """`nfu-tui` paints its first frame (the cached fleet) before validation and clients are imported."""
    code = (
        "import sys\n"
        "import nfu_tui.cli, nfu_tui.commands.tui, nfu_tui.core.fleetcache, nfu_tui.ui.app\n"
        "heavy = ('pydantic', 'httpx', 'websockets', 'sqlite3')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in ('nfu_tui.config', 'nfu_tui.core.service'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the first frame imports: {out.stdout.strip()}"
