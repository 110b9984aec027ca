"""The ONNX file's ``metadata_props``: built from a trained model, read back from a file.

The layout (keys and JSON values) is defined once, in :mod:`fleetcast.contract.features`
(:data:`~fleetcast.contract.features.METADATA_KEYS`, :class:`~fleetcast.contract.features.ModelSpec`),
because the appliance parses it without this package. This module fills it from a trained
pytorch-forecasting model and its ``TimeSeriesDataSet``, where pytorch-forecasting keeps
the fitted encoders and scalers:

- categoricals: ``NaNLabelEncoder(add_nan=True)`` classes, code 0 (``"nan"``) = unknown;
- ``encoder_length``: pytorch-forecasting writes ``(L - E/2) / E * 2`` unscaled, i.e. a
  scaler with mean ``E/2`` and scale ``E/2`` applied to the length ``L``;
- ``<target>_center`` / ``<target>_scale``: the dataset's fitted StandardScalers;
- calendar reals: unscaled (mean 0, scale 1) unless the dataset has a scaler for them;
- targets in the encoder: normalised by each window's own (centre, scale).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetcast.contract.errors import ContractError
from fleetcast.contract.features import (
    CALENDAR_FEATURES,
    METADATA_KEYS,
    ModelSpec,
    RealScaler,
)
from fleetcast.contract.schema import (
    CONTRACT_VERSION,
    HORIZONS,
    STEP_SECONDS,
    VALID_PROFILES,
    VALID_STATES,
)

if TYPE_CHECKING:
    import onnx
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet

    from fleetcast.trainer.bundle import Bundle

__all__ = [
    "METADATA_KEYS",
    "SIDECAR_SUFFIX",
    "file_sha256",
    "read_metadata",
    "read_spec",
    "spec_from_bundle",
    "spec_from_model",
]

SIDECAR_SUFFIX = ".sha256"
"""``model.onnx.sha256`` beside ``model.onnx``: ``sha256sum`` format, the whole file's hash."""

_DOC = "docs/MODEL_FORMAT.md#features"


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unsupported(what: str) -> ContractError:
    return ContractError(
        what,
        "the appliance could not rebuild this model's inputs from the metadata.",
        "Train the model with `fleetcast train` (the features of docs/MODEL_FORMAT.md).",
        _DOC,
    )


def _real_scaler(
    dataset: TimeSeriesDataSet, name: str, targets: list[str], step_seconds: int = STEP_SECONDS
) -> RealScaler:
    """How real column ``name`` of ``dataset`` is computed (see the module docstring)."""
    if name in targets:
        return RealScaler(source="target", target=name)
    if name == "encoder_length":
        half = dataset.max_encoder_length / 2.0
        return RealScaler(source="encoder_length", mean=half, scale=half)
    for suffix, source in (
        ("_day_ago", "target_day_ago"),
        ("_level", "target_level"),
        ("_center", "target_center"),
        ("_scale", "target_scale"),
    ):
        target = name.removesuffix(suffix)
        if name.endswith(suffix) and target in targets:
            scaler = dataset.get_transformer(name)
            return RealScaler(
                source=source,
                mean=float(scaler.mean_[0]),
                scale=float(scaler.scale_[0]),
                target=target,
                lag=86400 // step_seconds if source == "target_day_ago" else 0,
            )
    if name in CALENDAR_FEATURES:
        scaler = dataset.get_transformer(name)
        if scaler is None:
            return RealScaler(source="calendar")
        if hasattr(scaler, "mean_") and hasattr(scaler, "scale_"):
            return RealScaler(
                source="calendar", mean=float(scaler.mean_[0]), scale=float(scaler.scale_[0])
            )
        raise _unsupported(
            f"The calendar real {name!r} uses a {type(scaler).__name__}, not a StandardScaler."
        )
    raise _unsupported(f"The model has a real input {name!r} that fleetcast cannot compute.")


