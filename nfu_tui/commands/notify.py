"""`nfu-tui notify [--retry]`: the notifications not delivered yet, and delivering them now.

Every notification goes through the durable outbox in the state database (see
:class:`nfu_tui.core.notify.Outbox`); a failed delivery is retried with backoff by the TUI
and ``nfu-tui auto`` (``auto --once`` retries those due on each run). Without options this
lists the undelivered ones with their attempts and last error. ``--retry`` tries each of them
once now, without waiting for its next attempt (one another process is delivering right now
is left to it).

Exit codes: 0 listed, or ``--retry`` left nothing undelivered; 1 ``--retry`` left some undelivered (or
the state database cannot be read); 2 bad configuration, or ``--retry`` without ``notify.webhook_url``.
"""

from __future__ import annotations

import argparse
import sys

PROG = "nfu-tui notify"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("notify", help="list the notifications not delivered yet; --retry delivers them now",
                       description="The webhook notifications not delivered yet (from the outbox in the state "
                                   "database); --retry tries each of them once now.")
    p.add_argument("--retry", action="store_true", help="try every undelivered notification now, ignoring backoff")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from nfu_tui.config import load_config
    from nfu_tui.core.history import local_time
    from nfu_tui.core.store import Store
    from nfu_tui.errors import ConfigError, StateError

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 2
    url = cfg.notify.webhook_url
    if args.retry and not url:
        print(f"{PROG}: no notify.webhook_url configured: there is nowhere to deliver to", file=sys.stderr)
        return 2
    try:
        with Store() as store:
            delivered = asyncio.run(_retry(store, url)) if args.retry else 0
            left = store.undelivered_notifications()
    except StateError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 1
    if args.retry:
        print(f"{delivered} delivered now" + (f", {len(left)} still undelivered" if left else ""))
    if not left:
        print("No undelivered notifications.")
        return 0
    print("Undelivered notifications (retried by nfu-tui auto, the TUI, or nfu-tui notify --retry):")
    for e in left:
        print(f"  {local_time(e.created_at)}  {e.title} — {e.attempts} attempt(s)"
              + (f", last error {e.last_error}" if e.last_error else "")
              + f", next attempt {local_time(e.next_attempt_at)}")
    return 1 if args.retry else 0


async def _retry(store, url: str) -> int:  # type: ignore[no-untyped-def]
    from nfu_tui.core.notify import Outbox, WebhookNotifier

    async with WebhookNotifier(url) as notifier:
        return await Outbox(store, notifier).deliver_due(everything=True)
