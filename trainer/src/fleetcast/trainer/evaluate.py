"""Accuracy on the held-out tail: the TFT against three baselines on the same windows.

Baselines (each forecasts ``end + h`` from the history up to ``end``):

- ``seasonal_naive``: the value 288 steps (one day) before the target step — same time
  yesterday;
- ``persistence``: the last observed value;
- ``linear_trend``: a least-squares line through the last hour (12 steps) extrapolated,
  as Prometheus' ``predict_linear`` does, clipped to the metric's valid range.

Metrics per target and horizon (30min/1hr/8hr = steps 6/12/96): p50 MAE in the target's
unit, MASE = MAE / the in-sample MAE of the one-step naive forecast before the held-out
tail (pooled over the fleet; pairs of rows one step apart only), and the p10–p90 coverage of the
TFT. Every model is scored on the same windows of a cell (``scored_windows``): those whose
target step is observed (gaps are not scored) and that every baseline forecasts (seasonal
naive has no forecast in a server's first day). A non-finite TFT forecast on such a window
makes its MAE NaN, and the cell misses the goal. ``quantile_crossing``: per target, the
share of observed forecast steps whose quantiles are out of order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.schema import HORIZONS, METRIC_RANGES

if TYPE_CHECKING:
    import pandas as pd
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet

    from fleetcast.trainer.dataset import DatasetConfig
    from fleetcast.trainer.train import TrainConfig

__all__ = [
    "BASELINES",
    "SEASON_STEPS",
    "STATE_UNKNOWN",
    "baseline_forecasts",
    "evaluate_holdout",
    "format_accuracy_table",
    "holdout_windows",
    "score",
]

SEASON_STEPS = 288
"""One day in steps: the seasonal-naive lag."""
TREND_STEPS = 12
"""Steps of the linear-trend fit (one hour)."""
BASELINES: tuple[str, ...] = ("seasonal_naive", "persistence", "linear_trend")
STATE_UNKNOWN = "tft_state_unknown"
"""The TFT's p50 with every state null (sources without state labels); reported, not a goal."""


def holdout_windows(
    frame: pd.DataFrame, cutoff: int, config: DatasetConfig, stride: int, max_windows: int
) -> tuple[list[tuple[str, int]], int]:
    """Windows ``(server, end)`` whose whole forecast lies after ``cutoff``; returns (windows, stride).

    Per server, ends run from ``cutoff`` every ``stride`` steps while ``end + D`` stays within
    the server's data; an end needs an observed row and ``min_encoder_length`` steps of
    history. The stride grows until at most ``max_windows`` remain.
    """
    D = config.max_prediction_length
    servers = []
    for name, g in frame.groupby("server_name", observed=True):
        t = g["time_idx"].to_numpy()
        servers.append((str(name), t))
    while True:
        out: list[tuple[str, int]] = []
        for name, t in servers:
            present = set(t.tolist())
            first = int(t[0])
            for end in range(cutoff, int(t[-1]) - D + 1, stride):
                if end in present and end - first + 1 >= config.min_encoder_length:
                    out.append((name, end))
        if len(out) <= max_windows or stride > 10_000:
            return out, stride
        stride = int(np.ceil(stride * len(out) / max_windows))


def _dense(
    frame: pd.DataFrame, targets: tuple[str, ...]
) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """Per server: (first time_idx, raw (T, n_target) with NaN gaps, forward-filled copy)."""
    out = {}
    for name, g in frame.groupby("server_name", observed=True):
        t = g["time_idx"].to_numpy()
        t0 = int(t[0])
        raw = np.full((int(t[-1]) - t0 + 1, len(targets)), np.nan)
        raw[t - t0] = g[list(targets)].to_numpy(dtype=np.float64)
        filled = raw.copy()
        idx = np.where(~np.isnan(filled[:, 0]), np.arange(len(filled)), 0)
        np.maximum.accumulate(idx, out=idx)
        filled = filled[idx]
        out[str(name)] = (t0, raw, filled)
    return out


