"""Converge: the default branch's head to every host behind it, no merge — lag rules, the plan,
the journal, and end-to-end runs against the simulator's real servers."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_engine import Deploy, scenario

from nfu_tui.core.automation import run_info
from nfu_tui.core.converge import fleet_lag, lag_from_compare, lag_from_compartments
from nfu_tui.core.takeover import waiting_runs
from nfu_tui.core.engine import HostFinished, Outcome, RunStatus
from nfu_tui.core.history import format_run, history_json, load_history, load_run
from nfu_tui.core.plan import DeployPlan, HostLag, SkipReason, make_plan
from nfu_tui.core.store import MIGRATIONS, Store
from nfu_tui.errors import GitHubError, GitHubNotFound, StateError
from nfu_tui.models import CompartmentState, Host, StatusCheck
from nfu_tui.sim.scenario import HostSpec

HEAD = "9f8e7d6" + "0" * 33


def cmp(status: str, ahead: int = 0, behind: int = 0) -> SimpleNamespace:
    return SimpleNamespace(status=status, ahead_by=ahead, behind_by=behind)


@pytest.mark.parametrize(
    ("comparison", "behind", "text"),
    [
        (cmp("identical"), False, "at main 9f8e7d6"),
        (cmp("ahead", ahead=3), True, "a1b2c3d → 9f8e7d6, 3 commits behind"),
        (cmp("ahead", ahead=1), True, "a1b2c3d → 9f8e7d6, 1 commit behind"),
        (cmp("behind", behind=2), False, "a1b2c3d is ahead of main 9f8e7d6 by 2 commits: left alone"),
        (cmp("diverged", ahead=4, behind=1), True, "a1b2c3d → 9f8e7d6, 4 commits behind (1 commit of a1b2c3d are"),
    ],
)
def test_lag_from_compare(comparison: Any, behind: bool, text: str) -> None:
    lag = lag_from_compare("a1b2c3d", HEAD, "main", comparison)
    assert lag.behind is behind and lag.text.startswith(text)


def _host(name: str, gen: str, git: CompartmentState = CompartmentState.OK,
          lock: CompartmentState = CompartmentState.OK, message: str = "") -> Host:
    return Host(id=name, generation=gen, git=StatusCheck(git, message), lock=StatusCheck(lock))


def test_lag_of_a_mirror_host_comes_from_the_dashboards_git_and_lock() -> None:
    assert lag_from_compartments(_host("m", "1111111"), "main").behind is False
    behind = lag_from_compartments(_host("m", "1111111", CompartmentState.OUTDATED, message="Behind remote (1 → 2)"), "main")
    assert behind.behind is True and "Behind remote (1 → 2)" in behind.text and "mirror" in behind.text
    unknown = lag_from_compartments(_host("m", "1111111", CompartmentState.ERROR), "main")
    assert unknown.behind is None and unknown.text.startswith("cannot tell")


class FakeGitHub:
    """compare answers per base generation; counts requests (one per distinct generation)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.compares: list[str] = []

    async def default_branch(self) -> str:
        return "main"

    async def branch_head(self, branch: str) -> str:
        return HEAD

    async def commits_between(self, base: str, head: str) -> Any:
        self.compares.append(base)
        answer = self.answers[base]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_fleet_lag_one_compare_per_generation_and_fallbacks() -> None:
    github = FakeGitHub({"aaaaaaa": cmp("ahead", ahead=2), "bbbbbbb": GitHubNotFound("no such commit"),
                         "ccccccc": GitHubError("boom")})
    hosts = [_host("h1", "aaaaaaa"), _host("h2", "aaaaaaa"), _host("h3", HEAD[:7]), _host("h4", ""),
             _host("mirror", "bbbbbbb", CompartmentState.OUTDATED), _host("h5", "ccccccc")]
    branch, target, lag = await fleet_lag(github, hosts)
    assert (branch, target) == ("main", HEAD)
    assert github.compares == ["aaaaaaa", "bbbbbbb", "ccccccc"]
    assert lag["h1"] == lag["h2"] == HostLag(True, "aaaaaaa → 9f8e7d6, 2 commits behind")
    assert lag["h3"] == HostLag(False, "at main 9f8e7d6")
    assert lag["h4"].behind is None
    assert lag["mirror"].behind is True and "mirror" in lag["mirror"].text
    assert lag["h5"] == HostLag(True, "ccccccc → 9f8e7d6")  # not at the head; how far is unknown


