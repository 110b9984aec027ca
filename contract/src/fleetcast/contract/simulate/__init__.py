"""The fleet simulator: realistic server metrics for training (batch) and the live demo (stream).

numpy + pyarrow only. See docs/SERVER_PROFILES.md for what each profile does.

>>> from fleetcast.contract.simulate import FleetStream, simulate_table
>>> table = simulate_table(n_servers=10, hours=24, seed=1, start=1_736_121_600)
>>> table.num_rows
2880
"""

from __future__ import annotations

from fleetcast.contract.simulate.batch import (
    DATA_FILE,
    METADATA_FILE,
    MIN_HOURS,
    OFFLINE_MODES,
    SIMULATOR_VERSION,
    GenerationResult,
    simulate_table,
    write_training_data,
)
from fleetcast.contract.simulate.engine import FleetSimulator
from fleetcast.contract.simulate.fleet import CODEX_FLEET, build_fleet, fleet_composition
from fleetcast.contract.simulate.scenarios import SCENARIOS
from fleetcast.contract.simulate.stream import FleetStream, columns_to_table

__all__ = [
    "CODEX_FLEET",
    "DATA_FILE",
    "METADATA_FILE",
    "MIN_HOURS",
    "OFFLINE_MODES",
    "SCENARIOS",
    "SIMULATOR_VERSION",
    "FleetSimulator",
    "FleetStream",
    "GenerationResult",
    "build_fleet",
    "columns_to_table",
    "fleet_composition",
    "simulate_table",
    "write_training_data",
]
