"""The rules of the table validator: schema checks, then a vectorised scan batch by batch.

:func:`check_schema` looks at the Arrow schema only (columns, types, time zone).
:class:`BatchScan` takes record batches one after the other and keeps, across batches,
counters, a few example rows per rule, the distinct (server, profile) pairs, and one
uint64 key per row (server code << 32 | step index + 2**31) from which
:meth:`BatchScan.finish` finds duplicate rows and missing steps with one sort.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract._batches import (
    dictionary_codes,
    format_time,
    null_mask,
    numpy_values,
    timestamp_values,
)
from fleetcast.contract.issues import MAX_EXAMPLES, Issue, Severity
from fleetcast.contract.schema import (
    CONTRACT_VERSION,
    END_EPOCH_S,
    FLOAT32_MAX,
    METRIC_COLUMNS,
    METRIC_RANGES,
    METRIC_UNITS,
    REQUIRED_COLUMNS,
    STEP_SECONDS,
    VALID_PROFILES,
    VALID_STATES,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["BatchScan", "check_schema", "is_utc_name"]

_UTC_NAMES = frozenset(
    # UTC's names in the IANA database (its aliases, with and without "Etc/") and the
    # zero offsets Arrow writes; compared in lower case.
    [
        f"{prefix}{name}"
        for prefix in ("", "etc/")
        for name in (
            "utc",
            "uct",
            "universal",
            "zulu",
            "gmt",
            "gmt0",
            "gmt+0",
            "gmt-0",
            "greenwich",
        )
    ]
    + ["+00:00", "-00:00", "z"]
)


def is_utc_name(tz: str) -> bool:
    """Whether an Arrow timestamp zone names UTC (any case, an IANA alias or a zero offset)."""
    return tz.lower() in _UTC_NAMES


_STRING_COLUMNS = ("server_name", "state", "profile")
_STEP_OFFSET = 2**31
_PAIR_BINCOUNT_LIMIT = 20_000_000


def _is_string(t: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def check_schema(schema: pa.Schema, strict: bool) -> tuple[list[Issue], dict[str, str]]:
    """Check columns and types; returns the issues and the usable columns with their kind.

    Kinds: ``timestamp``, ``float``, ``int`` (an integer metric, cast to float), ``string``,
    ``null`` (a state column with no value at all). A column with an unusable type is not
    in the mapping, so the value checks that need it are skipped (and said so).
    """
    import pyarrow as pa

    issues: list[Issue] = []
    usable: dict[str, str] = {}
    soft: Severity = "error" if strict else "warning"
    names = schema.names
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        issues.append(
            Issue(
                "required-columns",
                "error",
                f"Missing required column(s) {missing}: expected all of {list(REQUIRED_COLUMNS)}, "
                f"found {names}.",
                "training, export and the appliance read these eight columns by name.",
                "Add or rename the columns (state may be null; profile can be derived with "
                "fleetcast.contract.profile_from_name).",
                count=len(missing),
            )
        )
    repeated = sorted(c for c, n in Counter(names).items() if n > 1)
    if repeated:
        issues.append(
            Issue(
                "required-columns",
                "error",
                f"Column name(s) {repeated} appear more than once.",
                "a reader would pick one of the copies arbitrarily.",
                "Keep exactly one column of each name.",
                count=len(repeated),
            )
        )
    stored = (schema.metadata or {}).get(b"fleetcast.contract_version")
    if stored is not None:
        version = _version_text(stored)
        if version is None:
            issues.append(
                Issue(
                    "contract-version",
                    "error",
                    f"The file's schema metadata fleetcast.contract_version is {_shown(stored)}, "
                    f"which is not a contract version (expected MAJOR.MINOR.PATCH such as "
                    f"{CONTRACT_VERSION}).",
                    "the version says which columns, states and profiles the file follows; "
                    "a damaged or foreign value cannot vouch for either.",
                    f"Rewrite the file with fleetcast.contract_version set to {CONTRACT_VERSION} "
                    "if its content follows this contract (arrow_schema() writes it), or "
                    "regenerate it with this version of fleetcast.",
                )
            )
        elif version.split(".")[0] != CONTRACT_VERSION.split(".")[0]:
            issues.append(
                Issue(
                    "contract-version",
                    "error",
                    f"The file was written for data contract {version}; this is contract "
                    f"{CONTRACT_VERSION} (a different major version).",
                    "a major version changes columns, states or profiles incompatibly.",
                    "Migrate the data (docs/DATA_CONTRACT.md#migration) or regenerate it with "
                    "this version of fleetcast.",
                )
            )
    extra = [c for c in names if c not in REQUIRED_COLUMNS]
    if extra:
        issues.append(
            Issue(
                "extra-columns",
                soft,
                f"Column(s) {extra} are not in the contract (expected exactly "
                f"{list(REQUIRED_COLUMNS)}).",
                "they are ignored by training and inference, which usually means data meant "
                "for the model is silently dropped or a column is misnamed.",
                "Drop them before writing (pandas: df.to_parquet(path, index=False) avoids "
                "'__index_level_0__'), rename misnamed ones, or validate with --no-strict.",
                count=len(extra),
            )
        )
    for name in REQUIRED_COLUMNS:
        if name not in names or name in repeated:
            continue
        t = schema.field(name).type
        if name == "timestamp":
            if not pa.types.is_timestamp(t):
                issues.append(_type_issue(name, "timestamp[us, tz=UTC]", t))
                continue
            usable[name] = "timestamp"
            if t.tz is None:
                issues.append(
                    Issue(
                        "utc-timestamps",
                        "error",
                        f"timestamp has no time zone ({t}); expected timestamp[us, tz=UTC].",
                        "a naive time is ambiguous (local time, daylight saving) and shifts "
                        "every seasonal feature and every alert time.",
                        "Convert at the source: pandas pd.to_datetime(col, utc=True), or "
                        "pyarrow.compute.assume_timezone(col, 'UTC') if the values are UTC.",
                    )
                )
            elif not is_utc_name(t.tz):
                issues.append(
                    Issue(
                        "utc-timestamps",
                        soft,
                        f"timestamp is in time zone {t.tz!r}; expected UTC.",
                        "the contract stores UTC so that files from different sites compare "
                        "and time features mean the same everywhere.",
                        "Convert with col.dt.tz_convert('UTC') (pandas) or "
                        "col.cast(pa.timestamp('us', tz='UTC')) (pyarrow).",
                    )
                )
        elif name in METRIC_COLUMNS:
            if pa.types.is_floating(t):
                usable[name] = "float"
            elif pa.types.is_integer(t):
                usable[name] = "int"
                issues.append(
                    Issue(
                        "column-types",
                        soft,
                        f"{name} is {t}; expected a floating-point column (float32 or float64).",
                        "integer metrics usually mean a unit or rounding mistake upstream.",
                        f"Cast it: df[{name!r}] = df[{name!r}].astype('float32'), and check its "
                        f"unit is {METRIC_UNITS[name]}.",
                    )
                )
            else:
                issues.append(_type_issue(name, "float32 or float64", t))
        elif _is_string(t) or (name == "state" and pa.types.is_null(t)):
            usable[name] = "null" if pa.types.is_null(t) else "string"
        else:
            issues.append(_type_issue(name, "string", t))
    return issues, usable


_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+){1,2}")


def _version_text(stored: bytes) -> str | None:
    """The stored contract version, or None when it is not ``MAJOR.MINOR[.PATCH]`` text."""
    try:
        text = stored.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if _VERSION.fullmatch(text) else None


def _shown(stored: bytes) -> str:
    """A stored metadata value for a message: quoted text, or its bytes when not UTF-8."""
    try:
        text = stored.decode("utf-8")
    except UnicodeDecodeError:
        return f"{stored[:40]!r} (not UTF-8 text)"
    return "empty" if not text else repr(text[:40] + ("…" if len(text) > 40 else ""))


def _type_issue(name: str, expected: str, actual: pa.DataType) -> Issue:
    skipped = {
        "timestamp": " Step alignment, duplicate and missing-step checks were skipped.",
        "server_name": " Duplicate, missing-step and stable-profile checks were skipped.",
    }.get(name, f" The value checks of {name} were skipped.")
    return Issue(
        "column-types",
        "error",
        f"Column {name} has type {actual}; expected {expected}.{skipped}",
        "readers interpret columns by their contract type; a wrong type means a wrong value.",
        "Convert the column when writing the file (see the column table for each type).",
    )


@dataclass
class _Tally:
    """Rows that broke one rule: a count, a few examples, the range of offending values."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, mask: np.ndarray, describe, values: np.ndarray | None = None) -> None:
        """Count ``mask`` (bool, rows); keep examples described by ``describe(i)``."""
        n = int(np.count_nonzero(mask))
        if not n:
            return
        self.count += n
        need = MAX_EXAMPLES - len(self.examples)
        if need > 0:
            self.examples.extend(describe(int(i)) for i in np.flatnonzero(mask)[:need])
        if values is not None:
            bad = values[mask]
            self.low = min(self.low, float(np.min(bad)))
            self.high = max(self.high, float(np.max(bad)))


