"""Alertmanager alerts and webhook bodies of the engine's alerts (docs/PROMETHEUS.md#alerts).

Pure functions of one alert dict (docs/API.md ``/alerts/active`` item) and the time; the
delivery, retries and state are :mod:`fleetcast.appliance.alerting`'s.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fleetcast.appliance.alerts import LEFT_OUT
from fleetcast.contract.schema import METRIC_UNITS

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "ALERTNAME",
    "STALE_ALERTNAME",
    "alert_labels",
    "alertmanager_alerts",
    "firing_alert",
    "forecasts_stale_alert",
    "rfc3339",
    "webhook_body",
]

ALERTNAME = "FleetcastForecastRisk"
"""The ``alertname`` label of every forecast alert."""

STALE_ALERTNAME = "FleetcastForecastsStale"
"""The ``alertname`` of the appliance's own alert that its forecasts stopped (the same name
as the Prometheus rule's, docs/prometheus/fleetcast-alert-rules.yml)."""


def rfc3339(epoch_s: float) -> str:
    """``2026-11-27T10:00:00.000Z`` (Alertmanager's time format) of epoch seconds."""
    dt = datetime.fromtimestamp(epoch_s, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _epoch(iso_time: str | None, default: float) -> float:
    if not iso_time:
        return default
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def alert_labels(alert: Mapping[str, Any]) -> dict[str, str]:
    """Alertmanager labels of one engine alert (docs/API.md ``/alerts/active`` item)."""
    return {
        "alertname": ALERTNAME,
        "server": str(alert["server_name"]),
        "profile": str(alert["profile"]),
        "metric": str(alert["metric"]),
        "horizon": str(alert["horizon"]),
        "severity": str(alert["severity"]),
    }


def firing_alert(
    alert: Mapping[str, Any], now: float, ends_after_s: float, generator_url: str | None = None
) -> dict[str, Any]:
    """One firing Alertmanager alert (postable ``/api/v2/alerts`` item) of an engine alert."""
    metric = str(alert["metric"])
    unit = METRIC_UNITS.get(metric, "")
    value = float(alert["predicted_value"])
    threshold = float(alert["threshold"])
    prob = float(alert["probability"])
    summary = (
        f"{alert['server_name']}: {metric} forecast to reach {value:g} {unit} "
        f"(threshold {threshold:g}) within {alert['horizon']}, probability {prob:.0%}"
    )
    annotations = {
        "summary": summary,
        "description": (
            f"fleetcast predicts {metric} of {alert['server_name']} ({alert['profile']}) "
            f"exceeds {threshold:g} {unit} with probability {prob:.2f} within {alert['horizon']}; "
            f"median forecast {value:g}, p90 {float(alert.get('predicted_p90', value)):g}"
            + (f" at {alert['at']}" if alert.get("at") else "")
            + "."
        ),
        "predicted_value": f"{value:g}",
        "predicted_p90": f"{float(alert.get('predicted_p90', value)):g}",
        "threshold": f"{threshold:g}",
        "probability": f"{prob:.4f}",
        "unit": unit,
    }
    if alert.get("at"):
        annotations["at"] = str(alert["at"])
    if alert.get("data_time"):
        annotations["data_time"] = str(alert["data_time"])
    if alert.get("stale"):
        # The same labels (the same alert, not a new one); what it says is now old news.
        since = alert.get("data_time") or "its last forecast"
        reason = alert.get("left_out") or "stale"
        lead, why = (text.format(since=since) for text in LEFT_OUT.get(reason, LEFT_OUT["stale"]))
        annotations["summary"] = f"{lead}; last forecast: {summary}"
        annotations["description"] += (
            f" {alert['server_name']} {why}, so it is not forecast any more: the alert stays "
            "until it is forecast again or forgotten (docs/RISK.md#alerts)."
        )
        annotations["stale"] = "true"
        annotations["left_out"] = reason
    out: dict[str, Any] = {
        "labels": alert_labels(alert),
        "annotations": annotations,
        "startsAt": rfc3339(min(_epoch(alert.get("since"), now), now)),
        "endsAt": rfc3339(now + ends_after_s),
    }
    if generator_url:
        # One path segment, as docs/API.md asks of a name holding '/', '?' or '#', and of a
        # name of dots only (a bare '..' is the folder above).
        name = quote(str(alert["server_name"]), safe="")
        if not name.strip("."):
            name = name.replace(".", "%2E")
        out["generatorURL"] = f"{generator_url.rstrip('/')}/predictions/{name}"
    return out


def alertmanager_alerts(
    alert: Mapping[str, Any], now: float, ends_after_s: float, generator_url: str | None = None
) -> list[dict[str, Any]]:
    """The firing Alertmanager alerts of one engine alert: a warning one, and while the
    alert is critical a critical one beside it, as a pair of Prometheus rules with two
    levels fires them (docs/PROMETHEUS.md#alerts).

    The warning alert fires for as long as the engine alert is raised, whatever its
    severity, so a change of severity neither resolves it nor fires it anew: going critical
    fires the critical alert, coming back resolves it. Alertmanager's inhibit rule
    (docs/prometheus/alertmanager.yml) mutes the warning while its critical fires.
    """
    items = [firing_alert({**alert, "severity": "warning"}, now, ends_after_s, generator_url)]
    if alert["severity"] == "critical":
        items.append(firing_alert(alert, now, ends_after_s, generator_url))
    return items


def webhook_body(alerts: Iterable[Mapping[str, Any]], statuses: Iterable[str]) -> dict[str, Any]:
    """The generic webhook's JSON body for Alertmanager-shaped ``alerts`` with their statuses."""
    items = [{"status": s, **a} for a, s in zip(alerts, statuses, strict=True)]
    overall = "firing" if any(i["status"] == "firing" for i in items) else "resolved"
    return {"version": "1", "source": "fleetcast", "status": overall, "alerts": items}


def forecasts_stale_alert(
    silent_s: float, after_s: float, now: float, ends_after_s: float, data_time: str | None
) -> dict[str, Any]:
    """The firing alert that no forecast was made for ``silent_s`` seconds (over
    ``after_s``): every server's data stopped, or the source did. The forecast alerts stay
    firing as the last forecast left them (docs/RISK.md#alerts); this one says why nothing
    changes."""
    minutes = silent_s / 60
    data = f" from data up to {data_time}" if data_time else ""
    return {
        "labels": {"alertname": STALE_ALERTNAME, "severity": "warning"},
        "annotations": {
            "summary": f"fleetcast has made no forecast for {minutes:.0f} min: its metrics "
            "stopped arriving, or its forecasts fail",
            "description": f"The newest forecast is {minutes:.0f} min old{data}. Its alerts "
            "stay as it left them until a forecast is made again. Check the source and the "
            "servers' states (GET /status: source, servers.stale, servers.warming), the "
            "forecast errors (forecast_errors, the log) and what sends the metrics "
            "(docs/PROMETHEUS.md#alerts).",
        },
        "startsAt": rfc3339(now - silent_s + after_s),
        "endsAt": rfc3339(now + ends_after_s),
    }
