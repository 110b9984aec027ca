"""Risk history: per-server risk per forecast step and the fleet's risk trend (ring buffers).

Shapes: S = capacity servers, W = ring steps (the buffers' ring), F = fleet trend points.
Both rings are indexed by the data step a forecast was made from (``step % W`` / ``% F``),
so an entry is valid only where the stored step equals the wanted one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.appliance.forecast import iso

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["RiskHistory"]

_log = logging.getLogger(__name__)

_FLEET_KEYS = ("step", "mean_risk", "red", "yellow", "green")


class RiskHistory:
    """Preallocated rings: ``risk`` float32 (S, W) with ``risk_step`` int32 (S, W), and the
    fleet trend ``step``/``mean_risk``/``red``/``yellow``/``green`` (F,)."""

    def __init__(self, capacity: int, ring_steps: int, fleet_steps: int) -> None:
        self.ring_steps = int(ring_steps)
        # Lazily mapped zeros; a slot's empty marks (NaN, -1) are written when it is first
        # used (:meth:`initialise`), so a large capacity costs memory only as servers arrive.
        self.risk = np.zeros((capacity, ring_steps), dtype=np.float32)
        self.risk_step = np.zeros((capacity, ring_steps), dtype=np.int32)
        self._initialised = 0
        f = max(int(fleet_steps), 1)
        self.fleet = {
            "step": np.full(f, -1, dtype=np.int64),
            "mean_risk": np.zeros(f, dtype=np.float64),
            "red": np.zeros(f, dtype=np.int64),
            "yellow": np.zeros(f, dtype=np.int64),
            "green": np.zeros(f, dtype=np.int64),
        }

    def record(
        self,
        servers: np.ndarray,
        ends: np.ndarray,
        risk: np.ndarray,
        fleet_step: int,
        fleet: Mapping[str, Any],
    ) -> None:
        """Store one forecast: server slots (B,), their data steps (B,), risks (B,), the summary."""
        k = ends % self.ring_steps
        self.risk[servers, k] = risk
        self.risk_step[servers, k] = ends
        j = fleet_step % self.fleet["step"].shape[0]
        self.fleet["step"][j] = fleet_step
        for key in ("mean_risk", "red", "yellow", "green"):
            self.fleet[key][j] = fleet[key]

    def initialise(self, slots: int) -> None:
        """Write the empty marks of every server slot below ``slots`` not initialised yet
        (the engine calls it as it registers a server in a new slot)."""
        if slots > self._initialised:
            self.risk[self._initialised : slots] = np.nan
            self.risk_step[self._initialised : slots] = -1
            self._initialised = slots

    def clear(self, s: int) -> None:
        """Drop server slot ``s``'s risk history (a forgotten server's). The fleet trend keeps
        its points: they were the fleet as it was."""
        self.risk[s] = np.nan
        self.risk_step[s] = -1

    def server(self, s: int, wanted: np.ndarray) -> np.ndarray:
        """Risk of server ``s`` at data steps ``wanted`` (n,), NaN where no forecast was made."""
        slots = wanted % self.ring_steps
        return np.where(self.risk_step[s, slots] == wanted, self.risk[s, slots], np.nan)

    def fleet_trend(self, steps: int, step_seconds: int) -> dict[str, Any]:
        """The newest ``steps`` fleet points, oldest first (docs/API.md GET /fleet/history)."""
        fh = {k: v.copy() for k, v in self.fleet.items()}
        valid = np.flatnonzero(fh["step"] >= 0)
        order = valid[np.argsort(fh["step"][valid])][-max(int(steps), 1) :]
        return {
            "timestamps": [iso(t * step_seconds) for t in fh["step"][order].tolist()],
            "mean_risk": [round(float(x), 4) for x in fh["mean_risk"][order].tolist()],
            "red": fh["red"][order].tolist(),
            "yellow": fh["yellow"][order].tolist(),
            "green": fh["green"][order].tolist(),
        }

    def state_arrays(self, n: int) -> dict[str, np.ndarray]:
        """Copies for a snapshot (first ``n`` servers)."""
        out = {"risk": self.risk[:n].copy(), "risk_step": self.risk_step[:n].copy()}
        for k in _FLEET_KEYS:
            out[f"fleet_{k}"] = self.fleet[k].copy()
        return out

    def load_arrays(self, arrays: Mapping[str, np.ndarray], n: int) -> None:
        """Restore :meth:`state_arrays`; parts saved with other ring sizes are reset (and the
        reset logged as a warning when they held any history)."""
        self.initialise(n)
        risk = np.asarray(arrays.get("risk", np.zeros((0, 0))))
        if risk.shape == (n, self.ring_steps):
            self.risk[:n] = risk
            self.risk_step[:n] = arrays["risk_step"]
        else:
            saved = np.asarray(arrays.get("risk_step", np.zeros((0, 0))))
            servers = int((saved >= 0).any(axis=1).sum()) if saved.ndim == 2 else 0
            if servers:
                _log.warning(
                    "risk history of %d servers reset: it was saved for a ring of %d steps, "
                    "this appliance keeps %d (another --history-steps or model); "
                    "/history shows risk again from the next forecasts "
                    "(docs/OPERATIONS.md#state)",
                    servers,
                    saved.shape[1],
                    self.ring_steps,
                )
        reset = False
        for k in _FLEET_KEYS:
            saved = np.asarray(arrays.get(f"fleet_{k}", self.fleet[k]))
            if saved.shape == self.fleet[k].shape:
                self.fleet[k][:] = saved
            elif k == "step" and (saved >= 0).any():
                reset = True
        if reset:
            _log.warning(
                "fleet risk trend reset: it was saved with %d points, this appliance keeps %d "
                "(another risk history length); /fleet/history starts again from the next "
                "forecasts (docs/OPERATIONS.md#state)",
                np.asarray(arrays["fleet_step"]).shape[0],
                self.fleet["step"].shape[0],
            )
