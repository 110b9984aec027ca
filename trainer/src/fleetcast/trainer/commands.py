"""``fleetcast train``: validate the data, train the TFT, write the bundle, print the accuracy.

Exit codes: 0 trained (quality warnings are printed, not fatal), 1 the data or the options
cannot be used (the validator's errors, too little data, data at another step, a bad option,
a checkpoint that cannot be resumed) or no epoch was trained (nothing is written, ``latest``
is left as it was), 2 the file cannot be read. Every option is checked before any data is
read (:func:`config_from_args`, :func:`check_paths`, in :mod:`fleetcast.trainer.cli_config`
and re-exported here; trainer/README.md#options). Bad input never produces a traceback.

Scaling: on one GPU training runs in bf16 (or fp16) mixed precision automatically; several
GPUs use Lightning's DDP: ``--accelerator gpu --devices 4 --strategy ddp`` (each process
trains on its share of the batches; the batch size is per GPU). On CPU, cap the batches per
epoch (``--max-batches-per-epoch``): a full pass over the default fleet's ~750k windows
takes hours on a few cores.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fleetcast.contract.schema import DEFAULT_ENCODER_STEPS, DEFAULT_PREDICTION_STEPS
from fleetcast.trainer.cli_config import (
    CPU_DEFAULT_MAX_BATCHES,
    CPU_DEFAULT_MAX_MINUTES,
    check_paths,
    config_from_args,
)
from fleetcast.trainer.quiet import quiet_libraries

if TYPE_CHECKING:
    import argparse

    from fleetcast.trainer.train import TrainConfig, TrainingInterrupted

__all__ = [
    "CPU_DEFAULT_MAX_BATCHES",
    "CPU_DEFAULT_MAX_MINUTES",
    "check_paths",
    "config_from_args",
    "register_train",
    "run_train",
]

logger = logging.getLogger("fleetcast.trainer")

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
    p.add_argument(
        "--unknown-state-fraction",
        type=float,
        default=0.25,
        help="probability that each of a server's training days has its state nulled, so forecasts stay "
        "sound without state labels (Prometheus sends none); 0 = never",
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
        help="held-out tail for the accuracy table (reduced to a third on short data)",
    )
    p.add_argument(
        "--val-hours",
        type=float,
        default=24.0,
        help="validation part before the held-out tail, for validation loss and early "
        "stopping (reduced to a third on short data; 0 = validate on the held-out tail)",
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
    quiet_libraries()
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
    from fleetcast.trainer.train import TrainingInterrupted, train_model

    table = read_training_table(data_path, args.servers_sample)
    try:
        model, dataset, info = train_model(table, config)
    except ValueError as exc:
        return _fail(str(exc))
    except TrainingInterrupted as stop:
        return _fail(_interrupted_message(stop, args.out), 143 if stop.signal == "SIGTERM" else 130)
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
    if quality.get("nonfinite_cells"):
        cells = quality["nonfinite_cells"]
        print(
            f"quality rules: FAIL: the model forecasts inf or NaN on held-out windows "
            f"({', '.join(cells[:4])}{', …' if len(cells) > 4 else ''}). Why it matters: "
            "`fleetcast export` refuses such a model, and an appliance would serve no forecast. "
            "Fix: look for extreme values in the data (near float32's limit, 3.4e38, is legal "
            "but overflows the model's scaling) and remove or cap them, then train again. "
            "See trainer/README.md#what-a-run-does."
        )
    if not quality["passed"]:
        logger.warning("the codex quality rules failed: %s", json.dumps(quality))
    return EXIT_OK


def _interrupted_message(stop: TrainingInterrupted, out: str | Path) -> str:
    """What an interrupted training (train.TrainingInterrupted) left, and how to go on."""
    latest = Path(out) / "latest"
    lead = (
        f"stopped by {stop.signal} after {stop.epochs} finished epochs of this run; no bundle "
        f"was written and {latest} is unchanged."
    )
    if stop.checkpoint_dir is None:
        return f"{lead} Checkpoints were off: run the command again to train."
    # Before its first epoch a new run's folder may hold an earlier run's last.ckpt:
    # resuming that would go on with the other run.
    if not (stop.checkpoint_dir / "last.ckpt").is_file() or not (stop.epochs or stop.resumed):
        return f"{lead} No checkpoint was written yet: run the command again to train."
    return (
        f"{lead} The checkpoints are in {stop.checkpoint_dir} (last.ckpt: the last finished "
        "epoch): run the same command with --resume last to go on from it "
        "(trainer/README.md, step 4)."
    )


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
