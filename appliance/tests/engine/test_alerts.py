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

    def __init__(self, keep_steps: int = 0) -> None:
        self.since: dict[tuple[str, str, str], str] = {}
        self.seen: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.critical: set[tuple[str, str, str]] = set()
        self.keep_steps = keep_steps
        self.n = 0

    def alerts(self, p: float) -> list[dict[str, Any]]:
        step = np.zeros((1, 4, 96))
        step[0, 0, 50] = p  # cpu, within 8hr only
        by_h = horizon_probabilities(step, list(HORIZONS.values()))
        risk = RiskResult(step, by_h, by_h.max(axis=1), np.full((1, 4), 90.0))
        q = np.full((1, 4, 96, 3), 50.0)
        self.n += 1
        alerts, self.since, self.seen = build_alerts(
            names=["ppml0001"],
            profiles=["ml_compute"],
            quantiles=q,
            levels=[0.1, 0.5, 0.9],
            risk=risk,
            ends=np.array([6_000_000 + self.n]),  # one step of data per forecast
            horizons=HORIZONS,
            step_seconds=300,
            prediction_time=f"2026-09-21T{10 + self.n:02d}:00:00Z",
            since=self.since,
            warning=0.3,
            critical=0.7,
            critical_before=self.critical,
            seen=self.seen,
            keep_steps=self.keep_steps,
        )
        self.critical = {
            (a["server_name"], a["metric"], a["horizon"])
            for a in alerts
            if a["severity"] == "critical"
        }
        return alerts


def _webhook_statuses(probabilities: list[float], keep_steps: int = 0) -> list[tuple[str, str]]:
    """(status, severity) of every change the webhook hears over the forecasts."""
    bodies: list[Any] = []

    def sender(url: str, payload: Any, timeout: float) -> int:
        bodies.append(payload)
        return 200

    pusher = AlertPusher(None, AlertingConfig(webhook_url="http://hook"), sender=sender)
    run = _Run(keep_steps)

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


def test_an_alert_is_kept_firing_through_a_short_dip() -> None:
    """0.5, 0.1, 0.5: resolved and raised again 5 minutes later without the keep-firing
    window; with 3 steps it is one alert, resolved 3 forecasts after the last raising one."""
    dip = [0.5, 0.1, 0.5, 0.1, 0.1, 0.1, 0.1]
    assert _webhook_statuses(dip) == [
        ("firing", "warning"),
        ("resolved", "warning"),
        ("firing", "warning"),
        ("resolved", "warning"),
    ]
    run = _Run(keep_steps=3)
    raised = [bool([a for a in run.alerts(p) if a["horizon"] == "8hr"]) for p in dip]
    assert raised == [True, True, True, True, True, True, False]
    assert _webhook_statuses(dip, keep_steps=3) == [
        ("firing", "warning"),
        ("resolved", "warning"),
    ]


def test_a_kept_alert_shows_its_probability_and_its_since() -> None:
    run = _Run(keep_steps=3)
    (first,) = (a for a in run.alerts(0.5) if a["horizon"] == "8hr")
    (kept,) = (a for a in run.alerts(0.05) if a["horizon"] == "8hr")
    assert kept["probability"] == pytest.approx(0.05)
    assert kept["since"] == first["since"]
    assert kept["severity"] == "warning"


def test_a_critical_alert_is_kept_critical_through_a_short_dip() -> None:
    """0.8, 0.5, 0.8 moved the alert to warning and back; with the window it stays
    critical, and goes to warning 3 forecasts after the last critical one."""
    run = _Run(keep_steps=3)
    severities = []
    for p in [0.8, 0.5, 0.8, 0.5, 0.5, 0.5, 0.5]:
        (a,) = (a for a in run.alerts(p) if a["horizon"] == "8hr")
        severities.append(a["severity"])
    assert severities == ["critical"] * 6 + ["warning"]
    assert _webhook_statuses([0.8, 0.5, 0.8, 0.5], keep_steps=3) == [
        ("firing", "warning"),
        ("firing", "critical"),
    ]


def test_the_keep_firing_window_counts_data_steps_not_forecasts() -> None:
    """A server whose data jumps ahead past the window resolves at its next forecast."""
    run = _Run(keep_steps=3)
    assert run.alerts(0.5)
    run.n += 10  # its next forecast reads data 11 steps later
    assert run.alerts(0.1) == []


def test_no_window_keeps_nothing_even_on_a_forecast_of_the_same_data_step() -> None:
    """After a reload the first forecast reads the same data step again: with 0, a low
    probability kept the alerts (and critical ones critical)."""
    for keep, expected in ((0, []), (3, ["critical"])):
        run = _Run(keep_steps=keep)
        assert [a["severity"] for a in run.alerts(0.9) if a["horizon"] == "8hr"] == ["critical"]
        run.n -= 1  # the same data step again
        assert [a["severity"] for a in run.alerts(0.05) if a["horizon"] == "8hr"] == expected
