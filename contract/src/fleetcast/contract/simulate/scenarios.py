"""Demo scenarios: healthy, degrading, critical — each changes a fixed share of the fleet.

* ``healthy``: the fleet's ordinary life (its own incidents, batch jobs, maintenance).
* ``degrading``: 20 % of the servers slowly ramp towards trouble (time constant about
  2 hours): CPU, memory, disk and latency creep up and their incident rate rises.
* ``critical``: 10 % of the servers go into incidents now (a 15-30 minute ramp, then
  critical_issue, and again after each recovery while the scenario lasts), and another
  20 % degrade as above.

Which servers are affected is fixed per seed (a per-server key drawn from the server's
own seed), so ``degrading`` then ``critical`` escalates the same servers. Switching back
to ``healthy`` lets running incidents finish and degradation fade (about an hour).
"""

from __future__ import annotations

import numpy as np

from fleetcast.contract.errors import explain

__all__ = ["CRITICAL_SHARE", "DEGRADING_SHARE", "SCENARIOS", "ScenarioState", "check_scenario"]

SCENARIOS: tuple[str, ...] = ("healthy", "degrading", "critical")
DEGRADING_SHARE = 0.20
"""Share of the fleet that degrades in ``degrading`` (and additionally in ``critical``)."""
CRITICAL_SHARE = 0.10
"""Share of the fleet driven into incidents in ``critical``."""

_RISE_STEPS = 24.0  # degradation approaches its target with a 2-hour time constant
_FADE_STEPS = 12.0  # and fades with a 1-hour one


def check_scenario(name: str) -> str:
    """Return ``name`` if it is a scenario, else raise ValueError saying which exist."""
    if name not in SCENARIOS:
        raise ValueError(
            explain(
                f"Unknown scenario {name!r}: expected one of {', '.join(SCENARIOS)}.",
                "the demo switches the simulated fleet between exactly these three scenarios.",
                "Pick healthy, degrading or critical.",
                "docs/SERVER_PROFILES.md#scenarios",
            )
        )
    return name


class ScenarioState:
    """The active scenario and each server's degradation level. Arrays ``(n_servers,)``."""

    def __init__(self, rank: np.ndarray, scenario: str = "healthy") -> None:
        """``rank``: a permutation of 0..n-1; servers with the lowest ranks are affected first."""
        n = rank.shape[0]
        self.rank = rank
        self.n_critical = round(CRITICAL_SHARE * n)
        self.n_degrading = round(DEGRADING_SHARE * n)
        self.degradation = np.zeros(n, dtype=np.float32)
        self.name = check_scenario(scenario)

    def set(self, name: str) -> None:
        """Switch scenario; takes effect from the next step."""
        self.name = check_scenario(name)

    def critical_servers(self) -> np.ndarray:
        """Servers driven into incidents while ``critical`` is active (bool mask)."""
        if self.name != "critical":
            return np.zeros(self.rank.shape, dtype=bool)
        return self.rank < self.n_critical

    def degrading_servers(self) -> np.ndarray:
        """Servers whose degradation target is 1 under the active scenario (bool mask)."""
        if self.name == "degrading":
            return self.rank < self.n_degrading
        if self.name == "critical":
            return self.rank < self.n_critical + self.n_degrading
        return np.zeros(self.rank.shape, dtype=bool)

    def step(self) -> tuple[np.ndarray, np.ndarray]:
        """Advance degradation one step; return (degradation 0..1, force_incident mask)."""
        target = self.degrading_servers().astype(np.float32)
        rate = np.where(target > self.degradation, 1.0 / _RISE_STEPS, 1.0 / _FADE_STEPS)
        self.degradation = (self.degradation + (target - self.degradation) * rate).astype(
            np.float32
        )
        return self.degradation, self.critical_servers()