def _roles(model: TemporalFusionTransformer) -> dict[str, tuple[str, ...]]:
    """Each input's role, from the model's hyper-parameters (they include the added reals)."""
    hp = model.hparams
    return {
        "static_categoricals": tuple(hp.static_categoricals),
        "static_reals": tuple(hp.static_reals),
        "known_categoricals": tuple(hp.time_varying_categoricals_decoder),
        "known_reals": tuple(hp.time_varying_reals_decoder),
        "unknown_categoricals": tuple(
            c
            for c in hp.time_varying_categoricals_encoder
            if c not in hp.time_varying_categoricals_decoder
        ),
        "unknown_reals": tuple(
            r for r in hp.time_varying_reals_encoder if r not in hp.time_varying_reals_decoder
        ),
    }


def spec_from_model(
    model: TemporalFusionTransformer,
    dataset: TimeSeriesDataSet,
    *,
    model_version: str,
    bundle_id: str,
    weights_sha256: str,
    server_mapping: dict[str, str],
    provenance: dict[str, Any] | None = None,
) -> ModelSpec:
    """The :class:`ModelSpec` of a trained model and the dataset it was trained on.

    Refuses (ContractError) a model whose inputs the appliance could not rebuild: an unknown
    real or categorical, a categorical without a NaN class, a target normaliser that is not
    the window-relative one.
    """
    targets = list(dataset.target_names)
    normalizers = list(
        getattr(dataset.target_normalizer, "normalizers", [dataset.target_normalizer])
    )
    transforms: dict[str, str] = {}
    min_scale: dict[str, float] = {}
    for target, normalizer in zip(targets, normalizers, strict=True):
        name = getattr(normalizer, "transform_name", None)
        if name is None or not hasattr(normalizer, "min_scale"):
            raise _unsupported(
                f"Target {target!r} uses a {type(normalizer).__name__}, not fleetcast's "
                "window-relative WindowNormalizer."
            )
        transforms[target] = str(name)
        min_scale[target] = float(normalizer.min_scale)

    x_cats = list(model.hparams.x_categoricals)
    x_reals = list(model.hparams.x_reals)
    if x_cats != list(dataset.flat_categoricals) or x_reals != list(dataset.reals):
        raise _unsupported(
            f"The model's inputs {x_cats} / {x_reals} differ from its dataset's "
            f"{list(dataset.flat_categoricals)} / {list(dataset.reals)}."
        )
    classes: dict[str, dict[str, int]] = {}
    unknown: dict[str, int] = {}
    fitted = dataset.get_parameters()["categorical_encoders"]  # the fitted encoders
    for name in x_cats:
        encoder = fitted[name]
        if not getattr(encoder, "add_nan", False):
            raise _unsupported(f"Categorical {name!r} has no NaN class (add_nan=False).")
        classes[name] = {str(k): int(v) for k, v in encoder.classes_.items()}
        unknown[name] = 0
    if not dataset.add_encoder_length and "encoder_length" in x_reals:
        raise _unsupported("encoder_length is an input but not added by the dataset.")
    quantiles = [float(q) for q in model.loss.metrics[0].quantiles]
    e = int(dataset.max_encoder_length)
    d = int(dataset.max_prediction_length)
    if dataset.min_prediction_length != d:
        raise _unsupported("Every window must predict all steps (min_prediction_length != max).")
    spec = ModelSpec(
        contract_version=CONTRACT_VERSION,
        model_version=model_version,
        bundle_id=bundle_id,
        weights_sha256=weights_sha256,
        step_seconds=STEP_SECONDS,
        encoder_length=e,
        min_encoder_length=int(dataset.min_encoder_length),
        prediction_length=d,
        horizons={k: v for k, v in HORIZONS.items() if v <= d},
        targets=tuple(targets),
        target_transforms=transforms,
        target_min_scale=min_scale,
        quantiles=tuple(quantiles),
        profiles=VALID_PROFILES,
        states=VALID_STATES,
        x_categoricals=tuple(x_cats),
        x_reals=tuple(x_reals),
        feature_roles=_roles(model),
        categorical_classes=classes,
        unknown_codes=unknown,
        real_scalers={name: _real_scaler(dataset, name, targets) for name in x_reals},
        server_mapping=dict(server_mapping),
        provenance=dict(provenance or {}),
    )
    spec.validate()
    return spec


