"""The pieces a training run is set up from (split from :mod:`fleetcast.trainer.train`).

:func:`split_holdout` (the held-out tail), :func:`split_validation` (the validation part
before it), :func:`longest_encoder_windows` (validation windows), :func:`loss_weights` (the targets' MultiLoss
weights), :func:`categorical_classes`, :func:`output_scale_floors` (fixed input scaling's
output scale), :func:`resolve_precision` and :func:`build_model` (a fresh TFT that starts
at persistence); :func:`~fleetcast.trainer.train.train_model` calls them, and
:mod:`fleetcast.trainer.train` re-exports them. torch and pytorch-forecasting are imported
inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.schema import STEP_SECONDS
from fleetcast.trainer.dataset import GROUP_ID, LEVEL_SUFFIX

if TYPE_CHECKING:
    import pandas as pd
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet

    from fleetcast.trainer.dataset import DatasetConfig
    from fleetcast.trainer.train_config import TrainConfig

__all__ = [
    "CONSTANT_CHANGE",
    "build_model",
    "categorical_classes",
    "longest_encoder_windows",
    "loss_weights",
    "output_scale_floors",
    "resolve_precision",
    "split_holdout",
    "split_validation",
    "windows_or_refuse",
]

logger = logging.getLogger("fleetcast.trainer")


def split_holdout(frame: pd.DataFrame, config: TrainConfig) -> tuple[int, int]:
    """(cutoff, holdout): training windows predict up to ``cutoff`` (a time_idx), the rest is held out.

    The holdout is ``config.holdout_steps``, at most a third of the time range; it must hold
    at least one full prediction, and the training part at least one window.
    """
    t_min = int(frame["time_idx"].min())
    t_max = int(frame["time_idx"].max())
    total = t_max - t_min + 1
    holdout = min(config.holdout_steps, total // 3)
    need = config.min_encoder + config.prediction
    if holdout < config.prediction or total - holdout < need:
        raise ValueError(
            f"The data covers {total} steps ({total * STEP_SECONDS / 3600:.1f} h), too short for "
            f"a held-out tail of at least {config.prediction} steps plus a training part of "
            f"{need} steps. Fix: use more hours of data (fleetcast generate --hours 72 or more) "
            "or a shorter --prediction-steps. See docs/MODEL_FORMAT.md#features."
        )
    return t_max - holdout, holdout


def split_validation(frame: pd.DataFrame, config: TrainConfig, cutoff: int) -> tuple[int, int]:
    """(train_cutoff, val_steps): the validation part, the ``val_steps`` before ``cutoff``.

    Training windows predict up to ``train_cutoff``; validation windows (validation loss,
    early stopping, the learning-rate schedule, the best epoch) predict inside
    ``(train_cutoff, cutoff]``; the accuracy table after ``cutoff`` chooses nothing. At most
    a third of the range; ``config.val_steps == 0`` returns ``(cutoff, 0)``: validation on
    the held-out tail (the earlier design). Raises ValueError when the data leaves no room
    for a validation part of one prediction and a training part of one window.
    """
    if config.val_steps == 0:
        return cutoff, 0
    t_min = int(frame["time_idx"].min())
    total = int(frame["time_idx"].max()) - t_min + 1
    val = min(config.val_steps, total // 3)
    need = config.min_encoder + config.prediction
    before = cutoff - t_min + 1
    if val < config.prediction or before - val < need:
        raise ValueError(
            f"The data covers {total} steps ({total * STEP_SECONDS / 3600:.1f} h), too short for "
            f"a held-out tail of {total - before} steps, a validation part of at least "
            f"{config.prediction} steps and a training part of {need} steps. Fix: use more "
            "hours of data (fleetcast generate --hours 72 or more), a shorter "
            "--prediction-steps, or --val-hours 0 (validate on the held-out tail). See "
            "trainer/README.md#what-a-run-does."
        )
    return cutoff - val, val


_PARTS = {
    "training": (
        "the training part (every step before the validation part and the held-out tail)",
        "fill the gaps in your data, or use more hours of it",
    ),
    "validation": (
        "the validation part (the --val-hours before the held-out tail)",
        "fill the gaps there, move the validation part with a different --holdout-hours, "
        "or use --val-hours 0 (validate on the held-out tail)",
    ),
    "held-out": (
        "the held-out tail (the last --holdout-hours, where --val-hours 0 validates)",
        "fill the gaps there, or use a --val-hours greater than 0",
    ),
}


def windows_or_refuse(build: Any, part: str, need: int) -> TimeSeriesDataSet:
    """``build()``'s dataset, or a ValueError when ``part`` (a key of the table above) holds
    no window: pytorch-forecasting then fails an internal assertion ("filters should not
    remove entries all entries"), a traceback on data that passed the contract, whose gaps
    are only warnings there. ``need``: the steps one window needs."""
    what, fix = _PARTS[part]
    try:
        dataset = build()
    except AssertionError as err:
        if "filters should not remove" not in str(err):
            raise
        dataset = None
    if dataset is None or len(dataset) == 0:
        raise ValueError(
            f"No server has the {need} steps of one window in {what}: no {part} window "
            "can be built. Why it matters: a model cannot be trained or validated without "
            f"one. Fix: {fix}. Gaps are warnings of `fleetcast validate` (it lists them). "
            "See trainer/README.md#what-a-run-does."
        )
    return dataset


def longest_encoder_windows(dataset: TimeSeriesDataSet) -> TimeSeriesDataSet:
    """``dataset`` with one window per (server, first predicted step): the longest encoder.

    pytorch-forecasting adds, at the end of every series, windows that predict its last
    ``D`` steps again with the encoder cut shorter and shorter (``min_encoder_length`` up
    to ``E - 1``): in a validation part of one day that is 84 of every 277 windows, all on
    its last 8 hours, so early stopping would weigh those hours and those cold starts about
    30 % instead of what the accuracy table measures (every window with all the history
    it has). Training keeps them (cold starts to learn from).
    """
    idx = dataset.decoded_index
    key = [GROUP_ID, "time_idx_first_prediction"]
    first = idx.groupby(key, observed=True, sort=False)["time_idx_first"].transform("min")
    keep = (idx["time_idx_first"] == first).to_numpy()
    if keep.all():
        return dataset
    return dataset.filter(lambda _: keep)


def loss_weights(frame: pd.DataFrame, targets: tuple[str, ...], lag: int = 12) -> list[float]:
    """MultiLoss weights that equalise the targets (the loss is in each target's own units).

    Weight ∝ 1 / mean |y(t+lag) − y(t)| per target (the typical 1-hour change, in its unit),
    normalised to mean 1. Unweighted, cpu_pct (0–100) would swamp disk_io_mb_s (~0.1).
    A target that never changes (below :data:`CONSTANT_CHANGE`: e.g. a latency filled with
    0 by ``fleetcast import --latency-fill 0``) gets the median typical change of the others:
    1 / ~0 gave it almost all the weight, the validation loss became the noise of a target
    with nothing to learn, and the other targets lost to persistence.
    """
    g = frame.groupby("server_name", observed=True)
    typical = []
    skewed = []
    for t in targets:
        diff = (g[t].shift(-lag) - frame[t]).abs().to_numpy(dtype=np.float64)
        diff = diff[np.isfinite(diff)]
        typical.append(float(diff.mean()) if diff.size else 0.0)
        if typical[-1] >= CONSTANT_CHANGE:
            # The largest 0.1 % of the changes (at least one) against all of them: a few
            # spikes set the mean whether the median is a few units or 0 (a flat series).
            top = np.partition(diff, diff.size - max(1, diff.size // 1000))
            top = top[diff.size - max(1, diff.size // 1000) :]
            if top.sum() > OUTLIER_SHARE * diff.sum():
                skewed.append(f"{t} (mean {typical[-1]:.3g}, median {float(np.median(diff)):.3g})")
    if skewed:
        logger.warning(
            "the typical 1-hour change of %s is dominated by a few extreme values: the "
            "loss weighs such a target almost nothing, so the model barely learns it. Check "
            "the data for spikes or unit errors (a value a thousand times its neighbours) "
            "and remove or cap them; see trainer/README.md#what-a-run-does",
            "; ".join(skewed),
        )
    moving = [v for v in typical if v >= CONSTANT_CHANGE]
    fill = float(np.median(moving)) if moving else 1.0
    constant = [t for t, v in zip(targets, typical, strict=True) if v < CONSTANT_CHANGE]
    if constant:
        logger.warning(
            "%s never change in the training data: weighted like the median of the other "
            "targets (they carry nothing to learn; check that they were really measured)",
            ", ".join(constant),
        )
    inv = np.array([1.0 / (v if v >= CONSTANT_CHANGE else fill) for v in typical])
    return (inv / inv.mean()).tolist()


CONSTANT_CHANGE = 1e-6
"""A target whose mean 1-hour change is below this is constant (:func:`loss_weights`)."""

OUTLIER_SHARE = 0.5
""":func:`loss_weights` warns when the largest 0.1 % of a target's 1-hour changes make up
more than this share of their sum: a few extreme values then set its weight. (The simulated
fleet's heavy-tailed disk_io_mb_s and latency_ms are far below it.)"""


def categorical_classes(dataset: TimeSeriesDataSet) -> dict[str, list[str]]:
    """Classes of each categorical input in code order (code 0 = ``"nan"``, the unknown)."""
    out = {}
    encoders = dataset.get_parameters()["categorical_encoders"]  # the fitted ones
    for name in dataset.flat_categoricals:
        enc = encoders[name]
        out[name] = [str(k) for k, _ in sorted(enc.classes_.items(), key=lambda kv: kv[1])]
    return out


def resolve_precision(config: TrainConfig) -> str:
    """The Lightning precision of a run: the configured one, else by hardware."""
    if config.precision:
        return config.precision
    import torch

    if config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_model(
    dataset: TimeSeriesDataSet,
    config: TrainConfig,
    weights: list[float],
    *,
    mask_bias: float = -1e9,
) -> TemporalFusionTransformer:
    """A fresh TFT for ``dataset`` whose output layers start at zero (= persistence)."""
    import torch
    from pytorch_forecasting import TemporalFusionTransformer
    from pytorch_forecasting.metrics import MultiLoss

    from fleetcast.trainer.losses import HorizonQuantileLoss

    targets = dataset.target_names
    loss = MultiLoss(
        [
            HorizonQuantileLoss(list(config.quantiles), horizon_power=config.horizon_power)
            for _ in targets
        ],
        weights=weights,
    )
    model = TemporalFusionTransformer.from_dataset(
        dataset,
        hidden_size=config.hidden_size,
        attention_head_size=config.attention_head_size,
        hidden_continuous_size=config.hidden_continuous_size,
        lstm_layers=config.lstm_layers,
        dropout=config.dropout,
        learning_rate=config.learning_rate,
        output_size=[len(config.quantiles)] * len(targets),
        loss=loss,
        logging_metrics=torch.nn.ModuleList([]),
        reduce_on_plateau_patience=2,
        log_interval=-1,
        optimizer="adam",
        mask_bias=mask_bias,
        # No padding class: code 0 ("nan" = unknown server / state) gets a trained embedding.
        embedding_paddings=[],
    )
    # Window-relative scaling makes an output of 0 the last observed value: start there.
    with torch.no_grad():
        for layer in model.output_layer:
            layer.weight.zero_()
            layer.bias.zero_()
    return model


def _hardware(precision: str, accelerator: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "accelerator": accelerator,
        "precision": precision,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def output_scale_floors(ds_config: DatasetConfig, scalers: dict[str, Any]) -> DatasetConfig:
    """Fixed input scaling: floor each target's output scale at its global std.

    The model sees its inputs in global units (``<target>_level``); with the output scaled by
    the window's own std it would have to infer that std to place its forecast. Floored at
    the global std (the level scaler's), the scale is that constant for all but the most
    volatile windows, and the output is a change in the inputs' own units. Centre stays the
    last value (an output of 0 is still persistence). docs/MODEL_FORMAT.md#step-cache.
    """
    floors = {
        t: max(float(ds_config.min_scale[t]), float(scalers[f"{t}{LEVEL_SUFFIX}"].scale_[0]))
        for t in ds_config.targets
    }
    return dataclasses.replace(ds_config, min_scale=floors)
