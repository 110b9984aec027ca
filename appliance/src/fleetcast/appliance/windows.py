"""Numba kernels that turn the ring buffers into the model's six input tensors in one pass.

The rules are docs/MODEL_FORMAT.md#features and the numpy reference in
``fleetcast.contract.features``; ``appliance/tests/engine/test_windows.py`` checks the two
agree. Per server (B = ready servers, E = encoder width, D = prediction length):

- The encoder ends at the server's newest *closed* step ``L = last_step - 1`` (the open
  step may still receive samples) and starts at ``L - E + 1`` or at the server's first
  step with a sample after it, whichever is later (pytorch-forecasting's windows start at a
  row). Missing steps are **forward-filled** from the previous present step, as
  pytorch-forecasting does for ``allow_missing_timesteps``: a filled row repeats its source
  row whole, state, calendar features and day-ago values included. Windows shorter than E
  are left-aligned; the rows after ``encoder_lengths[b]`` are zero padding.
- Targets are transformed (identity or log1p of the value clamped at 0), centred on the
  last encoder value and divided by max(std(ddof=1), min_scale) of the encoder window.
- Known reals are the calendar features of each step's UTC start time and, for a model with
  day-ago inputs, each target's value ``lag`` steps before the step (forward-filled the same
  way; before the server's first step in the ring, its first value); static reals (encoder
  length, target centres and scales) are scaled with the model's scalers. The ring must hold
  ``E + lag + 2`` steps (``ModelSpec.history_steps + 2``, as the engine sizes it).

A :class:`WindowPlan` turns the model's column lists into small integer/float arrays, so one
generic kernel serves any column order the model was exported with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.appliance.window_kernels import compiled_kernels

if TYPE_CHECKING:
    from fleetcast.contract.features import ModelSpec

__all__ = [
    "CAT_STATE",
    "CAT_STATIC",
    "REAL_CENTER",
    "REAL_DAY_AGO",
    "REAL_ENCODER_LENGTH",
    "REAL_LEVEL",
    "REAL_SCALE",
    "REAL_TARGET",
    "REAL_TIME",
    "TIME_FEATURES",
    "WindowInputs",
    "WindowPlan",
    "build_windows",
    "plan_from_spec",
    "window_lengths",
    "window_samples",
]

REAL_TARGET = 0
"""x_reals column kind: a target, window-scaled (arg = target index)."""
REAL_TIME = 1
"""x_reals column kind: a calendar feature (arg = index in TIME_FEATURES)."""
REAL_ENCODER_LENGTH = 2
"""x_reals column kind: the window's encoder length (static)."""
REAL_CENTER = 3
"""x_reals column kind: a target's window centre (arg = target index; static)."""
REAL_SCALE = 4
"""x_reals column kind: a target's window scale (arg = target index; static)."""
REAL_LEVEL = 5
"""x_reals column kind: a target, transformed and scaled with fixed mean/div (arg = target)."""
REAL_DAY_AGO = 6
"""x_reals column kind: a target ``WindowPlan.lag`` steps earlier, as REAL_LEVEL (known)."""

CAT_STATIC = 0
"""x_categoricals column kind: a per-server code (arg = column of ``static_codes``)."""
CAT_STATE = 1
"""x_categoricals column kind: the step's state, mapped through ``state_codes``."""

TIME_FEATURES: tuple[str, ...] = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")
"""Calendar features by index (docs/MODEL_FORMAT.md#features)."""

TRANSFORM_CODES = {"identity": 0, "log1p": 1}


@dataclass(frozen=True)
class WindowPlan:
    """The model's input layout as arrays the kernel reads.

    ``real_kind``/``real_arg`` (n_real,) int64 and ``real_mean``/``real_div`` (n_real,) float64:
    scaled = (raw - mean) / div for every kind but REAL_TARGET. ``cat_kind``/``cat_arg``
    (n_cat,) int64. ``state_codes`` (9,) int64: model code of contract state index - 1 .. 7
    (index 0 = null). ``decoder_state_code``: the state code sent for future steps.
    ``transform`` (n_target,) int64 (0 identity, 1 log1p), ``min_scale`` (n_target,) float64.
    ``lag``: steps back of the REAL_DAY_AGO columns (0 without any).
    """

    encoder_length: int
    prediction_length: int
    min_encoder_length: int
    step_seconds: int
    real_kind: np.ndarray
    real_arg: np.ndarray
    real_mean: np.ndarray
    real_div: np.ndarray
    cat_kind: np.ndarray
    cat_arg: np.ndarray
    state_codes: np.ndarray
    decoder_state_code: int
    transform: np.ndarray
    min_scale: np.ndarray
    pad_cat: int = 0
    lag: int = 0

    @property
    def n_real(self) -> int:
        return int(self.real_kind.shape[0])

    @property
    def n_cat(self) -> int:
        return int(self.cat_kind.shape[0])

    @property
    def n_target(self) -> int:
        return int(self.transform.shape[0])


