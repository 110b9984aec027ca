"""The simulator core: a fleet advanced one 5-minute step at a time, vectorised over servers.

Batch generation and the live stream both drive the same :class:`FleetSimulator`, so a
stream started at the same time with the same seed produces exactly the rows of a batch
file. Randomness: every server owns a numpy ``SeedSequence`` keyed by
``(seed, profile index, server number)`` — never by its position in the fleet, so
``ppweb007`` behaves the same in a fleet of 20 or of 10,000. Its PCG64 generator fills
blocks of :data:`BLOCK_STEPS` steps of uniforms and normals at a time (a fixed number of
draws per step, whatever happens), which keeps the stream reproducible bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetcast.contract.errors import explain
from fleetcast.contract.schema import STEP_SECONDS, VALID_PROFILES
from fleetcast.contract.simulate.fleet import DEFAULT_FLEET_SIZE, Fleet, build_fleet
from fleetcast.contract.simulate.profiles import (
    PROFILE_SPECS,
    STEPS_PER_DAY,
    STEPS_PER_WEEK,
    build_weekly_tables,
)
from fleetcast.contract.simulate.scenarios import ScenarioState
from fleetcast.contract.simulate.signals import (
    BlockNoise,
    ServerTraits,
    SignalModel,
    StepRecord,
    metrics,
)
from fleetcast.contract.simulate.states import HEAVY, MSPIKE, PHASE_LABEL, StateProcess, StepInputs

__all__ = [
    "BLOCK_STEPS",
    "PROBLEM_CHILD_INCIDENT_FACTOR",
    "PROBLEM_CHILD_SHARE",
    "FleetSimulator",
    "StepRows",
]

BLOCK_STEPS = 48
"""Steps of random draws each server's generator fills at once (4 hours)."""
PROBLEM_CHILD_SHARE = 0.10
"""Share of the fleet with many more incidents and outages (at least one server in 5+)."""
PROBLEM_CHILD_INCIDENT_FACTOR = 10.0
"""How many times more incidents a problem child has."""
OUTAGES_PER_DAY = 0.012
"""Outage (offline) rate of an ordinary server; problem children have 3x."""

_N_UNIFORM = 8  # incident, outage, choice, shift, burst, burst size, burst length, spare
_N_NORMAL = 10  # dwell, 4 level jumps, 4 noise innovations, day amplitude
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
_BUSY_FACTOR = np.array([2.0 if p in (HEAVY, MSPIKE) else 1.0 for p in range(9)], dtype=np.float32)
_BUSY_FACTOR.flags.writeable = False  # incidents are twice as likely under heavy load


@dataclass(frozen=True)
class StepRows:
    """One step of the fleet: every array is ``(n_servers,)`` in fleet (name) order."""

    timestamp: int
    """Epoch seconds (UTC) of this step, a multiple of STEP_SECONDS."""
    cpu_pct: np.ndarray
    mem_pct: np.ndarray
    disk_io_mb_s: np.ndarray
    latency_ms: np.ndarray
    state: np.ndarray
    """Index into VALID_STATES, int8."""


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            explain(
                f"Invalid {name} {value!r}: expected an integer >= {minimum}.",
                "the simulator's output is defined by its integer parameters.",
                f"Pass an integer {name} >= {minimum}.",
                "docs/SERVER_PROFILES.md#generating-data",
            )
        )
    return int(value)


