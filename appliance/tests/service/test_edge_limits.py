"""Limits at the edge of the appliance (docs/OPERATIONS.md#limits): WebSocket clients
capped and a client that does not read dropped, connections capped with 503, and
``X-Forwarded-For`` honoured only from ``--trusted-proxies``. The process tests run a real
``fleetcast serve`` (uvicorn) on the tiny fixture model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[3]


def _access_lines(log: str) -> list[dict[str, Any]]:
    """The JSON access log lines of a server's log."""
    return [
        msgspec.json.decode(x[x.index("{") :])
        for x in log.splitlines()
        if "fleetcast.appliance.access" in x
    ]


def _feed_forecast(server: Any, svc: Any, steps: int, start: int | None = None) -> None:
    """POST ``steps`` steps of the three test servers (from ``start``)."""
    start = svc.T0 if start is None else start
    records = svc.make_records(steps=steps, start=start)
    response = httpx.post(f"{server.url}/metrics", json={"records": records}, timeout=30)
    assert response.status_code == 200, response.text


# -- WebSocket clients ---------------------------------------------------------------------


@pytest.mark.slow
def test_websocket_clients_past_the_limit_are_refused_and_the_others_served(
    server_factory: Any, svc: Any
) -> None:
    server = server_factory(extra=["--max-websocket-clients", "2"])
    url = f"ws://127.0.0.1:{server.port}/ws/predictions"
    steps = int(httpx.get(f"{server.url}/status").json()["model"]["encoder_length"]) + 2
    with (
        connect(url, open_timeout=10) as first,
        connect(url, open_timeout=10) as second,
    ):
        with connect(url, open_timeout=10) as third, pytest.raises(ConnectionClosedError) as shut:
            third.recv(timeout=10)
        assert shut.value.rcvd is not None
        assert shut.value.rcvd.code == 1013  # Try Again Later
        assert "too many WebSocket clients (max 2)" in shut.value.rcvd.reason

        _feed_forecast(server, svc, steps)
        for ws in (first, second):
            body = msgspec.json.decode(ws.recv(timeout=30))
            assert len(body["servers"]) == len(svc.SERVERS)
        service = httpx.get(f"{server.url}/status").json()["service"]
        assert service["websocket_clients"] == 2
        assert service["websocket_refused"] == 1
        assert service["websocket_dropped"] == 0

        # The next set reaches both too, and a freed slot takes a new client.
        _feed_forecast(server, svc, 1, start=svc.T0 + steps * 300)
        for ws in (first, second):
            assert msgspec.json.decode(ws.recv(timeout=30))["servers"]
        first.close()

        def one_left() -> bool:
            return httpx.get(f"{server.url}/status").json()["service"]["websocket_clients"] == 1

        svc.wait_until(one_left)
        with connect(url, open_timeout=10) as again:
            assert msgspec.json.decode(again.recv(timeout=10))["servers"]  # the current set
    assert server.stop() == 0
    log = server.log()
    assert "WebSocket client refused: 2 connected, max_websocket_clients is 2" in log
    assert "Traceback" not in log


