"""GET /metrics text: format, values equal to the forecast set, bounded cardinality."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from fleetcast.appliance.exposition import (
    CONTENT_TYPE,
    MetricsText,
    RequestStats,
    Telemetry,
    escape_label,
    format_value,
)
from fleetcast.appliance.notify import Notifier
from fleetcast.appliance.persistence import Columns
from fleetcast.appliance.runtime import Runtime
from fleetcast.appliance.settings import build_settings
from fleetcast.contract.schema import STEP_SECONDS

from .conftest import T0

if TYPE_CHECKING:
    from pathlib import Path

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of an exposition: (name, sorted labels) -> value. Checks every line's syntax."""
    out = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"family {name} declared twice"
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = _LINE.match(line)
        assert match, f"bad line: {line!r}"
        labels = tuple(sorted(_LABEL.findall(match.group(3) or "")))
        key = (match.group(1), labels)
        assert key not in out, f"duplicate series {key}"
        out[key] = float(match.group(4))
    return out


def test_value_and_label_formatting() -> None:
    assert [
        format_value(v) for v in (3, 2.5, float("nan"), float("inf"), -float("inf"), None, True)
    ] == ["3", "2.5", "NaN", "+Inf", "-Inf", "NaN", "1"]
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    out = MetricsText()
    out.family("x_total", "counter", "Line one\nline two \\ end")
    out.sample("x_total", 1, {"k": 'v"'})
    assert out.text() == (
        '# HELP x_total Line one\\nline two \\\\ end\n# TYPE x_total counter\nx_total{k="v\\""} 1\n'
    )
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_request_histogram_is_cumulative() -> None:
    stats = RequestStats(buckets=(0.01, 0.1, 1.0))
    for s in (0.003, 0.05, 0.2, 3.0):
        stats.observe("GET", "/status", 200, s)
    stats.observe("POST", "/metrics", 422, 0.001)
    out = MetricsText()
    stats.render(out)
    got = parse(out.text())
    le = {
        dict(k[1])["le"]: v
        for k, v in got.items()
        if k[0].endswith("_bucket") and ("method", "GET") in k[1]
    }
    assert le == {"0.01": 1, "0.1": 2, "1.0": 3, "+Inf": 4}
    lab = (("method", "GET"), ("route", "/status"))
    assert got[("fleetcast_http_request_duration_seconds_count", lab)] == 4
    assert got[("fleetcast_http_request_duration_seconds_sum", lab)] == pytest.approx(3.253)
    key = (
        "fleetcast_http_requests_total",
        (("method", "POST"), ("route", "/metrics"), ("status", "422")),
    )
    assert got[key] == 1
    # A method of the client's invention is "other": no client can add series.
    for method in ("FOO", "X" * 2000):
        stats.observe(method, "unmatched", 404, 0.001)
    out = MetricsText()
    stats.render(out)
    methods = {dict(k[1]).get("method") for k in parse(out.text())}
    assert methods == {"GET", "POST", "other"}


def _columns(names: list[str], steps: int) -> Columns:
    ts, server, metrics = [], [], []
    for k in range(steps):
        for i, name in enumerate(names):
            ts.append(T0 + k * STEP_SECONDS)
            server.append(name)
            metrics.append((20.0 + 10 * i + (k % 4), 50.0 + i, 2.0 + i, 20.0 + k % 3))
    n = len(ts)
    return Columns(
        np.array(ts, np.int64), np.array(metrics, np.float64), server, [None] * n, [None] * n
    )


class _Source:
    kind = "prometheus"
    last_success = 1_790_000_000.0
    records = 120
    rejected = 3

    def source_status(self) -> dict[str, Any]:
        return {"kind": "prometheus", "healthy": False, "consecutive_failures": 4}


def _render(model_dir: Path, tmp_path: Path, names: list[str], max_servers: int) -> tuple[str, Any]:
    settings = build_settings(
        {
            "model_dir": model_dir,
            "state_dir": tmp_path / "state",
            "capacity": 64,
            "rate_limit": "off",
        },
        env={},
    )

    async def main() -> tuple[str, Any]:
        runtime = Runtime(settings, Notifier(None))
        await runtime.start()
        try:
            await runtime.ingest(_columns(names, 30))
            engine: Any = runtime.engine
            for _ in range(500):
                current = engine.current()
                if current is not None and len(current.servers) == len(names):
                    break
                await asyncio.sleep(0.02)
            telemetry = Telemetry(runtime, source=_Source(), max_servers=max_servers)
            return telemetry.render(now=1_790_009_000.0), engine.current()
        finally:
            await runtime.stop()

    return asyncio.run(main())


