"""The four metrics of every server, in real units.

A server's metrics are built from, in order:

* its profile's regular load shape (business hours, nightly batch, hourly micro-batches),
  scaled by a per-day amplitude that changes at midnight;
* its *level*: a factor per metric that stays flat for hours to days and then jumps
  (a deploy, a job mix change, a cache warming up) — the dominant feature of real traces;
* the state (heavy_load adds a batch job, idle and maintenance drop the load, offline is
  all zeros) and incident severity (the ramp before critical_issue, the incident, recovery);
* short bursts (one to three steps, heavy-tailed sizes), mostly visible in disk IO;
* autocorrelated noise, multiplicative (log-normal) for disk and latency, so disk IO is
  heavy-tailed (median far below mean);
* coupling: latency grows with CPU utilisation like a queue, u / (1 - u).

The parts that do not depend on the state (noise, bursts, day amplitude) are computed a
block of steps at a time from the server's random draws (:meth:`SignalModel.prepare_block`);
levels and leaks move step by step with the states (:meth:`SignalModel.advance`); the
metric equations (:func:`metrics`) are elementwise, so one step ``(n,)`` and a block
``(steps, n)`` give bit-identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetcast.contract.simulate.states import (
    CRITICAL,
    DEGRADING,
    HEAVY,
    IDLE,
    MAINT,
    MSPIKE,
    OFFLINE,
    RECOVERY,
)

__all__ = [
    "DISK_CEILING_MB_S",
    "METRIC_NOISE",
    "BlockNoise",
    "ServerTraits",
    "SignalModel",
    "StepRecord",
    "metrics",
]

_F = np.float32

# AR(1) noise per metric: (phi, stationary sd). cpu/mem in points, disk/latency in log units.
METRIC_NOISE: dict[str, tuple[float, float]] = {
    "cpu_pct": (0.6, 2.6),
    "mem_pct": (0.9, 0.45),
    "disk_io_mb_s": (0.45, 0.75),
    "latency_ms": (0.5, 0.09),
}
"""AR(1) coefficient and stationary standard deviation of each metric's noise."""

DISK_CEILING_MB_S = 2500.0
"""Disk throughput never exceeds what a fast NVMe array delivers."""

_LEVEL_SIGMA = np.array([0.32, 7.0, 0.55, 0.22], dtype=_F)
"""Standard deviation of a level jump: cpu/disk/latency are factors (log units), mem in points."""
_LEVEL_SIGMA.flags.writeable = False

# Phase effects on CPU utilisation: util * MULT + ADD + BOOST * batch_boost + PEAK * cpu_peak.
_N_PHASES = 9


def _phase_table(values: dict[int, float], default: float) -> np.ndarray:
    table = np.array([values.get(p, default) for p in range(_N_PHASES)], dtype=_F)
    table.flags.writeable = False
    return table


_UTIL_MULT = _phase_table({IDLE: 0.45, MAINT: 0.0}, 1.0)
_UTIL_ADD = _phase_table({MSPIKE: 0.05, MAINT: 0.04}, 0.0)
_UTIL_BOOST = _phase_table({HEAVY: 1.0}, 0.0)
_UTIL_PEAK = _phase_table({MSPIKE: 0.22}, 0.0)
_UTIL_MAINT = _phase_table({MAINT: 0.06}, 0.0)  # maintenance: a little load-shaped activity
_MEM_MULT = _phase_table({MAINT: 0.7}, 1.0)
_MEM_BOOST = _phase_table({HEAVY: 0.25}, 0.0)
_DISK_MULT = _phase_table({IDLE: 0.4}, 1.0)
_DISK_BATCH = _phase_table({HEAVY: 1.0}, 0.0)
_LAT_MAINT = _phase_table({MAINT: 1.0}, 0.0)
_ON = _phase_table({OFFLINE: 0.0}, 1.0)
_IN_INCIDENT = _phase_table({DEGRADING: 1.0, CRITICAL: 1.0, RECOVERY: 1.0}, 0.0)
# Incident kinds (0 cpu, 1 memory, 2 disk, 3 dependency): what severity 1 does.
_KIND_CPU = np.array([0.6, 0.15, 0.08, 0.08], dtype=_F)
_KIND_MEM = np.array([0.15, 0.9, 0.15, 0.15], dtype=_F)
_KIND_DISK = np.array([0.5, 0.5, 6.0, 0.5], dtype=_F)
_KIND_LAT = np.array([2.0, 2.0, 2.0, 6.0], dtype=_F)
for _table in (_KIND_CPU, _KIND_MEM, _KIND_DISK, _KIND_LAT):
    _table.flags.writeable = False


