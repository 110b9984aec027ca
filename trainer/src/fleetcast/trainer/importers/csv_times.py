"""The time column of a CSV export as epoch seconds, refused when it cannot be right.

- Numbers: epoch seconds, or milliseconds with ``--epoch-unit ms``. A unit that does not
  fit the values is refused: milliseconds read as seconds land after the year 5138, seconds
  read as milliseconds before 2001-09-09 (January 1970, in fact).
- Text: ISO 8601 with a zone offset; zone-less times only with ``--assume-utc``. A value
  that is no time at all is named with its row (and ``--assume-utc`` is not suggested).
- ``check_collapse``: times that pile up in a few 5-minute steps (a wrong unit or column)
  are refused instead of keeping one sample per step and losing the rest.

Empty times in a text or timestamp column stay NaN (dropped later, with their reason).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.errors import explain
from fleetcast.contract.schema import STEP_SECONDS
from fleetcast.trainer.importers.common import ImportFailure

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["check_collapse", "timestamps"]

_SEE = "docs/PROMETHEUS.md#csv"
_MS_FLOOR = 1e12
"""Epoch milliseconds of 2001-09-09: smaller "milliseconds" are epoch seconds."""
_S_CEIL = 1e11
"""Epoch seconds of the year 5138: larger "seconds" are milliseconds (or finer)."""
_DENSE = 100
"""More samples than this per server and step (one every 3 s) ..."""
_SHORT_S = 3600
"""... within less than this from a server's first to last sample: a collapse."""
_CHUNK = 4096
_NEEDS_TIME = "every record needs its time; the import will not guess one, nor drop rows silently."


def _row(i: int) -> str:
    return f"data row {i + 1:,} (line {i + 2:,} of the file)"


def _iso(epoch_s: float) -> str:
    try:
        return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{epoch_s:.0f} s"


def _try(arr: Any, typ: pa.DataType) -> Any:
    """``arr`` cast to ``typ``, or None when a value does not parse."""
    import pyarrow as pa

    try:
        return arr.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _numbers(arr: Any) -> np.ndarray:
    """float64 of a float or timestamp array (timestamps: their int64 count); null = NaN."""
    import pyarrow as pa

    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def _seconds(us: np.ndarray) -> np.ndarray:
    """Epoch seconds of microseconds: int64, or float64 with NaN where a time is empty."""
    out = np.floor_divide(us, 1_000_000)
    return out if np.isnan(out).any() else out.astype(np.int64)


def timestamps(col: pa.ChunkedArray, name: str, assume_utc: bool, epoch_unit: str) -> np.ndarray:
    """Epoch seconds of the time column ``col`` (named ``name``); ImportFailure if wrong."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(col.type):
        if col.type.tz is None and not assume_utc:
            valid = np.flatnonzero(pc.is_valid(col).to_numpy(zero_copy_only=False))
            i = int(valid[0]) if valid.size else 0
            raise _naive(name, str(col[i].as_py()), i, valid.size)
        us = pc.cast(col, pa.timestamp("us", tz=col.type.tz), safe=False)  # floored next
        return _seconds(_numbers(us))
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return _epoch(_numbers(col), name, epoch_unit)
    text = pc.cast(col, pa.string())
    values = _try(text, pa.float64())
    if values is not None:
        return _epoch(_numbers(values), name, epoch_unit)
    zoned = _try(text, pa.timestamp("us", tz="UTC"))
    if zoned is not None:
        return _seconds(_numbers(zoned))
    return _text_times(text.combine_chunks(), name, assume_utc)


def _epoch(values: np.ndarray, name: str, epoch_unit: str) -> np.ndarray:
    """Epoch seconds of numeric times in ``epoch_unit``; the unit checked against them."""
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ImportFailure(
            explain(
                f"Column {name!r} has {bad.size:,} empty or non-numeric times; the first "
                f"is in {_row(int(bad[0]))}.",
                _NEEDS_TIME,
                "Fill in or remove those rows in the export, or map another column with "
                "--map timestamp=CSV_COLUMN.",
                _SEE,
            )
        )
    if not values.size:
        return values.astype(np.int64)
    top = float(values.max())
    if epoch_unit == "ms" and top < _MS_FLOOR:
        raise ImportFailure(
            explain(
                f"Column {name!r} looks like epoch seconds; drop --epoch-unit ms. Read as "
                f"milliseconds its latest time ({top:.0f}) would be {_iso(top / 1000)}, "
                "before 2001.",
                "read as milliseconds, a day of 5-minute samples shrinks to 86 seconds of "
                "January 1970: almost every sample would be superseded in its step and lost.",
                "Drop --epoch-unit ms (epoch seconds are the default); keep it only for "
                "times like 1790000000000.",
                _SEE,
            )
        )
    seconds = values / 1000.0 if epoch_unit == "ms" else values
    if float(seconds.max()) > _S_CEIL:
        if epoch_unit == "ms":
            what = (
                f"Column {name!r} is too large even for epoch milliseconds (up to "
                f"{top:.0f}); it looks like microseconds or nanoseconds."
            )
            fix = "Export epoch seconds or milliseconds (or ISO 8601 with an offset)."
        else:
            what = f"Column {name!r} looks like epoch milliseconds (up to {top:.0f})."
            fix = "Pass --epoch-unit ms."
        raise ImportFailure(
            explain(what, "read as seconds they would land in the far future.", fix, _SEE)
        )
    return np.floor(seconds).astype(np.int64)


def _text_times(arr: pa.Array, name: str, assume_utc: bool) -> np.ndarray:
    """Epoch seconds of a text column that is neither all numbers nor all zoned ISO times."""
    import pyarrow as pa

    kind, us = _classify(arr, (pa.float64(), pa.timestamp("us", tz="UTC"), pa.timestamp("us")))
    bad = np.flatnonzero(kind == 3)
    if bad.size:
        i = int(bad[0])
        raise ImportFailure(
            explain(
                f"Column {name!r} holds {bad.size:,} value{'s' if bad.size > 1 else ''} that "
                f"{'are' if bad.size > 1 else 'is'} not a time; the first is "
                f"{arr[i].as_py()!r} in {_row(i)}.",
                _NEEDS_TIME,
                "Correct or remove that row in the export (a time is ISO 8601 with an offset, "
                "2026-11-27T10:00:00Z, or epoch seconds), or map another column with "
                "--map timestamp=CSV_COLUMN.",
                _SEE,
            )
        )
    nums, times = np.flatnonzero(kind == 0), np.flatnonzero((kind == 1) | (kind == 2))
    if nums.size:
        i, j = int(nums[0]), int(times[0])
        raise ImportFailure(
            explain(
                f"Column {name!r} mixes epoch numbers ({arr[i].as_py()!r} in {_row(i)}) and "
                f"ISO 8601 times ({arr[j].as_py()!r} in {_row(j)}).",
                "the import reads one kind of time per column and will not guess what the "
                "numbers mean.",
                "Export every time in one format: ISO 8601 with an offset, or epoch seconds.",
                _SEE,
            )
        )
    naive = np.flatnonzero(kind == 2)
    if naive.size and not assume_utc:
        i = int(naive[0])
        raise _naive(name, str(arr[i].as_py()), i, naive.size)
    return _seconds(us)


def _classify(arr: pa.Array, types: tuple[pa.DataType, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per value: the index of the first of ``types`` it parses as (len(types): none; -1:
    empty) and that parse as float64. Whole chunks at a time; value by value only in a
    chunk that no type parses as a whole."""
    import pyarrow.compute as pc

    n = len(arr)
    kind = np.full(n, len(types), dtype=np.int8)
    values = np.full(n, np.nan)

    def fill(part: pa.Array, at: int) -> bool:
        for k, typ in enumerate(types):
            got = _try(part, typ)
            if got is not None:
                kind[at : at + len(part)] = k
                values[at : at + len(part)] = _numbers(got)
                return True
        return False

    for lo in range(0, n, _CHUNK):
        part = arr.slice(lo, _CHUNK)
        if not fill(part, lo):
            for i in range(len(part)):
                fill(part.slice(i, 1), lo + i)
    kind[~pc.is_valid(arr).to_numpy(zero_copy_only=False)] = -1
    return kind, values


