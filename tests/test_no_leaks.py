"""Nothing leaks, nothing crashes: the real CLI against a simulator that echoes secrets.

The fake GitHub repeats the token in its error bodies (``echo_token``), the fake dashboard
repeats the password (plain, URL-encoded, base64), the Cookie header, the session and its
CSRF token (``echo_secrets``), and two hosts print invalid text (``garbled_output``). Then
``status``, ``deploy``, ``auto --once`` and ``history --json`` run as processes, with a
webhook receiver on 127.0.0.1, and none of the secrets may appear in anything written:
stdout, stderr, every file under the state and cache directories (the SQLite database and
its WAL included, as bytes) and the webhook requests.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from nfu_tui.core.store import DB_NAME, Store
from nfu_tui.paths import cache_dir, state_dir
from nfu_tui.sim.scenario import HostSpec, PRSpec
from nfu_tui.sim.testing import fast_scenario

PASSWORD = "Fleet pw/ä+5:Zq9"  # a space, a slash, a plus, a non-ASCII letter: every encoding differs


def leak_scenario() -> Any:
    hosts = [
        HostSpec("gpc0", "gaming", "home"),
        HostSpec("hsb0", "server", "home", faults={"garbled_output"}),
        HostSpec("hsb1", "server", "home", faults={"garbled_output", "switch_fails"}),
    ]
    return fast_scenario(hosts=hosts, prs=[PRSpec(42, labels=["dependencies"], ci="success")], speed=400.0,
                         heartbeat_seconds=0.05, password=PASSWORD)


class Webhook:
    """An ntfy-like receiver on 127.0.0.1 that keeps every request (headers and body)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(str(self.headers).encode() + b"\n" + self.path.encode() + b"\n" + body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/nfu-alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cli(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "nfu_tui", "--config", str(config), *args],
                          capture_output=True, timeout=timeout, env=os.environ.copy(), stdin=subprocess.DEVNULL)


def secret_forms(sim: Any) -> dict[str, bytes]:
    """Every secret the run knew, in each form a server might echo it."""
    token = sim.github.token
    forms = {
        "token": token,
        "token basic": base64.b64encode(f"x-access-token:{token}".encode()).decode(),
        "password": PASSWORD,
        "password quote_plus": quote_plus(PASSWORD),
        "password quote": quote(PASSWORD, safe=""),
        "password base64": base64.b64encode(PASSWORD.encode()).decode(),
    }
    for i, session in enumerate(sim.dashboard.sessions_issued):
        forms[f"session {i}"] = session.token
        forms[f"csrf {i}"] = session.csrf
    return {name: value.encode() for name, value in forms.items()}


