"""Forgetting servers in the engine (docs/OPERATIONS.md#forgetting-servers): the slot is
freed and reused, the served set, alerts and histories drop the server at once, a forget
during a forecast leaves it out, snapshots keep free slots, ``forget_after`` runs on data
time, and a reused slot forecasts exactly like a fresh engine's (step cache included)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from fleetcast.appliance.engine import Engine, EngineConfig, Forgotten
from fleetcast.contract.schema import METRIC_COLUMNS, VALID_STATES
from fleetcast.contract.simulate import FleetSimulator

if TYPE_CHECKING:
    from pathlib import Path

STEP = 300
START = 1_795_000_000 - 1_795_000_000 % STEP
ROW = [20.0, 40.0, 2.0, 30.0]


def _open(model_dir: Path, **kw) -> Engine:
    return Engine.open(EngineConfig(model_dir=model_dir, **kw))


def _feed(engine: Engine, record_batch, k: int, rows: dict[str, list[float]]) -> None:
    """One sample per named server at step ``k`` (all accepted)."""
    batch = record_batch(
        [START + k * STEP] * len(rows), list(rows), list(rows.values()), [None] * len(rows)
    )
    assert engine.ingest(batch).rejected == []


def _alerting_fleet(k: int) -> dict[str, list[float]]:
    """ppdb007 (a database at 400 ms: alerts), ppweb007 and ppdb008 (green)."""
    lat = 400.0 + k % 3
    return {"ppdb007": [30, 50, 5, lat], "ppweb007": [30, 50, 5, lat], "ppdb008": [30, 50, 5, 20]}


def test_a_forgotten_servers_slot_takes_the_next_new_server(toy_dir: Path, record_batch) -> None:
    engine = _open(toy_dir, capacity=2)
    for k in range(3):
        _feed(engine, record_batch, k, {"ppweb001": ROW, "ppdb001": ROW})
    full = engine.ingest(record_batch([START + 3 * STEP], ["ppml0001"], [ROW], [None]))
    assert full.accepted == 0
    assert "capacity of 2 servers" in full.rejected[0][1]

    gone = engine.forget(["ppweb001", "no-such-server", "ppweb001"])
    assert gone == [Forgotten(server_name="ppweb001", profile="web_api", steps_dropped=3)]
    assert engine.forget(["ppweb001"]) == []  # forgotten already: nothing to do
    assert not engine.knows("ppweb001")
    assert (
        engine.ingest(record_batch([START + 3 * STEP], ["ppml0001"], [ROW], [None])).accepted == 1
    )
    assert engine.state_arrays()["buf_names"].tolist() == ["ppml0001", "ppdb001"]  # slot 0 again
    status = engine.status()
    assert (status["servers"]["known"], status["servers"]["capacity"]) == (2, 2)
    assert status["servers"]["warming"] == 2
    assert status["forgotten"] == {"deleted": 1, "expired": 0, "forget_after_s": None}


def test_forgetting_drops_the_served_forecast_alerts_and_histories(
    toy_dir: Path, record_batch
) -> None:
    engine = _open(toy_dir, capacity=8)
    without = _open(toy_dir, capacity=8)  # the same fleet, never with ppdb007
    for k in range(30):
        rows = _alerting_fleet(k)
        _feed(engine, record_batch, k, rows)
        _feed(without, record_batch, k, {n: v for n, v in rows.items() if n != "ppdb007"})
    fs = engine.run_forecast()
    assert {a["server_name"] for a in fs.alerts} == {"ppdb007"}
    assert (fs.fleet["servers"], fs.fleet["red"]) == (3, 1)
    trend = engine.fleet_history(10)
    assert engine.profile_history("database", 3)["servers"] == 2

    (gone,) = engine.forget(["ppdb007"])
    ring = engine.history_steps + 2  # its whole ring: 30 steps sent, the newest kept
    assert (gone.profile, gone.steps_dropped) == ("database", ring)
    # The served set is the forecast of a fleet that never had it, at once.
    current, fresh = engine.current(), without.run_forecast()
    assert current.servers == fresh.servers
    assert current.fleet == fresh.fleet
    assert (current.fleet["servers"], current.fleet["red"]) == (2, 0)
    assert engine.alerts() == current.alerts == []
    assert engine.server_forecast("ppdb007") is None
    assert engine.server_forecast("ppweb007") == without.server_forecast("ppweb007")
    assert engine.history("ppdb007", 5) is None
    database = engine.profile_history("database", 3)
    assert (database["servers"], database["reporting"]) == (1, [1, 1, 1])
    assert database["latency_ms"] == [20.0, 20.0, 20.0]  # ppdb008's alone
    assert engine.fleet_history(10) == trend  # the recorded point was the fleet as it was
    assert engine.status()["servers"]["known"] == 2

    # The next forecast counts two servers; the same name later is a new server.
    rows = _alerting_fleet(30)
    _feed(engine, record_batch, 30, {n: v for n, v in rows.items() if n != "ppdb007"})
    engine.run_forecast()
    assert engine.fleet_history(10)["red"] == [1, 0]
    _feed(engine, record_batch, 30, {"ppdb007": rows["ppdb007"]})
    again = engine.history("ppdb007", 3)
    assert again["latency_ms"] == [None, None, 400.0]
    assert again["risk"] == [None, None, None]
    assert engine.status()["forgotten"]["deleted"] == 1


def test_free_slots_never_move_the_fleets_steps(toy_dir: Path, record_batch) -> None:
    """Most slots free: the fleet's reference and closed step are the servers' alone, so a
    forecast still catches up with the data and the next step still triggers one."""
    engine = _open(toy_dir, capacity=8)
    names = ["ppweb001", "ppweb002", "ppweb003", "ppweb004"]
    for k in range(30):
        _feed(engine, record_batch, k, dict.fromkeys(names, ROW))
    engine.forget(names[:3])
    assert engine.run_forecast().data_time == engine.status()["data_time"]
    assert not engine.forecast_due()
    r = engine.ingest(record_batch([START + 30 * STEP], [names[3]], [ROW], [None]))
    assert r.closed_steps == 1
    assert engine.forecast_due()
    assert engine.status()["servers"]["ready"] == 1
    engine.run_forecast()
    assert not engine.forecast_due()


def test_a_server_forgotten_while_the_model_runs_is_left_out(
    toy_dir: Path, record_batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _open(toy_dir, capacity=8)
    for k in range(30):
        _feed(engine, record_batch, k, _alerting_fleet(k))
    infer = engine._infer

    def forget_meanwhile(*args, **kwargs):
        q = infer(*args, **kwargs)
        engine.forget(["ppdb007"])  # another thread's DELETE, while ONNX Runtime ran
        return q

    monkeypatch.setattr(engine, "_infer", forget_meanwhile)
    fs = engine.run_forecast()
    assert {s["server_name"] for s in fs.servers} == {"ppweb007", "ppdb008"}
    assert (fs.alerts, fs.fleet["servers"], fs.fleet["red"]) == ([], 2, 0)
    assert engine.current() is fs
    assert engine._alert_since == {}
    # Its risk was not recorded into the slot the next new server takes.
    _feed(engine, record_batch, 28, {"ppml0001": ROW})
    assert engine.history("ppml0001", 1)["risk"] == [None]


def test_snapshots_keep_free_slots_and_restore_them(toy_dir: Path, record_batch) -> None:
    engine = _open(toy_dir, capacity=8)
    sim = FleetSimulator(n_servers=5, seed=3, start=START)
    names = list(sim.fleet.names)
    data = sim.run(40)
    for k, ts in enumerate(data["timestamp"].tolist()):
        metrics = np.column_stack([data[m][k] for m in METRIC_COLUMNS])
        states = [VALID_STATES[s] for s in data["state"][k].tolist()]
        assert engine.ingest(record_batch(np.full(5, ts), names, metrics, states)).rejected == []
    engine.run_forecast()
    engine.forget([names[1], names[3]])
    arrays = engine.state_arrays()
    histories = {name: engine.history(name, 30) for name in names}
    assert arrays["buf_names"].tolist() == [names[0], "", names[2], "", names[4]]
    assert arrays["profile"].tolist()[1::2] == [-1, -1]
    assert all(a.dtype != object for a in arrays.values())

    restored = Engine.restore(EngineConfig(model_dir=toy_dir, capacity=8), arrays)
    assert restored.status()["servers"]["known"] == 3
    assert restored.run_forecast().servers == engine.run_forecast().servers
    assert {name: restored.history(name, 30) for name in names} == histories
    assert histories[names[1]] is None
    # New servers fill the free slots lowest first, in both.
    newcomers = {"newbox-a": ROW, "newbox-b": ROW, "newbox-c": ROW}
    for e in (engine, restored):
        _feed(e, record_batch, 40, newcomers)
        assert e.state_arrays()["buf_names"].tolist() == [
            names[0], "newbox-a", names[2], "newbox-b", names[4], "newbox-c"
        ]  # fmt: skip

    # A smaller capacity that fits the servers, not the slots: the free slots are dropped.
    small = Engine.restore(EngineConfig(model_dir=toy_dir, capacity=3), arrays)
    assert small.state_arrays()["buf_names"].tolist() == [names[0], names[2], names[4]]
    assert small.history(names[2], 30) == histories[names[2]]
    with pytest.raises(ValueError, match="3 servers in 3 slots but capacity is 2"):
        Engine.restore(EngineConfig(model_dir=toy_dir, capacity=2), arrays)


def test_forget_after_counts_data_time_from_the_fleets_newest_step(
    toy_dir: Path, record_batch
) -> None:
    engine = _open(toy_dir, capacity=8, forget_after_s=3600.0)  # 12 steps
    never = _open(toy_dir, capacity=8)
    live = {"ppweb001": ROW, "ppweb002": ROW}
    for k in range(10):
        for e in (engine, never):
            _feed(e, record_batch, k, {**live, "ppdb001": ROW})
    # ppdb001's newest step is 9; one server's clock runs a day ahead (it must not count).
    _feed(engine, record_batch, 9 + 288, {"ppml0001": ROW})
    for k in range(10, 22):
        _feed(engine, record_batch, k, live)
        _feed(never, record_batch, k, live)
    # The fleet's newest step is 21: 12 steps (3600 s) after ppdb001's, not more.
    assert engine.expired() == []
    _feed(engine, record_batch, 22, live)
    _feed(never, record_batch, 22, live)
    assert engine.expired() == ["ppdb001"]
    assert never.expired() == []  # off: nothing expires, however old
    (gone,) = engine.forget(engine.expired(), expired=True)
    assert gone.server_name == "ppdb001"
    assert engine.expired() == []
    assert engine.status()["forgotten"] == {"deleted": 0, "expired": 1, "forget_after_s": 3600.0}
    with pytest.raises(ValueError, match="forget_after_s must be > 0"):
        _open(toy_dir, forget_after_s=0.0)


def test_a_reused_slot_forecasts_like_a_fresh_engine(steps_dir: Path, record_batch) -> None:
    """The step cache is keyed by slot: a new server in a forgotten server's slot, sent the
    very rows the old one had, must still get exactly a fresh engine's forecast."""
    engine = _open(steps_dir, capacity=3)
    fresh = _open(steps_dir, capacity=3)
    e = engine.spec.encoder_length
    sim = FleetSimulator(n_servers=3, seed=4, start=START)
    names = list(sim.fleet.names)
    data = sim.run(2 * e + 10)
    newcomer = "newcomer-01"

    def feed(target: Engine, k: int, sent: list[str]) -> None:
        metrics = np.column_stack([data[m][k] for m in METRIC_COLUMNS])
        states = [VALID_STATES[s] for s in data["state"][k].tolist()]
        batch = record_batch(np.full(3, data["timestamp"][k]), sent, metrics, states)
        assert target.ingest(batch).rejected == []

    for k in range(e + 5):
        feed(engine, k, names)
    assert engine.run_forecast() is not None  # the cache holds names[1]'s rows in slot 1
    engine.forget([names[1]])
    engine.run_forecast()
    assert engine._steps is not None
    assert (engine._steps.enc_step[1] == -1).all()
    assert (engine._steps.dec_step[1] == -1).all()
    # From now on names[1]'s own samples arrive under a new name, which takes slot 1.
    renamed = [names[0], newcomer, names[2]]
    for k in range(e + 5, 2 * e + 10):
        feed(engine, k, renamed)
        feed(fresh, k, renamed)
    assert engine.state_arrays()["buf_names"].tolist() == renamed
    engine.run_forecast()
    fresh.run_forecast()
    assert engine.history(newcomer, 1000) == fresh.history(newcomer, 1000)
    got, want = engine.server_forecast(newcomer), fresh.server_forecast(newcomer)
    assert got is not None
    assert want is not None
    assert got["encoder_steps"] == want["encoder_steps"] == e
    assert got["data_time"] == want["data_time"]
    q_got = engine._current_q[engine._current_rows[newcomer]]
    q_want = fresh._current_q[fresh._current_rows[newcomer]]
    np.testing.assert_allclose(q_got, q_want, rtol=1e-5, atol=1e-5)


