"""Rollback: pure helpers, the strategies and resume on in-memory ports, then end to end
against the simulator (revert-commit after a canary failure, revert-pr, alert-only, one host)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from test_automation import AutoHarness, sim_scenario

from nfu_tui.clients._dashboard_protocol import DispatchResult
from nfu_tui.config import Config
from nfu_tui.core.automation import AutoState
from nfu_tui.core.engine import HostOutcome, Outcome, RunResult, RunStarted, RunStatus
from nfu_tui.core.history import load_history
from nfu_tui.core.plan import make_plan
from nfu_tui.core.rollback import (
    RevertJournal,
    RollbackManager,
    failed_hosts,
    find_revert,
    rollback_plan,
    rollback_targets,
    switched_hosts,
)
from nfu_tui.core.store import Store
from nfu_tui.errors import GitHubServerError, NfuError, NotMergeable
from nfu_tui.models import (
    CIStatus,
    CIVerdict,
    Command,
    CompartmentState,
    Host,
    StatusCheck,
    UpdatePR,
)
from nfu_tui.sim.scenario import HostSpec

HEAD = "a" * 40
MERGE = "b" * 40
REVERT_HEAD = "c" * 40
REVERT_MERGE = "d" * 40


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "journal.sqlite3")
    yield s
    s.close()


def failed_run(store: Store, outcomes: dict[str, tuple[str, str]] | None = None) -> int:
    """A deploy run of PR #42 that merged and then failed (host -> (outcome, phase))."""
    outcomes = outcomes or {"gpc0": ("ok", "switch"), "hsb0": ("failed", "switch"), "hsb1": ("skipped", "")}
    run_id = store.create_run("deploy", actor="alice@box", trigger="auto", pr=42, head_sha=HEAD)
    store.record(run_id, "merged", sha=MERGE)
    for host, (outcome, phase) in outcomes.items():
        store.record(run_id, "host_finished", host=host, outcome=outcome, phase=phase,
                     detail="switch error (exit 1): command failed" if outcome == "failed" else "",
                     log_excerpt=["error: build failed"] if outcome == "failed" else [])
    store.finish_run(run_id, "failed", "PR #42: failed")
    return run_id


# ================================================================ pure helpers


def test_switched_and_failed_hosts(store: Store) -> None:
    run = store.get_run(failed_run(store, {"a": ("ok", "switch"), "b": ("failed", "health"), "c": ("failed", "pull"),
                                           "d": ("failed", "switch"), "e": ("skipped", ""), "f": ("queued", "")}))
    assert switched_hosts(run) == ["a", "b"]  # a canary that switched and then failed its health check counts
    assert failed_hosts(run) == {"b": "health: switch error (exit 1): command failed",
                                 "c": "pull: switch error (exit 1): command failed",
                                 "d": "switch: switch error (exit 1): command failed"}


def test_rollback_targets_are_decided_from_the_journal_and_the_fleet(store: Store) -> None:
    """Every host whose switch started counts (it may run the new generation), unless the fleet shows
    the switch failed since it started; a pull failure never switched."""
    run_id = store.create_run("deploy", actor="t", trigger="auto", pr=42, head_sha=HEAD)
    store.record(run_id, "merged", sha=MERGE)
    for host in ("a", "b", "c", "d"):
        store.record(run_id, "host_started", host=host, phase="pull")
    for host in ("a", "b", "c"):
        store.record(run_id, "host_started", host=host, phase="switch")
    store.record(run_id, "host_finished", host="a", outcome="failed", phase="switch",
                 detail="agent did not reconnect within 90 s after the switch (verify the host manually)")
    store.record(run_id, "host_finished", host="b", outcome="failed", phase="switch", detail="switch error (exit 1)")
    store.record(run_id, "host_finished", host="c", outcome="ok", phase="switch")
    store.record(run_id, "host_finished", host="d", outcome="failed", phase="pull", detail="pull error")
    store.finish_run(run_id, "failed", "x")
    later = (datetime.now(timezone.utc) + timedelta(seconds=5)).isoformat()
    fleet = {"a": Host("a", "a", status="offline"),
             "b": online("b").with_changes(system=StatusCheck(CompartmentState.ERROR, "Switch failed", later)),
             "c": online("c")}

    class Fleet:
        def host(self, name: str) -> Host | None:
            return fleet.get(name)

    targets = rollback_targets(store.get_run(run_id), Fleet())
    assert list(targets) == ["a", "c"]
    assert targets["a"].startswith("switch failed (agent did not reconnect") and targets["a"].endswith("offline now")
    assert targets["c"] == "switched"
    assert switched_hosts(store.get_run(run_id)) == ["a", "b", "c"]  # without the fleet's word, b may have switched


