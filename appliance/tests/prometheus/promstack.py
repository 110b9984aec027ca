"""Helpers of the Prometheus tests: OpenMetrics backfill files and real Debian binaries.

Verified with Debian's Prometheus 2.42: OpenMetrics timestamps are in **seconds**
(milliseconds silently land in the far future), the file must end with ``# EOF``, and
each series must be written in time order (out-of-order samples are dropped silently).
The packages do not start their services here: the binaries are started by hand on free
local ports with temporary data directories; Alertmanager needs
``--cluster.listen-address=`` (empty) to run without gossip.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

__all__ = [
    "BINARIES",
    "METRIC_NAMES",
    "Proc",
    "Receiver",
    "free_port",
    "http_json",
    "missing_binaries",
    "prom_query",
    "start_alertmanager",
    "start_prometheus",
    "wait_until",
    "write_openmetrics",
]

BINARIES = ("prometheus", "promtool", "prometheus-alertmanager")
"""Debian packages prometheus + prometheus-alertmanager (node_exporter is optional)."""

METRIC_NAMES = {
    "cpu_pct": "fleetcast_test_cpu_pct",
    "mem_pct": "fleetcast_test_mem_pct",
    "disk_io_mb_s": "fleetcast_test_disk_io_mb_s",
    "latency_ms": "fleetcast_test_latency_ms",
}
"""Gauge name per contract metric, in the backfill and the test exporter."""


def missing_binaries(names: Iterable[str] = BINARIES) -> list[str]:
    """The binaries of ``names`` that are not on PATH."""
    return [n for n in names if shutil.which(n) is None]


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # a server still starting
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s (last error: {last_exc!r})")


def http_json(url: str, data: Any = None, timeout: float = 5.0) -> Any:
    """GET (or POST ``data`` as JSON) and decode the JSON answer."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def write_openmetrics(
    path: Path,
    rows: Mapping[str, np.ndarray],
    names: Mapping[str, str] = METRIC_NAMES,
    label: str = "instance",
) -> int:
    """Write contract rows (``timestamp`` epoch s, ``server_name``, metric columns) as
    OpenMetrics gauges, one series per (metric, server), each in time order. Returns the
    number of samples written."""
    ts = np.asarray(rows["timestamp"], dtype=np.int64)
    servers = np.asarray(rows["server_name"]).astype(str)
    order = np.lexsort((ts, servers))
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for metric, prom_name in names.items():
            fh.write(f"# TYPE {prom_name} gauge\n")
            values = np.asarray(rows[metric], dtype=np.float64)
            for i in order.tolist():
                fh.write(f'{prom_name}{{{label}="{servers[i]}"}} {values[i]:.4f} {int(ts[i])}\n')
                n += 1
        fh.write("# EOF\n")
    return n


@dataclass
class Proc:
    """A started binary; ``stop()`` terminates it (and only it)."""

    args: list[str]
    url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self, ready_path: str, timeout: float = 30.0) -> Proc:
        """Start the binary and wait until ``url + ready_path`` answers 200."""
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT)
        fh.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited: {self.log.read_text()[-2000:]}")
            with urllib.request.urlopen(self.url + ready_path, timeout=1) as resp:
                return resp.status == 200

        wait_until(ready, timeout=timeout)
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def restart(self, ready_path: str) -> Proc:
        """Stop and start again with the same arguments (same data directory)."""
        self.stop()
        return self.start(ready_path)


def start_prometheus(
    workdir: Path,
    scrape_targets: Mapping[str, str],
    openmetrics: Path | None = None,
    scrape_interval: str = "1s",
) -> Proc:
    """A real Prometheus on a free port: ``scrape_targets`` maps job name → host:port
    (``honor_labels: true``, so a target's own ``instance`` label is kept). With
    ``openmetrics`` the file is loaded into the data directory first (promtool)."""
    data = workdir / "prom-data"
    data.mkdir(parents=True, exist_ok=True)
    if openmetrics is not None:
        result = subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(data)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"promtool failed: {result.stderr[-2000:]}")
    jobs = "\n".join(
        f"  - job_name: {job}\n    honor_labels: true\n    static_configs:\n"
        f"      - targets: ['{target}']"
        for job, target in scrape_targets.items()
    )
    config = workdir / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
        f"scrape_configs:\n{jobs}\n",
        encoding="utf-8",
    )
    port = free_port()
    args = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=30d",
        "--web.enable-lifecycle",
    ]
    proc = Proc(args, f"http://127.0.0.1:{port}", workdir / "prometheus.log")
    return proc.start("/-/ready")


def start_alertmanager(workdir: Path, config_text: str | None = None) -> Proc:
    """A real Alertmanager (Debian's) on a free port, without clustering; ``config_text``
    its configuration (default: every alert to a receiver that sends nothing)."""
    data = workdir / "am-data"
    data.mkdir(parents=True, exist_ok=True)
    config = workdir / "alertmanager.yml"
    config.write_text(
        config_text
        or "route:\n  receiver: 'null'\n  group_wait: 1s\n  group_interval: 1s\n"
        "receivers:\n  - name: 'null'\n",
        encoding="utf-8",
    )
    port = free_port()
    args = [
        "prometheus-alertmanager",
        f"--config.file={config}",
        f"--storage.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    proc = Proc(args, f"http://127.0.0.1:{port}", workdir / "alertmanager.log")
    return proc.start("/-/ready")


def prom_query(url: str, expr: str) -> list[dict[str, Any]]:
    """Result list of an instant PromQL query (raises on an API error)."""
    q = urllib.parse.urlencode({"query": expr})
    body = http_json(f"{url}/api/v1/query?{q}")
    if body.get("status") != "success":
        raise RuntimeError(body)
    return body["data"]["result"]


class Receiver:
    """An HTTP receiver on a local port (a webhook, an Alertmanager, a Prometheus answering
    ``answer``): keeps each POST's JSON body (``bodies``; None when it is not JSON) and its
    Authorization header (``auth``). ``close()`` stops it."""

    def __init__(self, answer: bytes = b"") -> None:
        self.bodies: list[Any] = []
        self.auth: list[str | None] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                is_json = self.headers.get("Content-Type", "").startswith("application/json")
                receiver.bodies.append(json.loads(raw) if is_json else None)
                receiver.auth.append(self.headers.get("Authorization"))
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
