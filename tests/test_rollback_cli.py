"""`nfu-tui rollback --host HOST…` against the simulator (in a thread): the TUI's per-host rollback
from the CLI, judged by the system the simulated host runs afterwards."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from test_deploy_cli import QUICK, run_cli, scenario, write_config

from nfu_tui.core.store import DeployLock, Store
from nfu_tui.paths import state_dir
from nfu_tui.sim.scenario import HostSpec

HOSTS = scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop", faults={"rollback_fails"}),
                 HostSpec("a3", "desktop"), **QUICK)


def rollbacks(sim: Any) -> list[tuple[str, str]]:
    return [(c.host_id, c.status) for c in sim.dashboard.commands.values() if c.op == "rollback"]


def running(sim: Any, host: str) -> str:
    """The commit the simulated host's running system was built from."""
    return sim.dashboard.hosts[host].agent.system_commit


@pytest.mark.parametrize("sim_thread", [HOSTS], indirect=True)
def test_rollback_takes_a_deployed_host_back_and_reports_by_the_evidence(sim_thread: Any, tmp_path: Path,
                                                                         capsys: Any) -> None:
    sim = sim_thread.sim
    config = write_config(sim, tmp_path)
    before = running(sim, "a1")
    code, out, err = run_cli(capsys, "--config", config, "deploy", "--pr", "42", "--yes", "--hosts", "a1,a2")
    assert code == 0, out + err
    merged = Store().list_runs()[0].merge_sha
    assert running(sim, "a1")[:7] == merged[:7] != before[:7]

    code, out, err = run_cli(capsys, "--config", config, "rollback", "--host", "a1", "--yes")
    assert code == 0, out + err
    assert "Roll a1 back to its previous NixOS generation?" in out and "nfu-tui hold a1" in out
    assert re.search(r"^\d\d:\d\d:\d\d a1 rollback started \(command \S+\)$", out, re.M)
    assert "  a1: rolled back and verified (run #2)" in out
    assert running(sim, "a1") == before and running(sim, "a2")[:7] == merged[:7]  # only a1 went back
    assert rollbacks(sim) == [("a1", "SUCCESS")]
    with Store() as store:
        run = store.get_run(2)
        assert (run.kind, run.status, run.host_outcomes) == ("rollback", "succeeded", {"a1": "ok"})
        assert (store.audit_entries()[0].action, store.audit_entries()[0].details["host"]) == ("rollback_host", "a1")

    # a2's rollback fails (exit 1, System error): exit 1, its last lines, journaled "failed", a2 keeps running the merge.
    code, out, err = run_cli(capsys, "--config", config, "rollback", "--host", "a2", "--yes")
    assert code == 1, out + err
    assert re.search(r"^\d\d:\d\d:\d\d a2: failed — rollback error \(exit 1\)", out, re.M)
    assert "         | error: activation script failed" in out and "  a2: failed (run #3)" in out
    assert running(sim, "a2")[:7] == merged[:7]
    assert Store().get_run(3).status == "failed"

    # Interrupted after the dispatch (journaled so): --resume follows that command, never sends another one.
    (sent,) = [c.id for c in sim.dashboard.commands.values() if c.op == "rollback" and c.host_id == "a1"]
    with Store() as store:
        run_id = store.create_run("rollback", actor="t", plan={"op": "rollback", "hosts": ["a1"]})
        store.record(run_id, "host_started", host="a1", phase="rollback")
        store.record(run_id, "command_dispatched", host="a1", phase="rollback", command_id=sent)
    code, out, err = run_cli(capsys, "--config", config, "rollback", "--resume", str(run_id))
    assert code == 0, out + err
    assert f"  run #{run_id}: a1: rolled back to the previous generation (System ok)" in out
    assert len(rollbacks(sim)) == 2 and Store().get_run(run_id).status == "succeeded"
    code, _, err = run_cli(capsys, "--config", config, "rollback", "--resume", "1")
    assert code == 2 and "run #1 is not an unfinished per-host rollback run" in err


@pytest.mark.parametrize("sim_thread", [HOSTS], indirect=True)
def test_rollback_refuses_without_confirmation_unknown_hosts_and_a_held_lock(sim_thread: Any, tmp_path: Path,
                                                                              capsys: Any) -> None:
    sim = sim_thread.sim
    config = write_config(sim, tmp_path)
    code, out, err = run_cli(capsys, "--config", config, "rollback", "--host", "a1")  # no terminal to ask on
    assert code == 2 and "refusing to roll back without confirmation: no terminal to ask on; pass --yes" in err
    assert "Roll a1 back to its previous NixOS generation?" in out  # what it would have done
    code, _, err = run_cli(capsys, "--config", config, "rollback", "--host", "a1", "nope", "--yes")
    assert code == 2 and "unknown host(s): nope (known: a1, a2, a3)" in err
    with DeployLock(state_dir(), label="nfu-tui deploy --pr 42"):
        code, _, err = run_cli(capsys, "--config", config, "rollback", "--host", "a1", "--yes")
    assert code == 1 and "deploy running in nfu-tui deploy --pr 42" in err and "try again" in err
    sim_thread.call(sim.dashboard.set_online, "a3", False)
    code, _, err = run_cli(capsys, "--config", config, "rollback", "--host", "a1", "a3", "--yes")
    assert code == 1 and "a3 is offline: the dashboard cannot run a rollback on it. Nothing was rolled back." in err
    assert rollbacks(sim) == [] and Store().list_runs() == []
