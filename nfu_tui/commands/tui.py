"""`nfu-tui` without a subcommand: the TUI on the configured services.

Start-up: when the configuration (file bytes, ``NIXFLEET_*`` environment, flags) is the
one that validated last time (:func:`nfu_tui.core.fleetcache.config_digest`, kept in the
fleet cache), the TUI paints the cached fleet at once and validates the settings again
in a thread right after the first frame; otherwise it validates first, as any change
may have broken it. Either way a bad configuration ends with its message and exit code 2
(in the first case after the terminal is given back).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """The validated configuration and its secrets; ConfigError with the user's message otherwise."""
    from nfu_tui.config import is_loopback_url, load_settings
    from nfu_tui.errors import ConfigError

    cfg, secrets = load_settings(args.config)
    if not cfg.github.repo and not cfg.dashboard.url and not cfg.uses_ssh:
        raise ConfigError(
            "nothing to show: neither github.repo nor dashboard.url is configured.\n"
            "  Create a configuration with `nfu-tui config init`, or try `nfu-tui demo`."
        )
    url = cfg.dashboard.url
    if url.startswith("http://") and not (args.insecure or cfg.dashboard.insecure or is_loopback_url(url)):
        raise ConfigError(
            f"refusing plain http:// to {url}: the dashboard password would travel in clear.\n"
            "  Use https://, or pass --insecure (or set dashboard.insecure = true) if you really mean it."
        )
    return cfg, secrets


def run(args: argparse.Namespace) -> int:
    from nfu_tui.core import fleetcache
    from nfu_tui.errors import ConfigError
    from nfu_tui.paths import unwritable_state_dir

    digest = fleetcache.config_digest(args.config, insecure=args.insecure)
    cache = fleetcache.load()
    if cache is not None and cache.config_digest == digest and not unwritable_state_dir():
        return run_app(None, None, insecure=args.insecure, load=lambda: settings(args), cache=cache, cache_digest=digest)
    try:
        cfg, secrets = settings(args)
    except ConfigError as exc:
        print(f"nfu-tui: {exc.message}", file=sys.stderr)
        return 2
    for warning in secrets.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    problem = unwritable_state_dir()
    if problem:  # the journal opens after the first frame: say it here, like every command
        print(f"nfu-tui: {problem}", file=sys.stderr)
        return 1
    if cache is not None and cache.identity != fleetcache.identity(cfg.dashboard.url, cfg.github.repo):
        cache = None
    return run_app(cfg, secrets, insecure=args.insecure, cache=cache, cache_digest=digest)


def run_app(
    cfg: Any,
    secrets: Any,
    *,
    insecure: bool = False,
    lock_label: str = "the nfu-tui TUI",
    load: Any = None,
    cache: Any = None,
    cache_digest: str | None = None,
) -> int:
    """Run the Textual app on a FleetService built from ``cfg``/``secrets`` (created after the first frame).

    Without ``cfg``, ``load()`` gives ``(cfg, secrets)`` in a thread after the first frame
    (a ConfigError then ends the app with exit code 2, its message printed afterwards).
    """
    from nfu_tui.errors import NfuError
    from nfu_tui.ui.app import NfuApp

    loaded: dict[str, Any] = {"cfg": cfg, "secrets": secrets}

    def prepare() -> None:
        """In a thread after the first frame: settings, the heavy imports and the clients (TLS set-up)."""
        if loaded["cfg"] is None:
            loaded["cfg"], loaded["secrets"] = load()
        import nfu_tui.core.automation  # noqa: F401
        import nfu_tui.core.service  # noqa: F401
        from nfu_tui.clients.factory import fleet_backend, github_client

        c, s = loaded["cfg"], loaded["secrets"]
        loaded["github"] = github_client(c, s) if c.github.repo else None
        loaded["backend"] = fleet_backend(c, s, insecure=insecure) if c.dashboard.url else None

    def factory() -> Any:
        from nfu_tui.core.service import FleetService

        return FleetService(loaded["cfg"], loaded["secrets"], github=loaded.get("github"),
                            backend=loaded.get("backend"), insecure=insecure, lock_label=lock_label)

    try:
        app = NfuApp(service_factory=factory, prepare=prepare, bell=cfg.notify.bell if cfg is not None else None,
                     keymap=cfg.keys if cfg is not None else None, cache=cache, cache_digest=cache_digest)
        code = int(app.run() or 0)
    except NfuError as exc:
        print(f"nfu-tui: {exc}", file=sys.stderr)
        return 1
    if app.exit_message:
        print(f"nfu-tui: {app.exit_message}", file=sys.stderr)
    if cfg is None and loaded["secrets"] is not None:
        for warning in loaded["secrets"].warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if code == 2 and cache is not None:  # validated last time, not now: validate first at the next start
        from dataclasses import replace

        from nfu_tui.core import fleetcache

        fleetcache.save(replace(cache, config_digest=""))
    return code