def test_revert_journal_folds_the_steps(store: Store) -> None:
    run_id = store.create_run("revert", actor="t", trigger="auto", pr=42, plan={
        "strategy": "revert-commit", "failed_run": 1, "reverts_pr": 42, "reverts_merge_sha": MERGE, "hosts": ["gpc0"]})
    j = RevertJournal.from_run(store.get_run(run_id))
    assert (j.strategy, j.failed_run, j.reverts_pr, j.hosts, j.requested, j.revert_pr) == (
        "revert-commit", 1, 42, ("gpc0",), False, None)
    store.record(run_id, "revert_requested", pr=42)
    store.record(run_id, "revert_opened", revert_pr=43, head_sha=REVERT_HEAD, url="u")
    store.record(run_id, "merge_requested", pr=43, sha=REVERT_HEAD)
    store.record(run_id, "merged", sha=REVERT_MERGE)
    store.record(run_id, "redeploy_requested", hosts=["gpc0"])
    store.record(run_id, "redeploy_started", run=9)
    j = RevertJournal.from_run(store.get_run(run_id))
    assert (j.requested, j.revert_pr, j.revert_head, j.merge_requested, j.merge_sha, j.redeploy_requested,
            j.redeploy_run) == (True, 43, REVERT_HEAD, True, REVERT_MERGE, True, 9)


def online(name: str, device: str = "server") -> Host:
    return Host(name, name, device_type=device, location="home", status="online", generation="1234567",
                system=StatusCheck(CompartmentState.OK))


def test_rollback_plan_has_no_canary_wave() -> None:
    config = Config.model_validate({"flake_updates": {"automation": {"canary_wait_minutes": 10}},
                                    "hosts": {"gpc0": {"canary": True}}})
    plan = make_plan([online("gpc0", "gaming"), online("hsb0")], config, set(), pr_number=43, head_sha=REVERT_HEAD)
    assert plan.waves[0] and plan.canary_wait_minutes == 10
    flat = rollback_plan(plan)
    assert flat.waves[0] == () and [e.host for e in flat.entries] == ["gpc0", "hsb0"]
    assert flat.canary_wait_minutes == 0


def test_find_revert_matches_this_merges_revert_only() -> None:
    original = pull(42)
    title = 'Revert "flake.lock: Update"'

    def open_pr(number: int, head_ref: str, **kw: Any) -> UpdatePR:
        return pull(number, head_ref=head_ref, state="open", merged=False, merge_commit_sha="", **kw)

    branch = open_pr(50, "revert-42-update_flake_lock_action", title="anything")
    suffixed = open_pr(47, "revert-42-update_flake_lock_action-2")
    by_hand = open_pr(48, "undo-lock", title=title, body="Reverts alice/nixos-config#42")
    assert find_revert([branch], original) == branch
    assert find_revert([branch, suffixed, by_hand], original) == suffixed  # the oldest of several
    assert find_revert([by_hand], original) == by_hand
    for other in (
        open_pr(51, "revert-41-update_flake_lock_action", title=title),  # reverts another PR
        open_pr(52, "revert-42-update_flake_lock_action-x"),
        open_pr(53, "undo-lock", title=title, body="Reverts alice/nixos-config#420"),
        open_pr(54, "undo-lock", title=title),  # the title alone: every update PR has that title
        open_pr(55, "revert-42-update_flake_lock_action", base_ref="release"),
        pull(56, head_ref="revert-42-update_flake_lock_action"),  # closed (merged)
        original,
    ):
        assert find_revert([other], original) is None, other.number


# =========================================================== in-memory ports


def pull(number: int, **kw: Any) -> UpdatePR:
    base = dict(number=number, title="flake.lock: Update", author="bot", html_url=f"https://x/pull/{number}",
                head_ref="update_flake_lock_action", head_sha=HEAD, base_ref="main", base_sha="e" * 40,
                node_id=f"PR_{number}", state="closed", merged=True, merge_commit_sha=MERGE, mergeable=True)
    base.update(kw)
    return UpdatePR(**base)


@dataclass
class FakeEngine:
    store: Store
    result_status: RunStatus = RunStatus.SUCCEEDED
    plans: list[Any] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    listeners: list[Any] = field(default_factory=list)

    def subscribe(self, listener: Any) -> Any:
        self.listeners.append(listener)
        return lambda: None

    async def run(self, plan: Any, *, actor: str, trigger: str = "manual", queued_wait: float | None = None) -> Any:
        self.plans.append(plan)
        run_id = self.store.create_run("deploy", actor=actor, trigger=trigger, pr=plan.pr_number,
                                       head_sha=plan.head_sha, plan=plan.to_dict())
        for listener in self.listeners:
            listener(RunStarted(run_id=run_id, pr_number=plan.pr_number, head_sha=plan.head_sha, hosts=plan.hosts))
        outcome = {RunStatus.SUCCEEDED: Outcome.OK, RunStatus.UNKNOWN: Outcome.UNKNOWN}.get(self.result_status,
                                                                                         Outcome.FAILED)
        self.store.finish_run(run_id, {Outcome.OK: "succeeded", Outcome.UNKNOWN: "unknown"}.get(outcome, "failed"),
                              "done")
        return RunResult(run_id, self.result_status, plan.pr_number, REVERT_MERGE, "",
                         tuple(HostOutcome(h, outcome) for h in plan.hosts))

    async def resume(self, run_id: int, *, actor: str, queued_wait: float | None = None) -> Any:
        self.resumed.append(run_id)
        self.store.finish_run(run_id, "succeeded", "resumed")
        return RunResult(run_id, RunStatus.SUCCEEDED, 43, REVERT_MERGE, "", (HostOutcome("gpc0", Outcome.OK),))