@dataclass(frozen=True)
class ServerTraits:
    """Fixed per-server parameters, drawn once from the server's own seed. Shapes ``(n,)``."""

    cpu_floor: np.ndarray
    cpu_peak: np.ndarray
    batch_boost: np.ndarray
    mem_base: np.ndarray
    mem_load: np.ndarray
    disk_median: np.ndarray
    batch_disk: np.ndarray
    latency_ms: np.ndarray
    latency_coupling: np.ndarray
    leak_per_step: np.ndarray
    """Memory leak in percent points per step (0 for most servers)."""
    level_shift_hazard: np.ndarray
    """Per-step chance of a level shift."""


@dataclass(frozen=True)
class BlockNoise:
    """State-independent parts of a block of steps. Arrays ``(steps, n)`` float32."""

    cpu: np.ndarray
    """Additive CPU noise in points."""
    mem: np.ndarray
    """Additive memory noise in points."""
    disk: np.ndarray
    """Multiplicative disk noise (log-normal factor)."""
    latency: np.ndarray
    """Multiplicative latency noise (log-normal factor)."""
    burst: np.ndarray
    """Burst size (0 outside a burst)."""
    day_amp: np.ndarray
    """Amplitude of the day's load shape."""


@dataclass(frozen=True)
class StepRecord:
    """Everything state-dependent the metric equations need. Arrays ``(n,)`` or ``(steps, n)``."""

    load: np.ndarray
    """Profile load shape, 0..1 (float32)."""
    phase: np.ndarray
    """Phase code (int8, see states.py)."""
    severity: np.ndarray
    """Incident severity 0..1 (float32)."""
    kind: np.ndarray
    """Incident kind 0..3 (int8)."""
    level: np.ndarray
    """Levels ``(4, n)`` or ``(steps, 4, n)``: cpu, disk, latency factors; mem in points."""
    leak: np.ndarray
    """Leaked memory in points (float32)."""
    degradation: np.ndarray
    """Scenario degradation 0..1 (float32)."""


class SignalModel:
    """Per-server signal state (levels, noise, leaks, bursts, day amplitude)."""

    burst_rate = 0.012
    """Per-step chance that a burst starts."""
    burst_alpha = 1.4
    """Pareto tail index of burst sizes (smaller = heavier tail)."""

    def __init__(
        self, traits: ServerTraits, initial_level: np.ndarray, day_amp: np.ndarray
    ) -> None:
        n = traits.cpu_floor.shape[0]
        self.traits = traits
        self.level = initial_level.astype(_F)  # (4, n)
        self.leak = np.zeros(n, dtype=_F)
        self._noise = np.zeros((4, n), dtype=_F)
        self._day_amp = day_amp.astype(_F)
        self._burst_left = np.zeros(n, dtype=np.int32)
        self._burst_size = np.zeros(n, dtype=_F)
        phis = np.array([v[0] for v in METRIC_NOISE.values()], dtype=_F)
        sds = np.array([v[1] for v in METRIC_NOISE.values()], dtype=_F)
        self._phi = phis[:, None]
        self._innov = (sds * np.sqrt(1 - phis**2))[:, None].astype(_F)

    def prepare_block(
        self,
        u_burst: np.ndarray,
        u_burst_size: np.ndarray,
        u_burst_len: np.ndarray,
        z_noise: np.ndarray,
        z_day: np.ndarray,
        new_day: np.ndarray,
    ) -> BlockNoise:
        """Noise, bursts and day amplitudes of the next block.

        ``u_*`` and ``z_day`` are ``(steps, n)``, ``z_noise`` is ``(steps, 4, n)``,
        ``new_day`` is ``(steps,)`` bool (the step is midnight UTC).
        """
        steps, n = u_burst.shape
        noise = np.empty((steps, 4, n), dtype=_F)
        burst = np.empty((steps, n), dtype=_F)
        day_amp = np.empty((steps, n), dtype=_F)
        size = np.minimum((1.0 - u_burst_size) ** (-1.0 / self.burst_alpha) - 1.0, 25.0)
        size = size.astype(_F)
        length = 1 + (u_burst_len * 3).astype(np.int32)
        starts = u_burst < self.burst_rate
        innov = self._innov * z_noise
        amps = np.clip(1.0 + 0.18 * z_day, 0.55, 1.45).astype(_F)
        for k in range(steps):
            self._noise = self._phi * self._noise + innov[k]
            noise[k] = self._noise
            start = starts[k] & (self._burst_left <= 0)
            self._burst_size = np.where(start, size[k], self._burst_size)
            self._burst_left = np.where(start, length[k], self._burst_left - 1)
            burst[k] = np.where(self._burst_left > 0, self._burst_size, 0.0)
            if new_day[k]:
                self._day_amp = amps[k]
            day_amp[k] = self._day_amp
        return BlockNoise(
            cpu=noise[:, 0],
            mem=noise[:, 1],
            disk=np.exp(noise[:, 2]),
            latency=np.exp(noise[:, 3]),
            burst=burst,
            day_amp=day_amp,
        )

    def advance(
        self,
        u_shift: np.ndarray,
        z_level: np.ndarray,
        deploy: np.ndarray,
        restarted: np.ndarray,
    ) -> None:
        """Move levels and leaks one step.

        A level shift (chance ``level_shift_hazard``) moves every metric (a deploy, 35 %)
        or one or two; ``deploy`` (end of maintenance) moves them all; a restart, deploy or
        full shift resets the memory leak. ``z_level`` is ``(4, n)``.
        """
        t = self.traits
        shift = u_shift < t.level_shift_hazard
        if shift.any() or deploy.any():
            pick = u_shift / np.maximum(t.level_shift_hazard, 1e-12)  # uniform 0..1 if shifting
            full = shift & (pick < 0.35)
            which = np.stack([pick < 0.55, (pick >= 0.55) & (pick < 0.7), pick >= 0.7, pick >= 0.9])
            which[2] &= pick < 0.9
            which[:, pick < 0.35] = True
            move = (which & shift[None, :]) | deploy[None, :]
            new = np.exp(_LEVEL_SIGMA[:, None] * z_level).astype(_F)
            new[1] = _LEVEL_SIGMA[1] * z_level[1]
            self.level = np.where(move, new, self.level)
            reset = restarted | deploy | full
        else:
            reset = restarted
        self.leak = np.where(reset, _F(0.0), self.leak + t.leak_per_step)


