"""`nfu-tui deploy --continue RUN_ID`: deploy the rest of a run that stopped on unverified canaries, without a
terminal or after a TUI restart — against the simulator (in a thread), judged by its final state."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from test_deploy_cli import FakeTTY, _quick_mergeable_polls, merges, ops, run_cli, scenario  # noqa: F401

from nfu_tui.core.history import load_run
from nfu_tui.core.store import Store, local_actor
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.ui.screens.history import run_summary

THREE = scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop"), HostSpec("a3", "desktop"),
                 speed=100.0, heartbeat_seconds=0.1)


def config(sim: Any, tmp_path: Path, **extra: Any) -> str:
    """a1 the canary; verification gives up after about a second; no webhook listens (the run's message stays
    in the outbox, readable)."""
    return str(sim.write_config(tmp_path / "cfg", hosts={"a1": {"canary": True}},
                                flake_updates={"verify_minutes": 0.02, "post_switch_tests": "never",
                                               "automation": {"canary_wait_minutes": 0}},
                                notify={"webhook_url": "http://127.0.0.1:9/alerts"}, **extra))


def switches(sim: Any) -> list[str]:
    return sorted(h for h, op in ops(sim) if op == "switch")


def stop_on_an_unverified_canary(sim_thread: Any, tmp_path: Path, capsys: Any) -> tuple[str, str]:
    """A deploy of PR #42 whose canary switched but whose System the fleet never confirms (version.json is not
    republished after the merge): run #1 stops, a2 and a3 untouched. The config path and the deploy's output."""
    sim = sim_thread.sim
    sim.publish_delay = 600.0
    cfg = config(sim, tmp_path)
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--pr", "42", "--yes")
    assert code == 1, out + err
    assert "a1: unverified" in out and "a2: skipped" in out and "a3: skipped" in out
    assert switches(sim) == ["a1"] and merges(sim) == 1
    with Store() as store:
        assert store.get_run(1).status == "unverified"
    return cfg, out


@pytest.mark.parametrize("sim_thread", [THREE], indirect=True)
def test_continue_deploys_the_rest_once(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    sim = sim_thread.sim
    cfg, out = stop_on_an_unverified_canary(sim_thread, tmp_path, capsys)
    way_on = "`nfu-tui deploy --continue 1` deploys the rest without the canaries' proof"
    assert f"stopped at the canaries: {way_on} (or `o` in the TUI)" in out  # the deploy's last line
    code, history, _ = run_cli(capsys, "history", "--run", "1")
    assert code == 0 and f"  next: {way_on}" in history
    with Store() as store:  # the TUI's history screen
        assert f"Next: {way_on}" in run_summary(load_run(store, 1)).plain
    with Store() as store:
        (note,) = [n for n in store.undelivered_notifications() if n.id == "run:1:unverified"]
    assert f"Stopped at the canaries: {way_on} (or `o` in the TUI)." in note.message

    sim_thread.call(sim.dashboard.remote_changed)  # the fleet catches up meanwhile: the rest can be verified
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--continue", "1", "--yes")
    lines = " ".join(out.split())
    assert "Continuing run #1 from " in out and "It stopped because a1 was never verified:" in out
    assert "• a1 (executed SUCCESS · reached ✓" in lines and "System outdated" in lines
    assert "Not proven: that a1 runs the new generation healthily." in lines
    assert ("The 2 other host(s) (a2, a3) are deployed in a new run, each verified as usual; no second merge, a1 "
            f"not redeployed. Journaled and audited as {local_actor()}.") in lines
    assert "run #2 resumed: PR #42" in out and "a2: ok" in out and "a3: ok" in out  # streamed per host
    # a1 stays unproven in the continued run: its exit code says so, as `deploy` does for any unverified host
    assert code == 1 and "not verified on a1" in out and "stopped at the canaries" not in out
    # the fleet: every host at the merge, one switch per host (the canary not again), one merge
    with Store() as store:
        merge = store.get_run(1).merge_sha
        run = store.get_run(2)
        (entry,) = [e for e in store.audit_entries() if e.action == "continue_unverified"]
    assert merge and {h.agent.system_commit for h in sim.dashboard.hosts.values()} == {merge}
    assert switches(sim) == ["a1", "a2", "a3"] and merges(sim) == 1
    assert [s.data["from_run"] for s in run.steps if s.step == "canary_accepted"] == [1]
    assert (entry.actor, entry.details["from_run"], entry.details["hosts"]) == (local_actor(), 1, ["a1"])
    code, history, _ = run_cli(capsys, "history", "--run", "1")
    assert "next:" not in history  # continued already: no second offer

    code, _, err = run_cli(capsys, "--config", cfg, "deploy", "--continue", "1", "--yes")
    assert code == 2 and "run #1 was continued already; there is nothing to continue anyway" in err
    assert switches(sim) == ["a1", "a2", "a3"] and merges(sim) == 1


@pytest.mark.parametrize("sim_thread", [THREE], indirect=True)
def test_continue_refusals(sim_thread: Any, tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    sim = sim_thread.sim
    cfg, _ = stop_on_an_unverified_canary(sim_thread, tmp_path, capsys)
    code, _, err = run_cli(capsys, "--config", cfg, "deploy", "--continue", "1")  # stdin is not a terminal
    assert code == 2 and "no terminal to ask on; pass --yes" in err
    monkeypatch.setattr(sys, "stdin", FakeTTY("n\n"))
    code, out, _ = run_cli(capsys, "--config", cfg, "deploy", "--continue", "1")
    assert code == 1 and "It stopped because a1 was never verified:" in out and "Nothing done." in out
    code, _, err = run_cli(capsys, "--config", cfg, "deploy", "--continue", "7", "--yes")
    assert code == 2 and "no run 7" in err
    code, _, err = run_cli(capsys, "--config", cfg, "deploy", "--continue", "1", "--hosts", "a2", "--yes")
    assert code == 2 and "--hosts only applies to --pr" in err
    with Store() as store:
        assert [e for e in store.audit_entries() if e.action == "continue_unverified"] == []
        assert len(store.list_runs()) == 1
    # a run that did not stop on its canaries (here: it succeeded) is not continued
    sim_thread.call(sim.dashboard.remote_changed)
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--converge", "--yes")
    assert code == 0, out + err
    code, _, err = run_cli(capsys, "--config", cfg, "deploy", "--continue", "2", "--yes")
    assert code == 2 and "run #2 did not stop on unverified canaries alone; there is nothing to continue" in err
    assert switches(sim) == ["a1", "a2", "a3"] and merges(sim) == 1
