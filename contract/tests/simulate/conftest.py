"""Shared simulated fleets for the simulator tests (computed once per session, seconds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from fleetcast.contract.schema import VALID_STATES
from fleetcast.contract.simulate.engine import FleetSimulator

START = 1_736_121_600
"""2025-01-06T00:00:00Z, a Monday."""


@dataclass
class Week:
    """A 90-server week: metric arrays (steps, servers), states as str, the simulator."""

    sim: FleetSimulator
    metrics: dict[str, np.ndarray]
    states: np.ndarray
    timestamps: np.ndarray

    def runs(self, state: str) -> list[tuple[int, int, int]]:
        """(server, first step, length) of every run of ``state`` that starts and ends inside."""
        out = []
        mask = self.states == state
        for i in range(mask.shape[1]):
            d = np.diff(np.r_[0, mask[:, i].astype(np.int8), 0])
            starts, ends = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]
            out += [
                (i, int(s), int(e - s))
                for s, e in zip(starts, ends, strict=True)
                if s > 0 and e < mask.shape[0]
            ]
        return out


@pytest.fixture(scope="session")
def week() -> Week:
    sim = FleetSimulator(90, seed=42, start=START)
    run = sim.run(7 * 288)
    states = np.array(VALID_STATES)[run["state"]]
    metrics = {k: run[k] for k in ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")}
    return Week(sim, metrics, states, run["timestamp"])
