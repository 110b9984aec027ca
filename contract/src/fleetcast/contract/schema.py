"""The data contract as code: columns, states, profiles, ranges, the step and horizons.

docs/DATA_CONTRACT.md is the law; this module mirrors it. Change the document first,
bump CONTRACT_VERSION, then change this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "CONTRACT_DOC",
    "CONTRACT_VERSION",
    "DEFAULT_ENCODER_STEPS",
    "DEFAULT_PREDICTION_STEPS",
    "END_EPOCH_S",
    "FLOAT32_MAX",
    "HORIZONS",
    "METRIC_COLUMNS",
    "METRIC_RANGES",
    "METRIC_UNITS",
    "PROFILE_NAME_PREFIXES",
    "REQUIRED_COLUMNS",
    "STEP_SECONDS",
    "VALID_PROFILES",
    "VALID_STATES",
    "arrow_schema",
    "doc_ref",
]

CONTRACT_VERSION = "1.2.0"
"""Semantic version of docs/DATA_CONTRACT.md. Models record it; a major mismatch is refused."""

CONTRACT_DOC = "docs/DATA_CONTRACT.md"

REQUIRED_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "server_name",
    "cpu_pct",
    "mem_pct",
    "disk_io_mb_s",
    "latency_ms",
    "state",
    "profile",
)

METRIC_COLUMNS: tuple[str, ...] = ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")
"""The four forecast targets, in this order everywhere (tensors, metadata, API)."""

METRIC_UNITS: dict[str, str] = {
    "cpu_pct": "percent",
    "mem_pct": "percent",
    "disk_io_mb_s": "MB/s",
    "latency_ms": "ms",
}

METRIC_RANGES: dict[str, tuple[float, float]] = {
    "cpu_pct": (0.0, 100.0),
    "mem_pct": (0.0, 100.0),
    "disk_io_mb_s": (0.0, float("inf")),
    "latency_ms": (0.0, float("inf")),
}
"""Inclusive valid range of each metric, in its own unit."""

END_EPOCH_S = 253_370_764_800
"""9999-01-01T00:00:00Z: times from it on (and their forecast horizons) cannot be written
as ISO dates, so no fleetcast program accepts or writes them."""

FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32. Metrics are stored as float32, so a float64 beyond it is
infinity there: not a finite value (docs/DATA_CONTRACT.md#non-finite-values)."""

VALID_STATES: tuple[str, ...] = (
    "critical_issue",
    "healthy",
    "heavy_load",
    "idle",
    "maintenance",
    "morning_spike",
    "offline",
    "recovery",
)
"""Exactly 8 states (codex). A null state means "unknown" (live data without a state)."""

VALID_PROFILES: tuple[str, ...] = (
    "ml_compute",
    "database",
    "web_api",
    "conductor_mgmt",
    "data_ingest",
    "risk_analytics",
    "generic",
)
"""Exactly 7 profiles (codex)."""

PROFILE_NAME_PREFIXES: dict[str, tuple[str, int]] = {
    "ml_compute": ("ppml", 4),
    "database": ("ppdb", 3),
    "web_api": ("ppweb", 3),
    "conductor_mgmt": ("ppcon", 2),
    "data_ingest": ("ppetl", 3),
    "risk_analytics": ("pprisk", 3),
    "generic": ("ppgen", 3),
}
"""Naming convention per profile: prefix and the minimum number of digits (ppml0001)."""

STEP_SECONDS = 300
"""One model step is 5 minutes; every length in fleetcast is a number of steps."""

HORIZONS: dict[str, int] = {"30min": 6, "1hr": 12, "8hr": 96}
"""Reported horizons in steps after the last observed step."""

DEFAULT_ENCODER_STEPS = 96
"""Default encoder (context) length: 8 h. The default training adds day-ago inputs, so its
models also read one day (288 steps) further back (docs/DATA_CONTRACT.md#step)."""

DEFAULT_PREDICTION_STEPS = 96
"""Default prediction length: 8 h (the longest reported horizon)."""


def doc_ref(section: str) -> str:
    """Return the reference an error message ends with, e.g. ``See docs/DATA_CONTRACT.md#states``."""
    return f"See {CONTRACT_DOC}#{section}."


def arrow_schema() -> pa.Schema:
    """The Arrow schema of a contract table (timestamps in UTC, microsecond precision)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("server_name", pa.string(), nullable=False),
            pa.field("cpu_pct", pa.float32(), nullable=False),
            pa.field("mem_pct", pa.float32(), nullable=False),
            pa.field("disk_io_mb_s", pa.float32(), nullable=False),
            pa.field("latency_ms", pa.float32(), nullable=False),
            pa.field("state", pa.string(), nullable=True),
            pa.field("profile", pa.string(), nullable=False),
        ],
        metadata={b"fleetcast.contract_version": CONTRACT_VERSION.encode()},
    )
