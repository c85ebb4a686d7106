"""RunWatch: the lost/back lines and what a headless run says it waits for (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from nfu_tui.core import engine as eng
from nfu_tui.core.watch import RunWatch

T0 = datetime(2026, 8, 16, 2, 0, 0, tzinfo=timezone.utc)


def local(at: datetime) -> str:
    return at.astimezone().strftime("%H:%M:%S")


def test_lost_and_back_once_each_with_how_long() -> None:
    now = [T0]
    watch = RunWatch(clock=lambda: now[0])
    assert watch.connection(True) is None  # no change
    lost = watch.connection(False, "the dashboard closed the connection")
    assert lost is not None and lost.startswith("dashboard connection lost (the dashboard closed the connection)")
    assert watch.connection(False, "connect failed") is None  # every retry is not a new loss
    now[0] = T0 + timedelta(seconds=75)
    assert watch.waiting() == f"waiting for the dashboard (unreachable since {local(T0)}; retrying)"
    assert watch.connection(True) == "dashboard connection back after 1:15: fleet state resynced"
    assert watch.waiting() == "waiting for the next step"


def test_waiting_names_what_the_run_waits_on() -> None:
    now = [T0]
    watch = RunWatch(clock=lambda: now[0])
    watch.engine(eng.MergeRequested(pr_number=42, head_sha="a" * 40, at=T0))
    assert watch.waiting() == "waiting for GitHub's answer to the merge"
    watch.engine(eng.Merged(pr_number=42, merge_sha="b" * 40, at=T0))
    watch.engine(eng.HostQueued(host="hsb8", reason="offline", at=T0))
    watch.engine(eng.HostStarted(host="gpc0", phase="pull", at=T0))
    watch.engine(eng.HostProgress(host="gpc0", phase="switch", message="started", at=T0))
    now[0] = T0 + timedelta(seconds=130)
    assert watch.waiting() == "waiting for gpc0 switch (2:10 so far); offline host(s) to come back: hsb8"
    watch.engine(eng.HostFinished(host="gpc0", outcome=eng.HostOutcome("gpc0", eng.Outcome.OK), at=now[0]))
    watch.engine(eng.WaitingForCanaries(until=T0 + timedelta(minutes=10), hosts=("gpc0",), at=now[0]))
    watch.engine(eng.Paused(reason="outside the maintenance window", at=now[0]))
    watch.engine(eng.CancelRequested(at=now[0]))
    text = watch.waiting()
    assert text.startswith(f"waiting for the canary check at {local(T0 + timedelta(minutes=10))}; "
                           "the deploy gate (outside the maintenance window); offline host(s) to come back: hsb8")
    assert text.endswith("(cancel requested: no new host starts)")
    watch.engine(eng.HostProgress(host="hsb8", phase="queue", message="back online", at=now[0]))
    assert "hsb8" not in watch.waiting()
