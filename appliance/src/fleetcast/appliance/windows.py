"""Numba kernels that turn the ring buffers into the model's six input tensors in one pass.

The rules are docs/MODEL_FORMAT.md#features and the numpy reference in
``fleetcast.contract.features``; ``appliance/tests/engine/test_windows.py`` checks the two
agree. Per server (B = ready servers, E = encoder width, D = prediction length):

- The encoder ends at the server's newest *closed* step ``L = last_step - 1`` (the open
  step may still receive samples) and starts at ``L - E + 1`` or at the server's first
  step, whichever is later. Missing steps are **forward-filled** from the previous present
  step (also from before the window when the ring still holds it), as pytorch-forecasting
  does for ``allow_missing_timesteps``. Windows shorter than E are left-aligned; the rows
  after ``encoder_lengths[b]`` are zero padding.
- Targets are transformed (identity or log1p of the value clamped at 0), centred on the
  last encoder value and divided by max(std(ddof=1), min_scale) of the encoder window.
- Known reals are the calendar features of each step's UTC start time; static reals
  (encoder length, target centres and scales) are scaled with the model's scalers.

A :class:`WindowPlan` turns the model's column lists into small integer/float arrays, so one
generic kernel serves any column order the model was exported with.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fleetcast.contract.features import ModelSpec

__all__ = [
    "CAT_STATE",
    "CAT_STATIC",
    "REAL_CENTER",
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
    }
    for name in spec.x_reals:
        sc = spec.real_scalers[name]
        if sc.source not in source_kind:
            raise refuse(f"The model has a real input {name!r} of source {sc.source!r}.")
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


def _lengths_impl(slot_step, last_step, n, enc):
    """Encoder length per server (n,) int64: valid closed steps in its window (0 = none)."""
    w = slot_step.shape[1]
    out = np.zeros(n, dtype=np.int64)
    for s in range(n):
        last = last_step[s]
        if last < 1:
            continue
        end = last - 1
        lo = end - enc + 1
        first = -1
        for st in range(max(lo, 0), end + 1):
            if slot_step[s, st % w] == st:
                first = st
                break
        if first < 0:
            continue
        if first == lo:
            out[s] = enc
            continue
        # Carry from before the window (forward fill) if the ring still holds a step there.
        carry = False
        for st in range(lo - 1, last - w, -1):
            if st < 0:
                break
            if slot_step[s, st % w] == st:
                carry = True
                break
        out[s] = enc if carry else end - first + 1
    return out


def _build_impl(
    idx,
    lengths,
    values,
    states,
    slot_step,
    last_step,
    static_codes,
    step_seconds,
    real_kind,
    real_arg,
    real_mean,
    real_div,
    cat_kind,
    cat_arg,
    state_codes,
    decoder_state_code,
    transform,
    min_scale,
    pad_cat,
    out_offset,
    enc_cat,
    enc_cont,
    enc_len,
    dec_cat,
    dec_cont,
    tscale,
):
    """Fill rows ``out_offset + b`` of the six input tensors for servers ``idx`` (B,)."""
    w = values.shape[1]
    n_metrics = values.shape[2]
    e_max = enc_cont.shape[1]
    d_len = dec_cont.shape[1]
    n_real = real_kind.shape[0]
    n_cat = cat_kind.shape[0]
    n_t = transform.shape[0]
    raw = np.zeros((e_max, n_metrics), dtype=np.float64)
    st_codes = np.zeros(e_max, dtype=np.int64)
    y = np.zeros((e_max, n_t), dtype=np.float64)
    centre = np.zeros(n_t, dtype=np.float64)
    scale = np.zeros(n_t, dtype=np.float64)
    feats = np.zeros(4, dtype=np.float64)
    for b in range(idx.shape[0]):
        s = idx[b]
        n = lengths[b]
        row = out_offset + b
        end = last_step[s] - 1
        start = end - n + 1
        # Carry value for leading missing steps (forward fill from before the window).
        cur_state = -1
        for j in range(n_metrics):
            raw[0, j] = 0.0
        found = False
        for st in range(start - 1, last_step[s] - w, -1):
            if st < 0:
                break
            k = st % w
            if slot_step[s, k] == st:
                for j in range(n_metrics):
                    raw[0, j] = values[s, k, j]
                cur_state = states[s, k]
                found = True
                break
        prev = 0
        for t in range(n):
            st = start + t
            k = st % w
            if slot_step[s, k] == st:
                for j in range(n_metrics):
                    raw[t, j] = values[s, k, j]
                cur_state = states[s, k]
                found = True
            elif t > 0:
                for j in range(n_metrics):
                    raw[t, j] = raw[prev, j]
            elif not found:
                for j in range(n_metrics):
                    raw[t, j] = 0.0
            st_codes[t] = state_codes[cur_state + 1]
            prev = t
        # Target scaling: centre = last transformed value, scale = max(std ddof=1, floor).
        for j in range(n_t):
            acc = 0.0
            for t in range(n):
                v = raw[t, j]
                if transform[j] == 1:
                    v = np.log1p(max(v, 0.0))
                y[t, j] = v
                acc += v
            mean = acc / n
            ss = 0.0
            for t in range(n):
                dv = y[t, j] - mean
                ss += dv * dv
            std = np.sqrt(ss / (n - 1)) if n > 1 else 0.0
            centre[j] = y[n - 1, j]
            scale[j] = max(std, min_scale[j])
            tscale[row, j, 0] = np.float32(centre[j])
            tscale[row, j, 1] = np.float32(scale[j])
        enc_len[row] = n
        # Encoder rows.
        for t in range(e_max):
            if t >= n:
                for c in range(n_real):
                    enc_cont[row, t, c] = 0.0
                for c in range(n_cat):
                    enc_cat[row, t, c] = pad_cat
                continue
            ts = (start + t) * step_seconds
            sod = ts % 86400
            ang_h = 2.0 * np.pi * (sod / 3600.0) / 24.0
            ang_d = 2.0 * np.pi * (((ts // 86400) + 3) % 7 + sod / 86400.0) / 7.0
            feats[0] = np.float32(np.sin(ang_h))
            feats[1] = np.float32(np.cos(ang_h))
            feats[2] = np.float32(np.sin(ang_d))
            feats[3] = np.float32(np.cos(ang_d))
            for c in range(n_real):
                kind = real_kind[c]
                a = real_arg[c]
                if kind == 0:
                    v = (y[t, a] - centre[a]) / scale[a]
                elif kind == 1:
                    v = (feats[a] - real_mean[c]) / real_div[c]
                elif kind == 2:
                    v = (n - real_mean[c]) / real_div[c]
                elif kind == 3:
                    v = (centre[a] - real_mean[c]) / real_div[c]
                elif kind == 5:
                    v = (y[t, a] - real_mean[c]) / real_div[c]
                else:
                    v = (scale[a] - real_mean[c]) / real_div[c]
                enc_cont[row, t, c] = v
            for c in range(n_cat):
                if cat_kind[c] == 0:
                    enc_cat[row, t, c] = static_codes[s, cat_arg[c]]
                else:
                    enc_cat[row, t, c] = st_codes[t]
        # Decoder rows: known reals and statics; unknown reals 0; future state = fixed code.
        for t in range(d_len):
            ts = (end + 1 + t) * step_seconds
            sod = ts % 86400
            ang_h = 2.0 * np.pi * (sod / 3600.0) / 24.0
            ang_d = 2.0 * np.pi * (((ts // 86400) + 3) % 7 + sod / 86400.0) / 7.0
            feats[0] = np.float32(np.sin(ang_h))
            feats[1] = np.float32(np.cos(ang_h))
            feats[2] = np.float32(np.sin(ang_d))
            feats[3] = np.float32(np.cos(ang_d))
            for c in range(n_real):
                kind = real_kind[c]
                a = real_arg[c]
                if kind == 0 or kind == 5:
                    v = 0.0
                elif kind == 1:
                    v = (feats[a] - real_mean[c]) / real_div[c]
                elif kind == 2:
                    v = (n - real_mean[c]) / real_div[c]
                elif kind == 3:
                    v = (centre[a] - real_mean[c]) / real_div[c]
                else:
                    v = (scale[a] - real_mean[c]) / real_div[c]
                dec_cont[row, t, c] = v
            for c in range(n_cat):
                if cat_kind[c] == 0:
                    dec_cat[row, t, c] = static_codes[s, cat_arg[c]]
                else:
                    dec_cat[row, t, c] = decoder_state_code


@cache
def _compiled() -> dict[str, Any]:
    """Compile the kernels on first use (Numba's on-disk cache makes later processes fast)."""
    from fleetcast.appliance.buffers import jit_kernel

    return {"lengths": jit_kernel(_lengths_impl), "build": jit_kernel(_build_impl)}


def window_lengths(
    slot_step: np.ndarray, last_step: np.ndarray, n: int, encoder_length: int
) -> np.ndarray:
    """Encoder length of every registered server (n,) int64; ready = >= min_encoder_length."""
    return _compiled()["lengths"](slot_step, last_step, np.int64(n), np.int64(encoder_length))


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
    _compiled()["build"](
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
        np.int64(out_offset),
        out.encoder_cat,
        out.encoder_cont,
        out.encoder_lengths,
        out.decoder_cat,
        out.decoder_cont,
        out.target_scale,
    )
