"""`nfu-tui deploy` against the simulator: in-process (simulator in a thread) and as a real
subprocess for Ctrl-C, SIGKILL + --resume and the cross-process lock."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.cli import main
from nfu_tui.core.store import DeployLock, Store
from nfu_tui.paths import state_dir
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario

LINE = re.compile(r"^\d\d:\d\d:\d\d ")


def scenario(*hosts: HostSpec, **kw: Any):
    return fast_scenario(hosts=list(hosts), **kw)


QUICK = {"speed": 400.0, "heartbeat_seconds": 0.05}
TWO = scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop"), **QUICK)
FAILING = scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop", faults={"switch_fails"}),
                   HostSpec("a3", "desktop"), **QUICK)
# a2's last line reaches the stream a second after its switch's final delta (stored at once).
LATE_TAIL = scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop", faults={"switch_fails", "late_output"}),
                     **QUICK)
# Real processes need a second host slow enough to be interrupted mid-switch.
SLOW_SECOND = scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop", faults={"slow"}), HostSpec("a3", "desktop"),
                      speed=200.0, heartbeat_seconds=0.1)


def write_config(sim: Any, tmp_path: Path, **extra: Any) -> str:
    extra.setdefault("flake_updates", {"automation": {"canary_wait_minutes": 0}})
    extra["flake_updates"].setdefault("post_switch_tests", "never")  # the post-switch tests: test_truthful_rollouts
    return str(sim.write_config(tmp_path / "cfg", **extra))


def merges(sim: Any) -> int:
    return sum(1 for r in sim.github.request_log if r.method == "PUT" and r.path.endswith("/pulls/42/merge"))


def ops(sim: Any) -> list[tuple[str, str]]:
    return [(c.host_id, c.op) for c in sim.dashboard.commands.values()]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _quick_mergeable_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs: poll GitHub's lazily computed `mergeable` every 50 ms instead of 1, 2, 4 … s."""
    from nfu_tui.clients import _github_protocol

    monkeypatch.setattr(_github_protocol, "mergeable_poll_delays", lambda total=30.0: (0.05,) * int(total / 0.05))


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- in-process, simulator in a thread -------------------------------------------


