"""Small contract-shaped fleets for tests and smoke runs (not the simulator).

:func:`make_toy_table` builds, in milliseconds, a few servers with a daily pattern, level
shifts, noise, null states, a gap and an offline stretch of constant zeros — the features
that broke earlier models — as an Arrow table in the contract schema. Realistic fleets come
from ``fleetcast generate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract.schema import STEP_SECONDS, arrow_schema

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DEFAULT_TOY_SERVERS", "make_toy_table"]

DEFAULT_TOY_SERVERS: tuple[tuple[str, str], ...] = (
    ("ppweb001", "web_api"),
    ("ppdb001", "database"),
    ("ppml0001", "ml_compute"),
    ("ppetl001", "data_ingest"),
)

_START = 1_767_225_600  # 2026-01-01T00:00:00Z, a multiple of the step


def make_toy_table(
    servers: tuple[tuple[str, str], ...] = DEFAULT_TOY_SERVERS,
    hours: float = 72,
    seed: int = 0,
    *,
    gap: bool = True,
    offline: bool = True,
    start_seconds: int = _START,
) -> pa.Table:
    """A contract table of ``len(servers)`` servers × ``hours`` of 5-minute steps.

    Each server: cpu = level + daily sine + noise with 1–2 level shifts; mem slowly drifting;
    disk_io heavy-tailed around a small median; latency following cpu. With ``gap``, the
    first server lacks 6 steps in the middle; with ``offline``, the second server reports
    zeros (state ``offline``) for 3 hours. About 5% of states are null.
    """
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    steps = int(hours * 3600 // STEP_SECONDS)
    t = np.arange(steps)
    seconds = start_seconds + t * STEP_SECONDS
    day = 2 * np.pi * (seconds % 86400) / 86400.0
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("ts", "name", "cpu", "mem", "disk", "lat", "state", "profile")
    }
    for i, (name, profile) in enumerate(servers):
        level = 15.0 + 50.0 * rng.random()
        shifts = np.zeros(steps)
        for _ in range(int(rng.integers(1, 3))):
            at = int(rng.integers(steps // 4, steps))
            shifts[at:] += rng.uniform(-12.0, 12.0)
        cpu = level + shifts + 10.0 * np.sin(day - i) + rng.normal(0.0, 2.0, steps)
        mem = 30.0 + 40.0 * rng.random() + np.cumsum(rng.normal(0.0, 0.05, steps)) + 0.3 * shifts
        disk = np.exp(rng.normal(np.log(0.05 + 2.0 * rng.random()), 0.5, steps))
        lat = 5.0 + 0.4 * np.clip(cpu, 0, None) + np.abs(rng.normal(0.0, 1.0, steps))
        state = np.where(cpu > 70, "heavy_load", np.where(cpu < 20, "idle", "healthy")).astype(
            object
        )
        if offline and i == 1:
            sl = slice(steps // 2, steps // 2 + 36)
            cpu[sl] = mem[sl] = disk[sl] = lat[sl] = 0.0
            state[sl] = "offline"
        state[rng.random(steps) < 0.05] = None
        keep = np.ones(steps, dtype=bool)
        if gap and i == 0:
            keep[steps // 3 : steps // 3 + 6] = False
        cols["ts"].append(seconds[keep])
        cols["name"].append(np.full(keep.sum(), name, dtype=object))
        cols["cpu"].append(np.clip(cpu, 0, 100)[keep])
        cols["mem"].append(np.clip(mem, 0, 100)[keep])
        cols["disk"].append(np.clip(disk, 0, None)[keep])
        cols["lat"].append(np.clip(lat, 0, None)[keep])
        cols["state"].append(state[keep])
        cols["profile"].append(np.full(keep.sum(), profile, dtype=object))
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    schema = arrow_schema()
    return pa.table(
        {
            "timestamp": pa.array(cat["ts"] * 1_000_000, pa.int64()).cast(
                schema.field("timestamp").type
            ),
            "server_name": pa.array(cat["name"].tolist(), pa.string()),
            "cpu_pct": pa.array(cat["cpu"], pa.float32()),
            "mem_pct": pa.array(cat["mem"], pa.float32()),
            "disk_io_mb_s": pa.array(cat["disk"], pa.float32()),
            "latency_ms": pa.array(cat["lat"], pa.float32()),
            "state": pa.array(cat["state"].tolist(), pa.string()),
            "profile": pa.array(cat["profile"].tolist(), pa.string()),
        },
        schema=schema,
    )