class Ports:
    """GitHub + dashboard + fleet view in memory."""

    def __init__(self) -> None:
        self.prs = {42: pull(42)}
        self.reverts: list[tuple[str, str | None]] = []
        self.revert_error: Exception | None = None  # raised by revert_pull (after opening the PR if revert_opens)
        self.revert_opens = True
        self.merges: list[tuple[int, str]] = []
        self.merge_errors: list[Exception] = []
        self.ci = [CIStatus(CIVerdict.GREEN)]
        self.comments: list[tuple[int, str]] = []
        self.dispatched: list[tuple[str, str]] = []
        self.dispatch_result: DispatchResult | None = None
        self.commands: dict[str, Command] = {}
        self.hosts_ = {h.id: h for h in (online("gpc0", "gaming"), online("hsb0"), online("hsb1"))}
        self.states: dict[str, Command] = {}

    # GitHub
    async def get_pull(self, number: int, *, wait_mergeable: bool = True) -> UpdatePR:
        return self.prs[number]

    async def revert_pull(self, node_id: str, *, title: str | None = None, body: str | None = None) -> UpdatePR:
        self.reverts.append((node_id, title))
        number = max(self.prs) + 1
        pr = pull(number, title=title or "", head_ref="revert-42-update_flake_lock_action", head_sha=REVERT_HEAD,
                  state="open", merged=False, merge_commit_sha="", body=body or "")
        if self.revert_opens:
            self.prs[number] = pr
        if self.revert_error is not None:
            raise self.revert_error
        return pr

    async def open_pulls_into(self, base: str) -> list[UpdatePR]:
        return [pr for pr in self.prs.values() if pr.state == "open" and pr.base_ref == base]

    async def merge(self, number: int, sha: str, *, method: str = "merge") -> str:
        self.merges.append((number, sha))
        if self.merge_errors:
            raise self.merge_errors.pop(0)
        self.prs[number] = self.prs[number].with_changes(state="closed", merged=True, merge_commit_sha=REVERT_MERGE)
        return REVERT_MERGE

    async def ci_status(self, sha: str) -> CIStatus:
        return self.ci.pop(0) if len(self.ci) > 1 else self.ci[0]

    async def wait_for_branch_contains(self, branch: str, sha: str, *, timeout: float = 60) -> None:
        return None

    async def comment(self, number: int, body: str) -> None:
        self.comments.append((number, body))

    async def file_at(self, path: str, ref: str) -> bytes:
        raise NfuError("no contents in this fake")

    async def viewer_login(self) -> str:
        return "alice"

    # dashboard
    async def dispatch(self, op: str, hosts: list[str], *, force: bool = False) -> list[DispatchResult]:
        (host,) = hosts
        self.dispatched.append((op, host))
        if self.dispatch_result is not None:
            return [self.dispatch_result]
        self.commands["cmd-1"] = Command("cmd-1", host, op, "SUCCESS")
        return [DispatchResult(host, "started", "EXECUTING", "cmd-1")]

    async def command_states(self) -> dict[str, Command]:
        return dict(self.states)

    # fleet view
    def host(self, host_id: str) -> Host | None:
        return self.hosts_.get(host_id)

    def hosts(self) -> list[Host]:
        return list(self.hosts_.values())

    def output_lines(self, host_id: str, command_id: str | None = None) -> list[str]:
        return ["\x1b[31merror:\x1b[0m rollback failed"]

    async def settle_output(self, host_id: str, command_id: str) -> None:
        pass  # the canned output above is complete

    async def wait_for_command(self, command_id: str, timeout: float) -> Command:
        if command_id in self.commands and self.commands[command_id].terminal:
            return self.commands[command_id]
        raise TimeoutError(command_id)


def cfg(strategy: str = "revert-commit", enabled: bool = True) -> Config:
    return Config.model_validate({"flake_updates": {"rollback": {"strategy": strategy, "enabled": enabled}}})


class Harness:
    def __init__(self, store: Store, strategy: str = "revert-commit", **kw: Any) -> None:
        self.ports = Ports()
        self.engine = FakeEngine(store)
        self.notes: list[Any] = []
        self.opened: list[int] = []
        self.sleeps: list[float] = []

        async def run_engine(start: Any) -> Any:
            return await start(self.engine)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.manager = RollbackManager(
            self.ports, self.ports, self.ports, store, kw.pop("config", cfg(strategy)), run_engine=run_engine,
            notify=self.notes.append, on_revert_opened=self.opened.append, sleep=sleep, **kw)


