"""The split: training part, validation part, held-out tail; the tail chooses nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest

from fleetcast.trainer.dataset import build_dataset, fit_scale_scalers, prepare_frame
from fleetcast.trainer.toydata import make_toy_table
from fleetcast.trainer.train import TrainConfig, split_holdout, split_validation, train_model
from fleetcast.trainer.train_setup import longest_encoder_windows

METRICS = ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")


def _other_tail(table: pa.Table, cutoff_seconds: int) -> pa.Table:
    """``table`` with every metric after ``cutoff_seconds`` taken from another toy fleet."""
    other = make_toy_table(seed=5)
    seconds = table["timestamp"].cast(pa.int64()).to_numpy() // 1_000_000
    tail = seconds > cutoff_seconds
    for name in METRICS:
        mixed = np.where(tail, other[name].to_numpy(), table[name].to_numpy())
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), pa.array(mixed, type=pa.float32()))
    return table


def _run(table: pa.Table, config: TrainConfig):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_model(table, config)


def test_the_held_out_tail_does_not_choose_the_model(make_config) -> None:
    # Validation loss decides early stopping, the learning-rate schedule and the best epoch:
    # measured on the held-out tail, the accuracy table would grade the model on the windows
    # that chose it. Other values in the tail must leave the trained model unchanged.
    table = make_toy_table()
    config = make_config(epochs=2)
    cutoff, _ = split_holdout(prepare_frame(table), config)
    changed = _other_tail(table, cutoff * 300)
    model_a, _, info_a = _run(table, config)
    model_b, _, info_b = _run(changed, config)
    assert [r["val_loss"] for r in info_a["history"]] == [r["val_loss"] for r in info_b["history"]]
    state_b = model_b.state_dict()
    for name, value in model_a.state_dict().items():
        assert bool((value == state_b[name]).all()), name
    split = info_a["split"]
    assert split["validation"] == "before_holdout"
    assert split["train_cutoff_time_idx"] + split["validation_steps"] == cutoff
    assert info_a["windows"]["validation"] == len(_validation_windows(make_config)[1])


def _validation_windows(make_config):
    """(raw, deduplicated) validation datasets of the toy fleet, as train_model builds them."""
    config = make_config()
    ds_config = config.dataset_config()
    frame = prepare_frame(make_toy_table(), unknown_server_fraction=0.1)
    cutoff, _ = split_holdout(frame, config)
    train_cutoff, _ = split_validation(frame, config, cutoff)
    scalers = fit_scale_scalers(frame[frame["time_idx"] <= train_cutoff], ds_config)
    raw = build_dataset(
        frame[frame["time_idx"] <= cutoff],
        ds_config,
        scalers=scalers,
        min_prediction_idx=train_cutoff + 1,
    )
    return raw, longest_encoder_windows(raw)


def test_validation_has_one_window_per_predicted_span_with_all_its_history(make_config) -> None:
    raw, val = _validation_windows(make_config)
    key = ["server_name", "time_idx_first_prediction"]
    before = raw.decoded_index
    # pytorch-forecasting predicts each series' last steps again with shorter encoders
    assert before.duplicated(key).any()
    after = val.decoded_index
    assert not after.duplicated(key).any()
    assert len(after) == len(before.drop_duplicates(key))
    for d in (before, after):
        d["encoder"] = d["time_idx_first_prediction"] - d["time_idx_first"]
    longest = before.groupby(key, observed=True)["encoder"].max()
    kept = after.set_index(key)["encoder"]
    assert (kept == longest.loc[kept.index]).all()
    last = after.groupby("server_name", observed=True)["time_idx_first_prediction"].idxmax()
    assert (after.loc[last, "encoder"] == 48).all()  # the last span: all the history there is


def test_validation_on_the_tail_stays_available_and_is_flagged(make_config) -> None:
    table = make_toy_table()
    config = make_config(epochs=1, val_steps=0, evaluate=True)
    _, _, info = _run(table, config)
    assert info["split"]["validation"] == "holdout"
    assert info["split"]["train_cutoff_time_idx"] == info["split"]["cutoff_time_idx"]
    assert info["accuracy"]["selected_on_holdout"] is True
    from fleetcast.trainer.evaluate import format_accuracy_table

    assert "optimistic" in format_accuracy_table(info["accuracy"])


def test_split_validation_sizes(make_config) -> None:
    frame = prepare_frame(make_toy_table())  # 72 h = 864 steps
    config = make_config()
    cutoff, holdout = split_holdout(frame, config)
    assert holdout == 288  # a third
    train_cutoff, val = split_validation(frame, config, cutoff)
    assert val == 288  # 24 h, at most a third
    assert train_cutoff == cutoff - 288
    assert split_validation(frame, make_config(val_steps=0), cutoff) == (cutoff, 0)
    assert split_validation(frame, make_config(val_steps=36), cutoff) == (cutoff - 36, 36)


def test_data_too_short_for_a_validation_part_is_refused_with_a_way_out(make_config) -> None:
    frame = prepare_frame(make_toy_table(hours=6))  # 72 steps: 24 held out, 48 before
    config = make_config(min_encoder=12, prediction=24, encoder=24)
    cutoff, _ = split_holdout(frame, config)
    with pytest.raises(ValueError, match="--val-hours 0"):
        split_validation(frame, config, cutoff)
    assert split_validation(frame, make_config(val_steps=0), cutoff) == (cutoff, 0)


@pytest.mark.parametrize("value", [-1, 5, 1.5, True])
def test_val_steps_is_checked(value) -> None:
    with pytest.raises(ValueError, match="--val-hours"):
        TrainConfig(prediction=12, val_steps=value).validate()


def _without(table: pa.Table, lo_idx: int, hi_idx: int) -> pa.Table:
    """``table`` without the rows of steps ``lo_idx < time_idx <= hi_idx`` (every server)."""
    import pyarrow.compute as pc

    steps = pc.divide(pc.cast(table["timestamp"], pa.int64()), 300_000_000)
    keep = pc.or_(pc.less_equal(steps, lo_idx), pc.greater(steps, hi_idx))
    return table.filter(keep)


def test_a_validation_part_that_is_all_gaps_is_refused_in_words(make_config) -> None:
    """Gaps are only warnings of the contract, yet a fleet-wide outage over the validation
    part (or over the held-out tail with --val-hours 0) made pytorch-forecasting fail an
    assertion: a traceback on valid data."""
    table = make_toy_table()
    config = make_config()
    frame = prepare_frame(table)
    cutoff, _ = split_holdout(frame, config)
    train_cutoff, _ = split_validation(frame, config, cutoff)
    with pytest.raises(ValueError, match="no validation window") as err:
        _run(_without(table, train_cutoff, cutoff), config)
    assert "--val-hours 0" in str(err.value)
    assert "See trainer/README.md#what-a-run-does" in str(err.value)
    tail_config = make_config(val_steps=0)
    t_max = int(frame["time_idx"].max())
    with pytest.raises(ValueError, match="no held-out window"):
        _run(_without(table, cutoff, t_max - 1), tail_config)
