"""Demo scenarios change a share of the fleet, and only that share."""

from __future__ import annotations

import numpy as np
import pytest

from fleetcast.contract.schema import VALID_STATES
from fleetcast.contract.simulate.engine import FleetSimulator

from .conftest import START

CRITICAL = VALID_STATES.index("critical_issue")


def _pair() -> tuple[FleetSimulator, FleetSimulator]:
    a, b = FleetSimulator(90, 5, START + 9 * 3600), FleetSimulator(90, 5, START + 9 * 3600)
    a.run(12)
    b.run(12)
    return a, b


def test_degrading_ramps_a_fifth_of_the_fleet() -> None:
    base, degr = _pair()
    degr.set_scenario("degrading")
    affected = degr.scenario.degrading_servers()
    assert affected.sum() == 18
    rb, rd = base.run(36), degr.run(36)
    # The other 80 % are untouched, bit for bit (same random draws, no degradation).
    for key in ("cpu_pct", "latency_ms", "state"):
        assert np.array_equal(rb[key][:, ~affected], rd[key][:, ~affected])
    late = slice(24, 36)  # the third hour
    ratio = rd["latency_ms"][late][:, affected].mean() / rb["latency_ms"][late][:, affected].mean()
    assert ratio > 1.8
    assert (rd["cpu_pct"][late][:, affected] - rb["cpu_pct"][late][:, affected]).mean() > 10
    assert (rd["mem_pct"][late][:, affected] - rb["mem_pct"][late][:, affected]).mean() > 5


def test_critical_puts_a_tenth_into_incidents_and_more_degrading() -> None:
    base, crit = _pair()
    crit.set_scenario("critical")
    in_incident = crit.scenario.critical_servers()
    assert in_incident.sum() == 9
    assert crit.scenario.degrading_servers().sum() == 27  # the 10 % plus another 20 %
    rc, rb = crit.run(12), base.run(12)
    hit = (rc["state"] == CRITICAL).any(axis=0)
    assert hit[in_incident].all()
    assert (rc["state"][-1] == CRITICAL).sum() >= 9
    assert (rc["state"][-1] == CRITICAL).sum() > (rb["state"][-1] == CRITICAL).sum() + 5


def test_switching_back_to_healthy_fades_the_degradation() -> None:
    sim = FleetSimulator(90, 5, START)
    sim.set_scenario("critical")
    sim.run(24)
    assert sim.scenario.degradation.max() > 0.5
    sim.set_scenario("healthy")
    sim.run(48)
    assert sim.scenario.degradation.max() < 0.05
    assert not sim.scenario.critical_servers().any()


def test_unknown_scenario_is_refused_with_the_choices() -> None:
    sim = FleetSimulator(5, 1, START)
    with pytest.raises(ValueError, match=r"Unknown scenario 'panic'.*healthy, degrading, critical"):
        sim.set_scenario("panic")
