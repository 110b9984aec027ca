"""``fleetcast train``'s checks of its options and its data, before any training.

Every option's range and choices (:func:`validate_config`, trainer/README.md#options), the
hardware options against the machine, a ``--resume`` file, the data's step
(:func:`check_data_step`, trainer/README.md#data-step; in :mod:`fleetcast.trainer.data_step`
and re-exported here) and the encoder length against the data (:func:`check_encoder_fits`).
Each failure is a four-part ``ValueError``. Split from :mod:`fleetcast.trainer.train`,
which calls them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract.schema import DEFAULT_ENCODER_STEPS, STEP_SECONDS
from fleetcast.trainer.data_step import DATA_STEP_DOC, check_data_step

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from fleetcast.trainer.train import TrainConfig

__all__ = [
    "ACCELERATORS",
    "DATA_STEP_DOC",
    "OPTIONS_DOC",
    "PRECISIONS",
    "check_data_step",
    "check_encoder_fits",
    "first_lines",
    "option_error",
    "resume_error",
    "validate_config",
]

logger = logging.getLogger("fleetcast.trainer")

OPTIONS_DOC = "trainer/README.md#options"
"""Where every ``fleetcast train`` option's accepted range is documented."""
ACCELERATORS: tuple[str, ...] = ("auto", "cpu", "gpu", "cuda", "mps")
"""Accepted ``accelerator`` values (Lightning's names)."""
PRECISIONS: tuple[str, ...] = ("32-true", "bf16-mixed", "16-mixed")
"""Accepted ``precision`` values: float32 weights (the bundle stores float32), mixed or not."""
MAX_SEED = 2**32 - 1
"""Largest seed numpy (and so Lightning's seed_everything) accepts."""

_OPTION = {
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "max_batches": "--max-batches-per-epoch",
    "val_batches": "--val-batches",
    "learning_rate": "--learning-rate",
    "hidden_size": "--hidden-size",
    "attention_head_size": "--attention-heads",
    "hidden_continuous_size": "--hidden-continuous-size",
    "dropout": "--dropout",
    "encoder": "--encoder-steps",
    "min_encoder": "--min-encoder-steps",
    "prediction": "--prediction-steps",
    "horizon_power": "--horizon-power",
    "unknown_state_fraction": "--unknown-state-fraction",
    "input_scaling": "--input-scaling",
    "holdout_steps": "--holdout-hours",
    "val_steps": "--val-hours",
    "patience": "--patience",
    "max_minutes": "--max-minutes",
    "seed": "--seed",
    "accelerator": "--accelerator",
    "devices": "--devices",
    "strategy": "--strategy",
    "precision": "--precision",
    "num_workers": "--num-workers",
    "checkpoint_every": "--checkpoint-every",
    "max_eval_windows": "--eval-windows",
}
"""TrainConfig field -> the ``fleetcast train`` option that sets it (for messages)."""


def option_error(option: str, value: object, accepted: str, why: str, fix: str) -> ValueError:
    """A four-part error about one option: what (option, value, accepted range), why, fix, doc."""
    from fleetcast.contract.errors import explain

    return ValueError(explain(f"{option} {value}: {accepted}.", why, fix, OPTIONS_DOC))


def _label(name: str) -> str:
    """The option that sets a TrainConfig field (README table), else the field itself."""
    return _OPTION.get(name, f"TrainConfig.{name}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and bool(np.isfinite(value))
    )


def resume_error(path: Path | str, problem: str) -> ValueError:
    """The four-part error of a ``--resume`` file that is not a usable checkpoint."""
    from fleetcast.contract.errors import explain

    return ValueError(
        explain(
            f"--resume {path}: not a checkpoint this run can resume from ({problem}).",
            "resuming restores the weights, optimizer and epoch counter from a Lightning "
            "checkpoint (.ckpt) written by an earlier `fleetcast train` with the same model "
            "options (--hidden-size, --attention-heads, --encoder-steps, ...) on the same "
            "data (the embeddings are sized by its servers).",
            "Pass --resume last, or an epochNNN.ckpt from the checkpoint folder of a run with "
            "the same options, or drop --resume to start afresh.",
            "trainer/README.md#what-a-run-does",
        )
    )


