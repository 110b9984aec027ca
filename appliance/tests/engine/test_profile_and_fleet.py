"""One profile per server in Engine.ingest (docs/DATA_CONTRACT.md#stable-profile) and the
fleet summary of an all-green fleet (0.0, never -0.0), on the toy model."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from fleetcast.appliance.engine import Engine, EngineConfig, RecordBatch
from fleetcast.appliance.forecast import iso
from fleetcast.appliance.risk import fleet_summary

TOY = Path(__file__).parent / "fixtures" / "toy_model.onnx"
STEP = 300
START = 1_795_000_000 - 1_795_000_000 % STEP
HORIZONS = ("30min", "1hr", "8hr")


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    shutil.copy(TOY, tmp_path / "model.onnx")
    return Engine.open(EngineConfig(model_dir=tmp_path, capacity=8))


@pytest.fixture
def batch(record_batch: Any) -> Any:
    """``batch(ts, names, profiles)``: the conftest's ``record_batch`` with quiet metrics."""

    def make(ts: list[int], names: list[str], profiles: list[str | None]) -> RecordBatch:
        n = len(names)
        metrics = np.tile([[10.0, 20.0, 1.0, 5.0]], (n, 1))
        return record_batch(ts, names, metrics, [None] * n, profiles)

    return make


def test_profile_from_the_name_is_kept_against_a_later_one(engine: Engine, batch: Any) -> None:
    assert engine.ingest(batch([START], ["ppml0001"], [None])).rejected == []
    result = engine.ingest(batch([START + STEP], ["ppml0001"], ["database"]))
    assert result.accepted == 0
    [(index, reason)] = result.rejected
    assert index == 0
    assert "profile 'database' contradicts 'ml_compute'" in reason
    assert reason.endswith("(docs/DATA_CONTRACT.md#stable-profile)")
    history = engine.history("ppml0001", 5)
    assert history is not None
    assert history["profile"] == "ml_compute"
    # The refused sample is not in the buffers: the newest step is still the first one.
    assert history["timestamps"][-1] == iso(START)
    assert [v for v in history["cpu_pct"] if v is not None] == [10.0]
    assert engine.status()["ingest"]["invalid"] == 1
    # None and the same profile are accepted.
    ok = engine.ingest(
        batch([START + STEP, START + 2 * STEP], ["ppml0001"] * 2, [None, "ml_compute"])
    )
    assert (ok.accepted, ok.rejected) == (2, [])


def test_explicit_first_profile_wins_over_the_name_and_then_holds(
    engine: Engine, batch: Any
) -> None:
    records = batch(
        [START, START + STEP, START + 2 * STEP, START],
        ["ppdb001", "ppdb001", "ppdb001", "ppweb001"],
        ["generic", None, "database", "web_api"],
    )
    result = engine.ingest(records)
    assert result.accepted == 3
    assert [i for i, _ in result.rejected] == [2]
    assert engine.history("ppdb001", 5)["profile"] == "generic"
    assert engine.history("ppweb001", 5)["profile"] == "web_api"
    # The snapshot carries the one profile.
    arrays = engine.state_arrays()
    restored = Engine.restore(engine.config, arrays)
    assert restored.history("ppdb001", 5)["profile"] == "generic"
    again = restored.ingest(batch([START + 3 * STEP], ["ppdb001"], ["database"]))
    assert again.accepted == 0


@pytest.mark.parametrize("servers", [0, 3])
def test_fleet_summary_of_a_riskless_fleet_is_positive_zero(servers: int) -> None:
    summary = fleet_summary(np.zeros((servers, 3)), ["generic"] * servers, HORIZONS)
    for value in summary["incident_probability"].values():
        assert value == 0.0
        assert math.copysign(1.0, value) == 1.0
    assert b"-0.0" not in msgspec.json.encode(summary)
    some = fleet_summary(np.array([[0.5, 0.5, 0.5]] * 2), ["generic"] * 2, HORIZONS)
    assert some["incident_probability"]["8hr"] == pytest.approx(0.75)


