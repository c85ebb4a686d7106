"""The flake and the NixOS module: they parse (``nix-instantiate --parse``, where nix is installed),
the package reads its dependencies from pyproject.toml, and the systemd unit the module writes is
the one README.md documents (a text-level comparison that needs no nix)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NIX_FILES = ["flake.nix", "nix/module.nix", "nix/package.nix"]


# ------------------------------------------------------------------ a tiny Nix attrset reader


def _scan(text: str):
    """Yield ``(index, char, kind, depth)`` for every character of Nix source: ``kind`` is "code",
    "string" or "comment"; ``depth`` counts the brackets open around it (``${…}`` included; a
    bracket counts as outside itself).
    Handles "…" and ''…'' strings with their escapes, and ``#`` comments."""
    stack: list[str] = []  # brackets, '"' / "''" for strings, "${" for interpolations
    i = 0
    while i < len(text):
        top = stack[-1] if stack else ""
        depth = sum(1 for s in stack if s not in ('"', "''"))
        if top in ('"', "''"):
            step = 1
            if top == '"' and text[i] == "\\":
                step = 2
            elif top == "''" and text.startswith(("'''", "''$"), i):
                step = 3
            elif top == "''" and text.startswith("''\\", i):
                step = 4
            elif text.startswith(top, i):
                stack.pop()
                step = len(top)
            elif text.startswith("${", i):
                stack.append("${")
                step = 2
            for j in range(i, min(i + step, len(text))):
                yield j, text[j], "string", depth
            i += step
            continue
        c = text[i]
        if c == "#":
            while i < len(text) and text[i] != "\n":
                yield i, text[i], "comment", depth
                i += 1
            continue
        if c == '"' or text.startswith("''", i):
            quote = '"' if c == '"' else "''"
            stack.append(quote)
            for j in range(i, i + len(quote)):
                yield j, text[j], "string", depth
            i += len(quote)
            continue
        if c in "}])":
            depth -= 1  # an unmatched closer (the end of the text's own block) has depth -1
            if stack:
                stack.pop()
        yield i, c, "code", depth
        if c in "{[(":
            stack.append(c)
        i += 1


def _uncomment(text: str) -> str:
    return "".join(c for _, c, kind, _ in _scan(text) if kind != "comment")


def _block(text: str, name: str) -> str:
    """The body of ``name = { … };`` (the first one in code), comments dropped."""
    text = _uncomment(text)
    for m in re.finditer(rf"(?<![\w.-]){re.escape(name)}\s*=\s*{{", text):
        body = text[m.end():]
        for i, c, kind, depth in _scan(body):
            if kind == "code" and c == "}" and depth < 0:
                return body[:i]
        raise AssertionError(f"`{name} = {{` is not closed")
    raise AssertionError(f"no `{name} = {{` in the text")


def attrs(text: str, name: str) -> dict[str, str]:
    """``name = { k = v; … }`` as {k: v source text} (whitespace normalised, comments dropped)."""
    body = _block(text, name)
    cuts = [i for i, c, kind, depth in _scan(body) if kind == "code" and c == ";" and depth == 0]
    result, start = {}, 0
    for cut in cuts:
        key, _, value = body[start:cut].partition("=")
        result[key.strip()] = " ".join(value.split())
        start = cut + 1
    return result


def is_literal(value: str) -> bool:
    """A value the module writes as is: a plain string, a number, a boolean or a list of strings."""
    if re.fullmatch(r'"[^"$\\]*"|\d+|true|false', value):
        return True
    return bool(re.fullmatch(r'\[(\s*"[^"$\\]*")*\s*\]', value))


def readme_nix_block(marker: str) -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```nix\n(.*?)```", readme, re.S)
    matching = [b for b in blocks if marker in b]
    assert matching, f"README.md has no nix block with {marker!r}"
    return matching[0]


MODULE = (ROOT / "nix/module.nix").read_text()
UNIT = readme_nix_block("systemd.services.nfu-tui-auto")


# ------------------------------------------------------------------ tests