@pytest.mark.parametrize("sim_thread", [TWO], indirect=True)
def test_dry_run_prints_the_plan_and_changes_nothing(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    sim = sim_thread.sim
    code, out, err = run_cli(capsys, "--config", write_config(sim, tmp_path), "deploy", "--pr", "42", "--dry-run")
    assert code == 0, err
    assert "Plan for PR #42" in out and "1. a1 (workstation)" in out and "2. a2 (workstation)" in out
    assert merges(sim) == 0 and ops(sim) == []


@pytest.mark.parametrize("sim_thread", [TWO], indirect=True)
def test_deploy_prints_one_line_per_state_change(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    sim = sim_thread.sim
    code, out, err = run_cli(capsys, "--config", write_config(sim, tmp_path), "deploy", "--pr", "42", "--yes")
    assert code == 0, out + err
    events = [line[9:] for line in out.splitlines() if LINE.match(line)]
    assert events[0].startswith("run #1 started: PR #42")
    assert events[1].startswith("merge requested: PR #42 at ") and events[2].startswith("merged PR #42 as ")
    expected = [r"a1 pull started \(force\)", r"a1 pull: done.*", r"a1 switch started \(force\)", r"a1: ok.*",
                r"a2 pull started \(force\)", r"a2 pull: done.*", r"a2 switch started \(force\)", r"a2: ok.*"]
    # "switched; waiting for the agent to reconnect" shows only when the engine looks in that short window.
    host_events = [e for e in events if e.startswith("a") and "waiting for the agent to restart" not in e]
    assert len(host_events) == len(expected)
    assert all(re.fullmatch(p, e) for p, e in zip(expected, host_events)), host_events
    assert "PR #42: succeeded (2 ok)" in out
    assert merges(sim) == 1 and ops(sim) == [("a1", "pull"), ("a1", "switch"), ("a2", "pull"), ("a2", "switch")]
    assert Store().list_runs()[0].status == "succeeded"
    # what the run was about is journaled as for the TUI's and automation's runs
    code, out, err = run_cli(capsys, "history", "--json")
    run = json.loads(out)["runs"][0]
    assert run["title"] == "flake.lock: Update" and "• Updated input 'nixpkgs':" in run["lock_diff"]
    assert run["headline"] and run["headline"].startswith("nixpkgs ")


@pytest.mark.parametrize("sim_thread", [FAILING], indirect=True)
def test_host_failure_exits_1_with_its_last_lines(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    sim = sim_thread.sim
    code, out, _ = run_cli(capsys, "--config", write_config(sim, tmp_path), "deploy", "--pr", "42", "--yes")
    assert code == 1
    assert re.search(r"^\d\d:\d\d:\d\d a2: failed \(switch\) — switch error \(exit 1\)", out, re.M)
    assert "         | error: 1 dependencies of derivation" in out
    assert "a3: skipped — not started: deploy stopped after a2 failed" in out
    assert ("a3", "pull") not in ops(sim)


@pytest.mark.parametrize("sim_thread", [LATE_TAIL], indirect=True)
def test_failure_excerpt_backfills_the_tail_the_stream_missed(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    sim = sim_thread.sim
    code, out, _ = run_cli(capsys, "--config", write_config(sim, tmp_path), "deploy", "--pr", "42", "--yes")
    assert code == 1
    assert re.search(r"^\d\d:\d\d:\d\d a2: failed \(switch\)", out, re.M), out
    excerpt = out.split("a2: failed (switch)", 1)[1].split("PR #42:", 1)[0]
    assert excerpt.count("| ❌ Switch failed (exit code 1)") == 1, excerpt  # read from /output, once
    assert "| error: 1 dependencies of derivation" in excerpt


@pytest.mark.parametrize("sim_thread", [TWO], indirect=True)
def test_refused_merge_exits_1(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    sim = sim_thread.sim
    sim_thread.call(sim.github.set_ci, 42, "failure")
    code, out, _ = run_cli(capsys, "--config", write_config(sim, tmp_path), "deploy", "--pr", "42", "--yes")
    assert code == 1
    assert "merge refused: PR #42 not merged: CI is failing" in out
    assert merges(sim) == 0 and ops(sim) == []


@pytest.mark.parametrize("sim_thread", [TWO], indirect=True)
def test_a_plan_without_a_host_merges_nothing_unless_merge_only(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    from nfu_tui.core.state import AppState

    sim = sim_thread.sim
    cfg = write_config(sim, tmp_path)
    AppState.load().hold("a1")
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--pr", "42", "--hosts", "a1", "--yes")
    assert code == 2 and "Nothing to deploy: no host qualifies." in out
    assert "no host to deploy, so PR #42 is not merged" in err and "--merge-only" in err
    assert merges(sim) == 0 and ops(sim) == [] and Store().list_runs() == []
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--pr", "42", "--merge-only", "--yes")
    assert code == 0, out + err
    assert "merge, then no deploy (merge only)" in out and "merged as" in out and "not deployed" in out
    assert merges(sim) == 1 and ops(sim) == []
    runs = len(Store().list_runs())
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--pr", "42", "--merge-only", "--dry-run")
    assert code == 2 and "deploying it" not in out  # merged already: nothing for --merge-only to do
    assert "PR #42 is already merged" in err and "nothing to merge" in err and "--converge" in err
    assert merges(sim) == 1 and ops(sim) == [] and len(Store().list_runs()) == runs


@pytest.mark.parametrize("sim_thread", [TWO], indirect=True)
def test_bad_input_exits_2(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    cfg = write_config(sim_thread.sim, tmp_path)
    code, _, err = run_cli(capsys, "--config", cfg, "deploy", "--pr", "999", "--yes")
    assert code == 2 and "PR #999 not found" in err
    code, _, err = run_cli(capsys, "--config", cfg, "deploy", "--pr", "42", "--hosts", "a1,nope", "--yes")
    assert code == 2 and "unknown host(s): nope (known: a1, a2)" in err
    code, _, err = run_cli(capsys, "--config", cfg, "deploy", "--pr", "42")  # stdin is not a terminal
    assert code == 2 and "no terminal to ask on; pass --yes" in err
    code, _, err = run_cli(capsys, "--config", cfg, "deploy", "--resume", "--hosts", "a1")
    assert code == 2 and "--hosts only applies to --pr" in err
    code, _, err = run_cli(capsys, "--config", cfg, "deploy", "--resume", "--yes")
    assert code == 2 and "no unfinished deploy run" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[flake_updates.automation]\ndeploy_strategy = 'sometimes'\n")
    code, _, err = run_cli(capsys, "--config", str(bad), "deploy", "--pr", "42", "--yes")
    assert code == 2 and "deploy_strategy" in err
    assert merges(sim_thread.sim) == 0


@pytest.mark.parametrize("sim_thread", [TWO], indirect=True)
def test_confirmation_on_a_terminal(sim_thread: Any, tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    sim = sim_thread.sim
    cfg = write_config(sim, tmp_path)
    monkeypatch.setattr(sys, "stdin", FakeTTY("n\n"))
    code, out, _ = run_cli(capsys, "--config", cfg, "deploy", "--pr", "42", "--hosts", "a2")
    assert code == 1 and "Nothing done." in out and merges(sim) == 0
    monkeypatch.setattr(sys, "stdin", FakeTTY("y\n"))
    code, out, _ = run_cli(capsys, "--config", cfg, "deploy", "--pr", "42", "--hosts", "a2")
    assert code == 0, out
    assert "not selected: a1" in out and ops(sim) == [("a2", "pull"), ("a2", "switch")]


@pytest.mark.parametrize("sim_thread", [TWO], indirect=True)
def test_unreachable_dashboard_one_line_exit_1(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    cfg = write_config(sim_thread.sim, tmp_path, dashboard={"url": "http://127.0.0.1:9"})  # nothing listens
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--pr", "42", "--yes")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("nfu-tui deploy: Dashboard unreachable: ")
    assert merges(sim_thread.sim) == 0


@pytest.mark.parametrize("sim_thread", [TWO], indirect=True)
def test_abandon(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    with Store() as store:
        run_id = store.create_run("deploy", actor="t", pr=42, head_sha="a" * 40, plan={"pr_number": 42})
    code, out, _ = run_cli(capsys, "deploy", "--abandon", str(run_id))
    assert code == 0 and f"run #{run_id} (PR #42) abandoned" in out
    with Store() as store:
        assert store.get_run(run_id).status == "abandoned" and store.unfinished_runs() == []
        assert store.audit_entries()[0].action == "abandon"
    code, _, err = run_cli(capsys, "deploy", "--abandon", str(run_id))
    assert code == 2 and "already abandoned" in err
    code, _, err = run_cli(capsys, "deploy", "--abandon", "77")
    assert code == 2 and "no run 77" in err


# --- real processes ----------------------------------------------------------------


async def spawn(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfu_tui", *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def read_until(proc: asyncio.subprocess.Process, needle: str, seen: list[str]) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while True:
            raw = await proc.stdout.readline()
            assert raw, f"process ended before {needle!r}: {seen}"
            seen.append(raw.decode())
            if needle in seen[-1]:
                return


@pytest.mark.parametrize("sim", [SLOW_SECOND], indirect=True)
async def test_sigkill_mid_deploy_then_resume(sim: Any, tmp_path: Path) -> None:
    cfg = write_config(sim, tmp_path)
    proc = await spawn("--config", cfg, "deploy", "--pr", "42", "--yes")
    seen: list[str] = []
    await read_until(proc, "a2 switch started", seen)
    proc.kill()  # SIGKILL: no cleanup at all
    await proc.wait()
    with Store() as store:
        (run,) = store.unfinished_runs()
        assert run.merged and run.host_outcomes == {"a1": "ok"} and run.hosts_in_flight == {"a2": "switch"}
    proc = await spawn("--config", cfg, "deploy", "--resume", "--yes")
    out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert f"Resuming run #{run.id}" in text and "done: a1 ok" in text and "interrupted: a2 (switch)" in text
    assert "PR #42: succeeded (3 ok)" in text
    assert merges(sim) == 1
    assert ops(sim) == [("a1", "pull"), ("a1", "switch"), ("a2", "pull"), ("a2", "switch"),
                        ("a3", "pull"), ("a3", "switch")], text


@pytest.mark.parametrize("sim", [SLOW_SECOND], indirect=True)
async def test_ctrl_c_cancels_and_reports_what_still_runs(sim: Any, tmp_path: Path) -> None:
    proc = await spawn("--config", write_config(sim, tmp_path), "deploy", "--pr", "42", "--yes")
    seen: list[str] = []
    await read_until(proc, "a2 switch started", seen)
    proc.send_signal(signal.SIGINT)
    out, _ = await proc.communicate()
    text = "".join(seen) + out.decode()
    assert proc.returncode == 1, text
    assert ("cancel requested: no new host will start; a2: its switch keeps running (the dashboard cannot stop "
            "a running command, contract §3.7); following it to its outcome") in text
    assert "PR #42: cancelled" in text and "a2: ok" in text and "a3: cancelled" in text  # a2 followed to its end
    assert ("a3", "pull") not in ops(sim)
    assert all(c.kill_initiated_at is None for c in sim.dashboard.commands.values())  # never asked to kill
    with Store() as store:
        assert store.list_runs()[0].status == "cancelled"


@pytest.mark.parametrize("sim", [TWO], indirect=True)
async def test_second_deployer_refused_naming_the_holder(sim: Any, tmp_path: Path) -> None:
    with DeployLock(state_dir(), label="nfu-tui auto"):
        proc = await spawn("--config", write_config(sim, tmp_path), "deploy", "--pr", "42", "--yes")
        out, err = await proc.communicate()
    assert proc.returncode == 1
    assert re.search(r"deploy running in nfu-tui auto \(pid \d+, .+@.+\) since \d\d:\d\d", err.decode())
    assert merges(sim) == 0 and ops(sim) == []


@pytest.mark.parametrize("sim_thread", [TWO], indirect=True)
def test_deploy_is_recorded_as_a_github_deployment(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    sim = sim_thread.sim
    code, out, err = run_cli(capsys, "--config", write_config(sim, tmp_path), "deploy", "--pr", "42", "--yes")
    assert code == 0, out + err
    (dep,) = sim_thread.call(sim.github.deployments)
    assert dep["sha"] == Store().list_runs()[0].merge_sha and dep["environment"] == "fleet"
    assert dep["state"] == "success" and dep["statuses"][-1]["description"] == "PR #42: succeeded (2 ok)"
    assert dep["payload"]["label"] == "nfu-tui deploy" and set(dep["payload"]["hosts"]) == {"a1", "a2"}


@pytest.mark.parametrize("sim_thread", [TWO], indirect=True)
def test_deploy_refuses_while_another_client_deploys(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    import httpx

    sim = sim_thread.sim
    head, _ = sim_thread.call(sim.github.default_branch_head)
    headers = {"User-Agent": "t", "Authorization": f"Bearer {sim.github.token}"}
    with httpx.Client(base_url=f"{sim.github.url}/repos/{sim.github.repo}", headers=headers) as gh:
        dep = gh.post("/deployments", json={"ref": head, "auto_merge": False, "required_contexts": [],
                                            "environment": "fleet", "payload": {"client": "x", "actor": "bob@laptop"}})
        gh.post(f"/deployments/{dep.json()['id']}/statuses", json={"state": "in_progress"})
    code, out, err = run_cli(capsys, "--config", write_config(sim, tmp_path), "deploy", "--pr", "42", "--yes")
    assert code == 1 and "a deploy runs elsewhere: bob@laptop" in err
    assert merges(sim) == 0 and ops(sim) == [] and Store().list_runs() == []


# --- converge, and what a long run says ------------------------------------------------


@pytest.mark.parametrize("sim_thread", [scenario(HostSpec("a1", "desktop"), HostSpec("a2", "desktop"),
                                                  HostSpec("a3", "desktop"), **QUICK)], indirect=True)
def test_converge_after_a_partial_deploy(sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    sim = sim_thread.sim
    cfg = write_config(sim, tmp_path)
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--pr", "42", "--hosts", "a1", "--yes")
    assert code == 0, out + err
    head, _ = sim.github.default_branch_head()
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--converge", "--dry-run")
    assert code == 0, err
    assert f"Converge to main ({head[:7]}), no merge: deploy 2 host(s) behind it" in out
    assert re.search(rf"1\. a2 \(workstation\): [0-9a-f]{{7}} → {head[:7]}, \d+ commits? behind", out), out
    assert re.search(rf"2\. a3 \(workstation\): [0-9a-f]{{7}} → {head[:7]}", out)
    assert f"a1: at main {head[:7]}" in out
    assert ops(sim) == [("a1", "pull"), ("a1", "switch")]  # the dry run changed nothing
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--converge", "--hosts", "a2,a3", "--yes")
    assert code == 0, out + err
    assert f"converge to main {head[:7]}: succeeded (2 ok)" in out
    assert merges(sim) == 1 and sim.github.default_branch_head()[0] == head
    assert {h.generation for h in sim.dashboard.hosts.values()} == {head[:7]}
    assert [(r.kind, r.pr) for r in Store().list_runs()] == [("converge", None), ("deploy", 42)]
    converge, deploy = sim_thread.call(sim.github.deployments)  # each run recorded on GitHub
    assert (converge["sha"], converge["state"], converge["payload"]["subject"]) == (
        head, "success", f"converge to main {head[:7]}")
    assert deploy["sha"] == head and deploy["state"] == "inactive"  # the converge's success superseded it
    code, out, _ = run_cli(capsys, "--config", cfg, "deploy", "--converge", "--yes")
    assert code == 0 and "Nothing done: no host to converge." in out
    code, out, _ = run_cli(capsys, "history")
    assert f"converge to main {head[:7]} — succeeded (manual)" in out


@pytest.mark.parametrize("sim_thread", [scenario(HostSpec("a1", "desktop", faults={"slow"}), speed=60.0,
                                                  heartbeat_seconds=0.05)], indirect=True)
def test_dashboard_outage_lost_and_back_lines_and_what_it_waits_for(sim_thread: Any, tmp_path: Path, capsys: Any,
                                                                    monkeypatch: Any) -> None:
    import threading
    import time

    from nfu_tui.commands import deploy as deploy_cmd
    from nfu_tui.core import engine as eng
    from nfu_tui.core import watch

    sim = sim_thread.sim
    monkeypatch.setattr(watch, "QUIET_SECONDS", 0.3)
    printed = deploy_cmd._print_event

    def outage() -> None:  # once the switch runs on the host: 1.5 s without the dashboard
        while not any(c.op == "switch" for c in list(sim.dashboard.commands.values())):
            time.sleep(0.01)
        sim_thread.call(sim.dashboard.set_unreachable, True)
        time.sleep(1.5)
        sim_thread.call(sim.dashboard.set_unreachable, False)

    def outage_at_the_switch(event: Any) -> None:
        printed(event)
        if isinstance(event, eng.HostStarted) and event.phase == "switch":
            threading.Thread(target=outage, daemon=True).start()

    monkeypatch.setattr(deploy_cmd, "_print_event", outage_at_the_switch)
    code, out, err = run_cli(capsys, "--config", write_config(sim, tmp_path), "deploy", "--pr", "42", "--yes")
    assert code == 0, out + err
    lines = [line[9:] for line in out.splitlines() if LINE.match(line)]
    lost = next(i for i, line in enumerate(lines) if line.startswith("dashboard connection lost"))
    back = next(i for i, line in enumerate(lines) if line.startswith("dashboard connection back after"))
    assert lost < back and "hosts' states are unknown until it is back" in lines[lost]
    assert sum(line.startswith("dashboard connection lost") for line in lines) == 1  # not once per retry
    during = lines[lost + 1:back]
    assert any(line.startswith("waiting for the dashboard (unreachable since ") and "a1 switch (" in line
               for line in during), during
    assert "a1: ok" in out


@pytest.mark.parametrize("sim_thread", [scenario(HostSpec("a1", "desktop"),
                                                  HostSpec("a2", "desktop", online=False, faults={"offline"}),
                                                  **QUICK)], indirect=True)
def test_a_newer_pr_deploy_says_it_takes_over_the_host_an_older_run_waits_for(
        sim_thread: Any, tmp_path: Path, capsys: Any) -> None:
    from nfu_tui.sim.scenario import PRSpec

    sim = sim_thread.sim
    cfg = write_config(sim, tmp_path)
    run_cli(capsys, "--config", cfg, "deploy", "--pr", "42", "--yes")
    (first,) = Store().unfinished_runs()
    newer = sim_thread.call(sim.github.open_update_pr, PRSpec(number=0, age_hours=0))
    code, out, err = run_cli(capsys, "--config", cfg, "deploy", "--pr", str(newer), "--dry-run")
    assert code == 0, err
    assert (f"Warning: takes over a2 from run #{first.id} (PR #42), which waits for it offline: that run no longer "
            "deploys it") in out
    assert not Store().get_run(first.id).finished  # the dry run changed nothing
    run_cli(capsys, "--config", cfg, "deploy", "--pr", str(newer), "--yes")
    old = Store().get_run(first.id)
    assert old.status == "abandoned" and old.host_outcomes["a2"] == "skipped"
    assert [(r.pr, r.status) for r in Store().unfinished_runs()] == [(newer, "running")]
