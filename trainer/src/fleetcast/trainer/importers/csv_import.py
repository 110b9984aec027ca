"""``fleetcast import csv FILE --map column=CSV_COLUMN[*FACTOR] ... --out PATH``.

For exports from other monitoring systems. ``--map`` names, for each contract column,
the CSV column holding it, optionally times a unit factor (``disk_io_mb_s=disk_bytes*1e-6``,
``cpu_pct=cpu_ratio*100``). Contract columns not mapped are looked up under their own
name. ``timestamp``: ISO 8601 with an offset (naive times only with ``--assume-utc``) or
epoch seconds (``--epoch-unit ms`` for milliseconds). ``profile`` and ``state`` are
optional (profile: the column's valid values, else ``--profile-rule``, else the name;
state: null = unknown). Samples at any rate are bucketed to the 5-minute step (last
wins); rows breaking the contract are dropped and counted by reason; gaps stay gaps.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.schema import METRIC_COLUMNS
from fleetcast.trainer.importers.common import (
    ImportFailure,
    ImportReport,
    RowBlock,
    check_latency_fill,
    compile_profile_rules,
    finish,
    write_parquet,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import pyarrow as pa

__all__ = ["ColumnMap", "import_csv", "parse_map"]

_SEE = "docs/PROMETHEUS.md#csv"
_TARGETS = ("timestamp", "server_name", *METRIC_COLUMNS, "profile", "state")
_REQUIRED = ("timestamp", "server_name", *METRIC_COLUMNS)

ColumnMap = dict[str, tuple[str, float]]
"""Contract column -> (CSV column, factor)."""


def parse_map(items: Sequence[str]) -> ColumnMap:
    """Parse ``--map`` items ``column=CSV_COLUMN[*FACTOR]``.

    >>> parse_map(["cpu_pct=cpu*100", "server_name=host"])
    {'cpu_pct': ('cpu', 100.0), 'server_name': ('host', 1.0)}
    """
    out: ColumnMap = {}
    for item in items:
        target, sep, source = str(item).partition("=")
        target, source = target.strip(), source.strip()
        if not sep or target not in _TARGETS or not source:
            raise ImportFailure(
                f"Expected --map COLUMN=CSV_COLUMN[*FACTOR] with COLUMN one of "
                f"{', '.join(_TARGETS)}, but got {item!r}. Why it matters: the importer must "
                f"know which CSV column is which contract column. See {_SEE}."
            )
        factor = 1.0
        match = re.fullmatch(r"(.+?)\s*\*\s*([-+0-9.eE]+)", source)
        if match and target in METRIC_COLUMNS:
            source, factor = match.group(1), float(match.group(2))
        out[target] = (source, factor)
    return out


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    """float64 values; nulls and non-numbers become NaN (then dropped with a reason)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out = []
        for v in col.to_pylist():
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                out.append(float("nan"))
        return np.array(out, dtype=np.float64)


