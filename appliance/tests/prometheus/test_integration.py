"""The appliance against Debian's real Prometheus, node_exporter and Alertmanager.

One stack per module (about 10 s to build): a Prometheus whose data directory holds a
simulated fleet's past day (OpenMetrics → ``promtool tsdb create-blocks-from``), scraping
every second a test exporter with known values for two of those servers, the appliance
itself (``GET /metrics``) and, when installed, node_exporter. The appliance runs as a real
process (``fleetcast serve --source prometheus``) with the tiny ONNX fixture.

Time: the appliance works in data time. The backfilled day ends at the last 5-minute
boundary, the exporter's live samples land in the open step; the appliance's backfill
reads every completed step at its last second, so forecasts exist seconds after start
(no 5-minute wait). Skipped with a reason when the binaries are missing
(``apt-get install prometheus prometheus-alertmanager prometheus-node-exporter``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from fleetcast.appliance.sources.promql import DEFAULT_QUERIES, LabelMapping, PromClient, assemble
from fleetcast.contract.schema import METRIC_COLUMNS, STEP_SECONDS

from .exporter import KnownValuesExporter
from .promstack import (
    METRIC_NAMES,
    Receiver,
    free_port,
    http_json,
    missing_binaries,
    prom_query,
    start_alertmanager,
    start_prometheus,
    wait_until,
    write_openmetrics,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(
        bool(missing_binaries()),
        reason=f"needs Debian's {', '.join(missing_binaries())} "
        "(apt-get install prometheus prometheus-alertmanager prometheus-node-exporter)",
    ),
]

KNOWN = {"ppml0001": (42.0, 55.0, 3.0, 20.0), "ppweb001": (97.0, 60.0, 1.5, 30.0)}
"""Live values the test exporter serves (cpu, mem, disk, latency)."""
FLEET = 5
"""Simulated servers in the backfilled day (ppdb001, ppetl001, ppml0001, pprisk001, ppweb001)."""


class Appliance:
    """``python -m fleetcast.appliance.commands`` (fleetcast serve) as a real process."""

    def __init__(self, workdir: Path, model_dir: Path, port: int, extra: list[str]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / f"appliance-{port}.log"
        cmd = [
            sys.executable,
            "-m",
            "fleetcast.appliance.commands",
            "--model-dir",
            str(model_dir),
            "--state-dir",
            str(workdir / f"state-{port}"),
            "--port",
            str(port),
            "--capacity",
            "64",
            "--rate-limit",
            "off",
            "--no-fsync",
            *extra,
        ]
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ)
            )
        wait_until(self._healthy, timeout=90)

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"appliance exited: {self.log.read_text()[-3000:]}")
        return http_json(f"{self.url}/health", timeout=1)["status"] == "ok"

    def get(self, path: str) -> Any:
        return http_json(self.url + path)

    def post(self, path: str, body: Any) -> Any:
        return http_json(self.url + path, body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Stack:
    """Everything the module's tests share."""

    def __init__(self, workdir: Path, model_dir: Path) -> None:
        from fleetcast.contract.simulate import FleetStream

        self.workdir = workdir
        now = int(time.time())
        self.open_step = now // STEP_SECONDS
        start = (self.open_step - 288) * STEP_SECONDS
        stream = FleetStream(n_servers=FLEET, seed=3, start=start)
        self.history = stream.backfill(288)  # ends at the last completed step
        om = workdir / "history.om"
        write_openmetrics(om, self.history)
        self.exporter = KnownValuesExporter(KNOWN).__enter__()
        self.node_port = free_port() if shutil.which("prometheus-node-exporter") else None
        self.node: subprocess.Popen[bytes] | None = None
        if self.node_port is not None:
            self.node = subprocess.Popen(
                [
                    "prometheus-node-exporter",
                    f"--web.listen-address=127.0.0.1:{self.node_port}",
                    "--collector.disable-defaults",
                    "--collector.cpu",
                    "--collector.meminfo",
                    "--collector.diskstats",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self.app_port = free_port()
        targets = {"test": self.exporter.address, "fleetcast": f"127.0.0.1:{self.app_port}"}
        if self.node_port is not None:
            targets["node"] = f"127.0.0.1:{self.node_port}"
        self.prom = start_prometheus(workdir, targets, om)
        queries: list[str] = []
        for metric, name in METRIC_NAMES.items():
            queries += [f"--prometheus-{metric.replace('_', '-')}", name]
        self.app = Appliance(
            workdir,
            model_dir,
            self.app_port,
            [
                "--source",
                "prometheus",
                "--prometheus-url",
                self.prom.url,
                "--prometheus-interval-s",
                "0.5",
                "--prometheus-settle-s",
                "0",
                "--prometheus-backoff-max-s",
                "1",
                "--prometheus-timeout-s",
                "2",
                *queries,
            ],
        )

    def close(self) -> None:
        self.app.stop()
        self.prom.stop()
        if self.node is not None and self.node.poll() is None:
            self.node.terminate()
            self.node.wait(10)
        self.exporter.__exit__()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("promstack")
    model_dir = workdir / "model"
    model_dir.mkdir()
    shutil.copyfile(tiny_onnx, model_dir / "model.onnx")
    built = None
    try:
        built = Stack(workdir, model_dir)
        yield built
    finally:
        if built is not None:
            built.close()


def _newest_complete(stack: Stack) -> str:
    step = int(time.time()) // STEP_SECONDS - 1
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(step * STEP_SECONDS))


def test_backfill_fills_the_window_and_forecasts_scraped_instances(stack: Stack) -> None:
    app = stack.app
    status = wait_until(lambda: (s := app.get("/status"))["source"]["healthy"] and s, timeout=30)
    assert status["source"]["kind"] == "prometheus"
    encoder = status["model"]["encoder_length"]
    assert status["source"]["backfilled_steps"] >= encoder
    assert status["servers"]["ready"] == FLEET
    assert status["servers"]["warming"] == 0
    current = wait_until(
        lambda: (
            (c := app.get("/predictions/current"))["data_time"] == _newest_complete(stack) and c
        ),
        timeout=30,
    )
    names = {s["server_name"] for s in current["servers"]}
    assert set(KNOWN) <= names
    assert len(names) == FLEET
    # History: the scraped values in the open step, the backfilled day before it.
    for server, values in KNOWN.items():
        hist = wait_until(
            lambda s=server, v=values: (
                (h := app.get(f"/history/{s}?steps=60"))["cpu_pct"][-1] == v[0] and h
            ),
            timeout=15,
        )
        for j, metric in enumerate(METRIC_COLUMNS):
            assert hist[metric][-1] == pytest.approx(values[j])
    rows = stack.history
    mask = rows["server_name"] == "ppdb001"
    sim_ts, sim_cpu = rows["timestamp"][mask], rows["cpu_pct"][mask]
    hist = app.get("/history/ppdb001?steps=60")
    checked = 0
    for ts_iso, cpu in zip(hist["timestamps"], hist["cpu_pct"], strict=True):
        t = int(np.datetime64(ts_iso.rstrip("Z"), "s").astype(np.int64))
        hit = np.flatnonzero(sim_ts == t)
        if hit.size and cpu is not None:
            assert cpu == pytest.approx(float(sim_cpu[hit[0]]), abs=1e-3)
            checked += 1
    assert checked >= encoder - 1  # every backfilled step holds the simulated value


def test_prometheus_scrapes_forecasts_back(stack: Stack) -> None:
    app, prom = stack.app, stack.prom
    expr = 'fleetcast_forecast{server="ppml0001",metric="cpu_pct",horizon="1hr",quantile="0.5"}'

    def same() -> bool:
        mine = next(
            s for s in app.get("/predictions/current")["servers"] if s["server_name"] == "ppml0001"
        )["predictions"]["1hr"]["cpu_pct"]
        result = prom_query(prom.url, expr)
        return bool(result) and abs(float(result[0]["value"][1]) - mine) < 1e-3

    wait_until(same, timeout=30, interval=0.5)
    up = prom_query(prom.url, 'fleetcast_source_up{kind="prometheus"}')
    assert up
    assert up[0]["value"][1] == "1"
    risk = prom_query(prom.url, "count(fleetcast_server_risk)")
    assert int(risk[0]["value"][1]) == FLEET
    # A scrape counts itself after answering: the second scrape shows the first.
    scraped = 'sum(fleetcast_http_requests_total{route="/metrics",method="GET",status="200"})'
    requests = wait_until(lambda: prom_query(prom.url, scraped), timeout=10, interval=0.5)
    assert float(requests[0]["value"][1]) >= 1


def test_prometheus_down_then_back(stack: Stack) -> None:
    app = stack.app
    before = app.get("/predictions/current")
    stack.prom.stop()
    try:
        status = wait_until(
            lambda: (s := app.get("/status"))["source"]["healthy"] is False and s, timeout=20
        )
        assert "Cannot reach Prometheus" in status["source"]["last_error"]
        assert status["source"]["detail"].startswith("failing")
        time.sleep(1.5)  # a few failed cycles with backoff: still serving
        assert app.proc.poll() is None
        assert app.get("/health")["status"] == "ok"
        after = app.get("/predictions/current")
        assert after["prediction_time"] == before["prediction_time"]
        assert after["servers"]
        assert app.get("/status")["source"]["forecast_age_s"] > 0
    finally:
        stack.prom.start("/-/ready")
    status = wait_until(lambda: (s := app.get("/status"))["source"]["healthy"] and s, timeout=30)
    assert status["source"]["consecutive_failures"] == 0
    assert status["source"]["last_error"] is None


def test_default_queries_work_with_real_node_exporter(stack: Stack) -> None:
    if stack.node_port is None:
        pytest.skip("prometheus-node-exporter is not installed")
    client = PromClient(stack.prom.url)
    instance = f"127.0.0.1:{stack.node_port}"

    def values() -> dict[str, list[Any]] | None:
        now = time.time()
        got = {m: client.query(q, now) for m, q in DEFAULT_QUERIES.items() if q}
        mine = {m: [s for s in r if s.labels.get("instance") == instance] for m, r in got.items()}
        return mine if all(mine.values()) else None  # rate() needs two scrapes

    results = wait_until(values, timeout=20, interval=0.5)
    samples = assemble(results, LabelMapping())
    assert samples.server == ["127.0.0.1"]  # the port is cut from the instance label
    cpu, mem, disk, latency = samples.metrics[0]
    assert 0.0 <= cpu <= 100.0
    assert 0.0 < mem < 100.0
    assert disk >= 0.0
    assert latency == 0.0
    assert samples.filled_latency == 1


def _records(server: str, cpu: float, steps: range, t0: int) -> list[dict[str, Any]]:
    return [
        {
            "timestamp": t0 + k * STEP_SECONDS,
            "server_name": server,
            "cpu_pct": cpu,
            "mem_pct": 50.0,
            "disk_io_mb_s": 2.0,
            "latency_ms": 20.0,
        }
        for k in steps
    ]


def _am_alerts(url: str, server: str) -> list[dict[str, Any]]:
    return [a for a in http_json(f"{url}/api/v2/alerts") if a["labels"].get("server") == server]


def _example_alertmanager_config(receiver_url: str) -> str:
    """docs/prometheus/alertmanager.yml with ``receiver_url`` and a test's short waits."""
    text = (Path(__file__).parents[3] / "docs" / "prometheus" / "alertmanager.yml").read_text()
    for old, new in (
        ("http://127.0.0.1:5001/alerts", receiver_url),
        ("group_wait: 30s", "group_wait: 1s"),
        ("group_interval: 5m", "group_interval: 1s"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_alerts_reach_alertmanager_and_resolve(stack: Stack, tiny_onnx: Path) -> None:
    workdir = stack.workdir / "alerts"
    workdir.mkdir()
    model_dir = workdir / "model"
    model_dir.mkdir()
    shutil.copyfile(tiny_onnx, model_dir / "model.onnx")
    thresholds = workdir / "thresholds.toml"
    thresholds.write_text("[cpu_pct]\ndefault = 80\n", encoding="utf-8")
    pages = Receiver()  # what Alertmanager notifies, routed by the example configuration
    am = start_alertmanager(workdir, _example_alertmanager_config(pages.url))
    hook = Receiver()
    app = None
    try:
        app = Appliance(
            workdir,
            model_dir,
            free_port(),
            [
                "--alertmanager-url",
                am.url,
                "--webhook-url",
                hook.url,
                "--alert-resend-s",
                "1",
                "--thresholds-file",
                str(thresholds),
            ],
        )
        t0 = 1_790_000_000 // STEP_SECONDS * STEP_SECONDS
        hot = _records("ppml0001", 95.0, range(20), t0) + _records("ppdb001", 30.0, range(20), t0)
        assert app.post("/metrics", {"records": hot})["accepted"] == 40
        firing = wait_until(
            lambda: len(_am_alerts(am.url, "ppml0001")) == 6 and _am_alerts(am.url, "ppml0001"),
            timeout=20,
        )
        by_key = {(a["labels"]["horizon"], a["labels"]["severity"]): a for a in firing}
        assert set(by_key) == {
            (h, s) for h in ("30min", "1hr", "8hr") for s in ("warning", "critical")
        }
        assert by_key["8hr", "critical"]["labels"] == {
            "alertname": "FleetcastForecastRisk",
            "server": "ppml0001",
            "profile": "ml_compute",
            "metric": "cpu_pct",
            "horizon": "8hr",
            "severity": "critical",
        }
        # The example's inhibit rule mutes each warning while its critical twin fires...
        muted = wait_until(
            lambda: (
                all(
                    a["status"]["inhibitedBy"]
                    for a in _am_alerts(am.url, "ppml0001")
                    if a["labels"]["severity"] == "warning"
                )
                and _am_alerts(am.url, "ppml0001")
            ),
            timeout=20,
        )
        assert {a["status"]["state"] for a in muted if a["labels"]["severity"] == "warning"} == {
            "suppressed"
        }
        firing = [a for a in muted if a["labels"]["severity"] == "critical"]

        # ...so once every horizon is critical, the server's critical page (the example
        # routes critical alerts on their own, grouped by [alertname, server]) holds the
        # three critical alerts, and no warning is paged beside them.
        def critical_page() -> dict[str, Any] | None:
            for body in list(pages.bodies):
                paged = sorted(
                    (a["labels"]["horizon"], a["labels"]["severity"])
                    for a in body["alerts"]
                    if a["status"] == "firing"
                )
                if paged == [(h, "critical") for h in ("1hr", "30min", "8hr")]:
                    return body
            return None

        page = wait_until(critical_page, timeout=30)
        assert page["groupLabels"] == {"alertname": "FleetcastForecastRisk", "server": "ppml0001"}
        assert all(a["status"]["state"] == "active" for a in firing)
        ann = firing[0]["annotations"]
        assert ann["threshold"] == "80"
        assert float(ann["predicted_value"]) > 80
        assert not _am_alerts(am.url, "ppdb001")
        # Cool data: the forecast drops, the alerts resolve in Alertmanager.
        cool = _records("ppml0001", 10.0, range(20, 40), t0) + _records(
            "ppdb001", 30.0, range(20, 40), t0
        )
        app.post("/metrics", {"records": cool})
        wait_until(lambda: not _am_alerts(am.url, "ppml0001"), timeout=20)
        statuses = [(a["status"], a["labels"]["horizon"]) for b in hook.bodies for a in b["alerts"]]
        assert {("firing", h) for h in ("30min", "1hr", "8hr")} <= set(statuses)
        wait_until(
            lambda: (
                {("resolved", h) for h in ("30min", "1hr", "8hr")}
                <= {(a["status"], a["labels"]["horizon"]) for b in hook.bodies for a in b["alerts"]}
            ),
            timeout=10,
        )
    finally:
        if app is not None:
            app.stop()
        am.stop()
        hook.close()
        pages.close()
    with contextlib.suppress(OSError):
        shutil.rmtree(workdir / "am-data")
