"""The ONNX metadata layout and its parser: what an exported model says about its inputs.

An exported ``model.onnx`` carries everything needed to build its inputs in its
``metadata_props`` (JSON strings, keys in :data:`METADATA_KEYS`). :class:`ModelSpec` parses
them — from ``onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map`` on the
appliance, which needs neither torch nor the ``onnx`` package — and writes them
(:meth:`ModelSpec.to_metadata`, the exporter). The preprocessing that uses the spec is in
:mod:`fleetcast.contract.features`, which re-exports every name here.

Numpy only: no torch, no pandas.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.errors import ContractError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "CALENDAR_FEATURES",
    "FORMAT_VERSION",
    "INPUT_NAMES",
    "METADATA_KEYS",
    "OUTPUT_NAME",
    "ModelSpec",
    "RealScaler",
]

FORMAT_VERSION = 1
"""Version of the metadata layout below; bumped on any incompatible change."""

INPUT_NAMES: tuple[str, ...] = (
    "encoder_cat",
    "encoder_cont",
    "encoder_lengths",
    "decoder_cat",
    "decoder_cont",
    "target_scale",
)
"""The ONNX graph's input names, in positional order (docs/MODEL_FORMAT.md#onnx-graph)."""

OUTPUT_NAME = "quantiles"
"""The graph's single output: float32 [batch, target, step, quantile] in real units."""

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
    ``target``, :func:`window_target_scale`), ``"target"`` (the transformed target value;
    for this source ``mean``/``scale`` are unused: the window's own centre and scale apply),
    ``"target_level"`` (the transformed value of ``target`` with this fixed ``mean`` and
    ``scale``: fixed input scaling, docs/MODEL_FORMAT.md#step-cache), or
    ``"target_day_ago"`` (the same, for the value ``lag`` steps before the row's step: a known
    input, docs/MODEL_FORMAT.md#features).
    """

    source: str
    """One of calendar, encoder_length, target_center, target_scale, target, target_level,
    target_day_ago."""
    mean: float = 0.0
    """Subtracted from the raw value."""
    scale: float = 1.0
    """Divides the centred value."""
    target: str | None = None
    """The target a target_* source refers to."""
    lag: int = 0
    """Steps back (target_day_ago only: one day, longer than the prediction length)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {"source": self.source, "mean": self.mean, "scale": self.scale}
        if self.target is not None:
            out["target"] = self.target
        if self.lag:
            out["lag"] = self.lag
        return out


_SOURCES = (
    "calendar",
    "encoder_length",
    "target_center",
    "target_scale",
    "target",
    "target_level",
    "target_day_ago",
)


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

    @property
    def max_lag(self) -> int:
        """The longest look-back of a ``target_day_ago`` input in steps (0 without one)."""
        return max((s.lag for s in self.real_scalers.values()), default=0)

    @property
    def history_steps(self) -> int:
        """Steps of history the inputs of one window read: the encoder plus the longest lag."""
        return self.encoder_length + self.max_lag

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
                        lag=int(s.get("lag", 0)),
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
            elif scaler.source == "target_day_ago" and scaler.lag < self.prediction_length:
                problems.append(
                    f"real {name!r} looks {scaler.lag} steps back, fewer than the "
                    f"{self.prediction_length} predicted steps (it would not be known)"
                )
        for target in self.targets:
            if self.target_transforms.get(target) not in ("identity", "log1p"):
                problems.append(
                    f"target {target!r} has transform {self.target_transforms.get(target)!r}"
                )
            if target not in self.target_min_scale:
                problems.append(f"target {target!r} has no min_scale")
        for name, steps in self.horizons.items():
            if not 1 <= steps <= self.prediction_length:
                problems.append(
                    f"horizon {name!r} is {steps} steps, not in 1..{self.prediction_length}"
                )
        q = list(self.quantiles)
        ascending = all(a < b for a, b in itertools.pairwise(q))
        if len(q) < 2 or not ascending or not all(0.0 < x < 1.0 for x in q):
            problems.append(f"quantiles {q} are not two or more ascending levels in (0, 1)")
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
