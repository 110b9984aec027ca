"""Forecasts per window: unknown servers, new profile members, per-server scale, constants."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fleetcast.contract.schema import METRIC_COLUMNS, arrow_schema
from fleetcast.trainer.bundle import load_bundle
from fleetcast.trainer.dataset import DatasetConfig, prepare_frame
from fleetcast.trainer.predict import predict_windows

_START = 1_767_225_600


def _constant_table(
    levels: dict[str, tuple[str, tuple[float, float, float, float]]], steps: int = 60
) -> pa.Table:
    ts, names, profiles, cols = [], [], [], {m: [] for m in METRIC_COLUMNS}
    for name, (profile, values) in levels.items():
        for i in range(steps):
            ts.append((_START + i * 300) * 1_000_000)
            names.append(name)
            profiles.append(profile)
            for m, v in zip(METRIC_COLUMNS, values, strict=True):
                cols[m].append(v)
    schema = arrow_schema()
    return pa.table(
        {
            "timestamp": pa.array(ts, pa.int64()).cast(schema.field("timestamp").type),
            "server_name": names,
            **{m: pa.array(cols[m], pa.float32()) for m in METRIC_COLUMNS},
            "state": pa.array(["healthy"] * len(ts), pa.string()),
            "profile": profiles,
        },
        schema=schema,
    )


LEVELS = {
    # two training servers with very different levels: a per-server scale looked up on the
    # wrong row (the group-id encoder pitfall) would forecast one at the other's level
    "ppweb001": ("web_api", (5.0, 10.0, 0.01, 1.0)),
    "ppdb001": ("database", (90.0, 80.0, 50.0, 300.0)),
    "ppetl001": ("data_ingest", (0.0, 0.0, 0.0, 0.0)),  # an offline server's zeros
}


def _windows(frame):
    end = int(frame["time_idx"].max())
    return [(name, end) for name in LEVELS]


def test_untrained_output_is_exactly_persistence_per_target(toy_table, make_config) -> None:
    """Zero output layer: every target returns its constant, in its own units (expm1, not exp)."""
    from fleetcast.trainer.dataset import build_dataset
    from fleetcast.trainer.train import build_model

    config = make_config()
    frame_train = prepare_frame(toy_table)
    ds = build_dataset(frame_train, config.dataset_config())
    model = build_model(ds, config, [1.0] * 4).eval()
    frame = prepare_frame(_constant_table(LEVELS))
    out = predict_windows(model, ds, frame, _windows(frame))
    for w, (_, values) in enumerate(LEVELS.values()):
        for t, value in enumerate(values):
            np.testing.assert_allclose(out[w, t], value, rtol=1e-5, atol=1e-6)


def test_trained_forecast_of_constant_series_stays_at_each_servers_level(bundle_dir) -> None:
    bundle = load_bundle(bundle_dir)
    frame = prepare_frame(_constant_table(LEVELS))
    out = bundle.predict_windows(frame, _windows(frame))  # (W, T, D, Q)
    p50 = out[..., 1]
    assert np.isfinite(out).all()
    for w, (_, values) in enumerate(LEVELS.values()):
        cpu, mem, disk, lat = values
        assert np.abs(p50[w, 0] - cpu).max() < 2.0
        assert np.abs(p50[w, 1] - mem).max() < 2.0
        assert np.abs(np.log1p(p50[w, 2]) - np.log1p(disk)).max() < 0.1
        assert np.abs(np.log1p(p50[w, 3]) - np.log1p(lat)).max() < 0.1


def test_unknown_server_and_new_profile_member_get_forecasts(bundle_dir, toy_table) -> None:
    bundle = load_bundle(bundle_dir)
    levels = {
        "ppgen900": ("generic", (40.0, 50.0, 1.0, 20.0)),  # profile never seen in training
        "pprisk001": ("risk_analytics", (60.0, 30.0, 2.0, 8.0)),
        "some-host": ("web_api", (20.0, 60.0, 0.5, 12.0)),  # unknown server, known profile
    }
    frame = prepare_frame(_constant_table(levels))
    ds = bundle.build_dataset(frame, predict=True)
    x, _ = next(iter(ds.to_dataloader(train=False, batch_size=8)))
    profile_col = ds.flat_categoricals.index("profile")
    server_col = ds.flat_categoricals.index("server_id")
    assert (x["encoder_cat"][:, 0, server_col] == 0).all()  # unknown server -> code 0
    assert (x["encoder_cat"][:, 0, profile_col] > 0).all()  # every profile has its own code
    end = int(frame["time_idx"].max())
    out = bundle.predict_windows(frame, [(n, end) for n in levels])
    assert out.shape == (3, 4, 12, 3)
    assert np.isfinite(out).all()
    for w, (_, values) in enumerate(levels.values()):
        assert abs(out[w, 0, 0, 1] - values[0]) < 5.0


def test_window_frame_refuses_too_little_history(toy_table) -> None:
    from fleetcast.trainer.predict import window_frame

    frame = prepare_frame(toy_table)
    first = int(frame["time_idx"].min())
    with pytest.raises(ValueError, match="history"):
        window_frame(
            frame,
            [("ppdb001", first + 3)],
            DatasetConfig(max_encoder_length=48, max_prediction_length=12),
        )
    with pytest.raises(ValueError, match="not in the data"):
        window_frame(frame, [("nope", first + 100)], DatasetConfig())


def test_constant_windows_give_finite_losses(bundle_dir) -> None:
    """An offline server's zeros and other flat series: floored scale, no NaN in the loss."""
    import torch

    bundle = load_bundle(bundle_dir)
    frame = prepare_frame(_constant_table(LEVELS))
    ds = bundle.build_dataset(frame)
    x, y = next(iter(ds.to_dataloader(train=False, batch_size=64)))
    with torch.no_grad():
        loss = bundle.model.loss(bundle.model(x)["prediction"], y)
    assert torch.isfinite(loss)


def test_short_history_window_of_a_late_starting_server(bundle_dir) -> None:
    """A server that started 20 steps ago (fewer than the encoder's 48) is forecast."""
    bundle = load_bundle(bundle_dir)
    frame = prepare_frame(_constant_table(LEVELS, steps=20))
    end = int(frame["time_idx"].max())
    out = bundle.predict_windows(frame, [("ppweb001", end)])
    assert np.isfinite(out).all()
    assert abs(out[0, 0, 0, 1] - 5.0) < 2.0
