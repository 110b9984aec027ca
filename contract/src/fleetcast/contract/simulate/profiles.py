"""Per-profile baselines: levels in real units, weekly load shapes, batch windows, incident rates.

Every number here is documented in docs/SERVER_PROFILES.md (keep the two in step).
Time of day is UTC; a week starts Monday 00:00. The load shape of a profile is a
piecewise curve with plateaus and abrupt edges (business hours, lunch, nightly jobs,
hourly micro-batches), not a sine wave.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetcast.contract.schema import STEP_SECONDS, VALID_PROFILES

__all__ = [
    "PROFILE_SPECS",
    "STEPS_PER_DAY",
    "STEPS_PER_WEEK",
    "ProfileSpec",
    "WeeklyTables",
    "build_weekly_tables",
]

STEPS_PER_DAY = 86_400 // STEP_SECONDS
STEPS_PER_WEEK = 7 * STEPS_PER_DAY

Knots = tuple[tuple[float, float], ...]
"""(hour of day, load 0..1) points of a piecewise-linear day curve; equal hours make a step."""


@dataclass(frozen=True)
class ProfileSpec:
    """Baseline behaviour of one profile. Utilisations are fractions (0..1) of a CPU."""

    cpu_floor: float
    """CPU utilisation at load 0 (night)."""
    cpu_peak: float
    """CPU utilisation at load 1 (busiest regular hour)."""
    batch_boost: float
    """CPU utilisation added while a batch job runs (state heavy_load)."""
    mem_base: float
    """Memory percent at load 0."""
    mem_load: float
    """Memory percent added at load 1."""
    disk_median: float
    """Typical disk throughput in MB/s at load 1 (the median; the mean is far higher)."""
    batch_disk: float
    """Disk throughput multiplier while a batch job runs."""
    latency_ms: float
    """Request latency in ms of an unloaded server."""
    latency_coupling: float
    """How strongly CPU load raises latency: latency × (1 + c · u/(1-u))."""
    weekday: Knots
    """Load shape Monday to Friday."""
    weekend: Knots
    """Load shape Saturday and Sunday."""
    batch_hours: tuple[float, float] | None
    """Nightly batch window [start, end) in hours (end may pass midnight), or None."""
    batch_weekdays_only: bool
    """Whether the batch window runs only Monday to Friday."""
    hourly_spike: float
    """Load added in the first 10 minutes of every hour (micro-batches, scheduler ticks)."""
    business: bool
    """Business-hours profile: morning_spike at 08:00 on weekdays, idle at night."""
    incidents_per_day: float
    """Incident rate of an ordinary server (problem children have many more)."""
    level_shifts_per_day: float
    """Rate of abrupt level shifts (deploys, job mix changes, cache warm-ups)."""


PROFILE_SPECS: dict[str, ProfileSpec] = {
    "web_api": ProfileSpec(
        cpu_floor=0.06, cpu_peak=0.52, batch_boost=0.30, mem_base=42.0, mem_load=16.0,
        disk_median=3.0, batch_disk=2.0, latency_ms=45.0, latency_coupling=0.6,
        weekday=((0, .12), (6, .12), (7, .35), (8, .75), (8.5, 1.0), (10, .92), (12, .92),
                 (12, .78), (13.5, .78), (13.5, .95), (17, .9), (18, .55), (20, .38),
                 (22, .22), (24, .12)),
        weekend=((0, .1), (9, .12), (11, .3), (17, .28), (20, .2), (24, .1)),
        batch_hours=None, batch_weekdays_only=False, hourly_spike=0.0, business=True,
        incidents_per_day=0.04, level_shifts_per_day=0.6,
    ),
    "ml_compute": ProfileSpec(
        cpu_floor=0.08, cpu_peak=0.40, batch_boost=0.48, mem_base=50.0, mem_load=22.0,
        disk_median=25.0, batch_disk=2.5, latency_ms=12.0, latency_coupling=0.3,
        weekday=((0, .3), (9, .3), (9, .65), (18, .6), (18, .35), (24, .3)),
        weekend=((0, .25), (24, .25)),
        batch_hours=(22.0, 6.0), batch_weekdays_only=False, hourly_spike=0.0, business=False,
        incidents_per_day=0.05, level_shifts_per_day=0.9,
    ),
    "database": ProfileSpec(
        cpu_floor=0.10, cpu_peak=0.50, batch_boost=0.18, mem_base=70.0, mem_load=10.0,
        disk_median=18.0, batch_disk=6.0, latency_ms=6.0, latency_coupling=1.0,
        weekday=((0, .3), (6, .3), (8, .7), (9, .9), (12, .85), (13, .78), (17, .85),
                 (19, .5), (24, .3)),
        weekend=((0, .28), (10, .35), (18, .33), (24, .28)),
        batch_hours=(1.0, 3.0), batch_weekdays_only=False, hourly_spike=0.0, business=True,
        incidents_per_day=0.03, level_shifts_per_day=0.4,
    ),
    "data_ingest": ProfileSpec(
        cpu_floor=0.08, cpu_peak=0.45, batch_boost=0.42, mem_base=38.0, mem_load=24.0,
        disk_median=30.0, batch_disk=4.0, latency_ms=25.0, latency_coupling=0.5,
        weekday=((0, .25), (8, .25), (8, .42), (18, .42), (18, .25), (24, .25)),
        weekend=((0, .22), (24, .22)),
        batch_hours=(1.0, 5.0), batch_weekdays_only=False, hourly_spike=0.35, business=False,
        incidents_per_day=0.05, level_shifts_per_day=0.7,
    ),
    "risk_analytics": ProfileSpec(
        cpu_floor=0.04, cpu_peak=0.48, batch_boost=0.45, mem_base=32.0, mem_load=34.0,
        disk_median=8.0, batch_disk=3.0, latency_ms=80.0, latency_coupling=0.7,
        weekday=((0, .08), (7, .08), (8, .5), (12, .55), (12, .45), (13, .45), (13, .55),
                 (17, .5), (18, .3), (24, .08)),
        weekend=((0, .06), (24, .06)),
        batch_hours=(18.0, 21.5), batch_weekdays_only=True, hourly_spike=0.0, business=True,
        incidents_per_day=0.04, level_shifts_per_day=0.5,
    ),
    "conductor_mgmt": ProfileSpec(
        cpu_floor=0.05, cpu_peak=0.32, batch_boost=0.25, mem_base=30.0, mem_load=10.0,
        disk_median=1.5, batch_disk=2.0, latency_ms=15.0, latency_coupling=0.5,
        weekday=((0, .2), (7, .2), (7, .45), (19, .45), (19, .2), (24, .2)),
        weekend=((0, .18), (24, .18)),
        batch_hours=None, batch_weekdays_only=False, hourly_spike=0.45, business=False,
        incidents_per_day=0.03, level_shifts_per_day=0.4,
    ),
    "generic": ProfileSpec(
        cpu_floor=0.05, cpu_peak=0.35, batch_boost=0.25, mem_base=35.0, mem_load=12.0,
        disk_median=4.0, batch_disk=2.0, latency_ms=30.0, latency_coupling=0.5,
        weekday=((0, .2), (8, .2), (9, .45), (17, .45), (18, .25), (24, .2)),
        weekend=((0, .2), (24, .2)),
        batch_hours=None, batch_weekdays_only=False, hourly_spike=0.0, business=True,
        incidents_per_day=0.03, level_shifts_per_day=0.5,
    ),
}  # fmt: skip
"""The seven profiles' baselines (keys in the same set as VALID_PROFILES)."""