def first_lines(exc: BaseException, lines: int = 2, chars: int = 400) -> str:
    """``Type: message`` of an exception, cut to its first lines (a state_dict mismatch lists
    every parameter)."""
    text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    short = " ".join(text[:lines])
    if len(text) > lines:
        short += f" ... ({len(text) - lines} more lines)"
    if len(short) > chars:
        short = short[: chars - 3] + "..."
    return f"{type(exc).__name__}: {short}"


def _require_int(
    config: TrainConfig,
    name: str,
    low: int,
    why: str,
    high: int | None = None,
    fix: str | None = None,
) -> None:
    """Refuse ``config.<name>`` unless it is a whole number in [low, high]."""
    value = getattr(config, name)
    if _is_int(value) and value >= low and (high is None or value <= high):
        return
    if high is not None:
        accepted = f"must be a whole number from {low} to {high}"
    else:
        accepted = f"must be a whole number of at least {low}"
    flag = _OPTION.get(name, f"TrainConfig.{name}")
    default = getattr(type(config), name, None)  # the dataclass default
    if fix is None:
        fix = f"Pass {flag} {default} (the default) or another whole number in range."
    raise option_error(_label(name), value, accepted, why, fix)


def _require_choice(
    config: TrainConfig, name: str, choices: tuple[str, ...], why: str, fix: str
) -> None:
    """Refuse ``config.<name>`` unless it is one of ``choices``."""
    value = getattr(config, name)
    if value not in choices:
        raise option_error(
            _label(name), repr(value), f"must be one of {', '.join(choices)}", why, fix
        )