async def test_revert_commit_opens_merges_and_redeploys_the_switched_hosts(store: Store) -> None:
    failed = failed_run(store)
    h = Harness(store)
    outcome = await h.manager.after_failure(failed, trigger="auto", actor="alice@box")
    assert outcome.ok and outcome.strategy == "revert-commit" and outcome.revert_pr == 43, outcome.summary
    assert h.ports.reverts == [("PR_42", 'Revert "flake.lock: Update"')]
    assert h.ports.merges == [(43, REVERT_HEAD)]  # sha-guarded, without waiting for CI
    (plan,) = h.engine.plans
    assert (plan.pr_number, plan.head_sha, plan.hosts, plan.waves[0]) == (43, REVERT_HEAD, ("gpc0",), ())
    run = store.get_run(outcome.run_id)
    assert (run.kind, run.trigger, run.status, run.pr, run.merge_sha) == ("revert", "auto", "succeeded", 42,
                                                                          REVERT_MERGE)
    assert [s.step for s in run.steps] == ["revert_requested", "revert_opened", "context", "merge_requested",
                                           "merged", "redeploy_requested", "redeploy_started"]
    child = store.get_run(outcome.redeploy_run)
    assert [s.step for s in child.steps] == ["revert_redeploy"]
    assert outcome.summary == ("Reverted PR #42 with PR #43 (merged as ddddddd). Rolled back: gpc0 (switched). "
                               "Left as they are (had not switched): hsb0 (switch: switch error (exit 1): command "
                               "failed).")
    actions = [(a.action, a.details.get("strategy")) for a in store.audit_entries()]
    assert actions == [("rollback", "revert-commit"), ("merge", None)]
    assert store.audit_entries()[0].github_login == "alice"
    assert [n.title for n in h.notes] == ["PR #42 rolled back on gpc0"]
    assert h.opened == [43]
    assert [n for n, _ in h.ports.comments] == [42] and "#43" in h.ports.comments[0][1]


async def test_a_revert_whose_redeploy_outcome_is_unknown_ends_unknown_not_failed(store: Store) -> None:
    h = Harness(store)
    h.engine.result_status = RunStatus.UNKNOWN
    outcome = await h.manager.after_failure(failed_run(store), trigger="auto", actor="alice@box")
    assert not outcome.ok and "Not rolled back: gpc0: unknown" in outcome.summary
    assert store.get_run(outcome.run_id).status == "unknown"
    assert store.get_run(outcome.redeploy_run).status == "unknown"
    assert store.audit_entries()[0].details["status"] == "unknown"
    assert h.notes[-1].title == "PR #42: rollback incomplete on gpc0"


async def test_a_revert_without_a_host_to_roll_back_says_so(store: Store) -> None:
    failed = failed_run(store, {"hsb0": ("failed", "pull"), "hsb1": ("skipped", "")})
    h = Harness(store)
    outcome = await h.manager.after_failure(failed, trigger="auto", actor="alice@box")
    assert outcome.ok and h.engine.plans == []
    (note,) = h.notes
    assert note.title == "PR #42 reverted; no host needed a rollback"
    assert "No host had switched to PR #42" in note.message and "Rolled back" not in note.message


async def test_revert_waits_for_green_ci_only_when_github_requires_it(store: Store) -> None:
    failed = failed_run(store)
    h = Harness(store)
    h.ports.merge_errors = [NotMergeable("Required status check 'build' is expected.", status=405)]
    h.ports.ci = [CIStatus(CIVerdict.PENDING), CIStatus(CIVerdict.PENDING), CIStatus(CIVerdict.GREEN)]
    outcome = await h.manager.after_failure(failed)
    assert outcome.ok, outcome.summary
    assert h.ports.merges == [(43, REVERT_HEAD), (43, REVERT_HEAD)]
    assert h.sleeps == [30.0, 30.0]
    merged = next(s for s in store.get_run(outcome.run_id).steps if s.step == "merged")
    assert merged.data["note"] == "merged once its CI was green (GitHub required it)"


async def test_red_ci_on_a_required_revert_stops_with_an_alert(store: Store) -> None:
    failed = failed_run(store)
    h = Harness(store)
    h.ports.merge_errors = [NotMergeable("Required status check 'build' is failing.", status=405)]
    h.ports.ci = [CIStatus(CIVerdict.RED, "build failed")]
    outcome = await h.manager.after_failure(failed)
    assert not outcome.ok and h.engine.plans == []
    assert "its CI is failing" in outcome.summary and "revert PR #43 is open: merge it on GitHub, then `nfu-tui deploy --pr 43`" in outcome.summary
    assert store.get_run(outcome.run_id).status == "failed"
    assert [n.severity for n in h.notes] == ["error"]


async def test_resume_after_the_revert_was_opened_does_not_open_another(store: Store) -> None:
    failed = failed_run(store)
    h = Harness(store)
    run_id = store.create_run("revert", actor="t", trigger="auto", pr=42, plan={
        "strategy": "revert-commit", "failed_run": failed, "reverts_pr": 42, "reverts_merge_sha": MERGE,
        "hosts": ["gpc0"]})
    store.record(run_id, "revert_requested", pr=42)
    h.ports.prs[43] = pull(43, head_sha=REVERT_HEAD, state="open", merged=False, merge_commit_sha="")
    store.record(run_id, "revert_opened", revert_pr=43, head_sha=REVERT_HEAD, url="u")
    store.record(run_id, "merge_requested", pr=43, sha=REVERT_HEAD)
    # The merge went through before the crash: it is read back, not repeated.
    h.ports.prs[43] = h.ports.prs[43].with_changes(state="closed", merged=True, merge_commit_sha=REVERT_MERGE)
    outcome = await h.manager.resume(run_id)
    assert outcome.ok, outcome.summary
    assert h.ports.reverts == [] and h.ports.merges == []
    steps = [s.step for s in store.get_run(run_id).steps]
    assert steps[-4:] == ["resumed", "merged", "redeploy_requested", "redeploy_started"]
    assert next(s for s in store.get_run(run_id).steps if s.step == "merged").data["note"] == "already merged"