def _naive(name: str, value: str, row: int, count: int) -> ImportFailure:
    return ImportFailure(
        explain(
            f"Column {name!r} holds times without a zone offset ({count:,}; the first is "
            f"{value!r} in {_row(row)}).",
            "the contract is UTC and a local time would shift every step.",
            "Export with an offset (2026-11-27T10:00:00Z), or pass --assume-utc if they are UTC.",
            _SEE,
        )
    )


def check_collapse(ts: np.ndarray, names: np.ndarray, name: str, epoch_unit: str) -> None:
    """ImportFailure when the times pile up: for most servers, more than ``_DENSE`` samples
    per 5-minute step *and* under ``_SHORT_S`` seconds from first to last sample.

    A wrong unit or column does that (a day of epoch seconds read as milliseconds is 86 s).
    A real export with samples faster than the step does not: every minute is 5 per
    step, every second 300 but then over hours; it is bucketed as usual (last wins).
    """
    t = np.asarray(ts, dtype=np.float64)
    ok = np.isfinite(t)
    t, srv = t[ok], np.asarray(names)[ok].astype(str)
    if not t.size:
        return
    uniq, inv = np.unique(srv, return_inverse=True)
    rows = np.bincount(inv, minlength=len(uniq))
    step = np.floor(t / STEP_SECONDS)
    order = np.lexsort((step, inv))
    inv_o, step_o = inv[order], step[order]
    new = np.ones(order.size, dtype=bool)
    new[1:] = (inv_o[1:] != inv_o[:-1]) | (step_o[1:] != step_o[:-1])
    steps = np.bincount(inv_o[new], minlength=len(uniq))
    lo, hi = np.full(len(uniq), np.inf), np.full(len(uniq), -np.inf)
    np.minimum.at(lo, inv, t)
    np.maximum.at(hi, inv, t)
    collapsed = (steps * _DENSE < rows) & (hi - lo < _SHORT_S)
    if int(collapsed.sum()) * 2 <= len(uniq):
        return
    n_rows, n_steps = int(rows[collapsed].sum()), int(steps[collapsed].sum())
    raise ImportFailure(
        explain(
            f"The times in column {name!r} collapse: {n_rows:,} samples of "
            f"{int(collapsed.sum())} of {len(uniq)} servers fall into only {n_steps:,} "
            f"5-minute steps, under an hour per server ({_iso(t.min())} .. {_iso(t.max())}).",
            "the import keeps one sample per server and step (the last), so "
            f"{n_rows - n_steps:,} of them would be superseded and lost. Times this dense "
            "and this short mean a wrong time unit or column; the import refuses when most "
            f"servers have over {_DENSE} samples per step within under an hour. Ordinary "
            "sampling faster than the step (every minute: 4 of 5 superseded) is imported.",
            f"Check --map timestamp=CSV_COLUMN and --epoch-unit (now {epoch_unit}). If the "
            "export really holds under an hour of samples every few seconds, export a "
            "longer period: training needs hours to days of history.",
            _SEE,
        )
    )
