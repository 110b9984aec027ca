"""Can this model read this data? (codex: Pre-Inference Validation)

``validate_model_compatibility(model_metadata, table) -> (is_compatible, errors, unknown_servers)``.

``model_metadata`` is a plain mapping — the ONNX ``metadata_props`` or a bundle's
``config.json`` in JSON form. Values may be JSON text (ONNX metadata values are strings)
or already decoded; keys may carry the ONNX file's ``fleetcast.`` prefix
(``fleetcast.contract_version``; :data:`~fleetcast.contract.model_spec.METADATA_KEYS`).
Keys read:

- ``contract_version`` (str, required): a different major version than this code's
  CONTRACT_VERSION is an error; a different minor/patch is compatible.
- ``states`` (list of str, required): must be exactly the 8 contract states.
- ``profiles`` (list of str, required): must be exactly the 7 contract profiles.
- ``step_seconds`` (int, required): must equal STEP_SECONDS and the data's step.
- ``server_mapping`` ({name: id}, or the server_mapping.json object with a ``servers``
  key; optional): servers of the data missing from it are *reported* in
  ``unknown_servers`` (the model forecasts them through its unknown-server embedding),
  never an error. A mapping whose IDs disagree with the SHA-256 rule is an error.

The data may be None (metadata checks only), a pyarrow Table or a Parquet path; states
and profiles present in the data but unknown to the model are errors, and the data's
step (the most common gap between consecutive rows of one server, measured on the first
1M rows) must equal the model's.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from fleetcast.contract._batches import dictionary_codes, open_source, timestamp_values
from fleetcast.contract.encoder import server_id
from fleetcast.contract.errors import explain
from fleetcast.contract.schema import (
    CONTRACT_DOC,
    CONTRACT_VERSION,
    STEP_SECONDS,
    VALID_PROFILES,
    VALID_STATES,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import pyarrow as pa

__all__ = ["CompatibilityReport", "validate_model_compatibility"]

_STEP_SAMPLE_ROWS = 1_000_000
"""The data's step is measured on this many first rows (docs/DATA_CONTRACT.md#model-step)."""
_ONNX_PREFIX = "fleetcast."
"""The prefix of every key in an ONNX file's metadata_props (fleetcast.contract.model_spec)."""


class CompatibilityReport(NamedTuple):
    """Result of :func:`validate_model_compatibility`; unpacks as a 3-tuple."""

    is_compatible: bool
    """False when there is any error."""
    errors: list[str]
    """Codex messages (what, why, fix, See docs/DATA_CONTRACT.md#...)."""
    unknown_servers: list[str]
    """Sorted names of servers in the data that the model's server mapping does not hold."""


def _see(section: str) -> str:
    return f"{CONTRACT_DOC}#{section}"


