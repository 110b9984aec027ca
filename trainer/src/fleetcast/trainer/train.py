"""Training: a multi-target TemporalFusionTransformer on a contract table.

:func:`train_model` is the one entry point (the CLI and the tests use it)::

    model, dataset, info = train_model(table, TrainConfig(hidden_size=8, epochs=1,
                                                          max_batches=2, encoder=48,
                                                          prediction=12))

The last ``holdout_steps`` of the time range are held out: validation loss and the
accuracy table (TFT vs baselines, :mod:`fleetcast.trainer.evaluate`) are computed on
windows whose prediction lies entirely in that tail; training windows end before it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.schema import (
    CONTRACT_VERSION,
    DEFAULT_ENCODER_STEPS,
    DEFAULT_PREDICTION_STEPS,
    STEP_SECONDS,
)
from fleetcast.trainer.dataset import (
    LEVEL_SUFFIX,
    DatasetConfig,
    build_dataset,
    fit_scale_scalers,
    prepare_frame,
)
from fleetcast.trainer.options import (
    ACCELERATORS,
    OPTIONS_DOC,
    PRECISIONS,
    check_data_step,
    check_encoder_fits,
    first_lines,
    option_error,
    resume_error,
    validate_config,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet

__all__ = [
    "ACCELERATORS",
    "OPTIONS_DOC",
    "PRECISIONS",
    "TrainConfig",
    "build_model",
    "categorical_classes",
    "check_data_step",
    "check_encoder_fits",
    "loss_weights",
    "resolve_precision",
    "resume_error",
    "split_holdout",
    "train_model",
]

logger = logging.getLogger("fleetcast.trainer")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data; one object, built once (CLI or test)."""

    epochs: int = 40
    """Maximum number of epochs (early stopping may end sooner)."""
    batch_size: int = 64
    """Windows per batch."""
    max_batches: int | None = None
    """Cap of training batches per epoch (None: a full pass over every window)."""
    val_batches: int = 20
    """Validation batches per epoch, a fixed random subset of the held-out windows."""
    learning_rate: float = 3e-3
    """Adam learning rate (reduced on plateau)."""
    hidden_size: int = 32
    """TFT hidden size."""
    attention_head_size: int = 4
    """Attention heads."""
    hidden_continuous_size: int = 16
    """Size of the continuous-variable embeddings."""
    lstm_layers: int = 1
    """LSTM layers."""
    dropout: float = 0.1
    """Dropout."""
    gradient_clip: float = 0.5
    """Gradient norm clip."""
    encoder: int = DEFAULT_ENCODER_STEPS
    """Encoder (context) steps: 96 (8 h), with :attr:`day_ago` for the day before."""
    min_encoder: int = 12
    """Shortest encoder (cold start)."""
    prediction: int = DEFAULT_PREDICTION_STEPS
    """Prediction steps."""
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    """Predicted quantiles (must contain 0.5)."""
    horizon_power: float = 1.0
    """Loss weight of prediction step h is h ** -horizon_power (0: every step alike). 1.0 is
    the one measured to meet the accuracy goal on the default fleet in the CPU budget
    (0.5 missed latency at 30 min; trainer/README.md)."""
    unknown_server_fraction: float = 0.1
    """Share of servers trained with a null server_id (the unknown-server embedding)."""
    input_scaling: str = "fixed"
    """How the metrics are scaled as inputs: ``fixed`` or ``window`` (DatasetConfig). Fixed
    lets the appliance cache each row's work (trainer/README.md#day-ago-inputs)."""
    day_ago: bool = True
    """Feed each metric's value a day before every step as a known input (DatasetConfig)."""
    holdout_steps: int = 576
    """Held-out tail in steps (576 = 2 days); reduced to a third of the range on short data."""
    patience: int = 5
    """Early-stopping patience in epochs (on validation loss). 3 stopped the default model at
    epoch 22 and missed one accuracy cell; 5 let the learning rate halve twice and met all 12
    (trainer/README.md#day-ago-inputs)."""
    max_minutes: float | None = None
    """Wall-clock budget of the fit in minutes (Lightning ``max_time``); None: no limit."""
    seed: int = 0
    """Seed of every random choice (windows, weights, subsets)."""
    accelerator: str = "auto"
    """Lightning accelerator: auto (GPU when present), cpu, gpu."""
    devices: int | str = "auto"
    """Lightning devices (e.g. 4 GPUs with strategy='ddp')."""
    strategy: str = "auto"
    """Lightning strategy: auto, or ddp for several GPUs."""
    precision: str | None = None
    """Lightning precision; None: bf16-mixed (or 16-mixed) on GPU, 32-true on CPU."""
    num_workers: int = 0
    """DataLoader workers."""
    checkpoint_dir: Path | None = None
    """Where Lightning checkpoints go (every ``checkpoint_every`` epochs, plus last.ckpt)."""
    checkpoint_every: int = 5
    """Epochs between periodic checkpoints."""
    resume_from: Path | None = None
    """A Lightning checkpoint (.ckpt) to resume training from."""
    eval_stride: int = 12
    """Steps between accuracy windows of one server in the held-out tail."""
    max_eval_windows: int = 3000
    """Cap of accuracy windows (the stride grows to stay below it)."""
    evaluate: bool = True
    """Compute the accuracy table after training."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes copied into training_info.json."""

    def dataset_config(self) -> DatasetConfig:
        """The dataset part of this config."""
        return DatasetConfig(
            max_encoder_length=self.encoder,
            min_encoder_length=self.min_encoder,
            max_prediction_length=self.prediction,
            unknown_server_fraction=self.unknown_server_fraction,
            input_scaling=self.input_scaling,
            day_ago=self.day_ago,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (paths as strings)."""
        out = asdict(self)
        for key in ("checkpoint_dir", "resume_from"):
            if out[key] is not None:
                out[key] = str(out[key])
        out["quantiles"] = list(self.quantiles)
        return out

    def validate(self) -> None:
        """Refuse any value outside its accepted range, before any data is read.

        Raises ValueError with a four-part message (what, why, fix, trainer/README.md#options)
        naming the option, the value and the accepted range. :func:`train_model` calls it
        first; ``fleetcast train`` calls it before it reads the data. Checks that depend on
        the data (the encoder against the series, the data's step) are in
        :func:`check_encoder_fits` and :func:`check_data_step`.
        """
        validate_config(self)


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


def loss_weights(frame: pd.DataFrame, targets: tuple[str, ...], lag: int = 12) -> list[float]:
    """MultiLoss weights that equalise the targets (the loss is in each target's own units).

    Weight ∝ 1 / mean |y(t+lag) − y(t)| per target (the typical 1-hour change, in its unit),
    normalised to mean 1. Unweighted, cpu_pct (0–100) would swamp disk_io_mb_s (~0.1).
    """
    g = frame.groupby("server_name", observed=True)
    typical = []
    for t in targets:
        diff = (g[t].shift(-lag) - frame[t]).abs().to_numpy(dtype=np.float64)
        value = float(np.nanmean(diff)) if np.isfinite(diff).any() else 1.0
        typical.append(max(value, 1e-6))
    inv = np.array([1.0 / v for v in typical])
    return (inv / inv.mean()).tolist()


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


def train_model(
    data: pa.Table | pd.DataFrame | str | Path,
    config: TrainConfig,
    *,
    frame: pd.DataFrame | None = None,
) -> tuple[TemporalFusionTransformer, TimeSeriesDataSet, dict[str, Any]]:
    """Train a TFT on a contract table; returns ``(model in eval mode, training dataset, info)``.

    ``data``: an Arrow table, a DataFrame in the contract schema or a Parquet path (expected
    contract-valid: validate first). ``frame``: an already prepared frame (skips
    :func:`~fleetcast.trainer.dataset.prepare_frame`). ``info`` is the training part of
    training_info.json: sizes, split, loss weights, per-epoch history, timings, hardware,
    the quality rules and (``config.evaluate``) the accuracy table.
    """
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, LambdaCallback, ModelCheckpoint

    from fleetcast.trainer.callbacks import BestWeights, EpochProgress

    config.validate()
    started = time.perf_counter()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    ds_config = config.dataset_config()
    if frame is None:
        frame = prepare_frame(data, unknown_server_fraction=ds_config.unknown_server_fraction)
    check_data_step(frame)
    cutoff, holdout = split_holdout(frame, config)
    check_encoder_fits(frame, config, cutoff)
    train_frame = frame[frame["time_idx"] <= cutoff]
    scalers = fit_scale_scalers(train_frame, ds_config)
    if ds_config.input_scaling == "fixed":
        ds_config = output_scale_floors(ds_config, scalers)
    train_ds = build_dataset(train_frame, ds_config, scalers=scalers)
    classes = categorical_classes(train_ds)
    val_ds = build_dataset(
        frame,
        ds_config,
        scalers=scalers,
        categorical_classes=classes,
        min_prediction_idx=cutoff + 1,
    )
    prepared = time.perf_counter()
    logger.info(
        "data: %d rows, %d servers, %d training windows, %d held-out windows (last %d steps)",
        len(frame),
        frame["server_name"].nunique(),
        len(train_ds),
        len(val_ds),
        holdout,
    )

    weights = loss_weights(train_frame, ds_config.targets)
    precision = resolve_precision(config)
    model = build_model(
        train_ds, config, weights, mask_bias=-1e4 if precision.startswith("16") else -1e9
    )

    rng = np.random.default_rng(config.seed)
    n_val = min(len(val_ds), config.val_batches * config.batch_size)
    val_idx = np.sort(rng.choice(len(val_ds), size=n_val, replace=False)).tolist()
    train_dl = train_ds.to_dataloader(
        train=True, batch_size=config.batch_size, num_workers=config.num_workers
    )
    val_dl = torch.utils.data.DataLoader(
        torch.utils.data.Subset(val_ds, val_idx),
        batch_size=config.batch_size,
        shuffle=False,
        collate_fn=val_ds._collate_fn,
        num_workers=config.num_workers,
    )

    progress = EpochProgress()
    best = BestWeights("val_loss")
    callbacks: list[pl.Callback] = [
        progress,
        best,
        EarlyStopping(monitor="val_loss", patience=config.patience, mode="min"),
    ]
    if config.checkpoint_dir is not None:
        ckpt_dir = Path(config.checkpoint_dir)
        every = max(int(config.checkpoint_every), 1)
        # epochNNN.ckpt every `every` epochs (0-based numbers) and last.ckpt after each epoch
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="epoch{epoch:03d}",
                auto_insert_metric_name=False,
                every_n_epochs=every,
                save_top_k=-1,
                save_last=every == 1,
            )
        )
        if every != 1:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=ckpt_dir,
                    filename="last",
                    every_n_epochs=1,
                    save_top_k=1,
                    enable_version_counter=False,
                )
            )
    started_training: list[bool] = []
    callbacks.append(LambdaCallback(on_train_start=lambda *_: started_training.append(True)))
    try:
        trainer = pl.Trainer(
            max_epochs=config.epochs,
            max_time=(
                dt.timedelta(minutes=config.max_minutes) if config.max_minutes is not None else None
            ),
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=config.strategy,
            precision=precision,
            gradient_clip_val=config.gradient_clip,
            limit_train_batches=config.max_batches if config.max_batches else 1.0,
            num_sanity_val_steps=0,
            callbacks=callbacks,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=config.checkpoint_dir is not None,
            default_root_dir=str(config.checkpoint_dir) if config.checkpoint_dir else None,
            deterministic=False,
        )
    except Exception as exc:  # Lightning's MisconfigurationException, ImportError, ...
        raise option_error(
            "--accelerator/--devices/--strategy/--precision",
            f"{config.accelerator}/{config.devices}/{config.strategy}/{precision}",
            f"Lightning refused this combination ({type(exc).__name__}: {exc})",
            "the trainer cannot be set up on this machine with these settings.",
            "Leave the four options at their defaults (auto; precision by hardware), or pick "
            "a combination Lightning supports here.",
        ) from None
    try:
        trainer.fit(
            model,
            train_dataloaders=train_dl,
            val_dataloaders=val_dl,
            ckpt_path=str(config.resume_from) if config.resume_from else None,
            # A Lightning checkpoint is an internal, pickle-based training artefact of the
            # user's own earlier run (never a bundle, never something received): resume
            # trusts it.
            weights_only=False if config.resume_from else None,
        )
    except Exception as exc:
        if config.resume_from is None or started_training:
            raise
        # Lightning restores the checkpoint before training starts: what failed is the file.
        raise resume_error(config.resume_from, first_lines(exc)) from None
    fitted = time.perf_counter()
    restored = best.restore(model)
    model = model.to("cpu").eval()

    history = progress.history
    best_row = next(
        (r for r in history if r["epoch"] == best.best_epoch), history[-1] if history else None
    )
    quality = {
        "profile_feature": "profile" in model.hparams.static_categoricals,
        "val_loss": best_row["val_loss"] if best_row else None,
        "train_loss": best_row["train_loss"] if best_row else None,
    }
    ratio = None
    if best_row and best_row["train_loss"] and np.isfinite(best_row["train_loss"]):
        ratio = best_row["val_loss"] / best_row["train_loss"]
    quality["val_train_ratio"] = ratio
    quality["val_below_1_5x_train"] = bool(ratio is not None and ratio < 1.5)
    quality["passed"] = bool(quality["profile_feature"] and quality["val_below_1_5x_train"])

    info: dict[str, Any] = {
        "contract_version": CONTRACT_VERSION,
        "rows": len(frame),
        "servers": int(frame["server_name"].nunique()),
        "time_range": {
            "first_time_idx": int(frame["time_idx"].min()),
            "last_time_idx": int(frame["time_idx"].max()),
            "step_seconds": STEP_SECONDS,
        },
        "split": {"cutoff_time_idx": cutoff, "holdout_steps": holdout},
        "windows": {"train": len(train_ds), "holdout": len(val_ds), "val_used": n_val},
        "loss_weights": dict(zip(ds_config.targets, weights, strict=True)),
        "epochs_run": len(history),
        # None: no epoch finished with a finite validation loss; nothing was trained worth
        # keeping (fleetcast train then writes no bundle).
        "best_epoch": best.best_epoch if restored else None,
        "history": history,
        "quality": quality,
        "hardware": _hardware(precision, trainer.accelerator.__class__.__name__),
        "config": config.to_dict(),
        "resumed_from": str(config.resume_from) if config.resume_from else None,
        # Lightning's epoch counter when fit ended, epochs of a resumed checkpoint included.
        "epochs_total": int(trainer.current_epoch),
    }
    info["global_rank"] = int(trainer.global_rank)
    if config.evaluate and trainer.global_rank == 0:  # DDP: only the first process measures
        from fleetcast.trainer.evaluate import evaluate_holdout

        info["accuracy"] = evaluate_holdout(model, train_ds, frame, cutoff, config)
    done = time.perf_counter()
    info["timings_s"] = {
        "prepare": round(prepared - started, 3),
        "fit": round(fitted - prepared, 3),
        "evaluate": round(done - fitted, 3),
        "total": round(done - started, 3),
    }
    return model, train_ds, info
