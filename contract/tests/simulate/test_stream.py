"""The live stream: deterministic, contract-valid, the same process as batch generation."""

from __future__ import annotations

import numpy as np
import pytest

from fleetcast.contract.schema import arrow_schema
from fleetcast.contract.simulate.batch import simulate_table
from fleetcast.contract.simulate.stream import FleetStream, columns_to_table

from .conftest import START

METRICS = ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")


def test_backfill_equals_the_batch_file() -> None:
    stream = FleetStream(n_servers=20, seed=11, start=START)
    cols = stream.backfill(24 * 12)
    table = simulate_table(n_servers=20, hours=24, seed=11, start=START)
    n = 20
    for metric in METRICS:
        batch = table[metric].to_numpy().reshape(n, -1)  # server-major
        live = cols[metric].reshape(-1, n).T  # step-major
        assert np.array_equal(batch, live), metric
    assert (
        cols["state"].reshape(-1, n).T.tolist()
        == table["state"].to_numpy(zero_copy_only=False).reshape(n, -1).tolist()
    )


def test_steps_continue_the_backfill_exactly() -> None:
    a = FleetStream(n_servers=12, seed=4, start="2025-01-06T00:00:00Z")
    b = FleetStream(n_servers=12, seed=4, start=START)
    whole = b.backfill(150)
    head = a.backfill(100)
    tail = [a.next_step() for _ in range(50)]
    for metric in (*METRICS, "timestamp"):
        joined = np.concatenate([head[metric], *[t[metric] for t in tail]])
        assert np.array_equal(joined, whole[metric]), metric


def test_stream_columns_are_cheap_and_typed() -> None:
    stream = FleetStream(n_servers=9, seed=1, start=START)
    assert stream.next_timestamp == START
    rows = stream.next_step()
    assert set(rows) == {
        "timestamp",
        "server_name",
        "cpu_pct",
        "mem_pct",
        "disk_io_mb_s",
        "latency_ms",
        "state",
        "profile",
    }
    assert rows["timestamp"].dtype == np.int64
    assert np.all(rows["timestamp"] == START)
    assert rows["cpu_pct"].dtype == np.float32
    assert list(rows["server_name"]) == list(stream.names)
    assert list(rows["profile"]) == list(stream.profiles)
    assert stream.next_timestamp == START + 300
    nxt = next(iter(stream))
    assert np.all(nxt["timestamp"] == START + 300)


def test_stream_is_deterministic_and_contract_valid() -> None:
    from fleetcast.contract.validate import DataValidator

    a = FleetStream(n_servers=30, seed=8, start=START, scenario="critical").backfill(60)
    b = FleetStream(n_servers=30, seed=8, start=START, scenario="critical").backfill(60)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    table = columns_to_table(a)
    assert table.schema.equals(arrow_schema())
    ok, errors, _ = DataValidator(strict=True).validate_schema(table)
    assert ok, errors


def test_scenario_switch_while_streaming() -> None:
    stream = FleetStream(n_servers=90, seed=3, start=START + 10 * 3600)
    stream.backfill(12)
    assert stream.scenario == "healthy"
    stream.set_scenario("critical")
    stream.backfill(12)
    rows = stream.next_step()
    assert (rows["state"] == "critical_issue").sum() >= 9
    with pytest.raises(ValueError, match="Unknown scenario"):
        stream.set_scenario("chaos")


def test_default_start_is_a_day_before_now_on_the_grid() -> None:
    import time

    stream = FleetStream(n_servers=3, seed=1)
    assert stream.next_timestamp % 300 == 0
    assert abs(time.time() - 86_400 - stream.next_timestamp) < 600


def test_backfill_zero_steps_is_empty() -> None:
    cols = FleetStream(n_servers=3, seed=1, start=START).backfill(0)
    assert all(len(v) == 0 for v in cols.values())
    assert columns_to_table(cols).num_rows == 0