async def test_resume_after_revert_requested_reuses_the_open_revert(store: Store) -> None:
    """Crashed between ``revert_requested`` and GitHub's reply, which had opened the revert PR."""
    failed = failed_run(store)
    h = Harness(store)
    run_id = store.create_run("revert", actor="t", trigger="auto", pr=42, plan={
        "strategy": "revert-commit", "failed_run": failed, "reverts_pr": 42, "reverts_merge_sha": MERGE,
        "hosts": ["gpc0"]})
    store.record(run_id, "revert_requested", pr=42)
    await h.ports.revert_pull("PR_42", title='Revert "flake.lock: Update"', body="nfu-tui: the deploy of #42 …")
    h.ports.reverts.clear()
    outcome = await h.manager.resume(run_id)
    assert outcome.ok and outcome.revert_pr == 43, outcome.summary
    assert h.ports.reverts == [] and h.ports.merges == [(43, REVERT_HEAD)]
    opened = [s for s in store.get_run(run_id).steps if s.step == "revert_opened"]
    assert [(s.data["revert_pr"], s.data["found"]) for s in opened] == [(43, True)]
    assert "using the open revert #43" in h.ports.comments[0][1]


@pytest.mark.parametrize("opened", [True, False])
async def test_revert_answered_with_a_server_error(store: Store, opened: bool) -> None:
    """A 5xx does not say GitHub did nothing: the revert it opened anyway is found and used."""
    failed = failed_run(store)
    h = Harness(store)
    h.ports.revert_opens = opened
    h.ports.revert_error = GitHubServerError("GitHub answered 502")
    outcome = await h.manager.after_failure(failed)
    assert len(h.ports.reverts) == 1
    steps = store.get_run(outcome.run_id).steps
    if opened:
        assert outcome.ok and outcome.revert_pr == 43 and h.ports.merges == [(43, REVERT_HEAD)], outcome.summary
        assert next(s for s in steps if s.step == "revert_opened").data["found"] is True
    else:
        assert not outcome.ok and "GitHub answered 502" in outcome.summary
        assert not any(s.step == "revert_opened" for s in steps) and h.ports.merges == []


async def test_resume_continues_an_interrupted_redeploy(store: Store) -> None:
    failed = failed_run(store)
    h = Harness(store)
    run_id = store.create_run("revert", actor="t", trigger="auto", pr=42, plan={
        "strategy": "revert-commit", "failed_run": failed, "reverts_pr": 42, "hosts": ["gpc0"]})
    store.record(run_id, "revert_opened", revert_pr=43, head_sha=REVERT_HEAD, url="u")
    store.record(run_id, "merged", sha=REVERT_MERGE)
    store.record(run_id, "redeploy_requested", hosts=["gpc0"])
    child = store.create_run("deploy", actor="t", trigger="auto", pr=43, head_sha=REVERT_HEAD)
    store.record(run_id, "redeploy_started", run=child)
    outcome = await h.manager.resume(run_id)
    assert outcome.ok and h.engine.resumed == [child] and h.engine.plans == []
    assert store.get_run(run_id).status == "succeeded"


async def test_revert_pr_opens_and_stops(store: Store) -> None:
    failed = failed_run(store)
    h = Harness(store, "revert-pr")
    outcome = await h.manager.after_failure(failed)
    assert outcome.ok and outcome.revert_pr == 43
    assert h.ports.merges == [] and h.engine.plans == []
    assert h.opened == [43]  # shown with the update PRs for the admin to merge
    run = store.get_run(outcome.run_id)
    assert run.status == "succeeded" and "`nfu-tui deploy --pr 43`" in run.summary
    assert "from the TUI" not in run.summary  # a headless admin reads this too
    assert [n.title for n in h.notes] == ["PR #42 deploy failed: revert PR #43 waits for you"]


async def test_alert_only_changes_nothing(store: Store) -> None:
    failed = failed_run(store)
    h = Harness(store, "alert-only")
    outcome = await h.manager.after_failure(failed)
    assert outcome.ok and outcome.run_id is None
    assert h.ports.reverts == [] and h.ports.merges == [] and h.engine.plans == []
    assert [r.kind for r in store.list_runs()] == ["deploy"]
    (note,) = h.notes
    assert note.severity == "error" and note.title == "PR #42 deploy failed on hsb0 — not rolled back"
    (entry,) = store.audit_entries()
    assert (entry.action, entry.details["strategy"], entry.details["failed_hosts"]) == (
        "rollback", "alert-only", {"hsb0": "switch: switch error (exit 1): command failed"})


