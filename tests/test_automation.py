"""Automation: the pure decision with a controlled clock, then the runner end to end against
the simulator (delay, CI, windows, supersede, notify-once, window closing mid-run)."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.config import AutomationConfig, load_config, resolve_secrets
from nfu_tui.core.automation import (
    needed_room,
    Action,
    AutomationRunner,
    AutoState,
    RunInfo,
    Situation,
    countdown,
    decide,
    lock_holder,
    outside_window_warning,
    run_info,
    set_automation,
)
from nfu_tui.core.engine import HostFinished, Outcome, RunFinished, Timeouts
from nfu_tui.core.service import FleetService, ServiceEvent
from nfu_tui.core.state import AppState
from nfu_tui.core.store import DeployLock, Store
from nfu_tui.domain.windows import WindowSet
from nfu_tui.models import CIStatus, CIVerdict, UpdatePR
from nfu_tui.sim.github import WEB
from nfu_tui.sim.scenario import HostSpec, PRSpec
from nfu_tui.sim.testing import fast_scenario

HEAD = "a" * 40
NOW = datetime(2026, 8, 12, 14, 0, tzinfo=timezone.utc)  # a Wednesday


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")  # window texts are shown in local time


def pr(number: int = 42, **kw: Any) -> UpdatePR:
    base = dict(number=number, title="flake.lock: Update", author="github-actions[bot]", html_url="",
                head_ref="update_flake_lock_action", head_sha=HEAD, base_ref="main", base_sha="c" * 40,
                created_at=NOW - timedelta(hours=3), updated_at=NOW - timedelta(minutes=23), files=("flake.lock",),
                mergeable=True, mergeable_state="clean", ci=CIStatus(CIVerdict.GREEN, "3/3 checks passed"))
    base.update(kw)
    return UpdatePR(**base)


def situation(*prs: UpdatePR, windows: list[str] | None = None, now: datetime = NOW, **kw: Any) -> Situation:
    config = AutomationConfig(enabled=True, delay_minutes=kw.pop("delay", 60), require_ci=kw.pop("require_ci", True))
    return Situation(now=now, enabled=kw.pop("enabled", True), config=config, windows=WindowSet(windows or []),
                     prs=prs, **kw)


def run(id: int = 1, **kw: Any) -> RunInfo:
    base = dict(id=id, kind="deploy", pr=42, head_sha=HEAD, merge_sha="", status="succeeded", trigger="auto")
    base.update(kw)
    return RunInfo(**base)


# ================================================================ the decision


def test_disabled_decides_nothing_and_says_so() -> None:
    d = decide(situation(pr(updated_at=NOW - timedelta(days=2)), enabled=False))
    assert d.state is AutoState.DISABLED and d.action is Action.NONE and d.notices == ()
    assert d.describe(NOW) == "automation off"


def test_no_update_pr_is_idle() -> None:
    d = decide(situation())
    assert (d.state, d.action, d.describe(NOW)) == (AutoState.IDLE, Action.NONE, "no update PR")
    assert d.window == "no maintenance window: deploys may run any time"


def test_delay_counts_from_the_last_update_with_a_live_countdown() -> None:
    d = decide(situation(pr(ci=CIStatus(CIVerdict.PENDING, "1 check running"))))
    assert d.state is AutoState.WAITING_DELAY and d.action is Action.NONE
    assert d.due == NOW + timedelta(minutes=37)
    assert d.describe(NOW) == "merging PR #42 in 37 min — waiting for CI (1 check running)"
    assert d.describe(NOW + timedelta(minutes=30)) == "merging PR #42 in 7 min — waiting for CI (1 check running)"
    assert d.wake_at == d.due
    green = decide(situation(pr()))
    assert green.describe(NOW) == "merging PR #42 in 37 min — CI green"


def test_a_force_push_restarts_the_clock() -> None:
    before = decide(situation(pr(updated_at=NOW - timedelta(minutes=59))))
    assert before.due == NOW + timedelta(minutes=1)
    pushed = decide(situation(pr(head_sha="d" * 40, updated_at=NOW - timedelta(minutes=1))))
    assert pushed.state is AutoState.WAITING_DELAY and pushed.due == NOW + timedelta(minutes=59)


def test_after_the_delay_ci_must_be_green() -> None:
    old = NOW - timedelta(hours=2)
    waiting = decide(situation(pr(updated_at=old, ci=CIStatus(CIVerdict.PENDING, "2 checks running"))))
    assert waiting.state is AutoState.WAITING_CI and waiting.action is Action.NONE
    assert waiting.describe(NOW) == "PR #42: waiting for CI (2 checks running)"
    unknown = decide(situation(pr(updated_at=old, ci=None)))
    assert unknown.state is AutoState.WAITING_CI and "CI state" in unknown.describe(NOW)
    ready = decide(situation(pr(updated_at=old)))
    assert (ready.state, ready.action, ready.pr, ready.head_sha) == (AutoState.READY, Action.MERGE, 42, HEAD)
    assert ready.describe(NOW) == "merging PR #42 now"


def test_red_ci_blocks_and_is_notified_once_per_head() -> None:
    red = CIStatus(CIVerdict.RED, "2/3 checks passed; 'build hosts' failed", ("build hosts",))
    d = decide(situation(pr(updated_at=NOW - timedelta(hours=2), ci=red)))
    assert d.state is AutoState.BLOCKED and d.action is Action.NONE
    assert "CI is failing on PR #42: 2/3 checks passed; 'build hosts' failed; not merging" == d.describe(NOW)
    (notice,) = d.notices
    assert (notice.key, notice.value) == ("ci-red:42", HEAD)
    assert notice.notification.severity == "error"
    # Red CI blocks even while the delay runs, and a new head is a new notice value.
    early = decide(situation(pr(head_sha="e" * 40, ci=red)))
    assert early.state is AutoState.BLOCKED and early.notices[0].value == "e" * 40


def test_no_ci_needs_require_ci_false() -> None:
    no_ci = pr(updated_at=NOW - timedelta(hours=2), ci=CIStatus(CIVerdict.NO_CI))
    blocked = decide(situation(no_ci))
    assert blocked.state is AutoState.BLOCKED and "require_ci = false" in blocked.describe(NOW)
    assert blocked.notices[0].key == "no-ci:42"
    allowed = decide(situation(no_ci, require_ci=False))
    assert allowed.action is Action.MERGE


@pytest.mark.parametrize(
    ("changes", "fragment", "key"),
    [
        ({"draft": True}, "is a draft", "draft"),
        ({"files": ("flake.lock", "flake.nix")}, "changes more than flake.lock (flake.nix)", "not-lock-only"),
        ({"mergeable": False, "mergeable_state": "dirty"}, "merge conflicts with main", "conflict"),
        ({"mergeable_state": "blocked"}, "blocked by branch protection", "blocked"),
        ({"mergeable_state": "behind"}, "behind main", "behind"),
    ],
)
def test_prs_that_need_a_human(changes: dict[str, Any], fragment: str, key: str) -> None:
    d = decide(situation(pr(updated_at=NOW - timedelta(hours=2), **changes)))
    assert d.state is AutoState.BLOCKED and fragment in d.describe(NOW)
    assert d.notices[0].key == f"{key}:42"


def test_the_newest_pr_wins_and_older_ones_are_reported_superseded() -> None:
    newest = pr(43, head_sha="b" * 40, updated_at=NOW - timedelta(hours=2))
    older = pr(41, updated_at=NOW - timedelta(days=8), superseded_by=43)
    d = decide(situation(newest, older))
    assert d.action is Action.MERGE and d.pr == 43
    assert d.superseded == (41,)
    (notice,) = d.notices
    assert (notice.key, notice.value) == ("superseded:41", "43")
    assert "will not be merged" in notice.notification.message


def test_windows_gate_the_merge_and_the_text_names_the_next_window() -> None:
    windows = ["Sat 02:00-05:00 UTC"]
    ready = pr(updated_at=NOW - timedelta(hours=2))
    d = decide(situation(ready, windows=windows))
    saturday = datetime(2026, 8, 15, 2, 0, tzinfo=timezone.utc)
    assert d.state is AutoState.WAITING_WINDOW and d.action is Action.NONE
    assert d.due == saturday and d.wake_at == saturday
    assert d.describe(NOW) == "PR #42 ready — next window Sat 02:00 UTC"
    inside = decide(situation(ready, windows=windows, now=saturday + timedelta(minutes=5)))
    assert inside.action is Action.MERGE and inside.window == "window open until Sat 05:00 UTC"
    # A window with too little room left for a run is not used: merge at the next one.
    late = decide(situation(ready, windows=windows, now=saturday + timedelta(hours=2, minutes=40)))
    assert late.state is AutoState.WAITING_WINDOW and late.action is Action.NONE
    assert late.describe(NOW) == ("PR #42 ready — the window closes at Sat 05:00 UTC, too soon for a run (~30 min); "
                                  "next window Sat 2026-08-22 02:00 UTC")
    assert late.due == saturday + timedelta(days=7)
    roomy = situation(ready, windows=windows, now=saturday + timedelta(hours=2))
    assert decide(roomy).action is Action.MERGE
    assert decide(replace(roomy, room=needed_room([timedelta(minutes=70)], 30))).action is Action.NONE
    # A delay ending outside every window merges at the next window start.
    later = decide(situation(pr(), windows=windows))
    assert later.due == saturday and later.describe(NOW) == \
        "merging PR #42 in 2 d 12 h (next window Sat 02:00 UTC) — CI green"


def test_nothing_is_merged_while_the_dashboard_is_unknown() -> None:
    d = decide(situation(pr(updated_at=NOW - timedelta(hours=2)), fleet_ready=False))
    assert d.state is AutoState.WAITING_FLEET and d.action is Action.NONE


def test_a_pr_already_merged_or_in_progress_is_not_merged_again() -> None:
    ready = pr(updated_at=NOW - timedelta(hours=2))
    merged = decide(situation(ready, runs=(run(5, merge_sha="f" * 40),)))
    assert merged.state is AutoState.IDLE and "already merged (run #5)" in merged.describe(NOW)
    # A manual refusal does not block automation; an automatic one does, until the head changes.
    manual = decide(situation(ready, runs=(run(6, status="failed", trigger="manual", refused="CI pending"),)))
    assert manual.action is Action.MERGE
    refused = decide(situation(ready, runs=(run(7, status="failed", refused="GitHub will not merge PR #42: review"),)))
    assert refused.state is AutoState.BLOCKED and refused.notices[-1].key == "refused:42"
    moved = decide(situation(pr(head_sha="d" * 40, updated_at=NOW - timedelta(hours=2)), runs=(run(7, status="failed",
                                                                                                    refused="x"),)))
    assert moved.action is Action.MERGE


def test_busy_while_another_process_deploys() -> None:
    d = decide(situation(pr(updated_at=NOW - timedelta(hours=2)), busy="deploy running in the nfu-tui TUI (pid 7)"))
    assert d.state is AutoState.BUSY and d.action is Action.NONE and "the nfu-tui TUI" in d.describe(NOW)


def test_interrupted_automatic_runs_resume_first_inside_a_window() -> None:
    windows = ["daily 02:00-04:00 UTC"]
    paused = run(3, status="paused")
    ready = pr(43, head_sha="b" * 40, updated_at=NOW - timedelta(hours=2))
    outside = decide(situation(ready, windows=windows, runs=(paused,)))
    assert outside.state is AutoState.PAUSED and outside.run_id == 3 and outside.action is Action.NONE
    assert outside.describe(NOW) == "run #3 (PR #42) paused — resumes in 12 h 00 min (next window Thu 02:00 UTC)"
    inside = decide(situation(ready, windows=windows, runs=(paused,), now=NOW.replace(hour=2, minute=30)))
    assert (inside.action, inside.run_id) == (Action.RESUME, 3)
    # Rollbacks are recovery: they resume at once, windows or not.
    revert = decide(situation(ready, windows=windows, runs=(run(4, kind="revert", status="running"), paused)))
    assert (revert.action, revert.run_id) == (Action.RESUME, 4)


def test_waiting_runs_resume_when_an_offline_host_is_back() -> None:
    waiting = run(3, status="running", waiting=("hsb8",))
    ready = pr(43, head_sha="b" * 40, updated_at=NOW - timedelta(hours=2))
    offline = decide(situation(ready, runs=(waiting,)))
    assert offline.action is Action.MERGE and offline.pr == 43  # a queued host does not block new PRs
    back = decide(situation(ready, runs=(waiting,), online=frozenset({"hsb8"})))
    assert (back.action, back.run_id) == (Action.RESUME, 3) and "hsb8 back online" in back.describe(NOW)


def test_manual_unfinished_runs_are_reported_not_resumed() -> None:
    d = decide(situation(runs=(run(9, status="running", trigger="manual"),)))
    assert d.action is Action.NONE and d.state is AutoState.IDLE
    (notice,) = d.notices
    assert notice.key == "manual-unfinished:9" and "nfu-tui deploy --resume 9" in notice.notification.message
    # each kind with the command that really resumes it (a revert: the TUI only)
    rollback, revert = run(10, kind="rollback", pr=None, status="running", trigger="manual"), run(
        11, kind="revert", status="running", trigger="manual")
    texts = [n.notification.message for n in decide(situation(runs=(rollback, revert))).notices]
    assert "resume it in the TUI or with `nfu-tui rollback --resume 10`." in texts[0]
    assert texts[1].endswith("resume it in the TUI.")


def test_an_open_revert_pr_stops_automation() -> None:
    revert = pr(44, title='Revert "flake.lock: Update"', head_ref="revert-42-update_flake_lock_action")
    update = pr(45, head_sha="b" * 40, updated_at=NOW - timedelta(hours=2))
    d = decide(situation(update, revert, open_reverts=frozenset({44})))
    assert d.state is AutoState.BLOCKED and d.action is Action.NONE
    assert d.describe(NOW).startswith("revert PR #44 is waiting for you")


def test_manual_deploys_outside_a_window_need_a_confirm() -> None:
    windows = WindowSet(["Sat 02:00-05:00 UTC"])
    assert outside_window_warning(windows, NOW) == (
        "Outside the maintenance windows (Sat 02:00-05:00 UTC); next window Sat 02:00 UTC. Deploy anyway?")
    assert outside_window_warning(windows, datetime(2026, 8, 15, 3, 0, tzinfo=timezone.utc)) is None
    assert outside_window_warning(WindowSet(), NOW) is None


@pytest.mark.parametrize(
    ("delta", "text"),
    [(timedelta(seconds=30), "<1 min"), (timedelta(minutes=37, seconds=59), "37 min"),
     (timedelta(hours=2, minutes=5), "2 h 05 min"), (timedelta(days=3, hours=4, minutes=1), "3 d 4 h"),
     (timedelta(minutes=-5), "<1 min")],
)
def test_countdown(delta: timedelta, text: str) -> None:
    assert countdown(delta) == text


# ============================================================ journal and state


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "journal.sqlite3")
    yield s
    s.close()


def test_run_info_reads_refusals_waiting_hosts_and_recovery(store: Store) -> None:
    refused = store.create_run("deploy", actor="t", trigger="auto", pr=42, head_sha=HEAD)
    store.record(refused, "merge_refused", reason="PR #42 not merged: CI is failing")
    store.finish_run(refused, "failed", "PR #42: refused")
    waiting = store.create_run("deploy", actor="t", trigger="auto", pr=42, head_sha=HEAD)
    store.record(waiting, "merged", sha="f" * 40)
    store.record(waiting, "waiting", hosts=["hsb8"])
    redeploy = store.create_run("deploy", actor="t", trigger="auto", pr=43)
    store.record(redeploy, "revert_redeploy", parent=1)
    a, b, c = (run_info(store.get_run(i)) for i in (refused, waiting, redeploy))
    assert a.refused == "PR #42 not merged: CI is failing" and not a.unfinished
    assert b.waiting == ("hsb8",) and b.unfinished and not b.interrupted and b.merge_sha == "f" * 40
    assert c.recovery and c.interrupted
    store.record(waiting, "resumed")
    assert run_info(store.get_run(waiting)).interrupted


def test_lock_holder_reads_the_deploy_lock_without_taking_it(tmp_path: Path) -> None:
    lock = DeployLock(tmp_path, label="nfu-tui auto")
    assert lock_holder(lock.path) is None
    with lock:
        holder = lock_holder(lock.path)
        assert holder is not None and holder["label"] == "nfu-tui auto" and holder["pid"] == os.getpid()
        assert lock.held  # reading did not disturb it
    assert lock_holder(lock.path) is None
    lock.path.write_text('{"pid": 999999999, "label": "ghost"}')  # a holder that died without releasing
    assert lock_holder(lock.path) is None


def test_the_toggle_is_saved_and_audited(tmp_path: Path, store: Store) -> None:
    state = AppState.load(tmp_path / "state.json")
    set_automation(state, store, True, actor="alice@box", github_login="alice")
    assert AppState.load(tmp_path / "state.json").automation_enabled is True
    (entry,) = store.audit_entries()
    assert (entry.action, entry.actor, entry.github_login, entry.details) == (
        "automation", "alice@box", "alice", {"enabled": True, "source": "tui"})


# ============================================= end to end against the simulator


SIM_TIMEOUTS = Timeouts(pull=20, switch=30, merge_visible=20, gate_poll=0.05, queued_poll=0.2, resume_lookup=0.5)
SMALL = [HostSpec("gpc0", "gaming", "home"), HostSpec("hsb0", "server", "home"), HostSpec("hsb1", "server", "home")]


def sim_scenario(*hosts: HostSpec, prs: list[PRSpec] | None = None, **kw: Any):
    kw = {"speed": 400.0, "heartbeat_seconds": 0.05, **kw}
    specs = [HostSpec(**{**vars(h), "faults": set(h.faults)}) for h in (hosts or SMALL)]
    return fast_scenario(hosts=specs, prs=prs or [PRSpec(42, labels=["dependencies"], ci="success")], **kw)


class AutoHarness:
    """A FleetService + AutomationRunner on a started simulator, with a movable clock."""

    def __init__(self, sim: Any, tmp_path: Path, *, hosts: dict[str, Any] | None = None,
                 rollback: str = "revert-commit", webhook: str = "", store_clock: Any = None,
                 store_path: Path | None = None, **automation: Any) -> None:
        automation = {"enabled": True, "delay_minutes": 0, "canary_wait_minutes": 0, **automation}
        self.sim = sim
        self.cfg_path = sim.write_config(tmp_path / "cfg", hosts=hosts or {}, flake_updates={
            "automation": automation, "rollback": {"strategy": rollback}}, notify={"webhook_url": webhook})
        self.cfg = load_config(self.cfg_path)
        self.store = Store(store_path or tmp_path / "journal.sqlite3", **({"clock": store_clock} if store_clock else {}))
        self.state = AppState.load(tmp_path / "state.json")
        self.service = FleetService(self.cfg, resolve_secrets(self.cfg, use_gh=False), store=self.store,
                                    state=self.state, lock_label="test auto")
        self.offset = timedelta(0)
        self.fixed: datetime | None = None  # a frozen clock, when set
        self.notes: list[Any] = []  # toasts/webhook notifications (the service's "notify" events)
        self.events: list[Any] = []  # the engine's events
        self.service.subscribe(lambda ev: (self.notes if ev.kind == "notify" else self.events).append(ev.payload)
                               if ev.kind in ("notify", "deploy") else None)
        self.runner = AutomationRunner(self.service, clock=self.now, engine_kw={"timeouts": SIM_TIMEOUTS})

    def now(self) -> datetime:
        return self.fixed if self.fixed is not None else datetime.now(timezone.utc) + self.offset

    async def __aenter__(self) -> "AutoHarness":
        await self.service.start()
        expected = {h.name for h in self.sim.scenario.hosts}
        assert await self.service.wait_until(
            lambda: self.service.fleet.synced and {h.id for h in self.service.hosts()} == expected
            and self.service.status.last_poll is not None, 15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.runner.close()
        await self.service.stop()
        self.store.close()

    def merges(self, number: int = 42) -> int:
        return sum(1 for method, path, *_ in self.sim.github.request_log
                   if method == "PUT" and path.endswith(f"/pulls/{number}/merge"))

    def titles(self) -> list[str]:
        return [n.title for n in self.notes]

    def switched(self) -> list[str]:
        """Hosts in the order their switch commands were created on the dashboard."""
        return [c.host_id for c in self.sim.dashboard.commands.values() if c.op == "switch"]


async def test_merges_only_after_the_delay_and_green_ci(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(sim_scenario(prs=[PRSpec(42, labels=["dependencies"], ci="pending", age_hours=20)]))
    async with AutoHarness(sim, tmp_path, delay_minutes=24 * 60) as a:
        updated = (await a.service.github.get_pull(42)).updated_at
        a.fixed = updated + timedelta(hours=20, minutes=1)
        early = await a.runner.step(refresh=True)
        assert early.decision.state is AutoState.WAITING_DELAY and not early.acted
        assert early.decision.due == updated + timedelta(hours=24)
        assert early.decision.describe(a.now()).startswith("merging PR #42 in 3 h 59 min — waiting for CI (")
        a.fixed = updated + timedelta(hours=24, minutes=1)  # the delay is over, CI still runs
        waiting = await a.runner.step(refresh=True)
        assert waiting.decision.state is AutoState.WAITING_CI and not waiting.acted
        assert a.merges() == 0
        sim.github.set_ci(42, "success")
        done = await a.runner.step(refresh=True)
        assert done.acted and done.ok, done.message
        assert a.merges() == 1
        (run,) = a.store.list_runs()
        full = a.store.get_run(run.id)
        assert (full.kind, full.trigger, full.status, full.pr) == ("deploy", "auto", "succeeded", 42)
        assert full.merge_sha == sim.github.default_branch_head()[0]
        assert sorted(full.host_outcomes) == ["gpc0", "hsb0", "hsb1"]
        context = next(s.data for s in full.steps if s.step == "context")
        assert context["lock_diff"].startswith("• Updated input") and context["title"] == "flake.lock: Update"
        finished = [e for e in a.events if isinstance(e, RunFinished)]
        assert [e.notification.title for e in finished] == ["PR #42 deployed"]  # toast + webhook
        after = await a.runner.step(refresh=True)  # the merged PR is gone: nothing more to do
        assert after.decision.state is AutoState.IDLE and not after.acted and a.merges() == 1


def _at(hour: int, minute: int = 0, days: int = 1) -> datetime:
    """A moment ``days`` from now at HH:MM UTC (future, so every PR delay is over)."""
    day = datetime.now(timezone.utc).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)


async def test_waits_for_a_window_and_pauses_when_it_closes_mid_run(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(sim_scenario())
    async with AutoHarness(sim, tmp_path, maintenance_windows=["daily 02:00-03:00 UTC"]) as a:
        a.fixed = _at(1, 30)
        closed = await a.runner.step(refresh=True)
        assert closed.decision.state is AutoState.WAITING_WINDOW and not closed.acted
        weekday = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[_at(2).weekday()]
        assert closed.decision.describe(a.now()) == f"PR #42 ready — next window {weekday} 02:00 UTC"
        assert closed.decision.due == _at(2)
        assert a.merges() == 0

        def close_after_first_host(event: ServiceEvent) -> None:
            if event.kind == "deploy" and isinstance(event.payload, HostFinished) and a.now() < _at(3):
                a.fixed = _at(3, 5)  # the window closes while gpc0's neighbours wait

        a.service.subscribe(close_after_first_host)
        a.fixed = _at(2, 10)
        first = await a.runner.step(refresh=True)
        assert first.acted and first.suspended, first.message
        assert a.merges() == 1
        (run,) = a.store.list_runs()
        paused = a.store.get_run(run.id)
        assert paused.status == "paused" and paused.host_outcomes == {"gpc0": "ok"}
        assert [s.step for s in paused.steps if s.step in ("paused", "suspended")] == ["paused", "suspended"]
        assert "maintenance window closed" in next(s.data["reason"] for s in paused.steps if s.step == "suspended")
        waiting = await a.runner.step()
        assert waiting.decision.state is AutoState.PAUSED and not waiting.acted
        assert waiting.decision.describe(a.now()).startswith(f"run #{run.id} (PR #42) paused — resumes in 22 h 55 min")
        a.fixed = _at(2, 1, days=2)
        resumed = await a.runner.step()
        assert resumed.acted and resumed.ok, resumed.message
        final = a.store.get_run(run.id)
        assert final.status == "succeeded" and set(final.host_outcomes.values()) == {"ok"}
        assert a.switched() == ["gpc0", "hsb0", "hsb1"] and a.merges() == 1


async def test_a_window_closing_mid_run_starts_no_host_step_after_the_close(
        sim_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """hsb0's pull finishes after the close: its switch waits, pulled, for the next window; the pause
    is notified and `status --json` shows the paused run with every host's state."""
    from nfu_tui.cli import main
    from nfu_tui.core.engine import HostProgress
    from nfu_tui.paths import ensure_dir, state_dir

    sim = await sim_factory(sim_scenario())
    store_path = ensure_dir(state_dir()) / "nfu-tui.sqlite3"  # where `nfu-tui status` reads it
    async with AutoHarness(sim, tmp_path, maintenance_windows=["daily 02:00-03:00 UTC"], store_path=store_path) as a:
        def close_when_hsb0_pulled(event: ServiceEvent) -> None:
            p = event.payload
            if (event.kind == "deploy" and isinstance(p, HostProgress) and (p.host, p.phase) == ("hsb0", "pull")
                    and p.message.startswith("done")):
                a.fixed = _at(3, 5)

        a.service.subscribe(close_when_hsb0_pulled)
        a.fixed = _at(2, 10)
        first = await a.runner.step(refresh=True)
        assert first.acted and first.suspended, first.message
        (run,) = a.store.list_runs()
        paused = a.store.get_run(run.id)
        started = [(s.host, s.data["phase"]) for s in paused.steps if s.step == "host_started"]
        assert started == [("gpc0", "pull"), ("gpc0", "switch"), ("hsb0", "pull")]  # no switch after the close
        assert [s.host for s in paused.steps if s.step == "switch_deferred"] == ["hsb0"]
        assert paused.status == "paused" and paused.host_outcomes == {"gpc0": "ok"}
        weekday = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[_at(2, days=2).weekday()]
        note = a.notes[-1]
        assert note.title == f"PR #42 deploy paused until {weekday} 02:00 UTC", a.titles()
        assert "Left: hsb0 (pulled, switch waiting); hsb1 (not started)." in note.message
        assert f"`nfu-tui deploy --resume {run.id}`" in note.message
        assert all("may_start_host" not in s.data.get("reason", "") for s in paused.steps)
        assert await asyncio.to_thread(main, ["--config", str(a.cfg_path), "status", "--json"]) == 0
        (shown,) = json.loads(capsys.readouterr().out)["runs"]
        assert (shown["id"], shown["state"], shown["pr"]) == (run.id, "paused", 42)
        assert shown["hosts"] == [{"host": "gpc0", "state": "ok"}, {"host": "hsb0", "state": "pulled, switch waiting"},
                                  {"host": "hsb1", "state": "not started"}]
        from nfu_tui.core.history import load_history

        (record,) = load_history(a.store).runs
        assert [(h.host, h.outcome) for h in record.hosts] == [
            ("gpc0", "ok"), ("hsb0", "pulled, switch waiting"), ("hsb1", "not started")]
        assert any("outside the maintenance window" in t.text for t in record.timeline)
        a.fixed = _at(2, 1, days=2)
        resumed = await a.runner.step()
        assert resumed.acted and resumed.ok, resumed.message
        final = a.store.get_run(run.id)
        assert final.status == "succeeded" and set(final.host_outcomes.values()) == {"ok"}
        pulls = [s.host for s in final.steps if s.step == "host_started" and s.data["phase"] == "pull"]
        assert pulls == ["gpc0", "hsb0", "hsb1"]  # hsb0 was not pulled twice
        assert a.switched() == ["gpc0", "hsb0", "hsb1"] and a.merges() == 1