def test_a_websocket_client_that_does_not_read_is_dropped(
    tmp_path: Path, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A send that stays blocked (the client's buffers are full) ends the session after
    the send timeout: the subscriber slot and the bodies it held are freed."""
    from fleetcast.appliance.controllers.ws import stream_predictions
    from fleetcast.appliance.notify import Notifier
    from fleetcast.appliance.runtime import Runtime

    settings = svc.make_settings(tmp_path / "model", tmp_path / "state")
    runtime = Runtime(settings, Notifier(None))
    runtime.current_body = b'{"servers": []}'

    class StuckSocket:
        client = None
        accepted = False

        async def accept(self) -> None:
            self.accepted = True

        async def send_text(self, text: str) -> None:
            await asyncio.Event().wait()  # never written: the peer does not read

        async def receive(self) -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

    async def session() -> float:
        started = time.monotonic()
        await asyncio.wait_for(stream_predictions(StuckSocket(), runtime, 0.2), 5)  # type: ignore[arg-type]
        return time.monotonic() - started

    with caplog.at_level(logging.WARNING, logger="fleetcast"):
        took = asyncio.run(session())
    assert 0.2 <= took < 2
    assert runtime.subscribers == set()
    status = runtime.status()["service"]
    assert status["websocket_dropped"] == 1
    assert status["websocket_clients"] == 0
    assert "WebSocket client ? dropped: a forecast send stayed blocked for 0.2 s" in caplog.text


def test_a_blocked_send_does_not_hold_the_shutdown(tmp_path: Path, svc: Any) -> None:
    """uvicorn's shutdown hands every WebSocket session a disconnect: a session whose send
    is blocked behind a client that does not read ends at once, not after the send timeout
    (a SIGTERM used to take 10 s more with such a client)."""
    from fleetcast.appliance.controllers.ws import stream_predictions
    from fleetcast.appliance.notify import Notifier
    from fleetcast.appliance.runtime import Runtime

    settings = svc.make_settings(tmp_path / "model", tmp_path / "state")
    runtime = Runtime(settings, Notifier(None))
    runtime.current_body = b'{"servers": []}'

    class StuckSocket:
        client = None

        def __init__(self) -> None:
            self.shutdown = asyncio.Event()
            self.sending = asyncio.Event()

        async def accept(self) -> None:
            pass

        async def send_text(self, text: str) -> None:
            self.sending.set()
            await asyncio.Event().wait()  # never written: the peer does not read

        async def receive(self) -> dict[str, Any]:
            await self.shutdown.wait()
            return {"type": "websocket.disconnect", "code": 1012}

    async def session() -> float:
        sock = StuckSocket()
        task = asyncio.create_task(stream_predictions(sock, runtime, 30.0))  # type: ignore[arg-type]
        await asyncio.wait_for(sock.sending.wait(), 5)
        started = time.monotonic()
        sock.shutdown.set()  # what uvicorn's WebSocket shutdown() does
        await asyncio.wait_for(task, 5)
        return time.monotonic() - started

    assert asyncio.run(session()) < 1.0
    assert runtime.subscribers == set()
    assert runtime.status()["service"]["websocket_dropped"] == 0


def test_subscribers_are_capped_and_refusals_counted(
    tmp_path: Path, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from fleetcast.appliance.notify import Notifier
    from fleetcast.appliance.runtime import Runtime

    capped = Runtime(
        svc.make_settings(tmp_path / "m", tmp_path / "a", max_websocket_clients=1),
        Notifier(None),
    )
    with caplog.at_level(logging.WARNING, logger="fleetcast"):
        queue = capped.subscribe()
        assert queue is not None
        assert capped.subscribe() is None
        assert capped.subscribe() is None  # counted, but one log line a minute
        capped.unsubscribe(queue)
        assert capped.subscribe() is not None  # a freed slot is taken again
    assert capped.websocket_refused == 2
    assert caplog.text.count("WebSocket client refused") == 1

    off = Runtime(
        svc.make_settings(tmp_path / "m", tmp_path / "b", max_websocket_clients=0),
        Notifier(None),
    )
    assert off.subscribe() is None
    assert off.status()["service"]["websocket_refused"] == 1


@pytest.mark.slow
def test_sigterm_with_a_websocket_client_that_does_not_read_exits_promptly(
    server_factory: Any, svc: Any
) -> None:
    # 1,000 demo servers at 600x: a 1.3 MB forecast body every half second fills the
    # connection's buffers of a client that never reads. Its close then waits for the
    # peer: uvicorn's graceful shutdown took its full 20 s and logged an ERROR.
    demo = ["--demo", "--demo-servers", "1000", "--speed", "600", "--capacity", "1024"]
    server = server_factory(extra=demo)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"GET /ws/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    try:

        def many_sets() -> bool:
            status = httpx.get(f"{server.url}/status", timeout=5).json()
            return status["service"]["forecast_sets"] >= 8

        svc.wait_until(many_sets, timeout=60)
        started = time.monotonic()
        assert server.stop() == 0
        took = time.monotonic() - started
    finally:
        sock.close()
    assert took < 8, took
    assert "timeout graceful shutdown exceeded" not in server.log()


# -- X-Forwarded-For -------------------------------------------------------------------------


@pytest.mark.slow
def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(server_factory: Any) -> None:
    # Default: the header does not pick the rate limit's client, nor the logged address.
    server = server_factory(extra=["--rate-limit", "3/minute"])
    codes = [
        httpx.get(f"{server.url}/status", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
        for i in range(1, 5)
    ]
    assert codes == [200, 200, 200, 429]
    assert server.stop() == 0
    clients = {x["client"] for x in _access_lines(server.log()) if x["path"] == "/status"}
    assert clients == {"127.0.0.1"}

    # Behind a trusted proxy the header names the client: one quota per client.
    proxied = server_factory(extra=["--rate-limit", "3/minute", "--trusted-proxies", "127.0.0.1"])

    def get(client: str) -> int:
        headers = {"X-Forwarded-For": client}
        return httpx.get(f"{proxied.url}/status", headers=headers).status_code

    assert [get("10.0.0.1") for _ in range(4)] == [200, 200, 200, 429]
    assert get("10.0.0.2") == 200
    assert proxied.stop() == 0
    lines = [x for x in _access_lines(proxied.log()) if x["path"] == "/status"]
    assert [x["client"] for x in lines] == ["10.0.0.1"] * 4 + ["10.0.0.2"]


# -- connections -----------------------------------------------------------------------------


@pytest.mark.slow
def test_connections_past_the_limit_get_503_not_a_hang(server_factory: Any, svc: Any) -> None:
    server = server_factory(extra=["--max-connections", "4"])
    held: list[socket.socket] = []
    try:
        for _ in range(4):  # half-sent requests, inside the 30 s request deadline
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        time.sleep(0.2)
        refused = httpx.get(f"{server.url}/health", timeout=5)
        assert refused.status_code == 503
        assert refused.headers.get("connection") == "close"
    finally:
        for sock in held:
            sock.close()

    def healthy() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        return False

    svc.wait_until(healthy, timeout=10)
    assert server.stop() == 0
    assert "Exceeded concurrency limit." in server.log()


def test_uvicorn_options_follow_the_settings(tmp_path: Path, svc: Any) -> None:
    from fleetcast.appliance.commands import _proxy_options

    default = svc.make_settings(tmp_path / "m", tmp_path / "s")
    assert default.max_connections == 1024
    assert _proxy_options(default) == {"proxy_headers": False}
    trusted = svc.make_settings(tmp_path / "m", tmp_path / "s", trusted_proxies="10.1.1.1,::1")
    assert _proxy_options(trusted) == {
        "proxy_headers": True,
        "forwarded_allow_ips": ["10.1.1.1", "::1"],
    }


def test_listening_sockets_bound_the_time_unread_data_is_kept() -> None:
    from fleetcast.appliance.commands import UNACKED_TIMEOUT_S, _limit_unacked_time

    if not hasattr(socket, "TCP_USER_TIMEOUT"):
        pytest.skip("TCP_USER_TIMEOUT is Linux only")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        _limit_unacked_time([listener])
        option = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
    assert option == UNACKED_TIMEOUT_S * 1000


# -- unit and docs ---------------------------------------------------------------------------


def test_appliance_unit_bounds_memory_and_descriptors() -> None:
    unit = (ROOT / "systemd" / "fleetcast-appliance.service").read_text()
    values = dict(
        line.split("=", 1) for line in unit.splitlines() if re.match(r"^[A-Za-z]+=", line)
    )
    # Sized for the default --capacity of 20,000 (~0.13 MB per server): 2G killed it at ~14k.
    assert values["MemoryMax"] == "4G"
    assert values["MemoryHigh"] == "3584M"
    assert values["RestartPreventExitStatus"] == "2"  # a settings error is not retried
    assert values["ExecReload"] == "/bin/kill -HUP $MAINPID"  # SIGHUP reloads the model
    assert (int(values["StartLimitBurst"]), int(values["StartLimitIntervalSec"])) == (5, 300)
    assert int(values["LimitNOFILE"]) > 1024 * 8  # far above --max-connections' default


def test_operations_md_documents_the_edge_settings() -> None:
    text = (ROOT / "docs" / "OPERATIONS.md").read_text()
    for flag, env in (
        ("--max-connections", "FLEETCAST_MAX_CONNECTIONS"),
        ("--request-timeout-s", "FLEETCAST_REQUEST_TIMEOUT_S"),
        ("--keep-alive-s", "FLEETCAST_KEEP_ALIVE_S"),
        ("--max-websocket-clients", "FLEETCAST_MAX_WEBSOCKET_CLIENTS"),
        ("--trusted-proxies", "FLEETCAST_TRUSTED_PROXIES"),
    ):
        assert re.search(rf"^\| `{flag}` \| `{env}` \|", text, re.M), flag


@pytest.mark.slow
def test_a_slow_download_in_flight_at_sigterm_is_delivered_whole(
    server_factory: Any, svc: Any
) -> None:
    # A client reading a 6.5 MB forecast set at ~600 KB/s when the SIGTERM comes: the
    # connection is closing (the answer is written, more of it than the kernel's buffers
    # hold) but its peer reads, so the stop waits for it instead of aborting it with the
    # clients that do not read (test above): it was cut at the 2 s mark.
    demo = ["--demo", "--demo-servers", "5000", "--speed", "600", "--capacity", "5120"]
    server = server_factory(extra=demo)
    svc.wait_until(
        lambda: httpx.get(f"{server.url}/status", timeout=5).json()["service"]["forecast_sets"],
        timeout=60,
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    stopped: list[int] = []
    try:
        sock.sendall(b"GET /predictions/current HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = bytearray(sock.recv(4096))
        assert received.startswith(b"HTTP/1.1 200"), bytes(received[:200])
        stopper = threading.Thread(target=lambda: stopped.append(server.stop()))
        stop_began = time.monotonic()
        stopper.start()
        while chunk := sock.recv(65536):
            received += chunk
            last_byte = time.monotonic()
            time.sleep(0.1)
        stopper.join(30)
    finally:
        sock.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
    assert length > 6_000_000
    assert len(body) == length  # whole, not cut
    # The download outlived the window in which a connection without progress is aborted
    # (3 looks a second apart), so it did make progress through it.
    assert last_byte - stop_began > 5.0
    assert json.loads(body)["servers"]
    assert stopped == [0]
    assert "timeout graceful shutdown exceeded" not in server.log()


def test_a_set_published_during_the_handshake_is_sent_once(tmp_path: Path, svc: Any) -> None:
    """The client subscribes before the handshake: a forecast set published meanwhile was
    sent as the current set and then again from the client's queue (the same set twice)."""
    from types import SimpleNamespace

    from fleetcast.appliance.controllers.ws import stream_predictions
    from fleetcast.appliance.notify import Notifier
    from fleetcast.appliance.runtime import Runtime

    settings = svc.make_settings(tmp_path / "model", tmp_path / "state")
    runtime = Runtime(settings, Notifier(None))
    runtime.current_body = b'{"set": 1}'
    sent: list[str] = []

    class Socket:
        client = None

        async def accept(self) -> None:
            runtime.publish(SimpleNamespace(to_dict=lambda: {"set": 2}))  # type: ignore[arg-type]

        async def send_text(self, text: str) -> None:
            sent.append(text)

        async def receive(self) -> dict[str, Any]:
            while not sent:
                await asyncio.sleep(0)
            for _ in range(50):  # ample turns for a queued set to be sent too
                await asyncio.sleep(0)
            return {"type": "websocket.disconnect"}

    asyncio.run(asyncio.wait_for(stream_predictions(Socket(), runtime, 5.0), 5))  # type: ignore[arg-type]
    assert [json.loads(t) for t in sent] == [{"set": 2}]
    assert runtime.subscribers == set()
