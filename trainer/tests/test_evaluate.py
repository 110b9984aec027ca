"""The accuracy table's scoring: every model on the same windows, MASE's one-step scale."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from fleetcast.trainer.dataset import prepare_frame
from fleetcast.trainer.evaluate import (
    BASELINES,
    _dense,
    _naive_scale,
    baseline_forecasts,
    holdout_windows,
    score,
)
from fleetcast.trainer.toydata import make_toy_table
from fleetcast.trainer.train import split_holdout

TARGETS = ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")
Q = (0.1, 0.5, 0.9)
SCALE = dict.fromkeys(TARGETS, 1.0)


def _cells(errors: dict[str, list[float]], d: int = 12):
    """Forecasts whose error at every step of window w is ``errors[model][w]``; actual
    values vary over windows and steps (a constant target is not judged)."""
    w = len(next(iter(errors.values())))
    actual = np.broadcast_to(
        np.arange(w)[:, None, None] * 10.0 + np.arange(d)[None, None, :], (w, len(TARGETS), d)
    ).copy()
    fc = {m: actual + np.array(e, dtype=np.float64)[:, None, None] for m, e in errors.items()}
    quantiles = np.stack([fc["tft"] - 1, fc["tft"], fc["tft"] + 1], axis=-1)
    return fc, quantiles, actual


def test_every_model_is_scored_on_the_same_windows() -> None:
    # Window 0 has no seasonal-naive forecast (a server's first day): the TFT's error there
    # must not count against it while seasonal naive is scored without it.
    fc, quantiles, actual = _cells(
        {
            "tft": [10.0, 1.0],
            "seasonal_naive": [math.nan, 2.0],
            "persistence": [20.0, 20.0],
            "linear_trend": [20.0, 20.0],
        }
    )
    result = score(fc, quantiles, Q, actual, TARGETS, SCALE)
    for t in TARGETS:
        for h in ("30min", "1hr"):
            assert result["mae"][t][h]["tft"] == pytest.approx(1.0)
            assert result["mae"][t][h]["persistence"] == pytest.approx(20.0)
            assert result["scored_windows"][t][h] == 1
            assert result["goal"]["per_target"][t][h]["beats_best_baseline"]
    assert result["goal"]["met"] is True


def test_a_nonfinite_tft_forecast_fails_its_cell() -> None:
    fc, quantiles, actual = _cells(
        {
            "tft": [1.0, math.nan],
            "seasonal_naive": [2.0, 2.0],
            "persistence": [2.0, 2.0],
            "linear_trend": [2.0, 2.0],
        }
    )
    result = score(fc, quantiles, Q, actual, TARGETS, SCALE)
    assert math.isnan(result["mae"]["cpu_pct"]["1hr"]["tft"])
    assert result["goal"]["per_target"]["cpu_pct"]["1hr"]["beats_best_baseline"] is False
    assert result["goal"]["met"] is False


def test_a_cell_without_any_scored_window_does_not_crash() -> None:
    fc, quantiles, actual = _cells({m: [1.0, 1.0] for m in ("tft", *BASELINES)})
    actual[:, :, 11] = np.nan  # step 12 (1hr) is a gap in every window
    result = score(fc, quantiles, Q, actual, TARGETS, SCALE)
    assert result["scored_windows"]["cpu_pct"]["1hr"] == 0
    assert math.isnan(result["goal"]["per_target"]["cpu_pct"]["1hr"]["best_baseline"])
    assert result["goal"]["met"] is False


def test_a_late_server_keeps_the_tft_and_seasonal_naive_on_the_same_windows(
    make_config,
) -> None:
    table = make_toy_table()
    ts = table.column("timestamp")
    last = pc.max(ts).as_py()
    late = pc.and_(
        pc.equal(table.column("server_name"), "ppetl001"),
        pc.less(ts, last - dt.timedelta(hours=30)),
    )
    frame = prepare_frame(table.filter(pc.invert(late)))
    config = make_config(evaluate=True)
    cutoff, _ = split_holdout(frame, config)
    ds = config.dataset_config()
    windows, _ = holdout_windows(frame, cutoff, ds, config.eval_stride, config.max_eval_windows)
    fc, actual = baseline_forecasts(_dense(frame, TARGETS), windows, TARGETS, 12)
    missing = ~np.isfinite(fc["seasonal_naive"][:, 0, 11])
    assert missing.any()  # the late server's first windows have no "yesterday"
    fc = {"tft": fc["persistence"] + 1.0, **fc}  # any forecast defined on every window
    quantiles = np.stack([fc["tft"]] * 3, axis=-1)
    result = score(fc, quantiles, Q, actual, TARGETS, SCALE)
    keep = ~missing & np.isfinite(actual[:, 0, 11])
    mae = result["mae"]["cpu_pct"]["1hr"]
    assert mae["seasonal_naive"] == pytest.approx(
        np.abs(fc["seasonal_naive"][keep, 0, 11] - actual[keep, 0, 11]).mean()
    )
    assert mae["tft"] == pytest.approx(np.abs(fc["tft"][keep, 0, 11] - actual[keep, 0, 11]).mean())
    assert result["scored_windows"]["cpu_pct"]["1hr"] == int(keep.sum())


def test_mase_scale_is_the_one_step_change_not_a_change_across_a_gap() -> None:
    frame = pd.DataFrame(
        {
            "server_name": pd.Categorical(["a"] * 5),
            "time_idx": [0, 1, 2, 12, 13],
            **{t: [0.0, 1.0, 2.0, 100.0, 101.0] for t in TARGETS},
        }
    )
    assert _naive_scale(frame, 13, TARGETS) == dict.fromkeys(TARGETS, 1.0)


def test_a_constant_target_is_not_judged_and_has_no_mase() -> None:
    """latency 0 throughout (not measured): every baseline is exact, so the goal could never
    be met; and its MASE divided by a fallback scale of 1 printed the MAE as a MASE."""
    from fleetcast.trainer.evaluate import format_accuracy_table

    fc, quantiles, actual = _cells({"tft": [1.0, 1.0], **{b: [2.0, 2.0] for b in BASELINES}})
    lat = TARGETS.index("latency_ms")
    actual[:, lat] = 0.0
    for m in fc:
        fc[m][:, lat] = 0.0 if m != "tft" else 0.3
    frame = pd.DataFrame(
        {
            "server_name": pd.Categorical(["a"] * 4),
            "time_idx": [0, 1, 2, 3],
            **{t: [0.0, 1.0, 3.0, 2.0] for t in TARGETS},
            "latency_ms": [0.0] * 4,
        }
    )
    scale = _naive_scale(frame, 3, TARGETS)
    assert scale["cpu_pct"] == pytest.approx(4 / 3)
    assert math.isnan(scale["latency_ms"])
    result = score(fc, quantiles, Q, actual, TARGETS, scale)
    assert result["goal"]["constant_targets"] == {"latency_ms": 0.0}
    assert result["goal"]["per_target"]["latency_ms"]["1hr"]["beats_best_baseline"] is False
    assert result["goal"]["met"] is True  # judged on the other three
    assert math.isnan(result["mase"]["latency_ms"]["1hr"]["tft"])
    text = format_accuracy_table({**result, "windows": 2, "servers": 1, "models": ["tft"]})
    assert "0.3 (n/a)" in text
    assert "note: latency_ms is 0 throughout the held-out tail (not measured?)" in text
    # Only constant targets: nothing is judged, the goal is not met.
    actual[:] = 5.0
    assert score(fc, quantiles, Q, actual, TARGETS, scale)["goal"]["met"] is False


def test_quantile_crossing_is_reported() -> None:
    fc, quantiles, actual = _cells({m: [1.0, 1.0] for m in ("tft", *BASELINES)})
    assert score(fc, quantiles, Q, actual, TARGETS, SCALE)["quantile_crossing"]["cpu_pct"] == 0
    quantiles[0, 0, :6, 0] = 100.0  # p10 above p50 on window 0's first 6 steps
    result = score(fc, quantiles, Q, actual, TARGETS, SCALE)
    assert result["quantile_crossing"]["cpu_pct"] == pytest.approx(6 / 24)
    assert result["quantile_crossing"]["mem_pct"] == 0


def test_a_goal_over_no_cell_is_not_met_and_the_table_says_why() -> None:
    """--prediction-steps 1 has no horizon (the goal read MET over no cell), and a fleet of
    one day has no window the seasonal-naive baseline can forecast (a table of *nan)."""
    from fleetcast.trainer.evaluate import format_accuracy_table

    fc, quantiles, actual = _cells({m: [1.0, 1.0] for m in ("tft", *BASELINES)}, d=1)
    short = score(fc, quantiles, Q, actual, TARGETS, SCALE)
    assert short["horizons"] == {}
    assert short["goal"]["met"] is False
    text = format_accuracy_table({**short, "windows": 2, "servers": 1, "models": ["tft"]})
    assert text.startswith("accuracy: none measured: no horizon")
    fc, quantiles, actual = _cells(
        {"tft": [1.0, 1.0], "seasonal_naive": [math.nan, math.nan],
         "persistence": [2.0, 2.0], "linear_trend": [2.0, 2.0]}
    )  # fmt: skip
    unscored = score(fc, quantiles, Q, actual, TARGETS, SCALE)
    assert unscored["goal"]["met"] is False
    text = format_accuracy_table(
        {**unscored, "windows": 2, "servers": 1, "models": ["tft", *BASELINES]}
    )
    assert text.startswith("accuracy: none of the 2 held-out windows could be scored")


def test_nonfinite_forecasts_fail_the_quality_rules() -> None:
    """The model forecast inf (a legal 3.4e38 in its data) and the run still printed PASS."""
    from fleetcast.trainer.train import nonfinite_cells

    accuracy = {
        "mae": {"cpu_pct": {"30min": {"tft": 1.0}, "1hr": {"tft": math.inf}},
                "mem_pct": {"30min": {"tft": math.nan}}},
        "scored_windows": {"cpu_pct": {"30min": 5, "1hr": 5}, "mem_pct": {"30min": 0}},
    }  # fmt: skip
    assert nonfinite_cells(accuracy) == ["cpu_pct@1hr"]  # a cell without windows says nothing
