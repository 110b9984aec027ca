"""A real ``fleetcast serve`` (uvicorn) for what only a real server shows: READY=1 only once
the port listens, a taken port as one clear message, 429s in the access log and request
metrics, names with slashes in raw paths, and the WebSocket refused with HTTP 401."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from fleetcast.appliance.schemas import ErrorBody

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


def _serve_cmd(svc: Any, model_dir: Path, state_dir: Path, port: int) -> list[str]:
    limits = ["--capacity", "64", "--rate-limit", "off"]
    return svc.serve_argv(model_dir, state_dir, "--port", str(port), *limits)


def _datagrams(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock`` (non-blocking)."""
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def _four_parts(response: httpx.Response, status: int) -> ErrorBody:
    assert response.status_code == status, response.text
    body = msgspec.json.decode(response.content, type=ErrorBody)
    assert body.error
    assert body.detail
    assert body.fix
    assert body.see
    return body


# -- systemd readiness and the listening port -------------------------------------------


def test_taken_port_is_one_clear_message_and_never_ready(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    path = str(tmp_path / "notify.sock")
    with (
        socket.socket() as holder,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
    ):
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        notify.bind(path)
        result = subprocess.run(
            _serve_cmd(svc, model_dir, tmp_path / "state", port),
            env={**os.environ, "NOTIFY_SOCKET": path},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        messages = _datagrams(notify)
    assert result.returncode == 1, result.stderr
    err = result.stderr
    assert f"Cannot listen on 127.0.0.1:{port}: the address is already in use" in err
    assert "Why it matters: another process holds that port" in err
    assert "--port" in err
    assert "See docs/OPERATIONS.md#" in err
    assert "Errno" not in err  # not uvicorn's bare "[Errno 98] ..." line
    assert "Traceback" not in err
    assert not any("READY=1" in m for m in messages), messages


def test_ready_is_sent_only_once_the_port_accepts_connections(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    path = str(tmp_path / "notify.sock")
    port = svc.free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(60)
        proc = subprocess.Popen(
            _serve_cmd(svc, model_dir, tmp_path / "state", port),
            env={**os.environ, "NOTIFY_SOCKET": path},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            while "READY=1" not in notify.recv(4096).decode():
                pass
            # The very moment systemd would start dependants, the port must take them.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                conn.settimeout(10)
                answer = b""
                while chunk := conn.recv(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()


# -- 429: access log and request metrics -------------------------------------------------


def test_rate_limited_requests_are_429_in_the_log_and_the_metrics(server_factory: Any) -> None:
    server = server_factory(extra=["--rate-limit", "3/minute"])  # /health is never limited
    codes = [httpx.get(f"{server.url}/status").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = httpx.get(f"{server.url}/predictions/current")
    assert "rate limit" in _four_parts(refused, 429).error
    assert "ratelimit-reset" in {k.lower() for k in refused.headers}
    # Another client address has its own quota: read the counters from 127.0.0.2.
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with other:
        exposition = other.get(f"{server.url}/metrics").text
    counts = [x for x in exposition.splitlines() if x.startswith("fleetcast_http_requests_total")]
    assert 'fleetcast_http_requests_total{method="GET",route="/status",status="429"} 1' in counts
    assert (
        'fleetcast_http_requests_total{method="GET",route="/predictions/current",status="429"} 1'
        in counts
    )
    assert not [x for x in counts if 'status="500"' in x], counts
    assert server.stop() == 0
    log = server.log()
    lines = [
        msgspec.json.decode(x[x.index("{") :])
        for x in log.splitlines()
        if "fleetcast.appliance.access" in x
    ]
    refused_lines = [x for x in lines if x["status"] == 429]
    assert [x["path"] for x in refused_lines] == ["/status", "/predictions/current"]
    assert all(x["bytes_out"] > 0 for x in refused_lines)
    assert not [x for x in lines if x["status"] == 500]


# -- names with slashes over uvicorn; the WebSocket's 401 ---------------------------------


def test_slash_names_and_websocket_401_over_a_real_server(server_factory: Any, svc: Any) -> None:
    key = {"X-API-Key": svc.API_KEY}
    server = server_factory(extra=["--api-key", svc.API_KEY, "--read-key-required"])
    model = httpx.get(f"{server.url}/status", headers=key).json()["model"]
    records = svc.make_records(names=("a/b", "ppweb001"), steps=int(model["encoder_length"]) + 2)
    response = httpx.post(f"{server.url}/metrics", json={"records": records}, headers=key)
    assert response.status_code == 200, response.text

    def ready() -> bool:
        body = httpx.get(f"{server.url}/predictions/current", headers=key).json()
        return len(body["servers"]) == 2

    svc.wait_until(ready, timeout=30)
    detail = httpx.get(f"{server.url}/predictions/a%2Fb", headers=key)
    assert detail.status_code == 200, detail.text
    assert detail.json()["server_name"] == "a/b"
    history = httpx.get(f"{server.url}/history/a%2Fb", params={"steps": 2}, headers=key)
    assert history.status_code == 200, history.text
    assert history.json()["server_name"] == "a/b"
    assert httpx.get(f"{server.url}/history/a/b", headers=key).json()["server_name"] == "a/b"

    # Schema and WebSocket: 401 without the key, like every read.
    assert _four_parts(httpx.get(f"{server.url}/schema/openapi.json"), 401).error
    ws_url = f"ws://127.0.0.1:{server.port}/ws/predictions"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, open_timeout=10).close()
    assert refused.value.response.status_code == 401
    body = msgspec.json.decode(bytes(refused.value.response.body), type=ErrorBody)
    assert body.error == "missing API key"
    assert body.see == "docs/OPERATIONS.md#api-key"
    # A handshake to no WebSocket, or from another site: JSON answers too, not an empty 403.
    for path, headers, status in (
        ("/ws/prediction", {}, 404),
        ("/ws/predictions", {"Origin": "http://evil.example"}, 403),
    ):
        with pytest.raises(InvalidStatus) as denied:
            connect(f"ws://127.0.0.1:{server.port}{path}", open_timeout=10,
                    additional_headers={**headers, **key}).close()  # fmt: skip
        assert denied.value.response.status_code == status
        body = msgspec.json.decode(bytes(denied.value.response.body), type=ErrorBody)
        assert body.error == ("not found" if status == 404 else "cross-site request refused")
    with connect(ws_url, additional_headers=key, open_timeout=10) as ws:
        assert msgspec.json.decode(ws.recv(timeout=10))["servers"]
    time.sleep(0.2)
    assert server.stop() == 0
    log = server.log()
    assert '"path":"/ws/predictions","status":401' in log
    assert "without completing handshake" not in log  # no spurious uvicorn ERROR per refusal


def test_an_idle_keep_alive_connection_outlives_a_poll_interval(server_factory: Any) -> None:
    """A poller (the dashboard: every 5 s) reuses its connection after ~5 s idle; uvicorn's
    default closed it at 5 s, and a request sent at that moment failed as if the appliance
    were down. The connection now stays open well past a poll interval."""
    import http.client

    server = server_factory()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/health")
        first = conn.getresponse()
        assert first.status == 200
        first.read()
        sock = conn.sock
        time.sleep(6.5)  # idle past uvicorn's default keep-alive of 5 s
        conn.request("GET", "/health")  # closed by the server: RemoteDisconnected here
        second = conn.getresponse()
        assert second.status == 200
        second.read()
        assert conn.sock is sock  # the same connection, not a new one
    finally:
        conn.close()
