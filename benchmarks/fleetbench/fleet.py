"""Simulated fleets as the benchmarks consume them: raw windows, model inputs, frames.

One :class:`Fleet` of ``n`` servers holds ``steps`` 5-minute steps of the contract
simulator (time-major arrays, as :meth:`FleetSimulator.run` returns them). From it the
benchmarks cut the *same* windows for every contender: the last ``E`` steps of each server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetbench.model import SIM_START

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from fleetcast.contract.features import ModelInputs, ModelSpec

__all__ = ["Fleet", "simulate_fleet"]


@dataclass
class Fleet:
    """``n`` simulated servers × ``steps`` steps (the newest step is every window's last)."""

    names: list[str]
    profiles: list[str]
    timestamps: np.ndarray
    """(steps,) int64 epoch seconds."""
    metrics: np.ndarray
    """(steps, n, 4) float32 in contract metric order."""
    states: np.ndarray
    """(steps, n) int8 indices into the contract's VALID_STATES."""

    @property
    def n(self) -> int:
        """Number of servers."""
        return len(self.names)

    def servers(self, n: int) -> Fleet:
        """The first ``n`` servers (views, no copy)."""
        return Fleet(
            self.names[:n], self.profiles[:n], self.timestamps, self.metrics[:, :n],
            self.states[:, :n],
        )  # fmt: skip

    def steps(self, lo: int | None = None, hi: int | None = None) -> Fleet:
        """Steps ``lo:hi`` of every server (views, no copy)."""
        cut = slice(lo, hi)
        return Fleet(
            self.names, self.profiles, self.timestamps[cut], self.metrics[cut], self.states[cut]
        )

    def raw_windows(self, spec: ModelSpec) -> dict[str, Any]:
        """build_inputs' arguments for the last ``E`` steps of every server (full windows).

        For a model with day-ago inputs also ``day_ago`` (the fleet's steps are gap-free, so
        the value a lag before step ``k`` is row ``k - lag``; before the first row, the first).
        """
        from fleetcast.contract.features import encode_states
        from fleetcast.contract.schema import VALID_STATES

        e = spec.encoder_length
        if self.timestamps.shape[0] < e:
            raise ValueError(
                f"Expected at least {e} steps, but the fleet has {self.timestamps.shape[0]}."
            )
        values = np.ascontiguousarray(self.metrics[-e:].transpose(1, 0, 2), dtype=np.float64)
        names = np.asarray(VALID_STATES, dtype=object)[self.states[-e:].T]  # [B, E]
        states = encode_states(spec, names.ravel()).reshape(names.shape)
        last = int(self.timestamps[-1]) // spec.step_seconds
        extra = {}
        if spec.max_lag:
            k = self.timestamps.shape[0]
            rows = np.r_[np.arange(k - e, k), np.arange(k, k + spec.prediction_length)]
            lagged = self.metrics[np.maximum(rows - spec.max_lag, 0)]  # [E + D, n, 4]
            extra["day_ago"] = np.ascontiguousarray(lagged.transpose(1, 0, 2), dtype=np.float64)
        return {
            **extra,
            "values": values,
            "lengths": np.full(self.n, e, dtype=np.int64),
            "states": states,
            "profiles": list(self.profiles),
            "server_names": list(self.names),
            "last_time_idx": np.full(self.n, last, dtype=np.int64),
        }

    def model_inputs(self, spec: ModelSpec) -> ModelInputs:
        """The six graph inputs of the fleet's windows, by the numpy reference."""
        from fleetcast.contract.features import build_inputs

        raw = self.raw_windows(spec)
        return build_inputs(
            spec,
            raw["values"],
            raw["lengths"],
            raw["states"],
            raw["profiles"],
            raw["server_names"],
            raw["last_time_idx"],
            day_ago=raw.get("day_ago"),
        )

    def table(self, last_steps: int | None = None) -> pa.Table:
        """The contract table of the newest ``last_steps`` steps (all by default)."""
        from fleetcast.contract.schema import METRIC_COLUMNS
        from fleetcast.contract.simulate.batch import table_from_steps

        k = self.timestamps.shape[0] if last_steps is None else last_steps
        run = {"timestamp": self.timestamps[-k:], "state": self.states[-k:]}
        for j, col in enumerate(METRIC_COLUMNS):
            run[col] = self.metrics[-k:, :, j]
        return table_from_steps(self.names, self.profiles, run)

    def frame(self, last_steps: int | None = None) -> pd.DataFrame:
        """The trainer's prepared frame (pytorch-forecasting's input) of the newest steps."""
        from fleetcast.trainer.dataset import prepare_frame

        return prepare_frame(self.table(last_steps), unknown_server_fraction=0.0)


def simulate_fleet(n: int, steps: int, seed: int = 7) -> Fleet:
    """Simulate ``n`` servers for ``steps`` steps from the suite's fixed start."""
    from fleetcast.contract.schema import METRIC_COLUMNS
    from fleetcast.contract.simulate import FleetSimulator

    sim = FleetSimulator(n_servers=n, seed=seed, start=SIM_START + 86_400 * 7)
    run = sim.run(steps)
    metrics = np.stack([run[c] for c in METRIC_COLUMNS], axis=-1).astype(np.float32)
    return Fleet(
        names=list(sim.fleet.names),
        profiles=list(sim.fleet.profiles),
        timestamps=run["timestamp"].astype(np.int64),
        metrics=metrics,
        states=run["state"],
    )
