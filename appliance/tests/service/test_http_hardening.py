"""The HTTP edge against hostile requests, on the real app (Litestar TestClient, real engine,
tiny ONNX fixture) and one real ``fleetcast serve``: bodies nested too deeply to decode,
cross-site writes (415 for a body that is not JSON/MessagePack), DNS rebinding (the Host
check, docs/OPERATIONS.md#cross-site-requests), and the router's own 404/405 answers in
the access log, the request metrics and the rate limit."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from fleetcast.appliance.app import allowed_hosts, create_app

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ACCESS = "fleetcast.appliance.access"
JSON = {"content-type": "application/json"}
BASE_URL = "http://127.0.0.1:8000"
"""Litestar's TestClient sends ``Host: testserver.local`` by default, a name a loopback
appliance does not answer to; 8000 is the default ``--port``."""


@pytest.fixture
def open_app(model_dir: Path, tmp_path: Path, svc: Any) -> Iterator[Any]:
    """TestClients on the real app (base URL ``BASE_URL`` unless given); closed at the end."""
    stack = contextlib.ExitStack()
    opened: list[TestClient[Any]] = []

    def open_client(base_url: str = BASE_URL, **overrides: Any) -> TestClient[Any]:
        overrides.setdefault("allowed_hosts", None)  # the default, whatever make_settings sets
        settings = svc.make_settings(model_dir, tmp_path / f"state{len(opened)}", **overrides)
        opened.append(stack.enter_context(TestClient(create_app(settings), base_url=base_url)))
        return opened[-1]

    with stack:
        yield open_client


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [msgspec.json.decode(r.getMessage()) for r in caplog.records if r.name == ACCESS]


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR (or worse) records and any traceback logged at all."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info is not None or "Traceback" in r.getMessage()
    ]


def _request_counts(client: TestClient[Any]) -> list[str]:
    text = client.get("/metrics").text
    return [x for x in text.splitlines() if x.startswith("fleetcast_http_requests_total{")]


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- 1. bodies nested too deeply: 400 malformed, nothing logged as an error ---------------


def test_deeply_nested_bodies_are_400_malformed_with_no_traceback(
    open_app: Any, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = open_app()
    record = svc.make_records(names=("ppml0001",), steps=1)[0]
    fields = msgspec.json.encode(record)[:-1]  # a valid record, then one more field
    bodies = {
        "records": b'{"records":' + _nested(200_000) + b"}",
        "field": b'{"records":[' + fields + b',"site":' + _nested(100_000) + b"}]}",
        "top": _nested(200_000),
    }
    with caplog.at_level(logging.INFO):
        for name, body in bodies.items():
            answer = svc.error_body(client.post("/metrics", content=body, headers=JSON), 400)
            assert answer.error == "malformed body", name
            if name != "top":  # an array where the object belongs is refused before
                assert "nested too deeply" in answer.detail, name
        deep_msgpack = b"\x81\xa7records\x91" + b"\x91" * 200_000 + b"\xc0"
        answer = svc.error_body(
            client.post(
                "/metrics", content=deep_msgpack, headers={"content-type": "application/msgpack"}
            ),
            400,
        )
        assert answer.error == "malformed body"
        assert "MessagePack" in answer.detail
        for path, field in (("/admin/reload", "model_dir"), ("/demo/scenario", "scenario")):
            body = b'{"' + field.encode() + b'":' + _nested(100_000) + b"}"
            answer = svc.error_body(client.post(path, content=body, headers=JSON), 400)
            assert "nested too deeply" in answer.detail, path
    assert _errors(caplog) == []
    assert [x["status"] for x in _access_lines(caplog)] == [400] * 6
    # The appliance still works: the same record, well-formed, is accepted.
    assert client.post("/metrics", json={"records": [record]}).json()["accepted"] == 1


def test_a_msgpack_string_that_is_not_utf8_is_a_rejection_not_a_500(
    open_app: Any, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = open_app()
    good, bad = svc.make_records(names=("ppml0001", "ppdb001"), steps=1)
    name = msgspec.msgpack.encode("ppdb001")
    body = msgspec.msgpack.encode({"records": [good, bad]})
    body = body.replace(name, b"\xa7\xff" + name[2:])  # same length, not UTF-8
    with caplog.at_level(logging.INFO):
        answer = client.post(
            "/metrics", content=body, headers={"content-type": "application/msgpack"}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    assert [r["index"] for r in answer.json()["rejected"]] == [1]
    top = b"\x81\xa7rec\xffrds\x90"  # the one key not UTF-8: not {"records": [...]}
    refused = client.post("/metrics", content=top, headers={"content-type": "application/msgpack"})
    assert svc.error_body(refused, 400).error == "malformed body"
    assert _errors(caplog) == []


# -- 2a. cross-site writes: a body that is not JSON/MessagePack is a 415 -------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ],
)
def test_a_write_with_a_body_that_is_not_json_is_415(
    open_app: Any, svc: Any, content_type: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    client = open_app()
    headers = {} if content_type is None else {"content-type": content_type}
    batch = msgspec.json.encode({"records": svc.make_records(steps=1)})
    with caplog.at_level(logging.INFO):
        refused = svc.error_body(client.post("/metrics", content=batch, headers=headers), 415)
        reload = svc.error_body(client.post("/admin/reload", content=b"{}", headers=headers), 415)
        scenario = svc.error_body(
            client.post("/demo/scenario", content=b'{"scenario": "critical"}', headers=headers),
            415,
        )
    for body in (refused, reload, scenario):
        assert body.error == "unsupported content type"
        assert "application/json" in body.detail  # what it takes
        assert "cross-site" in body.detail  # why
        assert "content-type: application/json" in body.fix  # how
        assert body.see == "docs/OPERATIONS.md#cross-site-requests"
    assert "application/msgpack" in refused.detail
    assert "model reloaded" not in caplog.text
    assert client.get("/status").json()["ingest"]["accepted"] == 0
    # The same bodies as JSON are taken.
    for header in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        taken = client.post("/metrics", content=batch, headers={"content-type": header})
        assert taken.status_code == 200, taken.text
    assert client.post("/admin/reload", content=b"{}", headers=JSON).status_code == 200
    assert _errors(caplog) == []


def test_content_type_rules_keep_msgpack_bodyless_reload_and_the_key_first(
    open_app: Any, svc: Any
) -> None:
    client = open_app()
    records = svc.make_records(steps=1)
    for kind in ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack"):
        body = msgspec.msgpack.encode({"records": records})
        answer = client.post("/metrics", content=body, headers={"content-type": kind})
        assert answer.status_code == 200, (kind, answer.text)
    assert client.post("/admin/reload").status_code == 200  # no body: no type needed
    # MessagePack is for the ingest only.
    refused = client.post("/admin/reload", content=b"\x80", headers={"content-type": kind})
    assert svc.error_body(refused, 415).see == "docs/OPERATIONS.md#cross-site-requests"
    # With a key, a request without it is a 401 whatever its type.
    keyed = open_app(api_key=svc.API_KEY)
    text = {"content-type": "text/plain"}
    svc.error_body(keyed.post("/metrics", content=b"{}", headers=text), 401)
    svc.error_body(keyed.post("/admin/reload", content=b"{}", headers=text), 401)
    key = {"X-API-Key": svc.API_KEY}
    svc.error_body(keyed.post("/metrics", content=b"{}", headers={**text, **key}), 415)


# -- 2b. DNS rebinding: the Host check ----------------------------------------------------


def test_allowed_hosts_default_to_the_loopback_names(tmp_path: Path, svc: Any) -> None:
    def hosts(**overrides: Any) -> tuple[str, ...]:
        overrides.setdefault("allowed_hosts", None)
        return allowed_hosts(svc.make_settings(tmp_path / "m", tmp_path / "s", **overrides))

    loopback = ("localhost", "127.0.0.1", "[::1]")
    assert hosts() == loopback
    assert hosts(host="localhost", port=9000) == loopback
    assert hosts(host="::1") == loopback
    assert hosts(host="127.0.0.2")[-1] == "127.0.0.2"
    for anywhere in ("0.0.0.0", "::", "192.0.2.7", "edge01"):
        assert hosts(host=anywhere) == ("*",)
    assert hosts(allowed_hosts="*") == ("*",)
    assert hosts(allowed_hosts="edge01,*") == ("*",)
    assert hosts(allowed_hosts="Edge01,fleet.example:8443,::1,[::2]:80,*.example.com") == (
        "edge01",
        "fleet.example",
        "[::1]",
        "[::2]",
        "*.example.com",
    )


def test_a_loopback_appliance_refuses_other_host_names(
    open_app: Any, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = open_app()
    with caplog.at_level(logging.INFO):
        for host in ("evil.example", "evil.example:8000", "localhost.evil:8000", "127.0.0.1.ev"):
            refused = svc.error_body(client.get("/status", headers={"host": host}), 400)
            assert refused.error == "host not allowed"
            assert refused.see == "docs/OPERATIONS.md#cross-site-requests"
            assert "allowed_hosts" in refused.fix
        posted = client.post(
            "/metrics",
            json={"records": svc.make_records(steps=1)},
            headers={"host": "evil.example"},
        )
        assert svc.error_body(posted, 400).error == "host not allowed"
    assert client.get("/status").json()["ingest"]["accepted"] == 0
    lines = _access_lines(caplog)
    assert [(x["path"], x["status"]) for x in lines] == [("/status", 400)] * 4 + [("/metrics", 400)]
    for host in (
        "localhost",
        "localhost:8000",
        "LocalHost:8000",
        "localhost:9000",  # an SSH tunnel's local port
        "127.0.0.1",
        "127.0.0.1:8000",
        "[::1]",
        "[::1]:8000",
    ):
        assert client.get("/status", headers={"host": host}).status_code == 200, host
    # /health stays open to probes, whatever name they use.
    assert client.get("/health", headers={"host": "evil.example"}).status_code == 200
    counts = _request_counts(client)
    assert 'fleetcast_http_requests_total{method="GET",route="/status",status="400"} 4' in counts
    assert _errors(caplog) == []


def test_other_hosts_are_answered_when_allowed(open_app: Any, svc: Any) -> None:
    evil = {"host": "evil.example"}
    anywhere = open_app(allowed_hosts="*")
    assert anywhere.get("/status", headers=evil).status_code == 200
    exposed = open_app(host="0.0.0.0")  # not loopback: any name by default
    assert exposed.get("/status", headers=evil).status_code == 200
    named = open_app(base_url="http://fleet.example", allowed_hosts="fleet.example")
    assert named.get("/status").status_code == 200
    assert named.get("/status", headers={"host": "fleet.example:8000"}).status_code == 200
    assert named.get("/status", headers={"host": "localhost:8000"}).status_code == 400
    assert named.get("/status", headers=evil).status_code == 400


# -- 3. the router's 404/405: logged, counted (route "unmatched"), rate-limited ------------


def test_unknown_paths_and_methods_are_logged_and_counted_once(
    open_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = open_app()
    with caplog.at_level(logging.INFO, logger=ACCESS):
        assert client.get("/nope").status_code == 404
        assert client.get("/predictions").status_code == 404
        assert client.delete("/status").status_code == 405
        assert client.put("/metrics", json={}).status_code == 405
        assert client.get("/status").status_code == 200
    lines = _access_lines(caplog)
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("GET", "/nope", 404),
        ("GET", "/predictions", 404),
        ("DELETE", "/status", 405),
        ("PUT", "/metrics", 405),
        ("GET", "/status", 200),
    ]
    assert all(x["bytes_out"] > 0 for x in lines)
    counts = _request_counts(client)
    assert counts == [
        'fleetcast_http_requests_total{method="DELETE",route="unmatched",status="405"} 1',
        'fleetcast_http_requests_total{method="GET",route="/status",status="200"} 1',
        'fleetcast_http_requests_total{method="GET",route="unmatched",status="404"} 2',
        'fleetcast_http_requests_total{method="PUT",route="unmatched",status="405"} 1',
    ]


def test_unknown_paths_count_against_the_rate_limit(
    open_app: Any, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = open_app(rate_limit="3/minute")
    with caplog.at_level(logging.INFO, logger=ACCESS):
        codes = [client.get(f"/nope{i}").status_code for i in range(4)]
        refused = client.get("/nope")
        also = client.get("/status")  # one quota per client, whatever the path
        health = client.get("/health")
    assert codes == [404, 404, 404, 429]
    body = svc.error_body(refused, 429)
    assert "rate limit" in body.error
    assert refused.headers["ratelimit-limit"] == "3"
    assert svc.error_body(also, 429).see == "docs/OPERATIONS.md#limits"
    assert health.status_code == 200
    lines = _access_lines(caplog)
    assert [x["status"] for x in lines] == [404, 404, 404, 429, 429, 429, 200]
    assert lines[3]["path"] == "/nope3"
    assert all(x["bytes_out"] > 0 for x in lines)


# -- over uvicorn -----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_edge_over_a_real_server(server_factory: Any, svc: Any) -> None:
    server = server_factory()
    port = server.port
    assert httpx.get(f"{server.url}/status", headers={"host": "evil.example"}).status_code == 400
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        assert httpx.get(f"{server.url}/status", headers={"host": host}).status_code == 200
    assert httpx.get(f"{server.url}/nope").status_code == 404
    posted = httpx.post(
        f"{server.url}/metrics",
        content=msgspec.json.encode({"records": svc.make_records(steps=1)}),
        headers={"content-type": "text/plain"},
    )
    assert svc.error_body(posted, 415).error == "unsupported content type"
    deep = httpx.post(
        f"{server.url}/metrics",
        content=_nested(200_000),
        headers={"content-type": "application/json"},
    )
    assert svc.error_body(deep, 400).error == "malformed body"
    assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log
    assert "ERROR" not in log
    lines = [msgspec.json.decode(x[x.index("{") :]) for x in log.splitlines() if ACCESS in x]
    assert [(x["path"], x["status"]) for x in lines if x["status"] >= 400] == [
        ("/status", 400),
        ("/nope", 404),
        ("/metrics", 415),
        ("/metrics", 400),
    ]


# -- 2c. cross-site writes and WebSockets: the Origin check -------------------------------


def test_a_write_or_websocket_from_another_site_is_refused(open_app: Any, svc: Any) -> None:
    from litestar.exceptions import WebSocketDisconnect

    client = open_app()
    batch = {"records": svc.make_records(steps=1)}
    evil = {"origin": "http://evil.example"}
    refused = svc.error_body(client.post("/metrics", json=batch, headers=evil), 403)
    assert refused.error == "cross-site request refused"
    assert refused.see == "docs/OPERATIONS.md#cross-site-requests"
    svc.error_body(client.post("/admin/reload", headers={"origin": "null"}), 403)
    assert client.get("/status", headers=evil).status_code == 200  # reads are not writes
    assert client.get("/status").json()["ingest"]["accepted"] == 0
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect("/ws/predictions", headers=evil) as socket,
    ):
        socket.receive_text()
    assert closed.value.code == 4403  # a 403 answer where the server has denial responses
    with (  # no such WebSocket: a 404, not uvicorn's empty 403 that reads like a bad key
        pytest.raises(WebSocketDisconnect) as missing,
        client.websocket_connect("/ws/prediction") as socket,
    ):
        socket.receive_text()
    assert missing.value.code == 4404
    # The appliance's own pages (the API docs) and programs without an Origin: accepted.
    own = {"origin": BASE_URL}
    assert client.post("/metrics", json=batch, headers=own).status_code == 200
    assert client.post("/metrics", json=batch).status_code == 200
