"""The Engine on the exporter's tiny *trained* model (appliance/tests/fixtures/tiny_model.onnx).

- raw samples of the fixture's reference windows, ingested through Engine.ingest, give the
  quantiles the exporter recorded for them (tiny_model_reference.json);
- a simulated day of a 90-server fleet gives a forecast for every ready server equal to
  running ONNX Runtime on the reference preprocessing of the same windows.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest

from fleetcast.appliance.engine import Engine, EngineConfig
from fleetcast.appliance.forecast import clean_quantiles
from fleetcast.contract.features import build_inputs
from fleetcast.contract.schema import METRIC_COLUMNS, VALID_STATES
from fleetcast.contract.simulate import FleetSimulator

if TYPE_CHECKING:
    from pathlib import Path

QN = ("p10", "p50", "p90")


@pytest.fixture
def tiny_dir(tmp_path: Path, tiny_onnx: Path) -> Path:
    shutil.copyfile(tiny_onnx, tmp_path / "model.onnx")
    sidecar = tiny_onnx.with_name(tiny_onnx.name + ".sha256")
    if sidecar.is_file():  # the exporter's sidecar: verified on load
        digest = sidecar.read_text().split()[0]
        (tmp_path / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    return tmp_path


def test_ingested_reference_windows_give_the_exporters_quantiles(
    tiny_dir: Path, tiny_onnx: Path, record_batch
) -> None:
    ref = json.loads((tiny_onnx.parent / "tiny_model_reference.json").read_text())
    inp = ref["inputs"]
    engine = Engine.open(EngineConfig(model_dir=tiny_dir, capacity=8))
    step = engine.spec.step_seconds
    values = np.asarray(inp["values"], dtype=np.float64)
    for b, name in enumerate(inp["server_names"]):
        n = int(inp["lengths"][b])
        last = int(inp["last_time_idx"][b])
        steps = np.arange(last - n + 1, last + 1)
        states = [None if s < 0 else VALID_STATES[s] for s in inp["states"][b][:n]]
        r = engine.ingest(
            record_batch(
                steps * step + step - 1, [name] * n, values[b, :n], states, [inp["profiles"][b]] * n
            )
        )
        assert r.rejected == []
        # then a 1-minute feed's earlier samples of each step, arriving late: superseded
        for early in (240, 180, 120, 60):
            noise = record_batch(
                steps * step + (step - early - 1) % step, [name] * n, values[b, :n] * 0.5, states
            )
            assert engine.ingest(noise).rejected == []
        # one sample of the next step closes the last one
        engine.ingest(record_batch([(last + 1) * step], [name], values[b, n - 1 : n], states[-1:]))
    fs = engine.run_forecast()
    assert fs is not None
    want = clean_quantiles(np.asarray(ref["quantiles"], dtype=np.float32))
    got = {s["server_name"]: s for s in fs.servers}
    assert set(got) == set(inp["server_names"])
    for b, name in enumerate(inp["server_names"]):
        assert got[name]["profile"] == inp["profiles"][b]
        assert got[name]["encoder_steps"] == inp["lengths"][b]
        assert got[name]["short_history"] == (inp["lengths"][b] < engine.spec.encoder_length)
        curves = engine.server_forecast(name)["curves"]
        for j, m in enumerate(METRIC_COLUMNS):
            for k, qn in enumerate(QN):
                np.testing.assert_allclose(curves[m][qn], want[b, j, :, k], rtol=1e-4, atol=2e-3)
    st = engine.status()
    assert st["servers"]["unknown"] == 1  # ppgen999 is not in the model's mapping
    assert st["ingest"]["superseded"] > 0


def test_simulated_day_equals_ort_on_the_reference_preprocessing(
    tiny_dir: Path, record_batch
) -> None:
    engine = Engine.open(EngineConfig(model_dir=tiny_dir, capacity=128, batch_size=32))
    spec = engine.spec
    start = 1_795_000_000 - 1_795_000_000 % spec.step_seconds
    sim = FleetSimulator(n_servers=90, seed=11, start=start)
    names = list(sim.fleet.names)
    data = sim.run(288)
    for k, ts in enumerate(data["timestamp"].tolist()):
        metrics = np.column_stack([data[m][k] for m in METRIC_COLUMNS])
        states = [VALID_STATES[s] for s in data["state"][k].tolist()]
        assert (
            engine.ingest(record_batch(np.full(len(names), ts), names, metrics, states)).rejected
            == []
        )
    fs = engine.run_forecast()
    assert len(fs.servers) == 90
    e = spec.encoder_length
    window = slice(288 - 1 - e, 288 - 1)
    values = np.stack(
        [np.column_stack([data[m][window, i] for m in METRIC_COLUMNS]) for i in range(90)]
    )
    states = data["state"][window].T.astype(np.int64)
    last = int(data["timestamp"][-1]) // spec.step_seconds - 1
    ref = build_inputs(
        spec, values, np.full(90, e), states, list(sim.fleet.profiles), names, np.full(90, last)
    )
    session = ort.InferenceSession(str(tiny_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    direct = clean_quantiles(session.run(["quantiles"], ref.as_feed())[0])
    by_name = {s["server_name"]: s for s in fs.servers}
    for i in (0, 17, 45, 89):
        curves = engine.server_forecast(names[i])["curves"]
        for j, m in enumerate(METRIC_COLUMNS):
            for k, qn in enumerate(QN):
                np.testing.assert_allclose(curves[m][qn], direct[i, j, :, k], rtol=1e-4, atol=2e-3)
    for i, name in enumerate(names):
        s = by_name[name]
        assert s["profile"] == sim.fleet.profiles[i]
        assert s["predictions"]["30min"]["cpu_pct"] == pytest.approx(
            float(direct[i, 0, 5, 1]), rel=1e-4, abs=2e-3
        )
        assert s["predictions"]["8hr"]["latency_ms"] == pytest.approx(
            float(direct[i, 3, 95, 1]), rel=1e-4, abs=2e-3
        )
        assert 0.0 <= s["risk"] <= 1.0
    assert fs.fleet["servers"] == 90
    assert sum(v["servers"] for v in fs.fleet["by_profile"].values()) == 90
