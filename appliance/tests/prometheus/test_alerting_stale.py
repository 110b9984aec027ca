"""The appliance's own alert when its forecasts stop (docs/PROMETHEUS.md#alerts): with no new
forecast set, the forecast alerts stay firing as the last set left them, so without it a
receiver never hears that nothing is being forecast any more."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from fleetcast.appliance.alert_format import STALE_ALERTNAME
from fleetcast.appliance.alerting import AlertingConfig, AlertPusher

from .test_alerting import _alert


def test_forecasts_that_stop_fire_an_alert_that_the_next_forecast_resolves() -> None:
    bodies: list[Any] = []
    forecast = SimpleNamespace(data_time="2026-09-21T13:45:00Z")
    engine = SimpleNamespace(current=lambda: forecast, alerts=lambda: [_alert("db-7")])
    forecast.servers = [{"server_name": "db-7"}]
    runtime: Any = SimpleNamespace(engine=engine, current_changes=1, forecast_sets=1)

    def sender(url: str, payload: Any, timeout: float) -> int:
        bodies.append(payload)
        return 200

    cfg = AlertingConfig(webhook_url="http://hook", resend_s=0.05, poll_s=0.01, stale_after_s=0.3)
    pusher = AlertPusher(runtime, cfg, sender=sender)

    def names(body: dict[str, Any]) -> list[tuple[str, str]]:
        return [(a["status"], a["labels"]["alertname"]) for a in body["alerts"]]

    async def wait_for(count: int) -> None:
        for _ in range(500):
            if len(bodies) >= count:
                return
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        await pusher.start()
        await wait_for(2)  # the forecast alert, then (0.3 s without a new set) the stale one
        runtime.current_changes += 1  # a forget: the served set changes, no forecast is made
        await asyncio.sleep(0.2)  # several pushes: it resolved the stale alert, wrongly
        assert len(bodies) == 2
        runtime.forecast_sets += 1  # a new forecast set: data arrives again
        runtime.current_changes += 1
        await wait_for(3)
        await pusher.stop()

    asyncio.run(scenario())
    assert names(bodies[0]) == [("firing", "FleetcastForecastRisk")]
    assert names(bodies[1]) == [("firing", STALE_ALERTNAME)]  # the webhook gets changes only
    stale = bodies[1]["alerts"][0]
    assert stale["labels"]["severity"] == "warning"
    assert "made no forecast for" in stale["annotations"]["summary"]
    assert "or its forecasts fail" in stale["annotations"]["summary"]
    assert "from data up to 2026-09-21T13:45:00Z" in stale["annotations"]["description"]
    assert names(bodies[2]) == [("resolved", STALE_ALERTNAME)]


def test_an_empty_fleet_is_not_a_stale_one() -> None:
    # Every server forgotten: the served set holds none, and there is nothing to forecast.
    from fleetcast.appliance.alerting import AlertPusher

    pusher = AlertPusher(None, AlertingConfig(stale_after_s=1.0))
    silent = SimpleNamespace(data_time=None, servers=[{"server_name": "a"}])
    assert [a["labels"]["alertname"] for a in pusher._own(5.0, silent)] == [STALE_ALERTNAME]
    assert pusher._own(0.5, silent) == []
    assert pusher._own(5.0, SimpleNamespace(data_time=None, servers=[])) == []
