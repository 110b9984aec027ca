"""What the metrics look like: units, ranges, ramps before incidents, level shifts, tails."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract.schema import VALID_PROFILES

if TYPE_CHECKING:
    from .conftest import Week


def test_metrics_are_finite_and_in_range(week: Week) -> None:
    m = week.metrics
    for name, a in m.items():
        assert a.dtype == np.float32
        assert np.isfinite(a).all(), name
        assert a.min() >= 0.0, name
    assert m["cpu_pct"].max() <= 100.0
    assert m["mem_pct"].max() <= 100.0


def test_levels_are_in_real_units_per_profile(week: Week) -> None:
    idx = week.sim.fleet.profile_index
    healthy = week.states == "healthy"

    def med(metric: str, profile: str) -> float:
        cols = idx == VALID_PROFILES.index(profile)
        return float(np.median(week.metrics[metric][:, cols][healthy[:, cols]]))

    assert med("mem_pct", "database") > med("mem_pct", "web_api") + 15  # buffer caches
    assert med("latency_ms", "risk_analytics") > med("latency_ms", "database") * 4
    assert med("disk_io_mb_s", "data_ingest") > med("disk_io_mb_s", "web_api") * 4
    assert 5 < med("cpu_pct", "web_api") < 60
    assert 2 < med("latency_ms", "database") < 40


def test_disk_io_is_heavy_tailed(week: Week) -> None:
    disk = week.metrics["disk_io_mb_s"][week.states != "offline"]
    assert np.median(disk) < 0.5 * disk.mean()
    assert np.percentile(disk, 99.9) > 20 * np.median(disk)


def test_business_hours_plateau_and_weekend(week: Week) -> None:
    cols = week.sim.fleet.profile_index == VALID_PROFILES.index("web_api")
    cpu = week.metrics["cpu_pct"][:, cols].mean(axis=1).reshape(7, 288)
    day_hours = cpu[:5, 10 * 12 : 16 * 12].mean()
    night = cpu[:5, 1 * 12 : 5 * 12].mean()
    weekend = cpu[5:, 10 * 12 : 16 * 12].mean()
    assert day_hours > 2.5 * night
    assert day_hours > 1.8 * weekend


def test_nightly_batch_for_data_ingest(week: Week) -> None:
    cols = week.sim.fleet.profile_index == VALID_PROFILES.index("data_ingest")
    cpu = week.metrics["cpu_pct"][:, cols].mean(axis=1).reshape(7, 288)
    assert cpu[:, 2 * 12 : 4 * 12].mean() > 1.5 * cpu[:, 20 * 12 : 23 * 12].mean()
    heavy = (week.states[:, cols] == "heavy_load").reshape(7, 288, -1).mean(axis=(0, 2))
    assert heavy[2 * 12 : 4 * 12].mean() > 0.7


def test_load_raises_latency(week: Week) -> None:
    healthy = week.states == "healthy"
    cols = week.sim.fleet.profile_index == VALID_PROFILES.index("web_api")
    cpu = week.metrics["cpu_pct"][:, cols][healthy[:, cols]]
    lat = week.metrics["latency_ms"][:, cols][healthy[:, cols]]
    assert np.corrcoef(cpu, lat)[0, 1] > 0.3


def test_metrics_ramp_up_before_critical(week: Week) -> None:
    """In the hour before critical_issue, metrics sit above the server's normal level."""
    above = {"latency_ms": 0, "cpu_pct": 0}
    ratios = []
    runs = [r for r in week.runs("critical_issue") if r[1] >= 300]
    for server, first, _ in runs:
        normal_mask = week.states[first - 288 : first - 24, server] == "healthy"
        for metric in above:
            series = week.metrics[metric][:, server]
            normal = np.median(series[first - 288 : first - 24][normal_mask])
            before = series[first - 12 : first].mean()
            above[metric] += before > normal
            if metric == "latency_ms":
                ratios.append(before / normal)
    assert len(runs) >= 10
    assert above["latency_ms"] >= 0.9 * len(runs)
    assert above["cpu_pct"] >= 0.6 * len(runs)
    assert np.median(ratios) > 1.5
    # ... and the ramp rises: the last 15 minutes are above the 45-60 minutes before.
    rising = 0
    for server, first, _ in runs:
        lat = week.metrics["latency_ms"][:, server]
        rising += lat[first - 3 : first].mean() > lat[first - 12 : first - 9].mean()
    assert rising >= 0.8 * len(runs)


def test_level_shifts_persist(week: Week) -> None:
    """Memory jumps by several points in one step and stays there (a deploy, a cache)."""
    smooth = np.isin(
        week.sim.fleet.profile_index,
        [VALID_PROFILES.index(p) for p in ("web_api", "database", "generic", "risk_analytics")],
    )
    mem = week.metrics["mem_pct"][:, smooth]
    calm = (week.states[:, smooth] == "healthy") | (week.states[:, smooth] == "idle")
    shifts = 0
    for s in range(mem.shape[1]):
        x = mem[:, s]
        for t in np.nonzero(np.abs(np.diff(x)) > 6.0)[0] + 1:
            if t < 12 or t + 12 > len(x) or not calm[t - 12 : t + 12, s].all():
                continue
            before, after = x[t - 12 : t].mean(), x[t : t + 12].mean()
            if abs(after - before) > 4.0 and np.sign(after - before) == np.sign(x[t] - x[t - 1]):
                shifts += 1
    servers = mem.shape[1]
    assert shifts >= 0.5 * servers  # at least one persistent shift per two servers per week


def test_persistence_beats_seasonal_naive_short_term_not_long_term(week: Week) -> None:
    """Real traces: the last value wins at 5 minutes, yesterday's value holds up at 8 hours."""
    cpu = week.metrics["cpu_pct"]
    y1, last = cpu[289:], cpu[288:-1]
    y96, last96 = cpu[288 + 96 :], cpu[288:-96]
    seasonal = cpu[96:-288]
    assert np.abs(y1 - last).mean() < 0.5 * np.abs(cpu[288:] - cpu[:-288]).mean()
    assert np.abs(y96 - last96).mean() > np.abs(y96 - seasonal).mean()
