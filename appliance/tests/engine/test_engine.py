"""The Engine end to end on the toy model (fixtures/toy_model.onnx; outputs computable by hand).

A simulated fleet is ingested through Engine.ingest, forecast through ONNX Runtime, and the
result is checked against (1) the reference preprocessing run through ONNX Runtime directly
and (2) the toy graph's formula.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest

from fleetcast.appliance.engine import Engine, EngineConfig, RecordBatch
from fleetcast.appliance.forecast import clean_quantiles
from fleetcast.appliance.risk import Thresholds, exceedance_probability
from fleetcast.contract.encoder import server_id
from fleetcast.contract.features import ModelSpec, build_inputs, window_target_scale
from fleetcast.contract.schema import METRIC_COLUMNS, VALID_PROFILES, VALID_STATES
from fleetcast.contract.simulate import FleetSimulator

if TYPE_CHECKING:
    from pathlib import Path

STEP = 300
START = 1_795_000_000 - 1_795_000_000 % STEP
OFFSETS = (-1.28, 0.0, 1.28)
SERVER_KEYS = {
    "server_name",
    "profile",
    "prediction_time",
    "data_time",
    "encoder_steps",
    "short_history",
    "predictions",
    "quantiles",
    "risk",
    "risk_level",
    "risk_by_horizon",
    "drivers",
}


def _open(toy_dir: Path, **kw) -> Engine:
    return Engine.open(EngineConfig(model_dir=toy_dir, **kw))


def _batch(ts, names, metrics, state=None, profile=None) -> RecordBatch:
    n = len(names)
    metrics = np.asarray(metrics, dtype=np.float64).reshape(n, 4)
    return RecordBatch(
        ts=np.asarray(ts, dtype=np.int64).reshape(n),
        server=list(names),
        cpu_pct=metrics[:, 0],
        mem_pct=metrics[:, 1],
        disk_io_mb_s=metrics[:, 2],
        latency_ms=metrics[:, 3],
        state=list(state) if state is not None else [None] * n,
        profile=list(profile) if profile is not None else [None] * n,
    )


def _simulate(n_servers: int, steps: int) -> tuple[list[str], dict[str, np.ndarray]]:
    sim = FleetSimulator(n_servers=n_servers, seed=3, start=START)
    return list(sim.fleet.names), sim.run(steps)


def _feed_sim(engine: Engine, names: list[str], data: dict[str, np.ndarray]) -> None:
    for k, ts in enumerate(data["timestamp"].tolist()):
        metrics = np.column_stack([data[m][k] for m in METRIC_COLUMNS])
        states = [VALID_STATES[s] for s in data["state"][k].tolist()]
        result = engine.ingest(_batch(np.full(len(names), ts), names, metrics, states))
        assert result.rejected == []


def _toy_quantiles(centre_scale: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The toy graph's formula: (B, 4, 2) → (B, 4, D, 3), then clamped and ordered."""
    d = spec.prediction_length
    c = centre_scale[:, :, 0, None, None].astype(np.float32)
    s = centre_scale[:, :, 1, None, None].astype(np.float32)
    y = c + s * (np.array(OFFSETS, np.float32) + (np.arange(d, dtype=np.float32) / d)[:, None])
    y[:, 2:] = np.expm1(y[:, 2:])
    return clean_quantiles(y.astype(np.float32))