def baseline_forecasts(
    dense: dict[str, tuple[int, np.ndarray, np.ndarray]],
    windows: list[tuple[str, int]],
    targets: tuple[str, ...],
    D: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Baseline forecasts and actuals for each window: ({name: (W, n_target, D)}, actual (W, n_target, D))."""
    W, T = len(windows), len(targets)
    fc = {b: np.full((W, T, D), np.nan) for b in BASELINES}
    actual = np.full((W, T, D), np.nan)
    h = np.arange(1, D + 1)
    lo = np.array([METRIC_RANGES[t][0] for t in targets])[:, None]
    hi = np.array([METRIC_RANGES[t][1] for t in targets])[:, None]
    x = np.arange(-TREND_STEPS + 1, 1, dtype=np.float64)
    for w, (server, end) in enumerate(windows):
        t0, raw, filled = dense[server]
        e = end - t0
        fut = e + h
        ok = fut < len(raw)
        actual[w][:, ok] = raw[fut[ok]].T
        last = filled[e]
        fc["persistence"][w] = last[:, None]
        past = fut - SEASON_STEPS
        okp = past >= 0
        fc["seasonal_naive"][w][:, okp] = filled[past[okp]].T
        if e - TREND_STEPS + 1 >= 0:
            ys = filled[e - TREND_STEPS + 1 : e + 1]  # (12, T)
            slope = ((x - x.mean())[:, None] * (ys - ys.mean(0))).sum(0) / (
                (x - x.mean()) ** 2
            ).sum()
            at0 = ys.mean(0) - slope * x.mean()
            fc["linear_trend"][w] = np.clip(at0[:, None] + slope[:, None] * h[None, :], lo, hi)
        else:
            fc["linear_trend"][w] = last[:, None]
    return fc, actual


def _naive_scale(frame: pd.DataFrame, cutoff: int, targets: tuple[str, ...]) -> dict[str, float]:
    """Per target: the MAE of the one-step naive forecast up to ``cutoff`` (pooled).

    Only pairs of rows one step apart count: across a gap the change is a several-step one.
    """
    train = frame[frame["time_idx"] <= cutoff]
    g = train.groupby("server_name", observed=True)
    one_step = (train["time_idx"] - g["time_idx"].shift(1)).to_numpy(dtype=np.float64) == 1
    out = {}
    for t in targets:
        d = (train[t] - g[t].shift(1)).abs().to_numpy(dtype=np.float64)[one_step]
        v = float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
        # A target constant before the cutoff has no scale: its MASE is not defined (NaN,
        # "n/a"), not its MAE divided by 1 printed as a MASE.
        out[t] = v if v > 0 else float("nan")
    return out


def score(
    forecasts: dict[str, np.ndarray],
    quantiles: np.ndarray,
    q_levels: tuple[float, ...],
    actual: np.ndarray,
    targets: tuple[str, ...],
    naive_scale: dict[str, float],
) -> dict[str, Any]:
    """Metrics of point forecasts (``forecasts`` incl. "tft" = p50) and the TFT's quantiles.

    ``quantiles``: (W, n_target, D, n_q); ``actual`` and each forecast: (W, n_target, D).
    """
    D = actual.shape[-1]
    horizons = {k: v for k, v in HORIZONS.items() if v <= D}
    lo_i, hi_i = q_levels.index(min(q_levels)), q_levels.index(max(q_levels))
    mae: dict[str, Any] = {}
    mase: dict[str, Any] = {}
    cov: dict[str, Any] = {}
    scored: dict[str, Any] = {}
    crossing: dict[str, float] = {}
    constant: dict[str, float] = {}  # targets with one value over the held-out tail
    order = np.argsort(q_levels)
    baselines = [f for name, f in forecasts.items() if name in BASELINES]
    for ti, t in enumerate(targets):
        mae[t], mase[t], cov[t], scored[t] = {}, {}, {}, {}
        for hname, step in horizons.items():
            a = actual[:, ti, step - 1]
            # Every model on the same windows: an observed target step that every baseline
            # forecasts (seasonal naive has none in a server's first day). A non-finite TFT
            # forecast there is not dropped: it makes the TFT's MAE NaN (the cell fails).
            ok = np.isfinite(a)
            for f in baselines:
                ok &= np.isfinite(f[:, ti, step - 1])
            scored[t][hname] = int(ok.sum())
            mae[t][hname] = {}
            mase[t][hname] = {}
            for name, f in forecasts.items():
                err = np.abs(f[:, ti, step - 1] - a)[ok]
                v = float(err.mean()) if ok.any() else float("nan")
                mae[t][hname][name] = v
                mase[t][hname][name] = v / naive_scale[t]
            inside = (quantiles[:, ti, step - 1, lo_i] <= a) & (
                a <= quantiles[:, ti, step - 1, hi_i]
            )
            cov[t][hname] = float(inside[ok].mean()) if ok.any() else float("nan")
        a = actual[:, ti]
        ok = np.isfinite(a)
        inside = (quantiles[:, ti, :, lo_i] <= a) & (a <= quantiles[:, ti, :, hi_i])
        cov[t]["all_steps"] = float(inside[ok].mean()) if ok.any() else float("nan")
        # Quantiles out of order (p10 > p50 or p50 > p90): nothing forces them in order, and
        # a crossed p10-p90 interval covers nothing.
        crossed = (np.diff(quantiles[:, ti][..., order], axis=-1) < 0).any(axis=-1)
        crossing[t] = float(crossed[ok].mean()) if ok.any() else float("nan")
        seen = a[ok]
        if seen.size and seen.min() == seen.max():
            constant[t] = float(seen[0])
    goal: dict[str, Any] = {}
    for t in targets:
        row = {}
        for hname in horizons:
            m = mae[t][hname]
            finite = [m[b] for b in BASELINES if b in m and np.isfinite(m[b])]
            best_base = min(finite) if finite else float("nan")
            row[hname] = {
                "tft": m["tft"],
                "best_baseline": best_base,
                "beats_best_baseline": bool(m["tft"] < best_base),
                "no_worse_than_persistence": bool(m["tft"] <= m["persistence"]),
            }
        goal[t] = row
    # A target constant over the tail (a metric not measured: latency 0 throughout) is not
    # judged: every baseline is exact there, and no forecast can beat an error of 0.
    judged = [t for t in targets if t not in constant]
    met = all(
        goal[t][h]["beats_best_baseline"] for t in judged for h in ("1hr", "8hr") if h in horizons
    ) and all(goal[t]["30min"]["no_worse_than_persistence"] for t in judged if "30min" in horizons)
    # A goal over no cell is not met: no horizon within the prediction (--prediction-steps
    # below 6), no window every model could be scored on, or only constant targets.
    met = met and any(scored[t][h] > 0 for t in judged for h in horizons)
    return {
        "horizons": horizons,
        "mae": mae,
        "mase": mase,
        "coverage_p10_p90": cov,
        "scored_windows": scored,
        "quantile_crossing": crossing,
        "mase_scale": naive_scale,
        "goal": {"per_target": goal, "met": bool(met), "constant_targets": constant},
    }


def evaluate_holdout(
    model: TemporalFusionTransformer,
    dataset: TimeSeriesDataSet,
    frame: pd.DataFrame,
    cutoff: int,
    config: TrainConfig,
) -> dict[str, Any]:
    """The accuracy table of a trained model on the tail after ``cutoff`` (training_info.json)."""
    from fleetcast.trainer.predict import predict_windows

    ds_config = config.dataset_config()
    targets = ds_config.targets
    windows, stride = holdout_windows(
        frame, cutoff, ds_config, config.eval_stride, config.max_eval_windows
    )
    names = sorted(map(str, frame["server_name"].unique()))
    if not windows:
        return {
            "windows": 0,
            "note": "no held-out window fits; nothing measured",
            "servers_without_windows": names,
        }
    quant = predict_windows(model, dataset, frame, windows, config=ds_config)
    dense = _dense(frame, targets)
    fc, actual = baseline_forecasts(dense, windows, targets, ds_config.max_prediction_length)
    q_levels = tuple(config.quantiles)
    p50 = q_levels.index(0.5)
    fc = {"tft": quant[..., p50].astype(np.float64), **fc}
    _add_state_unknown(fc, model, dataset, frame, windows, ds_config, p50)
    result = score(fc, quant, q_levels, actual, targets, _naive_scale(frame, cutoff, targets))
    result.update(
        {
            "windows": len(windows),
            "servers": len({s for s, _ in windows}),
            # Servers whose data ends before the tail, or has too little of it for a window.
            "servers_without_windows": sorted(set(names) - {str(s) for s, _ in windows}),
            "stride_steps": stride,
            "models": ["tft", *BASELINES, *([STATE_UNKNOWN] if STATE_UNKNOWN in fc else [])],
        }
    )
    return result


def _add_state_unknown(
    fc: dict[str, np.ndarray],
    model: TemporalFusionTransformer,
    dataset: TimeSeriesDataSet,
    frame: pd.DataFrame,
    windows: list[tuple[str, int]],
    ds_config: DatasetConfig,
    p50: int,
) -> None:
    """Add the TFT's p50 on the same windows with every state null (:data:`STATE_UNKNOWN`)
    to ``fc`` when the data has states: what a deployment without state labels
    (Prometheus) gets. Reported beside the baselines; the goal is judged on ``tft``."""
    import pandas as pd

    from fleetcast.trainer.dataset import CATEGORICAL_NAN
    from fleetcast.trainer.predict import predict_windows

    if not (frame["state"].astype(object) != CATEGORICAL_NAN).any():
        return
    # assign: a new frame sharing every other column (copy-on-write), not a deep copy.
    nulled = frame.assign(state=pd.Categorical(np.full(len(frame), CATEGORICAL_NAN, dtype=object)))
    quant = predict_windows(model, dataset, nulled, windows, config=ds_config)
    fc[STATE_UNKNOWN] = quant[..., p50].astype(np.float64)


def _mase(value: float) -> str:
    """A MASE cell: n/a where the target had no scale (constant before the cutoff)."""
    return f"{value:.2f}" if np.isfinite(value) else "n/a"


def _cell(text: str) -> str:
    return f"{text:>22}"


def format_accuracy_table(accuracy: dict[str, Any]) -> str:
    """A plain-text table of p50 MAE (MASE) per target × horizon × model, plus coverage."""
    if not accuracy.get("windows"):
        return "accuracy: no held-out windows"
    counts = [n for rows in (accuracy.get("scored_windows") or {}).values() for n in rows.values()]
    if not accuracy.get("horizons"):
        return (
            "accuracy: none measured: no horizon (30min = 6 steps, 1hr = 12, 8hr = 96) "
            "falls within the prediction; goal NOT MET"
        )
    if counts and max(counts) == 0:
        return (
            f"accuracy: none of the {accuracy['windows']} held-out windows could be scored: "
            "a window is scored at a horizon where its target step was observed and every "
            "baseline forecasts it (seasonal naive needs the day before). A gap over the "
            "held-out tail, or less than a day of data before it? (fleetcast validate reports "
            "missing steps; use more hours of data); goal NOT MET"
        )
    models = accuracy["models"]
    missing = accuracy.get("servers_not_evaluated", 0)
    lines = [
        f"accuracy on {accuracy['windows']} held-out windows of {accuracy['servers']} servers "
        + (
            f"({missing} more have none: training_info.json -> servers_not_evaluated; "
            if missing
            else "("
        )
        + "p50 MAE in the target's unit, MASE in brackets; * = best)",
        f"{'target':<14}{'horizon':<8}"
        + "".join(f"{m:>22}" for m in models)
        + f"{'p10-p90 cov':>13}",
    ]
    for t, rows in accuracy["mae"].items():
        for h, vals in rows.items():
            finite = [k for k in vals if np.isfinite(vals[k])]
            best = min(finite, key=lambda k: vals[k]) if finite else None
            mase = accuracy["mase"][t][h]
            cells = "".join(
                _cell(("*" if m == best else "") + f"{vals[m]:.4g} ({_mase(mase[m])})")
                for m in models
            )
            lines.append(f"{t:<14}{h:<8}{cells}{accuracy['coverage_p10_p90'][t][h]:>13.2f}")
    lines.append(
        f"goal (beat best baseline at 1hr/8hr, ≤ persistence at 30min): "
        f"{'MET' if accuracy['goal']['met'] else 'NOT MET'}"
    )
    for t, value in (accuracy["goal"].get("constant_targets") or {}).items():
        lines.append(
            f"note: {t} is {value:g} throughout the held-out tail (not measured?): every "
            "baseline is exact there, so it is not part of the goal"
        )
    if accuracy.get("selected_on_holdout"):
        lines.append(
            "note: validated on the held-out tail (--val-hours 0): these windows also chose "
            "the model (early stopping, best epoch), so the table is optimistic"
        )
    return "\n".join(lines)