@dataclass(frozen=True)
class WeeklyTables:
    """Per-profile lookups over one week at step resolution.

    Shapes: every table is ``(n_profiles, STEPS_PER_WEEK)``, rows in VALID_PROFILES order,
    column 0 = Monday 00:00 UTC.
    """

    load: np.ndarray
    """Regular load shape 0..1 (float32)."""
    batch_start: np.ndarray
    """True where a batch window opens (bool)."""
    batch_left: np.ndarray
    """Steps until the batch window that is open here closes (0 outside a window; int32)."""
    morning_start: np.ndarray
    """True at 08:00 on weekdays for business profiles (bool)."""
    business_hours: np.ndarray
    """True 08:00-18:00 on weekdays (bool); random heavy_load episodes happen there."""


def _day_curve(knots: Knots) -> np.ndarray:
    """A day's load at each step (STEPS_PER_DAY,), from piecewise-linear knots with steps."""
    hours = np.arange(STEPS_PER_DAY) * (STEP_SECONDS / 3600.0)
    xs = np.array([k[0] for k in knots], dtype=np.float64)
    ys = np.array([k[1] for k in knots], dtype=np.float64)
    # np.interp with a repeated x takes the right-hand value at it: a clean step edge.
    return np.interp(hours, xs, ys)


def build_weekly_tables() -> WeeklyTables:
    """Compute the weekly lookup tables of all profiles (a few milliseconds)."""
    n_prof = len(VALID_PROFILES)
    hours = np.arange(STEPS_PER_WEEK) % STEPS_PER_DAY * (STEP_SECONDS / 3600.0)
    weekday = np.arange(STEPS_PER_WEEK) // STEPS_PER_DAY < 5
    load = np.zeros((n_prof, STEPS_PER_WEEK), dtype=np.float32)
    window = np.zeros((n_prof, STEPS_PER_WEEK), dtype=bool)
    morning = np.zeros((n_prof, STEPS_PER_WEEK), dtype=bool)
    minute_of_hour = (np.arange(STEPS_PER_WEEK) * STEP_SECONDS // 60) % 60
    for p, name in enumerate(VALID_PROFILES):
        spec = PROFILE_SPECS[name]
        day, end = _day_curve(spec.weekday), _day_curve(spec.weekend)
        curve = np.where(weekday, np.tile(day, 7), np.tile(end, 7))
        curve = curve + spec.hourly_spike * (minute_of_hour < 10)
        load[p] = np.clip(curve, 0.0, 1.2)
        if spec.batch_hours is not None:
            start, stop = spec.batch_hours
            inside = (
                (hours >= start) & (hours < stop)
                if start < stop
                else (hours >= start) | (hours < stop)
            )
            if spec.batch_weekdays_only:
                inside &= weekday
            window[p] = inside
        if spec.business:
            morning[p] = weekday & (np.abs(hours - 8.0) < 1e-9)
    batch_start = window & ~np.roll(window, 1, axis=1)
    # Steps left in the window: count down from each window's end, cyclically over the week.
    batch_left = np.zeros((n_prof, STEPS_PER_WEEK), dtype=np.int32)
    for p in range(n_prof):
        if not window[p].any():
            continue
        run = 0
        for k in range(2 * STEPS_PER_WEEK - 1, -1, -1):  # two passes settle the wrap-around
            i = k % STEPS_PER_WEEK
            run = run + 1 if window[p, i] else 0
            batch_left[p, i] = run
    business_hours = np.broadcast_to(
        weekday & (hours >= 8) & (hours < 18), (n_prof, STEPS_PER_WEEK)
    )
    return WeeklyTables(
        load=load,
        batch_start=batch_start,
        batch_left=batch_left,
        morning_start=morning,
        business_hours=np.ascontiguousarray(business_hours),
    )
