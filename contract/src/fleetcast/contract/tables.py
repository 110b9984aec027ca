"""Contract tables in the forms pyarrow's compute functions and pandas read.

The validator accepts some encodings of a contract column that the trainer's and the
exporter's readers did not: a ``string_view`` name column (Polars writes them) broke
pyarrow's ``is_in`` filter with ``ArrowNotImplementedError``, and a timestamp zone named by
one of UTC's aliases (``Z``, ``utc``, ``Etc/UTC``, ``GMT``) failed ``to_pandas()`` with "The
zoneinfo module or pytz package must be installed". :func:`normalized` casts those to
``string`` and ``UTC`` (the same values); :func:`read_contract_columns` reads a Parquet
file's contract columns through it, optionally only some servers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcast.contract._table_checks import is_utc_name
from fleetcast.contract.schema import REQUIRED_COLUMNS

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

    import pyarrow as pa

__all__ = ["normalized", "read_contract_columns"]


def normalized(table: pa.Table) -> pa.Table:
    """``table`` with string views as strings and a UTC alias zone as ``UTC`` (no copy of
    the data where nothing changes)."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        kind = field.type
        if pa.types.is_string_view(kind):
            target: pa.DataType = pa.string()
        elif pa.types.is_timestamp(kind) and kind.tz and kind.tz != "UTC" and is_utc_name(kind.tz):
            target = pa.timestamp(kind.unit, "UTC")
        else:
            continue
        table = table.set_column(i, field.with_type(target), table.column(i).cast(target))
    return table


def read_contract_columns(path: str | Path, servers: Collection[str] | None = None) -> pa.Table:
    """The contract's columns of the Parquet file at ``path`` (of ``servers`` only when
    given), :func:`normalized`. The server filter is pushed down to the file's row groups,
    except for a ``string_view`` name column (read whole, then filtered)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    dataset = pads.dataset(str(path), format="parquet")
    columns = list(REQUIRED_COLUMNS)
    if servers is None:
        return normalized(dataset.to_table(columns=columns))
    wanted = pa.array(sorted(servers), pa.string())
    kind = dataset.schema.field("server_name").type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not pa.types.is_string_view(kind):  # pushed down: only the rows wanted are read
        return normalized(
            dataset.to_table(columns=columns, filter=pc.field("server_name").isin(wanted))
        )
    table = normalized(dataset.to_table(columns=columns))  # no is_in kernel for views
    return table.filter(pc.is_in(table.column("server_name"), value_set=wanted))
