"""A test exporter serving known values in Prometheus' text format.

Serves one gauge per contract metric (``fleetcast_test_cpu_pct`` ...) per server, with
the server in the ``instance`` label (scrape it with ``honor_labels: true``), so the
values that reach the appliance are known exactly. Run it alone::

    python appliance/tests/prometheus/exporter.py --port 9101 ppml0001=42,55,3,20 ppdb001=...

(values: cpu_pct, mem_pct, disk_io_mb_s, latency_ms), or use :class:`KnownValuesExporter`
in a test (a thread; ``set()`` changes the values while it runs).
"""

from __future__ import annotations

import argparse
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["KnownValuesExporter", "render"]

METRICS = ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")
PREFIX = "fleetcast_test_"


def render(values: Mapping[str, Sequence[float]]) -> str:
    """The exposition text of ``{server: (cpu, mem, disk, latency)}``."""
    lines = []
    for j, metric in enumerate(METRICS):
        lines.append(f"# TYPE {PREFIX}{metric} gauge")
        for server, vals in sorted(values.items()):
            lines.append(f'{PREFIX}{metric}{{instance="{server}"}} {float(vals[j])!r}')
    return "\n".join(lines) + "\n"


class KnownValuesExporter:
    """Serves :func:`render` of its values on ``127.0.0.1:port`` (``/metrics``) in a thread."""

    def __init__(self, values: Mapping[str, Sequence[float]], port: int = 0) -> None:
        self._values = {k: tuple(v) for k, v in values.items()}
        self._lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with exporter._lock:
                    body = render(exporter._values).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """``host:port`` to scrape."""
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def set(self, server: str, values: Sequence[float]) -> None:
        """Change (or add) one server's values."""
        with self._lock:
            self._values[server] = tuple(values)

    def __enter__(self) -> KnownValuesExporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve ``SERVER=cpu,mem,disk,latency`` arguments until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("servers", nargs="+", help="SERVER=cpu,mem,disk,latency")
    args = parser.parse_args(argv)
    values = {}
    for item in args.servers:
        name, _, nums = item.partition("=")
        values[name] = tuple(float(x) for x in nums.split(","))
    with KnownValuesExporter(values, args.port) as exporter:
        print(f"serving {len(values)} servers on http://{exporter.address}/metrics")  # CLI report
        threading.Event().wait()


if __name__ == "__main__":
    main()
