"""The contract constants: the codex's exact lists and numbers."""

from __future__ import annotations

import pyarrow as pa

from fleetcast.contract import (
    CONTRACT_VERSION,
    DEFAULT_ENCODER_STEPS,
    HORIZONS,
    METRIC_COLUMNS,
    REQUIRED_COLUMNS,
    STEP_SECONDS,
    VALID_PROFILES,
    VALID_STATES,
    arrow_schema,
)
from fleetcast.contract.schema import doc_ref


def test_exact_lists():
    assert len(VALID_STATES) == 8
    assert len(set(VALID_STATES)) == 8
    assert len(VALID_PROFILES) == 7
    assert REQUIRED_COLUMNS == (
        "timestamp",
        "server_name",
        "cpu_pct",
        "mem_pct",
        "disk_io_mb_s",
        "latency_ms",
        "state",
        "profile",
    )
    assert REQUIRED_COLUMNS[2:6] == METRIC_COLUMNS


def test_time():
    assert STEP_SECONDS == 300
    assert HORIZONS == {"30min": 6, "1hr": 12, "8hr": 96}
    assert all(
        steps * STEP_SECONDS == s
        for steps, s in zip(HORIZONS.values(), (1800, 3600, 28800), strict=True)
    )
    assert DEFAULT_ENCODER_STEPS * STEP_SECONDS == 8 * 3600


def test_arrow_schema():
    schema = arrow_schema()
    assert schema.names == list(REQUIRED_COLUMNS)
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("state").nullable
    assert not schema.field("profile").nullable
    assert schema.metadata[b"fleetcast.contract_version"] == CONTRACT_VERSION.encode()
    assert doc_ref("states") == "See docs/DATA_CONTRACT.md#states."
