"""``GET /metrics``: the appliance's own metrics in Prometheus' text exposition format 0.0.4.

``POST /metrics`` (ingest) and ``GET /metrics`` share the path; the method tells them apart.
Written by hand (no client library: no global registry, nothing to install on the edge
box); rendered on each scrape from the cached forecast set and the counters, so a scrape
never runs the model. Families (docs/PROMETHEUS.md#exposed-metrics):

==========================================================  =========  =====================
family                                                      type       labels
==========================================================  =========  =====================
fleetcast_http_requests_total                               counter    method, route, status
fleetcast_http_request_duration_seconds                     histogram  method, route
fleetcast_model_info                                        gauge      model_version, contract_version
fleetcast_servers                                           gauge      state (known/ready/warming/stale/ahead/unknown)
fleetcast_servers_capacity                                  gauge      -
fleetcast_inference_latency_seconds                         gauge      stat (avg/p99/last)
fleetcast_predictions_per_second                            gauge      -
fleetcast_forecast_runs_total, _errors_total                counter    -
fleetcast_forecast_nonfinite_total                          counter    -
fleetcast_ingest_samples_total                              counter    result
fleetcast_forecast_data_timestamp_seconds, _age_seconds     gauge      -
fleetcast_fleet_servers                                     gauge      level (green/yellow/red)
fleetcast_fleet_mean_risk                                   gauge      -
fleetcast_fleet_incident_probability                        gauge      horizon
fleetcast_server_risk                                       gauge      server, profile
fleetcast_server_data_timestamp_seconds                     gauge      server, profile
fleetcast_forecast                                          gauge      server, profile, metric, horizon, quantile
fleetcast_exposition_servers_omitted                        gauge      -
fleetcast_alerts_active                                     gauge      severity
fleetcast_source_up, _last_success_timestamp_seconds,
fleetcast_source_consecutive_failures                       gauge      kind
fleetcast_source_samples_total                              counter    kind, result
fleetcast_persistence_writable, _log_bytes,
fleetcast_persistence_last_snapshot_timestamp_seconds       gauge      -
fleetcast_persistence_write_errors_total                    counter    -
fleetcast_alert_deliveries_total                            counter    receiver, result
==========================================================  =========  =====================

Cardinality: ``route`` is the route *template* (``/predictions/{server_name:path}``) or
``unmatched``, never a raw path; per-server families are limited to the ``max_servers``
riskiest servers (default 500): 1 + 4 metrics × 3 horizons × 2 quantiles (0.5, 0.9) = 25
series per server, so at most 12,500 + a fixed ~100.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from litestar import Response, get

from fleetcast.appliance.auth import read_guard
from fleetcast.appliance.engine_ingest import COUNTERS
from fleetcast.appliance.exposition_parts import render_alerts, render_persistence, render_source
from fleetcast.appliance.forecast import epoch_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from litestar.handlers import HTTPRouteHandler
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from fleetcast.appliance.alerting import AlertPusher
    from fleetcast.appliance.runtime import Runtime

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_SERVERS",
    "DURATION_BUCKETS",
    "EXPOSED_QUANTILES",
    "HTTP_METHODS",
    "MetricsText",
    "RequestStats",
    "Telemetry",
    "escape_label",
    "format_value",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of ``GET /metrics``. Litestar appends the charset to a text type
itself, so the route asks for :data:`_MEDIA_TYPE` (the charset twice confuses strict
parsers)."""
_MEDIA_TYPE = CONTENT_TYPE.removesuffix("; charset=utf-8")
DEFAULT_MAX_SERVERS = 500
"""Per-server series are exposed for at most this many servers (the riskiest)."""
EXPOSED_QUANTILES: tuple[tuple[str, str], ...] = (("p50", "0.5"), ("p90", "0.9"))
"""(forecast key, ``quantile`` label) exposed per server, metric and horizon."""
HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "WS")
)
"""The ``method`` label values; any other method is counted as ``other``."""
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Upper bounds (seconds) of the request duration histogram."""


def escape_label(value: str) -> str:
    """A label value escaped for the text format (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float | int | None) -> str:
    """A sample value: integers as such, floats via repr, NaN / +Inf / -Inf spelled out."""
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class MetricsText:
    """Builds one exposition: ``family(...)`` then ``sample(...)`` lines, ``text()`` at the end."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        """Start a metric family with its HELP and TYPE lines."""
        help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(
        self, name: str, value: float | int | None, labels: Mapping[str, str] | None = None
    ) -> None:
        """One sample line ``name{labels} value``."""
        if labels:
            inner = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{inner}}} {format_value(value)}")
        else:
            self._lines.append(f"{name} {format_value(value)}")

    def text(self) -> str:
        """The exposition (ends with a newline)."""
        return "\n".join(self._lines) + "\n"


@dataclass
class RequestStats:
    """Request counts and a duration histogram per (method, route template)."""

    buckets: tuple[float, ...] = DURATION_BUCKETS
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(method, route, status) -> requests."""
    hist: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(method, route) -> [bucket counts..., +Inf count, sum of seconds]."""

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request. A method outside HTTP's own (any token is one to
        the server: ``curl -X FOO``) counts as ``other``, so no client can add series."""
        if method not in HTTP_METHODS:
            method = "other"
        key = (method, route, str(status))
        self.counts[key] = self.counts.get(key, 0) + 1
        h = self.hist.get((method, route))
        if h is None:
            h = [0.0] * (len(self.buckets) + 2)
            self.hist[(method, route)] = h
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                h[i] += 1
        h[-2] += 1
        h[-1] += seconds

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware counting every HTTP request and WebSocket session."""

        async def counting(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] not in ("http", "websocket"):
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = {"code": 0}

            async def send_status(message: Message) -> None:
                kind = message["type"]
                if kind in ("http.response.start", "websocket.http.response.start"):
                    status["code"] = int(message["status"])
                elif kind == "websocket.accept":
                    status["code"] = 101
                elif kind == "websocket.close" and not status["code"]:
                    status["code"] = 403  # closed before accept: the server answers 403
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                route = scope.get("path_template") or "unmatched"  # bounded: templates only
                method = scope.get("method", "WS") if scope["type"] == "http" else "WS"
                self.observe(method, route, status["code"] or 500, time.perf_counter() - started)

        return counting

    def render(self, out: MetricsText) -> None:
        """Append the request families to ``out``."""
        out.family("fleetcast_http_requests_total", "counter", "HTTP requests answered.")
        counts = dict(self.counts)  # copies: render runs in a worker thread
        hist = {k: list(v) for k, v in dict(self.hist).items()}
        for (method, route, status), n in sorted(counts.items()):
            out.sample(
                "fleetcast_http_requests_total",
                n,
                {"method": method, "route": route, "status": status},
            )
        name = "fleetcast_http_request_duration_seconds"
        out.family(name, "histogram", "Time to answer a request, by route template.")
        for (method, route), h in sorted(hist.items()):
            labels = {"method": method, "route": route}
            for bound, count in zip(self.buckets, h, strict=False):
                out.sample(
                    f"{name}_bucket", int(count), {**labels, "le": format_value(float(bound))}
                )
            out.sample(f"{name}_bucket", int(h[-2]), {**labels, "le": "+Inf"})
            out.sample(f"{name}_sum", h[-1], labels)
            out.sample(f"{name}_count", int(h[-2]), labels)


def _epoch(iso_time: str | None) -> float | None:
    return epoch_of(iso_time) if iso_time else None


def _ms_to_s(value: float | None) -> float | None:
    return None if value is None else float(value) / 1000.0


class Telemetry:
    """What ``GET /metrics`` reports: the runtime, request stats, the pull source, the pusher.

    Built by the app factory with :meth:`from_settings`; the lifespan calls :meth:`start`
    after the runtime started and :meth:`stop` before it stops (the source and the alert
    pusher run between the two).
    """

    def __init__(
        self,
        runtime: Runtime,
        source: Any | None = None,
        pusher: AlertPusher | None = None,
        max_servers: int = DEFAULT_MAX_SERVERS,
    ) -> None:
        self.runtime = runtime
        self.source = source
        self.pusher = pusher
        self.max_servers = int(max_servers)
        self.requests = RequestStats()

    @classmethod
    def from_settings(cls, runtime: Runtime, settings: Any) -> Telemetry:
        """Telemetry with the source and the alert pusher ``settings`` ask for."""
        from fleetcast.appliance.alerting import AlertPusher
        from fleetcast.appliance.sources import create_source

        return cls(
            runtime,
            source=create_source(runtime, settings),
            pusher=AlertPusher.from_settings(runtime, settings),
            max_servers=getattr(settings, "metrics_max_servers", None) or DEFAULT_MAX_SERVERS,
        )

    async def start(self) -> None:
        """Start the pull source (reported by /status) and the alert pusher."""
        if self.source is not None:
            self.runtime.pull_source = self.source  # type: ignore[attr-defined]
            await self.source.start()
        if self.pusher is not None:
            await self.pusher.start()

    async def stop(self) -> None:
        """Stop the pusher and the source (idempotent)."""
        if self.pusher is not None:
            await self.pusher.stop()
        if self.source is not None:
            await self.source.stop()

    @property
    def middleware(self) -> Any:
        """The request-counting middleware (add it to the app's middleware)."""
        return self.requests.middleware

    def route(self) -> HTTPRouteHandler:
        """The ``GET /metrics`` route handler bound to this telemetry."""
        telemetry = self

        @get(
            "/metrics",
            guards=[read_guard],
            media_type=_MEDIA_TYPE,
            tags=["status"],
            summary="The appliance's metrics in Prometheus text format (docs/PROMETHEUS.md)",
            sync_to_thread=True,  # tens of ms for 500 servers: keep the event loop free
        )
        def prometheus_metrics() -> Response[str]:
            """Request metrics, forecasts per server, risk, latency, source health."""
            return Response(telemetry.render(), media_type=_MEDIA_TYPE)

        return prometheus_metrics

    # -- rendering -----------------------------------------------------------------------
    def render(self, now: float | None = None) -> str:
        """The full exposition text."""
        now = time.time() if now is None else now
        out = MetricsText()
        self.requests.render(out)
        self._engine(out, now)
        render_source(out, self.source, getattr(self.runtime, "demo", None))
        render_persistence(out, self.runtime)
        render_alerts(out, self.pusher)
        return out.text()

    def _engine(self, out: MetricsText, now: float) -> None:
        runtime = self.runtime
        engine = runtime.engine
        if engine is None:
            return
        status = engine.status()
        model = status.get("model", {})
        out.family("fleetcast_model_info", "gauge", "The model being served (value is always 1).")
        out.sample(
            "fleetcast_model_info",
            1,
            {
                "model_version": str(model.get("version") or model.get("model_version") or ""),
                "contract_version": str(model.get("contract_version") or ""),
            },
        )
        servers = status.get("servers", {})
        out.family("fleetcast_servers", "gauge", "Servers by readiness.")
        for state in ("known", "ready", "warming", "stale", "ahead", "unknown"):
            out.sample("fleetcast_servers", int(servers.get(state, 0) or 0), {"state": state})
        out.family(
            "fleetcast_servers_capacity",
            "gauge",
            "Servers the appliance can track (--capacity); new ones beyond it are refused.",
        )
        out.sample("fleetcast_servers_capacity", int(servers.get("capacity", 0) or 0))
        forgot = status.get("forgotten", {})
        out.family("fleetcast_servers_forgotten_total", "counter", "Servers forgotten, by why.")
        for why in ("deleted", "expired"):
            out.sample(
                "fleetcast_servers_forgotten_total", int(forgot.get(why, 0)), {"reason": why}
            )
        lat = status.get("inference_latency_ms", {})
        out.family(
            "fleetcast_inference_latency_seconds",
            "gauge",
            "Inference time of one batched forecast run (last 1000 runs).",
        )
        for stat in ("avg", "p99", "last"):
            out.sample(
                "fleetcast_inference_latency_seconds", _ms_to_s(lat.get(stat)), {"stat": stat}
            )
        out.family(
            "fleetcast_predictions_per_second",
            "gauge",
            "Server forecasts per second since the first run.",
        )
        out.sample(
            "fleetcast_predictions_per_second", float(status.get("predictions_per_second") or 0.0)
        )
        out.family("fleetcast_forecast_runs_total", "counter", "Batched forecast runs.")
        out.sample("fleetcast_forecast_runs_total", int(status.get("forecast_runs") or 0))
        out.family("fleetcast_forecast_errors_total", "counter", "Forecast runs that failed.")
        out.sample("fleetcast_forecast_errors_total", int(runtime.forecast_errors))
        name, bad = "fleetcast_forecast_nonfinite_total", status.get("nonfinite_forecasts")
        out.family(name, "counter", "Servers left out of a forecast set: a NaN/inf forecast.")
        out.sample(name, int(bad or 0))
        ingest = status.get("ingest", {})
        out.family(
            "fleetcast_ingest_samples_total", "counter", "Samples offered to the engine, by result."
        )
        for result in COUNTERS:
            if result in ingest:
                out.sample(
                    "fleetcast_ingest_samples_total", int(ingest[result]), {"result": result}
                )
        current = engine.current()
        # Before the first forecast, the age counts from the end of the warm-up the model
        # needs after a start without state (min_encoder_length steps of data).
        warmup_s = int(model.get("min_encoder_length") or 0) * int(model.get("step_seconds") or 0)
        self._forecasts(out, current, now, warmup_s)

    def _forecasts(self, out: MetricsText, current: Any, now: float, warmup_s: float = 0) -> None:
        # Each family's samples follow its own HELP/TYPE lines (the text format's grouping).
        start = None if current is None else _epoch(current.prediction_time)
        out.family(
            "fleetcast_forecast_data_timestamp_seconds",
            "gauge",
            "End of the data the current forecasts used (epoch seconds).",
        )
        if current is not None:
            out.sample("fleetcast_forecast_data_timestamp_seconds", start)
        out.family(
            "fleetcast_forecast_age_seconds",
            "gauge",
            "Seconds since the end of the data the current forecasts used (never below 0); "
            "before the first forecast, seconds since the start beyond the model's warm-up.",
        )
        if current is None:
            # Present from the start, so an appliance that never forecasts (a source that
            # yields nothing) ages and alerts like one whose forecasts stopped; its first
            # forecast is due once the warm-up is over.
            uptime = time.monotonic() - self.runtime.started_monotonic
            out.sample("fleetcast_forecast_age_seconds", round(max(uptime - warmup_s, 0.0), 3))
            out.family("fleetcast_fleet_servers", "gauge", "Forecast servers by risk level.")
            for level in ("green", "yellow", "red"):
                out.sample("fleetcast_fleet_servers", 0, {"level": level})
            out.family("fleetcast_alerts_active", "gauge", "Active forecast alerts by severity.")
            for severity in ("critical", "warning"):
                out.sample("fleetcast_alerts_active", 0, {"severity": severity})
            return
        # A clock ahead (the demo's simulated one, data up to --max-future-seconds ahead)
        # is not a negative age.
        age = None if start is None else round(max(now - start, 0.0), 3)
        out.sample("fleetcast_forecast_age_seconds", age)
        fleet = current.fleet or {}
        out.family("fleetcast_fleet_servers", "gauge", "Forecast servers by risk level.")
        for level in ("green", "yellow", "red"):
            out.sample("fleetcast_fleet_servers", int(fleet.get(level, 0) or 0), {"level": level})
        out.family("fleetcast_fleet_mean_risk", "gauge", "Mean risk over the forecast servers.")
        out.sample("fleetcast_fleet_mean_risk", fleet.get("mean_risk"))
        out.family(
            "fleetcast_fleet_incident_probability",
            "gauge",
            "Probability that at least one server crosses a threshold, per horizon.",
        )
        for horizon, p in (fleet.get("incident_probability") or {}).items():
            out.sample("fleetcast_fleet_incident_probability", p, {"horizon": horizon})
        # The riskiest, on risk to two decimals then by name: on the unrounded risk, servers
        # near 0 swapped places with every forecast, and their series came and went.
        ranked = sorted(
            current.servers, key=lambda s: (-round(s.get("risk") or 0.0, 2), s["server_name"])
        )
        servers = ranked[: max(self.max_servers, 0)]
        out.family(
            "fleetcast_server_risk", "gauge", "Risk (0-1) of each server over the longest horizon."
        )
        for s in servers:
            out.sample(
                "fleetcast_server_risk",
                s.get("risk"),
                {"server": s["server_name"], "profile": s["profile"]},
            )
        out.family(
            "fleetcast_server_data_timestamp_seconds",
            "gauge",
            "End of the data each server's forecast read: its horizons count from here.",
        )
        for s in servers:
            out.sample(
                "fleetcast_server_data_timestamp_seconds",
                _epoch(s.get("prediction_time")),
                {"server": s["server_name"], "profile": s["profile"]},
            )
        out.family(
            "fleetcast_forecast",
            "gauge",
            "Forecast value per server, metric, horizon and quantile, in the metric's unit.",
        )
        for s in servers:
            base = {"server": s["server_name"], "profile": s["profile"]}
            quantiles = s.get("quantiles") or {}
            for key, label in EXPOSED_QUANTILES:
                by_h = quantiles.get(key) or (s.get("predictions") if key == "p50" else None) or {}
                for horizon, metrics in by_h.items():
                    for metric, value in metrics.items():
                        out.sample(
                            "fleetcast_forecast",
                            value,
                            {**base, "metric": metric, "horizon": horizon, "quantile": label},
                        )
        out.family(
            "fleetcast_exposition_servers_omitted",
            "gauge",
            "Forecast servers left out of the per-server families (max_servers).",
        )
        out.sample(
            "fleetcast_exposition_servers_omitted", max(len(current.servers) - len(servers), 0)
        )
        out.family("fleetcast_alerts_active", "gauge", "Active forecast alerts by severity.")
        counts = {"warning": 0, "critical": 0}
        for alert in current.alerts or ():
            counts[alert.get("severity", "warning")] = (
                counts.get(alert.get("severity", "warning"), 0) + 1
            )
        for severity, n in sorted(counts.items()):
            out.sample("fleetcast_alerts_active", n, {"severity": severity})
