"""Prometheus metrics: `nfu-tui auto --metrics-listen` scraped over HTTP while it merges and deploys
against the simulator, the listen-address rules, and the naming conventions."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nfu_tui.config import is_loopback_host as is_loopback
from nfu_tui.core.metrics import parse_listen
from nfu_tui.core.state import AppState
from nfu_tui.sim.scenario import HostSpec, PRSpec
from nfu_tui.sim.testing import fast_scenario
from test_auto_cli import config, finish, start_auto

HOSTS = [HostSpec("gpc0", "gaming", "home"), HostSpec("hsb0", "server", "home"), HostSpec("hsb1", "server", "home"),
         HostSpec("csb0", "server", "cloud")]


def scenario(failing: str = "") -> Any:
    hosts = [HostSpec(**{**vars(h), "faults": {"switch_fails"} if h.name == failing else set()}) for h in HOSTS]
    return fast_scenario(hosts=hosts, prs=[PRSpec(42, labels=["dependencies"], ci="success")], speed=400.0,
                         heartbeat_seconds=0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scraped: dict, name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


async def read_until(proc: asyncio.subprocess.Process, event: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert raw, f"auto exited early: {lines}"
        lines.append(json.loads(raw))
        if lines[-1]["event"] == event:
            return lines[-1]


async def scrape(url: str) -> tuple[str, str]:
    async with httpx.AsyncClient() as client:
        response = await client.get(url, timeout=10)
    assert response.status_code == 200
    return response.headers["content-type"], response.text


def check_conventions(text: str) -> None:
    """Every family has help; counters end in _total; durations and times are in seconds; no host label."""
    families = list(text_string_to_metric_families(text))
    assert len(families) >= 20
    for family in families:
        assert family.name.startswith("nfu_") and family.documentation, family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if family.type == "histogram" or any(w in family.name for w in ("duration", "age", "timestamp")):
            assert family.name.endswith("_seconds"), family.name
        for s in family.samples:
            assert set(s.labels) <= {"trigger", "status", "state", "outcome", "strategy", "le"}, s


def behind(sim: Any) -> int:
    """Hosts whose checkout is not at the default branch's head, by the simulator's own state."""
    head = sim.desired_state().git_commit
    return sum(1 for host in sim.dashboard.hosts.values() if host.agent.commit != head)


async def test_auto_serves_metrics_through_a_deploy(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario())
    cfg = config(sim, tmp_path)
    state = AppState.load()
    state.held.add("csb0")
    state.save()
    proc = await start_auto(cfg, "--metrics-listen", "127.0.0.1:0")
    lines: list[dict[str, Any]] = []
    try:
        url = (await read_until(proc, "metrics", lines))["url"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        content_type, text = await scrape(url)
        assert content_type.startswith("text/plain") and "version=" in content_type
        await read_until(proc, "run_result", lines)
        _, text = await scrape(url)
    finally:
        proc.send_signal(signal.SIGTERM)
        code, rest, err = await finish(proc)
    lines += rest
    assert code == 0, err
    check_conventions(text)
    m = samples(text)
    # the run this process made: counters and histograms
    assert value(m, "nfu_deploy_runs_total", status="succeeded") == 1
    assert value(m, "nfu_deploy_runs_total", status="failed") == 0  # pre-created label values
    assert value(m, "nfu_deploy_duration_seconds_count", status="succeeded") == 1
    assert value(m, "nfu_host_deploy_duration_seconds_count", outcome="ok") == 3  # csb0 is held
    assert value(m, "nfu_host_deploy_failures_total") == 0
    assert value(m, "nfu_rollbacks_total", strategy="revert-commit") == 0
    # the journal: last deploy per trigger
    assert value(m, "nfu_last_deploy_status", trigger="auto", status="succeeded") == 1
    assert value(m, "nfu_last_deploy_status", trigger="auto", status="failed") == 0
    assert value(m, "nfu_last_deploy_timestamp_seconds", trigger="auto") > 1.7e9
    # the fleet, judged against the simulator: only the held host is behind main now
    assert value(m, "nfu_hosts") == 4 and value(m, "nfu_hosts_held") == 1
    assert value(m, "nfu_hosts_behind") == behind(sim) == 1
    # connections and the GitHub budget
    assert value(m, "nfu_dashboard_connection_state", state="live") == 1
    assert value(m, "nfu_dashboard_connection_state", state="error") == 0
    assert value(m, "nfu_github_rate_remaining_requests") is not None
    assert value(m, "nfu_automation_enabled") == 1


async def test_metrics_count_a_failure_and_its_rollback(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(failing="hsb0"))
    cfg = config(sim, tmp_path)
    proc = await start_auto(cfg, "--metrics-listen", "127.0.0.1:0")
    lines: list[dict[str, Any]] = []
    try:
        url = (await read_until(proc, "metrics", lines))["url"]
        await read_until(proc, "merge", lines)  # decided to merge: the PR list is known, nothing ran yet
        _, text = await scrape(url)
        before = samples(text)
        await read_until(proc, "rollback_finished", lines)
        _, text = await scrape(url)
    finally:
        proc.send_signal(signal.SIGTERM)
        code, rest, err = await finish(proc)
    assert code == 0, err
    # before the run: the PR is pending (number and age), nothing deployed yet
    assert value(before, "nfu_update_pr_pending") == 1 and value(before, "nfu_update_pr_number") == 42
    assert value(before, "nfu_update_pr_age_seconds") >= 0
    assert value(before, "nfu_deploy_runs_total", status="failed") == 0
    m = samples(text)
    assert value(m, "nfu_deploy_runs_total", status="failed") == 1
    assert value(m, "nfu_host_deploy_failures_total") == 1
    assert value(m, "nfu_host_deploy_duration_seconds_count", outcome="failed") == 1
    assert value(m, "nfu_rollbacks_total", strategy="revert-commit") == 1
    assert value(m, "nfu_deploy_runs_total", status="succeeded") == 1  # the rollback's redeploy
    # ... which is recovery: the last deploy is still the failed update
    assert value(m, "nfu_last_deploy_status", trigger="auto", status="failed") == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("127.0.0.1", 9464)), ("[::1]:9464", ("::1", 9464)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("localhost:0", ("localhost", 0)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9464", "127.0.0.1:x", "127.0.0.1:70000"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")


async def test_non_loopback_listen_is_refused_without_the_flag(tmp_path: Path) -> None:
    code, lines, err = await finish(await start_auto(tmp_path / "none.toml", "--metrics-listen", "0.0.0.0:9464"))
    assert code == 2 and lines == []
    assert "not a loopback address" in err and "--metrics-allow-remote" in err


async def test_bad_listen_address_exits_2(tmp_path: Path) -> None:
    code, _, err = await finish(await start_auto(tmp_path / "none.toml", "--metrics-listen", "9464"))
    assert code == 2 and "HOST:PORT" in err
