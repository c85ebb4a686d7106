"""`nfu-tui rollback --host HOST… [--yes]`: roll hosts back to their previous generation without the TUI.

    nfu-tui rollback --host HOST [HOST …] [--yes]
    nfu-tui rollback --resume RUN_ID

The same per-host rollback as the TUI's ``R`` (:meth:`nfu_tui.core.rollback.RollbackManager.rollback_host`):
the fleet's ``rollback`` op on each named host, one after the other, each journaled as a
``rollback`` run and audited, never sent twice: ``--resume RUN_ID`` (or the TUI) follows an
interrupted one to its outcome from its command or the System compartment. Nothing changes on GitHub.

Prints what it will do and asks on a terminal (``--yes`` skips it; without a terminal
``--yes`` is required), holds the deploy lock for the whole time (no deploy starts meanwhile),
then prints one line per state change (``12:03:04 hsb0 rollback started (command c12)``,
``12:03:20 hsb0: ok — …``) with the last lines of a failed rollback.

Exit codes: 0 every host rolled back and verified (the fleet reported System ok after it),
1 a host's rollback failed, was not verified or its outcome is unknown (or a host is offline,
a service could not be reached, another deploy holds the lock), 2 bad input (unknown host,
bad configuration, no confirmation possible).
"""

from __future__ import annotations

import argparse
import sys

PROG = "nfu-tui rollback"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollback",
        help="roll hosts back to their previous NixOS generation (the fleet's rollback op), without the TUI",
        description="Roll hosts back to their previous generation, one after the other, journaled and audited "
                    "(the TUI's R on a host). Nothing changes on GitHub.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--host", dest="hosts", action="extend", nargs="+", metavar="HOST",
                      help="the host(s) to roll back (as the fleet knows them)")
    what.add_argument("--resume", type=int, metavar="RUN_ID",
                      help="follow an interrupted per-host rollback run to its outcome (never sent again)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def run(args: argparse.Namespace) -> int:
    import asyncio

    hosts = list(dict.fromkeys(h.strip() for h in args.hosts or () if h.strip()))
    if not hosts and args.resume is None:
        return _bad("--host names no host")
    try:
        return asyncio.run(_rollback(args, hosts))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; a rollback already sent runs on and its run stays unfinished: "
              f"`{PROG} --resume RUN_ID` (or the TUI) follows it to its outcome, never sending it again",
              file=sys.stderr)
        return 130


def _bad(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def _say(text: str) -> None:
    from datetime import datetime

    print(f"{datetime.now().strftime('%H:%M:%S')} {text}", flush=True)


async def _rollback(args: argparse.Namespace, hosts: list[str]) -> int:
    from nfu_tui.clients.factory import dashboard_client, github_client
    from nfu_tui.commands.deploy import load_settings_or_ask
    from nfu_tui.core.store import DeployLock, Store
    from nfu_tui.errors import DeployLocked, NfuError

    settings = load_settings_or_ask(PROG, args.config)
    if isinstance(settings, str):
        return _bad(settings)
    cfg, secrets = settings
    try:
        dashboard = dashboard_client(cfg, secrets, insecure=args.insecure)
    except NfuError as exc:
        return _bad(exc.message)
    try:
        # Held from before the question: no deploy starts while the admin reads it or while hosts roll back.
        what = f"--resume {args.resume}" if args.resume is not None else f"--host {' '.join(hosts)}"
        with DeployLock(label=f"{PROG} {what}"):
            github = github_client(cfg, secrets)
            async with dashboard, github:
                with Store() as store:
                    return await _with_fleet(args, hosts, cfg, github, dashboard, store)
    except DeployLocked as exc:
        return _fail(f"{exc.message}; try again when it has finished")
    except NfuError as exc:  # connection, authentication, state: one line
        return _fail(f"{exc.title}: {exc}")


async def _with_fleet(args, hosts, cfg, github, dashboard, store) -> int:  # type: ignore[no-untyped-def]
    import asyncio

    from nfu_tui.commands.deploy import login
    from nfu_tui.core.live import LiveFleet
    from nfu_tui.core.notify import Outbox, WebhookNotifier
    from nfu_tui.core.rollback import RollbackManager, host_rollback_question, host_rollback_refusal
    from nfu_tui.core.state import AppState
    from nfu_tui.errors import StateError

    if args.resume is not None:
        try:
            run = store.get_run(args.resume)
        except StateError as exc:
            return _bad(exc.message)
        if run.kind != "rollback" or run.finished:
            return _bad(f"run #{run.id} is not an unfinished per-host rollback run"
                        + (" (the TUI or nfu-tui auto resumes a revert)" if run.kind == "revert" else ""))
    await login(dashboard)
    view = LiveFleet(dashboard)
    await view.start()
    try:
        outbox = Outbox(store, WebhookNotifier(cfg.notify.webhook_url)) if cfg.notify.webhook_url else None
        state = AppState.load()
        manager = RollbackManager(github, dashboard, view, store, cfg, state=state,
                                  notify=outbox.send if outbox is not None else None, sink=_on_sink)
        if args.resume is not None:
            resumed = await manager.resume(args.resume)
            print(f"  run #{args.resume}: {resumed.summary}")
            return 0 if resumed.ok else 1
        known = {h.id for h in view.hosts()}
        unknown = [h for h in hosts if h not in known]
        if unknown:
            return _bad(f"unknown host(s): {', '.join(unknown)} (known: {', '.join(sorted(known)) or 'none'})")
        refusals = [r for r in (host_rollback_refusal(h, view.host(h)) for h in hosts) if r]
        if refusals:
            return _fail(" ".join(refusals) + " Nothing was rolled back.")
        for host in hosts:
            print(host_rollback_question(host, view.host(host), held=host in state.held,
                                         hold_hint=f"nfu-tui hold {host}"))
            print()
        if not args.yes:
            if not sys.stdin.isatty():
                return _bad("refusing to roll back without confirmation: no terminal to ask on; pass --yes")
            # In a thread: the fleet stream keeps being served while the admin reads the question.
            answer = (await asyncio.to_thread(input, f"Roll back {', '.join(hosts)}? [y/N] ")).strip().lower()
            if answer not in ("y", "yes"):
                print("Nothing done.")
                return 1
        results = [await manager.rollback_host(host) for host in hosts]
    finally:
        await view.stop()
    for r in results:
        verdict = "rolled back and verified" if r.ok else {"unknown": "outcome unknown", "unverified":
                                                            "not verified"}.get(r.outcome, "failed")
        print(f"  {r.host}: {verdict} (run #{r.run_id})" + (f" — {r.detail}" if r.detail else ""))
    return 0 if all(r.ok for r in results) else 1


def _on_sink(event: str, level: str = "info", **fields) -> None:  # type: ignore[no-untyped-def]
    """The rollback manager's events as lines, like ``nfu-tui deploy`` prints its engine's."""
    host = fields.get("host", "")
    if event == "host_rollback":
        _say(f"run #{fields.get('run')} started: roll {host} back")
    elif event == "host_rollback_dispatched":
        _say(f"{host} rollback started (command {fields.get('command')})")
    elif event == "rollback_host_finished":
        _say(f"{host}: {fields.get('outcome')}" + (f" — {fields['detail']}" if fields.get("detail") else ""))
        for line in fields.get("log_excerpt") or ():
            print(f"         | {line}", flush=True)
