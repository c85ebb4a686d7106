"""`nfu-tui preview --pr N`: what an update PR would change on each host, before it is merged (SSH backend).

Every chosen host builds the PR head's configuration without activating it
(``nixos-rebuild build --flake``) and compares it with its running system
(``nix store diff-closures /run/current-system ./result``): package version changes,
the closure size delta, whether the new kernel/initrd/modules need a reboot, and build
failures; security fixes (from the PR's changelog) first. Results are cached by (host, PR
head sha), shared with the TUI and automation (nfu_tui/core/preview.py). Exit codes: 0 every host built, 1 a host failed to build or was unreachable,
2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import sys

PROG = "nfu-tui preview"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preview", help="build an update PR on each host (not activated) and show what it changes "
                                       '(fleet.backend = "ssh")')
    p.add_argument("--pr", type=int, required=True, metavar="N", help="the update PR")
    p.add_argument("--hosts", metavar="A,B", help="only these hosts (default: every configured host)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--fresh", action="store_true", help="build again even where a result for this PR head is cached")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from nfu_tui.config import load_settings, missing_settings
    from nfu_tui.errors import ConfigError

    try:
        cfg, secrets = load_settings(args.config)
    except ConfigError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 2
    if not cfg.uses_ssh:
        print(f'{PROG}: needs fleet.backend = "ssh" (the dashboard cannot build without activating)', file=sys.stderr)
        return 2
    problems = missing_settings(cfg, secrets, token=False)
    if problems:
        print(f"{PROG}: " + "; ".join(problems), file=sys.stderr)
        return 2
    hosts = sorted(cfg.hosts)
    if args.hosts is not None:
        wanted = [h.strip() for h in args.hosts.split(",") if h.strip()]
        unknown = [h for h in wanted if h not in cfg.hosts]
        if not wanted or unknown:
            print(f"{PROG}: unknown host(s): {', '.join(unknown) or '(none named)'} "
                  f"(known: {', '.join(hosts)})", file=sys.stderr)
            return 2
        hosts = wanted
    return asyncio.run(_preview(cfg, secrets, args.pr, hosts, as_json=args.json, fresh=args.fresh))


async def _preview(cfg, secrets, number: int, hosts: list[str], *, as_json: bool, fresh: bool) -> int:  # type: ignore[no-untyped-def]
    import json

    from nfu_tui.backends.ssh import SshFleet
    from nfu_tui.clients.factory import github_client
    from nfu_tui.core.preview import PreviewCache, preview_pr, report_json, report_lines
    from nfu_tui.errors import GitHubNotFound, NfuError
    from nfu_tui.sanitize import sanitize_line

    async with github_client(cfg, secrets) as github:
        try:
            pr = await github.get_pull(number, wait_mergeable=False)
        except GitHubNotFound:
            print(f"{PROG}: PR #{number} not found in {cfg.github.repo}", file=sys.stderr)
            return 2
        except NfuError as exc:
            print(f"{PROG}: {exc.title}: {exc}", file=sys.stderr)
            return 1
        try:
            changelog = (await github.explain(pr)).changelog
        except NfuError:  # without a changelog the changes are shown, just not marked as security fixes
            changelog = None
    async with SshFleet.from_config(cfg) as fleet:
        results = await preview_pr(fleet, pr, hosts, changelog=changelog, cache=PreviewCache(), fresh=fresh)
    if as_json:
        print(json.dumps(report_json(pr.number, pr.head_sha, results), indent=2, ensure_ascii=False))
    else:
        print(f"Preview of PR #{pr.number} ({pr.head_sha[:7]}) {sanitize_line(pr.title)}: built, not activated")
        for r in results:
            print("\n".join(report_lines(r)))
    return 0 if all(r.ok for r in results) else 1
