"""Contract tables the validator accepts, read by the trainer and the exporter in forms
pyarrow's compute functions and pandas take (fleetcast.contract.tables)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fleetcast.contract.simulate.batch import write_training_data
from fleetcast.contract.tables import normalized, read_contract_columns
from fleetcast.contract.validate import DataValidator

if TYPE_CHECKING:
    from pathlib import Path


def _recast(table: pa.Table, name: str, kind: pa.DataType) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, pa.field(name, kind), table.column(i).cast(kind))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    out = tmp_path_factory.mktemp("fleet")
    return pq.read_table(write_training_data(out, n_servers=3, hours=24).data_path)


@pytest.mark.parametrize("zone", ["Z", "utc", "Etc/UTC", "GMT", "+00:00"])
def test_string_views_and_utc_aliases_read_as_the_contracts_own_types(
    fleet: pa.Table, tmp_path: Path, zone: str
) -> None:
    """Polars writes string views, other tools a UTC alias zone: both passed validation,
    then the trainer's to_pandas failed ("zoneinfo module or pytz package must be
    installed") and a sampled read's is_in raised ArrowNotImplementedError."""
    unit = fleet.schema.field("timestamp").type.unit
    odd = _recast(
        _recast(fleet, "server_name", pa.string_view()), "timestamp", pa.timestamp(unit, zone)
    )
    path = tmp_path / "odd.parquet"
    pq.write_table(odd, path)
    assert DataValidator(strict=True).validate(path).is_valid
    names = sorted(set(fleet.column("server_name").to_pylist()))
    picked = read_contract_columns(path, names[:2])
    assert picked.schema.field("server_name").type == pa.string()
    assert picked.schema.field("timestamp").type == pa.timestamp(unit, "UTC")
    assert sorted(set(picked.column("server_name").to_pylist())) == names[:2]
    assert picked.num_rows == 2 * fleet.num_rows // 3
    whole = read_contract_columns(path)
    assert whole.column("timestamp").to_pylist() == fleet.column("timestamp").to_pylist()
    frame = normalized(odd).to_pandas()
    assert str(frame["timestamp"].dt.tz) == "UTC"


def test_normalized_leaves_the_contracts_own_types_alone(fleet: pa.Table) -> None:
    assert normalized(fleet) is fleet
    unit = fleet.schema.field("timestamp").type.unit
    berlin = _recast(fleet, "timestamp", pa.timestamp(unit, "Europe/Berlin"))
    assert normalized(berlin).schema.field("timestamp").type.tz == "Europe/Berlin"


def test_a_dictionary_name_column_is_filtered_as_it_is_read(
    fleet: pa.Table, tmp_path: Path
) -> None:
    """A pandas categorical's names: the filter stays pushed down (a sampled read of a large
    file must not hold the whole file)."""
    path = tmp_path / "dict.parquet"
    pq.write_table(_recast(fleet, "server_name", pa.dictionary(pa.int32(), pa.string())), path)
    names = sorted(set(fleet.column("server_name").to_pylist()))
    picked = read_contract_columns(path, names[1:2])
    assert set(picked.column("server_name").to_pylist()) == {names[1]}
    assert picked.num_rows == fleet.num_rows // 3
