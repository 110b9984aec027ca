"""Per-record validation on numpy columns — the appliance's hot path (numpy only).

``validate_columns(columns) -> (ok, reasons)``: ``columns`` maps contract column names to
1-D numpy arrays of one length n (one element per record):

- ``server_name``: str (object or unicode array) — required, must be a non-blank string;
- ``cpu_pct``, ``mem_pct``, ``disk_io_mb_s``, ``latency_ms``: numbers — required, finite,
  within ``schema.METRIC_RANGES`` (None in an object array counts as missing);
- ``timestamp``: optional; epoch seconds (int/float) or ``datetime64`` — finite, at or
  after 1970 and before ``END_EPOCH_S`` (the year 9999). Alignment is not checked: the appliance buckets raw samples into steps;
- ``state``: optional; strings (None or ``""`` = unknown, allowed) or integer codes into
  ``VALID_STATES`` (-1 = unknown);
- ``profile``: optional; strings or integer codes into ``VALID_PROFILES``. None/``""``/-1
  means "derive from the name" and is allowed unless ``profile_required=True``.

Returns ``ok``, a bool array of shape (n,), and ``reasons``, a dict from record index to
one line naming every broken rule of that record with its doc section, e.g.
``"cpu_pct=120 is outside [0, 100] percent (docs/DATA_CONTRACT.md#value-ranges)"``.
Valid records are kept by the caller; nothing is raised for bad values. A missing
required column or arrays of different lengths raise ContractError (a caller's bug).
"""

from __future__ import annotations

