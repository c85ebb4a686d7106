"""`nfu-tui config check|init|path`: validate, create or locate the configuration."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check, create or locate the configuration file")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    csub.add_parser(
        "check",
        help="validate the configuration; print every problem (exit 2) or the effective settings with secrets as *** (exit 0)",
    )
    csub.add_parser("init", help="write a starter config.toml (never overwrites an existing file)")
    csub.add_parser("path", help="print the configuration file path in use")


def ssh_problems(cfg) -> list[str]:  # type: ignore[no-untyped-def]
    """What keeps the SSH backend from reaching hosts: the known_hosts and identity files must be readable."""
    problems = []
    known = cfg.ssh.known_hosts.expanduser()
    if not known.is_file():
        problems.append(f"ssh.known_hosts: {known} does not exist — host keys are checked strictly against it "
                        "(add each host with `ssh-keyscan -p PORT HOST >> FILE` after checking its fingerprint)")
    identity = cfg.ssh.identity_file
    if identity is not None and not identity.expanduser().is_file():
        problems.append(f"ssh.identity_file: {identity.expanduser()} does not exist")
    return problems


def run(args: argparse.Namespace) -> int:
    from nfu_tui.config import (
        ConfigLoadError,
        default_config_path,
        effective_summary,
        load_config,
        placeholder_problems,
        resolve_secrets,
        write_starter,
    )
    from nfu_tui.errors import ConfigError

    if args.config_command == "path":
        print(args.config or default_config_path())
        return 0
    if args.config_command == "init":
        target = args.config or default_config_path()
        try:
            path = write_starter(target)
        except ConfigError as exc:
            print(f"nfu-tui config init: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {path} — edit github.repo and dashboard.url, then run `nfu-tui config check`")
        return 0
    # check: every problem in one run, the same rules as the commands
    try:
        cfg = load_config(args.config)
    except ConfigLoadError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    problems: list[str] = []
    if not cfg.github.repo:
        problems.append("github.repo: not set — write it as owner/name (or env NIXFLEET_GITHUB_REPO)")
    if cfg.uses_ssh:
        problems += ssh_problems(cfg)
    elif not cfg.dashboard.url:
        problems.append("dashboard.url: not set — the NixFleet dashboard base URL (or env NIXFLEET_URL)")
    else:
        from nfu_tui.clients.dashboard import validate_url
        from nfu_tui.errors import DashboardError

        try:
            validate_url(cfg.dashboard.url, args.insecure or cfg.dashboard.insecure)
        except DashboardError as exc:
            problems.append(f"dashboard.url: {exc.message}")
    problems += placeholder_problems(cfg)
    secret_problems: list[str] = []
    secrets = resolve_secrets(cfg, problems=secret_problems)
    problems += [f"secrets: {p}" for p in secret_problems]
    for w in secrets.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if problems:
        where = cfg.source or "configuration"
        print(f"{where}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    print("configuration OK")
    for line in effective_summary(cfg, secrets):
        print(f"  {line}")
    return 0
