"""``fleetcast train``: validate the data, train the TFT, write the bundle, print the accuracy.

Exit codes: 0 trained (quality warnings are printed, not fatal), 1 the data or the options
cannot be used (the validator's errors, too little data, data at another step, a bad option,
a checkpoint that cannot be resumed) or no epoch was trained (nothing is written, ``latest``
is left as it was), 2 the file cannot be read. Every option is checked before any data is
read (:func:`config_from_args`, :func:`check_paths`; trainer/README.md#options). Bad input
never produces a traceback.

Scaling: on one GPU training runs in bf16 (or fp16) mixed precision automatically; several
GPUs use Lightning's DDP: ``--accelerator gpu --devices 4 --strategy ddp`` (each process
trains on its share of the batches; the batch size is per GPU). On CPU, cap the batches per
epoch (``--max-batches-per-epoch``): a full pass over the default fleet's ~750k windows
takes hours on a few cores.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fleetcast.contract.schema import DEFAULT_ENCODER_STEPS, DEFAULT_PREDICTION_STEPS, STEP_SECONDS

if TYPE_CHECKING:
    import argparse

    from fleetcast.trainer.train import TrainConfig

__all__ = [
    "CPU_DEFAULT_MAX_BATCHES",
    "CPU_DEFAULT_MAX_MINUTES",
    "check_paths",
    "config_from_args",
    "register_train",
    "run_train",
]

logger = logging.getLogger("fleetcast.trainer")

CPU_DEFAULT_MAX_BATCHES = 60
"""Training batches per epoch on CPU unless ``--max-batches-per-epoch`` says otherwise."""
CPU_DEFAULT_MAX_MINUTES = 28.0
"""Fit budget on CPU unless ``--max-minutes`` says otherwise: the default training took 21–22
minutes of it on this project's 2 cores, and the whole run stays under 30 min."""

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_UNREADABLE = 2


