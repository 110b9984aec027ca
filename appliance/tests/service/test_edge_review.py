"""Attacks on the HTTP edge found in a security review, each reproduced against a real
``fleetcast serve`` first: a WebSocket handshake under a rebound host name, WebSocket
messages of 16 MiB, and rate-limit entries that outlived their window
(docs/OPERATIONS.md#cross-site-requests, #limits)."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from litestar.stores.base import StorageObject
from litestar.testing import TestClient
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from fleetcast.appliance.app import create_app

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BASE_URL = "http://127.0.0.1:8000"


@pytest.fixture
def open_app(model_dir: Path, tmp_path: Path, svc: Any) -> Iterator[Any]:
    """TestClients on the real app with the default allowed hosts (loopback names)."""
    stack = contextlib.ExitStack()

    def open_client(**overrides: Any) -> TestClient[Any]:
        overrides.setdefault("allowed_hosts", None)
        settings = svc.make_settings(model_dir, tmp_path / f"state{id(overrides)}", **overrides)
        return stack.enter_context(TestClient(create_app(settings), base_url=BASE_URL))

    with stack:
        yield open_client


def _handshake(port: int, host: str, origin: str | None = None) -> bytes:
    """A raw WebSocket handshake on ``/ws/predictions`` with ``host``: the server's answer."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws/predictions HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(
            (
                int(x.split(b":", 1)[1])
                for x in head.split(b"\r\n")
                if x.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
    return head + b"\r\n\r\n" + body


def _read_until_closed(ws: Any) -> None:
    """Receive (forecast sets) until the server closes the connection."""
    while True:
        ws.recv(timeout=10)


# -- a page rebinding its own name to a loopback appliance read the WebSocket stream ---------


def test_a_websocket_addressed_to_another_host_is_refused(open_app: Any) -> None:
    from litestar.exceptions import WebSocketDisconnect

    client = open_app()
    # DNS rebinding: the page's own name is the Host *and* its Origin, so the Origin check
    # passes; only the Host check can refuse it.
    evil = {"host": "evil.example:8000", "origin": "http://evil.example:8000"}
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/ws/predictions", headers=evil),
    ):
        pass  # refused before the accept: entering raises
    assert refused.value.code == 4400  # the test client has no denial responses
    with client.websocket_connect("/ws/predictions", headers={"host": "localhost:8000"}):
        pass
    anywhere = open_app(allowed_hosts="*")
    with anywhere.websocket_connect("/ws/predictions", headers=evil):
        pass


@pytest.mark.slow
def test_a_websocket_to_another_host_is_refused_over_a_real_server(server_factory: Any) -> None:
    from fleetcast.appliance.schemas import ErrorBody

    server = server_factory()
    port = server.port
    answer = _handshake(port, f"evil.example:{port}", f"http://evil.example:{port}")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    body = msgspec.json.decode(answer.partition(b"\r\n\r\n")[2], type=ErrorBody)
    assert body.error == "host not allowed"
    assert body.see == "docs/OPERATIONS.md#cross-site-requests"
    assert _handshake(port, f"localhost:{port}").startswith(b"HTTP/1.1 101 ")
    assert server.stop() == 0
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_a_websocket_message_past_the_limit_closes_only_that_client(server_factory: Any) -> None:
    from fleetcast.appliance.controllers.ws import MAX_CLIENT_MESSAGE_BYTES

    server = server_factory()
    port = server.port
    # A client message is at most a few KiB: uvicorn's 16 MiB let 32 clients make the
    # server hold 1.2 GB. A larger one closes that connection (1009), nothing else.
    url = f"ws://127.0.0.1:{port}/ws/predictions"
    with connect(url, open_timeout=10) as other, connect(url, open_timeout=10, max_size=None) as ws:
        ws.send("x" * 100)
        ws.send("x" * (MAX_CLIENT_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosedError) as closed:
            _read_until_closed(ws)
        # The other client, connected all along, is still served.
        assert other.ping().wait(10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    with connect(url, open_timeout=10) as ws:
        ws.send("ping")
        assert ws.ping().wait(10)
    assert server.stop() == 0
    assert "Traceback" not in server.log()


# -- the rate limiter kept one entry per client address for good -----------------------------


def test_the_rate_limiter_forgets_clients_whose_window_is_over(
    open_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fleetcast.appliance.app as app_module

    monkeypatch.setattr(app_module, "RATE_LIMIT_PURGE_EVERY", 3, raising=False)
    client = open_app(rate_limit="100/minute")
    store = client.app.stores.get("rate_limit")
    assert client.get("/status").status_code == 200
    # 5,000 clients seen once, their minute over long ago: Litestar's memory store drops
    # an entry only when that client comes back.
    past = datetime(2000, 1, 1, tzinfo=UTC)
    for i in range(5000):
        store._store[f"_ClientRateLimit::2001:db8::{i:x}"] = StorageObject(
            expires_at=past, data=b"{}"
        )
    for _ in range(3):
        assert client.get("/status").status_code == 200
    left = [k for k in store._store if k.startswith("_ClientRateLimit::2001:db8::")]
    assert left == []
    # The live client's own window is untouched: its count goes on.
    assert client.get("/status").headers["ratelimit-remaining"] == "95"


def test_the_rate_limiter_sweeps_at_most_once_per_window(
    open_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fleetcast.appliance.app as app_module

    monkeypatch.setattr(app_module, "RATE_LIMIT_PURGE_EVERY", 2, raising=False)
    client = open_app(rate_limit="1000/hour")
    store = client.app.stores.get("rate_limit")
    sweeps: list[int] = []
    real = type(store).delete_expired

    async def counted(self: Any) -> None:
        sweeps.append(1)
        await real(self)

    monkeypatch.setattr(type(store), "delete_expired", counted)
    for _ in range(10):
        assert client.get("/status").status_code == 200
    # Ten requests, a sweep due every second one, but an hour's entries cannot expire
    # sooner than an hour: one walk of the store (which holds its lock), not five.
    assert len(sweeps) == 1


def test_the_appliance_installs_its_websocket_library() -> None:
    from importlib.metadata import requires

    # uvicorn alone has no WebSocket implementation (it is in uvicorn[standard]): without
    # this, `pip install ./appliance[cpu]` answered every /ws/predictions handshake as plain
    # HTTP and logged "No supported WebSocket library detected".
    names = {
        r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip()
        for r in requires("fleetcast-appliance") or []
    }
    assert "websockets" in names
