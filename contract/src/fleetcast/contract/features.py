"""The model's inputs from raw windows, in numpy alone: the reference preprocessing.

An exported ``model.onnx`` carries everything needed to build its inputs in its
``metadata_props`` (JSON strings). :class:`ModelSpec` parses them — from
``onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map`` on the appliance,
which needs neither torch nor the ``onnx`` package — and :func:`build_inputs` turns raw
per-server windows into exactly the six tensors of docs/MODEL_FORMAT.md#onnx-graph, equal to
what pytorch-forecasting's dataloader produced in training (the exporter's tests prove it).
The appliance's Numba kernels are tested against :func:`build_inputs`.

Numpy only: no torch, no pandas. Shapes: ``B`` windows, ``E`` encoder width
(``spec.encoder_length``), ``D`` prediction steps, ``T`` targets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.encoder import server_id as hash_server_id
from fleetcast.contract.errors import ContractError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "CALENDAR_FEATURES",
    "FORMAT_VERSION",
    "METADATA_KEYS",
    "ModelInputs",
    "ModelSpec",
    "RealScaler",
    "build_inputs",
    "calendar_features",
    "encode_states",
    "window_target_scale",
]

FORMAT_VERSION = 1
"""Version of the metadata layout below; bumped on any incompatible change."""

CALENDAR_FEATURES: tuple[str, ...] = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")
"""The time-varying known reals :func:`calendar_features` computes, in this column order."""

METADATA_KEYS: dict[str, str] = {
    "format_version": "fleetcast.format_version",
    "contract_version": "fleetcast.contract_version",
    "model_version": "fleetcast.model_version",
    "bundle_id": "fleetcast.bundle_id",
    "weights_sha256": "fleetcast.weights_sha256",
    "step_seconds": "fleetcast.step_seconds",
    "encoder_length": "fleetcast.encoder_length",
    "min_encoder_length": "fleetcast.min_encoder_length",
    "prediction_length": "fleetcast.prediction_length",
    "horizons": "fleetcast.horizons",
    "targets": "fleetcast.targets",
    "target_transforms": "fleetcast.target_transforms",
    "target_scaling": "fleetcast.target_scaling",
    "quantiles": "fleetcast.quantiles",
    "profiles": "fleetcast.profiles",
    "states": "fleetcast.states",
    "x_categoricals": "fleetcast.x_categoricals",
    "x_reals": "fleetcast.x_reals",
    "feature_roles": "fleetcast.feature_roles",
    "categorical_encodings": "fleetcast.categorical_encodings",
    "real_scalers": "fleetcast.real_scalers",
    "server_mapping": "fleetcast.server_mapping",
    "provenance": "fleetcast.provenance",
}
"""ModelSpec field → ``metadata_props`` key. Every value is a JSON document."""

_DOC = "docs/MODEL_FORMAT.md#onnx-graph"
_FIX = "Re-export the model with this version of fleetcast (`fleetcast export --bundle DIR`)."


@dataclass(frozen=True)
class RealScaler:
    """How one real input column is computed: ``(raw - mean) / scale``.

    ``source`` says what ``raw`` is: ``"calendar"`` (:func:`calendar_features` of the
    step, by the column's name), ``"encoder_length"`` (the window's valid steps),
    ``"target_center"`` / ``"target_scale"`` (the window's target centre / scale of
    ``target``, :func:`window_target_scale`), or ``"target"`` (the transformed target value;
    for this source ``mean``/``scale`` are unused: the window's own centre and scale apply).
    """

    source: str
    """One of calendar, encoder_length, target_center, target_scale, target."""
    mean: float = 0.0
    """Subtracted from the raw value."""
    scale: float = 1.0
    """Divides the centred value."""
    target: str | None = None
    """The target a target_* source refers to."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {"source": self.source, "mean": self.mean, "scale": self.scale}
        if self.target is not None:
            out["target"] = self.target
        return out


_SOURCES = ("calendar", "encoder_length", "target_center", "target_scale", "target")


@dataclass(frozen=True)
class ModelSpec:
    """Everything an exported model needs to build its inputs, parsed from its metadata.

    Build with :meth:`from_metadata` (the appliance) or directly (the exporter), write with
    :meth:`to_metadata`. Lengths are in steps of ``step_seconds``.
    """

    contract_version: str
    """Data contract version the model was trained under."""
    model_version: str
    """Human-readable model version (the bundle's)."""
    bundle_id: str
    """Name of the bundle folder the model came from (``tft_model_YYYYMMDD_HHMMSS``)."""
    weights_sha256: str
    """SHA-256 (hex) of the bundle's ``model.safetensors`` file bytes (provenance)."""
    step_seconds: int
    """Seconds per step."""
    encoder_length: int
    """``E``: width of the encoder inputs (the longest window)."""
    min_encoder_length: int
    """Shortest window the model was trained on (cold start)."""
    prediction_length: int
    """``D``: decoder steps."""
    horizons: dict[str, int]
    """Reported horizons in steps, e.g. ``{"30min": 6, "1hr": 12, "8hr": 96}``."""
    targets: tuple[str, ...]
    """Targets in tensor order."""
    target_transforms: dict[str, str]
    """``identity`` or ``log1p`` (inverse ``expm1``) per target."""
    target_min_scale: dict[str, float]
    """Floor of each target's window scale, in transformed units."""
    quantiles: tuple[float, ...]
    """Output quantiles in tensor order."""
    profiles: tuple[str, ...]
    """Contract profiles."""
    states: tuple[str, ...]
    """Contract states; :func:`build_inputs` takes state indices into this tuple."""
    x_categoricals: tuple[str, ...]
    """Columns of ``encoder_cat``/``decoder_cat``."""
    x_reals: tuple[str, ...]
    """Columns of ``encoder_cont``/``decoder_cont``."""
    feature_roles: dict[str, tuple[str, ...]]
    """static_categoricals, static_reals, known_categoricals, known_reals,
    unknown_categoricals, unknown_reals."""
    categorical_classes: dict[str, dict[str, int]]
    """Per categorical: class → code."""
    unknown_codes: dict[str, int]
    """Per categorical: the code of a null or unseen class."""
    real_scalers: dict[str, RealScaler]
    """Per real column: how it is computed."""
    server_mapping: dict[str, str]
    """Training servers: name → SHA-256 ID."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Free-form facts about the export (time, versions, opset, parity); not used for inference."""

    @property
    def n_targets(self) -> int:
        """Number of targets ``T``."""
        return len(self.targets)

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` of the ONNX file: key → JSON string."""
        values: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "contract_version": self.contract_version,
            "model_version": self.model_version,
            "bundle_id": self.bundle_id,
            "weights_sha256": self.weights_sha256,
            "step_seconds": self.step_seconds,
            "encoder_length": self.encoder_length,
            "min_encoder_length": self.min_encoder_length,
            "prediction_length": self.prediction_length,
            "horizons": self.horizons,
            "targets": list(self.targets),
            "target_transforms": self.target_transforms,
            "target_scaling": {
                "rule": "window_last_value",
                "center": "transformed value of the window's last valid encoder step",
                "scale": "std (ddof=1) of the window's transformed valid encoder steps "
                "(0 for one step), floored at min_scale",
                "min_scale": self.target_min_scale,
                "unknown_server": "the same rule; no per-server fitted scale exists",
            },
            "quantiles": list(self.quantiles),
            "profiles": list(self.profiles),
            "states": list(self.states),
            "x_categoricals": list(self.x_categoricals),
            "x_reals": list(self.x_reals),
            "feature_roles": {k: list(v) for k, v in self.feature_roles.items()},
            "categorical_encodings": {
                name: {"classes": classes, "unknown_code": self.unknown_codes[name]}
                for name, classes in self.categorical_classes.items()
            },
            "real_scalers": {name: s.to_dict() for name, s in self.real_scalers.items()},
            "server_mapping": self.server_mapping,
            "provenance": self.provenance,
        }
        return {METADATA_KEYS[k]: json.dumps(v, sort_keys=True) for k, v in values.items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ModelSpec:
        """Parse ``metadata_props`` (key → JSON string), e.g. ORT's ``custom_metadata_map``.

        Raises :class:`~fleetcast.contract.errors.ContractError` when a key is missing or
        malformed, or the layout's ``format_version`` is not this module's.
        """
        raw: dict[str, Any] = {}
        for name, key in METADATA_KEYS.items():
            if key not in metadata:
                raise ContractError(
                    f"The model's metadata has no {key!r} entry.",
                    "the appliance rebuilds the model's inputs from the metadata alone.",
                    _FIX,
                    _DOC,
                )
            try:
                raw[name] = json.loads(metadata[key])
            except (TypeError, ValueError) as exc:
                raise ContractError(
                    f"The model's metadata entry {key!r} is not valid JSON ({exc}).",
                    "the appliance rebuilds the model's inputs from the metadata alone.",
                    _FIX,
                    _DOC,
                ) from None
        if raw["format_version"] != FORMAT_VERSION:
            raise ContractError(
                f"Expected model metadata format {FORMAT_VERSION}, but the file has "
                f"{raw['format_version']!r}.",
                "another layout would be read wrongly and give wrong forecasts.",
                _FIX,
                _DOC,
            )
        try:
            spec = cls(
                contract_version=str(raw["contract_version"]),
                model_version=str(raw["model_version"]),
                bundle_id=str(raw["bundle_id"]),
                weights_sha256=str(raw["weights_sha256"]),
                step_seconds=int(raw["step_seconds"]),
                encoder_length=int(raw["encoder_length"]),
                min_encoder_length=int(raw["min_encoder_length"]),
                prediction_length=int(raw["prediction_length"]),
                horizons={str(k): int(v) for k, v in raw["horizons"].items()},
                targets=tuple(raw["targets"]),
                target_transforms=dict(raw["target_transforms"]),
                target_min_scale={
                    k: float(v) for k, v in raw["target_scaling"]["min_scale"].items()
                },
                quantiles=tuple(float(q) for q in raw["quantiles"]),
                profiles=tuple(raw["profiles"]),
                states=tuple(raw["states"]),
                x_categoricals=tuple(raw["x_categoricals"]),
                x_reals=tuple(raw["x_reals"]),
                feature_roles={k: tuple(v) for k, v in raw["feature_roles"].items()},
                categorical_classes={
                    name: {str(c): int(code) for c, code in enc["classes"].items()}
                    for name, enc in raw["categorical_encodings"].items()
                },
                unknown_codes={
                    name: int(enc["unknown_code"])
                    for name, enc in raw["categorical_encodings"].items()
                },
                real_scalers={
                    name: RealScaler(
                        source=str(s["source"]),
                        mean=float(s["mean"]),
                        scale=float(s["scale"]),
                        target=s.get("target"),
                    )
                    for name, s in raw["real_scalers"].items()
                },
                server_mapping={str(k): str(v) for k, v in raw["server_mapping"].items()},
                provenance=dict(raw["provenance"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ContractError(
                f"The model's metadata is malformed ({type(exc).__name__}: {exc}).",
                "the appliance rebuilds the model's inputs from the metadata alone.",
                _FIX,
                _DOC,
            ) from None
        spec.validate()
        return spec

    def validate(self) -> None:
        """Check internal consistency; raises ContractError naming the first problem."""
        problems: list[str] = []
        for name in self.x_categoricals:
            if name not in self.categorical_classes:
                problems.append(f"categorical {name!r} has no encoding")
        for name in self.x_reals:
            scaler = self.real_scalers.get(name)
            if scaler is None:
                problems.append(f"real {name!r} has no scaler")
            elif scaler.source not in _SOURCES:
                problems.append(f"real {name!r} has unknown source {scaler.source!r}")
            elif scaler.source == "calendar" and name not in CALENDAR_FEATURES:
                problems.append(f"calendar real {name!r} is not one of {CALENDAR_FEATURES}")
            elif scaler.source.startswith("target") and scaler.target not in self.targets:
                problems.append(f"real {name!r} refers to unknown target {scaler.target!r}")
            elif scaler.scale == 0.0 or not math.isfinite(scaler.scale):
                problems.append(f"real {name!r} has scale {scaler.scale}")
        for target in self.targets:
            if self.target_transforms.get(target) not in ("identity", "log1p"):
                problems.append(
                    f"target {target!r} has transform {self.target_transforms.get(target)!r}"
                )
            if target not in self.target_min_scale:
                problems.append(f"target {target!r} has no min_scale")
        if not 1 <= self.min_encoder_length <= self.encoder_length:
            problems.append(
                f"min_encoder_length {self.min_encoder_length} not in 1..{self.encoder_length}"
            )
        if problems:
            raise ContractError(
                f"The model's metadata is inconsistent: {'; '.join(problems)}.",
                "inputs built from it would not be the inputs the model was trained on.",
                _FIX,
                _DOC,
            )

    def encode_categorical(self, name: str, values: Sequence[str | None]) -> np.ndarray:
        """Codes of class names for categorical ``name``; None or unseen → the unknown code.

        Returns int64 (len(values),).
        """
        classes = self.categorical_classes[name]
        unknown = self.unknown_codes[name]
        return np.array(
            [unknown if v is None else classes.get(v, unknown) for v in values], dtype=np.int64
        )

    def state_code_table(self) -> np.ndarray:
        """Model code of each contract state index; the last entry is for index -1 (unknown).

        int64 (len(states) + 1,): ``table[state_index]`` with ``state_index`` in
        ``-1..len(states)-1`` (numpy's negative indexing maps -1 to the last entry).
        """
        codes = self.encode_categorical("state", list(self.states))
        return np.append(codes, self.unknown_codes["state"]).astype(np.int64)


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

    valid = np.arange(e)[None, :] < lengths[:, None]  # [B, E]
    transformed, scale = window_target_scale(spec, values, lengths)
    enc_steps = (last - lengths + 1)[:, None] + np.arange(e)[None, :]  # [B, E]
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
