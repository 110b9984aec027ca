"""The step cache (docs/MODEL_FORMAT.md#step-cache) on the exporter's tiny model with step
graphs (appliance/tests/fixtures/tiny_model_steps.onnx, fixed input scaling).

- forecast after forecast, an engine with the cache gives the full graph's numbers, through
  cold start, gaps, late samples and new servers;
- at steady state it computes exactly one encoder and one decoder row per server and step;
- the reference windows give the exporter's recorded quantiles.
"""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.appliance.engine import Engine, EngineConfig
from fleetcast.appliance.forecast import clean_quantiles
from fleetcast.appliance.step_cache import StepCache
from fleetcast.appliance.windows import WindowInputs, WindowPlan
from fleetcast.contract.schema import METRIC_COLUMNS, VALID_STATES
from fleetcast.contract.simulate import FleetSimulator

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

QN = ("p10", "p50", "p90")


def _raw(engine: Engine) -> dict[str, np.ndarray]:
    """Each forecast server's quantiles [metric, step, quantile] as the model returned them."""
    q = engine._current_q
    assert q is not None
    return {name: q[row] for name, row in engine._current_rows.items()}


def _quantiles(engine: Engine) -> dict[str, np.ndarray]:
    """Each forecast server's curves (rounded for the API) as [metric, step, quantile]."""
    fs = engine.current()
    assert fs is not None
    out = {}
    for s in fs.servers:
        curves = engine.server_forecast(s["server_name"])["curves"]
        out[s["server_name"]] = np.array(
            [[curves[m][q] for q in QN] for m in METRIC_COLUMNS], dtype=np.float64
        ).transpose(0, 2, 1)
    return out


def test_the_model_opens_with_its_step_graphs(steps_dir: Path) -> None:
    cached = Engine.open(EngineConfig(model_dir=steps_dir, capacity=8))
    assert cached.model.steps is not None
    assert sorted(cached.model.steps) == ["decoder_steps", "encoder_steps", "head_post", "head_pre"]
    assert cached.model.info()["step_graphs"] is True
    assert cached.model.info()["day_ago_lag"] == 288  # the fixture has day-ago inputs
    assert cached.status()["step_cache"]["enabled"] is True
    full = Engine.open(EngineConfig(model_dir=steps_dir, capacity=8, step_cache=False))
    assert full.model.steps is None
    assert full.status()["step_cache"] == {
        "enabled": False,
        "last_rows_cached": 0,
        "last_rows_computed": 0,
        "bytes": 0,
    }


