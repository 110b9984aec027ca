"""A server left out of the forecast keeps its alerts (docs/RISK.md#alerts): a server whose
data stops while it is forecast to cross a threshold may have crossed it, so its alerts stay,
marked ``stale``, until it is forecast again (the same alert: same ``since``) or forgotten."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcast.appliance.alerting import firing_alert
from fleetcast.appliance.alerts import carried_alerts

from .test_forget import _alerting_fleet, _feed, _open

if TYPE_CHECKING:
    from pathlib import Path


def _others(k: int) -> dict[str, list[float]]:
    return {n: v for n, v in _alerting_fleet(k).items() if n != "ppdb007"}


def _of(alerts: list[dict], name: str) -> list[dict]:
    return [a for a in alerts if a["server_name"] == name]


def test_a_server_whose_data_stops_keeps_its_alerts_until_it_is_forgotten(
    toy_dir: Path, record_batch
) -> None:
    engine = _open(toy_dir, capacity=8)  # stale_after_steps 12
    for k in range(30):
        _feed(engine, record_batch, k, _alerting_fleet(k))
    fs = engine.run_forecast()
    raised = _of(fs.alerts, "ppdb007")
    assert raised
    assert not any(a["stale"] for a in raised)
    (served,) = [s for s in fs.servers if s["server_name"] == "ppdb007"]
    assert {a["data_time"] for a in raised} == {served["data_time"]}

    # Its data stops; the fleet goes on. Once it is stale it is not forecast, and its
    # alerts were resolved (AlertPusher sent them as resolved): now they stay, marked.
    for k in range(30, 46):
        _feed(engine, record_batch, k, _others(k))
        fs = engine.run_forecast()
    assert engine.status()["servers"]["stale"] == 1
    assert "ppdb007" not in {s["server_name"] for s in fs.servers}
    kept = _of(engine.alerts(), "ppdb007")
    assert [{**a, "stale": False} for a in kept] == raised  # as last forecast, marked
    assert all(a["stale"] for a in kept)
    assert (fs.fleet["servers"], fs.fleet["red"]) == (2, 0)  # counted in no level
    pushed = firing_alert(kept[0], now=START_S, ends_after_s=60)
    assert pushed["labels"] == firing_alert(raised[0], now=START_S, ends_after_s=60)["labels"]
    assert pushed["annotations"]["summary"].startswith(f"no data since {served['data_time']}")
    assert pushed["annotations"]["stale"] == "true"

    # It comes back: forecast again, the same alert (its first time kept), not stale.
    for k in (46, 47):
        _feed(engine, record_batch, k, _alerting_fleet(k))
    fs = engine.run_forecast()
    back = _of(fs.alerts, "ppdb007")
    assert back
    assert not any(a["stale"] for a in back)
    assert {a["since"] for a in back} == {a["since"] for a in raised}

    # Stale again, then forgotten: its alerts leave the served set at once.
    for k in range(48, 62):
        _feed(engine, record_batch, k, _others(k))
        engine.run_forecast()
    assert all(a["stale"] for a in _of(engine.alerts(), "ppdb007"))
    engine.forget(["ppdb007"])
    assert _of(engine.alerts(), "ppdb007") == []
    _feed(engine, record_batch, 62, _others(62))
    assert _of(engine.run_forecast().alerts, "ppdb007") == []


def test_only_known_servers_left_out_of_the_forecast_are_carried() -> None:
    previous = [
        {"server_name": "a", "severity": "critical"},
        {"server_name": "b", "severity": "warning", "stale": True},
        {"server_name": "c", "severity": "warning"},
    ]
    carried = carried_alerts(previous, forecast={"a"}, known={"a", "b"})
    assert carried == [{"server_name": "b", "severity": "warning", "stale": True}]


START_S = 1_795_000_000.0


def test_a_model_reload_keeps_the_alerts_of_servers_whose_data_stopped(
    toy_dir: Path, record_batch
) -> None:
    # The reloaded model's first forecast leaves the stale server out, as the old one did;
    # its alerts were resolved by every `systemctl reload`, and never fired again.
    from fleetcast.appliance.engine import Engine, EngineConfig
    from fleetcast.appliance.engine_state import carry_alerts

    engine = _open(toy_dir, capacity=8)
    for k in range(30):
        _feed(engine, record_batch, k, _alerting_fleet(k))
    engine.run_forecast()
    for k in range(30, 46):
        _feed(engine, record_batch, k, _others(k))
        engine.run_forecast()
    kept = _of(engine.alerts(), "ppdb007")
    assert kept
    new = Engine.restore(EngineConfig(model_dir=toy_dir, capacity=8), engine.state_arrays())
    new.run_forecast()
    assert _of(new.alerts(), "ppdb007") == []  # what a reload served before
    carry_alerts(engine, new)
    assert _of(new.alerts(), "ppdb007") == kept
    assert {k for k in new._alert_since if k[0] == "ppdb007"} == {
        (a["server_name"], a["metric"], a["horizon"]) for a in kept
    }