def test_forecasts_risk_and_health_are_exposed(model_dir: Path, tmp_path: Path) -> None:
    names = ["ppml0001", "ppdb001", "ppweb001", "ppetl001"]
    text, current = _render(model_dir, tmp_path, names, max_servers=3)
    got = parse(text)
    # The 3 riskiest, on risk to two decimals and then by name (a stable choice).
    ranked = sorted(current.servers, key=lambda s: (-round(s["risk"], 2), s["server_name"]))
    exposed = ranked[:3]
    risks = [s["risk"] for s in current.servers]
    assert sorted(risks, reverse=True) == risks
    for s in exposed:
        for key, q in (("p50", "0.5"), ("p90", "0.9")):
            for horizon, metrics in s["quantiles"][key].items():
                for metric, value in metrics.items():
                    labels = tuple(
                        sorted(
                            {
                                "server": s["server_name"],
                                "profile": s["profile"],
                                "metric": metric,
                                "horizon": horizon,
                                "quantile": q,
                            }.items()
                        )
                    )
                    assert got[("fleetcast_forecast", labels)] == pytest.approx(value)
        risk_key = (
            "fleetcast_server_risk",
            (("profile", s["profile"]), ("server", s["server_name"])),
        )
        assert got[risk_key] == pytest.approx(s["risk"])
        data_key = (
            "fleetcast_server_data_timestamp_seconds",
            (("profile", s["profile"]), ("server", s["server_name"])),
        )
        assert (
            got[data_key]
            == datetime.fromisoformat(s["prediction_time"].replace("Z", "+00:00")).timestamp()
        )
    forecast_series = [k for k in got if k[0] == "fleetcast_forecast"]
    assert len(forecast_series) == 3 * 4 * 3 * 2  # servers x metrics x horizons x quantiles
    assert got[("fleetcast_exposition_servers_omitted", ())] == 1
    assert got[("fleetcast_servers", (("state", "ready"),))] == 4
    assert got[("fleetcast_servers_forgotten_total", (("reason", "expired"),))] == 0
    assert got[("fleetcast_source_up", (("kind", "prometheus"),))] == 0
    assert got[("fleetcast_source_consecutive_failures", (("kind", "prometheus"),))] == 4
    assert (
        got[("fleetcast_source_samples_total", (("kind", "prometheus"), ("result", "rejected")))]
        == 3
    )
    assert got[("fleetcast_forecast_runs_total", ())] >= 1
    # The state directory: a full disk left /health "ok" and nothing here to alert on.
    assert got[("fleetcast_persistence_writable", ())] == 1
    assert got[("fleetcast_persistence_write_errors_total", ())] == 0
    assert got[("fleetcast_persistence_log_bytes", ())] > 0  # 120 samples, no snapshot yet
    assert got[("fleetcast_ingest_samples_total", (("result", "accepted"),))] == 120
    start = current.prediction_time
    t = datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
    assert got[("fleetcast_forecast_data_timestamp_seconds", ())] == t
    assert got[("fleetcast_forecast_age_seconds", ())] == pytest.approx(1_790_009_000.0 - t)
    assert got[("fleetcast_inference_latency_seconds", (("stat", "last"),))] > 0
    model = [k for k in got if k[0] == "fleetcast_model_info"]
    assert dict(model[0][1])["model_version"] == current.model_version
    # The official parser accepts it too (where prometheus-client is installed).
    parser = pytest.importorskip("prometheus_client.parser")
    parsed = list(parser.text_string_to_metric_families(text))
    families = {f.name: f for f in parsed}
    assert len(parsed) == len(families)  # each family one group: none split or re-opened
    assert all(f.type != "unknown" for f in parsed)
    assert families["fleetcast_forecast_age_seconds"].type == "gauge"
    assert families["fleetcast_http_request_duration_seconds"].type == "histogram"
    assert len(families["fleetcast_forecast"].samples) == len(forecast_series)


_SERVERS_BY_STATE = {"known": 9, "ready": 4, "warming": 1, "stale": 2, "ahead": 2, "unknown": 3}


class _StatesEngine:
    """An engine whose /status counts servers in every readiness state."""

    def status(self) -> dict[str, Any]:
        return {"model": {}, "servers": dict(_SERVERS_BY_STATE)}

    def current(self) -> None:
        return None


def test_servers_are_exposed_in_every_state_of_status() -> None:
    """``ahead`` servers (a clock in the future: not forecast, docs/RISK.md#buckets) are a
    series like ``stale`` ones, so Grafana's Servers panel accounts for every known server."""
    from types import SimpleNamespace

    runtime: Any = SimpleNamespace(
        engine=_StatesEngine(), forecast_errors=0, started_monotonic=time.monotonic() - 600
    )
    got = parse(Telemetry(runtime).render(now=1_790_009_000.0))
    states = {dict(k[1])["state"]: v for k, v in got.items() if k[0] == "fleetcast_servers"}
    assert states == _SERVERS_BY_STATE
    # No forecast yet (a source that yields nothing): the forecast's age is the time since
    # the start, so FleetcastForecastsStale fires; the alert and level counts are 0, not absent.
    assert 600 <= got[("fleetcast_forecast_age_seconds", ())] < 660
    assert got[("fleetcast_alerts_active", (("severity", "critical"),))] == 0
    assert got[("fleetcast_alerts_active", (("severity", "warning"),))] == 0
    assert got[("fleetcast_fleet_servers", (("level", "red"),))] == 0
    assert ("fleetcast_forecast_data_timestamp_seconds", ()) not in got
    # ... counted from the end of the warm-up the model needs (12 steps here): a fresh
    # appliance warming up is not "stale".
    engine = _StatesEngine()
    engine.status = lambda: {  # type: ignore[method-assign]
        "model": {"min_encoder_length": 12, "step_seconds": 300},
        "servers": dict(_SERVERS_BY_STATE),
    }
    for uptime, age in ((600, 0), (3600 + 900, 900)):
        runtime.engine, runtime.started_monotonic = engine, time.monotonic() - uptime
        got = parse(Telemetry(runtime).render(now=1_790_009_000.0))
        assert age <= got[("fleetcast_forecast_age_seconds", ())] < age + 60
