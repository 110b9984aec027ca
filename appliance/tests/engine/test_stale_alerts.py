"""A server left out of the forecast keeps its alerts (docs/RISK.md#alerts): a server whose
data stops while it is forecast to cross a threshold may have crossed it, so its alerts stay,
marked ``stale``, until it is forecast again (the same alert: same ``since``) or forgotten."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

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
    assert [{**a, "stale": False, "left_out": None} for a in kept] == raised  # as before, marked
    assert all(a["stale"] and a["left_out"] == "stale" for a in kept)
    assert all(a["left_out"] is None for a in raised)
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


def test_carried_alerts_say_why_their_server_was_left_out() -> None:
    previous = [
        {"server_name": "a", "severity": "critical"},
        {"server_name": "b", "severity": "warning", "stale": True, "left_out": "stale"},
        {"server_name": "c", "severity": "warning"},
    ]
    carried = carried_alerts(previous, {"b": "ahead", "c": "not_finite", "z": "stale"})
    assert carried == [
        {"server_name": "b", "severity": "warning", "stale": True, "left_out": "ahead"},
        {"server_name": "c", "severity": "warning", "stale": True, "left_out": "not_finite"},
    ]


def test_an_alerting_server_gone_ahead_or_not_finite_keeps_its_alerts_saying_which(
    toy_dir: Path, record_batch
) -> None:
    """Its kept alerts said "no data since" whatever the reason; the pushed summary and
    description now name it (docs/RISK.md#alerts)."""
    engine = _open(toy_dir, capacity=8)  # stale_after_steps 12
    for k in range(30):
        _feed(engine, record_batch, k, _alerting_fleet(k))
    raised = _of(engine.run_forecast().alerts, "ppdb007")
    assert raised
    data_time = raised[0]["data_time"]

    slot = engine._buf.index["ppdb007"]
    engine._buf.values[slot] = np.inf  # what no validated sample can put there
    _feed(engine, record_batch, 30, _alerting_fleet(30))
    kept = _of(engine.run_forecast().alerts, "ppdb007")
    assert [a["left_out"] for a in kept] == ["not_finite"] * len(raised)
    pushed = firing_alert(kept[0], now=START_S, ends_after_s=60)["annotations"]
    assert pushed["summary"].startswith(f"no finite forecast since {data_time}; last forecast: ")
    assert "has had no finite forecast since" in pushed["description"]
    assert pushed["left_out"] == "not_finite"

    # Forgotten and back with a clock 20 steps ahead of the fleet's: a new server, whose
    # alerts (once it has some) are kept, as "ahead", when it runs ahead.
    engine.forget(["ppdb007"])
    for k in range(31, 61):
        _feed(engine, record_batch, k, _alerting_fleet(k))
    raised = _of(engine.run_forecast().alerts, "ppdb007")
    assert raised
    data_time = raised[0]["data_time"]
    _feed(engine, record_batch, 81, {"ppdb007": _alerting_fleet(81)["ppdb007"]})
    _feed(engine, record_batch, 61, _others(61))
    fs = engine.run_forecast()
    assert "ppdb007" not in {s["server_name"] for s in fs.servers}
    assert engine.server_state("ppdb007") == "ahead"
    kept = _of(fs.alerts, "ppdb007")
    assert [a["left_out"] for a in kept] == ["ahead"] * len(raised)
    summary = firing_alert(kept[0], now=START_S, ends_after_s=60)["annotations"]["summary"]
    assert summary.startswith(
        f"clock ahead of the fleet's (last forecast from data of {data_time})"
    )


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
    config = EngineConfig(model_dir=toy_dir, capacity=8)
    new = Engine.restore(config, engine.state_arrays())
    new.run_forecast()
    assert _of(new.alerts(), "ppdb007") == kept  # the state's alerts, carried
    carry_alerts(engine, new)
    assert _of(new.alerts(), "ppdb007") == kept  # each alert once

    # Alerts the old engine raised after the reload took its state: the swap carries them.
    arrays = {k: v for k, v in engine.state_arrays().items() if k != "alerts"}
    new = Engine.restore(config, arrays)
    new.run_forecast()
    assert _of(new.alerts(), "ppdb007") == []
    carry_alerts(engine, new)
    assert _of(new.alerts(), "ppdb007") == kept
    assert {k for k in new._alert_since if k[0] == "ppdb007"} == {
        (a["server_name"], a["metric"], a["horizon"]) for a in kept
    }


def _through_a_snapshot(engine, path: Path) -> dict:
    """``engine.state_arrays()`` written and read back as the state store does (npz)."""
    np.savez(path, **engine.state_arrays())
    with np.load(path, allow_pickle=False) as npz:
        return {k: np.array(npz[k]) for k in npz.files}


def test_a_restart_keeps_the_alerts_of_servers_whose_data_stopped_and_their_since(
    toy_dir: Path, record_batch, tmp_path: Path, caplog
) -> None:
    """A restart lost them: a server still stale after it had no alerts until it reported
    again, and every other alert started afresh (a new ``since``, no hysteresis)."""
    from fleetcast.appliance.engine import Engine, EngineConfig

    config = EngineConfig(model_dir=toy_dir, capacity=8)
    engine = _open(toy_dir, capacity=8)
    for k in range(30):
        _feed(engine, record_batch, k, _alerting_fleet(k))
    raised = _of(engine.run_forecast().alerts, "ppdb007")
    assert raised

    # Restarted while it is forecast: its alerts keep their first `since`.
    again = Engine.restore(config, _through_a_snapshot(engine, tmp_path / "a.npz"))
    assert again.alerts() == []  # nothing served before its own first forecast
    _feed(again, record_batch, 30, _alerting_fleet(30))
    fs = again.run_forecast()
    assert {a["since"] for a in _of(fs.alerts, "ppdb007")} == {a["since"] for a in raised}
    assert {a["since"] for a in raised} != {fs.prediction_time}

    # Its data stops; restarted while stale: the same kept alerts, before and after.
    for k in range(31, 47):
        _feed(engine, record_batch, k, _others(k))
        engine.run_forecast()
    kept = _of(engine.alerts(), "ppdb007")
    assert kept
    assert all(a["left_out"] == "stale" for a in kept)
    arrays = _through_a_snapshot(engine, tmp_path / "b.npz")
    new = Engine.restore(config, arrays)
    _feed(new, record_batch, 47, _others(47))
    assert _of(new.run_forecast().alerts, "ppdb007") == kept

    # Forgotten before the first forecast after the restart (the log replay does that),
    # then back at once under its name: a new server, warming, with none of the old alerts
    # or their hysteresis.
    gone = Engine.restore(config, arrays)
    gone.forget(["ppdb007"])
    _feed(gone, record_batch, 47, _alerting_fleet(47))
    assert gone.server_state("ppdb007") == "warming"
    assert _of(gone.run_forecast().alerts, "ppdb007") == []
    assert not [k for k in gone._alert_since if k[0] == "ppdb007"]

    # A snapshot from before alerts were kept, or one whose alerts do not read: none.
    older = {k: v for k, v in arrays.items() if k != "alerts"}
    assert _of(Engine.restore(config, older).alerts(), "ppdb007") == []
    half = [{k: v for k, v in a.items() if k != "probability"} for a in kept]
    for raw in (b'{"not": "a list"}', json.dumps(half).encode()):
        caplog.clear()
        damaged = {**arrays, "alerts": np.frombuffer(raw, dtype=np.uint8)}
        with caplog.at_level("WARNING"):
            broken = Engine.restore(config, damaged)
        assert "the snapshot's alerts do not read (" in caplog.text
        _feed(broken, record_batch, 47, _others(47))
        assert _of(broken.run_forecast().alerts, "ppdb007") == []
    assert "Object missing required field `probability`" in caplog.text


def test_a_server_whose_window_is_too_short_keeps_its_alerts_as_warming(
    toy_dir: Path, record_batch
) -> None:
    """After a reload to a model that reads more history, a server may be left out for a
    window too short: its alerts said "no data since" although its data never stopped."""
    from fleetcast.appliance.engine_state import keep_alerts

    engine = _open(toy_dir, capacity=8)
    for k in range(30):
        _feed(engine, record_batch, k, _alerting_fleet(k))
    fs = engine.run_forecast()
    _feed(engine, record_batch, 30, {"ppweb999": [30, 50, 5, 20]})
    assert engine.server_state("ppweb999") == "warming"
    (alert,) = _of(fs.alerts, "ppdb007")[:1]
    earlier = {**alert, "server_name": "ppweb999", "profile": "web_api"}
    with engine._lock:
        keep_alerts(engine, [earlier], {s["server_name"] for s in fs.servers})
    (kept,) = _of(engine.alerts(), "ppweb999")
    assert (kept["stale"], kept["left_out"]) == (True, "warming")
    summary = firing_alert(kept, now=START_S, ends_after_s=60)["annotations"]["summary"]
    assert summary.startswith("warming up: too little history to forecast")