def test_converge_plan_deploys_only_hosts_behind_and_round_trips(tmp_path: Path) -> None:
    from nfu_tui.config import Config

    hosts = [Host(id="a", status="online"), Host(id="b", status="online"), Host(id="c", status="offline"),
             Host(id="d", status="online")]
    lag = {"a": HostLag(True, "1111111 → 9f8e7d6, 2 commits behind"), "b": HostLag(False, "at main 9f8e7d6"),
           "c": HostLag(True, "1111111 → 9f8e7d6, 2 commits behind")}
    plan = make_plan(hosts, Config(), {"d"}, head_sha=HEAD, lag=lag, branch="main")
    assert plan.converge and not plan.merge_only and plan.subject == "converge to main 9f8e7d6"
    assert [e.host for e in plan.entries] == ["a"] and [e.host for e in plan.queued] == ["c"]
    skipped = {s.host: (s.reason, s.detail) for s in plan.skipped}
    assert skipped == {"b": (SkipReason.NOT_BEHIND, "at main 9f8e7d6"), "d": (SkipReason.HELD, "held")}
    text = "\n".join(plan.describe())
    assert "Converge to main (9f8e7d6), no merge: deploy 1 host(s) behind it, 1 queued" in text
    assert "a (other): 1111111 → 9f8e7d6, 2 commits behind" in text and "b: at main 9f8e7d6" in text
    assert DeployPlan.from_dict(plan.to_dict()) == plan


def test_a_version_1_journal_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    from nfu_tui.core.store import migrate

    migrate(conn, MIGRATIONS[:1])
    conn.execute("INSERT INTO runs (kind, pr, status, plan, actor, trigger, created_at, updated_at) "
                 "VALUES ('deploy', 42, 'running', '{}', 'me', 'manual', '2026-01-01T00:00:00+00:00', "
                 "'2026-01-01T00:00:00+00:00')")
    conn.execute("INSERT INTO run_steps (run_id, at, step, data) VALUES (1, '2026-01-01T00:00:00+00:00', "
                 "'merged', '{\"sha\": \"abc\"}')")
    conn.close()
    with Store(path) as store:
        (old,) = store.unfinished_runs()
        assert old.kind == "deploy" and old.pr == 42 and [s.step for s in store.get_run(1).steps] == ["merged"]
        run_id = store.create_run("converge", actor="me", head_sha=HEAD, plan={})
        assert store.get_run(run_id).kind == "converge"
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA foreign_key_check").fetchall() == []
    assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


# ============================================================ end to end (simulator)


