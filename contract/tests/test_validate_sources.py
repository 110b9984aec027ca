"""DataValidator's inputs: paths that are no Parquet file (a CSV, a folder of part files, a
folder of whole files, no access), and encodings of a column (a categorical's unused
categories)."""

from __future__ import annotations

import pytest

from fleetcast.contract import DataFileError, DataValidator


def test_unreadable_paths_raise_data_file_error(tmp_path):
    with pytest.raises(
        DataFileError, match=r"No such file: .*nope.parquet.*See docs/DATA_CONTRACT.md#files"
    ):
        DataValidator().validate_schema(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_text("timestamp,server_name\n")
    with pytest.raises(DataFileError, match=r"is not a readable Parquet file") as info:
        DataValidator().validate_schema(bad)
    assert "`fleetcast import csv FILE --out training/real.parquet`" in str(info.value)
    # A folder of part files (Spark, Dask), or a server_metrics.parquet that is one.
    parts = tmp_path / "server_metrics.parquet"
    parts.mkdir()
    for k in range(4):
        (parts / f"part-{k:05d}.snappy.parquet").write_bytes(b"PAR1")
    for given in (parts, tmp_path):
        with pytest.raises(DataFileError, match="is a folder of Parquet part files") as info:
            DataValidator().validate_schema(given)
        message = str(info.value)
        assert f"{parts} is a folder of Parquet part files (part-00000.snappy.parquet, " in message
        assert "combine the parts into one file" in message
        assert "snappy.parquet, …)" in message  # four parts, three shown
    # A folder of whole files (imports beside each other) is not a dataset of parts.
    imports = tmp_path / "imports"
    imports.mkdir()
    (imports / "real.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataFileError, match="No such file") as info:
        DataValidator().validate_schema(imports)
    assert "(the folder holds real.parquet)" in str(info.value)
    assert "Fix: Pass one of those files" in str(info.value)

    def denied(*_a: object, **_k: object) -> None:  # tests run as root: chmod cannot deny
        raise PermissionError(13, "Permission denied")

    import pyarrow.parquet as pq

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pq, "read_metadata", denied)
        with pytest.raises(DataFileError, match=r"cannot be read: permission denied.*read access"):
            DataValidator().validate_schema(bad)


def test_a_category_no_row_uses_is_not_a_value_of_the_table(tables, tmp_path):
    """A pandas categorical keeps the categories of rows filtered out: 'Healthy' rows were
    dropped as the error advised, and it still said "0 rows have a state outside"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tables.table(tables.columns())
    for name, extra in (("state", "Healthy"), ("profile", "legacy")):
        i = table.schema.get_field_index(name)
        values = table.column(name).to_pylist()
        kept = sorted({v for v in values if v is not None})
        dictionary = pa.array([*kept, extra], pa.string())
        indices = pa.array([None if v is None else kept.index(v) for v in values], pa.int32())
        column = pa.DictionaryArray.from_arrays(indices, dictionary)
        table = table.set_column(i, pa.field(name, column.type), column)
    path = tmp_path / "categorical.parquet"
    pq.write_table(table, path)
    for given in (table, path):
        report = DataValidator(strict=True).validate(given)
        assert report.is_valid, report.errors
    # A category that rows do use is still refused, with its count.
    values = table.column("state").to_pylist()
    kept = sorted({v for v in values if v is not None})
    dictionary = pa.array([*kept, "Healthy"], pa.string())
    codes = [None if v is None else kept.index(v) for v in values]
    codes[0] = len(kept)
    column = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), dictionary)
    bad = table.set_column(table.schema.get_field_index("state"), "state", column)
    (issue,) = [i for i in DataValidator().validate(bad).issues if i.rule == "valid-states"]
    assert "1 row has a state outside the contract: 'Healthy' (1 row)" in issue.what


def test_a_named_pipe_is_refused_instead_of_waiting_for_ever(tmp_path):
    import os

    fifo = tmp_path / "metrics.parquet"
    os.mkfifo(fifo)
    with pytest.raises(DataFileError, match="is not a regular file"):
        DataValidator().validate_schema(fifo)