def validate_config(config: TrainConfig) -> None:
    """The rules of :meth:`TrainConfig.validate`, in option order."""
    _require_int(
        config, "epochs", 1, "an epoch is one pass of training; with none nothing is trained "
        "(and Lightning reads a negative number as no limit)."
    )  # fmt: skip
    _require_int(config, "batch_size", 1, "a batch holds at least one window.")
    if config.max_batches is not None:
        _require_int(
            config, "max_batches", 1, "an epoch needs at least one training batch "
            "(on the command line, 0 means no cap)."
        )  # fmt: skip
    _require_int(
        config, "val_batches", 1, "early stopping and the best-epoch choice need a validation "
        "loss every epoch."
    )  # fmt: skip
    if not (_is_real(config.learning_rate) and config.learning_rate > 0):
        raise option_error(
            _label("learning_rate"),
            config.learning_rate,
            "must be a finite number above 0",
            "Adam moves the weights by the learning rate times the gradient; 0 or less does "
            "not train (or trains backwards).",
            "Pass --learning-rate 3e-3 (the default) or another positive value.",
        )
    _require_int(config, "hidden_size", 1, "the TFT's layers are hidden_size wide.")
    _require_int(
        config, "attention_head_size", 1, "the TFT's attention has at least one head, and each "
        "head is hidden_size // heads wide: more heads than the hidden size gives heads 0 "
        "wide that attend to nothing.",
        high=config.hidden_size,
        fix="Pass fewer --attention-heads (at most --hidden-size; 4 with the default hidden "
        "size 32, 1 for a tiny model) or a larger --hidden-size.",
    )  # fmt: skip
    _require_int(
        config, "hidden_continuous_size", 1, "every real input is embedded in a vector of this "
        "size; PyTorch refuses layers of size 0."
    )  # fmt: skip
    _require_int(config, "lstm_layers", 1, "the TFT's encoder and decoder are LSTMs.")
    if not (_is_real(config.dropout) and 0 <= config.dropout < 1):
        raise option_error(
            _label("dropout"),
            config.dropout,
            "must be at least 0 and below 1",
            "dropout is the share of activations zeroed during training; 1 or more zeroes "
            "everything.",
            "Pass --dropout 0.1 (the default) or another value in [0, 1).",
        )
    if not (_is_real(config.gradient_clip) and config.gradient_clip >= 0):
        raise option_error(
            _label("gradient_clip"),
            config.gradient_clip,
            "must be a finite number of at least 0 (0 = no clipping)",
            "it caps the gradient norm.",
            "Use 0.5 (the default).",
        )
    _require_int(
        config, "encoder", 1, "the encoder is the context the model reads before it forecasts."
    )
    _require_int(
        config, "min_encoder", 1, "it is the shortest encoder a window may have (cold start); "
        "a forecast needs at least one observed step."
    )  # fmt: skip
    if config.min_encoder > config.encoder:
        raise option_error(
            f"{_label('encoder')} {config.encoder} is shorter than",
            f"{_label('min_encoder')} {config.min_encoder}",
            "the encoder must be at least as long as the shortest encoder",
            "--min-encoder-steps is the shortest context a window may have (cold start) and "
            "--encoder-steps the longest; pytorch-forecasting refuses a longest below the "
            "shortest.",
            f"Pass an --encoder-steps of at least {config.min_encoder}, or a --min-encoder-steps "
            f"of at most {config.encoder} (the defaults are {DEFAULT_ENCODER_STEPS} and 12).",
        )
    _require_int(config, "prediction", 1, "every window forecasts this many steps.")
    if config.day_ago and config.prediction > 86400 // STEP_SECONDS:
        raise option_error(
            _label("prediction"),
            config.prediction,
            f"must be at most {86400 // STEP_SECONDS} steps (one day) with day-ago inputs",
            "the last predicted step's value one day earlier would not be known yet.",
            f"Pass --prediction-steps {86400 // STEP_SECONDS} or fewer, or --no-day-ago.",
        )
    if not all(_is_real(q) and 0 < q < 1 for q in config.quantiles) or (
        0.5 not in config.quantiles
    ):
        raise option_error(
            _label("quantiles"),
            list(config.quantiles),
            "must be numbers in (0, 1) including 0.5",
            "the p50 forecast is the point forecast every consumer reads.",
            "Use the default (0.1, 0.5, 0.9).",
        )
    if not (_is_real(config.horizon_power) and 0 <= config.horizon_power <= 10):
        raise option_error(
            _label("horizon_power"),
            config.horizon_power,
            "must be a number from 0 to 10",
            "step h of the forecast is weighted h**-P; a negative P weights the far steps "
            "most (the opposite of its purpose) and a large one overflows float32.",
            "Pass --horizon-power 1 (the default) or 0 for all steps alike.",
        )
    if not (_is_real(config.unknown_server_fraction) and 0 <= config.unknown_server_fraction < 1):
        raise option_error(
            _label("unknown_server_fraction"),
            config.unknown_server_fraction,
            "must be at least 0 and below 1",
            "it is the share of training servers trained as unknown servers.",
            "Use 0.1 (the default).",
        )
    if not (_is_real(config.unknown_state_fraction) and 0 <= config.unknown_state_fraction < 1):
        raise option_error(
            _label("unknown_state_fraction"),
            config.unknown_state_fraction,
            "must be at least 0 and below 1",
            "it is the share of each server's days trained without state labels.",
            "Use 0.25 (the default), or 0 when every source will send states.",
        )
    from fleetcast.trainer.dataset import INPUT_SCALINGS

    _require_choice(
        config, "input_scaling", INPUT_SCALINGS,
        "it selects how the metrics are scaled as inputs (trainer/README.md#input-scaling).",
        "Pass --input-scaling fixed (the default) or window.",
    )  # fmt: skip
    if not (_is_int(config.holdout_steps) and config.holdout_steps >= config.prediction):
        hours = config.holdout_steps * STEP_SECONDS / 3600 if _is_real(config.holdout_steps) else 0
        need = config.prediction * STEP_SECONDS / 3600
        raise option_error(
            _label("holdout_steps"),
            f"{hours:g} h ({config.holdout_steps} steps)",
            f"must hold at least one full prediction: {config.prediction} steps ({need:g} h, "
            "--prediction-steps)",
            "the accuracy table (and, with --val-hours 0, validation loss and early stopping) "
            "is computed on windows whose whole forecast lies in the held-out tail; a shorter "
            "tail holds none.",
            f"Pass --holdout-hours {max(need, 48.0):g} (the default is 48) or a shorter "
            "--prediction-steps.",
        )
    if not (
        _is_int(config.val_steps)
        and (config.val_steps == 0 or config.val_steps >= config.prediction)
    ):
        hours = config.val_steps * STEP_SECONDS / 3600 if _is_real(config.val_steps) else 0
        need = config.prediction * STEP_SECONDS / 3600
        raise option_error(
            _label("val_steps"),
            f"{hours:g} h ({config.val_steps} steps)",
            f"must be 0 or hold at least one full prediction: {config.prediction} steps "
            f"({need:g} h, --prediction-steps)",
            "validation loss and early stopping are computed on windows whose whole forecast "
            "lies in the validation part before the held-out tail; a shorter part holds none.",
            f"Pass --val-hours {max(need, 24.0):g} (the default is 24), 0 to validate on the "
            "held-out tail, or a shorter --prediction-steps.",
        )
    _require_int(
        config, "patience", 0, "early stopping waits this many epochs without a better "
        "validation loss."
    )  # fmt: skip
    if config.max_minutes is not None and not (
        _is_real(config.max_minutes) and config.max_minutes > 0
    ):
        raise option_error(
            _label("max_minutes"),
            config.max_minutes,
            "must be a finite number of minutes above 0 (on the command line, 0 = no budget)",
            "it is the wall-clock budget of the fit; none would be spent before the first batch.",
            "Pass --max-minutes 28 (the CPU default), or 0 for no budget.",
        )
    _require_int(
        config, "seed", 0, "numpy, torch and Lightning accept seeds in this range only.",
        high=MAX_SEED,
    )  # fmt: skip
    _validate_hardware(config)
    _require_int(
        config, "num_workers", 0, "it is the number of DataLoader worker processes (0 = load "
        "in the main process)."
    )  # fmt: skip
    _require_int(config, "checkpoint_every", 1, "a periodic checkpoint is written every N epochs.")
    _require_int(config, "eval_stride", 1, "it is the spacing of accuracy windows in steps.")
    _require_int(
        config, "max_eval_windows", 1, "the accuracy table needs at least one window "
        "(--no-eval skips it)."
    )  # fmt: skip


