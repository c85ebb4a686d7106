"""Takeover: a new run deploys the offline hosts an older run still waits for, so none is deployed twice.

A PR or converge run whose hosts were offline ends ``waiting`` and deploys them once they are back. A newer
run that deploys one of them too — a converge (main's head) or a newer PR's merge, which is made on the
default branch after the older run's merge and so contains it — *takes it over*: the host is journaled in
the older run as ``skipped`` ("taken over by …"), the older run keeps waiting for its other hosts or, left
waiting for nothing, is closed ``abandoned`` (superseded). A rollback's redeploy waiting for one of them is
never taken over (it rolls that host back first): the new run is refused, naming it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from nfu_tui.errors import StateError


def waiting_runs(store: Any, plan: Any, *, exclude: int | None = None) -> list[tuple[Any, list[str]]]:
    """(run, hosts) for each unfinished deploy or converge run (but ``exclude``) that waits for offline hosts
    ``plan`` deploys too (else both would deploy them once they are back). A rollback's redeploy waiting for
    one of them refuses the new run (:class:`~nfu_tui.errors.StateError`): it rolls that host back first.
    """
    from nfu_tui.core.automation import run_info

    mine = set(plan.hosts)
    what = "converge" if plan.converge else "deploy"
    found = []
    for run in store.unfinished_runs():
        if run.kind not in ("deploy", "converge") or run.id == exclude:
            continue
        info = run_info(run)
        hosts = [h for h in info.waiting if h in mine]
        if not hosts:
            continue
        if info.recovery:
            raise StateError(f"rollback run #{run.id} waits for {', '.join(hosts)} to roll it back when it is online; "
                             f"{what} once it has finished, or without {', '.join(hosts)} (--hosts)")
        found.append((run, hosts))
    return found


def _run_name(run: Any) -> str:
    return f"run #{run.id}" + (f" (PR #{run.pr})" if run.kind == "deploy" and run.pr else f" ({run.kind})")


def with_takeovers(store: Any, plan: Any) -> Any:
    """``plan`` with a warning per older waiting run it takes hosts over from (or that refuses it), for the
    confirmation; the engine takes them over (or refuses) when it runs."""
    if plan.merge_only:
        return plan
    try:
        notes = [f"takes over {', '.join(hosts)} from {_run_name(run)}, which waits for "
                 f"{'it' if len(hosts) == 1 else 'them'} offline: that run no longer deploys "
                 f"{'it' if len(hosts) == 1 else 'them'}" for run, hosts in waiting_runs(store, plan)]
    except StateError as exc:
        notes = [f"refused: {exc}"]
    return replace(plan, warnings=plan.warnings + tuple(notes)) if notes else plan


def take_over(store: Any, waiting: Iterable[tuple[Any, list[str]]], run_id: int, plan: Any, target: str,
              actor: str) -> None:
    """Run ``run_id`` (of ``plan``, deploying ``target``) takes over the hosts the runs of :func:`waiting_runs`
    wait for: each is journaled there as ``skipped`` ("taken over by … run #N"); a run left waiting for nothing
    is closed as ``abandoned`` (superseded), one still waiting for other hosts keeps waiting for those.
    Audited (``converge_takeover`` / ``deploy_takeover``)."""
    from nfu_tui.core.automation import run_info

    what = "converge" if plan.converge else "deploy"
    by = f"{what} run #{run_id}" + ("" if plan.converge else f" of PR #{plan.pr_number}")
    for run, hosts in waiting:
        for host in hosts:
            store.record(run.id, "host_finished", host=host, outcome="skipped", detail=f"taken over by {by} ({target})")
        rest = [h for h in run_info(run).waiting if h not in hosts]
        if rest:
            store.record(run.id, "waiting", hosts=rest)
        else:
            store.finish_run(run.id, "abandoned", f"superseded by {by}, which deploys {target} to "
                                                  f"{', '.join(hosts)} once online (this run waited for them)")
        store.audit(f"{what}_takeover", actor=actor, pr=run.pr,
                    details={"run": run_id, "from_run": run.id, "hosts": hosts, "closed": not rest})


__all__ = ["take_over", "waiting_runs", "with_takeovers"]
