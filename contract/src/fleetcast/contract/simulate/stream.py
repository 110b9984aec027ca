"""The live demo source: the same simulated fleet, one 5-minute step at a time.

>>> stream = FleetStream(n_servers=9, seed=7, start="2025-01-06T00:00:00Z")
>>> history = stream.backfill(288)          # 24 h, rows ordered step then server
>>> history["cpu_pct"].shape
(2592,)
>>> rows = stream.next_step()               # the next 5 minutes of every server
>>> int(rows["timestamp"][0]) - int(history["timestamp"][-1])
300
>>> stream.set_scenario("critical")         # takes effect from the next step

A stream started at ``start`` with a seed yields exactly the rows that
``fleetcast generate --start START --seed SEED`` writes for the same fleet size (the
batch file orders them server then time instead).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract.schema import STEP_SECONDS, VALID_STATES
from fleetcast.contract.simulate.engine import FleetSimulator, StepRows
from fleetcast.contract.simulate.fleet import DEFAULT_FLEET_SIZE

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa

__all__ = ["DEFAULT_BACKFILL_STEPS", "FleetStream", "columns_to_table"]

DEFAULT_BACKFILL_STEPS = 288
"""Without a start, a stream begins this many steps (24 h) before now, ready to backfill."""

Columns = dict[str, np.ndarray]


def _to_epoch(start: int | str | datetime | None) -> int:
    from fleetcast.contract.simulate.batch import parse_start

    if start is None:
        now = int(time.time()) // STEP_SECONDS * STEP_SECONDS
        return now - DEFAULT_BACKFILL_STEPS * STEP_SECONDS
    if isinstance(start, str):
        return parse_start(start)
    if isinstance(start, datetime):
        when = start if start.tzinfo else start.replace(tzinfo=UTC)
        return parse_start(when.isoformat())
    return int(start)


class FleetStream:
    """A simulated fleet that emits one step of rows per call. Not thread-safe.

    Columns returned by :meth:`next_step` and :meth:`backfill` (all numpy, one entry per
    row, rows ordered step then server): ``timestamp`` int64 epoch seconds (UTC, on the
    step grid), ``server_name`` and ``state`` and ``profile`` object arrays of str,
    ``cpu_pct``, ``mem_pct``, ``disk_io_mb_s``, ``latency_ms`` float32.
    """

    def __init__(
        self,
        n_servers: int = DEFAULT_FLEET_SIZE,
        seed: int = 42,
        start: int | str | datetime | None = None,
        scenario: str = "healthy",
        offline_mode: str = "dense",
    ) -> None:
        """``start``: epoch seconds, ISO-8601 or datetime of the first step (default now - 24 h)."""
        from fleetcast.contract.simulate.batch import check_offline_mode

        check_offline_mode(offline_mode)
        self._sim = FleetSimulator(n_servers, seed, _to_epoch(start), scenario)
        self._dense = offline_mode == "dense"
        self._names = np.array(self._sim.fleet.names, dtype=object)
        self._profiles = np.array(self._sim.fleet.profiles, dtype=object)
        self._states = np.array(VALID_STATES, dtype=object)
        self._offline = np.int8(VALID_STATES.index("offline"))

    @property
    def names(self) -> tuple[str, ...]:
        """Server names in row order within a step."""
        return self._sim.fleet.names

    @property
    def profiles(self) -> tuple[str, ...]:
        """Profile of each server, aligned with :attr:`names`."""
        return self._sim.fleet.profiles

    @property
    def scenario(self) -> str:
        """The active scenario."""
        return self._sim.scenario.name

    @property
    def next_timestamp(self) -> int:
        """Epoch seconds of the step the next call returns."""
        return self._sim.next_timestamp

    def set_scenario(self, name: str) -> None:
        """Switch to ``healthy``, ``degrading`` or ``critical`` from the next step on."""
        self._sim.set_scenario(name)

    def _columns(self, r: StepRows) -> Columns:
        keep = slice(None) if self._dense else r.state != self._offline
        n = self._names.shape[0]
        cols = {
            "timestamp": np.full(n, r.timestamp, dtype=np.int64),
            "server_name": self._names,
            "cpu_pct": r.cpu_pct,
            "mem_pct": r.mem_pct,
            "disk_io_mb_s": r.disk_io_mb_s,
            "latency_ms": r.latency_ms,
            "state": self._states[r.state],
            "profile": self._profiles,
        }
        return {k: v[keep].copy() for k, v in cols.items()}

    def next_step(self) -> Columns:
        """Advance one step and return its rows (one per server; offline ones too when dense)."""
        return self._columns(self._sim.step())

    def backfill(self, steps: int = DEFAULT_BACKFILL_STEPS) -> Columns:
        """Advance ``steps`` steps and return all their rows, ordered step then server."""
        parts = [self.next_step() for _ in range(int(steps))]
        if not parts:
            return {k: v[:0] for k, v in self._empty().items()}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _empty(self) -> Columns:
        text = np.empty(0, dtype=object)
        metric = np.empty(0, dtype=np.float32)
        return {
            "timestamp": np.empty(0, dtype=np.int64),
            "server_name": text,
            "cpu_pct": metric,
            "mem_pct": metric,
            "disk_io_mb_s": metric,
            "latency_ms": metric,
            "state": text,
            "profile": text,
        }

    def __iter__(self) -> Iterator[Columns]:
        return self

    def __next__(self) -> Columns:
        return self.next_step()


def columns_to_table(columns: Columns) -> pa.Table:
    """A contract pyarrow Table from stream columns (timestamps become UTC microseconds)."""
    import pyarrow as pa

    from fleetcast.contract.schema import arrow_schema

    arrays = [
        pa.array(
            columns["timestamp"].astype(np.int64) * 1_000_000, type=pa.timestamp("us", tz="UTC")
        ),
        pa.array(columns["server_name"].tolist(), pa.string()),
        pa.array(columns["cpu_pct"], pa.float32()),
        pa.array(columns["mem_pct"], pa.float32()),
        pa.array(columns["disk_io_mb_s"], pa.float32()),
        pa.array(columns["latency_ms"], pa.float32()),
        pa.array(columns["state"].tolist(), pa.string()),
        pa.array(columns["profile"].tolist(), pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=arrow_schema())
