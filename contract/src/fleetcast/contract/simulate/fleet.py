"""Fleet composition and server names: how many servers of each profile, and what they are called.

The codex fixes the default fleet (90 servers: web_api 25, ml_compute 20, database 15,
data_ingest 10, risk_analytics 8, generic 7, conductor_mgmt 5) and the naming convention
(ppml0001, ppdb001, ppweb001, ppcon01, ppetl001, pprisk001, ppgen001). Any other fleet
size keeps the proportions by largest-remainder rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetcast.contract.errors import ContractError
from fleetcast.contract.schema import PROFILE_NAME_PREFIXES, VALID_PROFILES

__all__ = [
    "CODEX_FLEET",
    "DEFAULT_FLEET_SIZE",
    "Fleet",
    "build_fleet",
    "fleet_composition",
    "server_names",
]

DEFAULT_FLEET_SIZE = 90

CODEX_FLEET: dict[str, int] = {
    "web_api": 25,
    "ml_compute": 20,
    "database": 15,
    "data_ingest": 10,
    "risk_analytics": 8,
    "generic": 7,
    "conductor_mgmt": 5,
}
"""The codex's default 90-server fleet; its proportions hold for every fleet size."""


def fleet_composition(n_servers: int) -> dict[str, int]:
    """Servers per profile for a fleet of ``n_servers``, in the codex proportions.

    Largest-remainder (Hamilton) rounding: every profile gets the floor of its exact
    share, the leftover servers go to the largest fractional remainders (ties broken by
    the codex order). ``fleet_composition(90)`` is exactly :data:`CODEX_FLEET`.
    """
    if isinstance(n_servers, bool) or not isinstance(n_servers, int) or n_servers < 1:
        raise ContractError(
            f"Invalid fleet size {n_servers!r}: expected a positive integer.",
            "the simulator needs at least one server to generate rows for.",
            "Pass --servers 90 (the codex default) or any positive integer.",
            "docs/SERVER_PROFILES.md#fleet-composition",
        )
    total = sum(CODEX_FLEET.values())
    exact = {p: n_servers * c / total for p, c in CODEX_FLEET.items()}
    counts = {p: int(v) for p, v in exact.items()}
    leftover = n_servers - sum(counts.values())
    order = sorted(CODEX_FLEET, key=lambda p: (-(exact[p] - counts[p]), list(CODEX_FLEET).index(p)))
    for profile in order[:leftover]:
        counts[profile] += 1
    return counts


def server_names(profile: str, count: int) -> list[str]:
    """Names of the first ``count`` servers of a profile: ``ppweb001`` … (digits widen past 999)."""
    prefix, min_digits = PROFILE_NAME_PREFIXES[profile]
    digits = max(min_digits, len(str(count)))
    return [f"{prefix}{k:0{digits}d}" for k in range(1, count + 1)]


@dataclass(frozen=True)
class Fleet:
    """A simulated fleet, servers sorted by name (the row order of every output).

    Shapes: every array is ``(n_servers,)``.
    """

    names: tuple[str, ...]
    """Server names, sorted lexicographically (within a profile that is numeric order)."""
    profiles: tuple[str, ...]
    """Profile of each server (always the one its name implies)."""
    profile_index: np.ndarray
    """Index of each server's profile in VALID_PROFILES, int64."""
    number: np.ndarray
    """Each server's number within its profile (ppweb007 -> 7), int64; part of its RNG key."""

    @property
    def size(self) -> int:
        """Number of servers."""
        return len(self.names)

    def counts(self) -> dict[str, int]:
        """Servers per profile, in VALID_PROFILES order."""
        return {p: int(np.sum(self.profile_index == i)) for i, p in enumerate(VALID_PROFILES)}


def build_fleet(n_servers: int = DEFAULT_FLEET_SIZE) -> Fleet:
    """The fleet of ``n_servers`` in codex proportions and names, sorted by name."""
    rows: list[tuple[str, str, int]] = []
    for profile, count in fleet_composition(n_servers).items():
        for k, name in enumerate(server_names(profile, count), start=1):
            rows.append((name, profile, k))
    rows.sort()
    return Fleet(
        names=tuple(r[0] for r in rows),
        profiles=tuple(r[1] for r in rows),
        profile_index=np.array([VALID_PROFILES.index(r[1]) for r in rows], dtype=np.int64),
        number=np.array([r[2] for r in rows], dtype=np.int64),
    )