async def test_disabled_rollback_does_nothing(store: Store) -> None:
    h = Harness(store, config=cfg(enabled=False))
    outcome = await h.manager.after_failure(failed_run(store))
    assert outcome.strategy == "disabled" and h.notes == [] and h.ports.reverts == []


async def test_host_rollback_dispatches_once_and_tracks_the_result(store: Store) -> None:
    h = Harness(store)
    result = await h.manager.rollback_host("gpc0", actor="alice@box")
    assert result.ok and h.ports.dispatched == [("rollback", "gpc0")]
    run = store.get_run(result.run_id)
    assert (run.kind, run.status, run.host_outcomes) == ("rollback", "succeeded", {"gpc0": "ok"})
    assert [s.step for s in run.steps] == ["host_started", "command_dispatched", "host_finished"]
    (entry,) = store.audit_entries()
    assert (entry.action, entry.details["host"], entry.details["outcome"]) == ("rollback_host", "gpc0", "ok")
    assert h.notes[0].title == "gpc0 rolled back"


async def test_host_rollback_refused_by_the_dashboard(store: Store) -> None:
    h = Harness(store)
    h.ports.dispatch_result = DispatchResult("gpc0", "blocked", "blocked", "", "busy", 'Command "switch" running')
    result = await h.manager.rollback_host("gpc0")
    assert not result.ok and "busy" in result.detail
    assert store.get_run(result.run_id).status == "failed"
    assert h.notes[0].severity == "error"


async def test_a_host_rollback_not_confirmed_or_not_followed_is_never_called_failed(store: Store) -> None:
    """PARTIAL ("System status not ok after rollback": it ran, exit 0) is unverified; a command that never
    ends within the timeout is unknown. Neither is journaled "failed"; each says what it is."""
    h = Harness(store, command_timeout=0.01)
    h.ports.dispatch_result = DispatchResult("gpc0", "started", "EXECUTING", "c9")
    h.ports.commands["c9"] = Command("c9", "gpc0", "rollback", "PARTIAL", error="System status not ok after rollback")
    partial = await h.manager.rollback_host("gpc0")
    assert (partial.ok, partial.outcome) == (False, "unverified") and "not verified" in partial.detail
    run = store.get_run(partial.run_id)
    assert (run.status, run.host_outcomes) == ("unverified", {"gpc0": "unverified"})
    assert h.notes[-1].title == "gpc0 rolled back, not verified"
    h.ports.dispatch_result = DispatchResult("gpc0", "started", "EXECUTING", "never-ends")
    lost = await h.manager.rollback_host("gpc0")
    assert (lost.ok, lost.outcome) == (False, "unknown") and "check the host" in lost.detail
    assert store.get_run(lost.run_id).status == "unknown" and h.notes[-1].title == "Rollback of gpc0: outcome unknown"


async def test_an_interrupted_host_rollback_is_never_dispatched_again(store: Store) -> None:
    h = Harness(store, resume_lookup=0.01)
    run_id = store.create_run("rollback", actor="t", plan={"op": "rollback", "hosts": ["gpc0"]})
    store.record(run_id, "host_started", host="gpc0", phase="rollback")
    store.record(run_id, "command_dispatched", host="gpc0", phase="rollback", command_id="gone")
    outcome = await h.manager.resume(run_id)
    assert not outcome.ok and "outcome is unknown" in outcome.summary
    assert h.ports.dispatched == []
    # The System compartment reported after the start settles it.
    later = datetime.now(timezone.utc) + timedelta(seconds=5)
    h.ports.hosts_["gpc0"] = online("gpc0").with_changes(
        system=StatusCheck(CompartmentState.OK, "Rollback successful (exit 0)", later.isoformat()))
    run2 = store.create_run("rollback", actor="t", plan={"op": "rollback", "hosts": ["gpc0"]})
    store.record(run2, "host_started", host="gpc0", phase="rollback")
    outcome2 = await h.manager.resume(run2)
    assert outcome2.ok and "completed" in outcome2.summary and h.ports.dispatched == []
    # A command still known to the dashboard is followed.
    h.ports.commands["c7"] = Command("c7", "gpc0", "rollback", "SUCCESS")
    run3 = store.create_run("rollback", actor="t", plan={"op": "rollback", "hosts": ["gpc0"]})
    store.record(run3, "host_started", host="gpc0", phase="rollback")
    store.record(run3, "command_dispatched", host="gpc0", phase="rollback", command_id="c7")
    assert (await h.manager.resume(run3)).ok and h.ports.dispatched == []


# ============================================= end to end against the simulator



CANARY_FAILS = [HostSpec("gpc0", "gaming", "home"), HostSpec("hsb0", "server", "home", faults={"switch_fails"}),
                HostSpec("hsb1", "server", "home")]
CANARIES = {"gpc0": {"canary": True}, "hsb0": {"canary": True}}


def lock_hash(sim: Any, ref: str) -> str:
    return hashlib.sha256(sim.github.file_at(ref, "flake.lock")).hexdigest()