class _ForgetBeforeChunk:
    """The engine's lock, which runs ``hook`` once, before its ``at``-th acquisition."""

    def __init__(self, lock, at: int, hook) -> None:
        self._lock, self._at, self._hook, self.entered = lock, at, hook, 0

    def __enter__(self):
        self.entered += 1
        if self.entered == self._at:
            self._hook()
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)


def test_a_slot_forgotten_and_reused_between_chunks_leaves_the_profile_history(
    toy_dir: Path, record_batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /profiles/{p}/history sums servers a chunk per lock hold; a server forgotten
    between two chunks, its slot taken by a new server of the same profile, must not lend
    the newcomer's samples to the answer nor be counted."""
    from fleetcast.appliance import engine_views

    engine = _open(toy_dir, capacity=3)
    for k in range(4):
        _feed(engine, record_batch, k, _alerting_fleet(k))  # slots: ppdb007, ppweb007, ppdb008
    want_latency = [400.0 + k % 3 for k in (1, 2, 3)]  # ppdb007's alone

    def forget_and_reuse() -> None:
        assert engine.forget(["ppdb008"])[0].server_name == "ppdb008"
        newcomer = {"ppdb009": [30, 50, 5, 999.0]}
        for k in (1, 2, 3):
            _feed(engine, record_batch, k, newcomer)
        assert engine.state_arrays()["buf_names"].tolist()[2] == "ppdb009"

    monkeypatch.setattr(engine_views, "_PROFILE_CHUNK", 1)
    # Acquisitions: 1 picks the servers, 2 sums slot 0, 3 sums slot 2.
    proxy = _ForgetBeforeChunk(engine._lock, 3, forget_and_reuse)
    engine._lock = proxy
    database = engine.profile_history("database", 3)
    assert proxy.entered >= 3
    assert database["servers"] == 1
    assert database["reporting"] == [1, 1, 1]
    assert database["latency_ms"] == want_latency
    # Asked again, the newcomer is one of the profile's servers.
    again = engine.profile_history("database", 3)
    assert again["servers"] == 2
    assert again["latency_ms"] == [(a + 999.0) / 2 for a in want_latency]
