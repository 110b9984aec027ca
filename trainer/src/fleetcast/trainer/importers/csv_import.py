"""``fleetcast import csv FILE --map column=CSV_COLUMN[*FACTOR] ... --out PATH``.

For exports from other monitoring systems. ``--map`` names, for each contract column,
the CSV column holding it, optionally times a unit factor (``disk_io_mb_s=disk_bytes*1e-6``,
``cpu_pct=cpu_ratio*100``). Contract columns not mapped are looked up under their own
name. ``timestamp``: ISO 8601 with an offset (naive times only with ``--assume-utc``) or
epoch seconds (``--epoch-unit ms`` for milliseconds). ``profile`` and ``state`` are
optional (profile: the column's valid values, else ``--profile-rule``, else the name;
state: null = unknown). Samples at any rate are bucketed to the 5-minute step (last
wins); rows breaking the contract are dropped and counted by reason; gaps stay gaps.
Refused up front: a bad or repeated ``--map``, a ``--delimiter`` that is not one
character, an ``--out`` folder; and times that cannot be right (``csv_times``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.errors import explain
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
from fleetcast.trainer.importers.csv_times import check_collapse, timestamps
from fleetcast.trainer.importers.paths import check_out

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa

__all__ = ["ColumnMap", "import_csv", "parse_delimiter", "parse_map"]

_SEE = "docs/PROMETHEUS.md#csv"
_TARGETS = ("timestamp", "server_name", *METRIC_COLUMNS, "profile", "state")
_REQUIRED = ("timestamp", "server_name", *METRIC_COLUMNS)

ColumnMap = dict[str, tuple[str, float]]
"""Contract column -> (CSV column, factor)."""


def parse_map(items: Sequence[str]) -> ColumnMap:
    """Parse ``--map`` items ``column=CSV_COLUMN[*FACTOR]`` (a factor for metrics only:
    a finite number > 0; each column once).

    >>> parse_map(["cpu_pct=cpu*100", "server_name=host"])
    {'cpu_pct': ('cpu', 100.0), 'server_name': ('host', 1.0)}
    """
    out: ColumnMap = {}
    seen: dict[str, str] = {}
    for item in items:
        target, sep, source = str(item).partition("=")
        target, source = target.strip(), source.strip()
        factor = 1.0
        if sep and target in METRIC_COLUMNS and "*" in source:
            source, _, text = source.rpartition("*")
            source, factor = source.strip(), _factor(str(item), target, text.strip())
        if not sep or target not in _TARGETS or not source:
            raise ImportFailure(
                f"Expected --map COLUMN=CSV_COLUMN[*FACTOR] with COLUMN one of "
                f"{', '.join(_TARGETS)}, but got {item!r}. Why it matters: the importer must "
                f"know which CSV column is which contract column. See {_SEE}."
            )
        if target in out:
            raise ImportFailure(
                explain(
                    f"--map {target}= is given twice ({seen[target]!r} and {item!r}).",
                    "each contract column comes from one CSV column; the import will not keep "
                    "one and silently ignore the other.",
                    f"Pass --map {target}=CSV_COLUMN once.",
                    _SEE,
                )
            )
        out[target], seen[target] = (source, factor), str(item)
    return out


def _factor(item: str, target: str, text: str) -> float:
    """The unit factor ``text`` of ``--map item``: a finite number > 0."""
    try:
        factor: float | None = float(text)
    except ValueError:
        factor = None
    if factor is not None and math.isfinite(factor) and factor > 0:
        return factor
    raise ImportFailure(
        explain(
            f"--map {item!r}: the factor {text!r} is not "
            + ("a number." if factor is None else "a finite number > 0."),
            f"every {target} value is multiplied by it (a unit conversion): a factor 0 would "
            "write all-zero values marked valid, a negative or non-finite one would drop or "
            "corrupt every row.",
            f"Give a positive number after '*', e.g. --map {target}=CSV_COLUMN*100 (a ratio "
            "as %) or *1e-6 (bytes/s as MB/s), or no factor.",
            _SEE,
        )
    )


def parse_delimiter(text: str) -> str:
    """``--delimiter``: one character; ``tab`` or ``\\t`` (backslash, t) is a tab."""
    delimiter = "\t" if text == "\\t" or text.lower() == "tab" else text
    if len(delimiter) == 1 and delimiter not in '"\r\n':
        return delimiter
    raise ImportFailure(
        explain(
            f"--delimiter {text!r} is not a field separator: expected exactly one character "
            "other than a quote or a line break.",
            "the CSV reader splits every line on one character; with anything else no "
            "column could be found.",
            "Pass one character, e.g. --delimiter ';' or --delimiter '|'; for a tab-separated "
            "file pass --delimiter tab (or '\\t').",
            _SEE,
        )
    )


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


def _text_columns(path: Path, delimiter: str, columns: list[str]) -> dict[str, list[str]]:
    """``columns`` read again exactly as written, as text: the first read infers types, so
    host names 007 and 7 both became the integer 7 (one server), and NA, nan or null
    became a missing name, dropped."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(
        path,
        parse_options=pcsv.ParseOptions(delimiter=delimiter),
        convert_options=pcsv.ConvertOptions(
            include_columns=columns,
            column_types=dict.fromkeys(columns, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return {c: ["" if v is None else v for v in table.column(c).to_pylist()] for c in columns}


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
    delimiter = parse_delimiter(delimiter)
    check_out(out, _SEE)
    if out.exists() and Path(path).exists() and out.resolve() == Path(path).resolve():
        raise ImportFailure(
            f"--out {out} is the CSV file being imported. Why it matters: the Parquet file "
            "would replace the source it was read from. Fix: pass another --out, e.g. "
            f"--out {Path(path).with_suffix('.parquet')}. See {_SEE}."
        )
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
    twice = sorted({c for c, _ in resolved.values() if available.count(c) > 1})
    if twice:
        raise ImportFailure(
            f"The CSV's header names {', '.join(map(repr, twice))} more than once. Why it "
            "matters: the import cannot tell which of those columns holds the values. Fix: "
            "rename the duplicates in the header (and --map the one to import). "
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
    time_column = resolved["timestamp"][0]
    ts = timestamps(table.column(time_column), time_column, assume_utc, epoch_unit)
    text = _text_columns(
        path, delimiter, [resolved[k][0] for k in ("server_name", "profile") if k in resolved]
    )
    names_col = text[resolved["server_name"][0]]
    names = np.array([v.strip() for v in names_col], dtype=object)
    trimmed = sorted({v for v in names_col if v != v.strip() and v.strip()})
    if trimmed:
        report.warnings.append(
            f"{len(trimmed)} server names had leading or trailing spaces, removed (e.g. "
            f"{trimmed[0]!r} is imported as {trimmed[0].strip()!r}, the same server as any "
            "row without them): a live source must send the names without them. "
            f"See {_SEE}."
        )
    check_collapse(ts, names, time_column, epoch_unit)
    metrics = np.empty((n, 4), dtype=np.float64)
    for j, m in enumerate(METRIC_COLUMNS):
        if m in resolved:
            source, factor = resolved[m]
            metrics[:, j] = _floats(table.column(source)) * factor
        else:
            metrics[:, j] = float(latency_fill or 0.0)
    if "profile" in resolved:
        raw: list[Any] = text[resolved["profile"][0]]
        profile = np.array([None if not v.strip() else v.strip() for v in raw], dtype=object)
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
