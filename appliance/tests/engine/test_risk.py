"""Risk math on hand-computed quantiles, thresholds per profile, levels and the fleet summary."""

from __future__ import annotations

import numpy as np
import pytest

from fleetcast.appliance.forecast import clean_quantiles
from fleetcast.appliance.risk import (
    DEFAULT_THRESHOLDS,
    Thresholds,
    driver_horizons,
    exceedance_probability,
    fleet_summary,
    horizon_probabilities,
    level_of,
    levels_of,
    risk_of,
)
from fleetcast.contract.schema import VALID_PROFILES

LEVELS = (0.1, 0.5, 0.9)


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.0, 1.0),  # far below p10: lower tail clipped
        (5.0, 1.0),  # tail: F = 0.1 + 0.04 * (5 - 10) = -0.1 -> 0
        (7.5, 1.0),  # F = 0
        (8.0, 0.98),  # F = 0.1 - 0.04*2 = 0.02
        (10.0, 0.9),
        (15.0, 0.7),  # F = 0.1 + 0.4 * 5/10
        (20.0, 0.5),
        (30.0, 0.3),  # F = 0.5 + 0.4 * 10/20
        (40.0, 0.1),
        (42.5, 0.05),  # upper tail slope 0.02
        (45.0, 0.0),
        (90.0, 0.0),
    ],
)
def test_exceedance_probability_by_hand(threshold: float, expected: float) -> None:
    q = np.array([10.0, 20.0, 40.0])
    assert exceedance_probability(q, LEVELS, threshold) == pytest.approx(expected, abs=1e-12)


def test_exceedance_broadcasts_and_handles_zero_width() -> None:
    q = np.array([[[50.0, 50.0, 50.0], [80.0, 90.0, 95.0]]])  # (1, 2, 3)
    p = exceedance_probability(q, LEVELS, np.array([[49.0, 92.5]]))
    assert p.shape == (1, 2)
    assert p[0, 0] == pytest.approx(1.0)  # a near-certain 50 exceeds 49
    assert p[0, 1] == pytest.approx(0.3)  # 0.5 + 0.4 * 2.5/5 = 0.7
    assert exceedance_probability(q[0, 0], LEVELS, 50.1) == pytest.approx(0.0)


def test_horizon_is_the_max_over_steps_up_to_it() -> None:
    steps = np.zeros((1, 96))
    steps[0, 3] = 0.4  # within 30min (step 4)
    steps[0, 10] = 0.6  # within 1hr
    steps[0, 50] = 0.9  # within 8hr
    got = horizon_probabilities(steps, [6, 12, 96])
    np.testing.assert_allclose(got, [[0.4, 0.6, 0.9]])


def test_thresholds_are_per_metric_and_profile_and_overridable() -> None:
    th = Thresholds()
    assert th.of("web_api", "latency_ms") == 1000.0
    assert th.of("database", "latency_ms") == 200.0
    assert th.of("ml_compute", "latency_ms") == 500.0
    assert th.of("database", "disk_io_mb_s") > 4 * th.of("web_api", "disk_io_mb_s")
    assert th.of("web_api", "cpu_pct") == 90.0
    assert th.of("ml_compute", "cpu_pct") == 100.0
    assert th.of("database", "mem_pct") == 97.0
    assert th.of("conductor_mgmt", "mem_pct") == 90.0
    custom = Thresholds({"latency_ms": {"database": 80}, "cpu_pct": 85})
    assert custom.of("database", "latency_ms") == 80.0
    assert custom.of("web_api", "latency_ms") == DEFAULT_THRESHOLDS["latency_ms"]["web_api"]
    assert custom.of("ml_compute", "cpu_pct") == 85.0
    codes = np.array([VALID_PROFILES.index("database"), VALID_PROFILES.index("web_api")])
    assert custom.for_profiles(codes)[:, 3].tolist() == [80.0, 1000.0]
    with pytest.raises(ValueError, match="Unknown profile 'dbase'"):
        Thresholds({"latency_ms": {"dbase": 1}})
    with pytest.raises(ValueError, match="positive number"):
        Thresholds({"cpu_pct": {"default": -3}})
    with pytest.raises(ValueError, match="positive number"):
        Thresholds({"cpu_pct": {"database": True}})  # TOML `true` is not 1.0
    with pytest.raises(ValueError, match="Unknown metric"):
        Thresholds({"gpu_pct": 50})


def test_same_forecast_is_red_for_a_database_and_green_for_ml_compute() -> None:
    q = np.zeros((2, 4, 96, 3), dtype=np.float64)
    q[:, 0] = [10, 20, 30]  # cpu well below 90
    q[:, 1] = [10, 20, 30]
    q[:, 2] = [1, 2, 3]
    q[:, 3] = [250, 300, 380]  # latency ms: far above database's 200, below ml's 500
    prof = np.array([VALID_PROFILES.index("database"), VALID_PROFILES.index("ml_compute")])
    r = risk_of(q, LEVELS, Thresholds().for_profiles(prof), [6, 12, 96])
    assert r.risk.tolist() == [pytest.approx(1.0), pytest.approx(0.0)]
    assert r.by_horizon.shape == (2, 4, 3)
    assert level_of(r.risk[0]) == "red"
    assert level_of(r.risk[1]) == "green"