async def test_e2e_converge_after_a_cancelled_run_brings_every_host_to_main_with_one_merge(
        sim_factory: Any, tmp_path: Path) -> None:
    hosts = [HostSpec("a1", "desktop"), HostSpec("a2", "desktop"), HostSpec("a3", "desktop"),
             HostSpec("a4", "desktop")]
    sim = await sim_factory(scenario(*hosts))
    async with Deploy(sim, tmp_path) as d:
        eng = d.engine()
        eng.subscribe(lambda ev: eng.cancel() if isinstance(ev, HostFinished) and ev.host == "a1" else None)
        cancelled = await eng.run(await d.plan(), actor="tester", queued_wait=0)
        assert cancelled.status is RunStatus.CANCELLED and cancelled.outcome("a1").outcome is Outcome.OK
        head, _ = sim.github.default_branch_head()
        behind = [h for h in ("a2", "a3", "a4") if d.service.host(h).generation != head[:7]]
        assert behind == ["a2", "a3", "a4"]

        plan = await d.service.plan_converge()
        assert plan.converge and plan.head_sha == head and plan.branch == "main"
        assert [e.host for e in plan.entries] == behind
        for entry in plan.entries:
            assert entry.behind.endswith("behind") and f"→ {head[:7]}" in entry.behind
        assert {s.host: s.detail for s in plan.skipped} == {"a1": f"at main {head[:7]}"}

        # Journaled as a process that died right after confirming leaves it, then resumed from the journal.
        run_id = d.store.create_run("converge", actor="tester", head_sha=plan.head_sha, plan=plan.to_dict())
        result = await d.engine().resume(run_id, actor="tester", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        assert result.summary().startswith(f"converge to main {head[:7]}: succeeded")
        assert sim.github.default_branch_head()[0] == head  # nothing merged, the branch did not move
        assert [r.path for r in sim.github.request_log if r.method == "PUT" and r.path.endswith("/merge")] == [
            f"/repos/{sim.github.repo}/pulls/42/merge"]
        for h in ("a1", "a2", "a3", "a4"):
            assert sim.dashboard.hosts[h].generation == head[:7]
        run = d.store.get_run(result.run_id)
        assert run.kind == "converge" and run.pr is None and run.status == "succeeded" and run.merge_sha is None
        record = next(r for r in history_json(load_history(d.store))["runs"] if r["id"] == result.run_id)
        assert record["kind"] == "converge" and record["plan"][0].startswith("Converge to main")

        again = await d.service.plan_converge()
        assert again.entries == () and "Nothing to deploy: every host is at main" in "\n".join(again.describe())


async def test_e2e_converge_while_an_update_pr_is_open_targets_main_not_the_pr(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop")))
    async with Deploy(sim, tmp_path) as d:
        head, _ = sim.github.default_branch_head()
        plan = await d.service.plan_converge()
        assert plan.entries == () and plan.head_sha == head  # every host is at main; PR #42 stays open
        pr = await d.service.github.get_pull(42)
        assert pr.state == "open" and pr.head_sha != head


async def test_e2e_converge_deploys_a_host_that_was_offline_during_the_pr_run(sim_factory: Any, tmp_path: Path) -> None:
    hosts = [HostSpec("a1", "desktop"), HostSpec("a2", "desktop", online=False, faults={"offline"})]
    sim = await sim_factory(scenario(*hosts))
    async with Deploy(sim, tmp_path) as d:
        first = await d.engine().run(await d.plan(), actor="tester", queued_wait=0)
        assert first.status is RunStatus.WAITING and first.hosts_with(Outcome.QUEUED) == ["a2"]
        head, _ = sim.github.default_branch_head()
        offline = await d.service.plan_converge()
        assert [e.host for e in offline.queued] == ["a2"] and offline.entries == ()  # queued like a PR run
        sim.dashboard.set_online("a2", True)
        assert await d.service.wait_until(lambda: (h := d.service.host("a2")) is not None and h.online, 10)
        plan = await d.service.plan_converge()
        assert [e.host for e in plan.entries] == ["a2"]
        result = await d.engine().run(plan, actor="tester", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        assert sim.dashboard.hosts["a2"].generation == head[:7] and d.merge_requests() == 1
        # The PR run waited for a2: the converge took it over, so nothing resumes it to deploy a2 a second time.
        pr_run = d.store.get_run(first.run_id)
        assert pr_run.status == "abandoned" and pr_run.summary.startswith(f"superseded by converge run #{result.run_id}")
        assert d.store.unfinished_runs() == []


async def test_e2e_a_converge_takes_over_the_hosts_a_waiting_pr_run_queued(sim_factory: Any, tmp_path: Path) -> None:
    """Both offline hosts are queued by the PR run (it ends "waiting"); a converge started meanwhile queues them
    too. It takes them over: the PR run no longer waits for them (closed once it waits for nothing), and each
    host is deployed once, by the converge, when it is back."""
    hosts = [HostSpec("a1", "desktop"), HostSpec("a2", "desktop", online=False, faults={"offline"}),
             HostSpec("a3", "desktop", online=False, faults={"offline"})]
    sim = await sim_factory(scenario(*hosts))
    async with Deploy(sim, tmp_path) as d:
        first = await d.engine().run(await d.plan(), actor="tester", queued_wait=0)
        assert first.status is RunStatus.WAITING and first.hosts_with(Outcome.QUEUED) == ["a2", "a3"]
        only_a2 = await d.service.plan_converge(["a2"])
        assert [e.host for e in only_a2.queued] == ["a2"]
        partial = await d.engine().run(only_a2, actor="tester", queued_wait=0)
        assert partial.status is RunStatus.WAITING and partial.hosts_with(Outcome.QUEUED) == ["a2"]
        pr_run = d.store.get_run(first.run_id)
        assert not pr_run.finished and run_info(pr_run).waiting == ("a3",)  # still its own
        assert pr_run.host_outcomes["a2"] == "skipped"
        assert f"a2 skipped — taken over by converge run #{partial.run_id} (main " in "\n".join(
            format_run(load_run(d.store, first.run_id)))
        everything = await d.service.plan_converge()
        assert [e.host for e in everything.queued] == ["a2", "a3"]
        converge = await d.engine().run(everything, actor="tester", queued_wait=0)
        assert converge.status is RunStatus.WAITING
        waiting = {r.id: run_info(r).waiting for r in d.store.unfinished_runs()}
        assert waiting == {converge.run_id: ("a2", "a3")}  # one run waits for each host
        closed = d.store.get_run(first.run_id)
        assert closed.status == "abandoned" and f"converge run #{converge.run_id}" in closed.summary
        assert d.store.get_run(partial.run_id).status == "abandoned"
        assert [e.action for e in d.store.audit_entries() if e.action == "converge_takeover"] == ["converge_takeover"] * 3
        for h in ("a2", "a3"):
            sim.dashboard.set_online(h, True)
        assert await d.service.wait_until(lambda: all((h := d.service.host(x)) is not None and h.online
                                                      for x in ("a2", "a3")), 10)
        result = await d.engine().resume(converge.run_id, actor="tester", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        head, _ = sim.github.default_branch_head()
        for h in ("a2", "a3"):
            assert sim.dashboard.hosts[h].generation == head[:7]
            assert [c.op for c in sim.dashboard.commands.values() if c.host_id == h] == ["pull", "switch"]
        assert d.store.unfinished_runs() == [] and d.merge_requests() == 1


def test_a_converge_does_not_take_hosts_from_a_waiting_rollback(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite3") as store:
        redeploy = store.create_run("deploy", actor="t", pr=43, plan={})
        store.record(redeploy, "revert_redeploy", parent=1)
        store.record(redeploy, "waiting", hosts=["a2"])
        plan = SimpleNamespace(hosts=("a1", "a2"), converge=True)
        with pytest.raises(StateError, match=f"rollback run #{redeploy} waits for a2 .*; converge once"):
            waiting_runs(store, plan)
        assert waiting_runs(store, SimpleNamespace(hosts=("a1",), converge=True)) == []
