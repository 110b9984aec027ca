"""Bounded, batched access to a contract table (pyarrow Table or Parquet file).

Internal helpers shared by the table validator and the model-compatibility check:
open a source without reading it, iterate it in record batches of bounded size, and
turn string columns into (codes, values) pairs so that every per-value check runs on
the few distinct values and is mapped back to rows with one numpy gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract.errors import explain

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import pyarrow as pa

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "DataFileError",
    "TableSource",
    "dictionary_codes",
    "format_time",
    "null_mask",
    "numpy_values",
    "open_source",
    "timestamp_values",
]

DEFAULT_BATCH_ROWS = 262_144
"""Rows per record batch: bounds the memory one batch takes (about 9 MB of raw columns)."""

_UNIT_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
DATA_FILE_SECTION = "docs/DATA_CONTRACT.md#files"


class DataFileError(OSError):
    """A data file that cannot be read at all (missing, not Parquet, corrupt)."""


@dataclass(frozen=True)
class TableSource:
    """A table to scan in batches: its Arrow schema, its row count and a batch iterator factory."""

    schema: pa.Schema
    """Arrow schema of the table as stored (before any cast)."""
    num_rows: int
    """Total number of rows (from the Parquet footer for files; nothing is read to know it)."""
    name: str
    """How to name the source in messages (the path, or ``<table>``)."""
    _table: pa.Table | None = None
    _path: Path | None = None

    def batches(
        self, columns: Sequence[str], batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Yield record batches of at most ``batch_rows`` rows holding only ``columns``.

        Parquet string columns are read dictionary-encoded (no per-row string objects).
        Raises DataFileError if the file turns out to be corrupt while reading.
        """
        if self._table is not None:
            yield from self._table.select(list(columns)).to_batches(max_chunksize=batch_rows)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self._path
        strings = [
            c
            for c in columns
            if pa.types.is_string(self.schema.field(c).type)
            or pa.types.is_large_string(self.schema.field(c).type)
        ]
        try:
            # No pre-buffering and no reader threads: the reader then holds about one batch
            # (pre-buffering a whole row group per column triples the peak memory) and is
            # no slower on a shared machine.
            with pq.ParquetFile(path, read_dictionary=strings, pre_buffer=False) as pf:
                yield from pf.iter_batches(
                    batch_size=batch_rows, columns=list(columns), use_threads=False
                )
        except (OSError, pa.ArrowException) as exc:
            raise DataFileError(
                explain(
                    f"Could not read {path}: {exc}.",
                    "a file that cannot be read completely cannot be validated or trained on.",
                    "Re-create the file (for example with `fleetcast generate`) or copy it again.",
                    DATA_FILE_SECTION,
                )
            ) from exc


def open_source(table_or_path: pa.Table | str | Path) -> TableSource:
    """Open a pyarrow Table or a Parquet file (a directory means its server_metrics.parquet).

    Only the Parquet footer is read here. Raises DataFileError with a codex message when the
    path does not exist or is not a Parquet file, TypeError for anything else.
    """
    import pyarrow as pa

    if isinstance(table_or_path, pa.Table):
        return TableSource(table_or_path.schema, table_or_path.num_rows, "<table>", table_or_path)
    if isinstance(table_or_path, pa.RecordBatch):
        table = pa.Table.from_batches([table_or_path])
        return TableSource(table.schema, table.num_rows, "<batch>", table)
    if not isinstance(table_or_path, str | Path):
        raise TypeError(
            f"Expected a pyarrow.Table or the path of a Parquet file, got "
            f"{type(table_or_path).__name__}. Fix: convert a pandas DataFrame with "
            "pyarrow.Table.from_pandas(df, preserve_index=False)."
        )
    import pyarrow.parquet as pq

    path = Path(table_or_path)
    if path.is_dir() and (path / "server_metrics.parquet").exists():
        path = path / "server_metrics.parquet"
    others: list[Path] = []
    if path.is_dir():
        folder, path = path, path / "server_metrics.parquet"
        # Spark, Dask and pyarrow.dataset name their part files part-N… or part.N…, in
        # the folder or in key=value subfolders; a folder of whole files is not that.
        parts = sorted(folder.rglob("part[-.]*.parquet"))[:4]
        if parts:
            shown = ", ".join(str(p.relative_to(folder)) for p in parts[:3])
            combined = folder.parent / f"{folder.stem}_all.parquet"
            raise DataFileError(
                explain(
                    f"{folder} is a folder of Parquet part files ({shown}"
                    f"{', …' if len(parts) > 3 else ''}), not one file.",
                    "fleetcast reads one Parquet file, or a folder holding server_metrics.parquet.",
                    'combine the parts into one file, e.g. `python -c "import pyarrow.dataset '
                    f"as d, pyarrow.parquet as q; q.write_table(d.dataset({str(folder)!r})"
                    f'.to_table(), {str(combined)!r})"`, and pass that file.',
                    DATA_FILE_SECTION,
                )
            )
        others = sorted(folder.glob("*.parquet"))[:3]
    if not path.exists():
        held = f" (the folder holds {', '.join(p.name for p in others)})" if others else ""
        fix = "pass one of those files" if others else "check the path"
        raise DataFileError(
            explain(
                f"No such file: {path}{held}.",
                "there is nothing to validate.",
                f"{fix.capitalize()}, or create the data with `fleetcast generate "
                "--out-dir training/`.",
                DATA_FILE_SECTION,
            )
        )
    if not path.is_file():  # a named pipe or a device: reading it would wait for ever
        raise DataFileError(
            explain(
                f"{path} is not a regular file (a named pipe, a socket or a device).",
                "a Parquet file is read from its end (the footer); a stream has none, and "
                "reading it would wait for ever.",
                "Write the data to a file first and pass that file.",
                DATA_FILE_SECTION,
            )
        )
    try:
        meta = pq.read_metadata(path)
        schema = pq.read_schema(path)
    except PermissionError as exc:
        raise DataFileError(
            explain(
                f"{path} cannot be read: permission denied ({exc.strerror}).",
                "there is nothing to validate without reading it.",
                "Give the user running fleetcast read access to the file (and its folders), "
                "or copy it somewhere it can read.",
                DATA_FILE_SECTION,
            )
        ) from exc
    except (OSError, pa.ArrowException) as exc:
        raise DataFileError(
            explain(
                f"{path} is not a readable Parquet file ({exc}).",
                "fleetcast data is Parquet (codex: Parquet-first data).",
                "Write the table with pyarrow.parquet.write_table or `fleetcast generate`; "
                "convert a CSV with `fleetcast import csv FILE --out training/real.parquet` "
                "(docs/PROMETHEUS.md#csv).",
                DATA_FILE_SECTION,
            )
        ) from exc
    return TableSource(schema, meta.num_rows, str(path), None, path)


