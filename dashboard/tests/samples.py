"""Small bodies shaped exactly like docs/API.md, for the tests that need no appliance."""

from __future__ import annotations

from typing import Any

__all__ = ["current_body", "detail_body", "forecast_body"]


def forecast_body(name: str, profile: str, risk: float | None) -> dict[str, Any]:
    """One ServerForecast as docs/API.md shows it."""
    values = {"cpu_pct": 65.2, "mem_pct": 72.1, "disk_io_mb_s": 3.1, "latency_ms": 41.0}
    horizons = {h: dict(values) for h in ("30min", "1hr", "8hr")}
    return {
        "server_name": name,
        "profile": profile,
        "prediction_time": "2026-11-27T10:05:00Z",
        "data_time": "2026-11-27T10:00:00Z",
        "encoder_steps": 288,
        "short_history": False,
        "predictions": horizons,
        "quantiles": {
            "p10": {h: {k: v - 10 for k, v in values.items()} for h in horizons},
            "p50": horizons,
            "p90": {h: {k: v + 10 for k, v in values.items()} for h in horizons},
        },
        "risk": risk,
        # as the appliance decides it (its rule, written out: > 0.7 red, >= 0.3 yellow)
        "risk_level": None
        if risk is None
        else "red"
        if risk > 0.7
        else "yellow"
        if risk >= 0.3
        else "green",
        "risk_by_horizon": {"30min": 0.1, "1hr": 0.2, "8hr": risk},
        "drivers": [
            {"metric": "cpu_pct", "horizon": "8hr", "probability": 0.42, "threshold": 90.0}
        ],
    }


def current_body() -> dict[str, Any]:
    """GET /predictions/current with three servers of two profiles."""
    return {
        "prediction_time": "2026-11-27T10:05:00Z",
        "data_time": "2026-11-27T10:00:00Z",
        "model_version": "tft_model_20261127_091902",
        "servers": [
            forecast_body("ppweb001", "web_api", 0.1),
            forecast_body("ppml0015", "ml_compute", 0.42),
            forecast_body("ppml0002", "ml_compute", 0.9),
        ],
        "fleet": {
            "servers": 3,
            "green": 1,
            "yellow": 1,
            "red": 1,
            "mean_risk": 0.47,
            "incident_probability": {"30min": 0.2, "1hr": 0.3, "8hr": 0.95},
            "by_profile": {
                "ml_compute": {"servers": 2, "green": 0, "yellow": 1, "red": 1, "mean_risk": 0.66},
                "web_api": {"servers": 1, "green": 1, "yellow": 0, "red": 0, "mean_risk": 0.1},
            },
        },
    }


def detail_body() -> dict[str, Any]:
    """GET /predictions/ppml0015 with 96-step curves."""
    body = forecast_body("ppml0015", "ml_compute", 0.42)
    body["curves"] = {
        m: {"p10": [1.0] * 96, "p50": [2.0] * 95 + [None], "p90": [3.0] * 96}
        for m in ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")
    }
    body["step_seconds"] = 300
    body["start"] = "2026-11-27T10:05:00Z"
    return body