def metrics(
    traits: ServerTraits, rec: StepRecord, noise: BlockNoise
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cpu_pct, mem_pct, disk_io_mb_s, latency_ms) float32, elementwise over ``(n,)`` or ``(steps, n)``."""
    t = traits
    ph = rec.phase
    sev = rec.severity * _IN_INCIDENT[ph]
    kind = rec.kind
    deg = rec.degradation
    burst = noise.burst
    small_burst = np.minimum(burst, _F(5.0))
    level = rec.level
    lvl = (level[..., 0, :], level[..., 1, :], level[..., 2, :], level[..., 3, :])

    # CPU utilisation 0..1.
    shaped = rec.load * noise.day_amp
    util = t.cpu_floor + (t.cpu_peak - t.cpu_floor) * shaped
    util = (
        util * _UTIL_MULT[ph]
        + _UTIL_ADD[ph]
        + _UTIL_BOOST[ph] * t.batch_boost
        + _UTIL_PEAK[ph] * t.cpu_peak
        + _UTIL_MAINT[ph] * shaped
    )
    util = util * lvl[0] + _F(0.05) * small_burst + sev * _KIND_CPU[kind] + _F(0.3) * deg
    cpu = np.clip(_F(100.0) * util + noise.cpu, _F(0.5), _F(100.0))

    # Memory percent: base + load + level + leak; incidents of kind 1 exhaust it.
    mem = t.mem_base + t.mem_load * np.minimum(shaped, _F(1.2)) + lvl[1] + rec.leak
    mem = mem * _MEM_MULT[ph] + _MEM_BOOST[ph] * t.mem_load + _F(14.0) * deg
    mem = mem + _KIND_MEM[kind] * sev * np.maximum(_F(97.0) - mem, _F(0.0))
    mem = np.clip(mem + noise.mem, _F(1.0), _F(99.5))

    # Disk MB/s: log-normal around the median, bursts multiply it (heavy tail).
    disk = t.disk_median * (_F(0.25) + _F(0.75) * np.minimum(shaped, _F(1.2))) * lvl[2]
    disk = disk * noise.disk * _DISK_MULT[ph] * (_F(1.0) + _DISK_BATCH[ph] * (t.batch_disk - 1))
    disk = disk * (_F(1.0) + _F(1.5) * burst) * (_F(1.0) + _KIND_DISK[kind] * sev)
    disk = np.minimum(disk * (_F(1.0) + deg), _F(DISK_CEILING_MB_S))

    # Latency ms: queueing on CPU plus incident and degradation multipliers.
    u = np.minimum(cpu / _F(100.0), _F(0.97))
    lat = t.latency_ms * lvl[3] * (_F(1.0) + t.latency_coupling * u / (_F(1.0) - u))
    lat = lat * noise.latency * (_F(1.0) + _F(0.15) * small_burst)
    lat = lat * (_F(1.0) + _KIND_LAT[kind] * sev) * (_F(1.0) + _F(1.5) * deg)
    maint = _LAT_MAINT[ph]
    lat = lat * (_F(1.0) - maint) + maint * _F(0.8) * t.latency_ms

    on = _ON[ph]
    return (
        (cpu * on).astype(_F),
        (mem * on).astype(_F),
        (disk * on).astype(_F),
        (lat * on).astype(_F),
    )