def register_train(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand (entry point ``fleetcast.commands:train``)."""
    import argparse

    p = subparsers.add_parser(
        "train",
        help="train the TFT on a contract Parquet file and write a model bundle",
        description=(
            "Validate a contract Parquet file, train a multi-target Temporal Fusion Transformer, "
            "write models/tft_model_YYYYMMDD_HHMMSS/ (model.safetensors, config.json, "
            "training_info.json, server_mapping.json), point models/latest at it and print the "
            "accuracy against baselines on the held-out tail. See docs/MODEL_FORMAT.md; every "
            "option's accepted range: trainer/README.md#options."
        ),
    )
    p.add_argument(
        "--data",
        default="training/server_metrics.parquet",
        help="Parquet file, or a folder holding server_metrics.parquet",
    )
    p.add_argument("--out", default="models", help="folder for bundles and the 'latest' link")
    p.add_argument(
        "--epochs",
        type=int,
        default=40,
        help="maximum epochs, at least 1 (early stopping: --patience)",
    )
    p.add_argument(
        "--batch-size", type=int, default=64, help="windows per batch (per GPU with DDP)"
    )
    p.add_argument(
        "--max-batches-per-epoch",
        type=int,
        default=None,
        help=f"cap of training batches per epoch; default {CPU_DEFAULT_MAX_BATCHES} on "
        "CPU, no cap on GPU; 0 = no cap",
    )
    p.add_argument("--val-batches", type=int, default=20, help="validation batches per epoch")
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument(
        "--horizon-power",
        type=float,
        default=1.0,
        help="loss weight of prediction step h is h**-P (0 = all steps alike)",
    )
    p.add_argument("--hidden-size", type=int, default=32)
    p.add_argument("--attention-heads", type=int, default=4)
    p.add_argument("--hidden-continuous-size", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument(
        "--encoder-steps",
        type=int,
        default=DEFAULT_ENCODER_STEPS,
        help="encoder (context) steps; 96 = 8 h (with --day-ago the model also reads the "
        "day before)",
    )
    p.add_argument(
        "--min-encoder-steps", type=int, default=12, help="shortest encoder (cold start)"
    )
    p.add_argument(
        "--input-scaling",
        choices=("fixed", "window"),
        default="fixed",
        help="metrics as inputs: with one fixed scale (lets the appliance cache per-step "
        "work; docs/MODEL_FORMAT.md#step-cache), or scaled per window (independent of "
        "--day-ago: the earlier default design is --input-scaling window --no-day-ago "
        "--encoder-steps 288)",
    )
    p.add_argument(
        "--day-ago",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="feed each metric's value one day before every step, a known input that gives "
        "a short encoder yesterday's pattern; on by default (docs/MODEL_FORMAT.md#day-ago-inputs)",
    )
    p.add_argument(
        "--prediction-steps",
        type=int,
        default=DEFAULT_PREDICTION_STEPS,
        help="prediction steps; 96 = 8 h",
    )
    p.add_argument(
        "--holdout-hours",
        type=float,
        default=48.0,
        help="held-out tail for validation and accuracy (reduced to a third on short data)",
    )
    p.add_argument("--eval-windows", type=int, default=3000, help="cap of accuracy windows")
    p.add_argument("--no-eval", action="store_true", help="skip the accuracy table")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience (epochs)")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock budget of the fit (Lightning max_time): training stops once it is "
        f"spent; default {CPU_DEFAULT_MAX_MINUTES:g} on CPU, none on GPU; 0 = none",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accelerator", default="auto", help="auto (GPU when present), cpu, gpu")
    p.add_argument("--devices", default="auto", help="devices, e.g. 4 (with --strategy ddp)")
    p.add_argument("--strategy", default="auto", help="auto, or ddp for several GPUs")
    p.add_argument(
        "--precision",
        default=None,
        help="Lightning precision; default bf16-mixed/16-mixed on GPU, 32-true on CPU",
    )
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        help="Lightning checkpoints (default OUT/checkpoints); every --checkpoint-every "
        "epochs plus last.ckpt",
    )
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument(
        "--resume",
        default=None,
        help="resume from a .ckpt written by an earlier run ('last' = CHECKPOINT_DIR/last.ckpt)",
    )
    p.add_argument(
        "--servers-sample",
        type=int,
        default=None,
        help="train on N servers (spread over profiles) when the data exceeds memory "
        "(~250 bytes per row)",
    )
    p.set_defaults(handler=run_train)


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _cli_error(option: str, value: object, accepted: str, why: str, fix: str) -> ValueError:
    from fleetcast.trainer.train import option_error

    return option_error(option, value, accepted, why, fix)


def _check_cli_options(args: argparse.Namespace) -> None:
    """The options whose command-line form differs from TrainConfig's (0 = none, hours)."""
    if args.max_batches_per_epoch is not None and args.max_batches_per_epoch < 0:
        raise _cli_error(
            "--max-batches-per-epoch",
            args.max_batches_per_epoch,
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
            "validation loss, early stopping and the accuracy table are computed on the "
            "held-out tail; without one nothing can be validated.",
            "Pass --holdout-hours 48 (the default) or another positive number of hours.",
        )
    if args.servers_sample is not None and args.servers_sample < 1:
        raise _cli_error(
            "--servers-sample",
            args.servers_sample,
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


def _quiet_libraries() -> None:
    """Keep the run's output readable: our per-epoch lines, not the libraries' chatter."""
    import warnings

    import lightning.pytorch  # noqa: F401 - it configures its loggers on import; override after

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    for pattern in (
        r"Attribute '.*' is an instance of `nn.Module`",
        r".*does not have many workers",
        r".*isinstance\(treespec, LeafSpec\)",
        r"Found \d+ unknown classes",
        r".*feature names.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"fleetcast train: {message}", file=sys.stderr)
    return code


def run_train(args: argparse.Namespace) -> int:
    """Validate, train, save; print the quality rules and the accuracy table; return the exit code."""
    from fleetcast.contract.validate import DataFileError, DataValidator
    from fleetcast.trainer.data_io import file_sha256, read_training_table, resolve_data_path

    # Before torch is imported: idle OpenMP threads sleep instead of spinning. On a CPU shared
    # with other work, spinning threads made a training batch 10-30x slower (measured).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _quiet_libraries()
    try:  # every option, before any data is read
        config = config_from_args(args)
        check_paths(config, args.out)
    except ValueError as exc:
        return _fail(str(exc))
    data_path = resolve_data_path(args.data)
    try:
        valid, errors, warnings = DataValidator(strict=True).validate_schema(data_path)
    except DataFileError as exc:
        return _fail(str(exc), EXIT_UNREADABLE)
    if not valid:
        print(
            f"fleetcast train: {data_path} breaks the data contract; nothing was trained.",
            file=sys.stderr,
        )
        for error in errors:
            print(f"ERROR {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for warning in warnings:
        logger.warning("%s", warning)

    import pyarrow.compute as pc

    from fleetcast.contract.encoder import ServerEncoder
    from fleetcast.trainer.bundle import BundleError, save_bundle
    from fleetcast.trainer.evaluate import format_accuracy_table
    from fleetcast.trainer.train import train_model

    table = read_training_table(data_path, args.servers_sample)
    try:
        model, dataset, info = train_model(table, config)
    except ValueError as exc:
        return _fail(str(exc))
    if info.get("global_rank", 0) != 0:
        return EXIT_OK  # DDP: the other processes trained; the first one writes the bundle
    if info.get("best_epoch") is None:
        return _fail(_no_epoch_message(info, config, args.out))
    info["data"] = {
        # Absolute: `fleetcast export --bundle /abs/models/latest` may run from anywhere.
        "file": os.path.abspath(data_path),
        "sha256": file_sha256(data_path),
        "servers_sample": args.servers_sample,
        "validation_warnings": warnings,
    }
    try:
        names = pc.unique(table.column("server_name")).to_pylist()
        bundle = save_bundle(
            model, dataset, args.out, training_info=info, server_encoder=ServerEncoder(names)
        )
    except (BundleError, OSError) as exc:
        return _fail(str(exc))

    quality = info["quality"]
    print(f"bundle: {bundle}  (latest -> {bundle.name})")
    print(
        f"epochs: {info['epochs_run']}, best {info['best_epoch']}; "
        f"train {info['timings_s']['fit']:.0f} s, total {info['timings_s']['total']:.0f} s"
    )
    ratio = quality["val_train_ratio"]
    print(
        "quality rules: profile feature "
        f"{'on' if quality['profile_feature'] else 'OFF'}; val loss / train loss = "
        f"{'n/a' if ratio is None else f'{ratio:.2f}'} (must be < 1.5): "
        f"{'PASS' if quality['passed'] else 'FAIL'}"
    )
    if "accuracy" in info:
        print(format_accuracy_table(info["accuracy"]))
    if not quality["passed"]:
        logger.warning("the codex quality rules failed: %s", json.dumps(quality))
    return EXIT_OK


def _no_epoch_message(info: dict, config: TrainConfig, out: str | Path) -> str:
    """Four parts: no epoch of this run gave a finite validation loss, so nothing is saved."""
    from fleetcast.contract.errors import explain

    history = info.get("history") or []
    if history:
        what = (
            f"No epoch of this run gave a finite validation loss ({len(history)} epoch(s) run, "
            "every validation loss NaN or infinite)"
        )
        fix = (
            "Lower --learning-rate, check the data for extreme values (fleetcast validate), or "
            "use --precision 32-true."
        )
    else:
        what = "No training epoch was completed"
        done = info.get("epochs_total")
        if config.resume_from is not None and done is not None and done >= config.epochs:
            fix = (
                f"The checkpoint {config.resume_from} had already trained {done} epoch(s), as "
                f"many as --epochs {config.epochs} allows: pass a larger --epochs to train on "
                "from it, or drop --resume to start afresh."
            )
        elif config.max_minutes is not None:
            fix = (
                f"--max-minutes {config.max_minutes:g} was spent before the first epoch ended: "
                "pass a larger --max-minutes (0 = no budget), or a smaller "
                "--max-batches-per-epoch to shorten the epochs."
            )
        else:
            fix = "Run again with --epochs 1 or more, and check the log above for the cause."
    return explain(
        f"{what}; nothing was written and {Path(out) / 'latest'} was left as it was.",
        "a bundle needs the weights of at least one trained epoch: an untrained model would "
        "replace the last good one.",
        fix,
        "trainer/README.md#what-a-run-does",
    )
