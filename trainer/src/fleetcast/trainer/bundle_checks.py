"""What :func:`~fleetcast.trainer.bundle.load_bundle` checks before it builds a model.

A bundle's JSON files are read as objects of the shapes ``fleetcast train`` writes, its
format version is one this fleetcast reads, its contract major version is ours, and the
SHA-256 values recorded in ``config.json`` match the file itself and the weights. A file of
another shape (``config.json`` holding ``[]`` or ``null``, a ``training_info.json`` whose
``data`` is a list) was an ``AttributeError`` traceback in ``fleetcast export``; each is now
a :class:`~fleetcast.trainer.bundle.BundleError` naming the file (docs/MODEL_FORMAT.md).
A bundle written before ``config_sha256`` (whose hyperparameters nothing pins) still loads,
but only with the contract's step and targets.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fleetcast.contract.schema import CONTRACT_VERSION, METRIC_COLUMNS, STEP_SECONDS

if TYPE_CHECKING:
    from pathlib import Path

    from fleetcast.trainer.bundle import BundleError

__all__ = ["checked_files", "describes_no_model"]

_SEE = "docs/MODEL_FORMAT.md"


def _error(message: str) -> BundleError:
    from fleetcast.trainer.bundle import BundleError

    return BundleError(message)


def _json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a BundleError for text that is no JSON object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _error(
            f"{path.name} in {path.parent} is not JSON ({exc}). Why it matters: the bundle "
            "describes its model there. Fix: copy the bundle again from its source, or "
            f"retrain. See {_SEE}."
        ) from exc
    if not isinstance(value, dict):
        raise _error(
            f"{path.name} in {path.parent} holds a JSON {type(value).__name__}, not the object "
            "`fleetcast train` writes. Why it matters: the bundle describes its model there. "
            f"Fix: copy the bundle again from its source, or retrain. See {_SEE}."
        )
    return value


def checked_files(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``config.json`` and ``training_info.json`` of the bundle in ``folder``, checked
    (module docstring); raises BundleError."""
    from fleetcast.contract.encoder import MAPPING_FILE
    from fleetcast.trainer.bundle import (
        BUNDLE_FORMAT_VERSION,
        CONFIG_FILE,
        INFO_FILE,
        WEIGHTS_FILE,
        _config_digest,
        _sha256_file,
    )

    config = _json_object(folder / CONFIG_FILE)
    info = _json_object(folder / INFO_FILE)
    _json_object(folder / MAPPING_FILE)
    data = info.get("data")
    if data is not None and not (
        isinstance(data, dict) and isinstance(data.get("file", ""), str | None)
    ):
        raise _error(
            f"{INFO_FILE} in {folder}: its 'data' is {json.dumps(data)[:80]}, not an object "
            "naming the training file. Why it matters: export finds the training data for "
            "its parity check there. Fix: copy the bundle again from its source, or pass "
            f"--data to `fleetcast export`. See {_SEE}."
        )
    version = config.get("bundle_format_version", 1)
    if (
        not isinstance(version, int)
        or isinstance(version, bool)
        or not 1 <= version <= BUNDLE_FORMAT_VERSION
    ):
        raise _error(
            f"Bundle {folder.name} has bundle_format_version {version!r}; this fleetcast reads "
            f"1 to {BUNDLE_FORMAT_VERSION}. Why it matters: a newer format may mean other "
            "files or fields. Fix: upgrade fleetcast, or retrain with this one. See "
            f"{_SEE}."
        )
    major = str(config.get("contract_version", "0")).split(".")[0]
    if major != CONTRACT_VERSION.split(".")[0]:
        raise _error(
            f"Bundle {folder.name} was trained under data contract {config.get('contract_version')}, "
            f"this fleetcast speaks {CONTRACT_VERSION}. Why it matters: columns, states or "
            "profiles may differ. Fix: retrain on data of the current contract. See "
            "docs/DATA_CONTRACT.md#versioning."
        )
    if config.get("config_sha256") not in (None, _config_digest(config)):
        raise _error(
            f"{CONFIG_FILE} in {folder} does not match the SHA-256 recorded in it. Why it "
            "matters: it was edited after training, and a model built from edited "
            "hyperparameters, steps, quantiles or labels does not fit its weights (or "
            "exhausts memory building it). Fix: copy the bundle again from its source or "
            f"retrain with the options you want. See {_SEE}."
        )
    _check_contract_shape(folder, config)
    if config.get("weights_sha256") not in (None, _sha256_file(folder / WEIGHTS_FILE)):
        raise _error(
            f"{WEIGHTS_FILE} in {folder} does not match the SHA-256 recorded in config.json. "
            "Why it matters: the weights were changed or corrupted after training. Fix: "
            f"copy the bundle again or retrain. See {_SEE}."
        )
    return config, info


def _check_contract_shape(folder: Path, config: dict[str, Any]) -> None:
    """The step and the targets every bundle has (those a missing ``config_sha256`` leaves
    unpinned), in ``config.json`` and its dataset section: another step or the targets in
    another order would mislabel every output."""
    dataset = config.get("dataset")
    if not isinstance(dataset, dict):
        raise describes_no_model(folder, KeyError("dataset"))
    for section in (config, dataset):
        step = section.get("step_seconds", STEP_SECONDS)
        targets = section.get("targets", list(METRIC_COLUMNS))
        if step == STEP_SECONDS and targets == list(METRIC_COLUMNS):
            continue
        raise _error(
            f"config.json in {folder} describes a model at step_seconds {step!r} with targets "
            f"{targets!r}; the data contract's step is {STEP_SECONDS} s and its targets are "
            f"{list(METRIC_COLUMNS)}, in that order. Why it matters: the outputs would be "
            "labelled and timed wrongly. Fix: copy the bundle again from its source, or "
            f"retrain. See {_SEE}."
        )


def describes_no_model(folder: Path, exc: BaseException) -> BundleError:
    """The BundleError of a bundle whose files load but build no model."""
    return _error(
        f"The files of bundle {folder} do not describe a model this fleetcast can build "
        f"({type(exc).__name__}: {str(exc)[:200]}). Why it matters: the exporter and the "
        "appliance need the exact model that was trained. Fix: copy the bundle again from "
        f"its source, or retrain. See {_SEE}."
    )