class FleetSimulator:
    """A whole fleet stepping through time from ``start`` (epoch seconds, step-aligned)."""

    def __init__(
        self,
        n_servers: int = DEFAULT_FLEET_SIZE,
        seed: int = 42,
        start: int = 0,
        scenario: str = "healthy",
    ) -> None:
        n_servers = _check_int("server count", n_servers, 1)
        self.seed = _check_int("seed", seed, 0)
        start = _check_int("start", start, 0)
        if start % STEP_SECONDS:
            raise ValueError(
                explain(
                    f"Start time {start} is not aligned to the {STEP_SECONDS}-second step.",
                    "every contract timestamp is a whole number of steps since the epoch.",
                    f"Round the start down to a multiple of {STEP_SECONDS} seconds.",
                    "docs/DATA_CONTRACT.md#timestamp",
                )
            )
        self.start = start
        self.fleet: Fleet = build_fleet(n_servers)
        self.tables = build_weekly_tables()
        self.step_index = 0
        n = self.fleet.size
        self._profile = self.fleet.profile_index
        self._gens = [
            np.random.Generator(np.random.PCG64(self._seed_sequence(i, 1))) for i in range(n)
        ]
        self._u = np.empty((BLOCK_STEPS, _N_UNIFORM, n), dtype=np.float32)
        self._z = np.empty((BLOCK_STEPS, _N_NORMAL, n), dtype=np.float32)
        self._init_traits(scenario)

    # ---- set-up -------------------------------------------------------------------------
    def _seed_sequence(self, i: int, purpose: int) -> np.random.SeedSequence:
        key = (int(self._profile[i]), int(self.fleet.number[i]), purpose)
        return np.random.SeedSequence(self.seed, spawn_key=key)

    def _init_traits(self, scenario: str) -> None:
        n = self.fleet.size
        u = np.empty((n, 16), dtype=np.float64)
        z = np.empty((n, 16), dtype=np.float64)
        for i in range(n):
            g = np.random.Generator(np.random.PCG64(self._seed_sequence(i, 0)))
            g.random(out=u[i])
            g.standard_normal(out=z[i])
        u, z = u.T, z.T
        specs = [PROFILE_SPECS[p] for p in VALID_PROFILES]

        def per(field: str) -> np.ndarray:
            return np.array([getattr(s, field) for s in specs], dtype=np.float64)[self._profile]

        # Problem children: the PROBLEM_CHILD_SHARE servers with the smallest key.
        n_problem = round(PROBLEM_CHILD_SHARE * n)
        if n >= 5:
            n_problem = max(n_problem, 1)
        self.problem_child = _rank(u[6]) < n_problem
        cpu_scale = np.exp(0.2 * z[0])
        leaky = u[0] < np.where(self.problem_child, 0.6, 0.25)
        self.traits = ServerTraits(
            cpu_floor=(per("cpu_floor") * cpu_scale).astype(np.float32),
            cpu_peak=np.minimum(per("cpu_peak") * cpu_scale, 0.9).astype(np.float32),
            batch_boost=(per("batch_boost") * np.exp(0.15 * z[1])).astype(np.float32),
            mem_base=np.clip(per("mem_base") + 6.0 * z[2], 8.0, 85.0).astype(np.float32),
            mem_load=(per("mem_load") * np.exp(0.2 * z[3])).astype(np.float32),
            disk_median=(per("disk_median") * np.exp(0.5 * z[4])).astype(np.float32),
            batch_disk=(per("batch_disk") * np.exp(0.2 * z[4])).astype(np.float32),
            latency_ms=(per("latency_ms") * np.exp(0.25 * z[5])).astype(np.float32),
            latency_coupling=(per("latency_coupling") * np.exp(0.2 * z[6])).astype(np.float32),
            leak_per_step=np.where(leaky, (0.02 + 0.12 * u[1]) / 12.0, 0.0).astype(np.float32),
            level_shift_hazard=(
                per("level_shifts_per_day") * np.exp(0.3 * z[7]) / STEPS_PER_DAY
            ).astype(np.float32),
        )
        self.business = np.array([s.business for s in specs])[self._profile]
        self.offset = np.clip(np.rint(3.0 * z[8]), -9, 9).astype(np.int64)
        # Weekly maintenance window: a night (00:00-05:00) of one day, 1-3 hours.
        day = (u[2] * 7).astype(np.int64)
        minute_step = (u[3] * 60).astype(np.int64)  # 0..59 steps after midnight = 00:00-04:55
        self.maint_start = day * STEPS_PER_DAY + minute_step
        self.maint_len = (12 + u[4] * 25).astype(np.int32)
        factor = np.where(self.problem_child, PROBLEM_CHILD_INCIDENT_FACTOR, 1.0)
        self.incident_rate = (
            per("incidents_per_day") * np.exp(0.3 * z[14]) * factor / STEPS_PER_DAY
        ).astype(np.float32)
        self.outage_rate = (
            OUTAGES_PER_DAY * np.where(self.problem_child, 3.0, 1.0) / STEPS_PER_DAY
        ).astype(np.float32)
        level = np.stack(
            [np.exp(0.16 * z[9]), 3.0 * z[10], np.exp(0.27 * z[11]), np.exp(0.11 * z[12])]
        )
        self.states = StateProcess(n)
        self.signals = SignalModel(self.traits, level, np.clip(1.0 + 0.18 * z[13], 0.55, 1.45))
        tb = self.tables
        self._flat_tables = tuple(
            np.ascontiguousarray(a).ravel()
            for a in (tb.load, tb.batch_start, tb.batch_left, tb.morning_start, tb.business_hours)
        )
        self._profile_base = self._profile * STEPS_PER_WEEK
        # A batch job already running at the start keeps running (no empty first night).
        week_step = (self.start // STEP_SECONDS + _EPOCH_WEEKDAY * STEPS_PER_DAY) % STEPS_PER_WEEK
        flat = self._profile_base + (week_step + self.offset) % STEPS_PER_WEEK
        left = self._flat_tables[2][flat]
        running = left > 0
        self.states.phase[running] = HEAVY
        self.states.remaining[running] = left[running] + 1
        self.states.length[running] = left[running] + 1
        self.scenario = ScenarioState(_rank(u[7]), scenario)

    def _refill(self) -> None:
        """Draw the next BLOCK_STEPS steps of randomness for every server (its own stream)."""
        n = self.fleet.size
        ub = np.empty((n, BLOCK_STEPS, _N_UNIFORM), dtype=np.float32)
        zb = np.empty((n, BLOCK_STEPS, _N_NORMAL), dtype=np.float32)
        for i, g in enumerate(self._gens):
            g.random(dtype=np.float32, out=ub[i])
            g.standard_normal(dtype=np.float32, out=zb[i])
        self._u = np.ascontiguousarray(ub.transpose(1, 2, 0))
        self._z = np.ascontiguousarray(zb.transpose(1, 2, 0))
        abs_steps = self.next_timestamp // STEP_SECONDS + np.arange(BLOCK_STEPS)
        self._noise = self.signals.prepare_block(
            u_burst=self._u[:, 4],
            u_burst_size=self._u[:, 5],
            u_burst_len=self._u[:, 6],
            z_noise=self._z[:, 5:9],
            z_day=self._z[:, 9],
            new_day=abs_steps % STEPS_PER_DAY == 0,
        )

    # ---- stepping -----------------------------------------------------------------------
    @property
    def next_timestamp(self) -> int:
        """Epoch seconds of the step :meth:`step` returns next."""
        return self.start + self.step_index * STEP_SECONDS

    def set_scenario(self, name: str) -> None:
        """Switch the demo scenario (healthy / degrading / critical) from the next step on."""
        self.scenario.set(name)

    def _advance(self) -> StepRecord:
        """Advance states, levels and leaks one step; return what the metrics need."""
        b = self.step_index % BLOCK_STEPS
        if b == 0:
            self._refill()
        u, z = self._u[b], self._z[b]
        t = self.next_timestamp
        week_step = (t // STEP_SECONDS + _EPOCH_WEEKDAY * STEPS_PER_DAY) % STEPS_PER_WEEK
        flat = self._profile_base + (week_step + self.offset) % STEPS_PER_WEEK
        tb = self._flat_tables
        load = tb[0][flat]
        degradation, force = self.scenario.step()
        ph = self.states.phase
        hazard = self.incident_rate * _BUSY_FACTOR[ph] * (1.0 + 25.0 * degradation)
        maint_ended, restarted = self.states.advance(
            StepInputs(
                u_incident=u[0],
                u_outage=u[1],
                u_choice=u[2],
                z_dwell=z[0],
                load=load,
                batch_start=tb[1][flat],
                batch_left=tb[2][flat],
                morning=tb[3][flat],
                business_hours=tb[4][flat],
                business=self.business,
                maint_now=self.maint_start == week_step,
                maint_len=self.maint_len,
                incident_hazard=hazard.astype(np.float32),
                outage_hazard=self.outage_rate,
                force_incident=force,
            )
        )
        self.signals.advance(u[3], z[1:5], maint_ended, restarted)
        self.step_index += 1
        return StepRecord(
            load=load,
            phase=self.states.phase,
            severity=self.states.severity(),
            kind=self.states.kind,
            level=self.signals.level,
            leak=self.signals.leak,
            degradation=degradation,
        )

    def step(self) -> StepRows:
        """Advance every server one step and return its rows."""
        b = self.step_index % BLOCK_STEPS
        t = self.next_timestamp
        rec = self._advance()
        noise = _slice_noise(self._noise, b)
        cpu, mem, disk, lat = metrics(self.traits, rec, noise)
        return StepRows(t, cpu, mem, disk, lat, PHASE_LABEL[rec.phase])

    def run(self, steps: int) -> dict[str, np.ndarray]:
        """Advance ``steps`` steps; return time-major arrays.

        Returns ``timestamp`` (steps,) int64 epoch seconds and ``cpu_pct``, ``mem_pct``,
        ``disk_io_mb_s``, ``latency_ms`` (steps, n_servers) float32 and ``state``
        (steps, n_servers) int8 (index into VALID_STATES). The same numbers as ``steps``
        calls of :meth:`step`, computed a block at a time.
        """
        steps = _check_int("number of steps", steps, 0)
        n = self.fleet.size
        out = {
            "timestamp": self.next_timestamp + STEP_SECONDS * np.arange(steps, dtype=np.int64),
            "cpu_pct": np.empty((steps, n), dtype=np.float32),
            "mem_pct": np.empty((steps, n), dtype=np.float32),
            "disk_io_mb_s": np.empty((steps, n), dtype=np.float32),
            "latency_ms": np.empty((steps, n), dtype=np.float32),
            "state": np.empty((steps, n), dtype=np.int8),
        }
        load = np.empty((BLOCK_STEPS, n), dtype=np.float32)
        phase = np.empty((BLOCK_STEPS, n), dtype=np.int8)
        sev = np.empty((BLOCK_STEPS, n), dtype=np.float32)
        kind = np.empty((BLOCK_STEPS, n), dtype=np.int8)
        level = np.empty((BLOCK_STEPS, 4, n), dtype=np.float32)
        leak = np.empty((BLOCK_STEPS, n), dtype=np.float32)
        deg = np.empty((BLOCK_STEPS, n), dtype=np.float32)
        done = 0
        while done < steps:
            b0 = self.step_index % BLOCK_STEPS
            chunk = min(BLOCK_STEPS - b0, steps - done)
            for k in range(chunk):
                rec = self._advance()
                load[k], phase[k], sev[k], kind[k] = rec.load, rec.phase, rec.severity, rec.kind
                level[k], leak[k], deg[k] = rec.level, rec.leak, rec.degradation
            block = StepRecord(
                load[:chunk],
                phase[:chunk],
                sev[:chunk],
                kind[:chunk],
                level[:chunk],
                leak[:chunk],
                deg[:chunk],
            )
            noise = _slice_noise(self._noise, slice(b0, b0 + chunk))
            rows = slice(done, done + chunk)
            (
                out["cpu_pct"][rows],
                out["mem_pct"][rows],
                out["disk_io_mb_s"][rows],
                out["latency_ms"][rows],
            ) = metrics(self.traits, block, noise)
            out["state"][rows] = PHASE_LABEL[phase[:chunk]]
            done += chunk
        return out


def _slice_noise(noise: BlockNoise, index: int | slice) -> BlockNoise:
    """One step (int) or a run of steps (slice) of a block's noise."""
    return BlockNoise(
        cpu=noise.cpu[index],
        mem=noise.mem[index],
        disk=noise.disk[index],
        latency=noise.latency[index],
        burst=noise.burst[index],
        day_amp=noise.day_amp[index],
    )


def _rank(key: np.ndarray) -> np.ndarray:
    """Rank of each value (0 = smallest), ties broken by position. Shape ``(n,)`` int64."""
    order = np.argsort(key, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return rank
