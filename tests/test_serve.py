"""`nfu-tui serve`: the page and its WebSocket on 127.0.0.1 drive a real nfu-tui process (the demo);
non-loopback addresses need --allow-remote; a bad configuration fails before serving."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import websockets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfu_tui", "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def get_page(url: str, timeout: float = 30) -> httpx.Response:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                return await client.get(url, timeout=5)
            except httpx.TransportError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def test_the_page_and_its_websocket_run_the_tui(tmp_path: Path) -> None:
    port = free_port()
    proc = await serve("--demo", "--port", str(port))
    try:
        page = await get_page(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "<html" in page.text
        ws_url = re.search(r'ws://127\.0\.0\.1:\d+/ws', page.text)
        assert ws_url and ws_url.group(0) == f"ws://127.0.0.1:{port}/ws"
        received = b""
        async with websockets.connect(f"{ws_url.group(0)}?width=100&height=30") as ws:  # the handshake
            await ws.send(json.dumps(["resize", {"width": 100, "height": 30}]))
            await ws.send(json.dumps(["ping", "x"]))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            pong = False
            while not (pong and b" nfu-tui " in received and b"Fleet" in received):
                assert loop.time() < deadline, f"no TUI frame: {received[:300]!r}"
                try:
                    message = await asyncio.wait_for(ws.recv(), 5)
                except TimeoutError:
                    continue
                if isinstance(message, str):
                    pong = pong or json.loads(message) == ["pong", "x"]
                else:
                    received += message
        assert b"\x1b[?1049h" in received  # a real terminal app: the alternate screen
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert f"http://127.0.0.1:{port}" in out.decode()


async def test_a_non_loopback_host_needs_allow_remote() -> None:
    proc = await serve("--demo", "--host", "0.0.0.0", "--port", str(free_port()))
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0" in err.decode() and "--allow-remote" in err.decode()


async def test_allow_remote_warns_loudly() -> None:
    """192.0.2.1 (TEST-NET-1) is no address of this machine: the warning comes, then the bind fails
    (tests never listen beyond loopback)."""
    proc = await serve("--demo", "--host", "192.0.2.1", "--allow-remote", "--port", str(free_port()))
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    assert "WARNING: listening on 192.0.2.1 (--allow-remote)" in text
    assert proc.returncode == 2 and "cannot listen on 192.0.2.1" in text


async def test_a_bad_configuration_fails_before_serving(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[github]\nrepo = "not a slug"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfu_tui", "--config", str(path), "serve", "--port", str(free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and "github.repo" in err.decode()
