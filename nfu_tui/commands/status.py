"""`nfu-tui status [--json]`: the fleet and the pending update PRs, once.

JSON schema ``nfu-tui.status/1`` (stable; new keys may be added, none removed)::

    {"schema": "nfu-tui.status/1", "generated_at": ISO-8601,
     "dashboard": {"url": str, "ok": bool, "error": str | null, "dashboard_version": str | null},
     "github": {"repo": str, "ok": bool, "error": str | null,
                "rate": {"limit": int | null, "remaining": int | null, "reset": int | null}},
     "hosts": [{"id", "hostname", "online": bool, "status", "last_seen", "host_type", "device_type",
                "location", "generation", "pending_command": str | null, "held": bool,
                "reboot_needed": bool | null, "system_generation": int | null,
                "compartments": {"agent"|"git"|"lock"|"system"|"tests": {"state", "message"}}}],
                # SSH backend: Agent "unreachable" (or "error" for a refused host key) with the reason
     "update_prs": [{"number", "title", "author", "url", "head_sha", "base_sha", "created_at",
                     "ci": "green"|"red"|"pending"|"no-ci"|"unknown", "ci_summary",
                     "mergeable": bool | null, "mergeable_state", "lock_only": bool | null,
                     "superseded_by": int | null, "headline": str | null, "summary": str | null}],
     "runs": [{"id", "kind", "pr", "trigger", "state": "paused"|"waiting"|"interrupted"|"blocked",
               "reason": str, "next": str, "hosts": [{"host", "state"}]}],     # unfinished runs
     "notifications": {"undelivered": [{"id", "title", "created_at", "attempts", "last_error",
                                        "next_attempt_at"}]}}

Exit 0 when both services answered, 1 on a connection or authentication failure
(one clear line on stderr per failed service; the text output says that part is
unknown, ``--json`` has ``ok: false`` and the ``error`` for it), 2 for bad or
incomplete configuration.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="print the fleet and the pending update PRs once")
    p.add_argument("--json", action="store_true", help="machine-readable output (schema nfu-tui.status/1)")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from nfu_tui.config import load_settings, missing_settings
    from nfu_tui.errors import ConfigError

    try:
        cfg, secrets = load_settings(args.config)
    except ConfigError as exc:
        print(f"nfu-tui status: {exc.message}", file=sys.stderr)
        return 2
    for warning in secrets.warnings:
        print(f"nfu-tui status: warning: {warning}", file=sys.stderr)
    problems = missing_settings(cfg, secrets, token=False)  # a public repository can be read without one
    if problems:
        print("nfu-tui status: " + "; ".join(problems), file=sys.stderr)
        return 2
    return asyncio.run(_status(cfg, secrets, as_json=args.json, insecure=args.insecure))


async def _status(cfg, secrets, *, as_json: bool, insecure: bool) -> int:  # type: ignore[no-untyped-def]
    import json
    from datetime import datetime, timezone

    from nfu_tui.backends.base import info_for
    from nfu_tui.clients.factory import fleet_backend, github_client
    from nfu_tui.core.state import AppState
    from nfu_tui.errors import NfuError
    from nfu_tui.models import COMPARTMENTS

    held = AppState.load().held
    report: dict = {"schema": "nfu-tui.status/1", "generated_at": datetime.now(timezone.utc).isoformat()}
    failures: list[str] = []
    try:
        backend = fleet_backend(cfg, secrets, insecure=insecure)
    except NfuError as exc:
        print(f"nfu-tui status: {exc.message}", file=sys.stderr)
        return 2
    github = github_client(cfg, secrets)
    async with backend, github:
        hosts: list = []
        dash = {"url": "ssh" if cfg.uses_ssh else cfg.dashboard.url, "ok": False, "error": None, "dashboard_version": None}
        try:
            await backend.login()
            snap = await backend.full_state()
            hosts = list(snap.hosts.values())
            dash.update(ok=True, dashboard_version=snap.dashboard_version)
        except NfuError as exc:
            dash["error"] = exc.message
            failures.append(f"{'SSH hosts' if cfg.uses_ssh else 'dashboard ' + cfg.dashboard.url}: {exc.message}")
        report["dashboard"] = dash

        prs_out: list[dict] = []
        ghr = {"repo": cfg.github.repo, "ok": False, "error": None, "rate": {}}
        try:
            prs = await github.list_update_prs()
            for pr in prs:
                detail = await github.get_pull(pr.number)
                ci = await github.ci_status(pr.head_sha)
                headline = summary = None
                try:
                    exp = await github.explain(detail)
                    headline = exp.headline
                    summary = exp.summary_text
                except NfuError as exc:
                    headline = f"(no explanation: {exc.message})"
                prs_out.append(
                    {
                        "number": pr.number,
                        "title": pr.title,
                        "author": pr.author,
                        "url": pr.html_url,
                        "head_sha": pr.head_sha,
                        "base_sha": pr.base_sha,
                        "created_at": pr.created_at.isoformat() if pr.created_at else None,
                        "ci": ci.verdict.value,
                        "ci_summary": ci.summary,
                        "mergeable": detail.mergeable,
                        "mergeable_state": detail.mergeable_state,
                        "lock_only": detail.lock_only,
                        "superseded_by": pr.superseded_by,
                        "headline": headline,
                        "summary": summary,
                    }
                )
            ghr["ok"] = True
        except NfuError as exc:
            ghr["error"] = exc.message
            failures.append(f"GitHub {cfg.github.repo}: {exc.message}")
        r = github.rate
        ghr["rate"] = {"limit": r.limit, "remaining": r.remaining, "reset": r.reset_epoch}
        report["github"] = ghr
        report["update_prs"] = prs_out

    _journal(report, failures)
    report["hosts"] = [
        {
            "id": h.id,
            "hostname": h.name,
            "online": h.online,
            "status": h.status,
            "last_seen": h.last_seen or None,
            "host_type": h.host_type,
            "device_type": h.device_type,
            "location": h.location,
            "generation": h.generation or None,
            "pending_command": h.pending_command or None,
            "reboot_needed": h.reboot_needed,
            "system_generation": h.system_generation,
            "held": h.id in held,
            "compartments": {
                c: {"state": h.compartment(c).state.value, "message": h.compartment(c).message} for c in COMPARTMENTS
            },
        }
        for h in hosts
    ]

    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_text(report, info_for(cfg))
    for failure in failures:
        print(f"nfu-tui status: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _journal(report: dict, failures: list[str]) -> None:
    """Unfinished runs and undelivered notifications from the state database."""
    from nfu_tui.core.history import open_run
    from nfu_tui.core.store import Store
    from nfu_tui.errors import StateError

    report["runs"], report["notifications"] = [], {"undelivered": []}
    try:
        with Store() as store:
            report["runs"] = [open_run(run) for run in store.unfinished_runs()]
            report["notifications"]["undelivered"] = [
                {"id": e.id, "title": e.title, "created_at": e.created_at.isoformat(), "attempts": e.attempts,
                 "last_error": e.last_error, "next_attempt_at": e.next_attempt_at.isoformat()}
                for e in store.undelivered_notifications()]
    except StateError as exc:
        failures.append(exc.message)


GLYPH = {"ok": "✓", "outdated": "↑", "error": "✗", "working": "⟳", "unknown": "?", "unreachable": "⊘"}


def _print_text(report: dict, backend) -> None:  # type: ignore[no-untyped-def]
    from nfu_tui.sanitize import sanitize_line

    hosts = report["hosts"]
    online = sum(1 for h in hosts if h["online"])
    dash = report["dashboard"]
    if dash["ok"]:
        print(f"Fleet: {len(hosts)} hosts, {online} online  ({dash['url']})")
    else:  # not "0 hosts": nothing is known about the fleet
        print(f"Fleet: unknown — {backend.noun} could not be read ({dash['url']})")
    if hosts:
        width = max(len(h["hostname"]) for h in hosts)
        print(f"  {'host'.ljust(width)}  state    A G L S T  command")
        for h in hosts:
            cells = " ".join(GLYPH.get(h["compartments"][c]["state"], "?") for c in ("agent", "git", "lock", "system", "tests"))
            state = "online" if h["online"] else "offline"
            extra = " [held]" if h["held"] else ""
            extra += {True: " [reboot needed]", False: ""}.get(h.get("reboot_needed"), "")
            print(f"  {sanitize_line(h['hostname']).ljust(width)}  {state:<7}  {cells}  {h['pending_command'] or '-'}{extra}")
            if report["dashboard"]["url"] == "ssh":  # no dashboard page to look at: say why a host is red
                for c in ("agent", "git", "system", "tests"):
                    if h["compartments"][c]["state"] in ("error", "unreachable"):
                        print(f"  {''.ljust(width)}  {c}: {sanitize_line(h['compartments'][c]['message'])}")
    prs = report["update_prs"]
    print()
    if not report["github"]["ok"]:  # not "no PRs": nothing is known about them
        print(f"Update PRs: unknown — GitHub could not be read ({report['github']['repo']})")
    elif not prs:
        print(f"No open update PRs in {report['github']['repo']}.")
    for pr in prs:
        sup = f"  (superseded by #{pr['superseded_by']})" if pr["superseded_by"] else ""
        mergeable = {True: "mergeable", False: "not mergeable", None: "mergeability unknown"}[pr["mergeable"]]
        lock = {True: "lock-only", False: "also changes other files", None: ""}[pr["lock_only"]]
        print(f"PR #{pr['number']} {sanitize_line(pr['title'])}{sup}")
        print(f"  CI {pr['ci']} · {mergeable} · {lock} · {pr['url']}")
        if pr["headline"]:
            print(f"  {sanitize_line(pr['headline'])}")
    if report["runs"]:
        print("\nOpen runs:")
    for run in report["runs"]:
        what = f"{run['kind']} PR #{run['pr']}" if run["pr"] else run["kind"]
        print(f"  #{run['id']} {what} ({run['trigger']}) — {run['state']}: {sanitize_line(run['reason'])}")
        if run["hosts"]:
            print("      " + " · ".join(f"{h['host']} {h['state']}" for h in run["hosts"]))
        print(f"      next: {run['next']}")
    undelivered = report["notifications"]["undelivered"]
    if undelivered:
        oldest = undelivered[0]
        print(f"\nNotifications: {len(undelivered)} undelivered (oldest \"{sanitize_line(oldest['title'])}\", "
              f"{oldest['attempts']} attempt(s), last error {oldest['last_error'] or 'none yet'}); retried "
              "by nfu-tui auto or the TUI")
    rate = report["github"]["rate"]
    if rate.get("remaining") is not None:
        print(f"\nGitHub rate budget: {rate['remaining']}/{rate['limit']}")
