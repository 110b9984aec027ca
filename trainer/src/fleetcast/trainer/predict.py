"""Forecasts with pytorch-forecasting's own ``predict()`` for chosen windows of a frame.

This is the PyTorch reference the ONNX export is compared against (benchmarks, exporter):
a window is ``(server_name, end_time_idx)`` — ``end_time_idx`` is the window's last
*observed* step; the encoder is the server's rows in ``(end − E, end]`` (gaps forward-filled
by pytorch-forecasting) and the forecast covers ``end + 1 … end + D``. Decoder rows are
synthesised from the calendar alone (their unknown inputs are ignored by the model), so a
window's forecast never depends on data after ``end``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fleetcast.trainer.dataset import (
    CATEGORICAL_NAN,
    DAY_AGO_SUFFIX,
    GROUP_ID,
    KNOWN_REALS,
    LEVEL_SUFFIX,
    DatasetConfig,
    calendar_features,
    day_ago_at,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet

__all__ = ["WINDOW_SEPARATOR", "predict_windows", "window_frame"]

WINDOW_SEPARATOR = "@"
"""Group key of a window in :func:`window_frame`: ``f"{server_name}@{end_time_idx}"``."""


def window_frame(
    frame: pd.DataFrame, windows: Sequence[tuple[str, int]], config: DatasetConfig
) -> pd.DataFrame:
    """One group per window: its encoder rows from ``frame`` plus ``D`` synthesised decoder rows.

    ``frame``: a :func:`~fleetcast.trainer.dataset.prepare_frame` frame. Raises ValueError
    for a window whose server is absent or that has fewer than ``min_encoder_length`` steps
    of history in ``(end − E, end]`` or no row at ``end``.
    """
    E = config.max_encoder_length
    D = config.max_prediction_length
    by_server = {
        str(name): g for name, g in frame.groupby("server_name", observed=True, sort=False)
    }
    parts = []
    for server, end in windows:
        end = int(end)
        g = by_server.get(str(server))
        if g is None:
            raise ValueError(f"Window ({server!r}, {end}): server {server!r} is not in the data.")
        t = g["time_idx"].to_numpy()
        lo, hi = np.searchsorted(t, [end - E + 1, end + 1])
        if hi == 0 or t[hi - 1] != end:
            raise ValueError(f"Window ({server!r}, {end}): no observed row at time_idx {end}.")
        enc = g.iloc[lo:hi]
        if end - int(enc["time_idx"].iloc[0]) + 1 < config.min_encoder_length:
            raise ValueError(
                f"Window ({server!r}, {end}): {end - int(enc['time_idx'].iloc[0]) + 1} steps of "
                f"history, fewer than the model's minimum of {config.min_encoder_length}."
            )
        last = enc.iloc[-1]
        dec_t = np.arange(end + 1, end + D + 1, dtype=np.int64)
        dec = pd.DataFrame({"time_idx": dec_t})
        for target in config.targets:
            dec[target] = np.float32(last[target])
            level = f"{target}{LEVEL_SUFFIX}"
            if level in enc.columns:  # unknown in the decoder; any finite value will do
                dec[level] = np.float32(last[level])
        dec["state"] = CATEGORICAL_NAN
        dec["profile"] = str(last["profile"])
        dec["server_id"] = str(last["server_id"])
        cal = calendar_features(dec_t, config.step_seconds)
        for i, name in enumerate(KNOWN_REALS):
            dec[name] = cal[:, i]
        if config.day_ago:  # known: a day before each decoder step is in the past
            for target in config.targets:
                level = g[f"{target}{LEVEL_SUFFIX}"].to_numpy()
                dec[f"{target}{DAY_AGO_SUFFIX}"] = day_ago_at(
                    t, level, dec_t, config.day_steps
                ).astype(np.float32)
        part = pd.concat(
            [
                enc.drop(columns=["server_name"]).astype(
                    {c: str for c in ("state", "profile", "server_id")}
                ),
                dec,
            ],
            ignore_index=True,
        )
        part["server_name"] = f"{server}{WINDOW_SEPARATOR}{end}"
        parts.append(part)
    if not parts:
        raise ValueError("No windows given.")
    out = pd.concat(parts, ignore_index=True)
    for col in ("server_name", "state", "profile", "server_id"):
        out[col] = out[col].astype(str).astype("category")
    return out


def predict_windows(
    model: TemporalFusionTransformer,
    parameters: TimeSeriesDataSet | dict[str, Any],
    frame: pd.DataFrame,
    windows: Sequence[tuple[str, int]],
    *,
    config: DatasetConfig | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Quantile forecasts of ``windows`` with ``model.predict(..., mode="quantiles")``.

    ``parameters``: the training TimeSeriesDataSet or its parameters
    (``Bundle.dataset_parameters()``). Returns float32 (W, n_target, D, n_quantile) in each
    target's own units, windows in the order given — the ONNX output layout.
    """
    from pytorch_forecasting import TimeSeriesDataSet

    params = dict(
        parameters.get_parameters() if hasattr(parameters, "get_parameters") else parameters
    )
    # The group-id encoders were fitted on the training servers' names; new data has new
    # group keys, so pytorch-forecasting must fit fresh default ones (never a custom one).
    params["categorical_encoders"] = {
        k: v
        for k, v in params["categorical_encoders"].items()
        if k not in (GROUP_ID, f"__group_id__{GROUP_ID}")
    }
    if config is None:
        targets = tuple(params["target"])
        known = set(params.get("time_varying_known_reals", ()))
        unknown = set(params.get("time_varying_unknown_reals", ()))
        config = DatasetConfig(
            max_encoder_length=int(params["max_encoder_length"]),
            min_encoder_length=int(params["min_encoder_length"]),
            max_prediction_length=int(params["max_prediction_length"]),
            targets=targets,
            # The design's inputs decide what the decoder rows carry (a day-ago model's
            # known reals must be filled there: pytorch-forecasting refuses NaN).
            input_scaling="fixed" if f"{targets[0]}{LEVEL_SUFFIX}" in unknown else "window",
            day_ago=f"{targets[0]}{DAY_AGO_SUFFIX}" in known,
        )
    wf = window_frame(frame, windows, config)
    dataset = TimeSeriesDataSet.from_parameters(params, wf, predict=True)
    was_training = model.training
    model.eval()
    pred = model.predict(
        dataset,
        mode="quantiles",
        return_index=True,
        batch_size=batch_size,
        trainer_kwargs={
            "accelerator": "cpu",
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
    )
    if was_training:
        model.train()
    outputs = pred.output if isinstance(pred.output, list | tuple) else [pred.output]
    stacked = np.stack([o.detach().cpu().numpy() for o in outputs], axis=1).astype(np.float32)
    keys = [f"{s}{WINDOW_SEPARATOR}{int(e)}" for s, e in windows]
    position = {k: i for i, k in enumerate(pred.index["server_name"].astype(str))}
    order = [position[k] for k in keys]
    return stacked[order]