async def test_canary_failure_with_revert_commit_rolls_the_switched_hosts_back(sim_factory: Any,
                                                                              tmp_path: Path) -> None:
    sim = await sim_factory(sim_scenario(*CANARY_FAILS))
    before_sha, _ = sim.github.default_branch_head()
    before = lock_hash(sim, before_sha)
    async with AutoHarness(sim, tmp_path, hosts=CANARIES) as a:
        result = await a.runner.step(refresh=True)
        assert result.acted and not result.ok
        assert "rollback: Reverted PR #42 with PR #" in result.message and "Rolled back: gpc0" in result.message
        failed, revert, redeploy = sorted(a.store.list_runs(), key=lambda r: r.id)
        assert (failed.kind, failed.status, failed.host_outcomes) == (
            "deploy", "failed", {"gpc0": "ok", "hsb0": "failed", "hsb1": "skipped"})
        assert (revert.kind, revert.trigger, revert.status) == ("revert", "auto", "succeeded")
        assert (redeploy.kind, redeploy.status, redeploy.host_outcomes) == ("deploy", "succeeded", {"gpc0": "ok"})
        revert_pr = redeploy.pr
        assert a.merges(42) == 1 and a.merges(revert_pr) == 1
        # main is back at the previous lock, and so is the host that had switched.
        head, subject = sim.github.default_branch_head()
        assert subject.startswith('Merge pull request #') and lock_hash(sim, head) == before
        gpc0 = sim.dashboard.hosts["gpc0"].agent
        assert gpc0.lock_hash == before and gpc0.system_commit == head
        assert sim.dashboard.hosts["hsb1"].agent.system_commit == before_sha  # never touched
        # The history tells the story.
        runs = {r.id: r for r in load_history(a.store).runs}
        assert runs[revert.id].related_runs == (failed.id, redeploy.id)
        assert runs[redeploy.id].related_runs == (revert.id,)
        assert runs[failed.id].related_runs == (revert.id,)  # and back: the failed run names its rollback
        assert runs[failed.id].hosts[1].log_excerpt, "the failing host's log excerpt is kept"
        assert runs[revert.id].lock_diff.startswith("• Updated input")
        assert "PR #42 rolled back on gpc0" in a.titles()
        after = await a.runner.step(refresh=True)
        assert after.decision.state is AutoState.IDLE and not after.acted