async def test_the_newest_pr_wins_the_older_is_reported_once(sim_factory: Any, tmp_path: Path) -> None:
    prs = [PRSpec(41, labels=["dependencies"], age_hours=200), PRSpec(42, labels=["dependencies"], age_hours=20)]
    sim = await sim_factory(sim_scenario(prs=prs))
    async with AutoHarness(sim, tmp_path) as a:
        result = await a.runner.step(refresh=True)
        assert result.acted and result.ok and result.decision.superseded == (41,)
        assert a.merges(42) == 1 and a.merges(41) == 0
        again = await a.runner.run_once()
        assert not again.acted and a.merges(41) == 0  # #41 is now alone, but it was superseded
        assert again.decision.state is AutoState.BLOCKED and "superseded by PR #42" in again.decision.describe(a.now())
        assert a.titles().count("PR #41 superseded by PR #42") == 1


async def test_red_ci_is_not_merged_and_notified_once(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(sim_scenario(prs=[PRSpec(42, labels=["dependencies"], ci="failure")]))
    async with AutoHarness(sim, tmp_path) as a:
        for _ in range(3):
            result = await a.runner.step(refresh=True)
            assert result.decision.state is AutoState.BLOCKED and not result.acted
        assert a.merges() == 0
        assert a.titles().count("PR #42: CI failing") == 1
        assert a.state.notified["ci-red:42"] == sim.github.pr_head(42)
        sim.github.push_pr_head(42)  # a new head with red CI again is a new failure
        sim.github.set_ci(42, "failure")
        await a.runner.step(refresh=True)
        assert a.titles().count("PR #42: CI failing") == 2 and a.merges() == 0


class Receiver:
    """A loopback ntfy-style webhook that counts the bodies it accepted (and can be down)."""

    def __init__(self) -> None:
        self.status = 200
        self.accepted: list[tuple[str, str, str]] = []  # (title, body, click)
        self.refused = 0

    async def __aenter__(self) -> "Receiver":
        from aiohttp import web

        async def handler(request: web.Request) -> web.Response:
            body = (await request.read()).decode()
            if self.status >= 300:
                self.refused += 1
            else:
                self.accepted.append((request.headers.get("Title", ""), body, request.headers.get("Click", "")))
            return web.Response(status=self.status, text="{}")

        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/nfu-alerts"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_an_alert_survives_a_webhook_outage_and_a_restart_and_is_delivered_once(
        sim_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    sim = await sim_factory(sim_scenario(prs=[PRSpec(42, labels=["dependencies"], ci="failure")]))
    async with Receiver() as hook:
        hook.status = 503  # ntfy is down
        async with AutoHarness(sim, tmp_path, webhook=hook.url) as a:
            for _ in range(2):
                blocked = await a.runner.step(refresh=True)
                assert blocked.decision.state is AutoState.BLOCKED
            assert hook.refused == 1 and hook.accepted == []  # one attempt; the retry is later (backoff)
            (pending,) = a.store.undelivered_notifications()
            assert (pending.title, pending.attempts) == ("PR #42: CI failing", 1)
            assert pending.next_attempt_at > datetime.now(timezone.utc) + timedelta(seconds=10)
        # nfu-tui restarts (an hour later, the retry is due) and ntfy is back.
        hook.status = 200
        later = lambda: datetime.now(timezone.utc) + timedelta(hours=1)  # noqa: E731
        async with AutoHarness(sim, tmp_path, webhook=hook.url, store_clock=later) as b:
            assert await b.service.wait_until(lambda: not b.store.undelivered_notifications(), 10)
            for _ in range(2):
                assert (await b.runner.step(refresh=True)).decision.state is AutoState.BLOCKED
            await b.service.outbox.deliver_due()
        assert [(title, click) for title, _, click in hook.accepted] == [
            ("PR #42: CI failing", f"{WEB}/{sim.github.repo}/pull/42")]  # exactly once
        assert "CI is failing on PR #42" in hook.accepted[0][1]


async def test_the_toggle_off_stops_automation(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(sim_scenario())
    async with AutoHarness(sim, tmp_path) as a:
        a.runner.set_enabled(False, actor="alice@box")
        off = await a.runner.step(refresh=True)
        assert off.decision.state is AutoState.DISABLED and a.merges() == 0
        assert a.store.audit_entries()[0].action == "automation"


async def test_never_deploys_while_another_process_holds_the_deploy_lock(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(sim_scenario())
    async with AutoHarness(sim, tmp_path) as a:
        with DeployLock(label="the nfu-tui TUI"):  # e.g. the admin deploys by hand in the TUI
            busy = await a.runner.step(refresh=True)
            assert busy.decision.state is AutoState.BUSY and not busy.acted and a.merges() == 0
            assert busy.decision.describe(a.now()) == f"deploy running in the nfu-tui TUI (pid {os.getpid()})"
        done = await a.runner.step(refresh=True)
        assert done.acted and done.ok and a.merges() == 1


async def test_service_mode_finishes_a_run_when_its_offline_host_returns(sim_factory: Any, tmp_path: Path) -> None:
    hosts = [*SMALL, HostSpec("hsb8", "server", "home", online=False, faults={"offline"})]
    sim = await sim_factory(sim_scenario(*hosts))
    async with AutoHarness(sim, tmp_path) as a:
        forever = asyncio.ensure_future(a.runner.run_forever())
        try:
            assert await a.service.wait_until(lambda: bool(a.store.list_runs()) and run_info(
                a.store.get_run(a.store.list_runs()[0].id)).waiting == ("hsb8",), 60)
            (run,) = a.store.list_runs()
            assert run.status == "running" and run.host_outcomes == {"gpc0": "ok", "hsb0": "ok", "hsb1": "ok"}
            # A queued host blocks nothing: the PR is merged, automation is idle again.
            assert await a.service.wait_until(lambda: a.runner.decision.state is AutoState.IDLE, 30)
            sim.dashboard.set_online("hsb8", True)
            assert await a.service.wait_until(lambda: a.store.get_run(run.id).status == "succeeded", 60)
            assert a.store.get_run(run.id).host_outcomes["hsb8"] == "ok" and a.merges() == 1
        finally:
            a.runner.request_stop("test over")
            await asyncio.wait_for(forever, 10)


def test_no_merge_when_no_host_qualifies_for_an_automatic_deploy() -> None:
    d = decide(situation(pr(updated_at=NOW - timedelta(hours=2)), deployable=False))
    assert d.state is AutoState.BLOCKED and d.action is Action.NONE
    assert "no host qualifies" in d.describe(NOW) and "nfu-tui deploy --pr 42 --merge-only" in d.describe(NOW)
    assert [n.notification.title for n in d.notices] == ["PR #42 not merged: no host to deploy"]


@pytest.mark.parametrize("strategy, title, body", [
    ("none", "PR #42 merged, not deployed", 'deploy_strategy = "none": no host was deployed'),
    ("online-only", "PR #42 deployed to gpc0, hsb0, hsb1; left behind: hsb8",
     "Left behind: hsb8: offline (strategy online-only)."),
    ("all", "PR #42 deployed to gpc0, hsb0, hsb1; waiting for hsb8 (offline)", "Waiting (offline): hsb8"),
])
async def test_run_notifications_say_what_really_happened(sim_factory: Any, tmp_path: Path, strategy: str,
                                                          title: str, body: str) -> None:
    sim = await sim_factory(sim_scenario(*SMALL, HostSpec("hsb8", "server", "home", online=False, faults={"offline"})))
    async with AutoHarness(sim, tmp_path, deploy_strategy=strategy) as a:
        result = await a.runner.step(refresh=True)
        assert result.acted and result.ok, result.message
        (note,) = [e.notification for e in a.events if isinstance(e, RunFinished)]
        assert note.title == title and body in note.message
        assert note.click == f"{sim.github.url}/{sim.github.repo}/pull/42"
        if strategy == "all":  # automation's own run: it resumes it, and says so (a manual run would not)
            from nfu_tui.core.history import open_run

            assert "automation deploys it when it reconnects" in note.message
            (shown,) = [open_run(run) for run in a.store.unfinished_runs()]
            assert shown["next"] == "automation resumes it when they are back"
        if strategy == "none":
            assert a.switched() == [] and a.merges() == 1


async def test_a_manual_run_waiting_for_an_offline_host_says_who_resumes_it(sim_factory: Any, tmp_path: Path) -> None:
    """Automation resumes only its own runs: a manual run left waiting for an offline host must not be
    promised to "nfu-tui auto" (in its notification or in status), and automation indeed leaves it alone."""
    from nfu_tui.core.history import open_run

    sim = await sim_factory(sim_scenario(*SMALL, HostSpec("hsb8", "server", "home", online=False, faults={"offline"})))
    async with AutoHarness(sim, tmp_path) as a:
        plan = a.service.plan(42, ["gpc0", "hsb8"])
        engine = a.service.make_engine(timeouts=SIM_TIMEOUTS)
        result = await engine.run(plan, actor="alice@desk", trigger="manual", queued_wait=0)
        assert result.status.value == "waiting" and result.hosts_with(Outcome.QUEUED) == ["hsb8"]
        (note,) = [e.notification for e in a.events if isinstance(e, RunFinished)]
        assert "nfu-tui auto" not in note.message and f"nfu-tui deploy --resume {result.run_id}" in note.message
        (shown,) = [open_run(run) for run in a.store.unfinished_runs()]
        assert shown["state"] == "waiting" and "nfu-tui auto" not in shown["next"]
        assert f"nfu-tui deploy --resume {result.run_id}" in shown["next"]
        sim.dashboard.set_online("hsb8", True)  # back: automation still leaves a manual run to the admin
        assert await a.service.wait_until(lambda: a.service.fleet.host("hsb8").online, 15)
        step = await a.runner.step()
        assert step.decision.run_id != result.run_id and a.switched() == ["gpc0"]
