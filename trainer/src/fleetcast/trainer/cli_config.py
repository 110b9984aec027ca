"""``fleetcast train``'s command line → one checked run: the TrainConfig and the paths.

:func:`config_from_args` turns the parsed options into the run's TrainConfig (the CPU
defaults :data:`CPU_DEFAULT_MAX_BATCHES` and :data:`CPU_DEFAULT_MAX_MINUTES`, 0 = none,
hours → steps) after checking the options whose command-line form differs from
TrainConfig's; :func:`check_paths` checks ``--out``, ``--checkpoint-dir`` and ``--resume``.
Both run before any data is read (trainer/README.md#options). Split from
:mod:`fleetcast.trainer.commands`, which calls them and re-exports them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    import argparse

    from fleetcast.trainer.train import TrainConfig

__all__ = ["CPU_DEFAULT_MAX_BATCHES", "CPU_DEFAULT_MAX_MINUTES", "check_paths", "config_from_args"]

CPU_DEFAULT_MAX_BATCHES = 60
"""Training batches per epoch on CPU unless ``--max-batches-per-epoch`` says otherwise."""
CPU_DEFAULT_MAX_MINUTES = 28.0
"""Fit budget on CPU unless ``--max-minutes`` says otherwise: the default training took 21–22
minutes of it on this project's 2 cores, and the whole run stays under 30 min."""


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _cli_error(option: str, value: object, accepted: str, why: str, fix: str) -> ValueError:
    from fleetcast.trainer.train import option_error

    return option_error(option, value, accepted, why, fix)


def _check_at_least(
    option: str, value: int | None, low: int, accepted: str, why: str, fix: str
) -> None:
    """Refuse a whole-number option below ``low``; None (the option left out) passes."""
    if value is not None and value < low:
        raise _cli_error(option, value, accepted, why, fix)