def test_step_graphs_of_another_version_run_the_full_graph(
    steps_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import hashlib

    # Same-length edit of the metadata (the appliance's environment has no onnx package):
    # the document of the last release's single head graph said version 1.
    data = (steps_dir / "model.onnx").read_bytes()
    at = data.index(b'{"version":2,', data.index(b"fleetcast.step_graphs"))
    data = data[:at] + b'{"version":1,' + data[at + 13 :]
    (steps_dir / "model.onnx").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (steps_dir / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    with caplog.at_level("WARNING", logger="fleetcast.appliance"):
        engine = Engine.open(EngineConfig(model_dir=steps_dir, capacity=8))
    assert engine.model.steps is None
    assert engine.status()["step_cache"]["enabled"] is False
    assert "step graphs are version 1; this appliance reads version 2" in caplog.text
    assert "re-export" in caplog.text


def test_the_window_scaled_fixture_has_no_step_graphs(tiny_onnx: Path, tmp_path: Path) -> None:
    shutil.copyfile(tiny_onnx, tmp_path / "model.onnx")
    engine = Engine.open(EngineConfig(model_dir=tmp_path, capacity=8))
    assert engine.model.steps is None
    assert engine.status()["step_cache"]["enabled"] is False


def test_reference_windows_give_the_exporters_quantiles(steps_dir: Path, record_batch) -> None:
    ref = json.loads((steps_dir / "model.onnx").with_name("reference.json").read_text())
    inp = ref["inputs"]
    engine = Engine.open(EngineConfig(model_dir=steps_dir, capacity=8))
    step = engine.spec.step_seconds
    values = np.asarray(inp["values"], dtype=np.float64)
    e, d, lag = engine.spec.encoder_length, engine.spec.prediction_length, engine.spec.max_lag
    assert lag == 288  # the fixture has day-ago inputs
    for b, name in enumerate(inp["server_names"]):
        n = int(inp["lengths"][b])
        last = int(inp["last_time_idx"][b])
        if n == e:  # a day back: the steps the day-ago inputs read (cold starts have none)
            lagged = np.asarray(inp["day_ago"][b], dtype=np.float64)
            old = np.r_[np.arange(last - n + 1, last + 1), np.arange(last + 1, last + 1 + d)]
            r = engine.ingest(
                record_batch(
                    (old - lag) * step, [name] * (n + d), np.r_[lagged[:n], lagged[e:]],
                    [None] * (n + d), [inp["profiles"][b]] * (n + d),
                )
            )  # fmt: skip
            assert r.rejected == []
        steps = np.arange(last - n + 1, last + 2)  # one sample of the next step closes the last
        states = [None if s < 0 else VALID_STATES[s] for s in inp["states"][b][:n]]
        rows = np.concatenate([values[b, :n], values[b, n - 1 : n]])
        r = engine.ingest(
            record_batch(
                steps * step,
                [name] * (n + 1),
                rows,
                [*states, states[-1]],
                [inp["profiles"][b]] * (n + 1),
            )
        )
        assert r.rejected == []
    assert engine.run_forecast() is not None
    want = clean_quantiles(np.asarray(ref["quantiles"], dtype=np.float32))
    got = _quantiles(engine)
    for b, name in enumerate(inp["server_names"]):
        np.testing.assert_allclose(got[name], want[b], rtol=1e-4, atol=2e-3)
    rows = engine.status()["step_cache"]
    assert rows["last_rows_cached"] == 0  # a first forecast computes every row
    assert rows["last_rows_computed"] == sum(inp["lengths"]) + 3 * d
    assert e == 48  # the fixture's encoder: every reference window fits


def test_rolling_forecasts_equal_the_full_graph_and_compute_only_new_rows(
    steps_dir: Path, record_batch
) -> None:
    cached = Engine.open(EngineConfig(model_dir=steps_dir, capacity=64, batch_size=8))
    full = Engine.open(
        EngineConfig(model_dir=steps_dir, capacity=64, batch_size=8, step_cache=False)
    )
    spec = cached.spec
    e, d, step = spec.encoder_length, spec.prediction_length, spec.step_seconds
    start = 1_795_000_000 - 1_795_000_000 % step
    sim = FleetSimulator(n_servers=24, seed=5, start=start)
    names = list(sim.fleet.names)
    data = sim.run(e + 30)
    newcomer = "newcomer-01"

    def feed(k: int, who: np.ndarray) -> None:
        metrics = np.column_stack([data[m][k, who] for m in METRIC_COLUMNS])
        states = [VALID_STATES[s] for s in data["state"][k, who].tolist()]
        batch = record_batch(
            np.full(len(who), data["timestamp"][k]), [names[i] for i in who], metrics, states
        )
        for engine in (cached, full):
            assert engine.ingest(batch).rejected == []

    everyone = np.arange(len(names))
    checked = 0
    for k in range(e + 30):
        who = everyone
        if k == e + 10:
            who = everyone[everyone != 3]  # server 3 misses a step: forward fill
        feed(k, who)
        if k == e + 20:
            # A late sample replaces server 7's value of three steps ago.
            late = record_batch(
                [data["timestamp"][k - 3] + 150],
                [names[7]],
                [[99.0, 98.0, 500.0, 900.0]],
                ["critical_issue"],
            )
            for engine in (cached, full):
                assert engine.ingest(late).rejected == []
        if k == e + 24:
            for engine in (cached, full):
                for j in range(14):  # a new server with a short history
                    ts = data["timestamp"][k] - (13 - j) * step
                    engine.ingest(
                        record_batch(
                            [ts],
                            [newcomer],
                            [[40.0 + j, 50.0, 3.0, 20.0]],
                            ["healthy"],
                            ["web_api"],
                        )
                    )
        if k < 14:
            continue
        a, b = cached.run_forecast(), full.run_forecast()
        assert (a is None) == (b is None)
        if a is None:
            continue
        qa, qb = _raw(cached), _raw(full)
        assert set(qa) == set(qb)
        for name in qb:
            np.testing.assert_allclose(qa[name], qb[name], rtol=1e-5, atol=1e-4)
        checked += 1
        rows = cached.status()["step_cache"]
        servers = len(a.servers)
        if k == e + 5:  # steady state: one new encoder and one new decoder row per server
            assert servers == 24
            assert rows["last_rows_computed"] == 2 * servers
            assert rows["last_rows_cached"] == servers * (e + d) - 2 * servers
        if k == e + 20:  # the late sample changed one more encoder row
            assert rows["last_rows_computed"] == 2 * servers + 1
    assert checked >= e + 30 - 14 - 1
    assert cached.status()["step_cache"]["bytes"] > 0


def test_a_failing_cache_falls_back_to_the_full_graph(steps_dir: Path, record_batch) -> None:
    engine = Engine.open(EngineConfig(model_dir=steps_dir, capacity=16))
    full = Engine.open(EngineConfig(model_dir=steps_dir, capacity=16, step_cache=False))
    step = engine.spec.step_seconds
    start = 1_795_000_000 - 1_795_000_000 % step
    sim = FleetSimulator(n_servers=6, seed=2, start=start)
    data = sim.run(40)
    for k, ts in enumerate(data["timestamp"].tolist()):
        metrics = np.column_stack([data[m][k] for m in METRIC_COLUMNS])
        states = [VALID_STATES[s] for s in data["state"][k].tolist()]
        batch = record_batch(np.full(6, ts), list(sim.fleet.names), metrics, states)
        engine.ingest(batch)
        full.ingest(batch)

    def broken(*args: object, **kwargs: object) -> None:
        raise MemoryError("no room to grow")

    assert engine._steps is not None
    engine._steps.prepare = broken  # type: ignore[method-assign]
    assert engine.run_forecast() is not None
    assert full.run_forecast() is not None
    assert engine.status()["step_cache"]["enabled"] is False  # off for good, and said so
    qa, qb = _raw(engine), _raw(full)
    for name in qb:
        np.testing.assert_array_equal(qa[name], qb[name])


def _tiny_plan() -> WindowPlan:
    """E 4, D 2, one real input (the row's value), one categorical."""
    return WindowPlan(
        encoder_length=4,
        prediction_length=2,
        min_encoder_length=1,
        step_seconds=300,
        real_kind=np.array([1], dtype=np.int64),
        real_arg=np.array([0], dtype=np.int64),
        real_mean=np.zeros(1),
        real_div=np.ones(1),
        cat_kind=np.array([0], dtype=np.int64),
        cat_arg=np.array([0], dtype=np.int64),
        state_codes=np.zeros(9, dtype=np.int64),
        decoder_state_code=0,
        transform=np.zeros(4, dtype=np.int64),
        min_scale=np.ones(4),
    )


def test_cache_slots_grow_with_the_fleet_up_to_capacity() -> None:
    plan = _tiny_plan()
    inputs = WindowInputs.allocate(plan, 3)
    inputs.encoder_cont[:] = np.arange(3 * 4, dtype=np.float32).reshape(3, 4, 1)
    inputs.decoder_cont[:] = 0.5
    inputs.encoder_lengths[:] = [4, 2, 4]
    cache = StepCache(capacity=100, encoder_length=4, prediction_length=2, embedding_size=3)
    calls: list[tuple[str, int]] = []

    def run_steps(feeds: list[tuple[str, dict[str, np.ndarray]]]) -> list[np.ndarray]:
        calls.extend((which, len(f["step_cont"])) for which, f in feeds)
        return [np.repeat(f["step_cont"][:, :1], 3, axis=1) + 1.0 for _, f in feeds]

    idx = np.array([0, 70, 5])
    ends = np.array([10, 10, 12])
    hit, computed = cache.prepare(inputs, idx, ends, inputs.encoder_lengths, run_steps)
    assert (hit, computed) == (0, 4 + 2 + 4 + 3 * 2)
    assert cache.slots == 71  # grown to the highest slot, not to capacity
    assert calls == [("encoder", 10), ("decoder", 6)]
    feed = cache.head_feed(inputs, 0, 3)
    # The embeddings of valid rows come back in window order; padding rows are zeros.
    np.testing.assert_array_equal(
        feed["encoder_embedding"][:, :, 0],
        np.array([[1, 2, 3, 4], [5, 6, 0, 0], [9, 10, 11, 12]], dtype=np.float32),
    )
    np.testing.assert_array_equal(feed["decoder_embedding"], np.full((3, 2, 3), 1.5, np.float32))
    np.testing.assert_array_equal(feed["static_cont"], inputs.encoder_cont[:, 0])
    # The same windows again: everything is cached.
    calls.clear()
    assert cache.prepare(inputs, idx, ends, inputs.encoder_lengths, run_steps) == (16, 0)
    assert calls == []
    # One step later, every window full: windows 0 and 2 keep 3 rows (same step, same
    # content) and get 1 new one; window 1 (2 rows before) has 4 rows of which none is a
    # row it had (its two old steps now hold other values). Decoder: 1 kept, 1 new each.
    shifted = WindowInputs.allocate(plan, 3)
    shifted.encoder_cont[:, :3] = inputs.encoder_cont[:, 1:]
    shifted.encoder_cont[:, 3] = 100.0
    shifted.decoder_cont[:] = 0.5
    shifted.encoder_lengths[:] = 4
    hit, computed = cache.prepare(shifted, idx, ends + 1, shifted.encoder_lengths, run_steps)
    assert (hit, computed) == (3 + 0 + 3 + 3, 1 + 4 + 1 + 3)
    feed = cache.head_feed(shifted, 1, 3)
    np.testing.assert_array_equal(
        feed["encoder_embedding"][:, :, 0],
        np.array([[6, 7, 8, 101], [10, 11, 12, 101]], dtype=np.float32),
    )
    assert cache.nbytes == 71 * (4 + 2) * (3 * 4 + 16)
    # Growing keeps what is cached: a new, higher slot computes only its own rows.
    more = WindowInputs.allocate(plan, 4)
    for name in ("encoder_cat", "encoder_cont", "decoder_cat", "decoder_cont", "encoder_lengths"):
        getattr(more, name)[:3] = getattr(shifted, name)
    more.encoder_cont[3] = 5.0
    more.decoder_cont[3] = 0.5
    more.encoder_lengths[3] = 4
    hit, computed = cache.prepare(
        more, np.array([0, 70, 5, 90]), np.array([11, 11, 13, 11]), more.encoder_lengths, run_steps
    )
    assert cache.slots == 100  # twice 71, capped at the capacity
    assert (hit, computed) == (3 * 6, 6)
    np.testing.assert_array_equal(
        cache.head_feed(more, 0, 1)["encoder_embedding"][0, :, 0], [2, 3, 4, 101]
    )


def test_misses_run_in_chunks_with_encoder_and_decoder_side_by_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fleetcast.appliance.step_cache as step_cache

    plan = _tiny_plan()
    inputs = WindowInputs.allocate(plan, 3)
    inputs.encoder_cont[:] = np.arange(3 * 4, dtype=np.float32).reshape(3, 4, 1)
    inputs.decoder_cont[:] = np.arange(3 * 2, dtype=np.float32).reshape(3, 2, 1) + 50
    inputs.encoder_lengths[:] = [4, 2, 4]
    idx, ends = np.array([0, 1, 2]), np.array([10, 10, 12])
    calls: list[list[tuple[str, int]]] = []

    def run_steps(feeds: list[tuple[str, dict[str, np.ndarray]]]) -> list[np.ndarray]:
        calls.append([(which, len(f["step_cont"])) for which, f in feeds])
        return [np.repeat(f["step_cont"][:, :1], 3, axis=1) + 1.0 for _, f in feeds]

    monkeypatch.setattr(step_cache, "MISS_CHUNK", 4)
    # 16 rows are too few for the workers: one chunk per call, on the calling thread.
    alone = StepCache(capacity=8, encoder_length=4, prediction_length=2, embedding_size=3)
    assert alone.prepare(inputs, idx, ends, inputs.encoder_lengths, run_steps, workers=2) == (
        0,
        16,
    )
    assert [len(call) for call in calls] == [1, 1, 1, 1, 1]
    calls.clear()
    monkeypatch.setattr(step_cache, "PARALLEL_MISSES", 16)
    chunked = StepCache(capacity=8, encoder_length=4, prediction_length=2, embedding_size=3)
    assert chunked.prepare(inputs, idx, ends, inputs.encoder_lengths, run_steps, workers=2) == (
        0,
        16,
    )
    # 10 encoder rows in chunks of 4 (4, 4, 2), then 6 decoder rows (4, 2); two per call, so
    # the last encoder chunk and the first decoder chunk run side by side.
    assert calls == [
        [("encoder", 4), ("encoder", 4)],
        [("encoder", 2), ("decoder", 4)],
        [("decoder", 2)],
    ]
    monkeypatch.setattr(step_cache, "MISS_CHUNK", 256)
    whole = StepCache(capacity=8, encoder_length=4, prediction_length=2, embedding_size=3)
    whole.prepare(inputs, idx, ends, inputs.encoder_lengths, run_steps)
    a, b = chunked.head_feed(inputs, 0, 3), whole.head_feed(inputs, 0, 3)
    for name in ("encoder_embedding", "decoder_embedding"):
        np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(alone.head_feed(inputs, 0, 3)[name], b[name])
    np.testing.assert_array_equal(
        a["decoder_embedding"][:, :, 0], np.arange(6, dtype=np.float32).reshape(3, 2) + 51
    )
