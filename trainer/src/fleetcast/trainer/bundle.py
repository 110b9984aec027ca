"""The model bundle: ``models/tft_model_YYYYMMDD_HHMMSS/``, pickle-free (safetensors + JSON).

Files (training fails if any is missing):

- ``model.safetensors`` — the TFT's state dict (mode by the umask, as every file);
- ``config.json`` — the architecture (TFT hyper-parameters), the loss (quantiles, target
  weights) and every dataset parameter needed to rebuild the model's inputs without the
  training data: lengths, feature order (``x_reals``, ``x_categoricals``), categorical
  classes in code order (code 0 = ``"nan"`` = unknown), the real scalers, the
  window-relative target-scaling rule (the "fallback" for unknown servers is this rule: no
  per-server scale exists), quantiles, step, horizons, weights' SHA-256;
- ``training_info.json`` — contract version, data hash, sizes, losses per epoch, timings,
  hardware, quality rules, accuracy against baselines;
- ``server_mapping.json`` — server name ↔ SHA-256 ID (``fleetcast.contract.encoder``).

``models/latest`` is a relative symlink to the newest bundle. :func:`load_bundle` rebuilds a
model whose outputs equal the trained model's bit for bit, with no pickle, no checkpoint
file and no training data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.encoder import MAPPING_FILE, ServerEncoder
from fleetcast.contract.schema import (
    CONTRACT_VERSION,
    HORIZONS,
    STEP_SECONDS,
    VALID_PROFILES,
    VALID_STATES,
)
from fleetcast.trainer.data_io import follow_umask
from fleetcast.trainer.dataset import (
    CATEGORICAL_NAN,
    DAY_AGO_SUFFIX,
    GROUP_ID,
    KNOWN_REALS,
    LEVEL_SUFFIX,
    STATIC_CATEGORICALS,
    UNKNOWN_CATEGORICALS,
    DatasetConfig,
    scaler_from_stats,
    scaler_stats,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet
    from sklearn.preprocessing import StandardScaler

__all__ = [
    "BUNDLE_FILES",
    "BUNDLE_FORMAT_VERSION",
    "CONFIG_FILE",
    "INFO_FILE",
    "LATEST_LINK",
    "WEIGHTS_FILE",
    "Bundle",
    "BundleError",
    "load_bundle",
    "resolve_bundle_dir",
    "save_bundle",
]

BUNDLE_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
INFO_FILE = "training_info.json"
BUNDLE_FILES: tuple[str, ...] = (WEIGHTS_FILE, CONFIG_FILE, INFO_FILE, MAPPING_FILE)
LATEST_LINK = "latest"
_SKIPPED_HPARAMS = ("loss", "output_transformer", "logging_metrics", "dataset_parameters")
"""Hyper-parameters that are objects; config.json stores them as data and load rebuilds them."""


class BundleError(RuntimeError):
    """A bundle that cannot be written or read (message: what, why, fix, where)."""


def _jsonable(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, key) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise BundleError(
        f"Model hyper-parameter {key!r} has type {type(value).__name__}, which config.json "
        "cannot hold. Why it matters: the bundle must rebuild the model from JSON alone (no "
        "pickle). Fix: store it as plain data in fleetcast.trainer.bundle. See "
        "docs/MODEL_FORMAT.md."
    )


def _config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of config.json's content without its own ``config_sha256`` (canonical JSON):
    a hand-edited config (another encoder length, step, quantiles or label order) is refused
    by :func:`load_bundle` instead of building a model the weights do not fit."""
    body = {k: v for k, v in config.items() if k != "config_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dataset_section(dataset: TimeSeriesDataSet, ds_config: DatasetConfig) -> dict[str, Any]:
    from fleetcast.trainer.train import categorical_classes

    params = dataset.get_parameters()
    scalers: dict[str, Any] = {}
    for name in dataset.reals:
        if name in ds_config.targets:
            scalers[name] = {"kind": "target_window"}
        elif name == "encoder_length":
            scalers[name] = {
                "kind": "encoder_length",
                "formula": "(encoder_length - 0.5 * max_encoder_length) / max_encoder_length * 2",
            }
        elif name in KNOWN_REALS:
            scalers[name] = {"kind": "identity"}
        elif (
            name.endswith(DAY_AGO_SUFFIX) and name.removesuffix(DAY_AGO_SUFFIX) in ds_config.targets
        ):
            scalers[name] = {
                "kind": "target_day_ago",
                "target": name.removesuffix(DAY_AGO_SUFFIX),
                "lag_steps": ds_config.day_steps,
                **scaler_stats(params["scalers"][name]),
            }
        elif name.endswith(LEVEL_SUFFIX) and name.removesuffix(LEVEL_SUFFIX) in ds_config.targets:
            scalers[name] = {
                "kind": "target_level",
                "target": name.removesuffix(LEVEL_SUFFIX),
                **scaler_stats(params["scalers"][name]),
            }
        else:
            scalers[name] = {"kind": "standard", **scaler_stats(params["scalers"][name])}
    return {
        **ds_config.to_dict(),
        "time_idx": "time_idx = timestamp_seconds // step_seconds",
        "group_ids": [GROUP_ID],
        "static_categoricals": list(STATIC_CATEGORICALS),
        "time_varying_known_reals": list(ds_config.known_reals),
        "time_varying_unknown_categoricals": list(UNKNOWN_CATEGORICALS),
        "time_varying_unknown_reals": list(ds_config.input_reals),
        "x_reals": list(dataset.reals),
        "x_categoricals": list(dataset.flat_categoricals),
        "categorical_classes": categorical_classes(dataset),
        "unknown_category": {"value": CATEGORICAL_NAN, "code": 0},
        "scalers": scalers,
        "target_normalizer": {
            "rule": "window_relative",
            "center": "last observed encoder value, after the transform",
            "scale": "std (ddof=1) of the encoder window after the transform, floored at min_scale",
            "transforms": dict(ds_config.transforms),
            "inverse": {"identity": "identity", "log1p": "expm1"},
            "min_scale": dict(ds_config.min_scale),
            "fallback": "the rule itself: no per-server scale exists, unknown servers need none",
        },
        "add_relative_time_idx": False,
        "add_encoder_length": True,
        "add_target_scales": ds_config.input_scaling == "window",
        "missing_steps": "forward_fill (pytorch-forecasting allow_missing_timesteps=True)",
    }


def _model_section(model: TemporalFusionTransformer) -> tuple[dict[str, Any], dict[str, Any]]:
    hparams = {k: _jsonable(v, k) for k, v in model.hparams.items() if k not in _SKIPPED_HPARAMS}
    loss = model.loss
    metrics = getattr(loss, "metrics", [loss])
    weights = getattr(loss, "weights", [1.0] * len(metrics))
    loss_section = {
        "type": "MultiLoss[HorizonQuantileLoss]",
        "quantiles": [float(q) for q in metrics[0].quantiles],
        "weights": [float(w) for w in weights],
        "horizon_power": float(getattr(metrics[0], "horizon_power", 0.0)),
    }
    return hparams, loss_section


def _new_bundle_dir(out_dir: Path, now: dt.datetime) -> Path:
    base = f"tft_model_{now:%Y%m%d_%H%M%S}"
    candidate = out_dir / base
    n = 1
    while candidate.exists() or (out_dir / f".{candidate.name}.partial").exists():
        candidate = out_dir / f"{base}_{n}"
        n += 1
    return candidate


def _point_latest(out_dir: Path, target: Path) -> None:
    link = out_dir / LATEST_LINK
    tmp = out_dir / f".{LATEST_LINK}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target.name, target_is_directory=True)
    os.replace(tmp, link)


def save_bundle(
    model: TemporalFusionTransformer,
    dataset: TimeSeriesDataSet,
    out_dir: str | Path,
    *,
    training_info: dict[str, Any] | None = None,
    server_encoder: ServerEncoder | None = None,
    dataset_config: DatasetConfig | None = None,
    now: dt.datetime | None = None,
    update_latest: bool = True,
) -> Path:
    """Write ``out_dir/tft_model_YYYYMMDD_HHMMSS/`` (UTC) and point ``out_dir/latest`` at it.

    ``dataset``: the training TimeSeriesDataSet (its encoders and scalers are stored).
    ``server_encoder``: defaults to the training servers' names. The bundle is written into
    a hidden ``.partial`` folder and renamed only once all four files exist, so a failed
    save never leaves a half bundle behind under the final name. Returns the bundle path.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = now or dt.datetime.now(dt.UTC)
    final = _new_bundle_dir(out_dir, now)
    partial = out_dir / f".{final.name}.partial"
    partial.mkdir()

    if dataset_config is None:
        dataset_config = DatasetConfig(
            max_encoder_length=dataset.max_encoder_length,
            min_encoder_length=dataset.min_encoder_length,
            max_prediction_length=dataset.max_prediction_length,
            targets=tuple(dataset.target_names),
            transforms={
                t: n.transform_name
                for t, n in zip(dataset.target_names, dataset.target_normalizers, strict=True)
            },
            min_scale={
                t: n.min_scale
                for t, n in zip(dataset.target_names, dataset.target_normalizers, strict=True)
            },
            input_scaling="fixed"
            if any(r.endswith(LEVEL_SUFFIX) for r in dataset.reals)
            else "window",
            day_ago=any(r.endswith(DAY_AGO_SUFFIX) for r in dataset.reals),
        )
    if server_encoder is None:
        names = dataset.get_parameters()["categorical_encoders"][f"__group_id__{GROUP_ID}"].classes_
        server_encoder = ServerEncoder(str(n) for n in names if str(n) != CATEGORICAL_NAN)

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(partial / WEIGHTS_FILE), metadata={"format": "pt", "fleetcast": "tft"})
    follow_umask(partial / WEIGHTS_FILE)  # safetensors writes 0600
    hparams, loss_section = _model_section(model)
    config = {
        "bundle_format_version": BUNDLE_FORMAT_VERSION,
        "bundle_id": final.name,
        "created_utc": now.isoformat(),
        "contract_version": CONTRACT_VERSION,
        "model_class": "pytorch_forecasting.TemporalFusionTransformer",
        "versions": _versions(),
        "hparams": hparams,
        "loss": loss_section,
        "quantiles": loss_section["quantiles"],
        "targets": list(dataset_config.targets),
        "step_seconds": STEP_SECONDS,
        "horizons": dict(HORIZONS),
        "profiles": list(VALID_PROFILES),
        "states": list(VALID_STATES),
        "dataset": _dataset_section(dataset, dataset_config),
        "weights_sha256": _sha256_file(partial / WEIGHTS_FILE),
    }
    config["config_sha256"] = _config_digest(config)
    (partial / CONFIG_FILE).write_text(json.dumps(config, indent=2, allow_nan=False) + "\n")
    info = dict(training_info or {})
    info.setdefault("contract_version", CONTRACT_VERSION)
    info["bundle_id"] = final.name
    (partial / INFO_FILE).write_text(json.dumps(_finite(info), indent=2, allow_nan=False) + "\n")
    server_encoder.save(partial / MAPPING_FILE)

    missing = [f for f in BUNDLE_FILES if not (partial / f).is_file()]
    if missing:
        raise BundleError(
            f"The bundle in {partial} lacks {missing}. Why it matters: a model without all four "
            "files cannot be served or decoded (codex training output rule). Fix: check disk "
            "space and permissions of the output folder and retrain. See docs/MODEL_FORMAT.md."
        )
    partial.rename(final)
    if update_latest:
        _point_latest(out_dir, final)
    return final


def _finite(value: Any) -> Any:
    """NaN/inf → None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("fleetcast-trainer", "pytorch-forecasting", "torch", "lightning"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


@dataclass
class Bundle:
    """A loaded bundle: the model (eval mode) and everything to rebuild its inputs."""

    path: Path
    """The bundle folder (symlinks resolved)."""
    model: TemporalFusionTransformer
    """The TFT, in eval mode, on CPU."""
    config: dict[str, Any]
    """config.json."""
    training_info: dict[str, Any]
    """training_info.json."""
    server_encoder: ServerEncoder
    """server_mapping.json."""
    dataset_config: DatasetConfig
    """Lengths, targets, transforms, scale floors."""
    scalers: dict[str, StandardScaler] = field(default_factory=dict)
    """The fitted ``<target>_center/_scale`` scalers."""
    categorical_classes: dict[str, list[str]] = field(default_factory=dict)
    """Classes of each categorical input in code order (code 0 = ``"nan"``)."""

    @property
    def quantiles(self) -> list[float]:
        """The predicted quantiles."""
        return list(self.config["quantiles"])

    def dataset_parameters(self) -> dict[str, Any]:
        """Fresh ``TimeSeriesDataSet`` keyword arguments equal to the training dataset's."""
        from fleetcast.trainer.dataset import dataset_parameters

        scalers = {
            k: scaler_from_stats(k, v.mean_[0], v.scale_[0]) for k, v in self.scalers.items()
        }
        return dataset_parameters(self.dataset_config, scalers, self.categorical_classes)

    def build_dataset(self, frame: pd.DataFrame, *, predict: bool = False) -> TimeSeriesDataSet:
        """The TimeSeriesDataSet of a prepared frame with this bundle's encoders and scalers."""
        from pytorch_forecasting import TimeSeriesDataSet

        params = self.dataset_parameters()
        if predict:
            params["predict_mode"] = True
        return TimeSeriesDataSet(frame, **params)

    def predict_windows(
        self, frame: pd.DataFrame, windows: Sequence[tuple[str, int]], *, batch_size: int = 256
    ) -> np.ndarray:
        """:func:`fleetcast.trainer.predict.predict_windows` with this bundle: (W, target, D, quantile)."""
        from fleetcast.trainer.predict import predict_windows

        return predict_windows(
            self.model,
            self.dataset_parameters(),
            frame,
            windows,
            config=self.dataset_config,
            batch_size=batch_size,
        )


def resolve_bundle_dir(path: str | Path) -> Path:
    """A bundle folder from a bundle path, a ``latest`` link, or a models folder holding ``latest``."""
    path = Path(path)
    if (path / CONFIG_FILE).exists() or (path / WEIGHTS_FILE).exists():
        return path.resolve()
    if (path / LATEST_LINK).exists():
        return (path / LATEST_LINK).resolve()
    raise BundleError(
        f"No model bundle at {path}: expected a folder with {', '.join(BUNDLE_FILES)} or a "
        f"models folder with a '{LATEST_LINK}' link. Why it matters: the model and its input "
        "rules live there. Fix: train one with `fleetcast train --out models/` or pass "
        "models/tft_model_YYYYMMDD_HHMMSS. See docs/MODEL_FORMAT.md."
    )


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle folder (or ``models/``, or ``models/latest``): JSON + safetensors only.

    Checks that all four files exist, that the contract major version matches and that the
    weights match their recorded SHA-256. The model is rebuilt from config.json and gets its
    weights with ``load_state_dict(strict=True)``.
    """
    folder = resolve_bundle_dir(path)
    for name in BUNDLE_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{name} not found in {folder}. Why it matters: a bundle needs all of "
                f"{', '.join(BUNDLE_FILES)} (server_mapping.json decodes forecasts to server "
                "names). Fix: retrain with `fleetcast train`, which writes all four. See "
                "docs/MODEL_FORMAT.md."
            )
    from fleetcast.trainer.bundle_checks import checked_files, describes_no_model

    config, info = checked_files(folder)
    try:
        return _build(folder, config, info)
    except (AttributeError, TypeError, IndexError, KeyError, ValueError, AssertionError) as exc:
        raise describes_no_model(folder, exc) from exc


def _build(folder: Path, config: dict[str, Any], info: dict[str, Any]) -> Bundle:
    """The bundle from its checked files (any error: config.json describes no model)."""
    import torch
    from pytorch_forecasting import TemporalFusionTransformer
    from pytorch_forecasting.metrics import MultiLoss
    from safetensors.torch import load_file

    from fleetcast.trainer.losses import HorizonQuantileLoss
    from fleetcast.trainer.normalizer import build_multi_normalizer

    ds_section = config["dataset"]
    ds_config = DatasetConfig.from_dict(ds_section)
    loss_cfg = config["loss"]
    hparams = dict(config["hparams"])
    hparams["embedding_sizes"] = {k: tuple(v) for k, v in hparams["embedding_sizes"].items()}
    model = TemporalFusionTransformer(
        **hparams,
        loss=MultiLoss(
            [
                HorizonQuantileLoss(
                    list(loss_cfg["quantiles"]),
                    horizon_power=float(loss_cfg.get("horizon_power", 0.0)),
                )
                for _ in ds_config.targets
            ],
            weights=list(loss_cfg["weights"]),
        ),
        output_transformer=build_multi_normalizer(
            ds_config.targets, ds_config.transforms, ds_config.min_scale
        ),
        logging_metrics=torch.nn.ModuleList([]),
    )
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    model.eval()
    scalers = {
        name: scaler_from_stats(name, float(s["mean"]), float(s["scale"]))
        for name, s in ds_section["scalers"].items()
        if s.get("kind") in ("standard", "target_level", "target_day_ago")
    }
    return Bundle(
        path=folder,
        model=model,
        config=config,
        training_info=info,
        server_encoder=ServerEncoder.load(folder / MAPPING_FILE),
        dataset_config=ds_config,
        scalers=scalers,
        categorical_classes={k: list(v) for k, v in ds_section["categorical_classes"].items()},
    )