def _check_cli_options(args: argparse.Namespace) -> None:
    """The options whose command-line form differs from TrainConfig's (0 = none, hours)."""
    _check_at_least(
        "--max-batches-per-epoch",
        args.max_batches_per_epoch,
        0,
        "must be a whole number of at least 0 (0 = no cap)",
        "it caps the training batches of an epoch.",
        f"Pass a cap such as {CPU_DEFAULT_MAX_BATCHES} (the CPU default), 0 for a full pass "
        "over every window, or leave it out.",
    )
    if args.max_minutes is not None and not (
        math.isfinite(args.max_minutes) and args.max_minutes >= 0
    ):
        raise _cli_error(
            "--max-minutes",
            args.max_minutes,
            "must be a finite number of minutes of at least 0 (0 = no budget)",
            "it is the wall-clock budget of the fit.",
            f"Pass --max-minutes {CPU_DEFAULT_MAX_MINUTES:g} (the CPU default), 0 for no "
            "budget, or leave it out.",
        )
    if not (math.isfinite(args.holdout_hours) and args.holdout_hours > 0):
        need = args.prediction_steps * STEP_SECONDS / 3600
        raise _cli_error(
            "--holdout-hours",
            args.holdout_hours,
            f"must be a number of hours above 0, at least one prediction ({need:g} h with "
            f"--prediction-steps {args.prediction_steps})",
            "the accuracy table is computed on the held-out tail; without one nothing can be "
            "measured.",
            "Pass --holdout-hours 48 (the default) or another positive number of hours.",
        )
    if not (math.isfinite(args.val_hours) and args.val_hours >= 0):
        raise _cli_error(
            "--val-hours",
            args.val_hours,
            "must be a finite number of hours of at least 0 (0 = validate on the held-out tail)",
            "validation loss and early stopping are computed on the validation part just "
            "before the held-out tail, so the accuracy table is measured on windows that chose "
            "nothing.",
            "Pass --val-hours 24 (the default) or another number of hours.",
        )
    if args.val_hours > 0 and round(args.val_hours * 3600 / STEP_SECONDS) == 0:
        need = args.prediction_steps * STEP_SECONDS / 3600
        raise _cli_error(
            "--val-hours",
            args.val_hours,
            f"must be 0 or hold at least one full prediction ({need:g} h with "
            f"--prediction-steps {args.prediction_steps}); it rounds to no step at all",
            "a positive value asks for a validation part before the held-out tail; read as 0 "
            "it would validate on the held-out tail instead, and the accuracy table would be "
            "measured on the windows that chose the model.",
            f"Pass --val-hours {max(need, 24.0):g} (the default is 24), or 0 to validate on the "
            "held-out tail.",
        )
    _check_at_least(
        "--servers-sample",
        args.servers_sample,
        1,
        "must be a whole number of servers of at least 1",
        "it is the number of servers to train on when the data exceeds memory.",
        "Pass a number of servers, or leave --servers-sample out to train on every server.",
    )
    devices = str(args.devices).strip()
    if not (devices == "auto" or devices == "-1" or devices.replace(",", "").isdigit()):
        raise _cli_error(
            "--devices",
            repr(args.devices),
            "must be auto, a number, -1 (all GPUs) or GPU indices such as 0,1",
            "Lightning trains on that many devices (one process each with --strategy ddp).",
            "Pass --devices auto (the default) or a count.",
        )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The one TrainConfig of a run, from the parsed options, validated.

    Every option is checked here, before any data is read: a value outside its range
    raises ValueError with a four-part message naming the option, the value, the accepted
    range and trainer/README.md#options (:meth:`TrainConfig.validate`).
    """
    import torch

    from fleetcast.trainer.train import TrainConfig

    _check_cli_options(args)
    on_gpu = args.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    max_batches = args.max_batches_per_epoch
    if max_batches is None:
        max_batches = None if on_gpu else CPU_DEFAULT_MAX_BATCHES
    elif max_batches == 0:
        max_batches = None
    max_minutes = args.max_minutes
    if max_minutes is None:
        max_minutes = None if on_gpu else CPU_DEFAULT_MAX_MINUTES
    elif max_minutes == 0:
        max_minutes = None
    checkpoint_dir = (
        Path(args.checkpoint_dir) if args.checkpoint_dir else Path(args.out) / "checkpoints"
    )
    resume = None
    if args.resume:
        resume = checkpoint_dir / "last.ckpt" if args.resume == "last" else Path(args.resume)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_batches=max_batches,
        val_batches=args.val_batches,
        learning_rate=args.learning_rate,
        horizon_power=args.horizon_power,
        unknown_state_fraction=args.unknown_state_fraction,
        hidden_size=args.hidden_size,
        attention_head_size=args.attention_heads,
        hidden_continuous_size=args.hidden_continuous_size,
        dropout=args.dropout,
        encoder=args.encoder_steps,
        min_encoder=args.min_encoder_steps,
        input_scaling=args.input_scaling,
        day_ago=args.day_ago,
        prediction=args.prediction_steps,
        holdout_steps=round(args.holdout_hours * 3600 / STEP_SECONDS),
        val_steps=round(args.val_hours * 3600 / STEP_SECONDS),
        patience=args.patience,
        max_minutes=max_minutes,
        seed=args.seed,
        accelerator=args.accelerator,
        devices=_devices(str(args.devices)),
        strategy=args.strategy,
        precision=args.precision,
        num_workers=args.num_workers,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        resume_from=resume,
        max_eval_windows=args.eval_windows,
        evaluate=not args.no_eval,
    )
    config.validate()
    return config


def _check_folder(option: str, path: Path) -> None:
    """Refuse a folder option that names a file or cannot be created or written."""
    if path.exists() and not path.is_dir():
        raise _cli_error(
            option,
            path,
            "is an existing file, not a folder",
            "training writes into this folder; a file of the same name is in the way (the run "
            "would fail only after training).",
            f"Pass a folder for {option} (it is created if missing), or move the file away.",
        )
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise _cli_error(
            option,
            path,
            f"cannot be created: {ancestor} is a file, not a folder",
            "training writes into this folder.",
            f"Pass a folder path for {option} whose parents are folders.",
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise _cli_error(
            option,
            path,
            f"cannot be written: {ancestor} is not writable by this user",
            "training writes the bundle (or checkpoints) there.",
            f"Pass a writable folder for {option}, or fix the folder's permissions.",
        )


def check_paths(config: TrainConfig, out: str | Path) -> None:
    """``--out``, ``--checkpoint-dir`` and ``--resume`` are usable: checked before any data is read."""
    import zipfile

    from fleetcast.trainer.bundle import LATEST_LINK

    out = Path(out)
    _check_folder("--out", out)
    latest = out / LATEST_LINK
    if latest.exists() and not latest.is_symlink():
        raise _cli_error(
            "--out",
            out,
            f"holds {latest}, which is not the symbolic link training points at the new bundle",
            "`fleetcast train` replaces OUT/latest with a link to the bundle it writes; a real "
            "file or folder there cannot be replaced safely.",
            f"Move {latest} away (or pass another --out).",
        )
    if config.checkpoint_dir is not None:
        _check_folder("--checkpoint-dir", Path(config.checkpoint_dir))
    resume = config.resume_from
    if resume is None:
        return
    if not resume.is_file():
        raise ValueError(
            f"--resume {resume}: no such checkpoint. Why it matters: resuming needs "
            "the Lightning checkpoint of an earlier run. Fix: pass a .ckpt from the checkpoint "
            "folder (or drop --resume to start afresh). See trainer/README.md#what-a-run-does."
        )
    if not zipfile.is_zipfile(resume):
        from fleetcast.trainer.train import resume_error

        raise resume_error(resume, "it is not in PyTorch's checkpoint format (a zip archive)")