def null_mask(array: pa.Array) -> np.ndarray | None:
    """Bool array (rows,), True where ``array`` is null; None when it has no null.

    Read from the validity bitmap with numpy (pyarrow's ``to_numpy`` imports pandas,
    which costs most of a second and is absent on the appliance).
    """
    if array.null_count == 0:
        return None
    validity = array.buffers()[0]
    if validity is None:  # a null-type array: every row is null
        return np.ones(len(array), dtype=bool)
    bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
    return bits[array.offset : array.offset + len(array)] == 0


def numpy_values(array: pa.Array) -> np.ndarray:
    """Zero-copy numpy view (rows,) of a numeric or timestamp array's values.

    Values at null rows are undefined: combine with :func:`null_mask`.
    """
    import pyarrow as pa

    t = array.type
    if pa.types.is_timestamp(t) or pa.types.is_date64(t):
        dtype = np.dtype(np.int64)
    elif pa.types.is_floating(t):
        dtype = np.dtype(f"float{t.bit_width}")
    elif pa.types.is_signed_integer(t):
        dtype = np.dtype(f"int{t.bit_width}")
    elif pa.types.is_unsigned_integer(t):
        dtype = np.dtype(f"uint{t.bit_width}")
    else:
        raise TypeError(f"numpy_values needs a numeric or timestamp array, got {t}")
    data = array.buffers()[1]
    if data is None:
        return np.zeros(len(array), dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=array.offset + len(array))[array.offset :]


def dictionary_codes(column: pa.Array) -> tuple[np.ndarray, list[object]]:
    """Split a string (or dictionary) column into per-row codes and its distinct values.

    Returns ``(codes, values)``: ``codes`` is an int64 array of shape (rows,), -1 where the
    row is null; ``values[codes[i]]`` is row i's value (a value may itself be None when a
    dictionary holds a null).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    indices = column.indices
    codes = numpy_values(indices).astype(np.int64)
    null = null_mask(indices)
    if null is not None:
        codes[null] = -1
    return codes, column.dictionary.to_pylist()


def timestamp_values(column: pa.Array) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Raw integer timestamps of a timestamp column.

    Returns ``(values, null_mask, units_per_second)``: ``values`` int64 of shape (rows,)
    (0 where null), ``null_mask`` bool (rows,) or None when there is no null.
    """
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    per_second = _UNIT_PER_SECOND[column.type.unit]
    values = numpy_values(column)
    null = null_mask(column)
    if null is not None:
        values = np.where(null, 0, values)
    return values, null, per_second


def format_time(seconds: float) -> str:
    """ISO 8601 UTC text of epoch seconds, e.g. ``2026-11-27T10:05:00Z``."""
    from datetime import UTC, datetime

    try:
        return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f} s since 1970"
