"""``GET /metrics`` families beside the engine's: the data source, the state directory and
the alert deliveries (docs/PROMETHEUS.md#exposed-metrics). Split from
:mod:`fleetcast.appliance.exposition`, which renders them on each scrape."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetcast.appliance.alerting import AlertPusher
    from fleetcast.appliance.exposition import MetricsText
    from fleetcast.appliance.runtime import Runtime

__all__ = ["render_alerts", "render_persistence", "render_source"]


def render_source(out: MetricsText, source: Any, demo: Any) -> None:
    """``fleetcast_source_*``: the data source's health and samples."""
    if source is not None:
        status = source.source_status()
    elif demo is not None:
        status = demo.source_status()
    else:
        status = {"kind": "push", "healthy": True}  # POST /metrics: nothing to be down
    kind = str(status.get("kind", "push"))
    out.family("fleetcast_source_up", "gauge", "1 when the data source is healthy.")
    out.sample("fleetcast_source_up", 1 if status.get("healthy") else 0, {"kind": kind})
    if source is None:
        return
    out.family(
        "fleetcast_source_last_success_timestamp_seconds",
        "gauge",
        "When the source last completed a cycle (epoch seconds).",
    )
    out.sample(
        "fleetcast_source_last_success_timestamp_seconds", source.last_success, {"kind": kind}
    )
    out.family("fleetcast_source_consecutive_failures", "gauge", "Failed source cycles in a row.")
    out.sample(
        "fleetcast_source_consecutive_failures",
        int(status.get("consecutive_failures", 0)),
        {"kind": kind},
    )
    out.family(
        "fleetcast_source_samples_total", "counter", "Samples the source offered, by result."
    )
    out.sample(
        "fleetcast_source_samples_total",
        int(source.records),
        {"kind": kind, "result": "accepted"},
    )
    out.sample(
        "fleetcast_source_samples_total",
        int(source.rejected),
        {"kind": kind, "result": "rejected"},
    )


def render_persistence(out: MetricsText, runtime: Runtime) -> None:
    """``fleetcast_persistence_*``: whether the state directory takes the sample log, its
    failed writes, the log's size and the last snapshot. A full disk is the likeliest
    failure of an edge box; /health stays "ok" through it (reads are served), so these are
    what an alert rule watches (docs/prometheus/fleetcast-alert-rules.yml)."""
    store = getattr(runtime, "store", None)
    if store is None:
        return
    out.family(
        "fleetcast_persistence_writable",
        "gauge",
        "1 while the state directory takes the sample log; 0 from a failed write until one "
        "succeeds (POST /metrics answers 503 meanwhile).",
    )
    out.sample("fleetcast_persistence_writable", 1 if store.writable else 0)
    out.family(
        "fleetcast_persistence_write_errors_total",
        "counter",
        "Failed writes of the sample log since the start (each a 503, nothing acknowledged).",
    )
    out.sample("fleetcast_persistence_write_errors_total", int(store.write_errors))
    out.family(
        "fleetcast_persistence_log_bytes",
        "gauge",
        "Bytes of the sample log since the last snapshot (it grows while snapshots fail).",
    )
    out.sample("fleetcast_persistence_log_bytes", int(store.log_bytes))
    out.family(
        "fleetcast_persistence_last_snapshot_timestamp_seconds",
        "gauge",
        "When the last snapshot was written (epoch seconds); absent before the first.",
    )
    if store.last_snapshot_time is not None:  # a NaN would never compare older than an hour
        out.sample(
            "fleetcast_persistence_last_snapshot_timestamp_seconds", store.last_snapshot_time
        )
    out.family(
        "process_start_time_seconds",
        "gauge",
        "When the appliance's process started (epoch seconds).",
    )
    started = time.time() - (time.monotonic() - runtime.started_monotonic)
    out.sample("process_start_time_seconds", round(started, 3))


def render_alerts(out: MetricsText, pusher: AlertPusher | None) -> None:
    """``fleetcast_alert_deliveries_total`` by receiver and result."""
    if pusher is None:
        return
    out.family(
        "fleetcast_alert_deliveries_total",
        "counter",
        "Alert deliveries by receiver and result.",
    )
    for r in pusher.receivers:
        out.sample(
            "fleetcast_alert_deliveries_total", r.sent, {"receiver": r.name, "result": "sent"}
        )
        out.sample(
            "fleetcast_alert_deliveries_total",
            r.failed,
            {"receiver": r.name, "result": "failed"},
        )