def spec_from_bundle(bundle: Bundle, *, provenance: dict[str, Any] | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of a loaded bundle, from its config.json (checked against the model).

    The same result as :func:`spec_from_model` on the training dataset (a test proves it).
    """
    config = bundle.config
    ds = config["dataset"]
    hp = bundle.model.hparams
    x_cats = list(ds["x_categoricals"])
    x_reals = list(ds["x_reals"])
    if x_cats != list(hp.x_categoricals) or x_reals != list(hp.x_reals):
        raise _unsupported(
            f"config.json lists inputs {x_cats} / {x_reals} but the model has "
            f"{list(hp.x_categoricals)} / {list(hp.x_reals)}."
        )
    targets = list(ds["targets"])
    e = int(ds["max_encoder_length"])
    scalers: dict[str, RealScaler] = {}
    for name in x_reals:
        entry = ds["scalers"][name]
        kind = entry.get("kind")
        if kind == "target_window" and name in targets:
            scalers[name] = RealScaler(source="target", target=name)
        elif kind in ("target_level", "target_day_ago") and entry.get("target") in targets:
            scalers[name] = RealScaler(
                source=kind,
                mean=float(entry["mean"]),
                scale=float(entry["scale"]),
                target=str(entry["target"]),
                lag=int(entry.get("lag_steps", 0)),
            )
        elif kind == "encoder_length":
            scalers[name] = RealScaler(source="encoder_length", mean=e / 2.0, scale=e / 2.0)
        elif kind == "identity" and name in CALENDAR_FEATURES:
            scalers[name] = RealScaler(source="calendar")
        elif kind == "standard" and name in CALENDAR_FEATURES:
            scalers[name] = RealScaler(
                source="calendar", mean=float(entry["mean"]), scale=float(entry["scale"])
            )
        elif kind == "standard" and (name.endswith(("_center", "_scale"))):
            target, _, which = name.rpartition("_")
            if target not in targets:
                raise _unsupported(f"Real {name!r} refers to no target.")
            scalers[name] = RealScaler(
                source=f"target_{which}",
                mean=float(entry["mean"]),
                scale=float(entry["scale"]),
                target=target,
            )
        else:
            raise _unsupported(f"Real {name!r} has a scaler {entry!r} fleetcast cannot compute.")
    unknown = ds.get("unknown_category", {"code": 0})
    classes = {
        name: {str(c): i for i, c in enumerate(values)}
        for name, values in ds["categorical_classes"].items()
        if name in x_cats
    }
    normalizer = ds["target_normalizer"]
    spec = ModelSpec(
        contract_version=str(config["contract_version"]),
        model_version=str(config.get("model_version", config["bundle_id"])),
        bundle_id=str(config["bundle_id"]),
        weights_sha256=str(config["weights_sha256"]),
        step_seconds=int(ds.get("step_seconds", config.get("step_seconds", STEP_SECONDS))),
        encoder_length=e,
        min_encoder_length=int(ds["min_encoder_length"]),
        prediction_length=int(ds["max_prediction_length"]),
        horizons={
            k: int(v)
            for k, v in config.get("horizons", HORIZONS).items()
            if int(v) <= int(ds["max_prediction_length"])
        },
        targets=tuple(targets),
        target_transforms={t: str(normalizer["transforms"][t]) for t in targets},
        target_min_scale={t: float(normalizer["min_scale"][t]) for t in targets},
        quantiles=tuple(float(q) for q in config["quantiles"]),
        profiles=tuple(config.get("profiles", VALID_PROFILES)),
        states=tuple(config.get("states", VALID_STATES)),
        x_categoricals=tuple(x_cats),
        x_reals=tuple(x_reals),
        feature_roles=_roles(bundle.model),
        categorical_classes=classes,
        unknown_codes={name: int(unknown.get("code", 0)) for name in classes},
        real_scalers=scalers,
        server_mapping=dict(bundle.server_encoder.to_dict()["servers"]),
        provenance=dict(provenance or {}),
    )
    spec.validate()
    return spec


def read_metadata(model: str | Path | onnx.ModelProto) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file or loaded model as a dict (key → JSON string).

    Uses the ``onnx`` package; the appliance uses ORT's ``custom_metadata_map`` instead.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def read_spec(model: str | Path | onnx.ModelProto) -> ModelSpec:
    """The parsed :class:`ModelSpec` of an ONNX file (see :func:`read_metadata`)."""
    return ModelSpec.from_metadata(read_metadata(model))
