"""Fixtures of the Prometheus tests.

Unit tests (no binaries) use :class:`FakePrometheus`: a real HTTP server on a local port
that speaks Prometheus' query API for a few plain metric names, with values from a known
function of (server, metric, time) — so what reaches the engine can be checked exactly.
Integration tests (``@pytest.mark.prometheus``) start Debian's real binaries
(``promstack.py``) and skip with a reason when they are absent.
"""

from __future__ import annotations

import json
import math
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from fleetcast.appliance.sources.records import DEFAULT_COVERAGE
from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

T0 = 1_790_000_000 // STEP_SECONDS * STEP_SECONDS
"""A step-aligned time for synthetic data (2026-09-21)."""
NAMES = {
    "fleetcast_test_cpu_pct": 0,
    "fleetcast_test_mem_pct": 1,
    "fleetcast_test_disk_io_mb_s": 2,
    "fleetcast_test_latency_ms": 3,
}
TEST_QUERIES = {
    m: f"fleetcast_test_{m}" for m in ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")
}


def known_value(server: str, metric: int, t: float) -> float:
    """The fake fleet: a value per server, metric and time (its step's start)."""
    step = int(t) // STEP_SECONDS
    base = (10.0, 40.0, 2.0, 20.0)[metric] + 5.0 * (sum(map(ord, server)) % 7)
    return round(base + (step % 12) * 0.5, 3)


class FakePrometheus:
    """``/api/v1/query`` and ``/api/v1/query_range`` over :func:`known_value` for ``servers``.

    Series carry ``instance="<server>:9100"``. ``fail_with`` makes every answer that
    HTTP status; ``stop()``/``start()`` take it down and up on the same port.
    The default coverage expression (``DEFAULT_COVERAGE``) names the ``partial``
    (server, step) pairs: steps whose scrapes did not cover them.
    """

    def __init__(
        self, servers: list[str], value: Callable[[str, int, float], float] = known_value
    ) -> None:
        self.servers = list(servers)
        self.value = value
        self.fail_with: int | None = None
        self.requests: list[dict[str, str]] = []
        self.partial: set[tuple[str, int]] = set()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answer(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.requests.append({"path": path, **form})
        if self.fail_with is not None:
            return self.fail_with, {"status": "error", "errorType": "internal", "error": "down"}
        expr = form.get("query", "")
        if expr == DEFAULT_COVERAGE:
            return 200, self._coverage(path, form)
        if expr not in NAMES:
            return 400, {
                "status": "error",
                "errorType": "bad_data",
                "error": f"parse error: {expr}",
            }
        metric = NAMES[expr]
        if path.endswith("query_range"):
            start, end, step = float(form["start"]), float(form["end"]), float(form["step"])
            times = [start + i * step for i in range(int((end - start) // step) + 1)]
            result = [
                {
                    "metric": {"__name__": expr, "instance": f"{s}:9100"},
                    "values": [[t, repr(self.value(s, metric, t))] for t in times],
                }
                for s in self.servers
            ]
            return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}
        t = float(form["time"])
        result = [
            {
                "metric": {"__name__": expr, "instance": f"{s}:9100"},
                "value": [t, repr(self.value(s, metric, t))],
            }
            for s in self.servers
            if not math.isnan(self.value(s, metric, t))
        ]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def _coverage(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        """The coverage expression's answer: a series per server with partial steps."""
        if path.endswith("query_range"):
            start, end, step = float(form["start"]), float(form["end"]), float(form["step"])
            times = [start + i * step for i in range(int((end - start) // step) + 1)]
            kind = "matrix"
            result = [
                {"metric": {"instance": f"{s}:9100"}, "values": values}
                for s in self.servers
                if (
                    values := [
                        [t, "1"] for t in times if (s, int(t) // STEP_SECONDS) in self.partial
                    ]
                )
            ]
        else:
            t = float(form["time"])
            kind = "vector"
            result = [
                {"metric": {"instance": f"{s}:9100"}, "value": [t, "1"]}
                for s in self.servers
                if (s, int(t) // STEP_SECONDS) in self.partial
            ]
        return {"status": "success", "data": {"resultType": kind, "result": result}}

    def start(self) -> FakePrometheus:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                code, body = fake._answer(self.path, form)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def fake_prom() -> Iterator[FakePrometheus]:
    """A running FakePrometheus for ppml0001, ppdb001, ppweb001 (stopped at the end)."""
    fake = FakePrometheus(["ppml0001", "ppdb001", "ppweb001"]).start()
    yield fake
    fake.stop()


class FakeClock:
    """Epoch seconds that only move when told to (data time under test control)."""

    def __init__(self, t: float) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A FakeClock 10 s into the step after 60 steps from T0."""
    return FakeClock(T0 + 60 * STEP_SECONDS + 10)