def plan_from_spec(spec: ModelSpec) -> WindowPlan:
    """The kernel's view of a model's inputs (raises ContractError for a column it cannot fill).

    Static categoricals read ``static_codes[:, 0]`` (profile) and ``[:, 1]`` (server_id).
    """
    from fleetcast.contract.errors import ContractError

    def refuse(what: str) -> ContractError:
        return ContractError(
            what,
            "an input the appliance cannot fill would be garbage to the model.",
            "Use a model trained with the features of docs/MODEL_FORMAT.md#features.",
            "docs/MODEL_FORMAT.md#features",
        )

    tindex = {name: j for j, name in enumerate(spec.targets)}
    kinds, args, means, divs = [], [], [], []
    source_kind = {
        "target": REAL_TARGET,
        "calendar": REAL_TIME,
        "encoder_length": REAL_ENCODER_LENGTH,
        "target_center": REAL_CENTER,
        "target_scale": REAL_SCALE,
        "target_level": REAL_LEVEL,
        "target_day_ago": REAL_DAY_AGO,
    }
    for name in spec.x_reals:
        sc = spec.real_scalers[name]
        if sc.source not in source_kind:
            raise refuse(f"The model has a real input {name!r} of source {sc.source!r}.")
        if sc.source == "target_day_ago" and sc.lag != spec.max_lag:
            raise refuse(
                f"The model's day-ago inputs look back different numbers of steps ({name!r})."
            )
        kinds.append(source_kind[sc.source])
        if sc.source == "calendar":
            args.append(TIME_FEATURES.index(name))
        elif sc.source == "encoder_length":
            args.append(0)
        else:
            args.append(tindex[sc.target])
        means.append(sc.mean)
        divs.append(sc.scale)
    cat_kind, cat_arg = [], []
    for name in spec.x_categoricals:
        if name == "state":
            cat_kind.append(CAT_STATE)
            cat_arg.append(0)
        elif name in ("profile", "server_id"):
            cat_kind.append(CAT_STATIC)
            cat_arg.append(0 if name == "profile" else 1)
        else:
            raise refuse(
                f"The model has a categorical input {name!r} this fleetcast cannot compute."
            )
    table = spec.state_code_table() if "state" in spec.x_categoricals else np.zeros(1, np.int64)
    # Kernel index = contract state index + 1 (0 = unknown); the table's last entry is unknown.
    state_codes = np.concatenate([table[-1:], table[:-1]]).astype(np.int64)
    return WindowPlan(
        encoder_length=spec.encoder_length,
        prediction_length=spec.prediction_length,
        min_encoder_length=spec.min_encoder_length,
        step_seconds=spec.step_seconds,
        real_kind=np.asarray(kinds, dtype=np.int64),
        real_arg=np.asarray(args, dtype=np.int64),
        real_mean=np.asarray(means, dtype=np.float64),
        real_div=np.asarray(divs, dtype=np.float64),
        cat_kind=np.asarray(cat_kind, dtype=np.int64),
        cat_arg=np.asarray(cat_arg, dtype=np.int64),
        state_codes=state_codes,
        decoder_state_code=int(spec.unknown_codes.get("state", 0)),
        transform=np.asarray(
            [TRANSFORM_CODES[spec.target_transforms[t]] for t in spec.targets], dtype=np.int64
        ),
        min_scale=np.asarray([spec.target_min_scale[t] for t in spec.targets], dtype=np.float64),
        lag=spec.max_lag,
    )


