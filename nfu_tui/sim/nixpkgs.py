"""Realistic commit ranges for the simulator's compare endpoint.

:func:`generate_commits` produces nixpkgs-style commits (``pkg: 1.2.3 -> 1.2.4``,
``python3Packages.foo: …``, kernel bumps, ``foo: init at 0.3.1``, NixOS module changes,
``treewide:`` commits, ``Merge pull request #N from owner/branch`` merges whose body is
the PR title, CVE fixes in subject or body) following the conventions of nixpkgs'
CONTRIBUTING.md (github-api contract §7.1). :func:`generate_upstream_commits` produces
plainer commits for other flake inputs (home-manager, disko, …).

Everything is driven by the caller's ``random.Random``: the same generator state gives
the same commits. Commits are returned oldest first as plain dicts::

    {"sha", "message", "author": {"name", "email", "date"}, "committer": {…},
     "login", "committer_login", "files": [paths], "merge": bool}

Dates are ISO-8601 UTC strings spread between ``start`` and ``end``; the last commit is
dated ``end`` (it is the head of the range).
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timezone
from typing import Any

__all__ = ["generate_commits", "generate_upstream_commits"]

# Package → a plausible current version (its shape decides how it gets bumped).
_PACKAGES: dict[str, str] = {
    "ripgrep": "15.1.0", "fd": "10.3.0", "bat": "0.26.0", "eza": "0.23.4", "zoxide": "0.9.8",
    "fzf": "0.66.1", "starship": "1.24.0", "atuin": "18.10.0", "lazygit": "0.56.0", "gh": "2.83.1",
    "glab": "1.74.0", "jq": "1.8.1", "yq-go": "4.48.1", "htop": "3.4.1", "btop": "1.4.5",
    "bottom": "0.11.4", "ncdu": "2.9.2", "dust": "1.2.3", "tokei": "13.0.0", "hyperfine": "1.19.0",
    "just": "1.43.0", "direnv": "2.37.1", "nix-output-monitor": "2.1.8", "nh": "4.2.0",
    "nixd": "2.7.0", "cachix": "1.9.1", "uv": "0.9.11", "ruff": "0.14.6", "pyright": "1.1.407",
    "pnpm": "10.23.0", "nodejs_22": "22.21.1", "nodejs_24": "24.11.1", "deno": "2.5.6",
    "bun": "1.3.3", "go": "1.25.4", "rustc": "1.91.1", "cargo-nextest": "0.9.111", "zig": "0.15.2",
    "gleam": "1.13.0", "elixir": "1.19.3", "erlang": "28.1.1", "php": "8.4.15", "ruby": "3.4.7",
    "firefox": "145.0.1", "firefox-esr": "140.5.0", "thunderbird": "145.0", "chromium": "142.0.7444.175",
    "ungoogled-chromium": "142.0.7444.175", "signal-desktop": "7.80.0", "element-desktop": "1.12.4",
    "discord": "0.0.115", "vscode": "1.106.2", "zed-editor": "0.213.8", "neovim": "0.11.5",
    "vim": "9.1.1918", "helix": "25.07.1", "emacs": "30.2", "git": "2.52.0", "curl": "8.17.0",
    "openssl": "3.6.0", "openssh": "10.2p1", "gnupg": "2.4.8", "libxml2": "2.15.1", "libpng": "1.6.51",
    "libtiff": "4.7.1", "expat": "2.7.3", "sqlite": "3.51.0", "postgresql_17": "17.7",
    "postgresql_18": "18.1", "mariadb": "11.8.5", "redis": "8.2.3", "valkey": "9.0.0",
    "nginx": "1.29.3", "caddy": "2.10.2", "haproxy": "3.2.8", "traefik": "3.6.2", "unbound": "1.24.1",
    "bind": "9.20.16", "dnsmasq": "2.91", "grafana": "12.3.0", "prometheus": "3.7.3", "loki": "3.5.8",
    "home-assistant": "2025.11.3", "jellyfin": "10.11.3", "immich": "2.3.1", "nextcloud32": "32.0.2",
    "syncthing": "2.0.11", "tailscale": "1.90.8", "wireguard-tools": "1.0.20250521", "docker": "28.5.2",
    "podman": "5.7.0", "kubectl": "1.34.2", "k9s": "0.50.16", "kubernetes-helm": "4.0.0",
    "opentofu": "1.10.7", "vault": "1.21.1", "consul": "1.22.1", "minio": "2025.10.15",
    "rclone": "1.71.2", "restic": "0.18.1", "borgbackup": "1.4.2", "btrfs-progs": "6.17.1",
    "zfs": "2.3.5", "mesa": "25.2.7", "pipewire": "1.4.9", "wireplumber": "0.5.12", "systemd": "258.2",
    "networkmanager": "1.54.2", "bluez": "5.84", "cups": "2.4.15", "hyprland": "0.52.1", "sway": "1.11",
    "waybar": "0.14.0", "alacritty": "0.16.1", "kitty": "0.44.0", "wezterm": "0-unstable-2025-10-14",
    "foot": "1.25.0", "tmux": "3.6", "zellij": "0.43.1", "fish": "4.2.1", "zsh": "5.9",
    "nushell": "0.108.0", "yt-dlp": "2025.11.12", "ffmpeg": "8.0.1", "mpv": "0.40.0", "vlc": "3.0.21",
    "obs-studio": "32.0.2", "gimp": "3.0.6", "inkscape": "1.4.2", "blender": "5.0.0", "krita": "5.2.14",
    "libreoffice-fresh": "25.8.3.2", "hugo": "0.152.2", "pandoc": "3.8.2.1", "typst": "0.14.0",
    "imagemagick": "7.1.2-8", "duckdb": "1.4.2", "cmake": "4.1.2", "meson": "1.9.1", "ninja": "1.13.1",
    "gcc15": "15.2.0", "llvm_21": "21.1.6", "qemu": "10.1.2", "libvirt": "11.9.0", "incus": "6.19",
    "fwupd": "2.0.17", "linux-firmware": "20251111", "mullvad-vpn": "2025.13", "1password-gui": "8.11.18",
    "bitwarden-desktop": "2025.11.1", "obsidian": "1.10.3", "spotify": "1.2.74.477", "steam-unwrapped": "1.0.0.85",
    "lutris": "0.5.19", "wine": "10.19", "mangohud": "0.8.1", "terraform-ls": "0.38.2",
    "golangci-lint": "2.6.2", "gopls": "0.20.0", "rust-analyzer": "2025-11-24",
    "vimPlugins.nvim-treesitter": "0-unstable-2025-11-20", "tree-sitter": "0.25.10", "jujutsu": "0.35.0",
    "gitui": "0.27.0",
}

_PYTHON: tuple[str, ...] = (
    "requests", "numpy", "scipy", "pandas", "django", "flask", "fastapi", "pydantic",
    "pydantic-core", "httpx", "aiohttp", "pytest", "hypothesis", "sqlalchemy", "boto3",
    "botocore", "cryptography", "pillow", "matplotlib", "jupyterlab", "black", "mypy",
    "textual", "rich", "transformers", "torch", "urllib3", "certifi", "attrs", "uvicorn",
    "starlette", "alembic", "celery", "redis", "psycopg", "asyncpg", "lxml", "jinja2",
    "werkzeug", "click", "typer", "ruamel-yaml", "pyyaml", "hatchling", "setuptools-scm",
    "zeroconf", "bleak", "homeassistant-stubs", "aioesphomeapi", "pyatv", "yt-dlp-ejs",
)

_SECURITY_SENSITIVE: tuple[str, ...] = (
    "openssl", "openssh", "curl", "libxml2", "libpng", "libtiff", "expat", "sqlite", "git",
    "gnupg", "nginx", "haproxy", "bind", "unbound", "firefox", "thunderbird", "chromium",
    "ungoogled-chromium", "postgresql_17", "postgresql_18", "redis", "valkey", "php",
    "imagemagick", "qemu", "vault", "grafana", "nextcloud32", "immich", "python3Packages.django",
    "python3Packages.jinja2", "python3Packages.urllib3", "python3Packages.cryptography",
)

_MODULES: dict[str, str] = {
    "nginx": "services/web-servers/nginx", "caddy": "services/web-servers/caddy",
    "postgresql": "services/databases/postgresql", "home-assistant": "services/home-automation/home-assistant",
    "jellyfin": "services/misc/jellyfin", "immich": "services/web-apps/immich",
    "nextcloud": "services/web-apps/nextcloud", "tailscale": "services/networking/tailscale",
    "syncthing": "services/networking/syncthing", "prometheus": "services/monitoring/prometheus",
    "grafana": "services/monitoring/grafana", "openssh": "services/networking/ssh/sshd",
    "systemd-boot": "system/boot/loader/systemd-boot/systemd-boot", "networkd": "system/boot/networkd",
    "pipewire": "services/desktops/pipewire/pipewire", "plasma6": "services/desktop-managers/plasma6",
    "gnome": "services/desktop-managers/gnome", "zfs": "tasks/filesystems/zfs",
    "restic": "services/backup/restic", "borgbackup": "services/backup/borgbackup",
    "k3s": "services/cluster/k3s", "incus": "virtualisation/incus", "podman": "virtualisation/podman",
    "docker": "virtualisation/docker", "firewall": "services/networking/firewall",
    "acme": "security/acme", "fail2ban": "services/security/fail2ban",
    "kanidm": "services/security/kanidm", "traefik": "services/web-servers/traefik",
    "wireguard": "services/networking/wireguard",
}

_OPTIONS = (
    "settings", "extraFlags", "openFirewall", "package", "environmentFile", "enableTLS",
    "extraConfig", "dataDir", "user", "group", "logLevel", "listenAddress", "port",
)

_MODULE_CHANGES = (
    "add {opt} option", "add option {opt}", "use lib.getExe", "harden systemd unit",
    "migrate to settings (RFC 42)", "remove deprecated option {opt}", "restart on failure",
    "fix typo in {opt} description", "make {opt} default to null", "add test for {opt}",
    "wait for network-online.target", "allow {opt} to be a path",
)

_PKG_CHANGES = (
    "fix build with gcc15", "add meta.mainProgram", "adopt", "move to pkgs/by-name",
    "enable tests", "add passthru.updateScript", "modernize", "use finalAttrs",
    "fix cross compilation", "add darwin support", "drop unused dependencies",
    "fix build on aarch64-linux", "add version test", "split outputs",
)

_TREEWIDE = (
    "format with nixfmt", "remove unused `rec`", "use finalAttrs pattern where possible",
    "replace `substituteAll` with `replaceVars`", "remove `with lib;` from meta",
    "migrate fetchgit calls to `tag`", "drop references to removed packages",
    "use `lib.getExe` instead of hardcoded paths",
)

_MISC = (
    "maintainers: add {login}", "maintainers: update {login}", "doc: fix typo in release notes",
    "lib.systems: add riscv64 examples", "ci: bump actions/checkout from 5.0.0 to 6.0.0",
    "ci/eval: reduce memory usage", "nixos/doc: document {opt}", "release-notes: mention {pkg}",
)

_AUTHORS: tuple[tuple[str, str], ...] = (
    ("Ada Lindqvist", "adalind"), ("Bruno Teixeira", "bteixeira"), ("Chen Wei", "chenwei-nix"),
    ("Dana Okafor", "dokafor"), ("Emil Brandt", "ebrandt"), ("Farah Nasser", "fnasser"),
    ("Gustav Holm", "gholm"), ("Hana Kobayashi", "hkoba"), ("Ivan Petrov", "ipetrov"),
    ("Julia Novak", "jnovak"), ("Kwame Mensah", "kmensah"), ("Lena Fischer", "lfischer"),
    ("Marco Rossi", "mrossi-dev"), ("Nora Berg", "noraberg"), ("Omar Haddad", "ohaddad"),
    ("Priya Raman", "praman"), ("Quentin Leroy", "qleroy"), ("Rosa Jimenez", "rjimenez"),
    ("Sven Aalto", "saalto"), ("Tomasz Wrona", "twrona"), ("Uma Patel", "upatel"),
    ("Viktor Sand", "vsand"), ("Wen Li", "wenli"), ("Yusuf Demir", "ydemir"),
    ("Zoe Hartmann", "zhartmann"),
)
_BOT = ("R. Ryantm", "r-ryantm", "ryantm-bot@ryantm.com")
_GITHUB = ("GitHub", "web-flow", "noreply@github.com")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(value: datetime | float) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _sha(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


def _style(version: str) -> str:
    if version.startswith("0-unstable-") or (version[:4].isdigit() and version.count("-") == 2):
        return "date"
    if re.fullmatch(r"\d+", version):
        return "stamp"
    return "dotted"


def _python_version(rng: random.Random) -> str:
    return f"{rng.choice((0, 1, 2, 3, 4, 5, 24, 25))}.{rng.randint(0, 30)}.{rng.randint(0, 12)}"


def _bump(rng: random.Random, old: str, when: float) -> str:
    """The next version after ``old``: mostly patch releases, some minor, rarely major."""
    style = _style(old)
    day = datetime.fromtimestamp(when - rng.randint(0, 6) * 86400, tz=timezone.utc)
    if style == "date":
        return (f"0-unstable-{day:%Y-%m-%d}" if old.startswith("0-unstable-") else f"{day:%Y-%m-%d}")
    if style == "stamp":
        return f"{day:%Y%m%d}" if len(old) == 8 else str(int(old) + rng.randint(1, 20))
    head = re.match(r"[\d.]*\d", old)
    if head is None:
        return old + ".1"
    parts = [int(p) for p in head.group(0).split(".")]
    roll = rng.random()
    if len(parts) >= 2 and parts[0] >= 2000:  # calendar versions: 2025.11.3
        parts[-1] += 1
    elif roll < 0.04 or len(parts) == 1:
        parts = [parts[0] + 1] + [0] * (len(parts) - 1)
    elif roll < 0.25 or len(parts) == 2:
        parts = [parts[0], parts[1] + 1] + [0] * (len(parts) - 2)
    else:
        parts[-1] += rng.randint(1, 2)
    return ".".join(map(str, parts))


def _pkg_file(name: str) -> str:
    if name.startswith("python3Packages."):
        return f"pkgs/development/python-modules/{name.split('.', 1)[1]}/default.nix"
    if "." in name:
        return "pkgs/applications/editors/vim/plugins/generated.nix"
    return f"pkgs/by-name/{name[:2].lower()}/{name}/package.nix"


def _cve(rng: random.Random, year: int) -> str:
    return f"CVE-{year}-{rng.randint(10000, 69999)}"


class _Gen:
    """One range's generator state (package versions stay consistent within a range)."""

    def __init__(self, rng: random.Random, start: float, end: float, stable: bool) -> None:
        self.rng = rng
        self.start = start
        self.end = end
        self.stable = stable
        day = datetime.fromtimestamp(end, tz=timezone.utc)
        self.year = day.year
        yy = day.year % 100
        self.release = f"{yy}.11" if day.month == 12 else f"{yy}.05" if day.month >= 6 else f"{yy - 1}.11"
        self.versions: dict[str, str] = {}
        self.pr = 460000 + rng.randint(0, 9000)
        kernel_minor = rng.choice((12, 6, 1))
        self.kernels = {f"6_{kernel_minor}": rng.randint(40, 90), "6_18": rng.randint(3, 20)}

    def _next_pr(self) -> int:
        self.pr += self.rng.randint(1, 40)
        return self.pr

    def change(self, when: float) -> tuple[str, str, list[str], bool]:
        """(subject, body, files, by_bot) of one non-merge commit."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.46:
            return self._bump(rng.choice(list(_PACKAGES)), when)
        if roll < 0.60:
            return self._bump("python3Packages." + rng.choice(_PYTHON), when)
        if roll < 0.63:
            return self._kernel()
        if roll < 0.69:
            name = rng.choice(("tokstat", "kanboard-cli", "opus-stream", "gpu-screen-recorder-ui",
                               "wayland-pipewire-idle-inhibit", "nix-fast-build", "ghostty-themes",
                               "python3Packages.textual-image", "python3Packages.aiolifx-themes",
                               "sbom-tool", "lazyjournal", "television", "rmpc", "kanata-tray"))
            return f"{name}: init at {_python_version(rng)}", "", [_pkg_file(name)], False
        if roll < 0.77:
            module, path = rng.choice(list(_MODULES.items()))
            msg = rng.choice(_MODULE_CHANGES).format(opt=rng.choice(_OPTIONS))
            return f"nixos/{module}: {msg}", "", [f"nixos/modules/{path}.nix"], False
        if roll < 0.79:
            files = [_pkg_file(rng.choice(list(_PACKAGES))) for _ in range(rng.randint(3, 8))]
            return f"treewide: {rng.choice(_TREEWIDE)}", "", files, False
        if roll < 0.81:
            name = rng.choice(_SECURITY_SENSITIVE)
            cve = _cve(rng, self.year)
            return f"{name}: add patch for {cve}", f"Fixes {cve}.", [_pkg_file(name)], False
        if roll < 0.93:
            name = rng.choice(list(_PACKAGES))
            return f"{name}: {rng.choice(_PKG_CHANGES)}", "", [_pkg_file(name)], False
        text = rng.choice(_MISC).format(login=rng.choice(_AUTHORS)[1], opt=rng.choice(_OPTIONS),
                                        pkg=rng.choice(list(_PACKAGES)))
        return text, "", ["maintainers/maintainer-list.nix" if "maintainers" in text else "doc/manual.md"], False

    def _bump(self, name: str, when: float) -> tuple[str, str, list[str], bool]:
        rng = self.rng
        old = self.versions.get(name) or _PACKAGES.get(name) or _python_version(rng)
        new = _bump(rng, old, when)
        self.versions[name] = new
        subject = f"{name}: {old} -> {new}"
        body = ""
        bot = rng.random() < 0.45
        if name in _SECURITY_SENSITIVE and rng.random() < 0.25:
            cves = sorted({_cve(rng, self.year) for _ in range(rng.randint(1, 3))})
            if rng.random() < 0.3:
                subject += f" ({cves[0]})" if len(cves) == 1 else ""
            body = "Fixes " + ", ".join(cves) + "."
            bot = False
        elif not bot and _style(new) == "dotted" and rng.random() < 0.4:
            base = name.split(".")[-1]
            body = rng.choice((
                f"Changelog: https://github.com/{base}/{base}/releases/tag/v{new}",
                f"Diff: https://github.com/{base}/{base}/compare/v{old}...v{new}",
                f"https://github.com/{base}/{base}/blob/v{new}/CHANGELOG.md",
            ))
        if self.stable and rng.random() < 0.5:
            subject = f"[Backport release-{self.release}] {subject}"
        return subject, body, [_pkg_file(name)], bot

    def _kernel(self) -> tuple[str, str, list[str], bool]:
        rng = self.rng
        if rng.random() < 0.2:
            old = f"2026{rng.randint(1, 10):02d}{rng.randint(10, 28)}"
            return f"linux-firmware: {old} -> {int(old) + 14}", "", [_pkg_file("linux-firmware")], True
        series = rng.choice(list(self.kernels))
        old = self.kernels[series]
        self.kernels[series] = old + 1
        minor = series.replace("_", ".")
        return (f"linux_{series}: {minor}.{old} -> {minor}.{old + 1}", "",
                ["pkgs/os-specific/linux/kernel/kernels-org.json"], False)


def generate_commits(
    rng: random.Random, count: int, start: datetime | float, end: datetime | float, *, stable: bool = False
) -> list[dict[str, Any]]:
    """``count`` nixpkgs-like commits dated between ``start`` and ``end``, oldest first.

    About a fifth are ``Merge pull request #N from owner/branch`` merge commits whose
    body is the PR title; ``stable`` adds ``[Backport release-YY.MM]`` prefixes.
    """
    if count <= 0:
        return []
    t0, t1 = _epoch(start), _epoch(end)
    if t1 < t0:
        t0, t1 = t1, t0
    stamps = sorted(rng.uniform(t0, t1) for _ in range(count - 1)) + [t1]
    gen = _Gen(rng, t0, t1, stable)
    out: list[dict[str, Any]] = []
    for when in stamps:
        date = _iso(when)
        subject, body, files, bot = gen.change(when)
        author_name, login = rng.choice(_AUTHORS)
        if rng.random() < 0.2:
            # A merge commit: the merger is the author, GitHub the committer.
            source = _BOT[1] if bot else login
            attr = re.sub(r"^\[[^]]*\]\s*", "", subject).split(":")[0]
            branch = (f"auto-update/{attr}" if bot
                      else rng.choice(("update-", "fix-", "init-", "")) + re.sub(r"[^\w-]+", "-", attr))
            merger_name, merger = rng.choice(_AUTHORS)
            message = f"Merge pull request #{gen._next_pr()} from {source}/{branch}\n\n{subject}"
            out.append(_commit(rng, message, (merger_name, merger, f"{merger}@users.noreply.github.com"),
                               _GITHUB, date, files, merge=True))
            continue
        who = _BOT if bot else (author_name, login, f"{login}@users.noreply.github.com")
        message = subject + (f"\n\n{body}" if body else "")
        out.append(_commit(rng, message, who, who, date, files, merge=False))
    return out


def _commit(rng: random.Random, message: str, author: tuple[str, str, str], committer: tuple[str, str, str],
            date: str, files: list[str], *, merge: bool) -> dict[str, Any]:
    return {
        "sha": _sha(rng),
        "message": message,
        "author": {"name": author[0], "email": author[2], "date": date},
        "committer": {"name": committer[0], "email": committer[2], "date": date},
        "login": author[1],
        "committer_login": committer[1],
        "files": files,
        "merge": merge,
    }


_UPSTREAM_SUBJECTS = (
    "flake.lock: Update", "fix: {thing}", "feat: add {thing}", "docs: update README",
    "ci: bump cachix/install-nix-action from 30 to 31", "chore: format with nixfmt",
    "refactor: simplify {thing}", "tests: cover {thing}", "{thing}: handle missing config",
)
_THINGS = (
    "darwin support", "module options", "default settings", "the overlay", "shell completions",
    "systemd service", "activation script", "news entries", "option descriptions", "a new module",
)


def generate_upstream_commits(
    rng: random.Random, count: int, start: datetime | float, end: datetime | float, *, repo: str = ""
) -> list[dict[str, Any]]:
    """``count`` plain commits of a non-nixpkgs flake input, oldest first (same dict shape)."""
    if count <= 0:
        return []
    t0, t1 = _epoch(start), _epoch(end)
    if t1 < t0:
        t0, t1 = t1, t0
    stamps = sorted(rng.uniform(t0, t1) for _ in range(count - 1)) + [t1]
    owner = repo.split("/")[0] if "/" in repo else "upstream"
    out = []
    for when in stamps:
        subject = rng.choice(_UPSTREAM_SUBJECTS).format(thing=rng.choice(_THINGS))
        name, login = rng.choice(_AUTHORS)
        date = _iso(when)
        if rng.random() < 0.3:
            message = f"Merge pull request #{rng.randint(100, 9000)} from {login}/{subject.split(':')[0]}\n\n{subject}"
            out.append(_commit(rng, message, (owner, owner, f"{owner}@users.noreply.github.com"),
                               _GITHUB, date, ["flake.nix"], merge=True))
        else:
            who = (name, login, f"{login}@users.noreply.github.com")
            out.append(_commit(rng, subject, who, who, date, ["flake.nix" if "flake" in subject else "modules/default.nix"],
                               merge=False))
    return out