def _validate_hardware(config: TrainConfig) -> None:
    """accelerator / devices / strategy / precision: known values, and hardware that exists."""
    import torch

    _require_choice(
        config, "accelerator", ACCELERATORS, "it names the hardware Lightning trains on.",
        "Pass --accelerator auto (a GPU when present, else the CPU) or cpu.",
    )  # fmt: skip
    if config.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise option_error(
            _label("accelerator"),
            repr(config.accelerator),
            "needs a CUDA GPU, and torch sees none on this machine",
            f"torch {torch.__version__} reports torch.cuda.is_available() = False (no GPU, no "
            "driver, or a CPU-only torch build).",
            "Pass --accelerator cpu (or auto), or install a CUDA build of torch on a GPU machine.",
        )
    if config.accelerator == "mps" and not torch.backends.mps.is_available():
        raise option_error(
            _label("accelerator"),
            repr(config.accelerator),
            "needs Apple's Metal (MPS), which torch does not see on this machine",
            "torch.backends.mps.is_available() is False.",
            "Pass --accelerator cpu (or auto).",
        )
    on_gpu = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    devices = config.devices
    gpus = torch.cuda.device_count() if on_gpu else 0
    if on_gpu and isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)  # Lightning reads "2" as a count and "-1" as all GPUs
    ok = devices == "auto" or (_is_int(devices) and (devices >= 1 or (on_gpu and devices == -1)))
    if on_gpu and isinstance(devices, str) and devices != "auto":
        parts = [p.strip() for p in devices.split(",") if p.strip()]  # "0," is GPU 0
        ok = bool(parts) and all(p.isdigit() and int(p) < gpus for p in parts)
    if ok and on_gpu and _is_int(devices) and devices > gpus:
        ok = False
    if not ok:
        accepted = (
            f"must be auto, a number of GPUs from 1 to {gpus}, -1 (all) or GPU indices such "
            f"as 0,1 (this machine has {gpus})"
            if on_gpu
            else "must be auto or a number of processes of at least 1 (on the CPU)"
        )
        raise option_error(
            _label("devices"),
            repr(devices),
            accepted,
            "Lightning trains on that many devices (one process each with --strategy ddp).",
            "Pass --devices auto (the default) or a count in range.",
        )
    strategies = ("auto", *_lightning_strategies())
    if config.strategy not in strategies:
        raise option_error(
            _label("strategy"),
            repr(config.strategy),
            "must be auto or one of Lightning's strategies (ddp, ddp_spawn, fsdp, ...)",
            "it decides how several devices share the training.",
            "Pass --strategy auto (the default) or ddp for several GPUs.",
        )
    if config.precision is not None:
        _require_choice(
            config, "precision", PRECISIONS, "the bundle stores float32 weights: these keep "
            "them float32 (mixed precision computes in bf16/fp16); 16-true gave an infinite "
            "loss in training.",
            "Leave --precision out (bf16-mixed or 16-mixed on a GPU, 32-true on the CPU).",
        )  # fmt: skip