@dataclass
class WindowInputs:
    """Preallocated model inputs for up to ``capacity`` windows (reused between forecasts).

    encoder_cat int64 (B, E, n_cat), encoder_cont float32 (B, E, n_real), encoder_lengths
    int64 (B,), decoder_cat int64 (B, D, n_cat), decoder_cont float32 (B, D, n_real),
    target_scale float32 (B, n_target, 2).
    """

    encoder_cat: np.ndarray
    encoder_cont: np.ndarray
    encoder_lengths: np.ndarray
    decoder_cat: np.ndarray
    decoder_cont: np.ndarray
    target_scale: np.ndarray

    @classmethod
    def allocate(cls, plan: WindowPlan, capacity: int) -> WindowInputs:
        e, d = plan.encoder_length, plan.prediction_length
        return cls(
            encoder_cat=np.zeros((capacity, e, plan.n_cat), dtype=np.int64),
            encoder_cont=np.zeros((capacity, e, plan.n_real), dtype=np.float32),
            encoder_lengths=np.zeros(capacity, dtype=np.int64),
            decoder_cat=np.zeros((capacity, d, plan.n_cat), dtype=np.int64),
            decoder_cont=np.zeros((capacity, d, plan.n_real), dtype=np.float32),
            target_scale=np.zeros((capacity, plan.n_target, 2), dtype=np.float32),
        )

    @property
    def capacity(self) -> int:
        return int(self.encoder_lengths.shape[0])

    def feed(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """The ONNX Runtime feed for windows ``lo:hi`` (contiguous views, no copy)."""
        return {
            "encoder_cat": self.encoder_cat[lo:hi],
            "encoder_cont": self.encoder_cont[lo:hi],
            "encoder_lengths": self.encoder_lengths[lo:hi],
            "decoder_cat": self.decoder_cat[lo:hi],
            "decoder_cont": self.decoder_cont[lo:hi],
            "target_scale": self.target_scale[lo:hi],
        }


def window_lengths(
    slot_step: np.ndarray, last_step: np.ndarray, n: int, encoder_length: int
) -> np.ndarray:
    """Encoder length of every registered server (n,) int64: what the model reads."""
    return compiled_kernels()["lengths"](
        slot_step, last_step, np.int64(n), np.int64(encoder_length)
    )


def window_samples(
    slot_step: np.ndarray, last_step: np.ndarray, n: int, encoder_length: int, cap: int
) -> np.ndarray:
    """Steps with a sample in every registered server's window (n,) int64, its length less
    the forward-filled steps, counted up to ``cap``; ready = >= min_encoder_length
    (docs/RISK.md#windows)."""
    return compiled_kernels()["samples"](
        slot_step, last_step, np.int64(n), np.int64(encoder_length), np.int64(cap)
    )


def build_windows(
    plan: WindowPlan,
    out: WindowInputs,
    idx: np.ndarray,
    lengths: np.ndarray,
    values: np.ndarray,
    states: np.ndarray,
    slot_step: np.ndarray,
    last_step: np.ndarray,
    static_codes: np.ndarray,
    out_offset: int = 0,
) -> None:
    """Write the windows of servers ``idx`` (B,) with ``lengths`` (B,) into ``out[offset:offset+B]``.

    ``static_codes`` (S, k) int64: per-server codes for CAT_STATIC columns.
    """
    if out_offset + idx.shape[0] > out.capacity:
        raise ValueError(
            f"{idx.shape[0]} windows at offset {out_offset} do not fit in inputs of {out.capacity}."
        )
    compiled_kernels()["build"](
        np.ascontiguousarray(idx, dtype=np.int64),
        np.ascontiguousarray(lengths, dtype=np.int64),
        values,
        states,
        slot_step,
        last_step,
        static_codes,
        np.int64(plan.step_seconds),
        plan.real_kind,
        plan.real_arg,
        plan.real_mean,
        plan.real_div,
        plan.cat_kind,
        plan.cat_arg,
        plan.state_codes,
        np.int64(plan.decoder_state_code),
        plan.transform,
        plan.min_scale,
        np.int64(plan.pad_cat),
        np.int64(plan.lag),
        np.int64(out_offset),
        out.encoder_cat,
        out.encoder_cont,
        out.encoder_lengths,
        out.decoder_cat,
        out.decoder_cont,
        out.target_scale,
    )
