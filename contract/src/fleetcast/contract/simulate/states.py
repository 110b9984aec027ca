"""The state process: a semi-Markov chain over the 8 contract states at 5-minute steps.

Each server sits in a *phase* for a drawn number of steps (its dwell), then moves on.
Phases are the 8 contract states plus one hidden phase, ``DEGRADING``: the 30-90 minutes
before an incident, labelled ``healthy`` in the data while the metrics already ramp
towards trouble. Transitions:

* ``DEGRADING -> critical_issue -> recovery -> healthy`` (an incident; recovery always
  follows critical_issue);
* ``offline -> recovery -> healthy`` (an outage; the server restarts cold);
* ``maintenance`` in each server's weekly window, ``morning_spike`` at 08:00 on weekdays
  (business profiles), ``heavy_load`` for batch windows and random busy episodes,
  ``idle`` in quiet hours; all of them end back in ``healthy``.

All arrays are ``(n_servers,)``; one call of :meth:`StateProcess.advance` is one step
for every server at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetcast.contract.schema import VALID_STATES

__all__ = [
    "CRITICAL",
    "DEGRADING",
    "HEALTHY",
    "HEAVY",
    "IDLE",
    "MAINT",
    "MSPIKE",
    "N_INCIDENT_KINDS",
    "OFFLINE",
    "PHASE_LABEL",
    "RECOVERY",
    "StateProcess",
    "StepInputs",
]

HEALTHY, HEAVY, IDLE, MAINT, MSPIKE, OFFLINE, CRITICAL, RECOVERY, DEGRADING = range(9)

_PHASE_STATE = (
    "healthy",
    "heavy_load",
    "idle",
    "maintenance",
    "morning_spike",
    "offline",
    "critical_issue",
    "recovery",
    "healthy",  # DEGRADING: not yet recognised as a problem
)
PHASE_LABEL = np.array([VALID_STATES.index(s) for s in _PHASE_STATE], dtype=np.int8)
PHASE_LABEL.flags.writeable = False
"""Phase code -> index of its contract state in VALID_STATES."""

N_INCIDENT_KINDS = 4
"""Incident kinds: 0 runaway CPU, 1 memory exhaustion, 2 disk saturation, 3 slow dependency."""

_NEVER = np.int32(1 << 30)

# Dwell of each phase in steps: lognormal (median, sigma), clipped to [lo, hi].
# HEALTHY lasts until something happens; MAINT and batch heavy_load use fixed windows.
_DWELL = {
    HEAVY: (18, 0.5, 6, 48),  # a busy episode: 30 min .. 4 h
    IDLE: (36, 0.5, 12, 96),  # 1 h .. 8 h
    MAINT: (18, 0.3, 12, 36),
    MSPIKE: (9, 0.35, 4, 24),  # 20 min .. 2 h
    OFFLINE: (6, 0.9, 3, 72),  # 15 min .. 6 h
    CRITICAL: (10, 0.7, 4, 72),  # 20 min .. 6 h
    RECOVERY: (8, 0.4, 4, 24),  # 20 min .. 2 h
    DEGRADING: (12, 0.3, 6, 18),  # the ramp before an incident: 30 .. 90 min
}


def _frozen(values: list[float] | list[bool], dtype: type) -> np.ndarray:
    table = np.array(values, dtype=dtype)
    table.flags.writeable = False
    return table


# Phases an incident, a batch job or maintenance may interrupt.
_FREE = _frozen([p in (HEALTHY, HEAVY, IDLE, MSPIKE) for p in range(9)], bool)
# Phases an outage may interrupt (not one already in trouble or in maintenance).
_CAN_FAIL = _frozen([p not in (OFFLINE, CRITICAL, DEGRADING, MAINT) for p in range(9)], bool)
# Severity = BASE + SLOPE * (remaining / length): ramps up in DEGRADING, 1 in CRITICAL,
# decays from 0.6 in RECOVERY, 0 elsewhere.
_SEV_BASE = _frozen([1.0 if p in (DEGRADING, CRITICAL) else 0.0 for p in range(9)], np.float32)
_SEV_SLOPE = _frozen([{DEGRADING: -1.0, RECOVERY: 0.6}.get(p, 0.0) for p in range(9)], np.float32)
# The phase that follows when a dwell runs out.
_AFTER = _frozen(
    [
        {DEGRADING: CRITICAL, CRITICAL: RECOVERY, OFFLINE: RECOVERY}.get(p, HEALTHY)
        for p in range(9)
    ],
    np.int8,
)


def _dwell_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mu = np.zeros(9)
    sigma = np.zeros(9)
    lo = np.full(9, _NEVER, dtype=np.int32)
    hi = np.full(9, _NEVER, dtype=np.int32)
    for phase, (median, sig, low, high) in _DWELL.items():
        mu[phase], sigma[phase], lo[phase], hi[phase] = np.log(median), sig, low, high
    return mu, sigma, lo, hi


@dataclass
class StepInputs:
    """What one step of the state process needs. Arrays are ``(n_servers,)``."""

    u_incident: np.ndarray
    """Uniform draw deciding incident onset (below the hazard) and idle entry (just above)."""
    u_outage: np.ndarray
    """Uniform draw deciding outages (below the hazard) and busy episodes (just above)."""
    u_choice: np.ndarray
    """Uniform draw for yes/no choices (does tonight's batch run) and forced ramps."""
    z_dwell: np.ndarray
    """Standard normal draw for the dwell of a phase entered this step."""
    load: np.ndarray
    """The server's regular load shape now, 0..1."""
    batch_start: np.ndarray
    """A batch window opens now (bool)."""
    batch_left: np.ndarray
    """Steps left in the open batch window (int)."""
    morning: np.ndarray
    """08:00 on a weekday for a business profile (bool)."""
    business_hours: np.ndarray
    """Weekday 08:00-18:00 (bool)."""
    business: np.ndarray
    """Business-hours profile (bool)."""
    maint_now: np.ndarray
    """The server's weekly maintenance window opens now (bool)."""
    maint_len: np.ndarray
    """Length of the server's maintenance window in steps (int)."""
    incident_hazard: np.ndarray
    """Probability that an incident starts this step."""
    outage_hazard: np.ndarray
    """Probability that the server goes offline this step."""
    force_incident: np.ndarray
    """Scenario: start an incident ramp now unless already in one (bool)."""


class StateProcess:
    """Phases, dwell counters and incident kinds of every server; advanced one step at a time."""

    idle_hazard = 0.02
    """Per-step chance that a quiet healthy business server turns idle."""
    busy_hazard = 0.002
    """Per-step chance of a random heavy_load episode in business hours."""

    def __init__(self, n_servers: int) -> None:
        self.phase = np.full(n_servers, HEALTHY, dtype=np.int8)
        self.remaining = np.full(n_servers, _NEVER, dtype=np.int32)
        self.length = np.full(n_servers, _NEVER, dtype=np.int32)
        self.kind = np.zeros(n_servers, dtype=np.int8)
        self.forced = np.zeros(n_servers, dtype=bool)
        self._mu, self._sigma, self._lo, self._hi = _dwell_tables()

    def labels(self) -> np.ndarray:
        """Contract state index of every server now, int8 ``(n_servers,)``."""
        return PHASE_LABEL[self.phase]

    def severity(self) -> np.ndarray:
        """Incident severity 0..1 now: ramps up in DEGRADING, 1 in critical, decays in recovery."""
        frac = self.remaining.astype(np.float32) / np.maximum(self.length, 1).astype(np.float32)
        return _SEV_BASE[self.phase] + _SEV_SLOPE[self.phase] * frac

    def advance(self, x: StepInputs) -> tuple[np.ndarray, np.ndarray]:
        """Move every server one step; return masks (maintenance ended, restarted into recovery).

        Rules are applied lowest priority first, each later one may override an earlier
        one: idle ends, idle starts, busy episode, morning spike, batch job, maintenance,
        outage, incident. Rare schedule rules are skipped when no server triggers them.
        """
        ph = self.phase
        rem = self.remaining - 1
        expired = rem <= 0
        base = _AFTER[ph] if expired.all() else np.where(expired, _AFTER[ph], ph)
        cur = base.copy()
        fixed = np.zeros_like(rem)
        free = _FREE[base]
        healthy = base == HEALTHY
        idle = base == IDLE
        h_inc = x.incident_hazard
        h_out = x.outage_hazard

        cur[idle & (x.load > 0.45)] = HEALTHY
        u_inc = x.u_incident
        quiet = healthy & x.business & (x.load < 0.25) & (u_inc >= h_inc)
        cur[quiet & (u_inc < h_inc + self.idle_hazard)] = IDLE
        u_out = x.u_outage
        busy = healthy & x.business_hours & (u_out >= h_out)
        cur[busy & (u_out < h_out + self.busy_hazard)] = HEAVY
        if x.morning.any():
            cur[(healthy | idle) & x.morning & (x.u_choice < 0.8)] = MSPIKE
        if x.batch_start.any():
            batch = (healthy | idle | (base == MSPIKE)) & x.batch_start & (x.u_choice < 0.9)
            cur[batch] = HEAVY
            fixed[batch] = x.batch_left[batch]
        if x.maint_now.any():
            maint = free & x.maint_now
            cur[maint] = MAINT
            fixed[maint] = x.maint_len[maint]
        outage = _CAN_FAIL[base] & (u_out < h_out)
        cur[outage] = OFFLINE
        fixed[outage] = 0
        natural = free & (u_inc < h_inc)
        incident = natural
        forced = None
        if x.force_incident.any():
            forced = free & x.force_incident & ~natural
            incident = natural | forced
        if incident.any():
            cur[incident] = DEGRADING
            fixed[incident] = 0
            kind_u = np.where(natural, u_inc / np.maximum(h_inc, 1e-12), x.u_choice)
            kind = np.minimum(kind_u * N_INCIDENT_KINDS, N_INCIDENT_KINDS - 1).astype(np.int8)
            self.kind = np.where(incident, kind, self.kind)
            if forced is not None:
                fixed[forced] = 3 + (x.u_choice[forced] * 4).astype(np.int32)  # 15-30 min ramp
                self.forced = np.where(incident, forced, self.forced)
            else:
                self.forced = self.forced & ~incident

        changed = expired | (cur != ph)
        if changed.any():
            drawn = np.clip(
                np.rint(np.exp(self._mu[cur] + self._sigma[cur] * x.z_dwell)),
                self._lo[cur],
                self._hi[cur],
            ).astype(np.int32)
            if self.forced.any():
                # A scenario's incident lasts: 1-6 hours of critical_issue (median 3 h).
                long = (cur == CRITICAL) & (ph == DEGRADING) & self.forced
                long_dwell = np.clip(np.rint(np.exp(np.log(36.0) + 0.4 * x.z_dwell)), 12, 72)
                drawn = np.where(long, long_dwell, drawn).astype(np.int32)
            drawn = np.where(fixed > 0, fixed, drawn)
            self.remaining = np.where(changed, drawn, rem)
            self.length = np.where(changed, drawn, self.length)
        else:
            self.remaining = rem
        maint_ended = expired & (ph == MAINT)
        restarted = changed & (cur == RECOVERY)
        self.phase = cur
        return maint_ended, restarted