def test_levels_follow_the_codex() -> None:
    assert [level_of(p) for p in (0.0, 0.29, 0.3, 0.7, 0.71, 1.0)] == [
        "green",
        "green",
        "yellow",
        "yellow",
        "red",
        "red",
    ]


def test_levels_are_decided_on_unrounded_risks() -> None:
    """0.70003 is shown as 0.7 but is red, as the fleet summary counts it; 0.29996 is
    shown as 0.3 but is green. The vectorised levels agree with the scalar rule."""
    risks = np.array([0.0, 0.29996, 0.3, 0.7, 0.70003, 1.0])
    assert levels_of(risks) == [level_of(float(p)) for p in risks]
    assert levels_of(risks) == ["green", "green", "yellow", "yellow", "red", "red"]
    assert fleet_summary(risks[:, None], ["web_api"] * 6, ["8hr"])["red"] == 2
    assert levels_of(np.array([0.5]), warning=0.6, critical=0.8) == ["green"]


def test_driver_horizons_are_the_first_horizon_at_the_warning_level() -> None:
    by_h = np.array([[[0.1, 0.3, 0.9], [0.0, 0.1, 0.29996], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]])
    assert driver_horizons(by_h, 0.3).tolist() == [[1, -1, 0, -1]]


def test_fleet_summary_values() -> None:
    srv = np.array([[0.1, 0.2, 0.5], [0.0, 0.0, 0.1], [0.5, 0.8, 0.9]])
    out = fleet_summary(srv, ["web_api", "web_api", "database"], ["30min", "1hr", "8hr"])
    assert (out["servers"], out["green"], out["yellow"], out["red"]) == (3, 1, 1, 1)
    assert out["mean_risk"] == pytest.approx(0.5)
    assert out["incident_probability"]["30min"] == pytest.approx(1 - 0.9 * 1.0 * 0.5)
    assert out["incident_probability"]["8hr"] == pytest.approx(1 - 0.5 * 0.9 * 0.1)
    assert out["by_profile"]["web_api"] == {
        "servers": 2,
        "green": 1,
        "yellow": 1,
        "red": 0,
        "mean_risk": pytest.approx(0.3),
    }
    empty = fleet_summary(np.zeros((0, 3)), [], ["30min", "1hr", "8hr"])
    assert empty["servers"] == 0
    assert empty["incident_probability"]["8hr"] == 0.0


def test_clean_quantiles_clamps_and_orders() -> None:
    q = np.array(
        [[[[105.0, 90.0, 95.0]], [[-2.0, 1.0, 3.0]], [[5.0, 4.0, np.nan]], [[1e3, 2e3, 3e3]]]],
        dtype=np.float32,
    )
    out = clean_quantiles(q)
    assert out[0, 0, 0].tolist() == [90.0, 95.0, 100.0]
    assert out[0, 1, 0].tolist() == [0.0, 1.0, 3.0]
    assert out[0, 2, 0].tolist() == [0.0, 4.0, 5.0]
    assert out[0, 3, 0].tolist() == [1e3, 2e3, 3e3]


@pytest.mark.parametrize(
    "q", [[95.0, 100.0, 100.0], [100.0, 100.0, 100.0], [90.0, 99.99995, 100.0]]
)
def test_a_forecast_clamped_at_100_is_at_most_0_1_above_100(q: list[float]) -> None:
    """A saturated batch server's CPU forecast is clamped at 100 (p50 = p90 = 100): its
    threshold of 100 must not colour it (docs/RISK.md#thresholds: P(X > 100) <= 0.1).
    The near-step of a collapsed segment ends at its value, so F(100) = 0.9, not 0.5."""
    p = float(exceedance_probability(np.array(q), LEVELS, 100.0))
    assert p == pytest.approx(0.1, abs=1e-6)
    prof = np.array([VALID_PROFILES.index("ml_compute")])
    quant = np.zeros((1, 4, 96, 3))
    quant[:, 0] = q
    r = risk_of(quant, LEVELS, Thresholds().for_profiles(prof), [6, 12, 96])
    assert level_of(float(r.risk[0])) == "green"


def test_a_point_forecast_is_a_step_at_its_value() -> None:
    q = np.array([50.0, 50.0, 50.0])
    got = [float(exceedance_probability(q, LEVELS, t)) for t in (49.0, 50.0, 50.1)]
    assert got == [pytest.approx(1.0), pytest.approx(0.1, abs=1e-6), pytest.approx(0.0)]
