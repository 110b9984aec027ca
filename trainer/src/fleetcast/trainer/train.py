"""Training: a multi-target TemporalFusionTransformer on a contract table.

:func:`train_model` is the one entry point (the CLI and the tests use it)::

    model, dataset, info = train_model(table, TrainConfig(hidden_size=8, epochs=1,
                                                          max_batches=2, encoder=48,
                                                          prediction=12))

The last ``holdout_steps`` of the time range are held out: the accuracy table (TFT vs
baselines, :mod:`fleetcast.trainer.evaluate`) is computed on windows whose prediction lies
entirely in that tail. The ``val_steps`` before it are the validation part: validation loss
(early stopping, the learning-rate schedule, the best epoch) on windows predicting inside
it. Training windows end before it, so the held-out windows choose nothing
(``val_steps=0``: validation on the held-out tail, the earlier design).

:class:`TrainConfig` lives in :mod:`fleetcast.trainer.train_config`, the pieces a run is set
up from (the split, loss weights, the model, the precision) in
:mod:`fleetcast.trainer.train_setup`; both are re-exported here.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.schema import CONTRACT_VERSION, STEP_SECONDS
from fleetcast.trainer.data_step import (
    null_short_servers,
    null_state_blocks,
    untrained_profiles,
)
from fleetcast.trainer.dataset import (
    CATEGORICAL_NAN,
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
)
from fleetcast.trainer.train_config import TrainConfig
from fleetcast.trainer.train_setup import (
    _hardware,
    build_model,
    categorical_classes,
    longest_encoder_windows,
    loss_weights,
    output_scale_floors,
    resolve_precision,
    split_holdout,
    split_validation,
    windows_or_refuse,
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
    "TrainingInterrupted",
    "build_model",
    "categorical_classes",
    "check_data_step",
    "check_encoder_fits",
    "loss_weights",
    "nonfinite_cells",
    "resolve_precision",
    "resume_error",
    "split_holdout",
    "split_validation",
    "train_model",
]

logger = logging.getLogger("fleetcast.trainer")


class TrainingInterrupted(Exception):
    """The fit was stopped by SIGINT (Ctrl-C) or SIGTERM (systemd, a job's time limit).

    Lightning ends such a fit with SystemExit: code 1 for Ctrl-C, and none — exit status 0,
    a training that "succeeded" and wrote nothing — for SIGTERM. ``signal`` names the
    signal, ``epochs`` the epochs this run finished, ``checkpoint_dir`` where they are.
    """

    def __init__(
        self, signal: str, epochs: int, checkpoint_dir: Path | None, resumed: bool = False
    ) -> None:
        super().__init__(f"stopped by {signal} after {epochs} epochs")
        self.signal = signal
        self.epochs = epochs
        self.checkpoint_dir = checkpoint_dir
        self.resumed = resumed
        """A resumed run: its folder's last.ckpt is this run's even before an epoch ends."""


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
    from fleetcast.trainer.resume_check import ResumeDataMismatch, fingerprint

    config.validate()
    started = time.perf_counter()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    ds_config = config.dataset_config()
    if frame is None:
        frame = prepare_frame(data, unknown_server_fraction=ds_config.unknown_server_fraction)
    check_data_step(frame)
    cutoff, holdout = split_holdout(frame, config)
    # Training windows predict up to train_cutoff, validation windows inside
    # (train_cutoff, cutoff], the accuracy table after cutoff.
    train_cutoff, val_steps = split_validation(frame, config, cutoff)
    # Up to an encoder before the tail: the held-out windows' encoders keep their labels.
    nulled_states = null_state_blocks(
        frame,
        config.unknown_state_fraction,
        cutoff - ds_config.max_encoder_length,
        ds_config.day_steps,
    )
    check_encoder_fits(frame, config, train_cutoff)
    need = ds_config.min_encoder_length + ds_config.max_prediction_length
    short = null_short_servers(frame, train_cutoff, need)
    if short:
        logger.warning(
            "%d servers have fewer than %d steps in the training part, too few for a "
            "training window: trained as unknown servers (their profile's patterns), not "
            "as known ones: %s%s",
            len(short),
            need,
            ", ".join(short[:5]),
            ", …" if len(short) > 5 else "",
        )
    untrained = untrained_profiles(frame, short)
    if untrained:
        logger.warning(
            "no server with a training window has the profile(s) %s: a server of these "
            "profiles will be forecast from a profile embedding no data trained (its own "
            "recent data still feeds the model). Add such servers to the training data "
            "(training_info.json -> profiles_untrained lists them; docs/SERVER_PROFILES.md)",
            ", ".join(untrained),
        )
    last = frame.groupby("server_name", observed=True)["time_idx"].max()
    ended = sorted(str(n) for n in last.index[last <= train_cutoff])
    if ended:
        logger.warning(
            "%d of %d servers have no data after the training part (it ends before the "
            "validation part and the held-out tail): they take no part in validation, early "
            "stopping or the accuracy table: %s%s",
            len(ended),
            len(last),
            ", ".join(ended[:5]),
            ", …" if len(ended) > 5 else "",
        )
    train_frame = frame[frame["time_idx"] <= train_cutoff]
    unknown_trained = bool((train_frame["server_id"].astype(object) == CATEGORICAL_NAN).any())
    if not unknown_trained:
        logger.warning(
            "no training row has the unknown server ID (one server alone keeps its own ID, "
            "and unknown_server_fraction is %g): the unknown-server embedding, which every "
            "server the model was not trained on is forecast from, stays untrained "
            "(training_info.json -> unknown_server_trained). Train on two servers or more "
            "(docs/DATA_CONTRACT.md#unknown-servers)",
            ds_config.unknown_server_fraction,
        )
    scalers = fit_scale_scalers(train_frame, ds_config)
    if ds_config.input_scaling == "fixed":
        ds_config = output_scale_floors(ds_config, scalers)
    train_ds = windows_or_refuse(
        lambda: build_dataset(train_frame, ds_config, scalers=scalers), "training", need
    )
    classes = categorical_classes(train_ds)
    val_ds = longest_encoder_windows(
        windows_or_refuse(
            lambda: build_dataset(
                frame[frame["time_idx"] <= cutoff] if val_steps else frame,
                ds_config,
                scalers=scalers,
                categorical_classes=classes,
                min_prediction_idx=train_cutoff + 1,
            ),
            "validation" if val_steps else "held-out",
            need,
        )
    )
    prepared = time.perf_counter()
    logger.info(
        "data: %d rows, %d servers, %d training windows, %d validation windows (%s), "
        "held-out tail: last %d steps",
        len(frame),
        frame["server_name"].nunique(),
        len(train_ds),
        len(val_ds),
        f"the {val_steps} steps before the tail" if val_steps else "in the held-out tail",
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
    data = fingerprint(frame, ds_config.targets, train_cutoff, cutoff)
    best = BestWeights("val_loss", data, config.resume_from)
    callbacks: list[pl.Callback] = [
        progress,
        best,
        EarlyStopping(monitor="val_loss", patience=config.patience, mode="min"),
    ]
    if config.checkpoint_dir is not None:
        ckpt_dir = Path(config.checkpoint_dir)
        every = max(int(config.checkpoint_every), 1)
        if config.resume_from is None and any(ckpt_dir.glob("*.ckpt")):
            logger.warning(
                "%s holds checkpoints of an earlier run: this run overwrites them as it writes "
                "its own (last.ckpt after its first epoch). To keep them, pass another "
                "--checkpoint-dir; to go on with that run, --resume last",
                ckpt_dir,
            )
        # epochNNN.ckpt every `every` epochs (0-based numbers) and last.ckpt after each epoch
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="epoch{epoch:03d}",
                auto_insert_metric_name=False,
                every_n_epochs=every,
                save_top_k=-1,
                save_last=every == 1,
                # A new run overwrites an earlier run's files: with versions, its last.ckpt
                # was last-v1.ckpt, and --resume last took the earlier run's.
                enable_version_counter=False,
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
        if isinstance(exc, ResumeDataMismatch):  # the file is fine; the data is not its
            raise ValueError(str(exc)) from None
        # Lightning restores the checkpoint before training starts: what failed is the file.
        raise resume_error(config.resume_from, first_lines(exc)) from None
    except SystemExit as exc:  # Lightning's end of a fit stopped by a signal
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        signal = "SIGTERM" if isinstance(exc, SIGTERMException) else "SIGINT"
        ckpt = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
        raise TrainingInterrupted(
            signal, len(progress.history), ckpt, config.resume_from is not None
        ) from None
    fitted = time.perf_counter()
    history = progress.history
    # A run that trained no epoch (a resumed checkpoint that had done --epochs) keeps nothing,
    # even where the checkpoint holds an earlier epoch's best weights.
    restored = bool(history) and best.restore(model)
    model = model.to("cpu").eval()

    # The best epoch may predate a resume (its weights come from the checkpoint, its row is
    # not in this run's history).
    best_row = next(
        (r for r in history if r["epoch"] == best.best_epoch),
        {"epoch": best.best_epoch, "val_loss": best.best, "train_loss": best.best_train_loss}
        if restored
        else (history[-1] if history else None),
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
        "split": {
            "cutoff_time_idx": cutoff,
            "holdout_steps": holdout,
            # Training windows predict up to train_cutoff_time_idx; validation windows
            # inside (train_cutoff_time_idx, cutoff_time_idx]; equal with --val-hours 0.
            "train_cutoff_time_idx": train_cutoff,
            "validation_steps": val_steps,
            "validation": "before_holdout" if val_steps else "holdout",
        },
        "servers_too_short": {"count": len(short), "min_steps": need, "names": short[:100]},
        "servers_not_evaluated": {"count": len(ended), "names": ended[:100]},
        "profiles_untrained": untrained,
        "unknown_server_trained": unknown_trained,
        "states_nulled_rows": nulled_states,
        "windows": {"train": len(train_ds), "validation": len(val_ds), "val_used": n_val},
        "loss_weights": dict(zip(ds_config.targets, weights, strict=True)),
        "epochs_run": len(history),
        # None: no epoch finished with a finite validation loss; nothing was trained worth
        # keeping (fleetcast train then writes no bundle).
        "best_epoch": best.best_epoch if restored else None,
        "history": history,
        "quality": quality,
        "hardware": _hardware(str(trainer.precision), trainer.accelerator.__class__.__name__),
        "config": config.to_dict(),
        "resumed_from": str(config.resume_from) if config.resume_from else None,
        # Lightning's epoch counter when fit ended, epochs of a resumed checkpoint included.
        "epochs_total": int(trainer.current_epoch),
    }
    info["global_rank"] = int(trainer.global_rank)
    if config.evaluate and trainer.global_rank == 0:  # DDP: only the first process measures
        from fleetcast.trainer.evaluate import evaluate_holdout

        info["accuracy"] = evaluate_holdout(model, train_ds, frame, cutoff, config)
        missing = info["accuracy"].pop("servers_without_windows", [])
        info["servers_not_evaluated"] = {"count": len(missing), "names": missing[:100]}
        info["accuracy"]["servers_not_evaluated"] = len(missing)
        if set(missing) - set(ended):  # those that ended early were named already
            logger.warning(
                "%d of %d servers have no held-out window (their data ends before the last "
                "%d steps, or has too little of them): the accuracy table and its goal do not "
                "cover them: %s%s",
                len(missing),
                info["servers"],
                holdout,
                ", ".join(missing[:5]),
                ", …" if len(missing) > 5 else "",
            )
        # Whether these windows also chose the model (early stopping, best epoch): optimistic.
        info["accuracy"]["selected_on_holdout"] = not val_steps
        bad = nonfinite_cells(info["accuracy"])
        quality["forecasts_finite"] = not bad
        if bad:  # e.g. legal values near float32's limit in the data (3.4e38)
            quality["nonfinite_cells"] = bad
            quality["passed"] = False
    done = time.perf_counter()
    info["timings_s"] = {
        "prepare": round(prepared - started, 3),
        "fit": round(fitted - prepared, 3),
        "evaluate": round(done - fitted, 3),
        "total": round(done - started, 3),
    }
    return model, train_ds, info


def nonfinite_cells(accuracy: dict[str, Any]) -> list[str]:
    """The ``target@horizon`` cells of an accuracy table where the TFT's MAE is not finite
    although windows were scored: the model itself forecasts inf or NaN there."""
    scored = accuracy.get("scored_windows") or {}
    return [
        f"{t}@{h}"
        for t, rows in (accuracy.get("mae") or {}).items()
        for h, vals in rows.items()
        if scored.get(t, {}).get(h, 0) > 0 and not np.isfinite(vals.get("tft", np.nan))
    ]