from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract.errors import ContractError
from fleetcast.contract.schema import (
    CONTRACT_DOC,
    END_EPOCH_S,
    FLOAT32_MAX,
    METRIC_COLUMNS,
    METRIC_RANGES,
    METRIC_UNITS,
    VALID_PROFILES,
    VALID_STATES,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["RECORD_REQUIRED", "validate_columns"]

RECORD_REQUIRED: tuple[str, ...] = ("server_name", *METRIC_COLUMNS)
"""Columns every record batch must carry; timestamp, state and profile are optional."""


def validate_columns(
    columns: Mapping[str, np.ndarray], *, profile_required: bool = False
) -> tuple[np.ndarray, dict[int, str]]:
    """Check n records given as columns; returns ``(ok (n,) bool, {index: reason})``.

    See the module docstring for the accepted columns and encodings.
    """
    missing = [c for c in RECORD_REQUIRED if c not in columns]
    if missing:
        raise ContractError(
            f"validate_columns needs columns {list(RECORD_REQUIRED)}; missing {missing}.",
            "a record without these cannot be placed in a window.",
            "Pass every required column (one array per column, one element per record).",
            f"{CONTRACT_DOC}#columns",
        )
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    lengths = {k: a.shape for k, a in arrays.items()}
    n = arrays["server_name"].shape[0] if arrays["server_name"].ndim == 1 else -1
    if n < 0 or any(s != (n,) for s in lengths.values()):
        raise ContractError(
            f"validate_columns needs 1-D arrays of one length; got shapes {lengths}.",
            "element i of every column must describe the same record i.",
            "Build all columns from the same list of records.",
            f"{CONTRACT_DOC}#columns",
        )
    problems: list[tuple[np.ndarray, object]] = []
    problems.append((~_non_blank(arrays["server_name"]), _blank_name))
    for name in METRIC_COLUMNS:
        values = _as_float(arrays[name])
        finite = np.abs(values) <= FLOAT32_MAX  # NaN, ±inf and beyond float32: False
        problems.append((~finite, _nonfinite(name, arrays[name])))
        low, high = METRIC_RANGES[name]
        outside = ((values < low) | (values > high)) & finite
        problems.append((outside, _outside(name, values, low, high)))
    if "timestamp" in arrays:
        problems.append(_timestamps(arrays["timestamp"]))
    if "state" in arrays:
        problems.append(_category(arrays["state"], "state", VALID_STATES, allow_null=True))
    if "profile" in arrays:
        problems.append(
            _category(arrays["profile"], "profile", VALID_PROFILES, allow_null=not profile_required)
        )
    bad = np.zeros(n, dtype=bool)
    for mask, _ in problems:
        bad |= mask
    reasons: dict[int, str] = {}
    for i in np.flatnonzero(bad).tolist():
        reasons[i] = "; ".join(describe(i) for mask, describe in problems if mask[i])
    return ~bad, reasons


def _py(value: object) -> object:
    """A numpy scalar as the Python value it holds (for readable reprs in reasons)."""
    return value.item() if isinstance(value, np.generic) else value


def _see(section: str) -> str:
    return f"({CONTRACT_DOC}#{section})"


def _non_blank(names: np.ndarray) -> np.ndarray:
    if names.dtype.kind == "U":
        return np.char.str_len(np.char.strip(names)) > 0
    items = names.tolist()
    try:  # C-level map: all strings, the usual case
        return np.fromiter(map(bool, map(str.strip, items)), dtype=bool, count=len(items))
    except TypeError:
        return np.fromiter(
            (isinstance(s, str) and bool(s.strip()) for s in items), dtype=bool, count=len(items)
        )


def _blank_name(i: int) -> str:
    return f"server_name is empty or not a string {_see('server-names')}"


def _as_float(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return values
    if values.dtype.kind in "iub":
        return values.astype(np.float64)
    out = np.full(values.shape[0], np.nan)
    for i, v in enumerate(values.tolist()):
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[i] = v
    return out


def _nonfinite(name: str, values: np.ndarray):
    return lambda i: (
        f"{name} is missing or not a finite float32 number (got {_py(values[i])!r}) "
        f"{_see('non-finite-values')}"
    )


def _exact(value: np.generic) -> str:
    """The shortest text that reads back as ``value`` in its own dtype: ``100.0001``, not
    ``:g``'s ``100``, which made a value just over a bound look like one on it."""
    text = str(value)
    return text[:-2] if text.endswith(".0") else text


def _outside(name: str, values: np.ndarray, low: float, high: float):
    unit = METRIC_UNITS[name]
    return lambda i: (
        f"{name}={_exact(values[i])} is outside [{low:g}, {high:g}] {unit} {_see('value-ranges')}"
    )


def _timestamps(values: np.ndarray) -> tuple[np.ndarray, object]:
    if values.dtype.kind == "M":
        seconds = values.astype("datetime64[s]").astype(np.float64)
        seconds[np.isnat(values)] = np.nan
    else:
        seconds = _as_float(values)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(seconds) | (seconds < 0) | (seconds >= END_EPOCH_S)
    return (
        bad,
        lambda i: (
            "timestamp must be finite epoch seconds (UTC) from 1970 to before 9999, "
            f"got {_py(values[i])!r} {_see('time-range')}"
        ),
    )


def _category(values: np.ndarray, name: str, allowed: tuple[str, ...], allow_null: bool):
    rule = "valid-states" if name == "state" else "valid-profiles"
    if values.dtype.kind in "iu":
        codes = values
    else:
        index: dict[object, int] = {v: i for i, v in enumerate(allowed)}
        index[None] = index[""] = -1
        items = values.tolist()
        try:  # C-level map through a dict: much faster than np.isin on object arrays
            codes = np.fromiter(map(index.get, items, repeat(-2)), dtype=np.int64, count=len(items))
        except TypeError:  # an unhashable element
            codes = np.fromiter(
                (index.get(v, -2) if v is None or isinstance(v, str) else -2 for v in items),
                dtype=np.int64,
                count=len(items),
            )
    null = codes == -1
    bad = (codes < -1) | (codes >= len(allowed))

    def reason(i: int) -> str:
        if null[i]:
            return f"{name} is missing (required here) {_see('null-values')}"
        return (
            f"{name} {_py(values[i])!r} is not one of the {len(allowed)} contract {name}s "
            f"{_see(rule)}"
        )

    return (bad | null if not allow_null else bad), reason