def _timestamps(col: pa.ChunkedArray, name: str, assume_utc: bool, epoch_unit: str) -> np.ndarray:
    """Epoch seconds (int64) of a timestamp column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(col.type):
        if col.type.tz is None and not assume_utc:
            raise _naive(name)
        return pc.cast(col, pa.timestamp("s", tz=col.type.tz)).cast(pa.int64()).to_numpy(False)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        values = col.to_numpy(zero_copy_only=False).astype(np.float64)
    else:
        text = pc.cast(col, pa.string())
        try:
            values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            values = None
        if values is None:
            try:
                parsed = pc.cast(text, pa.timestamp("us", tz="UTC"))
            except pa.ArrowInvalid as exc:
                if "zone offset" not in str(exc):
                    raise ImportFailure(
                        f"Column {name!r} holds a value that is not a time ({exc}). Fix the "
                        f"export or map another column. See {_SEE}."
                    ) from exc
                if not assume_utc:
                    raise _naive(name) from exc
                try:
                    parsed = pc.cast(text, pa.timestamp("us"))
                except pa.ArrowInvalid as exc2:
                    raise ImportFailure(
                        f"Column {name!r} holds a value that is not a time ({exc2}). See {_SEE}."
                    ) from exc2
            us = parsed.cast(pa.int64()).to_numpy(zero_copy_only=False)
            return np.floor_divide(us, 1_000_000).astype(np.int64)
    if not np.all(np.isfinite(values)):
        raise ImportFailure(
            f"Column {name!r} has empty or non-numeric times. Fix the export. See {_SEE}."
        )
    if epoch_unit == "ms":
        values = values / 1000.0
    if values.size and values.max() > 1e11:
        raise ImportFailure(
            f"Column {name!r} looks like epoch milliseconds (up to {values.max():.0f}). Why it "
            "matters: read as seconds they would land in the far future. Fix: pass "
            f"--epoch-unit ms. See {_SEE}."
        )
    return np.floor(values).astype(np.int64)


def _naive(name: str) -> ImportFailure:
    return ImportFailure(
        f"Column {name!r} holds times without a zone offset. Why it matters: the contract is "
        "UTC and a local time would shift every step. Fix: export with an offset "
        f"(2026-11-27T10:00:00Z) or pass --assume-utc if they are UTC. See {_SEE}."
    )


def import_csv(
    path: Path,
    out: Path,
    column_map: ColumnMap | None = None,
    profile_rules: Sequence[str] = (),
    assume_utc: bool = False,
    epoch_unit: str = "s",
    delimiter: str = ",",
    latency_fill: float | None = None,
) -> ImportReport:
    """Convert the CSV at ``path`` into contract Parquet at ``out``; returns the report."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    column_map = dict(column_map or {})
    latency_fill = check_latency_fill(latency_fill, _SEE)
    rules = compile_profile_rules(profile_rules)
    try:
        table = pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(delimiter=delimiter),
            convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
        )
    except FileNotFoundError as exc:
        raise ImportFailure(f"No CSV file at {path}. Fix the path. See {_SEE}.") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise ImportFailure(
            f"Cannot read {path} as CSV ({exc}). Fix the file or --delimiter. See {_SEE}."
        ) from exc
    available = table.column_names
    resolved: dict[str, tuple[str, float]] = {}
    missing: list[str] = []
    for target in _TARGETS:
        source, factor = column_map.get(target, (target, 1.0))
        if source in available:
            resolved[target] = (source, factor)
        elif target in column_map or (
            target in _REQUIRED and not (target == "latency_ms" and latency_fill is not None)
        ):
            missing.append(f"{source!r} for {target}")
    if missing:
        raise ImportFailure(
            f"The CSV has no column {', '.join(missing)}; it has {available}. Why it matters: "
            "every record needs a time, a server and the four metrics. Fix: --map "
            "COLUMN=CSV_COLUMN for each (--latency-fill 0 when there is no latency). "
            f"See {_SEE}."
        )
    n = table.num_rows
    report = ImportReport(
        source={
            "kind": "csv",
            "file": str(path),
            "map": {k: f"{c}*{f:g}" if f != 1.0 else c for k, (c, f) in resolved.items()},
            "profile_rules": list(profile_rules),
        },
        read=n,
    )
    ts = _timestamps(
        table.column(resolved["timestamp"][0]), resolved["timestamp"][0], assume_utc, epoch_unit
    )
    names_col = table.column(resolved["server_name"][0]).cast(pa.string()).to_pylist()
    names = np.array([("" if v is None else str(v).strip()) for v in names_col], dtype=object)
    metrics = np.empty((n, 4), dtype=np.float64)
    for j, m in enumerate(METRIC_COLUMNS):
        if m in resolved:
            source, factor = resolved[m]
            metrics[:, j] = _floats(table.column(source)) * factor
        else:
            metrics[:, j] = float(latency_fill or 0.0)
    if "profile" in resolved:
        raw: list[Any] = table.column(resolved["profile"][0]).cast(pa.string()).to_pylist()
        profile = np.array([None if not v else str(v).strip() for v in raw], dtype=object)
    else:
        profile = np.full(n, None, dtype=object)
    if "state" in resolved:
        report.warnings.append(
            "the state column is not imported: states of other systems do not follow the "
            "contract's 8 states, so state is null (unknown) for every row. "
            "See docs/DATA_CONTRACT.md#state."
        )
    block = RowBlock(ts, names, metrics, profile)
    table_out = finish(block, rules, report)
    write_parquet(table_out, out, report, _SEE)
    return report
