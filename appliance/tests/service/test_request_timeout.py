"""The request deadline: half-sent requests get 408 and their connection back, on a real
``fleetcast serve`` (uvicorn) with ``--request-timeout-s 1`` (docs/OPERATIONS.md#limits)."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.slow

LIMIT = ["--request-timeout-s", "1"]


def _open(server: Any) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def _read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (monotonic)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic()


def _timeouts(server: Any) -> int:
    return httpx.get(f"{server.url}/status").json()["service"]["request_timeouts"]


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connected, then silent
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # headers never finished
        b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"records": [',  # body never finished
    ],
    ids=["nothing", "half-headers", "half-body"],
)
def test_a_half_sent_request_gets_408_and_its_connection_closed(
    server_factory: Any, sent: bytes
) -> None:
    server = server_factory(extra=LIMIT)
    with _open(server) as sock:
        start = time.monotonic()
        sock.sendall(sent)
        answer, closed = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert 0.9 <= closed - start < 4.0
    assert _timeouts(server) == 1
    assert server.stop() == 0
    log = server.log()
    assert "within --request-timeout-s (1 s)" in log
    assert "Traceback" not in log
    assert " ERROR " not in log


def test_slow_clients_no_longer_use_up_the_connections(server_factory: Any, svc: Any) -> None:
    # Before the deadline, four half-sent requests held --max-connections 4 for good and
    # every other client got 503 (test_edge_limits shows the 503).
    server = server_factory(extra=[*LIMIT, "--max-connections", "4"])
    held = [_open(server) for _ in range(4)]
    try:
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{server.url}/health", timeout=5).status_code == 200
            return False

        svc.wait_until(healthy, timeout=10)
        assert _timeouts(server) == 4
    finally:
        for sock in held:
            sock.close()
    assert server.stop() == 0


def test_slow_but_timely_requests_and_idle_keep_alive_are_untouched(server_factory: Any) -> None:
    server = server_factory(extra=["--request-timeout-s", "2"])
    with _open(server) as sock:
        # One request sent in pieces over 0.9 s: inside the 2 s deadline.
        for part in (b"GET /health HT", b"TP/1.1\r\nHost: 127.0.0.1\r\n", b"\r\n"):
            sock.sendall(part)
            time.sleep(0.3)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK"), first[:100]
        # Idle between requests for longer than the deadline: uvicorn's keep-alive (75 s)
        # governs that, so the same connection still answers.
        time.sleep(3)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        second = sock.recv(65536)
        assert second.startswith(b"HTTP/1.1 200 OK"), second[:100]
    assert _timeouts(server) == 0
    assert server.stop() == 0


def test_a_websocket_outlives_the_deadline(server_factory: Any) -> None:
    server = server_factory(extra=LIMIT)
    with connect(f"ws://127.0.0.1:{server.port}/ws/predictions") as ws:
        time.sleep(2.5)
        ws.ping().wait(timeout=5)  # still open: the upgrade left the deadline behind
    assert _timeouts(server) == 0
    assert server.stop() == 0


def test_the_setting_is_parsed_and_refused_when_not_positive(tmp_path: Any, svc: Any) -> None:
    from fleetcast.appliance.settings import SettingsError

    assert svc.make_settings(tmp_path / "m", tmp_path / "s").request_timeout_s == 30.0
    settings = svc.make_settings(tmp_path / "m", tmp_path / "s", request_timeout_s="2.5")
    assert settings.request_timeout_s == 2.5
    assert svc.make_settings(tmp_path / "m", tmp_path / "s").keep_alive_s == 75.0
    assert svc.make_settings(tmp_path / "m", tmp_path / "s", keep_alive_s="5").keep_alive_s == 5
    from fleetcast.appliance.settings import build_settings

    from_env = build_settings(
        {"model_dir": tmp_path / "m", "state_dir": tmp_path / "s"},
        env={"FLEETCAST_REQUEST_TIMEOUT_S": "7"},
    )
    assert from_env.request_timeout_s == 7.0
    with pytest.raises(SettingsError, match="request_timeout_s"):
        svc.make_settings(tmp_path / "m", tmp_path / "s", request_timeout_s="0")


@pytest.mark.parametrize(
    ("head", "length", "status", "extra"),
    [
        (b"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n", 10, b"405", []),
        (
            b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\n\r\n",
            5000,
            b"413",
            [],
        ),
        (
            b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n",
            500,
            b"401",
            ["--api-key", "k" * 24],
        ),
    ],
    ids=["405", "413", "401"],
)
def test_a_body_sent_after_an_early_answer_leaves_the_connection_to_keep_alive(
    server_factory: Any, head: bytes, length: int, status: bytes, extra: list[str]
) -> None:
    # The answer comes before the body is read; the body then arrives whole and the client
    # falls silent. uvicorn re-arms its keep-alive timer only when a response completes, so
    # such a connection stayed open for good; the keep-alive timeout closes it now.
    server = server_factory(extra=["--keep-alive-s", "1", "--max-body-bytes", "1000", *extra])
    with _open(server) as sock:
        sock.settimeout(10)
        sock.sendall(head)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        sock.sendall(b"x" * length)
        start = time.monotonic()
        rest, closed = _read_all(sock)  # socket.timeout here: the connection was kept
    assert closed - start < 5.0
    assert b"HTTP/1.1" not in rest  # no second answer: the body was the first request's
    assert _timeouts(server) == 0
    assert server.stop() == 0
