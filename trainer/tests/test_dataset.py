"""Features: prepare_frame, calendar features, the dataset's per-window scaling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetcast.contract.encoder import server_id
from fleetcast.trainer.dataset import (
    CATEGORICAL_NAN,
    DatasetConfig,
    build_dataset,
    calendar_features,
    prepare_frame,
    unknown_id_servers,
)


def test_calendar_features_of_known_instants() -> None:
    # 2026-01-05 is a Monday; 00:00 UTC -> hour 0, dow 0; 18:00 -> hour 18, dow 0.75
    monday = int(pd.Timestamp("2026-01-05T00:00:00Z").timestamp()) // 300
    cal = calendar_features(np.array([monday, monday + 18 * 12]))
    np.testing.assert_allclose(cal[0], [0.0, 1.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(
        cal[1],
        [
            np.sin(2 * np.pi * 18 / 24),
            np.cos(2 * np.pi * 18 / 24),
            np.sin(2 * np.pi * 0.75 / 7),
            np.cos(2 * np.pi * 0.75 / 7),
        ],
        atol=1e-6,
    )


def test_prepare_frame_columns(toy_table) -> None:
    frame = prepare_frame(toy_table)
    first = toy_table.column("timestamp")[0].as_py()
    assert frame["time_idx"].dtype == np.int64
    assert frame["time_idx"].min() == int(first.timestamp()) // 300
    assert (frame["state"] == CATEGORICAL_NAN).sum() == toy_table.column("state").null_count
    web = frame[frame["server_name"] == "ppweb001"]
    assert set(web["server_id"].astype(str)) == {server_id("ppweb001")}
    assert frame.groupby("server_name", observed=True)["time_idx"].is_monotonic_increasing.all()


def test_unknown_id_servers_are_deterministic_and_about_ten_percent() -> None:
    names = [f"ppweb{i:03d}" for i in range(90)]
    chosen = unknown_id_servers(names, 0.1)
    assert len(chosen) == 9
    assert chosen == unknown_id_servers(list(reversed(names)), 0.1)
    assert unknown_id_servers(names[:3], 0.1) == set()


def test_window_scaling_in_samples(toy_table) -> None:
    frame = prepare_frame(toy_table)
    config = DatasetConfig(max_encoder_length=48, max_prediction_length=12)
    ds = build_dataset(frame, config)
    x, (_y, _) = ds[200]
    enc_len = int(x["encoder_length"])
    for i, target in enumerate(config.targets):
        raw = x["encoder_target"][i].numpy().astype(np.float64)
        transform = config.transforms[target]
        t = np.log1p(raw) if transform == "log1p" else raw
        centre, scale = x["target_scale"][i]
        assert centre == pytest.approx(t[-1], rel=1e-5)
        assert scale == pytest.approx(max(np.std(t, ddof=1), config.min_scale[target]), rel=1e-4)
        # the normalised target input is (transformed - centre) / scale
        col = ds.reals.index(target)
        np.testing.assert_allclose(
            x["x_cont"][:enc_len, col].numpy(), (t - centre) / scale, rtol=1e-4, atol=1e-4
        )
        # the <target>_center static real is the centre, standard-scaled by its scaler
        scaler = ds.get_parameters()["scalers"][f"{target}_center"]
        expected = (centre - scaler.mean_[0]) / scaler.scale_[0]
        assert float(x["x_cont"][0, ds.reals.index(f"{target}_center")]) == pytest.approx(
            expected, rel=1e-4, abs=1e-5
        )


def test_gap_is_forward_filled(toy_table) -> None:
    frame = prepare_frame(toy_table)
    config = DatasetConfig(max_encoder_length=48, max_prediction_length=12)
    ds = build_dataset(frame, config)
    index = ds.index
    rows_in_window = index["index_end"] - index["index_start"] + 1
    spanning = index[index["sequence_length"] > rows_in_window]
    assert len(spanning) > 0, "expected windows across ppweb001's 6-step gap"
    row = spanning.iloc[0]
    x, (y, _) = ds[int(spanning.index[0])]
    assert int(x["encoder_length"]) + int(x["decoder_length"]) == int(row["sequence_length"])
    cpu = np.concatenate([x["encoder_target"][0].numpy(), y[0].numpy()])
    # the first window holding the gap ends on the first row after it: the 6 missing steps
    # repeat the last value before the gap
    missing = int(row["sequence_length"] - (row["index_end"] - row["index_start"] + 1))
    assert missing == 6
    assert np.all(cpu[-missing - 2 : -1] == cpu[-missing - 2])
    assert cpu[-1] != cpu[-2]


def test_fixed_input_scaling_feeds_levels_with_one_global_scale(toy_table) -> None:
    frame = prepare_frame(toy_table)
    config = DatasetConfig(max_encoder_length=48, max_prediction_length=12, input_scaling="fixed")
    ds = build_dataset(frame, config)
    levels = [f"{t}_level" for t in config.targets]
    # No window centre/scale statics, no window-scaled targets among the inputs.
    assert ds.reals == ["encoder_length", "hour_sin", "hour_cos", "dow_sin", "dow_cos", *levels]
    assert not any(r.endswith(("_center", "_scale")) for r in ds.reals)
    scalers = ds.get_parameters()["scalers"]
    for index in (200, 201, 350):
        x, _ = ds[index]
        enc_len = int(x["encoder_length"])
        for i, target in enumerate(config.targets):
            raw = x["encoder_target"][i].numpy().astype(np.float64)
            t = np.log1p(raw) if config.transforms[target] == "log1p" else raw
            scaler = scalers[f"{target}_level"]
            # one global mean/std: the same value of a step gives the same input in any window
            np.testing.assert_allclose(
                x["x_cont"][:enc_len, ds.reals.index(f"{target}_level")].numpy(),
                (t - scaler.mean_[0]) / scaler.scale_[0],
                rtol=1e-4,
                atol=1e-4,
            )
            # the output stays scaled relative to the window (centre = last value)
            assert float(x["target_scale"][i][0]) == pytest.approx(t[-1], rel=1e-5)
    # The level scaler is the transformed metric's mean and std over the frame.
    lat = np.log1p(frame["latency_ms"].to_numpy(dtype=np.float64))
    assert scalers["latency_ms_level"].mean_[0] == pytest.approx(lat.mean(), rel=1e-6)
    assert scalers["latency_ms_level"].scale_[0] == pytest.approx(lat.std(), rel=1e-6)
    with pytest.raises(ValueError, match="input_scaling must be one of"):
        DatasetConfig(input_scaling="per-server")
    assert DatasetConfig.from_dict({**config.to_dict()}).input_scaling == "fixed"
    legacy = config.to_dict()
    del legacy["input_scaling"]  # bundles written before the choice existed
    assert DatasetConfig.from_dict(legacy).input_scaling == "window"
