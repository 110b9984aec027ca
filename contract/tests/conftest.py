"""Shared fixtures of the contract tests: small contract tables built column by column."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fleetcast.contract import STEP_SECONDS, arrow_schema, profile_from_name

START_S = 1_767_225_600  # 2026-01-01T00:00:00Z, a step boundary
"""First timestamp of the test tables, in epoch seconds."""


class Tables:
    """Builds valid contract tables and variations of them."""

    start_s = START_S

    def columns(
        self, servers: tuple[str, ...] = ("ppml0001", "ppdb001", "ppweb001"), steps: int = 12
    ) -> dict[str, list[Any]]:
        """Valid columns as Python lists: every server at every step, sorted by time then server."""
        cols: dict[str, list[Any]] = {name: [] for name in arrow_schema().names}
        for k in range(steps):
            for i, name in enumerate(servers):
                cols["timestamp"].append((START_S + k * STEP_SECONDS) * 1_000_000)
                cols["server_name"].append(name)
                cols["cpu_pct"].append(10.0 + i + k)
                cols["mem_pct"].append(40.0 + k)
                cols["disk_io_mb_s"].append(2.5 * (i + 1))
                cols["latency_ms"].append(20.0 + i)
                cols["state"].append("healthy" if k % 5 else None)
                cols["profile"].append(profile_from_name(name))
        return cols

    def table(self, cols: dict[str, list[Any]] | None = None, **types: pa.DataType) -> pa.Table:
        """A table of ``cols`` with the contract types, except the ``types`` given."""
        cols = self.columns() if cols is None else cols
        schema = arrow_schema()
        arrays = {}
        for name, values in cols.items():
            if name in types:
                t = types[name]
            elif name in schema.names:
                t = schema.field(name).type
            else:
                t = None
            if name == "timestamp" and t is not None and pa.types.is_timestamp(t):
                micros = pa.array(values, pa.int64()).cast(pa.timestamp("us", tz=t.tz))
                arrays[name] = micros.cast(t)
            else:
                arrays[name] = pa.array(values, t)
        return pa.table(arrays)

    def row(self, cols: dict[str, list[Any]], index: int) -> dict[str, Any]:
        """Row ``index`` of ``cols`` as a dict."""
        return {k: v[index] for k, v in cols.items()}

    def append(self, cols: dict[str, list[Any]], row: dict[str, Any]) -> None:
        """Append one row to ``cols`` in place."""
        for k, v in row.items():
            cols[k].append(v)

    def delete(self, cols: dict[str, list[Any]], index: int) -> None:
        """Delete row ``index`` of ``cols`` in place."""
        for values in cols.values():
            del values[index]

    def numpy_columns(self, n: int = 4) -> dict[str, np.ndarray]:
        """Valid record columns for validate_columns, ``n`` records."""
        return {
            "timestamp": np.full(n, float(START_S)),
            "server_name": np.array([f"ppml{i:04d}" for i in range(n)], dtype=object),
            "cpu_pct": np.linspace(0, 100, n),
            "mem_pct": np.full(n, 50.0),
            "disk_io_mb_s": np.full(n, 3.0, dtype=np.float32),
            "latency_ms": np.full(n, 12.0),
            "state": np.array(
                ["healthy", None, "offline", "recovery"][:n] * (n // 4 + 1), dtype=object
            )[:n],
            "profile": np.array(["ml_compute"] * n, dtype=object),
        }


@pytest.fixture
def tables() -> Tables:
    """Factory of contract tables for one test."""
    return Tables()