def _nix_instantiate() -> str:
    exe = shutil.which("nix-instantiate")
    if exe is None:
        pytest.skip("nix-instantiate is not installed (install nix to check that the .nix files parse)")
    probe = subprocess.run([exe, "--parse", "--expr", "1"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"nix-instantiate cannot run here: {probe.stderr.strip()[:200]}")
    return exe


@pytest.mark.parametrize("name", NIX_FILES)
def test_nix_files_parse(name: str) -> None:
    exe = _nix_instantiate()
    out = subprocess.run([exe, "--parse", str(ROOT / name)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_readme_nix_examples_parse() -> None:
    exe = _nix_instantiate()
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```nix\n(.*?)```", readme, re.S):
        body = block if block.lstrip().startswith("{") else "{ " + block + " }"
        expr = "nfu-tui: " + body  # the unit block names the package `nfu-tui`
        out = subprocess.run([exe, "--parse", "--expr", expr], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{out.stderr}\n{block}"


def test_package_dependencies_come_from_pyproject() -> None:
    """The package maps each pyproject dependency to the nixpkgs attribute of the same name."""
    package = (ROOT / "nix/package.nix").read_text()
    assert "project.dependencies" in package and "../pyproject.toml" in package
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in deps]
    # nixpkgs spells python packages in lower case with dashes: a name that differs needs a mapping
    assert all(re.fullmatch(r"[a-z0-9-]+", n) for n in names), names
    assert "doCheck = false" in package and "pythonRelaxDeps" in package


def test_flake_exposes_package_and_module() -> None:
    flake = (ROOT / "flake.nix").read_text()
    assert re.search(r"default\s*=\s*nfu-tui;", flake)
    assert "nixosModules.default = import ./nix/module.nix self" in flake
    options = attrs(MODULE, "options.services.nfu-tui-auto")
    assert set(options) == {"enable", "package", "user", "configFile", "environmentFile", "extraArgs", "stateDir"}


def test_module_service_config_matches_readme() -> None:
    module, readme = attrs(MODULE, "serviceConfig"), attrs(UNIT, "serviceConfig")
    assert set(module) == set(readme), (
        f"only in the module: {sorted(set(module) - set(readme))}; only in README: {sorted(set(readme) - set(module))}")
    drift = {k: (module[k], readme[k]) for k in module if is_literal(module[k]) and module[k] != readme[k]}
    assert not drift, f"module vs README: {drift}"
    # the hardening is written literally in the module (so the check above covers it)
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictAddressFamilies"):
        assert is_literal(module[key])


def test_module_unit_wiring_matches_readme() -> None:
    module, readme = attrs(MODULE, "systemd.services.nfu-tui-auto"), attrs(UNIT, "systemd.services.nfu-tui-auto")
    assert set(module) == set(readme)
    for key in ("description", "wantedBy", "wants", "after"):
        assert module[key] == readme[key], key
    env_module, env_readme = attrs(MODULE, "environment"), attrs(UNIT, "environment")
    assert set(env_module) == set(env_readme)
    assert env_module["XDG_CACHE_HOME"] == env_readme["XDG_CACHE_HOME"]


def test_user_unit_in_readme_agrees_with_module() -> None:
    """The ``~/.config/systemd/user`` variant has the same restart and stop behaviour."""
    readme = (ROOT / "README.md").read_text()
    ini = re.search(r"```ini\n(.*?)```", readme, re.S).group(1)
    service = dict(line.split("=", 1) for line in ini.split("[Service]")[1].split("[Install]")[0].split("\n")
                   if "=" in line and not line.startswith("#"))
    module = attrs(MODULE, "serviceConfig")
    for key in ("Restart", "RestartSec", "TimeoutStopSec", "KillSignal"):
        assert service[key].strip() == module[key].strip('"'), key


def test_attrs_reader_sees_drift() -> None:
    """The reader behind the comparison: a changed or missing key is noticed."""
    text = """serviceConfig = { A = "x;#"; # c; d\n B = [ "p" "q" ]; C = "${x.y} }"; D = { e = 1; };
      E = ''a ''${b} ${c} }''; };"""
    assert attrs(text, "serviceConfig") == {"A": '"x;#"', "B": '[ "p" "q" ]', "C": '"${x.y} }"',
                                            "D": "{ e = 1; }", "E": "''a ''${b} ${c} }''"}
    assert is_literal('"x"') and is_literal('[ "p" "q" ]') and not is_literal('"${x} y"')
    assert not is_literal("cfg.user")