def test_simulated_day_end_to_end(toy_dir: Path) -> None:
    engine = _open(toy_dir, capacity=64)
    spec = engine.spec
    names, data = _simulate(20, 288)
    _feed_sim(engine, names, data)
    # an unknown server with a full window, and one still warming up (3 closed steps)
    last_ts = int(data["timestamp"][-1])
    for k in range(30):
        ts = last_ts - (29 - k) * STEP
        engine.ingest(_batch([ts], ["edge-router-1"], [[20 + k, 40, 2.0, 30.0]], ["healthy"]))
    for k in range(4):
        engine.ingest(_batch([last_ts - (3 - k) * STEP], ["newbox"], [[10, 10, 1, 10]]))
    assert engine.forecast_due()
    fs = engine.run_forecast()
    assert fs is not None
    assert not engine.forecast_due()
    assert engine.current() is fs

    got = {s["server_name"]: s for s in fs.servers}
    assert set(got) == {*names, "edge-router-1"}
    assert fs.data_time == _iso(last_ts - STEP)
    assert fs.prediction_time == _iso(last_ts)
    assert fs.model_version == spec.model_version
    for s in fs.servers:
        assert set(s) == SERVER_KEYS
        assert set(s["predictions"]) == {"30min", "1hr", "8hr"}
        for h in ("30min", "1hr", "8hr"):
            assert set(s["predictions"][h]) == set(METRIC_COLUMNS)
            for m in METRIC_COLUMNS:
                p10, p50, p90 = (s["quantiles"][q][h][m] for q in ("p10", "p50", "p90"))
                assert p10 <= p50 <= p90
                assert p50 == s["predictions"][h][m]
        assert s["risk_level"] in {"green", "yellow", "red"}
        assert s["risk"] == s["risk_by_horizon"]["8hr"]
    assert got["edge-router-1"]["profile"] == "generic"
    assert got["ppweb001"]["profile"] == "web_api"
    risks = [s["risk"] for s in fs.servers]
    assert risks == sorted(risks, reverse=True)

    # (1) equal to the reference preprocessing run through ONNX Runtime directly
    order = [*names, "edge-router-1"]
    b = len(order)
    e = spec.encoder_length
    values = np.zeros((b, e, 4))
    states = np.full((b, e), -1)
    for i, name in enumerate(order[:-1]):
        col = names.index(name)
        window = slice(288 - 1 - e, 288 - 1)  # the open (newest) step is not used
        values[i] = np.column_stack([data[m][window, col] for m in METRIC_COLUMNS])
        states[i] = data["state"][window, col]
    values[-1, :] = [[20 + k, 40, 2.0, 30.0] for k in range(29 - e, 29)]
    states[-1, :] = VALID_STATES.index("healthy")
    profiles = [got[n]["profile"] for n in order]
    ref = build_inputs(
        spec, values, np.full(b, e), states, profiles, order, np.full(b, last_ts // STEP - 1)
    )
    session = ort.InferenceSession(str(toy_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    direct = clean_quantiles(session.run(["quantiles"], ref.as_feed())[0])
    for i, name in enumerate(order):
        curves = engine.server_forecast(name)["curves"]
        for j, m in enumerate(METRIC_COLUMNS):
            for k, qn in enumerate(("p10", "p50", "p90")):
                np.testing.assert_allclose(
                    curves[m][qn], direct[i, j, :, k], rtol=1e-5, atol=1.5e-3
                )

    # (2) equal to the toy formula on the reference scaling, and the risk from it
    _, cs = window_target_scale(spec, values, np.full(b, e))
    toy = _toy_quantiles(cs, spec)
    np.testing.assert_allclose(direct, toy, rtol=1e-5, atol=1e-4)
    th = Thresholds()
    for i, name in enumerate(order):
        prof = VALID_PROFILES.index(profiles[i])
        p = exceedance_probability(toy[i], spec.quantiles, th.matrix[prof][:, None])  # (4, D)
        assert got[name]["risk_by_horizon"]["30min"] == pytest.approx(p[:, :6].max(), abs=2e-4)
        assert got[name]["risk"] == pytest.approx(p.max(), abs=2e-4)
        assert got[name]["predictions"]["30min"]["cpu_pct"] == pytest.approx(
            toy[i, 0, 5, 1], abs=1e-3
        )
        assert got[name]["predictions"]["8hr"]["latency_ms"] == pytest.approx(
            toy[i, 3, 95, 1], rel=1e-5, abs=1e-3
        )

    # fleet summary and status
    assert fs.fleet["servers"] == b
    assert fs.fleet["green"] + fs.fleet["yellow"] + fs.fleet["red"] == b
    st = engine.status()
    assert st["servers"]["known"] == 22
    assert st["servers"]["ready"] == 21
    assert st["servers"]["warming"] == 1
    # Not in the mapping, or in it with the ID training nulled (the unknown-server code).
    nulled = spec.unknown_codes["server_id"]
    codes = spec.encode_categorical("server_id", [server_id(n) for n in names])
    unknown = [
        n for n, c in zip(names, codes, strict=True) if n not in spec.server_mapping or c == nulled
    ]
    assert 0 < len(unknown) < len(names)
    assert st["servers"]["unknown"] == len(unknown) + 2
    assert st["servers"]["warming_detail"] == [
        {"server_name": "newbox", "steps": 3, "needed": 6, "ready_in_s": 900}
    ]
    assert st["model"]["providers"] == engine.providers
    assert "CPUExecutionProvider" in engine.providers
    assert st["forecast_runs"] == 1
    assert st["error_rate"] == 0.0
    assert st["inference_latency_ms"]["avg"] > 0


def _iso(ts: int) -> str:
    from fleetcast.appliance.forecast import iso

    return iso(ts)


def test_alerts_name_server_metric_horizon_values_and_since(toy_dir: Path) -> None:
    engine = _open(toy_dir, capacity=8)
    # Same latency (~400 ms) on a database (threshold 200) and a web_api (threshold 1000).
    names = ["ppdb007", "ppweb007"]
    for k in range(30):
        lat = 400.0 + (k % 3)
        engine.ingest(_batch([START + k * STEP] * 2, names, [[30, 50, 5, lat]] * 2))
    fs = engine.run_forecast()
    alerts = engine.alerts()
    assert alerts == fs.alerts
    assert {a["server_name"] for a in alerts} == {"ppdb007"}
    lat_alerts = {a["horizon"]: a for a in alerts if a["metric"] == "latency_ms"}
    assert set(lat_alerts) == {"30min", "1hr", "8hr"}
    a = lat_alerts["30min"]
    assert a["profile"] == "database"
    assert a["threshold"] == 200.0
    assert a["severity"] == "critical"
    assert a["probability"] == pytest.approx(1.0)
    assert 395 < a["predicted_value"] < a["predicted_p90"]
    assert a["since"] == fs.prediction_time
    server = next(s for s in fs.servers if s["server_name"] == "ppdb007")
    assert server["risk_level"] == "red"
    assert server["drivers"][0] == {
        "metric": "latency_ms",
        "horizon": "30min",
        "probability": 1.0,
        "threshold": 200.0,
    }
    web = next(s for s in fs.servers if s["server_name"] == "ppweb007")
    assert web["risk_level"] == "green"
    assert web["drivers"] == []
    # the next step keeps "since"; the fleet history gets a second point
    engine.ingest(_batch([START + 30 * STEP] * 2, names, [[30, 50, 5, 401.0]] * 2))
    fs2 = engine.run_forecast()
    assert fs2.prediction_time != fs.prediction_time
    assert {a["since"] for a in engine.alerts() if a["metric"] == "latency_ms"} == {
        fs.prediction_time
    }
    hist = engine.fleet_history(10)
    assert hist["red"] == [1, 1]
    assert hist["green"] == [1, 1]
    assert len(hist["timestamps"]) == 2
    h = engine.history("ppdb007", 5)
    assert h["profile"] == "database"
    assert h["latency_ms"] == [400.0 + (k % 3) for k in range(26, 30)] + [401.0]
    assert h["risk"][-3:-1] == [1.0, 1.0]
    assert h["risk"][-1] is None  # the open step has no forecast yet


def test_a_forecast_hands_the_previous_critical_alerts_to_the_next(
    toy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hysteresis of the critical level (alerts.HYSTERESIS) needs the severities of
    the previous forecast set's alerts."""
    import fleetcast.appliance.alerts as alerts_module

    seen: list[object] = []
    real = alerts_module.build_alerts

    def spy(**kw: object) -> object:
        seen.append(set(kw["critical_before"]))
        return real(**kw)

    monkeypatch.setattr(alerts_module, "build_alerts", spy)
    engine = _open(toy_dir, capacity=8)
    for k in range(30):
        engine.ingest(_batch([START + k * STEP], ["ppdb007"], [[30, 50, 5, 400.0]]))
    fs = engine.run_forecast()
    engine.ingest(_batch([START + 30 * STEP], ["ppdb007"], [[30, 50, 5, 400.0]]))
    engine.run_forecast()
    critical = {
        (a["server_name"], a["metric"], a["horizon"])
        for a in fs.alerts
        if a["severity"] == "critical"
    }
    assert critical
    assert seen == [set(), critical]


def test_ingest_rejections_and_step_closing(
    toy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _open(toy_dir, capacity=2)
    r = engine.ingest(_batch([START + 10 * STEP], ["a"], [[1, 1, 1, 1]]))
    assert (r.accepted, r.rejected) == (1, [])
    r = engine.ingest(_batch([START + 10 * STEP + 60], ["a"], [[1, 1, 1, 1]]))
    assert r.closed_steps == 0
    r = engine.ingest(_batch([START + 12 * STEP + 1], ["a"], [[1, 1, 1, 1]]))
    assert r.closed_steps == 2
    assert r.latest_step == START + 11 * STEP
    r = engine.ingest(
        _batch(
            [START - 15 * STEP, START + 12 * STEP, START + 12 * STEP, START + 12 * STEP],
            ["a", "b", "c", "a"],
            [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 150, 1, 1]],
        )
    )
    assert r.accepted == 1
    reasons = dict(r.rejected)
    assert "older than the" in reasons[0]
    assert "docs/RISK.md#buckets" in reasons[0]
    assert "capacity of 2 servers" in reasons[2]
    # The reason names both fixes docs/RISK.md#buckets gives: more capacity, or free slots.
    assert "DELETE /servers/{server_name}" in reasons[2]
    assert "forget_after" in reasons[2]
    assert "mem_pct=150 is outside" in reasons[3]
    st = engine.status()["ingest"]
    assert st["too_old"] == 1
    assert st["capacity"] == 1
    assert st["invalid"] == 1
    # The operator hears of the first capacity refusal (the sender reads it in its answer).
    (warned,) = [r for r in caplog.records if "capacity" in r.getMessage()]
    assert warned.levelname == "WARNING"
    assert "server 'c' is refused" in warned.getMessage()
    assert "docs/OPERATIONS.md#forgetting-servers" in warned.getMessage()
    caplog.clear()
    engine.ingest(_batch([START + 13 * STEP], ["d"], [[1, 1, 1, 1]]))
    assert engine.status()["ingest"]["capacity"] == 2
    assert not [r for r in caplog.records if "capacity" in r.getMessage()]  # logged once


def test_replay_in_any_chunking_gives_the_same_forecast(toy_dir: Path) -> None:
    rng = np.random.default_rng(5)
    names = ["ppweb001", "ppdb001", "ppml0001"]
    ts = np.repeat(np.arange(START, START + 40 * STEP, 60), len(names))
    srv = np.tile(names, ts.size // len(names))
    metrics = np.column_stack(
        [
            rng.uniform(10, 90, ts.size),
            rng.uniform(10, 90, ts.size),
            rng.lognormal(2, 1, ts.size),
            rng.lognormal(3, 0.5, ts.size),
        ]
    )
    results = []
    for chunk, order in (
        (ts.size, np.arange(ts.size)),
        (7, rng.permutation(ts.size)),
        (1000, np.arange(ts.size)[::-1]),
    ):
        engine = _open(toy_dir, capacity=4)
        for lo in range(0, ts.size, chunk):
            sel = order[lo : lo + chunk]
            engine.ingest(_batch(ts[sel], srv[sel], metrics[sel]))
        results.append(engine.run_forecast().servers)
    assert results[0] == results[1] == results[2]


def test_state_round_trip_restores_buffers_and_forecasts(toy_dir: Path) -> None:
    engine = _open(toy_dir, capacity=40)
    names, data = _simulate(10, 40)
    _feed_sim(engine, names, data)
    before = engine.run_forecast().servers
    arrays = engine.state_arrays()
    assert all(a.dtype != object for a in arrays.values())
    restored = Engine.restore(EngineConfig(model_dir=toy_dir, capacity=40), arrays)
    assert restored.forecast_due()
    assert restored.run_forecast().servers == before
    assert restored.history("ppweb001", 10) == engine.history("ppweb001", 10)


def test_ingest_and_forecast_from_two_threads(toy_dir: Path) -> None:
    engine = _open(toy_dir, capacity=40)
    names, data = _simulate(10, 60)
    _feed_sim(engine, names, {k: v[:20] for k, v in data.items()})
    errors: list[BaseException] = []

    def forecasts() -> None:
        try:
            for _ in range(15):
                engine.run_forecast()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=forecasts)
    t.start()
    _feed_sim(engine, names, {k: v[20:] for k, v in data.items()})
    t.join()
    assert errors == []
    fs = engine.run_forecast()
    assert len(fs.servers) == 10
    assert fs.data_time == _iso(int(data["timestamp"][-1]) - STEP)


def test_records_to_batch_and_settings_checks(toy_dir: Path) -> None:
    batch = RecordBatch.from_records(
        [
            {
                "timestamp": "2026-11-27T10:00:00Z",
                "server_name": "ppweb001",
                "cpu_pct": 1.5,
                "mem_pct": 2,
                "disk_io_mb_s": 3,
                "latency_ms": 4,
                "state": None,
                "profile": None,
            },
            {"timestamp": 1_795_000_000, "server_name": "x", "cpu_pct": None},
        ]
    )
    assert batch.ts.tolist() == [1_795_773_600, 1_795_000_000]
    assert batch.cpu_pct[0] == 1.5
    assert np.isnan(batch.cpu_pct[1])
    engine = _open(toy_dir, capacity=4)
    r = engine.ingest(batch)
    assert r.accepted == 1
    assert "cpu_pct is missing" in dict(r.rejected)[1]
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        _open(toy_dir, capacity=0)
    with pytest.raises(ValueError, match="warning_probability <= critical_probability"):
        _open(toy_dir, warning_probability=0.8, critical_probability=0.5)


def test_a_clock_in_the_future_does_not_stop_forecasts(toy_dir: Path) -> None:
    """One sample a year ahead must not become the fleet's closed step: the live fleet's
    next steps still close (and trigger forecasts), and a restore keeps it that way."""
    engine = _open(toy_dir, capacity=16)
    live = [f"ppweb{i:03d}" for i in range(10)]
    row = [[20, 40, 2, 30]] * 10
    for k in range(30):
        engine.ingest(_batch([START + k * STEP] * 10, live, row))
    assert engine.run_forecast().data_time == _iso(START + 28 * STEP)
    ahead = engine.ingest(_batch([START + 105_120 * STEP], ["ppml0001"], [[20, 40, 2, 30]]))
    assert ahead.accepted == 1
    assert ahead.latest_step == START + 28 * STEP
    r = engine.ingest(_batch([START + 30 * STEP] * 10, live, row))
    assert (r.closed_steps, r.latest_step) == (1, START + 29 * STEP)
    assert engine.forecast_due()
    assert engine.run_forecast().data_time == _iso(START + 29 * STEP)
    assert not engine.forecast_due()
    assert engine.status()["data_time"] == _iso(START + 29 * STEP)
    restored = Engine.restore(EngineConfig(model_dir=toy_dir, capacity=16), engine.state_arrays())
    r = restored.ingest(_batch([START + 31 * STEP] * 10, live, row))
    assert (r.closed_steps, r.latest_step) == (1, START + 30 * STEP)


def test_stale_servers_and_a_clock_in_the_future(toy_dir: Path) -> None:
    engine = _open(toy_dir, capacity=16)
    live = [f"ppweb{i:03d}" for i in range(10)]
    for k in range(40):
        engine.ingest(_batch([START + k * STEP] * 10, live, [[20 + k % 5, 40, 2, 30]] * 10))
    for k in range(10):  # a server that stopped reporting 30 steps ago
        engine.ingest(_batch([START + k * STEP], ["ppdb001"], [[20, 40, 2, 30]]))
    for k in range(10):  # a server whose clock is a day ahead
        engine.ingest(_batch([START + (288 + 30 + k) * STEP], ["ppml0001"], [[20, 40, 2, 30]]))
    fs = engine.run_forecast()
    names = {s["server_name"] for s in fs.servers}
    assert names == set(live)  # the live fleet is forecast, the two odd ones are stale
    assert fs.data_time == _iso(START + 38 * STEP)
    st = engine.status()["servers"]
    assert (st["ready"], st["stale"], st["ahead"], st["warming"]) == (10, 1, 1, 0)


def test_samples_from_a_clock_in_the_future_are_rejected_and_history_kept(toy_dir: Path) -> None:
    """With ``now`` and ``max_future_s``, a sample a day ahead is refused with a reason, so
    the server's window (and its real history) stays where the data is."""
    engine = _open(toy_dir, capacity=4, max_future_s=3600.0)
    now = START + 30 * STEP + 10
    for k in range(30):
        r = engine.ingest(_batch([START + k * STEP], ["ppweb001"], [[20 + k, 40, 2, 30]]), now=now)
        assert r.rejected == []
    r = engine.ingest(
        _batch(
            [START + 30 * STEP, START + 30 * STEP + 86_400, START + 30 * STEP + 3_000],
            ["ppweb001", "ppweb001", "ppdb001"],
            [[50, 40, 2, 30], [99, 99, 2, 30], [10, 20, 1, 5]],
        ),
        now=now,
    )
    assert r.accepted == 2  # the sample of this step and one 50 minutes ahead (< 1 h)
    ((index, reason),) = r.rejected
    assert index == 1
    assert "24.0 h ahead of this appliance's clock" in reason
    assert "'ppweb001'" in reason
    assert "NTP" in reason
    assert "docs/RISK.md#buckets" in reason
    assert engine.status()["ingest"]["future"] == 1
    # The server's newest step is still the real one and its history is all there.
    history = engine.history("ppweb001", steps=31)  # as much as the ring keeps
    assert history["timestamps"][-1] == _iso(START + 30 * STEP)
    kept = len(history["cpu_pct"])
    assert kept >= 24  # the toy model's encoder length
    assert history["cpu_pct"] == [float(20 + k) for k in range(31 - kept, 30)] + [50.0]
    # Without now (the sample log's replay), or with the check off, nothing is refused.
    assert engine.ingest(_batch([now + 86_400], ["ppdb001"], [[1, 1, 1, 1]])).accepted == 1
    off = _open(toy_dir, capacity=4)
    assert off.ingest(_batch([now + 86_400], ["ppweb001"], [[1, 1, 1, 1]]), now=now).accepted == 1


def test_the_fleets_reference_step_ignores_a_few_servers_ahead() -> None:
    from fleetcast.appliance.engine_state import fleet_reference

    ends = np.array([100] * 18 + [99, 5000])  # one clock far ahead, one server a step behind
    assert fleet_reference(ends) == 100
    assert fleet_reference(np.array([100, 102, 101])) == 101
    assert fleet_reference(np.array([100, 140])) == 100  # two: the older (a fast clock)
    assert fleet_reference(np.zeros(0, dtype=np.int64)) == -1
