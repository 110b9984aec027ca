"""PromQL defaults, response parsing, label mapping, assembling records, the HTTP client."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from fleetcast.appliance.sources.promql import (
    DEFAULT_QUERIES,
    LabelMapping,
    PromClient,
    PromError,
    Series,
    assemble,
    eval_time,
    parse_profile_rules,
    parse_response,
    resolve_queries,
)


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_default_queries_target_node_exporter() -> None:
    cpu, mem, disk = (DEFAULT_QUERIES[m] for m in ("cpu_pct", "mem_pct", "disk_io_mb_s"))
    assert cpu == '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))'
    assert "node_memory_MemAvailable_bytes" in mem
    assert "node_memory_MemTotal_bytes" in mem
    assert mem.startswith("100 * (1 - ")
    assert "node_disk_read_bytes_total[5m]" in disk
    assert "node_disk_written_bytes_total[5m]" in disk
    assert disk.endswith("/ 1e6")  # bytes/s -> MB/s (10^6, docs/DATA_CONTRACT.md)
    assert DEFAULT_QUERIES["latency_ms"] is None  # node_exporter measures no latency


def test_resolve_queries_overrides_and_refuses_missing_required() -> None:
    q = resolve_queries({"latency_ms": "histogram_quantile(0.5, x) * 1000", "cpu_pct": None})
    assert q["latency_ms"] == "histogram_quantile(0.5, x) * 1000"
    assert q["cpu_pct"] == DEFAULT_QUERIES["cpu_pct"]  # None = keep the default
    assert resolve_queries({"latency_ms": "  "})["latency_ms"] is None
    with pytest.raises(ValueError, match=r"No PromQL expression for \['mem_pct'\]"):
        resolve_queries({"mem_pct": ""})
    with pytest.raises(ValueError, match="Unknown metric 'gpu'"):
        resolve_queries({"gpu": "x"})


def test_eval_time_is_the_steps_last_second() -> None:
    assert eval_time(0) == 299
    assert eval_time(5_966_667) == 5_966_667 * 300 + 299


def test_parse_vector_matrix_scalar() -> None:
    vector = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"instance": "a:9100"}, "value": [1700000000.5, "12.5"]},
                {"metric": {"instance": "b:9100"}, "value": [1700000000.5, "NaN"]},
            ],
        },
    }
    s = parse_response(_body(vector))
    assert [x.labels["instance"] for x in s] == ["a:9100", "b:9100"]
    assert s[0].times.tolist() == [1700000000.5]
    assert s[0].values.tolist() == [12.5]
    assert np.isnan(s[1].values[0])
    matrix = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": {"instance": "a"}, "values": [[1, "1"], [2, "+Inf"], [3, "-2e3"]]}
            ],
        },
    }
    (m,) = parse_response(_body(matrix))
    assert m.times.tolist() == [1, 2, 3]
    assert m.values.tolist() == [1.0, float("inf"), -2000.0]
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [5, "7"]}}
    (sc,) = parse_response(_body(scalar))
    assert sc.labels == {}
    assert sc.values.tolist() == [7.0]


def test_parse_errors_say_what_and_how() -> None:
    err = {"status": "error", "errorType": "bad_data", "error": "1:5: parse error"}
    with pytest.raises(PromError, match="bad_data: 1:5: parse error") as info:
        parse_response(_body(err), "rate(x[5m)")
    assert info.value.kind == "bad_query"
    assert not info.value.retryable
    with pytest.raises(PromError, match="not Prometheus API JSON") as info:
        parse_response(b"<html>login</html>", "up")
    assert info.value.kind == "bad_response"
    assert info.value.retryable
    string = {"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}
    with pytest.raises(PromError, match="returns a string"):
        parse_response(_body(string))


@pytest.mark.parametrize(
    ("label", "strip", "expected"),
    [
        ("web-1:9100", True, "web-1"),
        ("web-1:9100", False, "web-1:9100"),
        ("10.0.0.7:9100", True, "10.0.0.7"),
        ("[::1]:9100", True, "::1"),
        ("ppml0001", True, "ppml0001"),
        ("host:abc", True, "host:abc"),
    ],
)
def test_server_name_from_instance(label: str, strip: bool, expected: str) -> None:
    assert LabelMapping(strip_port=strip).server({"instance": label}) == expected


def test_profile_from_label_then_rules_then_none() -> None:
    m = LabelMapping(profile_label="role", profile_rules=parse_profile_rules(["^db-=database"]))
    assert m.profile("web-1", {"role": "web_api"}) == "web_api"
    assert m.profile("db-7", {"role": "not-a-profile"}) == "database"  # invalid label → rule
    assert m.profile("other", {}) is None  # → the engine derives it from the name
    assert LabelMapping().server({"job": "x"}) is None
    with pytest.raises(ValueError, match="REGEX=PROFILE"):
        parse_profile_rules(["^db-=databases"])
    with pytest.raises(ValueError, match="invalid regex"):
        parse_profile_rules(["([=database"])


def _s(instance: str, times: list[float], values: list[float]) -> Series:
    return Series({"instance": instance}, np.array(times, float), np.array(values, float))


def test_assemble_joins_fills_and_counts() -> None:
    t = [599.0, 899.0]
    results = {
        "cpu_pct": [_s("b:1", t, [100.4, 150.0]), _s("a:1", t, [10.0, 20.0])],
        "mem_pct": [_s("a:1", t, [50.0, 51.0]), _s("b:1", t, [60.0, -0.5])],
        "disk_io_mb_s": [
            _s("a:1", t, [1.0, float("nan")]),
            _s("b:1", t, [2.0, 4.0]),
            _s("b:1", t, [4.0, 6.0]),  # a second series for b: averaged
        ],
        "latency_ms": [_s("a:1", t, [30.0, 31.0])],
    }
    out = assemble(results, LabelMapping(), latency_fill=-1.0)
    # a at t=899 has no disk (NaN) → a gap; rows by time, then server name.
    assert out.server == ["a", "b", "b"]
    assert out.times.tolist() == [599, 599, 899]
    np.testing.assert_allclose(
        out.metrics,
        [[10.0, 50.0, 1.0, 30.0], [100.0, 60.0, 3.0, -1.0], [150.0, 0.0, 5.0, -1.0]],
    )
    assert out.incomplete == 1
    assert out.duplicates == 2
    assert out.clamped == 2  # 100.4 → 100 and -0.5 → 0; 150 is passed on for the contract check
    assert out.filled_latency == 2
    assert out.servers_seen == {"a", "b"}


def test_assemble_ignores_unlabelled_and_handles_empty() -> None:
    out = assemble(
        {"cpu_pct": [Series({"job": "x"}, np.array([1.0]), np.array([1.0]))]}, LabelMapping()
    )
    assert len(out) == 0
    assert out.unlabelled == 1
    assert len(assemble({}, LabelMapping())) == 0


# -- the HTTP client against real local servers ------------------------------------------


class _Server:
    def __init__(self, handler: Any) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(code: int, body: bytes, delay: float = 0.0, seen: list[str] | None = None) -> Any:
    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", "0"))
            if seen is not None:
                seen.append(self.path + "?" + self.rfile.read(n).decode())
            time.sleep(delay)
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    return H


def test_client_sends_query_range_form_and_parses() -> None:
    seen: list[str] = []
    ok = _body({"status": "success", "data": {"resultType": "matrix", "result": []}})
    server = _Server(_handler(200, ok, seen=seen))
    try:
        assert PromClient(server.url + "/").query_range("up", 299, 899, 300) == []
        assert PromClient(server.url).query("up", 1000.25) == []
    finally:
        server.close()
    assert seen[0] == "/api/v1/query_range?query=up&start=299.000&end=899.000&step=300"
    assert seen[1] == "/api/v1/query?query=up&time=1000.250"


@pytest.mark.parametrize(
    ("code", "body", "kind"),
    [
        (
            400,
            _body({"status": "error", "errorType": "bad_data", "error": "parse error"}),
            "bad_query",
        ),
        (503, b"Service Unavailable", "http"),
        (200, b"not json", "bad_response"),
    ],
)
def test_client_error_kinds(code: int, body: bytes, kind: str) -> None:
    server = _Server(_handler(code, body))
    try:
        with pytest.raises(PromError) as info:
            PromClient(server.url).query("up", 1.0)
    finally:
        server.close()
    assert info.value.kind == kind
    assert "docs/PROMETHEUS.md" in str(info.value)


def test_client_unreachable_and_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(PromError, match="Cannot reach Prometheus") as info:
            PromClient(f"http://127.0.0.1:{port}", timeout_s=2).query("up", 1.0)
    assert info.value.kind == "unreachable"
    server = _Server(_handler(200, b"{}", delay=1.0))
    try:
        started = time.monotonic()
        with pytest.raises(PromError, match=re.escape("within 0.2 s")) as info:
            PromClient(server.url, timeout_s=0.2).query("up", 1.0)
        assert time.monotonic() - started < 0.9
    finally:
        server.close()
    assert info.value.kind == "timeout"


def test_client_refuses_bad_url_and_huge_ranges() -> None:
    with pytest.raises(ValueError, match="http://host:9090"):
        PromClient("localhost:9090")
    with pytest.raises(ValueError, match="11000"):
        PromClient("http://x").query_range("up", 0, 300 * 11_000, 300)


@pytest.mark.parametrize(
    ("url_auth", "says"),
    [
        ("", "put them in the URL: --prometheus-url http://USER:PASSWORD@HOST:9090"),
        ("admin:wrong@", "correct the user and password in --prometheus-url"),
    ],
)
def test_refused_credentials_say_how_to_give_them(url_auth: str, says: str) -> None:
    """Reproduced with a real Prometheus (--web.config.file with basic_auth_users): its
    HTTP 401 read "check that the URL is Prometheus' and that it is healthy"."""
    server = _Server(_handler(401, b"Unauthorized\n"))
    try:
        url = server.url.replace("http://", f"http://{url_auth}")
        with pytest.raises(PromError) as info:
            PromClient(url).query_range("up", 299, 899, 300)
    finally:
        server.close()
    message = str(info.value)
    assert info.value.kind == "http"
    assert info.value.detail == "HTTP 401"
    assert "(HTTP 401)" in message
    assert says in message
    assert "wrong" not in message  # the password is never shown
    assert "healthy" not in message
    assert "docs/PROMETHEUS.md#configure" in message


def test_prometheus_own_error_text_is_kept_for_a_5xx() -> None:
    """A query past Prometheus' --query.timeout is HTTP 503 with errorType timeout: the
    message said only "HTTP 503"."""
    body = _body(
        {
            "status": "error",
            "errorType": "timeout",
            "error": "query timed out in expression evaluation",
        }
    )
    server = _Server(_handler(503, body))
    try:
        with pytest.raises(PromError) as info:
            PromClient(server.url).query("up", 1.0)
    finally:
        server.close()
    message = str(info.value)
    assert "HTTP 503 to /api/v1/query (timeout: query timed out in expression evaluation)" in (
        message
    )
    assert "--query.timeout" in message
    assert info.value.detail == "HTTP 503"


def test_too_many_samples_is_not_called_a_wrong_expression() -> None:
    """Reproduced with a real Prometheus (--query.max-samples): a right expression that
    reads too much was answered "Fix: correct the expression"."""
    body = _body(
        {
            "status": "error",
            "errorType": "execution",
            "error": "query processing would load too many samples into memory in query execution",
        }
    )
    server = _Server(_handler(422, body))
    try:
        with pytest.raises(PromError) as info:
            PromClient(server.url).query_range("up", 299, 899, 300)
    finally:
        server.close()
    assert info.value.kind == "bad_query"
    assert "--query.max-samples" in str(info.value)
    assert "correct the expression" not in str(info.value)


def test_a_redirect_is_not_followed_but_named() -> None:
    """Reproduced with a real Prometheus behind a 301 (an http→https proxy): urllib
    re-sent the POST as a GET without the query, and Prometheus' "no expression found"
    was reported as a wrong expression."""
    target = _Server(_handler(400, _body({"status": "error", "errorType": "bad_data"})))

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(301)
            self.send_header("Location", f"{target.url}/prom{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = _Server(Redirect)
    try:
        with pytest.raises(PromError) as info:
            PromClient(server.url).query("up", 1.0)
    finally:
        server.close()
        target.close()
    message = str(info.value)
    assert info.value.kind == "http"
    assert f"redirects /api/v1/query to {target.url}/prom/api/v1/query (HTTP 301)" in message
    assert f"set --prometheus-url to the URL it redirects to ({target.url}/prom)" in message
    assert "correct the expression" not in message