def _decode(value: object) -> object:
    """ONNX metadata values are JSON strings; decode those, pass anything else through."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _plain_keys(model_metadata: Mapping[str, object]) -> dict[str, object]:
    """The metadata with the ONNX ``fleetcast.`` key prefix removed (a key without it wins)."""
    plain = {
        str(k).removeprefix(_ONNX_PREFIX): v
        for k, v in model_metadata.items()
        if str(k).startswith(_ONNX_PREFIX)
    }
    plain.update({k: v for k, v in model_metadata.items() if not str(k).startswith(_ONNX_PREFIX)})
    return plain


def validate_model_compatibility(
    model_metadata: Mapping[str, object],
    table_or_path: pa.Table | str | Path | None = None,
) -> CompatibilityReport:
    """Check a model's metadata against the contract and, if given, against a table.

    Raises DataFileError when the path cannot be read; everything else is reported.
    """
    errors: list[str] = []
    raw = _plain_keys(model_metadata)
    meta = {k: _decode(v) for k, v in raw.items()}
    version = meta.get("contract_version")
    if not isinstance(version, str) and isinstance(raw.get("contract_version"), str):
        version = raw["contract_version"]  # "1.0" read as JSON is a number
    if not isinstance(version, str) or not version:
        errors.append(
            explain(
                "The model metadata has no contract_version.",
                "without it nobody can tell which columns, states and profiles it was trained on.",
                "Re-export the model with this version of fleetcast (it records the version).",
                _see("model-contract-version"),
            )
        )
    elif version.split(".")[0] != CONTRACT_VERSION.split(".")[0]:
        errors.append(
            explain(
                f"The model was trained on data contract {version}; this code implements "
                f"{CONTRACT_VERSION} (major versions differ).",
                "a major contract change alters columns, states or profiles, so the model would "
                "misread the data.",
                "Retrain the model on data of the current contract (fleetcast generate, then "
                "fleetcast train), or run the fleetcast version that matches the model.",
                _see("model-contract-version"),
            )
        )
    model_states = _categories(meta, "states", VALID_STATES, errors)
    model_profiles = _categories(meta, "profiles", VALID_PROFILES, errors)
    step = meta.get("step_seconds")
    if isinstance(step, bool) or not isinstance(step, int | float) or step != STEP_SECONDS:
        errors.append(
            explain(
                f"The model's step_seconds is {step!r}; the contract step is {STEP_SECONDS}.",
                "every encoder and prediction length is a number of steps; a different step "
                "would silently stretch or squeeze time.",
                f"Retrain the model on {STEP_SECONDS}-second data of the current contract.",
                _see("model-step"),
            )
        )
    mapping = _mapping(meta, errors)
    unknown: list[str] = []
    if table_or_path is not None:
        unknown = _check_data(table_or_path, model_states, model_profiles, step, mapping, errors)
    return CompatibilityReport(not errors, errors, unknown)


def _categories(meta, key, allowed, errors) -> set[str] | None:
    section = "model-states" if key == "states" else "model-profiles"
    values = meta.get(key)
    if isinstance(values, dict):  # an encoding {"healthy": 1, ...}
        values = list(values)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        errors.append(
            explain(
                f"The model metadata has no usable {key!r} list (got {type(values).__name__}).",
                f"the model's {key} encoding cannot be checked against the contract.",
                "Re-export the model with this version of fleetcast.",
                _see(section),
            )
        )
        return None
    got = set(values)
    if got != set(allowed):
        missing = sorted(set(allowed) - got)
        extra = sorted(got - set(allowed))
        errors.append(
            explain(
                f"{key.capitalize()} count mismatch: the model has {len(got)} {key}, the contract "
                f"{CONTRACT_VERSION} requires {len(allowed)}; missing from the model: {missing}, "
                f"not in the contract: {extra}.",
                f"each {key[:-1]} is a category the model was trained on; a mismatch shifts "
                "every code.",
                "Retrain the model with the current contract.",
                _see(section),
            )
        )
    return got


def _mapping(meta, errors) -> dict[str, str] | None:
    mapping = meta.get("server_mapping")
    if mapping is None:
        return None
    if isinstance(mapping, dict) and isinstance(mapping.get("servers"), dict):
        mapping = mapping["servers"]
    if not isinstance(mapping, dict):
        errors.append(
            explain(
                f"server_mapping in the model metadata is a {type(mapping).__name__}, expected "
                "an object {name: id}.",
                "forecasts cannot be decoded back to server names.",
                "Re-export the model with this version of fleetcast.",
                _see("model-server-mapping"),
            )
        )
        return None
    wrong = [n for n, sid in mapping.items() if server_id(str(n)) != sid]
    if wrong:
        errors.append(
            explain(
                f"{len(wrong)} entries of the model's server_mapping disagree with the SHA-256 ID "
                f"rule, e.g. {wrong[0]!r} -> {mapping[wrong[0]]!r} (expected "
                f"{server_id(str(wrong[0]))!r}).",
                "the model would attribute histories and forecasts to the wrong servers.",
                "Re-export the model from its bundle; never edit server_mapping by hand.",
                _see("model-server-mapping"),
            )
        )
    return {str(k): str(v) for k, v in mapping.items()}


def _check_data(source_arg, model_states, model_profiles, model_step, mapping, errors):
    source = open_source(source_arg)
    names = set(source.schema.names)
    columns = [c for c in ("timestamp", "server_name", "state", "profile") if c in names]
    servers: set[str] = set()
    states: set[str] = set()
    profiles: set[str] = set()
    sample_times: list[np.ndarray] = []
    sample_servers: list[np.ndarray] = []
    sampled = 0
    server_index: dict[str, int] = {}
    for batch in source.batches(columns):
        found = {}
        for name in ("server_name", "state", "profile"):
            if name in batch.schema.names:
                codes, values = dictionary_codes(batch.column(name))
                used = np.unique(codes[codes >= 0])
                found[name] = [values[j] for j in used.tolist() if values[j] is not None]
        servers.update(str(v) for v in found.get("server_name", []))
        states.update(str(v) for v in found.get("state", []))
        profiles.update(str(v) for v in found.get("profile", []))
        if sampled < _STEP_SAMPLE_ROWS and {"timestamp", "server_name"} <= set(batch.schema.names):
            head = batch.slice(0, _STEP_SAMPLE_ROWS - sampled)  # the first 1M rows, no more
            times, null, per_second = timestamp_values(head.column("timestamp"))
            codes, values = dictionary_codes(head.column("server_name"))
            lut = np.array(
                [server_index.setdefault(str(v), len(server_index)) for v in values] + [-1]
            )
            keep = codes >= 0 if null is None else (codes >= 0) & ~null
            sample_times.append(times[keep] / per_second)
            sample_servers.append(lut[codes][keep])
            sampled += head.num_rows
    for key, found, allowed, section in (
        ("states", states, model_states, "model-states"),
        ("profiles", profiles, model_profiles, "model-profiles"),
    ):
        unknown_values = sorted(found - (allowed if allowed is not None else set()))
        if allowed is not None and unknown_values:
            errors.append(
                explain(
                    f"The data has {key} the model does not know: {unknown_values} (the model "
                    f"knows {sorted(allowed)}).",
                    "values the model never saw have no encoding.",
                    "Validate the data (fleetcast validate) and map its values onto the contract.",
                    _see(section),
                )
            )
    data_step = _data_step(sample_times, sample_servers)
    if data_step is not None and isinstance(model_step, int | float) and data_step != model_step:
        errors.append(
            explain(
                f"The data's step is {data_step:g} s; the model's step is {model_step} s.",
                "the model's lengths are numbers of steps; data at another step would be read "
                "as a different time scale.",
                f"Resample the data to {model_step}-second steps (average per server and step).",
                _see("model-step"),
            )
        )
    if mapping is None:
        return sorted(servers)
    return sorted(servers - set(mapping))


def _data_step(times: list[np.ndarray], servers: list[np.ndarray]) -> float | None:
    """Most common positive gap (seconds) between consecutive rows of one server."""
    if not times:
        return None
    t = np.concatenate(times)
    s = np.concatenate(servers)
    order = np.lexsort((t, s))
    t, s = t[order], s[order]
    gaps = np.diff(t)[(s[1:] == s[:-1])]
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return None
    values, counts = np.unique(gaps, return_counts=True)
    return float(values[np.argmax(counts)])
