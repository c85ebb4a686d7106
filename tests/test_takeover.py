"""Takeover: a new PR deploy takes over the offline hosts an older waiting run queued, so each is deployed
once (by the newer run, to its merge); a waiting rollback redeploy refuses it. Against the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_engine import Deploy, scenario

from nfu_tui.core.automation import run_info
from nfu_tui.core.engine import Outcome, RunStatus
from nfu_tui.core.history import format_run, load_run
from nfu_tui.core.plan import make_plan
from nfu_tui.core.takeover import with_takeovers
from nfu_tui.errors import StateError
from nfu_tui.sim.scenario import HostSpec, PRSpec

OFFLINE_A2 = (HostSpec("a1", "desktop"), HostSpec("a2", "desktop", online=False, faults={"offline"}))


async def _pr_plan(d: Deploy, number: int) -> Any:
    """The plan for PR ``number`` as the TUI and the CLI show it (with the takeover notes)."""
    pr = await d.service.github.get_pull(number)
    return with_takeovers(d.store, make_plan(d.service.hosts(), d.cfg, set(), pr_number=number, head_sha=pr.head_sha))


def _merges(sim: Any, number: int) -> int:
    return sum(1 for method, path, *_ in sim.github.request_log
               if method == "PUT" and path.endswith(f"/pulls/{number}/merge"))


async def test_e2e_a_newer_pr_deploy_takes_over_the_host_an_older_waiting_run_queued(
        sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(*OFFLINE_A2))
    async with Deploy(sim, tmp_path) as d:
        first = await d.engine().run(await d.plan(), actor="tester", queued_wait=0)
        assert first.status is RunStatus.WAITING and first.hosts_with(Outcome.QUEUED) == ["a2"]
        newer = sim.github.open_update_pr(PRSpec(number=0, age_hours=0))

        plan = await _pr_plan(d, newer)
        assert [e.host for e in plan.queued] == ["a2"]
        note = f"takes over a2 from run #{first.run_id} (PR #42), which waits for it offline"
        assert any(w.startswith(note) for w in plan.warnings)
        assert any(line.startswith(f"Warning: {note}") for line in plan.describe())

        second = await d.engine().run(plan, actor="tester", queued_wait=0)
        assert second.status is RunStatus.WAITING and second.hosts_with(Outcome.QUEUED) == ["a2"], second.summary()
        merge_b = second.merge_sha
        assert merge_b and merge_b != first.merge_sha
        old = d.store.get_run(first.run_id)
        assert old.status == "abandoned"
        assert old.summary.startswith(f"superseded by deploy run #{second.run_id} of PR #{newer}")
        assert old.host_outcomes["a2"] == "skipped"
        assert (f"a2 skipped — taken over by deploy run #{second.run_id} of PR #{newer} (merge {merge_b[:7]})"
                in "\n".join(format_run(load_run(d.store, first.run_id))))
        audits = [e for e in d.store.audit_entries() if e.action == "deploy_takeover"]
        assert [(e.details["from_run"], e.details["run"], e.details["hosts"]) for e in audits] == [
            (first.run_id, second.run_id, ["a2"])]
        assert {r.id: run_info(r).waiting for r in d.store.unfinished_runs()} == {second.run_id: ("a2",)}
        with pytest.raises(StateError, match="already abandoned"):
            await d.engine().resume(first.run_id, actor="tester", queued_wait=0)

        sim.dashboard.set_online("a2", True)
        assert await d.service.wait_until(lambda: (h := d.service.host("a2")) is not None and h.online, 10)
        result = await d.engine().resume(second.run_id, actor="tester", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        head, _ = sim.github.default_branch_head()
        assert head == merge_b  # B's merge is on main after A's: it contains A's update
        assert sim.dashboard.hosts["a2"].generation == merge_b[:7]
        assert [c.op for c in sim.dashboard.commands.values() if c.host_id == "a2"] == ["pull", "switch"]
        assert d.store.unfinished_runs() == []
        assert _merges(sim, 42) == 1 and _merges(sim, newer) == 1


async def test_a_newer_pr_deploy_does_not_take_hosts_from_a_waiting_rollback(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(*OFFLINE_A2))
    async with Deploy(sim, tmp_path) as d:
        redeploy = d.store.create_run("deploy", actor="t", pr=41, plan={})
        d.store.record(redeploy, "revert_redeploy", parent=1)
        d.store.record(redeploy, "waiting", hosts=["a2"])

        plan = await _pr_plan(d, 42)
        refusal = f"rollback run #{redeploy} waits for a2 to roll it back when it is online; deploy once it has finished"
        assert any(w.startswith(f"refused: {refusal}") for w in plan.warnings)
        runs = len(d.store.list_runs(100))
        with pytest.raises(StateError, match=refusal):
            await d.engine().run(plan, actor="tester", queued_wait=0)
        assert _merges(sim, 42) == 0 and d.ops() == []  # refused before anything: nothing merged or deployed
        assert len(d.store.list_runs(100)) == runs
        assert run_info(d.store.get_run(redeploy)).waiting == ("a2",)  # the rollback still waits for it

        without = await d.engine().run(with_takeovers(d.store, make_plan(
            d.service.hosts(), d.cfg, set(), targets=["a1"], pr_number=42, head_sha=plan.head_sha)),
            actor="tester", queued_wait=0)
        assert without.status is RunStatus.SUCCEEDED, without.summary()
        assert run_info(d.store.get_run(redeploy)).waiting == ("a2",)


async def test_a_refused_merge_takes_nothing_over(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(*OFFLINE_A2))
    async with Deploy(sim, tmp_path) as d:
        first = await d.engine().run(await d.plan(), actor="tester", queued_wait=0)
        assert first.status is RunStatus.WAITING
        red = sim.github.open_update_pr(PRSpec(number=0, age_hours=0, ci="failure"))
        plan = await _pr_plan(d, red)
        assert any(w.startswith(f"takes over a2 from run #{first.run_id}") for w in plan.warnings)
        result = await d.engine().run(plan, actor="tester", queued_wait=0)
        assert result.status is RunStatus.REFUSED and _merges(sim, red) == 0, result.summary()
        old = d.store.get_run(first.run_id)
        assert not old.finished and run_info(old).waiting == ("a2",) and "a2" not in old.host_outcomes
        assert [e for e in d.store.audit_entries() if e.action == "deploy_takeover"] == []
