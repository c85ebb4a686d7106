"""`nfu-tui lock-diff BEFORE AFTER`: the flake.lock diff exactly as nix prints it."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lock-diff",
        help="show what changed between two flake.lock files, as nix prints it",
        description=(
            "Print the entries nix writes under 'Flake lock file updates:' for BEFORE -> AFTER "
            "(nothing when the inputs are unchanged). Exit 0 on success, 2 on bad input."
        ),
    )
    p.add_argument("before", metavar="BEFORE", help="the old flake.lock")
    p.add_argument("after", metavar="AFTER", help="the new flake.lock")
    p.add_argument(
        "--style",
        choices=("determinate", "upstream"),
        default="determinate",
        help="determinate: 7-char revs, no narHash (default); upstream: full revs and ?narHash=",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array with one object per change (path, kind, both locked refs, compare)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from nfu_tui.domain import flakelock
    from nfu_tui.errors import LockFileError
    from nfu_tui.paths import FileTooLarge, read_bounded

    locks = []
    for name in (args.before, args.after):
        try:
            locks.append(flakelock.parse_lock(read_bounded(name, flakelock.MAX_LOCK_BYTES)))
        except FileTooLarge as exc:
            return _fail(name, f"larger than {exc.limit_text}: not a flake.lock")
        except LockFileError as exc:
            return _fail(name, exc.message)
        except FileNotFoundError:
            return _fail(name, "no such file")
        except IsADirectoryError:
            return _fail(name, "is a directory, not a file")
        except PermissionError:
            return _fail(name, "permission denied")
        except OSError as exc:
            return _fail(name, exc.strerror or "cannot be read")
    old, new = locks
    changes = flakelock.diff(old, new)
    if args.json:
        doc = flakelock.to_json(changes, old, new, style=args.style)
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    else:
        text = flakelock.render_summary(changes, args.style)
    _write(text)
    return 0


def _fail(name: str, reason: str) -> int:
    print(f"nfu-tui lock-diff: {name}: {reason}", file=sys.stderr)
    return 2


def _write(text: str) -> None:
    """Write UTF-8 whatever the locale (the output has • and →)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    buffer.write(text.encode("utf-8"))
    buffer.flush()
