"""Batch output: the contract table, the three files, determinism, validation."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fleetcast.contract.encoder import ServerEncoder
from fleetcast.contract.schema import CONTRACT_VERSION, VALID_PROFILES, VALID_STATES, arrow_schema
from fleetcast.contract.simulate.batch import (
    parse_start,
    simulate_table,
    write_training_data,
)

from .conftest import START

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return simulate_table(n_servers=20, hours=48, seed=11, start=START)


def test_schema_is_exactly_the_contract(table: pa.Table) -> None:
    assert table.schema.equals(arrow_schema(), check_metadata=True)
    assert table.num_rows == 20 * 48 * 12
    assert all(col.null_count == 0 for col in table.columns)


def test_rows_are_sorted_by_server_then_time_on_the_step_grid(table: pa.Table) -> None:
    names = table["server_name"].to_numpy(zero_copy_only=False)
    ts = table["timestamp"].cast(pa.int64()).to_numpy()
    assert list(names) == sorted(names)
    per_server = ts.reshape(20, -1)
    assert np.all(per_server[:, 0] == START * 1_000_000)
    assert np.all(np.diff(per_server, axis=1) == 300 * 1_000_000)
    assert np.all(ts % (300 * 1_000_000) == 0)
    assert table.schema.field("timestamp").type.tz == "UTC"


def test_values_states_and_profiles_are_valid(table: pa.Table) -> None:
    for column in ("cpu_pct", "mem_pct"):
        assert pc.min(table[column]).as_py() >= 0.0
        assert pc.max(table[column]).as_py() <= 100.0
    for column in ("disk_io_mb_s", "latency_ms"):
        assert pc.min(table[column]).as_py() >= 0.0
    assert set(pc.unique(table["state"]).to_pylist()) <= set(VALID_STATES)
    assert set(pc.unique(table["profile"]).to_pylist()) <= set(VALID_PROFILES)


def test_generated_data_passes_the_strict_validator(table: pa.Table) -> None:
    from fleetcast.contract.validate import DataValidator

    ok, errors, warnings = DataValidator(strict=True).validate_schema(table)
    assert ok, errors
    assert errors == []
    assert warnings == []


def test_sparse_offline_mode_drops_offline_rows() -> None:
    dense = simulate_table(n_servers=90, hours=72, seed=2, start=START)
    sparse = simulate_table(n_servers=90, hours=72, seed=2, start=START, offline_mode="sparse")
    offline = pc.sum(pc.equal(dense["state"], "offline")).as_py()
    assert offline > 0
    assert sparse.num_rows == dense.num_rows - offline
    assert "offline" not in pc.unique(sparse["state"]).to_pylist()


def test_write_training_data_writes_three_files(tmp_path: Path) -> None:
    result = write_training_data(tmp_path, n_servers=14, hours=24, seed=3, start=START)
    data = pq.read_table(tmp_path / "server_metrics.parquet")
    assert data.schema.equals(arrow_schema())
    assert data.num_rows == result.rows == 14 * 288
    meta = json.loads((tmp_path / "metrics_metadata.json").read_text())
    assert meta["contract_version"] == CONTRACT_VERSION
    assert meta["seed"] == 3
    assert meta["servers"] == 14
    assert meta["hours"] == 24
    assert meta["start"] == "2025-01-06T00:00:00Z"
    assert meta["end"] == "2025-01-06T23:55:00Z"
    assert meta["rows"] == 14 * 288
    assert sum(meta["profile_counts"].values()) == 14
    assert sum(meta["state_counts"].values()) == 14 * 288
    assert meta["row_order"] == ["server_name", "timestamp"]
    mapping = ServerEncoder.load(tmp_path)
    assert set(mapping.names) == set(pc.unique(data["server_name"]).to_pylist())


def test_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    a = write_training_data(tmp_path / "a", n_servers=10, hours=24, seed=9, start=START)
    b = write_training_data(tmp_path / "b", n_servers=10, hours=24, seed=9, start=START)
    c = write_training_data(tmp_path / "c", n_servers=10, hours=24, seed=10, start=START)
    assert a.data_path.read_bytes() == b.data_path.read_bytes()
    assert a.data_path.read_bytes() != c.data_path.read_bytes()


def test_hours_below_a_day_are_refused() -> None:
    with pytest.raises(ValueError, match=r"--hours 23 is below the minimum of 24.*Fix"):
        simulate_table(n_servers=5, hours=23, seed=1, start=START)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-06T00:00:00Z", START),
        ("2025-01-06T01:05:00+00:00", START + 3900),
        ("2025-01-06T02:05:00+01:00", START + 3900),
    ],
)
def test_parse_start(text: str, expected: int) -> None:
    assert parse_start(text) == expected


@pytest.mark.parametrize(
    ("text", "message"), [("yesterday", "not an ISO-8601"), ("2025-01-06T00:01:00Z", "not aligned")]
)
def test_parse_start_refuses_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_start(text)


def test_sparse_metadata_and_problem_children(tmp_path: Path) -> None:
    result = write_training_data(
        tmp_path, n_servers=90, hours=72, seed=2, start=START, offline_mode="sparse"
    )
    meta = result.metadata
    assert meta["state_counts"]["offline"] == 0
    assert set(meta["state_counts"]) == set(VALID_STATES)
    assert sum(meta["state_counts"].values()) == meta["rows"] < 90 * 72 * 12
    assert len(meta["problem_children"]) == 9
    assert pq.read_metadata(result.data_path).num_rows == meta["rows"]


def test_unknown_offline_mode_is_refused(tmp_path: Path) -> None:
    from fleetcast.contract.simulate.stream import FleetStream

    with pytest.raises(ValueError, match="Unknown offline mode 'gaps'"):
        write_training_data(
            tmp_path, n_servers=3, hours=24, seed=1, start=START, offline_mode="gaps"
        )
    with pytest.raises(ValueError, match="Unknown offline mode 'gaps'"):
        FleetStream(n_servers=3, seed=1, start=START, offline_mode="gaps")
    assert not (tmp_path / "server_metrics.parquet").exists()


def test_large_fleets_are_written_in_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleetcast.contract.simulate import batch

    monkeypatch.setattr(batch, "ROW_GROUP_ROWS", 1000)
    result = write_training_data(tmp_path, n_servers=10, hours=24, seed=4, start=START)
    meta = pq.read_metadata(result.data_path)
    assert meta.num_row_groups == 4  # 3 servers (864 rows) per group
    whole = simulate_table(n_servers=10, hours=24, seed=4, start=START)
    assert pq.read_table(result.data_path).equals(whole)


def test_generate_merges_the_folders_server_mapping_and_refuses_an_unreadable_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An import's servers stay in the folder's mapping when generate writes there; the
    data file it replaces is logged."""
    ServerEncoder(["ppdb001", "ppetl001"]).save(tmp_path)
    first = write_training_data(tmp_path, n_servers=2, hours=24, seed=3, start=START)
    with caplog.at_level("WARNING", logger="fleetcast.contract.simulate.batch"):
        write_training_data(tmp_path, n_servers=2, hours=24, seed=3, start=START)
    assert "replacing" in caplog.text
    generated = set(pc.unique(pq.read_table(first.data_path)["server_name"]).to_pylist())
    assert set(ServerEncoder.load(tmp_path).names) == generated | {"ppdb001", "ppetl001"}
    (tmp_path / "server_mapping.json").write_text("{not json")
    before = first.data_path.read_bytes()
    with pytest.raises(
        ValueError, match=r"cannot be read as a server mapping.*nothing was written"
    ):
        write_training_data(tmp_path, n_servers=2, hours=24, seed=4, start=START)
    assert first.data_path.read_bytes() == before


def test_runs_too_long_or_too_late_are_refused_with_the_right_flag() -> None:
    with pytest.raises(ValueError, match=r"--hours 100000000 is more than the simulator writes"):
        write_training_data("unused", hours=100_000_000, start=START)
    late = parse_start("9999-12-31T00:00:00Z")
    with pytest.raises(ValueError, match=r"48 hours from its start, past the year 9999.*--start"):
        write_training_data("unused", hours=48, start=late)
