"""Features: prepare_frame, calendar features, the dataset's per-window scaling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
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
    # round(0.1 * n) is 0 up to 5 servers: one is nulled all the same, or the unknown
    # embedding (every new server's) would never be trained.
    assert len(unknown_id_servers(names[:3], 0.1)) == 1
    assert len(unknown_id_servers(names[:2], 0.1)) == 1
    assert unknown_id_servers(names[:1], 0.1) == set()  # one server keeps its own ID
    assert unknown_id_servers(names, 0.0) == set()


def test_window_scaling_in_samples(toy_table) -> None:
    frame = prepare_frame(toy_table)
    config = DatasetConfig(
        max_encoder_length=48, max_prediction_length=12, input_scaling="window", day_ago=False
    )
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
    config = DatasetConfig(
        max_encoder_length=48, max_prediction_length=12, input_scaling="fixed", day_ago=False
    )
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
    del legacy["input_scaling"], legacy["day_ago"]  # bundles written before the choices
    old = DatasetConfig.from_dict(legacy)
    assert (old.input_scaling, old.day_ago) == ("window", False)
    new = DatasetConfig()  # the training default (contract 1.1.0)
    assert (new.input_scaling, new.day_ago, new.max_encoder_length) == ("fixed", True, 96)


def test_day_ago_values_forward_fill_and_backward_fill_before_the_first_step() -> None:
    from fleetcast.trainer.dataset import day_ago_at, day_ago_values

    steps = np.array([10, 11, 13, 20, 30, 31, 5, 6, 7])  # two series: rows 0..5 and 6..8
    values = np.arange(9, dtype=np.float64) * 10.0
    got = day_ago_values(steps, values, np.array([0, 6]), lag=10)
    # series 1: 10-10=0 and 11-10=1, 13-10=3 are before its first step -> first value (0);
    # 20-10=10 -> row 0; 30-10=20 -> row 3; 31-10=21 -> last at or before 21 = row 3
    # series 2: every lag is before its first step -> its first value (60)
    np.testing.assert_array_equal(got, [0, 0, 0, 0, 30, 30, 60, 60, 60])
    np.testing.assert_array_equal(
        day_ago_at(steps[:6], values[:6], np.array([22, 23]), 10), [10, 20]
    )


def test_day_ago_inputs_are_known_reals_equal_to_the_contract_rule(toy_table) -> None:
    """The trainer's ``<target>_day_ago`` columns follow the contract's rule (day_ago_rows)
    over a whole series with a gap and its first day; the dataset takes them as known reals
    scaled like the level columns."""
    from fleetcast.contract.features import day_ago_rows

    frame = prepare_frame(toy_table)
    config = DatasetConfig(
        max_encoder_length=48, max_prediction_length=12, input_scaling="fixed", day_ago=True
    )
    ds = build_dataset(frame, config)
    lagged = [f"{t}_day_ago" for t in config.targets]
    assert ds.time_varying_known_reals == ["hour_sin", "hour_cos", "dow_sin", "dow_cos", *lagged]
    scalers = ds.get_parameters()["scalers"]
    # day-ago inputs share the level scaler's mean and std
    for t in config.targets:
        assert scalers[f"{t}_day_ago"].mean_[0] == scalers[f"{t}_level"].mean_[0]
    # The server with a gap: every row, from its first day (backward fill) past the gap.
    g = frame[frame["server_name"] == "ppweb001"]
    steps = g["time_idx"].to_numpy()
    assert (np.diff(steps) > 1).any()
    raw = g[list(config.targets)].to_numpy(dtype=np.float64)
    span = int(steps[-1] - steps[0]) + 1

    class _Spec:  # the fields day_ago_rows reads: one "window" over the whole series
        encoder_length, prediction_length, max_lag = span, 1, config.day_steps

    want = day_ago_rows(_Spec, steps, raw, span, int(steps[-1]))[steps - steps[0]]
    for j, t in enumerate(config.targets):
        w = want[:, j] if config.transforms[t] == "identity" else np.log1p(want[:, j])
        np.testing.assert_allclose(g[f"{t}_day_ago"].to_numpy(), w, rtol=1e-6)
    first_day = steps < steps[0] + config.day_steps
    assert (g["cpu_pct_day_ago"].to_numpy()[first_day] == np.float32(raw[0, 0])).all()
    assert DatasetConfig.from_dict(config.to_dict()).day_ago is True
    with pytest.raises(ValueError, match="at most one day"):
        DatasetConfig(max_prediction_length=300, day_ago=True)


def test_a_utc_alias_zone_and_string_views_read_as_the_contracts_types(toy_table, tmp_path) -> None:
    """Both pass `fleetcast validate`; training then stopped at "The zoneinfo module or pytz
    package must be installed" (a zone named Z) or an ArrowNotImplementedError (string_view
    names, with --servers-sample)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fleetcast.trainer.data_io import read_training_table

    table = toy_table
    for name, kind in (
        ("timestamp", pa.timestamp(table.schema.field("timestamp").type.unit, "Z")),
        ("server_name", pa.string_view()),
    ):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, pa.field(name, kind), table.column(i).cast(kind))
    path = tmp_path / "odd.parquet"
    pq.write_table(table, path)
    expected = prepare_frame(toy_table)
    pd.testing.assert_frame_equal(prepare_frame(path), expected)
    pd.testing.assert_frame_equal(prepare_frame(table), expected)
    sampled = read_training_table(path, servers_sample=1)
    assert sampled.schema.field("server_name").type == pa.string()
    assert len(set(sampled.column("server_name").to_pylist())) == 1


def test_state_is_nulled_on_whole_days_of_the_training_part_only(toy_table) -> None:
    """null_state_blocks: a deterministic share of each server's days loses its state up to
    the cutoff, so the model learns the null state that sources without labels send."""
    from fleetcast.trainer.data_step import null_state_blocks

    day = 288
    frame = prepare_frame(toy_table)
    before = frame["state"].astype(object).to_numpy().copy()
    cutoff = int(frame["time_idx"].max()) - day  # the last day is the held-out tail here
    twin = prepare_frame(toy_table)
    nulled = null_state_blocks(frame, 0.5, cutoff, day)
    assert null_state_blocks(twin, 0.5, cutoff, day) == nulled > 0  # deterministic
    after = frame["state"].astype(object).to_numpy()
    np.testing.assert_array_equal(after, twin["state"].astype(object).to_numpy())
    hit = (after != before) & (after == CATEGORICAL_NAN)
    assert hit.sum() == nulled
    assert ((after == before) | hit).all()
    steps = frame["time_idx"].to_numpy()
    assert not hit[steps > cutoff].any()  # the held-out tail keeps its states
    # Whole days: within a (server, day) up to the cutoff, every labelled row or none.
    keys = frame["server_name"].astype(str) + ":" + (steps // day).astype(str)
    labelled = before != CATEGORICAL_NAN
    share = (
        pd.Series(hit[labelled & (steps <= cutoff)])
        .groupby(keys[labelled & (steps <= cutoff)].to_numpy())
        .mean()
    )
    assert set(share.round(6).tolist()) <= {0.0, 1.0}
    assert 0 < share.mean() < 1
    # Nothing to do: a fraction of 0, or data without states.
    assert null_state_blocks(prepare_frame(toy_table), 0.0, cutoff, day) == 0
    blank = prepare_frame(toy_table.set_column(
        toy_table.schema.get_field_index("state"), "state",
        pa.nulls(len(toy_table), toy_table.schema.field("state").type),
    ))  # fmt: skip
    assert null_state_blocks(blank, 0.5, cutoff, day) == 0
