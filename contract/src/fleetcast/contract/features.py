"""The model's inputs from raw windows, in numpy alone: the reference preprocessing.

An exported ``model.onnx`` carries everything needed to build its inputs in its
``metadata_props`` (JSON strings). :class:`ModelSpec` (:mod:`fleetcast.contract.model_spec`,
re-exported here with the metadata keys) parses them, and :func:`build_inputs` turns raw
per-server windows into exactly the six tensors of docs/MODEL_FORMAT.md#onnx-graph, equal to
what pytorch-forecasting's dataloader produced in training (the exporter's tests prove it).
The appliance's Numba kernels are tested against :func:`build_inputs`.

Numpy only: no torch, no pandas. Shapes: ``B`` windows, ``E`` encoder width
(``spec.encoder_length``), ``D`` prediction steps, ``T`` targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract.encoder import server_id as hash_server_id
from fleetcast.contract.errors import ContractError
from fleetcast.contract.model_spec import (
    CALENDAR_FEATURES,
    FORMAT_VERSION,
    METADATA_KEYS,
    ModelSpec,
    RealScaler,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CALENDAR_FEATURES",
    "FORMAT_VERSION",
    "METADATA_KEYS",
    "ModelInputs",
    "ModelSpec",
    "RealScaler",
    "build_inputs",
    "calendar_features",
    "day_ago_rows",
    "encode_states",
    "window_target_scale",
]


@dataclass(frozen=True)
class ModelInputs:
    """The six input tensors of the ONNX graph (docs/MODEL_FORMAT.md#onnx-graph)."""

    encoder_cat: np.ndarray
    """int64 [B, E, n_cat]."""
    encoder_cont: np.ndarray
    """float32 [B, E, n_real]."""
    encoder_lengths: np.ndarray
    """int64 [B]."""
    decoder_cat: np.ndarray
    """int64 [B, D, n_cat]."""
    decoder_cont: np.ndarray
    """float32 [B, D, n_real]."""
    target_scale: np.ndarray
    """float32 [B, T, 2]: (centre, scale) in transformed units."""

    def as_feed(self) -> dict[str, np.ndarray]:
        """Input name → array, for ``InferenceSession.run(None, feed)``."""
        return {
            "encoder_cat": self.encoder_cat,
            "encoder_cont": self.encoder_cont,
            "encoder_lengths": self.encoder_lengths,
            "decoder_cat": self.decoder_cat,
            "decoder_cont": self.decoder_cont,
            "target_scale": self.target_scale,
        }


def calendar_features(time_idx: np.ndarray, step_seconds: int) -> np.ndarray:
    """Cyclical calendar features of steps (UTC), columns in :data:`CALENDAR_FEATURES` order.

    ``time_idx``: int array of any shape (steps since the epoch; the step's timestamp is
    ``time_idx * step_seconds``). Returns float32 ``time_idx.shape + (4,)``:
    hour = seconds of day / 3600, dow = Monday 0 … Sunday 6 plus the fraction of the day,
    ``hour_sin = sin(2π hour / 24)``, ``hour_cos``, ``dow_sin = sin(2π dow / 7)``, ``dow_cos``
    (computed in float64, rounded once to float32).
    """
    seconds = np.asarray(time_idx, dtype=np.int64) * int(step_seconds)
    sec_of_day = np.mod(seconds, 86400)
    hour = sec_of_day / 3600.0
    dow = np.mod(np.floor_divide(seconds, 86400) + 3, 7) + sec_of_day / 86400.0  # 1970-01-01: Thu
    out = np.empty((*seconds.shape, 4), dtype=np.float32)
    out[..., 0] = np.sin(2 * math.pi * hour / 24.0)
    out[..., 1] = np.cos(2 * math.pi * hour / 24.0)
    out[..., 2] = np.sin(2 * math.pi * dow / 7.0)
    out[..., 3] = np.cos(2 * math.pi * dow / 7.0)
    return out


def _forward(transform: str, values: np.ndarray) -> np.ndarray:
    if transform == "log1p":
        return np.log1p(np.clip(values, 0.0, None))
    return values


def window_target_scale(
    spec: ModelSpec, values: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each window's target transform and (centre, scale) by the model's scaling rule.

    ``values``: [B, E, T] raw target values (real units), left-aligned; rows at or past
    ``lengths[b]`` are ignored. ``lengths``: int [B] in ``1..E``.
    Returns ``transformed`` float64 [B, E, T] (padding rows 0) and ``target_scale`` float64
    [B, T, 2]: centre = transformed value at row ``lengths-1``, scale = max(std with
    ddof=1 of the valid transformed rows (0 for one row), ``min_scale``).
    """
    values = np.asarray(values, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    b, e, _ = values.shape
    valid = np.arange(e)[None, :] < lengths[:, None]  # [B, E]
    transformed = np.zeros_like(values)
    for j, target in enumerate(spec.targets):
        transformed[..., j] = np.where(
            valid, _forward(spec.target_transforms[target], values[..., j]), 0.0
        )
    n = lengths.astype(np.float64)[:, None]  # [B, 1]
    center = transformed[np.arange(b), lengths - 1]  # [B, T]
    mean = transformed.sum(axis=1) / n
    sq = np.where(valid[..., None], (transformed - mean[:, None, :]) ** 2, 0.0).sum(axis=1)
    std = np.sqrt(sq / np.maximum(n - 1.0, 1.0))
    std = np.where(n > 1, std, 0.0)
    floors = np.array([spec.target_min_scale[name] for name in spec.targets])
    scale = np.maximum(std, floors[None, :])
    return transformed, np.stack([center, scale], axis=-1)


def day_ago_rows(
    spec: ModelSpec,
    steps: np.ndarray,
    values: np.ndarray,
    length: int,
    last_time_idx: int,
) -> np.ndarray:
    """One window's ``day_ago`` argument of :func:`build_inputs`, from its server's history.

    ``steps`` int [N] ascending (the server's observed steps), ``values`` [N, T] raw target
    values in ``spec.targets`` order. Returns float64 [E + D, T]: row ``i < length`` is the
    value ``spec.max_lag`` steps before encoder row ``i``'s source step (its own step, or for a
    row forward-filled over a gap the observed step it repeats: pytorch-forecasting repeats a
    filled row whole, day-ago columns included), rows ``length..E-1`` are 0 (padding), row
    ``E + j`` the value a lag before decoder step ``j``. The value at a step is the last
    observed one at or before it (forward fill over gaps); before the server's first step it
    is the first observed value. The trainer's ``day_ago_at`` is the same rule.
    """
    e, d, lag = spec.encoder_length, spec.prediction_length, spec.max_lag
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    start = int(last_time_idx) - int(length) + 1
    own = start + np.arange(length)
    source = steps[np.maximum(np.searchsorted(steps, own, side="right") - 1, 0)]
    source = np.where(source <= own, source, own)  # before the first step: the row's own
    wanted = np.concatenate([source, int(last_time_idx) + 1 + np.arange(d)]) - lag
    found = np.maximum(np.searchsorted(steps, wanted, side="right") - 1, 0)
    out = np.zeros((e + d, values.shape[1]), dtype=np.float64)
    out[:length] = values[found[:length]]
    out[e:] = values[found[length:]]
    return out


def encode_states(spec: ModelSpec, names: np.ndarray) -> np.ndarray:
    """State names (None/null = unknown) → contract state indices into ``spec.states`` (-1 unknown).

    ``names``: object or str array of any shape; returns int64 of the same shape.
    An unrecognised name raises ContractError (the validator should have rejected it).
    """
    lookup = {s: i for i, s in enumerate(spec.states)}
    flat = np.asarray(names, dtype=object).reshape(-1)
    out = np.empty(flat.shape, dtype=np.int64)
    for i, name in enumerate(flat):
        if name is None or (isinstance(name, float) and math.isnan(name)):
            out[i] = -1
        elif name in lookup:
            out[i] = lookup[name]
        else:
            raise ContractError(
                f"Unknown state {name!r}: expected one of {list(spec.states)} or null.",
                "states are model inputs; an invented state has no embedding.",
                "Send one of the contract states, or null when the state is unknown.",
                "docs/DATA_CONTRACT.md#states",
            )
    return out.reshape(np.shape(names))


def build_inputs(
    spec: ModelSpec,
    values: np.ndarray,
    lengths: np.ndarray,
    states: np.ndarray,
    profiles: Sequence[str],
    server_names: Sequence[str],
    last_time_idx: np.ndarray,
    day_ago: np.ndarray | None = None,
    source_steps: np.ndarray | None = None,
) -> ModelInputs:
    """The graph's six input tensors from raw windows — the reference for the appliance.

    Parameters
    ----------
    values:
        float [B, E, T] raw metric values in real units, targets in ``spec.targets`` order,
        left-aligned: row 0 is each window's oldest step, rows ``lengths[b]..E-1`` are padding
        (ignored). Gaps must already be filled (the trainer forward-fills them).
    lengths:
        int [B], valid steps per window, ``spec.min_encoder_length..E``.
    states:
        int [B, E] contract state indices into ``spec.states``, -1 for unknown (see
        :func:`encode_states`); padding rows ignored.
    profiles, server_names:
        B strings each. An unseen profile or server gets the unknown code.
    last_time_idx:
        int [B], ``timestamp // step_seconds`` of each window's last valid row. Row ``i`` is
        step ``last - lengths + 1 + i``; decoder step ``j`` (0-based) is ``last + 1 + j``.
    day_ago:
        float [B, E + D, T] raw target values ``spec.max_lag`` steps before each encoder row
        (rows ``0..E-1``, padding ignored) and each decoder step (rows ``E..E+D-1``); see
        :func:`day_ago_rows`. Required when the model has ``target_day_ago`` inputs.
    source_steps:
        int [B, E], the step each encoder row's values were taken from: its own step, or for a
        row forward-filled over a gap the observed step before it (padding ignored). A filled
        row's calendar features are that step's, because pytorch-forecasting fills a missing
        step by repeating the previous row whole. None: every row is its own step (no gaps).

    Returns
    -------
    ModelInputs with ``encoder_*`` [B, E, ·] (padding rows all 0, as pytorch-forecasting pads),
    ``decoder_*`` [B, D, ·] (static and known columns filled; unknown reals 0, unknown
    categoricals the unknown code — the model ignores both) and ``target_scale`` [B, T, 2].
    """
    values = np.asarray(values)
    lengths = np.asarray(lengths, dtype=np.int64)
    states = np.asarray(states, dtype=np.int64)
    last = np.asarray(last_time_idx, dtype=np.int64)
    e, d, t = spec.encoder_length, spec.prediction_length, spec.n_targets
    b = values.shape[0]
    if values.shape != (b, e, t):
        raise ValueError(f"Expected values of shape (B, {e}, {t}), but got {values.shape}.")
    for name, arr in (("lengths", lengths), ("last_time_idx", last)):
        if arr.shape != (b,):
            raise ValueError(f"Expected {name} of shape ({b},), but got {arr.shape}.")
    if states.shape != (b, e):
        raise ValueError(f"Expected states of shape ({b}, {e}), but got {states.shape}.")
    if len(profiles) != b or len(server_names) != b:
        raise ValueError(
            f"Expected {b} profiles and server names, got {len(profiles)} and {len(server_names)}."
        )
    if b and (lengths.min() < 1 or lengths.max() > e):
        raise ValueError(f"Expected lengths in 1..{e}, but got {lengths.min()}..{lengths.max()}.")

    if spec.max_lag and (day_ago is None or np.shape(day_ago) != (b, e + d, t)):
        raise ValueError(
            f"The model has day-ago inputs: expected day_ago of shape ({b}, {e + d}, {t}), "
            f"but got {None if day_ago is None else np.shape(day_ago)} (see day_ago_rows)."
        )
    valid = np.arange(e)[None, :] < lengths[:, None]  # [B, E]
    transformed, scale = window_target_scale(spec, values, lengths)
    enc_steps = (last - lengths + 1)[:, None] + np.arange(e)[None, :]  # [B, E]
    if source_steps is not None:
        if np.shape(source_steps) != (b, e):
            raise ValueError(
                f"Expected source_steps of shape ({b}, {e}), but got {np.shape(source_steps)}."
            )
        enc_steps = np.where(valid, np.asarray(source_steps, dtype=np.int64), enc_steps)
    dec_steps = last[:, None] + 1 + np.arange(d)[None, :]  # [B, D]
    enc_cal = calendar_features(enc_steps, spec.step_seconds)
    dec_cal = calendar_features(dec_steps, spec.step_seconds)

    encoder_cat = np.zeros((b, e, len(spec.x_categoricals)), dtype=np.int64)
    decoder_cat = np.zeros((b, d, len(spec.x_categoricals)), dtype=np.int64)
    for col, name in enumerate(spec.x_categoricals):
        if name == "state":
            codes = spec.state_code_table()[states]  # [B, E]
            encoder_cat[..., col] = codes
            decoder_cat[..., col] = spec.unknown_codes[name]
        elif name == "server_id":
            ids = [hash_server_id(n) for n in server_names]
            code = spec.encode_categorical(name, ids)
            encoder_cat[..., col] = code[:, None]
            decoder_cat[..., col] = code[:, None]
        elif name == "profile":
            code = spec.encode_categorical(name, list(profiles))
            encoder_cat[..., col] = code[:, None]
            decoder_cat[..., col] = code[:, None]
        else:
            raise ContractError(
                f"The model has a categorical input {name!r} this fleetcast cannot compute.",
                "an input the appliance cannot fill would be garbage to the model.",
                "Use a model trained with the features of docs/MODEL_FORMAT.md#features.",
                "docs/MODEL_FORMAT.md#features",
            )

    encoder_cont = np.zeros((b, e, len(spec.x_reals)), dtype=np.float64)
    decoder_cont = np.zeros((b, d, len(spec.x_reals)), dtype=np.float64)
    tindex = {name: j for j, name in enumerate(spec.targets)}
    for col, name in enumerate(spec.x_reals):
        s = spec.real_scalers[name]
        if s.source == "calendar":
            k = CALENDAR_FEATURES.index(name)
            encoder_cont[..., col] = (enc_cal[..., k] - s.mean) / s.scale
            decoder_cont[..., col] = (dec_cal[..., k] - s.mean) / s.scale
        elif s.source == "target":
            j = tindex[s.target]
            encoder_cont[..., col] = (transformed[..., j] - scale[:, None, j, 0]) / scale[
                :, None, j, 1
            ]
        elif s.source == "target_level":
            j = tindex[s.target]
            encoder_cont[..., col] = (transformed[..., j] - s.mean) / s.scale
        elif s.source == "target_day_ago":
            j = tindex[s.target]
            lagged = _forward(spec.target_transforms[s.target], np.asarray(day_ago)[..., j])
            encoder_cont[..., col] = (lagged[:, :e] - s.mean) / s.scale
            decoder_cont[..., col] = (lagged[:, e:] - s.mean) / s.scale
        else:
            if s.source == "encoder_length":
                raw = lengths.astype(np.float64)
            elif s.source == "target_center":
                raw = scale[:, tindex[s.target], 0]
            else:  # target_scale
                raw = scale[:, tindex[s.target], 1]
            value = (raw - s.mean) / s.scale  # [B]
            encoder_cont[..., col] = value[:, None]
            decoder_cont[..., col] = value[:, None]
    encoder_cont[~valid] = 0.0
    encoder_cat[~valid] = 0
    return ModelInputs(
        encoder_cat=encoder_cat,
        encoder_cont=encoder_cont.astype(np.float32),
        encoder_lengths=lengths.copy(),
        decoder_cat=decoder_cat,
        decoder_cont=decoder_cont.astype(np.float32),
        target_scale=scale.astype(np.float32),
    )
