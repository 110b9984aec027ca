"""fleetcast.contract — the data contract as code (docs/DATA_CONTRACT.md is the law).

Public names are imported lazily on first use (PEP 562), so ``import fleetcast.contract``
and ``fleetcast --help`` stay cheap:

- constants: ``CONTRACT_VERSION``, ``REQUIRED_COLUMNS``, ``METRIC_COLUMNS``,
  ``METRIC_RANGES``, ``VALID_STATES``, ``VALID_PROFILES``, ``STEP_SECONDS``, ``HORIZONS``,
  ``DEFAULT_ENCODER_STEPS``, ``DEFAULT_PREDICTION_STEPS``, ``arrow_schema``;
- server identities: ``ServerEncoder``, ``server_id``, ``profile_from_name``;
- validation: ``DataValidator`` (whole tables), ``validate_model_compatibility`` (a model
  against data), ``validate_columns`` (the appliance's per-record check), ``Issue``,
  ``ValidationReport``, ``CompatibilityReport``;
- errors: ``ContractError``, ``DataFileError``, ``explain``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetcast.contract._batches import DataFileError
    from fleetcast.contract.compatibility import (
        CompatibilityReport,
        validate_model_compatibility,
    )
    from fleetcast.contract.encoder import ServerEncoder, profile_from_name, server_id
    from fleetcast.contract.errors import ContractError, explain
    from fleetcast.contract.issues import Issue
    from fleetcast.contract.records import validate_columns
    from fleetcast.contract.schema import (
        CONTRACT_VERSION,
        DEFAULT_ENCODER_STEPS,
        DEFAULT_PREDICTION_STEPS,
        HORIZONS,
        METRIC_COLUMNS,
        METRIC_RANGES,
        REQUIRED_COLUMNS,
        STEP_SECONDS,
        VALID_PROFILES,
        VALID_STATES,
        arrow_schema,
    )
    from fleetcast.contract.validate import DataValidator, ValidationReport

__all__ = [
    "CONTRACT_VERSION",
    "DEFAULT_ENCODER_STEPS",
    "DEFAULT_PREDICTION_STEPS",
    "HORIZONS",
    "METRIC_COLUMNS",
    "METRIC_RANGES",
    "REQUIRED_COLUMNS",
    "STEP_SECONDS",
    "VALID_PROFILES",
    "VALID_STATES",
    "CompatibilityReport",
    "ContractError",
    "DataFileError",
    "DataValidator",
    "Issue",
    "ServerEncoder",
    "ValidationReport",
    "arrow_schema",
    "explain",
    "profile_from_name",
    "server_id",
    "validate_columns",
    "validate_model_compatibility",
]

_MODULES = {
    "fleetcast.contract.schema": (
        "CONTRACT_VERSION",
        "DEFAULT_ENCODER_STEPS",
        "DEFAULT_PREDICTION_STEPS",
        "HORIZONS",
        "METRIC_COLUMNS",
        "METRIC_RANGES",
        "REQUIRED_COLUMNS",
        "STEP_SECONDS",
        "VALID_PROFILES",
        "VALID_STATES",
        "arrow_schema",
    ),
    "fleetcast.contract.encoder": ("ServerEncoder", "profile_from_name", "server_id"),
    "fleetcast.contract.errors": ("ContractError", "explain"),
    "fleetcast.contract._batches": ("DataFileError",),
    "fleetcast.contract.issues": ("Issue",),
    "fleetcast.contract.records": ("validate_columns",),
    "fleetcast.contract.compatibility": ("CompatibilityReport", "validate_model_compatibility"),
    "fleetcast.contract.validate": ("DataValidator", "ValidationReport"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fleetcast.contract' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