class _Rows:
    """Describes a row of the current batch for an example: index, server, time."""

    def __init__(
        self,
        offset: int,
        codes: np.ndarray | None,
        values: list[object],
        times: np.ndarray | None,
        per_second: int,
        time_null: np.ndarray | None = None,
    ) -> None:
        self.offset, self.codes, self.values = offset, codes, values
        self.times, self.per_second = times, per_second
        self.time_null = time_null

    def __call__(self, i: int) -> str:
        server = None
        if self.codes is not None and self.codes[i] >= 0:
            server = repr(self.values[self.codes[i]])
        when = None
        if self.times is not None:
            if self.time_null is not None and self.time_null[i]:
                when = "timestamp null"  # a null time has no instant to show (not 1970)
            else:
                when = f"at {format_time(self.times[i] / self.per_second)}"
        if server is None and when is None:
            return f"row {self.offset + i}"
        if when is None:
            return f"row {self.offset + i} ({server})"
        if server is None:
            return f"row {self.offset + i} ({when})"
        sep = " " if when.startswith("at ") else ", "
        return f"row {self.offset + i} ({server}{sep}{when})"


class BatchScan:
    """Accumulates the row-level checks over record batches; see the module docstring."""

    def __init__(self, usable: dict[str, str], num_rows: int) -> None:
        self.usable = usable
        self.rows = 0
        self.keyed = "timestamp" in usable and "server_name" in usable
        self.keys = np.empty(num_rows if self.keyed else 0, dtype=np.uint64)
        self.n_keys = 0
        self.servers: dict[str, int] = {}
        self.profiles: dict[str, int] = {}
        self.pairs: Counter[int] = Counter()
        self.nulls: dict[str, _Tally] = {c: _Tally() for c in REQUIRED_COLUMNS}
        self.nonfinite: dict[str, _Tally] = {c: _Tally() for c in METRIC_COLUMNS}
        self.ranges: dict[str, _Tally] = {c: _Tally() for c in METRIC_COLUMNS}
        self.peak = dict.fromkeys(METRIC_COLUMNS, -np.inf)  # the largest finite value
        self.bad_names, self.unaligned, self.out_of_range_times = _Tally(), _Tally(), _Tally()
        self.bad_values: dict[str, Counter[str]] = {"state": Counter(), "profile": Counter()}
        self.bad_rows: dict[str, _Tally] = {"state": _Tally(), "profile": _Tally()}
        self.t_min: float | None = None
        self.t_max: float | None = None

    @property
    def server_count(self) -> int:
        """Distinct usable server names seen so far."""
        return len(self.servers)

    def add(self, batch: pa.RecordBatch, offset: int) -> None:
        """Check one record batch whose first row is row ``offset`` of the table."""
        n = batch.num_rows
        self.rows += n
        cols = {name: batch.column(name) for name in batch.schema.names}
        server_codes = global_servers = None
        server_values: list[object] = []
        if "server_name" in cols:
            server_codes, server_values = dictionary_codes(cols["server_name"])
            global_servers = self._servers(server_codes, server_values)
        times = time_null = None
        per_second = 1
        if "timestamp" in cols:
            times, time_null, per_second = timestamp_values(cols["timestamp"])
        rows = _Rows(offset, server_codes, server_values, times, per_second, time_null)
        if server_codes is not None:
            self.nulls["server_name"].add(server_codes < 0, rows)
            self.bad_names.add((global_servers < 0) & (server_codes >= 0), rows)
        if times is not None:
            self._times(times, time_null, per_second, global_servers, rows)
        for name in METRIC_COLUMNS:
            if name in cols:
                self._metric(name, cols[name], rows)
        if self.usable.get("state") == "string":
            self._category("state", cols["state"], VALID_STATES, rows, nullable=True)
        if "profile" in cols:
            codes, values = self._category("profile", cols["profile"], VALID_PROFILES, rows)
            if global_servers is not None:
                self._pairs(global_servers, codes, values)

    def _servers(self, codes: np.ndarray, values: list[object]) -> np.ndarray:
        """Global server codes of the rows, -1 for null or blank names."""
        lut = np.empty(len(values) + 1, dtype=np.int64)
        for j, value in enumerate(values):
            if isinstance(value, str) and value.strip():
                lut[j] = self.servers.setdefault(value, len(self.servers))
            else:
                lut[j] = -1
        lut[-1] = -1
        if None in values:  # a null stored in the dictionary is a null row, not a blank name
            codes[_is_none(values, codes)] = -1
        return lut[codes]

    def _times(self, times, time_null, per_second, global_servers, rows) -> None:
        valid = np.ones(times.shape, dtype=bool) if time_null is None else ~time_null
        if time_null is not None:
            self.nulls["timestamp"].add(time_null, rows)
        if not valid.any():
            return
        lo, hi = times[valid].min() / per_second, times[valid].max() / per_second
        self.t_min = lo if self.t_min is None else min(self.t_min, lo)
        self.t_max = hi if self.t_max is None else max(self.t_max, hi)
        step_units = STEP_SECONDS * per_second
        steps = np.floor_divide(times, step_units)
        self.unaligned.add((times - steps * step_units != 0) & valid, rows)
        end = END_EPOCH_S * per_second  # beyond int64 for ns: every such time is in range
        outside = times < 0 if end > np.iinfo(np.int64).max else (times < 0) | (times >= end)
        outside &= valid
        self.out_of_range_times.add(outside, rows, times / per_second)
        if global_servers is None:
            return
        keep = valid & (global_servers >= 0)
        step = np.clip(steps[keep], -_STEP_OFFSET, _STEP_OFFSET - 1) + _STEP_OFFSET
        keys = (global_servers[keep].astype(np.uint64) << np.uint64(32)) | step.astype(np.uint64)
        self.keys[self.n_keys : self.n_keys + keys.size] = keys
        self.n_keys += keys.size

    def _metric(self, name: str, column: pa.Array, rows: _Rows) -> None:
        values = numpy_values(column)  # undefined at null rows
        if values.dtype.kind != "f" or values.dtype.itemsize < 4:  # float16 warns; int: peak
            values = values.astype(np.float64)
        null = null_mask(column)
        usable = np.abs(values) <= FLOAT32_MAX  # NaN, ±inf and beyond float32: False
        if null is not None:
            self.nulls[name].add(null, rows)
            usable &= ~null
        if not usable.all():
            # a null is reported as null, not also as non-finite
            bad = ~usable if null is None else ~usable & ~null
            self.nonfinite[name].add(bad, _with_value(rows, name, values))
        self.peak[name] = max(self.peak[name], float(np.max(values, where=usable, initial=-np.inf)))
        low, high = METRIC_RANGES[name]
        outside = ((values < low) | (values > high)) & usable
        self.ranges[name].add(outside, _with_value(rows, name, values), values)

    def _category(self, name, column, allowed, rows, nullable=False):
        codes, values = dictionary_codes(column)
        is_null = np.array([v is None for v in values] + [True])
        invalid = np.array([v is not None and v not in allowed for v in values] + [False])
        null_rows = is_null[codes]
        if not nullable:
            self.nulls[name].add(null_rows, rows)
        if invalid.any():
            bad_rows = invalid[codes]
            counts = np.bincount(codes[bad_rows], minlength=len(values))
            # A category no row uses (rows filtered out of a pandas categorical) is no value
            # of the table: it was reported as "0 rows have a state outside the contract".
            for j in np.flatnonzero(invalid[: len(values)] & (counts > 0)):
                self.bad_values[name][str(values[j])] += int(counts[j])
            if bad_rows.any():
                self.bad_rows[name].add(bad_rows, _with_label(rows, name, codes, values))
        return codes, values

    def _pairs(self, servers: np.ndarray, codes: np.ndarray, values: list[object]) -> None:
        """Count rows per (server, profile) pair, to find servers whose profile changes."""
        lut = np.array(
            [
                -1 if v is None else self.profiles.setdefault(str(v), len(self.profiles))
                for v in values
            ]
            + [-1],
            dtype=np.int64,
        )
        profiles = lut[codes]
        keep = (servers >= 0) & (profiles >= 0)
        width = len(self.profiles) or 1
        combined = servers[keep] * width + profiles[keep]
        if len(self.servers) * width <= _PAIR_BINCOUNT_LIMIT:
            counts = np.bincount(combined)
            present = np.flatnonzero(counts)
            counts = counts[present]
        else:
            present, counts = np.unique(combined, return_counts=True)
        for pair, count in zip(present.tolist(), counts.tolist(), strict=True):
            server, profile = divmod(pair, width)
            self.pairs[(server << 32) | profile] += count

    def finish(self, strict: bool) -> list[Issue]:
        """All row-level issues found in the batches added so far."""
        from fleetcast.contract._table_findings import findings

        return findings(self, strict)


def _is_none(values: list[object], codes: np.ndarray) -> np.ndarray:
    """Bool per row: the row's dictionary value is None (a null stored in the dictionary)."""
    lut = np.array([v is None for v in values] + [False])
    return lut[codes]


def _with_value(rows: _Rows, name: str, values: np.ndarray):
    return lambda i: f"{rows(i)}: {name}={float(values[i]):g}"


def _with_label(rows: _Rows, name: str, codes: np.ndarray, values: list[object]):
    return lambda i: f"{rows(i)}: {name}={values[codes[i]]!r}"


def close_matches(value: str, allowed: tuple[str, ...]) -> str | None:
    """The allowed value a misspelling most likely meant, if any (``Healthy`` → ``healthy``)."""
    match = difflib.get_close_matches(value.strip().lower().replace(" ", "_"), allowed, n=1)
    return match[0] if match else None