async def test_revert_pr_waits_for_the_admin_who_merges_it_like_an_update(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(sim_scenario(*CANARY_FAILS))
    before = lock_hash(sim, sim.github.default_branch_head()[0])
    async with AutoHarness(sim, tmp_path, hosts=CANARIES, rollback="revert-pr", require_ci=False) as a:
        result = await a.runner.step(refresh=True)
        assert result.acted and not result.ok and "rollback: revert PR #" in result.message
        revert = next(r for r in a.store.list_runs() if r.kind == "revert")
        revert_pr = next(s.data["revert_pr"] for s in a.store.get_run(revert.id).steps if s.step == "revert_opened")
        assert a.merges(revert_pr) == 0
        await a.service.poll_once()
        assert revert_pr in [s.pr.number for s in a.service.prs]  # shown like an update PR
        waiting = await a.runner.step(refresh=True)
        assert waiting.decision.state is AutoState.BLOCKED and not waiting.acted
        assert waiting.decision.describe(a.now()).startswith(f"revert PR #{revert_pr} is waiting for you")
        # The admin holds the failing host (one key in the failure panel) and merges the revert like any update.
        await a.service.set_hold(["hsb0"], True)
        outcome = await a.service.deploy(a.service.plan(revert_pr))
        assert outcome.status is RunStatus.SUCCEEDED, outcome.summary()
        assert lock_hash(sim, sim.github.default_branch_head()[0]) == before
        assert sim.dashboard.hosts["gpc0"].agent.lock_hash == before
        unblocked = await a.runner.step(refresh=True)
        assert unblocked.decision.state is AutoState.IDLE


async def test_alert_only_notifies_and_leaves_everything(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(sim_scenario(*CANARY_FAILS))
    async with AutoHarness(sim, tmp_path, hosts=CANARIES, rollback="alert-only") as a:
        result = await a.runner.step(refresh=True)
        assert result.acted and not result.ok and "rollback: alerted" in result.message
        assert not any(method == "POST" and path.endswith("/graphql") for method, path, *_ in sim.github.request_log)
        assert [r.kind for r in a.store.list_runs()] == ["deploy"]
        assert "PR #42 deploy failed on hsb0 — not rolled back" in a.titles()
        assert any(e.action == "rollback" and e.details["strategy"] == "alert-only" for e in a.store.audit_entries())


async def test_resumed_revert_reuses_the_pr_github_opened_before_the_crash(sim_factory: Any, tmp_path: Path) -> None:
    """Against the simulator's ``revertPullRequest``: the mutation went through, the process died
    before journaling its reply; resuming opens no second revert PR and merges the first."""
    sim = await sim_factory(sim_scenario())
    async with AutoHarness(sim, tmp_path, rollback="revert-commit") as a:
        github = a.service.github
        merge_sha = await github.merge(42, (await github.get_pull(42)).head_sha)
        failed = failed_run(a.store, {"gpc0": ("failed", "switch")})
        run_id = a.store.create_run("revert", actor="t", trigger="auto", pr=42, plan={
            "strategy": "revert-commit", "failed_run": failed, "reverts_pr": 42, "reverts_merge_sha": merge_sha,
            "hosts": []})
        a.store.record(run_id, "revert_requested", pr=42, merge_sha=merge_sha)
        original = await github.get_pull(42)
        first = await github.revert_pull(original.node_id, title=f'Revert "{original.title}"')  # reply lost
        manager = RollbackManager.for_service(a.service)
        outcome = await manager.resume(run_id)
        assert outcome.ok and outcome.revert_pr == first.number, outcome.summary
        mutations = [r for r in sim.github.request_log if r.method == "POST" and r.path.endswith("/graphql")]
        assert len(mutations) == 1  # only the one before the "crash"
        assert a.merges(first.number) == 1
        assert not [pr for pr in await github.open_pulls_into("main") if pr.head_ref.startswith("revert-42-")]
        run = a.store.get_run(run_id)
        assert run.status == "succeeded"
        assert [s.data["found"] for s in run.steps if s.step == "revert_opened"] == [True]


async def test_per_host_rollback_through_the_dashboard(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(sim_scenario())
    async with AutoHarness(sim, tmp_path) as a:
        manager = RollbackManager.for_service(a.service)
        result = await manager.rollback_host("hsb0", actor="alice@box")
        assert result.ok, result.detail
        (cmd,) = [c for c in sim.dashboard.commands.values() if c.op == "rollback"]
        assert (cmd.host_id, cmd.status) == ("hsb0", "SUCCESS")
        run = a.store.get_run(result.run_id)
        assert (run.kind, run.status, run.host_outcomes) == ("rollback", "succeeded", {"hsb0": "ok"})
        assert a.store.audit_entries()[0].action == "rollback_host"
        assert "hsb0 rolled back" in a.titles()


async def test_a_canary_that_goes_offline_after_its_switch_is_rolled_back_when_it_reconnects(
        sim_factory: Any, tmp_path: Path) -> None:
    """A switch that breaks the host: the canary switches, its tests fail (a proven failure: only that
    is rolled back — a canary that merely went offline is "unverified" and alerts), then it drops off.
    The rollback queues it, stays open (never "succeeded" while it runs the bad generation) and rolls
    it back once it is back."""
    from nfu_tui.core.engine import HostFinished

    hosts = [HostSpec("gpc0", "gaming", "home", faults={"tests_fail"}),
             HostSpec("hsb0", "server", "home"), HostSpec("hsb1", "server", "home")]
    sim = await sim_factory(sim_scenario(*hosts))
    before = lock_hash(sim, sim.github.default_branch_head()[0])
    async with AutoHarness(sim, tmp_path, hosts={"gpc0": {"canary": True, "post_switch_tests": "always"}},
                           canary_wait_minutes=0.02) as a:
        a.service.subscribe(lambda ev: sim.dashboard.set_online("gpc0", False)  # the host drops off
                            if ev.kind == "deploy" and isinstance(ev.payload, HostFinished)
                            and ev.payload.host == "gpc0" else None)
        result = await a.runner.step(refresh=True)
        assert result.acted and not result.ok, result.message
        failed, revert, redeploy = sorted(a.store.list_runs(), key=lambda r: r.id)
        assert failed.host_outcomes == {"gpc0": "failed", "hsb0": "skipped", "hsb1": "skipped"}
        assert revert.kind == "revert" and revert.status == "running", revert.summary
        assert redeploy.status == "running" and redeploy.host_outcomes == {}
        plan = a.store.get_run(revert.id).plan
        assert plan["hosts"] == ["gpc0"] and "tests failed" in plan["host_states"]["gpc0"]
        assert a.titles()[-1] == "PR #42 rollback waiting for gpc0 (offline)"
        assert "offline: gpc0 (switch failed (tests failed" in a.notes[-1].message
        assert sim.dashboard.hosts["gpc0"].agent.lock_hash != before  # still on the bad generation
        blocked = await a.runner.step(refresh=True)
        assert blocked.decision.state is AutoState.WAITING_FLEET and not blocked.acted
        assert f"rollback run #{revert.id} (PR #42) waits for gpc0" in blocked.decision.describe(a.now())
        assert a.store.get_run(revert.id).status == "running"
        # The service notices the reconnect by itself (nfu-tui auto; `auto --once` does the same on its next run).
        forever = asyncio.ensure_future(a.runner.run_forever())
        try:
            sim.dashboard.set_fault("gpc0", "tests_fail", False)  # its tests failed on the bad generation only
            sim.dashboard.set_online("gpc0", True)
            assert await a.service.wait_until(lambda: a.store.get_run(revert.id).status == "succeeded", 20)
        finally:
            a.runner.request_stop("test over")
            await asyncio.wait_for(forever, 10)
        assert a.store.get_run(redeploy.id).host_outcomes == {"gpc0": "ok"}
        assert sim.dashboard.hosts["gpc0"].agent.lock_hash == before
        assert a.titles()[-1] == "PR #42 rolled back on gpc0"
        assert (await a.runner.step(refresh=True)).decision.state is AutoState.IDLE
