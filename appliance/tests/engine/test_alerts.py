"""Alerts from one forecast's risk: hysteresis at the warning and critical levels."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from fleetcast.appliance.alerting import AlertingConfig, AlertPusher
from fleetcast.appliance.alerts import build_alerts
from fleetcast.appliance.risk import RiskResult, horizon_probabilities

HORIZONS = {"30min": 6, "1hr": 12, "8hr": 96}


class _Run:
    """Consecutive forecasts of one server whose cpu probability is given per forecast."""

    def __init__(self) -> None:
        self.since: dict[tuple[str, str, str], str] = {}
        self.critical: set[tuple[str, str, str]] = set()
        self.n = 0

    def alerts(self, p: float) -> list[dict[str, Any]]:
        step = np.zeros((1, 4, 96))
        step[0, 0, 50] = p  # cpu, within 8hr only
        by_h = horizon_probabilities(step, list(HORIZONS.values()))
        risk = RiskResult(step, by_h, by_h.max(axis=1), np.full((1, 4), 90.0))
        q = np.full((1, 4, 96, 3), 50.0)
        self.n += 1
        alerts, self.since = build_alerts(
            names=["ppml0001"],
            profiles=["ml_compute"],
            quantiles=q,
            levels=[0.1, 0.5, 0.9],
            risk=risk,
            ends=np.array([6_000_000]),
            horizons=HORIZONS,
            step_seconds=300,
            prediction_time=f"2026-09-21T{10 + self.n:02d}:00:00Z",
            since=self.since,
            warning=0.3,
            critical=0.7,
            critical_before=self.critical,
        )
        self.critical = {
            (a["server_name"], a["metric"], a["horizon"])
            for a in alerts
            if a["severity"] == "critical"
        }
        return alerts


def _webhook_statuses(probabilities: list[float]) -> list[tuple[str, str]]:
    """(status, severity) of every change the webhook hears over the forecasts."""
    bodies: list[Any] = []

    def sender(url: str, payload: Any, timeout: float) -> int:
        bodies.append(payload)
        return 200

    pusher = AlertPusher(None, AlertingConfig(webhook_url="http://hook"), sender=sender)
    run = _Run()

    async def forecasts() -> None:
        for p in probabilities:
            await pusher.push(run.alerts(p))

    asyncio.run(forecasts())
    return [(a["status"], a["labels"]["severity"]) for b in bodies for a in b["alerts"]]


def test_a_probability_hovering_at_the_warning_level_is_one_alert() -> None:
    """0.31, 0.29, 0.31, ... fired and resolved the alert with every forecast (5 min)."""
    assert _webhook_statuses([0.31, 0.29, 0.31, 0.28, 0.3, 0.2]) == [
        ("firing", "warning"),
        ("resolved", "warning"),  # only once it fell clearly below (0.2 < 0.25)
    ]


def test_a_probability_hovering_at_the_critical_level_keeps_its_severity() -> None:
    """Severity is part of the alert's identity: 0.72, 0.68, 0.72 resolved the critical
    alert and fired a warning one, then the other way round, with every forecast. A critical
    alert is its warning and critical pair: only the critical one resolves, once."""
    assert _webhook_statuses([0.72, 0.68, 0.71, 0.69, 0.6]) == [
        ("firing", "warning"),
        ("firing", "critical"),
        ("resolved", "critical"),
    ]


def test_a_move_between_the_levels_fires_or_resolves_the_critical_alert_only() -> None:
    assert _webhook_statuses([0.5, 0.8, 0.5, 0.8, 0.1]) == [
        ("firing", "warning"),
        ("firing", "critical"),
        ("resolved", "critical"),
        ("firing", "critical"),
        ("resolved", "warning"),
        ("resolved", "critical"),
    ]


def test_a_new_alert_still_needs_the_warning_level() -> None:
    run = _Run()
    assert run.alerts(0.29) == []
    assert run.alerts(0.26) == []
    (alert,) = (a for a in run.alerts(0.3) if a["horizon"] == "8hr")
    assert alert["severity"] == "warning"
    assert alert["since"] == "2026-09-21T13:00:00Z"
    (held,) = (a for a in run.alerts(0.26) if a["horizon"] == "8hr")
    assert held["probability"] == pytest.approx(0.26)
    assert held["since"] == "2026-09-21T13:00:00Z"  # the same unbroken run
    assert run.alerts(0.69) != []
    assert all(a["severity"] == "warning" for a in run.alerts(0.69))  # never critical yet


def test_severity_is_decided_before_the_probability_is_rounded() -> None:
    """0.70003 is shown as 0.7 but is above the critical level, as the server's red is;
    it was a warning while the comparison read the rounded value."""
    run = _Run()
    (alert,) = (a for a in run.alerts(0.70003) if a["horizon"] == "8hr")
    assert alert["probability"] == 0.7
    assert alert["severity"] == "critical"
    (exact,) = (a for a in _Run().alerts(0.7) if a["horizon"] == "8hr")
    assert exact["severity"] == "warning"  # at the level is not above it