def test_forecast_of_an_idle_fleet_has_no_negative_zero(engine: Engine, batch: Any) -> None:
    need = engine.spec.min_encoder_length + 2
    for k in range(need):
        engine.ingest(batch([START + k * STEP] * 2, ["ppweb001", "ppweb002"], [None, None]))
    fs = engine.run_forecast()
    assert fs is not None
    body = msgspec.json.encode(fs.to_dict())
    assert [s["risk"] for s in fs.servers] == [0.0, 0.0]
    assert b"-0.0" not in body
    for value in fs.to_dict()["fleet"]["incident_probability"].values():
        assert math.copysign(1.0, value) == 1.0


def test_a_screen_passed_in_is_the_same_as_the_engines_own(tmp_path: Path, batch: Any) -> None:
    """The runtime screens a batch once (to log its valid rows) and hands the screen to
    ``ingest``: the outcome equals ``ingest`` screening the batch itself."""
    from fleetcast.appliance.engine import screen

    results = []
    for name in ("own", "passed"):
        (tmp_path / name).mkdir()
        shutil.copy(TOY, tmp_path / name / "model.onnx")
        config = EngineConfig(model_dir=tmp_path / name, capacity=8, max_future_s=3600.0)
        engine = Engine.open(config)
        records = batch([START, START, START + 40 * STEP], ["ppml0001", "", "ppdb001"], [None] * 3)
        now = float(START + STEP)
        if name == "own":
            results.append(engine.ingest(records, now=now))
        else:
            checked = screen(records, now, engine.config.max_future_s)
            assert checked.ok.tolist() == [True, False, False]  # blank name; 3 h ahead
            assert checked.ok_rows().tolist() == [0]
            results.append(engine.ingest(records, screened=checked))
            with pytest.raises(ValueError, match="another batch"):
                engine.ingest(batch([START], ["x"], [None]), screened=checked)
    assert results[0] == results[1]
    assert results[0].accepted == 1
    assert [i for i, _ in results[0].rejected] == [1, 2]


def test_a_metric_beyond_float32_is_refused_not_stored_as_infinity(
    engine: Engine, record_batch: Any
) -> None:
    """1e39 is finite as a Python float but infinity in the float32 buffers; the contract
    refuses it like infinity (docs/DATA_CONTRACT.md#non-finite-values). 3e38 still fits."""
    metrics = [[10.0, 10.0, 1e39, 1.0], [10.0, 10.0, 3e38, 1.0], [10.0, 10.0, 1.0, -1e39]]
    result = engine.ingest(record_batch([START] * 3, ["ppml0001", "ppml0002", "ppml0003"],
                                        metrics, [None] * 3))  # fmt: skip
    assert result.accepted == 1
    reasons = dict(result.rejected)
    assert set(reasons) == {0, 2}
    assert "disk_io_mb_s is missing or not a finite float32 number (got 1e+39" in reasons[0]
    assert reasons[0].endswith("(docs/DATA_CONTRACT.md#non-finite-values)")
    assert "latency_ms" in reasons[2]
    assert engine.history("ppml0002", 1)["disk_io_mb_s"] == [pytest.approx(3e38, rel=1e-6)]
    assert engine.history("ppml0001", 1) is None


def test_a_server_whose_forecast_is_not_finite_is_left_out_counted_and_logged(
    engine: Engine, batch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A NaN forecast is no forecast: never served as 0 with a green risk."""
    need = engine.spec.min_encoder_length + 2
    names = ["ppweb001", "ppweb002", "ppweb003"]
    for k in range(need):
        engine.ingest(batch([START + k * STEP] * 3, names, [None] * 3))
    assert {s["server_name"] for s in engine.run_forecast().servers} == set(names)
    slot = engine._buf.index["ppweb002"]
    engine._buf.values[slot] = np.inf  # what no validated sample can put there
    engine.ingest(batch([START + need * STEP] * 3, names, [None] * 3))
    with caplog.at_level("WARNING", logger="fleetcast.appliance.engine"):
        fs = engine.run_forecast()
    assert fs is not None
    assert {s["server_name"] for s in fs.servers} == {"ppweb001", "ppweb003"}
    assert fs.fleet["servers"] == 2
    assert engine.server_forecast("ppweb002") is None
    assert engine.status()["nonfinite_forecasts"] == 1
    assert "the forecast of 1 servers is not finite (e.g. ['ppweb002'])" in caplog.text
    assert engine.history("ppweb002", 1)["risk"] == [None]
