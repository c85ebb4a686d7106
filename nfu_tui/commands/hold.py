"""`nfu-tui hold HOST… [--reason TEXT]` and `nfu-tui unhold HOST…`: hold hosts back from deploys.

A held host is skipped by every plan and by automation, and a deploy that is running
(in the TUI, ``nfu-tui deploy`` or ``nfu-tui auto``, any process: the state file is
shared) leaves it untouched from the moment it is held: it is reported "held during
the run" unless it had already started (then it finishes its step). Both commands are
audited like the TUI's ``h``.

Known hosts (an unknown name exits 2 and lists them) are taken from what works
offline: the configuration's ``[hosts.NAME]`` tables, every host of the journal's past
plans, and the hosts already held; when a name is not among them and the dashboard is
configured with a stored password, its host list (``GET /api/hosts``) is asked too.

Exit codes: 0 done (also when nothing changed), 1 the state file cannot be written,
2 bad input (unknown host, bad configuration).
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hold", help="hold hosts back from deploys and automation (also during a running deploy)",
                       description="Hold hosts: plans and automation skip them, and a running deploy leaves "
                                   "them untouched from now on (a host already deploying finishes its step).")
    p.add_argument("hosts", nargs="+", metavar="HOST", help="host name(s) as the fleet knows them")
    p.add_argument("--reason", metavar="TEXT", default="", help="why (kept in the audit trail)")
    p.set_defaults(module="hold", held=True)
    u = sub.add_parser("unhold", help="release held hosts", description="Release held hosts: deploys and "
                                                                        "automation include them again.")
    u.add_argument("hosts", nargs="+", metavar="HOST", help="host name(s)")
    u.set_defaults(module="hold", held=False, reason="")


def run(args: argparse.Namespace) -> int:
    from nfu_tui.config import load_config
    from nfu_tui.core.state import AppState
    from nfu_tui.core.store import Store, local_actor
    from nfu_tui.errors import ConfigError, StateError

    prog = "nfu-tui hold" if args.held else "nfu-tui unhold"
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return 2
    names = list(dict.fromkeys(h.strip() for h in args.hosts if h.strip()))
    try:
        state = AppState.load()
        with Store() as store:
            known = offline_hosts(cfg, state, store)
            unknown = [h for h in names if h not in known]
            if unknown:
                known |= _dashboard_hosts(cfg)
                unknown = [h for h in names if h not in known]
            if not names or unknown:
                listed = ", ".join(sorted(known)) or "none (no [hosts.NAME] in the config, no past runs)"
                print(f"{prog}: unknown host(s): {', '.join(unknown) or '(none given)'} (known: {listed})",
                      file=sys.stderr)
                return 2
            changed = [h for h in names if (h in state.held) != args.held]
            for host in changed:
                state.held.add(host) if args.held else state.held.discard(host)
            if changed:
                state.save()
                details = {"hosts": sorted(changed), "source": "cli"}
                if args.reason:
                    details["reason"] = args.reason
                store.audit("hold" if args.held else "unhold", actor=local_actor(), details=details)
    except StateError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return 1
    verb = "held" if args.held else "released"
    for host in names:
        print(f"{host}: {verb}" if host in changed else f"{host}: already {'held' if args.held else 'not held'}")
    return 0


def offline_hosts(cfg, state, store) -> set[str]:  # type: ignore[no-untyped-def]
    """Host names known without the network: configured, planned in a past run, or held."""
    from nfu_tui.core.plan import DeployPlan

    known = set(cfg.hosts) | set(state.held)
    for run in store.list_runs(200):
        if run.kind != "deploy":
            continue
        try:
            plan = DeployPlan.from_dict(run.plan)
        except (KeyError, TypeError, ValueError):
            continue
        known.update(plan.hosts)
        known.update(s.host for s in plan.skipped)
    return known


def _dashboard_hosts(cfg) -> set[str]:  # type: ignore[no-untyped-def]
    """The dashboard's host list when it can be asked without a prompt (else empty)."""
    import asyncio

    from nfu_tui.config import resolve_secrets
    from nfu_tui.errors import NfuError

    if not cfg.dashboard.url:
        return set()

    async def ask() -> set[str]:
        from nfu_tui.clients.factory import fleet_backend

        secrets = resolve_secrets(cfg, use_gh=False)
        if secrets.dashboard_password is None:
            return set()
        async with fleet_backend(cfg, secrets) as client:
            return {h.id for h in await asyncio.wait_for(client.hosts(), 15)}

    try:
        return asyncio.run(ask())
    except (NfuError, TimeoutError, OSError):
        return set()
