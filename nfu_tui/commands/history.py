"""`nfu-tui history [--json] [--limit N] [--run ID] [--details]`: runs and the audit trail.

Reads the journal/audit database in the state directory (never changes it). Text
output lists the newest runs (what, when, who incl. the GitHub login, revs, how each
host fared with the failing hosts' log excerpts), then the audit trail. ``--run ID``
shows one run with its plan, lock diff and timeline; ``--details`` adds lock diff and
timeline to every run. ``--json`` prints the ``nfu-tui.history/1`` document described
in :mod:`nfu_tui.core.history`.

Exit codes: 0 ok, 1 the database cannot be read, 2 bad arguments or unknown run.
"""

from __future__ import annotations

import argparse
import sys

from nfu_tui.commands import number

PROG = "nfu-tui history"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="list deploy/rollback runs and the audit trail",
                       description="Runs from the journal (what, when, who, revs, how each host fared) "
                       "and the append-only audit trail, newest first.")
    p.add_argument("--json", action="store_true", help="machine-readable output (schema nfu-tui.history/1)")
    p.add_argument("--limit", type=number(1, 100_000, whole=True), default=20, metavar="N",
                   help="newest N runs and audit entries (default 20)")
    p.add_argument("--run", type=int, metavar="ID", help="show one run in full")
    p.add_argument("--details", action="store_true", help="include lock diff and timeline for every run")


def run(args: argparse.Namespace) -> int:
    import json

    from datetime import datetime, timezone

    from nfu_tui.core import history as hist
    from nfu_tui.core.store import DB_NAME, Store
    from nfu_tui.errors import StateError
    from nfu_tui.paths import state_dir

    path = state_dir() / DB_NAME
    if not path.exists():  # nothing recorded yet: do not create the database for a read
        h = hist.History((), (), datetime.now(timezone.utc))
        if args.run is not None:
            print(f"{PROG}: no run {args.run} (the journal is empty)", file=sys.stderr)
            return 2
        _print(json.dumps(hist.history_json(h), indent=2) if args.json else "\n".join(hist.format_history(h)))
        return 0
    try:
        with Store(path) as store:
            if args.run is not None:
                try:
                    record = hist.load_run(store, args.run)
                except StateError as exc:
                    print(f"{PROG}: {exc.message}", file=sys.stderr)
                    return 2
                if args.json:
                    _print(json.dumps(hist.run_json(record), indent=2, ensure_ascii=False))
                else:
                    lines = hist.format_run(record, details=True)
                    if record.plan:
                        lines[1:1] = ["  plan:"] + [f"    {line}" for line in record.plan]
                    _print("\n".join(lines))
                return 0
            h = hist.load_history(store, args.limit)
    except StateError as exc:
        print(f"{PROG}: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 1
    _print(json.dumps(hist.history_json(h), indent=2, ensure_ascii=False) if args.json
           else "\n".join(hist.format_history(h, details=args.details)))
    return 0


def _print(text: str) -> None:
    try:
        print(text)
    except BrokenPipeError:  # `nfu-tui history | head`
        sys.stderr.close()
