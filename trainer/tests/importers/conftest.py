"""Fixtures of the importer tests: a small Prometheus API server over known values."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

STEP = 300
T0 = 1_790_000_000 // STEP * STEP
QUERIES = {m: f"fc_{m}" for m in ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")}


def value(server: str, metric: str, t: float) -> float:
    """Known value of a series at evaluation time ``t`` (depends on its step)."""
    k = int(t) // STEP
    base = {"cpu_pct": 30.0, "mem_pct": 60.0, "disk_io_mb_s": 5.0, "latency_ms": 25.0}[metric]
    return base + (k % 10) + (1.0 if server.startswith("db") else 0.0)


class FakePrometheusAPI:
    """``/api/v1/query_range`` for ``fc_<metric>`` over servers ``web-1:9100``, ``db-1:9100``.

    ``fail_after``: answer 503 from that many requests on (an outage mid-import).
    ``missing``: (server, metric) pairs with no series (a gap).
    Any other query is the coverage check: it names the ``partial`` (server, step) pairs.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.fail_after: int | None = None
        self.missing: set[tuple[str, str]] = set()
        self.partial: set[tuple[str, int]] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                code, body = fake.answer(form)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.fail_after is not None and len(self.requests) >= self.fail_after:
            return 503, {"status": "error", "errorType": "unavailable", "error": "down"}
        self.requests.append(form)
        start, end, step = float(form["start"]), float(form["end"]), float(form["step"])
        times = [start + i * step for i in range(int((end - start) // step) + 1)]
        if not form["query"].startswith("fc_"):
            result = [
                {"metric": {"instance": f"{s}:9100"}, "values": values}
                for s in ("web-1", "db-1")
                if (values := [[t, "1"] for t in times if (s, int(t) // STEP) in self.partial])
            ]
            return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}
        metric = form["query"].removeprefix("fc_")
        result = [
            {
                "metric": {
                    "instance": f"{s}:9100",
                    "role": "database" if s == "db-1" else "web_api",
                },
                "values": [[t, repr(value(s, metric, t))] for t in times],
            }
            for s in ("web-1", "db-1")
            if (s, metric) not in self.missing
        ]
        return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def prom_api() -> Iterator[FakePrometheusAPI]:
    """A running FakePrometheusAPI."""
    fake = FakePrometheusAPI()
    yield fake
    fake.close()


@pytest.fixture
def imp() -> SimpleNamespace:
    """Constants and the value function (test modules cannot import conftest)."""
    return SimpleNamespace(STEP=STEP, T0=T0, QUERIES=QUERIES, value=value)
