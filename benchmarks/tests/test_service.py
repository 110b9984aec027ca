"""The service benchmark's load generation: wrk's paced schedule and what a p99 needs to count."""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fleetbench.wrk import get_p99, parse_wrk


def test_parse_wrk_counts_socket_errors_and_non_2xx() -> None:
    sample = """  1 threads and 8 connections
  Latency Distribution
     50%    2.00ms
     99%    9.00ms
  400 requests in 2.00s, 1.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:    199.50
"""
    out = parse_wrk(sample)
    assert out["socket_errors"] == 5.0
    assert out["non_2xx"] == 7.0
    assert out["requests_per_s"] == 199.5
    assert out["p99_ms"] == 9.0


def _gets(p99: float = 50.0, rate: float = 200.0, errors: int = 0) -> dict[str, float]:
    return {"p99_ms": p99, "rate_achieved": rate, "errors": errors}


def test_a_p99_counts_only_at_the_rate_asked_and_without_errors() -> None:
    """wrk once paced each connection by a fixed pause after its response, so a slower
    server got a lighter load (175 req/s instead of 200), and error answers were ignored."""
    ok = {"p99_ms": 6.5, "requests_per_s": 199.0}
    assert get_p99(ok, _gets(), 200.0) == (6.5, "")
    slow, why = get_p99({"p99_ms": 6.5, "requests_per_s": 175.0}, _gets(), 200.0)
    assert slow is None
    assert "wrk achieved 175 req/s, under 0.95 × 200" in why
    bad, why = get_p99({**ok, "non_2xx": 3.0}, _gets(), 200.0)
    assert bad is None
    assert "3 answers were errors" in why
    # Without wrk, the Python client's figures, held to the same rules.
    assert get_p99(None, _gets(8.0, 199.0), 200.0) == (8.0, "")
    assert get_p99(None, _gets(8.0, 150.0), 200.0)[0] is None
    assert get_p99(None, _gets(8.0, 200.0, errors=1), 200.0)[0] is None


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_wrk_holds_the_schedule_against_a_real_server() -> None:
    """The pacing script runs in Debian's wrk (LuaJIT's FFI clock) and paces: a closed-loop
    wrk would send thousands of requests a second to this server."""
    from fleetbench.wrk import run_wrk

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        out = run_wrk(url, 2.0, connections=8, rate=100.0)
    finally:
        server.shutdown()
        server.server_close()
    assert out is not None
    assert 60.0 <= out["requests_per_s"] <= 130.0, out
    assert out.get("non_2xx", 0.0) == 0.0
    assert out.get("socket_errors", 0.0) == 0.0


def test_the_appliance_runs_from_the_environment_an_edge_box_has(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the suite's own environment Numba imports the trainer's SciPy and the appliance
    measured ~50 MB more RSS (402 against 354 MB peak) than installed alone."""
    from fleetbench import service

    with pytest.raises(FileNotFoundError, match="has no bin/fleetcast"):
        service.appliance_command(tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "fleetcast").write_text("#!/bin/sh\n")
    assert service.appliance_command(tmp_path) == (
        [str(tmp_path / "bin" / "fleetcast")],
        str(tmp_path),
    )
    monkeypatch.setattr(service, "CHECKOUT", tmp_path / "checkout")
    _, label = service.appliance_command()
    assert label == "the suite's environment (with the trainer's packages)"
    edge = tmp_path / "checkout" / ".venv-appliance" / "bin"
    edge.mkdir(parents=True)
    (edge / "fleetcast").write_text("#!/bin/sh\n")
    assert service.appliance_command() == (
        [str(edge / "fleetcast")],
        ".venv-appliance (the appliance alone)",
    )


def _run(ready: float, p99: float | None, note: str = "") -> dict:
    return {
        "ready_s": ready,
        "step_to_forecast_ms": {"median": 300.0 + ready},
        "target_values": {
            "service.ready_s": ready,
            "service.ingest_samples_per_s": 200_000.0 + ready,
            "service.get_current_p99_ms": p99,
            "service.rss_mb": 350.0,
        },
        "target_notes": {"service.get_current_p99_ms": note} if note else {},
    }


def test_service_figures_are_medians_over_fresh_appliances() -> None:
    from fleetbench.service_repeat import run_service_repeated

    runs = iter([_run(1.0, 3.0), _run(3.0, 9.0), _run(2.0, 4.0)])
    out = run_service_repeated(3, lambda: next(runs))
    assert out["runs"] == 3
    assert out["ready_s"] == 1.0  # the first run's details are kept
    assert out["target_values"]["service.ready_s"] == 2.0
    assert out["target_values"]["service.get_current_p99_ms"] == 4.0
    assert out["repeats"]["service.get_current_p99_ms"]["runs"] == [3.0, 9.0, 4.0]
    assert out["repeats"]["step_to_forecast_ms"]["median"] == 302.0
    assert "step_to_forecast_ms" not in out["target_values"]
    # One run whose load fell behind: the median must not hide it.
    runs = iter([_run(1.0, 3.0), _run(1.0, None, "wrk achieved 150 req/s"), _run(1.0, 3.0)])
    out = run_service_repeated(3, lambda: next(runs))
    assert out["target_values"]["service.get_current_p99_ms"] is None
    assert out["target_notes"]["service.get_current_p99_ms"] == (
        "in one of 3 runs, wrk achieved 150 req/s"
    )
    single = _run(1.0, 3.0)
    assert run_service_repeated(1, lambda: single) == single