@pytest.mark.parametrize("sim_thread", [leak_scenario()], indirect=True)
def test_no_secret_in_anything_written_and_garbled_output_is_harmless(sim_thread: Any, tmp_path: Path) -> None:
    sim = sim_thread.sim
    webhook = Webhook()
    try:
        config = sim.write_config(
            tmp_path / "cfg",
            notify={"webhook_url": webhook.url},
            flake_updates={"automation": {"enabled": True, "delay_minutes": 0, "canary_wait_minutes": 0},
                           "rollback": {"strategy": "alert-only"}},
            hosts={"gpc0": {"canary": True}},
        )
        outputs: list[bytes] = []

        def run(*args: str) -> subprocess.CompletedProcess[bytes]:
            done = cli(config, *args)
            outputs.extend((done.stdout, done.stderr))
            assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
            return done

        # status: both services fail with an echoing error; each part is reported as unknown
        sim.github.faults.echo_token_next, sim.github.faults.echo_token_path = 1, "/pulls"
        sim.dashboard.echo_secrets_next, sim.dashboard.echo_secrets_path = 1, "/"
        status = run("status")
        assert status.returncode == 1
        assert b"Fleet: unknown" in status.stdout and b"Update PRs: unknown" in status.stdout
        assert b"No open update PRs" not in status.stdout and b"0 hosts" not in status.stdout
        assert b"Validation failed: request had Authorization: Bearer ***" in status.stderr
        assert b"Cookie: ***" in status.stderr

        # deploy: the merge is refused with the token in the error (journal, webhook, stdout)
        sim.github.faults.echo_token_next, sim.github.faults.echo_token_path = 1, "/pulls/42/merge"
        sim.github.faults.echo_token_status = 422
        refused = run("deploy", "--pr", "42", "--yes")
        assert refused.returncode == 1
        assert not sim.github.default_branch_head()[1].startswith("Merge pull request #42")

        # auto --once: merges, then the canary's dispatch fails with the dashboard's echo
        sim.dashboard.echo_secrets_next, sim.dashboard.echo_secrets_path = 1, "/api/dispatch"
        auto = run("auto", "--once")
        assert auto.returncode == 1
        log = [json.loads(line) for line in auto.stdout.decode().splitlines()]
        assert any(line["event"] == "merged" for line in log)

        # deploy of the merged PR to the two garbled hosts: finishes normally (hsb1's switch fails)
        garbled = run("deploy", "--pr", "42", "--yes", "--hosts", "hsb0,hsb1")
        assert garbled.returncode == 1
        text = garbled.stdout.decode()  # valid UTF-8, or this raises
        assert "hsb0: ok" in text and "hsb1: failed" in text
        assert "\x1b" not in text and "\u202e" not in text and "\ufffd" in text

        history = run("history", "--json")
        assert history.returncode == 0
        runs = json.loads(history.stdout)["runs"]
        # (the canary's failed dispatch left no trace: its outcome, and the automatic run's, is unknown)
        assert [r["status"] for r in runs][:3] == ["failed", "unknown", "failed"]
        assert sim.dashboard.hosts["hsb0"].agent.commit == sim.github.default_branch_head()[0]
    finally:
        webhook.close()

    assert webhook.received, "the webhook was never called"
    with Store(state_dir() / DB_NAME) as store:
        (failed,) = [r for r in store.list_runs() if r.host_outcomes.get("hsb1") == "failed"]
        excerpt = [s for s in store.get_run(failed.id).steps if s.host == "hsb1" and s.step == "host_finished"]
        assert any("\ufffd" in line for line in excerpt[0].data["log_excerpt"])

    files = [p for d in (state_dir(), cache_dir()) if d.exists() for p in d.rglob("*") if p.is_file()]
    assert any(p.name == DB_NAME for p in files)
    written = {f"file {p}": p.read_bytes() for p in files}
    written |= {f"output {i}": out for i, out in enumerate(outputs)}
    written |= {f"webhook {i}": body for i, body in enumerate(webhook.received)}
    leaks = [(name, where) for name, secret in secret_forms(sim).items() for where, data in written.items()
             if secret in data]
    assert not leaks


# --- the other sinks, one by one ------------------------------------------------------------

TOKEN = "ghp_" + "Lk3" * 12


def test_the_json_log_of_auto_redacts_every_field() -> None:
    import io

    from nfu_tui.commands.auto import JsonLog
    from nfu_tui.sanitize import redactor

    redactor.add(TOKEN)
    out = io.StringIO()
    JsonLog(out)("crashed", level="error", message=f"GitHubError: Bearer {TOKEN} \udcff",
                 traceback=f"Traceback:\n  \x1b[1mline\x1b[0m {TOKEN}\n", nested={"lines": [f"token {TOKEN}"]})
    record = json.loads(out.getvalue())
    assert TOKEN not in out.getvalue()
    assert record["message"] == "GitHubError: Bearer *** \ufffd"
    assert record["traceback"] == "Traceback:\n  line ***\n" and record["nested"] == {"lines": ["token ***"]}


def test_log_records_are_redacted_when_made(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from nfu_tui.sanitize import install_log_redaction, redactor

    factory = logging.getLogRecordFactory()
    try:
        install_log_redaction()
        install_log_redaction()  # idempotent
        redactor.add(TOKEN)
        with caplog.at_level(logging.WARNING):
            logging.getLogger("nfu_tui.test").warning("request failed: %s (%s)", f"Bearer {TOKEN}", "\udcff")
        assert caplog.records[-1].getMessage() == "request failed: Bearer *** (\ufffd)"
    finally:
        logging.setLogRecordFactory(factory)


async def test_tui_toasts_pass_the_redaction_boundary(sim: Any, tmp_path: Path) -> None:
    from nfu_tui.config import load_config, resolve_secrets
    from nfu_tui.core.service import FleetService
    from nfu_tui.sanitize import redactor
    from nfu_tui.ui.app import NfuApp

    cfg = load_config(sim.write_config(tmp_path / "cfg"))
    app = NfuApp(FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False)), flush_interval=0.02)
    async with app.run_test(size=(100, 30)) as pilot:
        redactor.add(TOKEN)
        app.notify(f"GitHub said: Bearer {TOKEN}\x1b]0;title\x07 \udcff", title=f"token {TOKEN}", markup=False)
        await pilot.pause()
        (toast,) = [n for n in app._notifications if "GitHub said" in n.message]
        assert toast.message == "GitHub said: Bearer *** \ufffd" and toast.title == "token ***"
