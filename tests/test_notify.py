"""ntfy-style webhook notifications against a recording server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.header import decode_header, make_header

import httpx
import pytest
from aiohttp import web

from nfu_tui.core.notify import MAX_BODY_BYTES, Outbox, WebhookNotifier, retry_delay
from nfu_tui.core.store import Store
from nfu_tui.errors import ConfigError
from nfu_tui.models import Notification

SECRETS = ("secret-topic", "hunter2", "tk_abc", "alice")


@dataclass
class Recorder:
    base: str = ""
    status: int = 200
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[dict] = field(default_factory=list)


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
async def server() -> AsyncIterator[Recorder]:
    rec = Recorder()

    async def handler(request: web.Request) -> web.Response:
        rec.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": dict(request.headers),
                "body": await request.read(),
            }
        )
        if rec.hang:
            await rec.release.wait()
        return web.Response(status=rec.status, text="{}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield rec
    rec.release.set()
    await runner.cleanup()


def _no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


async def test_disabled_notifier_does_nothing() -> None:
    notifier = WebhookNotifier(None)
    assert not notifier.enabled and repr(notifier) == "WebhookNotifier(None)"
    assert await notifier.send(Notification("t", "m")) is False
    assert not WebhookNotifier("").enabled


@pytest.mark.parametrize(
    ("severity", "priority"), [("error", "high"), ("warning", "default"), ("information", "low"), ("odd", "low")]
)
async def test_ntfy_request(server: Recorder, severity: str, priority: str) -> None:
    async with WebhookNotifier(f"{server.base}/nixfleet") as notifier:
        ok = await notifier.send(
            Notification("Deploy failed", "web1: switch exited 1", severity=severity, tags=["warning", "nfu"])
        )
    assert ok is True
    (req,) = server.requests
    assert (req["method"], req["path"], req["body"]) == ("POST", "/nixfleet", b"web1: switch exited 1")
    assert req["headers"]["Title"] == "Deploy failed"
    assert req["headers"]["Priority"] == priority
    assert req["headers"]["Tags"] == "warning,nfu"
    assert req["headers"]["Content-Type"] == "text/plain; charset=utf-8"


async def test_no_tags_header_without_tags(server: Recorder) -> None:
    async with WebhookNotifier(f"{server.base}/t") as notifier:
        assert await notifier.send(Notification("PR #42", "flake.lock update"))
    assert "Tags" not in server.requests[0]["headers"]


async def test_non_ascii_title_is_rfc2047_and_body_is_utf8(server: Recorder) -> None:
    title = "nixpkgs abc1234 → def5678\nMüller's 🚀"
    async with WebhookNotifier(f"{server.base}/t") as notifier:
        assert await notifier.send(Notification(title, "Grüße aus Wien ✅", tags=["✅"]))
    headers = server.requests[0]["headers"]
    assert headers["Title"].startswith("=?UTF-8?B?") and headers["Title"].isascii()
    assert str(make_header(decode_header(headers["Title"]))) == "nixpkgs abc1234 → def5678 Müller's 🚀"
    assert str(make_header(decode_header(headers["Tags"]))) == "✅"
    assert server.requests[0]["body"].decode("utf-8") == "Grüße aus Wien ✅"


async def test_long_message_is_truncated_to_ntfy_limit(server: Recorder) -> None:
    async with WebhookNotifier(f"{server.base}/t") as notifier:
        assert await notifier.send(Notification("log", "ä" * 5000))
    body = server.requests[0]["body"]
    assert len(body) <= MAX_BODY_BYTES
    assert body.decode("utf-8").endswith("… (truncated)")


async def test_userinfo_becomes_basic_auth_and_query_is_kept(server: Recorder, caplog) -> None:
    url = server.base.replace("http://", "http://alice:hunter2@") + "/secret-topic?auth=tk_abc"
    notifier = WebhookNotifier(url)
    _no_secrets(repr(notifier))
    assert notifier.display_url == server.base + "/…"
    with caplog.at_level(logging.DEBUG):
        assert await notifier.send(Notification("t", "m"))
    await notifier.aclose()
    client_log = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp"))
    assert "HTTP Request: POST " + server.base + "/***?*** " in client_log  # httpx's own log, masked
    (req,) = server.requests
    assert req["path"] == "/secret-topic" and req["query"] == "auth=tk_abc"
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(b"alice:hunter2").decode()
    _no_secrets(client_log)


@pytest.mark.parametrize("status", [403, 429, 500])
async def test_error_status_returns_false_and_logs_without_secrets(server: Recorder, status: int, caplog) -> None:
    server.status = status
    url = server.base.replace("http://", "http://alice:hunter2@") + "/secret-topic?auth=tk_abc"
    with caplog.at_level(logging.WARNING, logger="nfu_tui.core.notify"):
        async with WebhookNotifier(url) as notifier:
            assert await notifier.send(Notification("t", "m")) is False
    assert f"answered HTTP {status}" in caplog.text and "127.0.0.1" in caplog.text
    _no_secrets(caplog.text)


async def test_refused_connection_returns_false(caplog) -> None:
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="nfu_tui.core.notify"):
        async with WebhookNotifier(f"http://alice:hunter2@127.0.0.1:{port}/secret-topic?auth=tk_abc") as notifier:
            assert await notifier.send(Notification("t", "m")) is False
    assert "failed: ConnectError" in caplog.text
    _no_secrets(caplog.text)


async def test_slow_server_times_out(server: Recorder, caplog) -> None:
    server.hang = True
    with caplog.at_level(logging.WARNING, logger="nfu_tui.core.notify"):
        async with WebhookNotifier(f"{server.base}/secret-topic", timeout=0.2) as notifier:
            assert await notifier.send(Notification("t", "m")) is False
    assert "no answer within 0.2 s" in caplog.text
    _no_secrets(caplog.text)


async def test_exception_text_carrying_the_url_is_not_logged(caplog) -> None:
    url = "https://alice:hunter2@ntfy.example/secret-topic?auth=tk_abc"

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    with caplog.at_level(logging.WARNING, logger="nfu_tui.core.notify"):
        async with WebhookNotifier(url, transport=httpx.MockTransport(handler)) as notifier:
            assert await notifier.send(Notification("t", "m")) is False
    assert "webhook https://ntfy.example/… failed: ConnectError" in caplog.text
    _no_secrets(caplog.text)


@pytest.mark.parametrize("url", ["ftp://host/topic", "https://", "mailto:alice@example.org", "http://:80/x", "ntfy"])
def test_invalid_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        WebhookNotifier(url)
    _no_secrets(str(info.value))


async def test_outbox_delivers_once_per_event_and_retries_with_capped_backoff(server: Recorder, tmp_path,
                                                                              caplog) -> None:
    now = [datetime(2026, 8, 1, 2, 0, tzinfo=timezone.utc)]
    store = Store(tmp_path / "j.sqlite3", clock=lambda: now[0])
    n = Notification("PR #42: CI failing", "red", "error", ["x"], click="https://github.com/o/r/pull/42",
                     event_id="notice:ci-red:42:abc")
    async with WebhookNotifier(f"{server.base}/t") as notifier:
        outbox = Outbox(store, notifier, clock=lambda: now[0], rng=lambda: 1.0)
        server.status = 503
        assert await outbox.send(n) is False
        (entry,) = store.undelivered_notifications()
        assert (entry.attempts, entry.last_error) == (1, "HTTP 503")
        assert entry.next_attempt_at == now[0] + timedelta(seconds=30)
        assert await outbox.send(n) is False and len(server.requests) == 1  # same event, not due: no attempt
        now[0] += timedelta(seconds=30)
        await outbox.deliver_due()
        assert store.undelivered_notifications()[0].next_attempt_at == now[0] + timedelta(seconds=60)
        now[0] += timedelta(seconds=60)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nfu_tui.core.notify"):
            await outbox.deliver_due()  # the third failure: it is failing, said at warning
        assert any("still undelivered after 3 attempts (HTTP 503)" in r.getMessage() for r in caplog.records)
        assert store.undelivered_notifications()[0].next_attempt_at == now[0] + timedelta(seconds=120)
        server.status = 200
        now[0] += timedelta(minutes=5)
        # Another process sharing the store: one of the two delivers, the claim keeps the other away.
        other = Outbox(store, notifier, clock=lambda: now[0])
        assert sorted(await asyncio.gather(outbox.deliver_due(), other.deliver_due())) == [0, 1]
        assert store.undelivered_notifications() == [] and store.notification(n.event_id).attempts == 4
        assert await outbox.send(n) is True  # already delivered: never sent again
    assert [r["headers"].get("Click") for r in server.requests] == [n.click] * 4
    assert len(server.requests) == 4  # three refused, one accepted


def test_retry_delay_doubles_up_to_an_hour_with_jitter() -> None:
    assert [retry_delay(k, rng=lambda: 1.0) for k in (1, 2, 3, 8, 20)] == [30, 60, 120, 3600, 3600]
    assert retry_delay(1, rng=lambda: 0.0) == 15


async def test_title_and_body_pass_the_redaction_boundary(server: Recorder) -> None:
    from nfu_tui.sanitize import redactor

    redactor.add("Fleet pw/ä+5:Zq9")
    notifier = WebhookNotifier(f"{server.base}/alerts")
    try:
        n = Notification("Merge refused: Bearer ghp_0123456789abcdefABCDEF0123",
                         "dashboard said: password=Fleet+pw%2F%C3%A4%2B5%3AZq9\x1b]0;x\x07 \udcff", "error", ("nfu-tui",))
        assert await notifier.send(n)
    finally:
        await notifier.aclose()
    (request,) = server.requests
    assert request["headers"]["Title"] == "Merge refused: Bearer ***"
    assert request["body"].decode() == "dashboard said: password=***;x \ufffd"  # the escape went with the value


def test_a_cancelled_run_names_its_left_hosts_once_per_reason() -> None:
    """A cancel leaves every not-started host with the same reason: the body says it once, not per host
    (11 copies made the toast cover the deploy screen's next steps)."""
    from nfu_tui.core.engine import HostOutcome, Outcome, RunResult, RunStatus
    from nfu_tui.core.notify import run_notification

    why = "not started: the deploy was cancelled"
    left = [HostOutcome(f"h{i}", Outcome.CANCELLED, detail=why) for i in range(11)]
    result = RunResult(1, RunStatus.CANCELLED, 42, merge_sha="2f5effc0", outcomes=(
        HostOutcome("gpc0", Outcome.OK), *left, HostOutcome("x9", Outcome.SKIPPED, detail="held during the run")))
    note = run_notification(result)
    assert note.message.count(why) == 1
    hosts = ", ".join(o.host for o in left)
    assert f"Not deployed: {hosts} (cancelled: {why}); x9 (skipped: held during the run)." in note.message
    assert "To finish it: `nfu-tui deploy --converge`." in note.message


def test_the_outbox_stores_notifications_past_the_redaction_boundary(tmp_path) -> None:
    """The outbox is part of the journal: what it writes is valid text without secrets, like every other
    row (a lone surrogate made the write raise; a token in a message was stored as is)."""
    from nfu_tui.sanitize import redactor

    token = "ghp_" + "Qx7" * 12
    redactor.add(token)
    store = Store(tmp_path / "j.sqlite3")
    n = Notification(f"PR #42 failed: Bearer {token}", "hsb1: \udcff output\nnext line", "error",
                     click=f"https://github.com/o/r/pull/42?t={token}", event_id="run:1:failed")
    outbox = Outbox(store, WebhookNotifier("http://127.0.0.1:9/t"))
    assert outbox.enqueue(n) == "run:1:failed"
    store.notification_failed("run:1:failed", f"HTTP 500 for token {token}", datetime.now(timezone.utc))
    store.close()
    data = (tmp_path / "j.sqlite3").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("j.sqlite3-*"))
    assert token.encode() not in data
    entry = Store(tmp_path / "j.sqlite3").notification("run:1:failed")
    assert entry is not None and entry.title == "PR #42 failed: Bearer ***"
    assert entry.message == "hsb1: \ufffd output\nnext line" and "***" in entry.click and "***" in entry.last_error