def _lightning_strategies() -> list[str]:
    from lightning.pytorch.strategies import StrategyRegistry

    return list(StrategyRegistry.available_strategies())


def check_encoder_fits(frame: pd.DataFrame, config: TrainConfig, cutoff: int) -> None:
    """Refuse an encoder longer than any training window can have (trainer/README.md#options).

    A training window predicts ``config.prediction`` steps up to ``cutoff`` (the end of the
    training part, before the validation part and the held-out tail) after an encoder
    of at most the steps before them; the longest server's training part (its first step to
    ``cutoff``) minus the prediction is the longest encoder the model can ever be trained
    on. A longer ``max_encoder_length`` would be recorded in the bundle all the same, and
    the export and the appliance size their inputs by it. Raises ValueError (four parts).
    """
    g = frame.groupby("server_name", observed=True)["time_idx"]
    first = g.min().to_numpy()
    last = np.minimum(g.max().to_numpy(), cutoff)
    if first.size == 0:
        return
    span = int((last - first).max() + 1)  # the longest server's training part, in steps
    longest = span - config.prediction
    if config.encoder <= longest:
        return
    total = int(frame["time_idx"].max() - first.min() + 1)
    validated = config.val_steps > 0
    before = (
        "before the validation part and the held-out tail"
        if validated
        else ("before the held-out tail")
    )
    # A validation part takes up to a third of the range: a shorter one (or none) leaves the
    # training part room for the encoder.
    shorter_val = (
        " or a shorter --val-hours (0: validate on the held-out tail)" if validated else ""
    )
    raise option_error(
        _label("encoder"),
        config.encoder,
        f"must be at most {longest} steps on this data: its longest server has {span} steps "
        f"({span * STEP_SECONDS / 3600:g} h) in the training part, {before} ({total} steps "
        f"in all), minus {config.prediction} predicted steps",
        "the model is trained on windows of the training part only, so it would never see an "
        "encoder this long; the bundle would still record it, and the export and the "
        "appliance size every input by it (memory grows with the encoder).",
        f"Pass --encoder-steps {longest} or fewer (the default is {DEFAULT_ENCODER_STEPS}), "
        f"train on more hours of data{shorter_val}."
        if longest >= 1
        else f"Train on more hours of data, pass a shorter --prediction-steps{shorter_val}.",
    )