def test_notify_cli_lists_and_retries_undelivered_notifications_now(tmp_path, capsys) -> None:
    """`nfu-tui notify --retry` delivers what the backoff would keep for later (a timer's `auto --once`
    only sends what is due); without --retry it lists them; no webhook configured: nothing to retry."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from nfu_tui.cli import main

    answers: list[int] = [503, 503, 200]
    got: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(answers.pop(0))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/alerts"
        config = tmp_path / "config.toml"
        config.write_text(f'[notify]\nwebhook_url = "{url}"\n')

        async def first_attempt() -> None:
            with Store() as store:
                async with WebhookNotifier(url) as notifier:
                    assert not await Outbox(store, notifier).send(
                        Notification("PR #42 deploy failed", "hsb0 failed", "error", event_id="run:7"))

        asyncio.run(first_attempt())
        (entry,) = Store().undelivered_notifications()
        assert entry.next_attempt_at > datetime.now(timezone.utc)  # not due: auto --once would not send it yet

        assert main(["--config", str(config), "notify"]) == 0
        out = capsys.readouterr().out
        assert "PR #42 deploy failed — 1 attempt(s), last error HTTP 503, next attempt" in out
        assert main(["--config", str(config), "notify", "--retry"]) == 1  # refused again
        assert "0 delivered now, 1 still undelivered" in capsys.readouterr().out
        assert main(["--config", str(config), "notify", "--retry"]) == 0
        assert "1 delivered now" in capsys.readouterr().out and Store().undelivered_notifications() == []
        assert got == ["hsb0 failed"] * 3 and answers == []
        config.write_text("")
        assert main(["--config", str(config), "notify", "--retry"]) == 2
        assert "no notify.webhook_url configured" in capsys.readouterr().err
    finally:
        httpd.shutdown()
