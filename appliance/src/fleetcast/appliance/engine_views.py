"""The Engine's read-side views: one server's forecast and history, and the status.

Split from :mod:`fleetcast.appliance.engine` to keep it small; :meth:`Engine.server_forecast`,
:meth:`Engine.history` and :meth:`Engine.status` delegate here (docs/API.md).
These functions are part of the Engine: they use its private state under its lock,
as its methods do; call them through :class:`~fleetcast.appliance.engine.Engine`.
"""

from __future__ import annotations

import bisect
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.appliance.engine_state import SERVER_STATES
from fleetcast.appliance.forecast import iso
from fleetcast.contract.schema import METRIC_COLUMNS, VALID_PROFILES

if TYPE_CHECKING:
    from fleetcast.appliance.engine import Engine

__all__ = [
    "fleet_history",
    "profile_history",
    "server_detail",
    "server_history",
    "server_state",
    "status",
]

_PROFILE_CHUNK = 1024
"""Servers gathered per lock hold by :func:`profile_history`."""


def server_detail(engine: Engine, name: str) -> dict[str, Any] | None:
    """One ServerForecast plus full curves (docs/API.md GET /predictions/{server_name})."""
    from fleetcast.appliance.forecast import curves

    with engine._lock:
        fs, q, row = engine._current, engine._current_q, engine._current_rows.get(name)
    if fs is None or q is None or row is None:
        return None
    found = next((s for s in fs.servers if s["server_name"] == name), None)
    if found is None:
        return None
    out = dict(found)
    out["curves"] = curves(q[row], list(engine.spec.quantiles))
    out["step_seconds"] = engine.spec.step_seconds
    out["start"] = found["prediction_time"]
    return out


def profile_history(engine: Engine, profile: str, steps: int) -> dict[str, Any] | None:
    """Per-step mean actuals and risk over one profile's servers (GET /profiles/{p}/history).

    Up to ``steps`` steps ending at the step after the fleet's step (docs/RISK.md#buckets;
    the open step, partly reported), the time axis of every chart: a clock running ahead
    or servers that stopped do not move it. Each value is the
    mean over the servers that had a sample (or a forecast, for risk) at that step, and
    ``reporting`` counts them; null where none had. ``servers`` counts every server of the
    profile the appliance tracks (warming and stale ones too). None when there is none.
    The servers are summed in chunks of ``_PROFILE_CHUNK``, each under the lock and only for
    the wanted steps, so ingest waits for one chunk at most. A server forgotten between two
    chunks (its slot's generation changed, perhaps reused by another server) is left out
    and not counted in ``servers``.
    """
    buf = engine._buf
    code = engine._profile_index.get(profile)
    if code is None:
        return None
    with engine._lock:
        idx = np.flatnonzero(engine._profile[: buf.n] == code)
        if idx.size == 0:
            return None
        gens = buf.generation[idx].copy()
        fleet = engine._fleet_closed  # the fleet's step; its open step is the newest shown
        end = fleet + 1 if fleet >= 0 else int(buf.last_step[idx].max())
    steps = int(max(1, min(steps, buf.ring_steps - 1)))
    wanted = np.arange(end - steps + 1, end + 1, dtype=np.int64)
    hist = engine._history
    count = np.zeros(steps, dtype=np.int64)
    sums = np.zeros((steps, len(METRIC_COLUMNS)))
    risk_count = np.zeros(steps, dtype=np.int64)
    risk_sum = np.zeros(steps)
    gone = 0
    for lo in range(0, idx.size, _PROFILE_CHUNK):
        part = idx[lo : lo + _PROFILE_CHUNK]
        with engine._lock:
            alive = buf.generation[part] == gens[lo : lo + _PROFILE_CHUNK]
            gone += int(part.size - np.count_nonzero(alive))
            part = part[alive]
            rows = np.ix_(part, wanted % buf.ring_steps)
            present = (buf.slot_step[rows] == wanted) & (wanted >= 0)  # (S, W)
            vals = buf.values[rows]  # (S, W, 4)
            hrows = np.ix_(part, wanted % hist.ring_steps)
            risk = np.where(hist.risk_step[hrows] == wanted, hist.risk[hrows], np.nan)
        count += present.sum(axis=0)
        sums += np.where(present[:, :, None], vals, 0.0).sum(axis=0)
        risk_count += np.isfinite(risk).sum(axis=0)
        risk_sum += np.nansum(risk, axis=0)
    keep = np.flatnonzero(wanted >= 0)
    step = engine.spec.step_seconds
    out: dict[str, Any] = {
        "profile": profile,
        "servers": int(idx.size - gone),
        "step_seconds": step,
        "timestamps": [iso(t * step) for t in wanted[keep].tolist()],
        "reporting": count[keep].tolist(),
    }
    for j, m in enumerate(METRIC_COLUMNS):
        out[m] = [
            None if count[k] == 0 else round(float(sums[k, j] / count[k]), 3) for k in keep.tolist()
        ]
    out["risk"] = [
        None if risk_count[k] == 0 else round(float(risk_sum[k] / risk_count[k]), 4)
        for k in keep.tolist()
    ]
    return out


def server_history(engine: Engine, name: str, steps: int) -> dict[str, Any] | None:
    """Recent actuals and risk of one server (docs/API.md GET /history/{server_name}).

    Up to ``steps`` (at most the kept history) steps ending at the server's newest step
    (the open one included); missing steps are null, not filled.
    """
    buf = engine._buf
    with engine._lock:
        s = buf.index.get(name)
        if s is None:
            return None
        end = int(buf.last_step[s])
        steps = int(max(1, min(steps, buf.ring_steps - 1)))
        present, vals, _ = buf.series(s, end, steps)
        wanted = np.arange(end - steps + 1, end + 1, dtype=np.int64)
        rk = engine._history.server(s, wanted)
        profile = VALID_PROFILES[int(engine._profile[s])]
    keep = np.flatnonzero(wanted >= 0)
    step = engine.spec.step_seconds
    out: dict[str, Any] = {
        "server_name": name,
        "profile": profile,
        "step_seconds": step,
        "timestamps": [iso(t * step) for t in wanted[keep].tolist()],
    }
    for j, m in enumerate(METRIC_COLUMNS):
        col = vals[keep, j]
        out[m] = [
            None if not p else round(float(v), 3) for p, v in zip(present[keep], col, strict=True)
        ]
    out["risk"] = [None if np.isnan(r) else round(float(r), 4) for r in rk[keep].tolist()]
    return out


def status(engine: Engine) -> dict[str, Any]:
    """Model info, servers known/ready/warming/unknown, latency, rates, ingest counters."""
    spec = engine.spec
    with engine._lock:
        r = engine._readiness()  # free slots (forgotten servers') are not ``used``
        n = engine._buf.n
        known = engine._known[:n].copy()
        names = list(engine._buf.names)
        fleet_closed = engine._fleet_closed  # the fleet's step (its reference step)
        forgotten = dict(engine._forgotten)
    used, samples = r.used, r.samples
    count = [int(np.count_nonzero(used & (r.states == k))) for k in range(len(SERVER_STATES))]
    warming = np.flatnonzero(used & (r.states == SERVER_STATES.index("warming")))
    step = spec.step_seconds
    detail = [
        {
            "server_name": names[i],
            "steps": int(samples[i]),
            "needed": spec.min_encoder_length,
            "ready_in_s": int((spec.min_encoder_length - samples[i]) * step),
        }
        for i in warming[np.argsort(-samples[warming], kind="stable")][:50].tolist()
    ]
    lat = np.asarray(engine._latency_ms, dtype=np.float64)
    elapsed = time.perf_counter() - engine._first_run if engine._first_run is not None else 0.0
    return {
        "model": engine.model.info(),
        "uptime_s": round(time.monotonic() - engine._started, 1),
        "servers": {
            "known": int(np.count_nonzero(used)),
            **dict(zip(SERVER_STATES, count, strict=True)),
            "unknown": int(np.count_nonzero(used & ~known)),
            "full_history": int(np.count_nonzero(used & (r.lengths >= spec.encoder_length))),
            "capacity": engine.config.capacity,
            "warming_detail": detail,
        },
        "predictions_per_second": round(engine._predictions / elapsed, 3) if elapsed > 0 else 0.0,
        "inference_latency_ms": {
            "avg": round(float(lat.mean()), 3) if lat.size else None,
            "p99": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
            "last": round(float(lat[-1]), 3) if lat.size else None,
        },
        "forecast_runs": engine._runs,
        "error_rate": round(engine._failures / engine._runs, 4) if engine._runs else 0.0,
        "nonfinite_forecasts": engine._nonfinite,
        "last_prediction_time": engine._last_prediction_time,
        "data_time": iso(fleet_closed * step) if fleet_closed >= 0 else None,
        "ingest": dict(engine._counters),
        "forgotten": {**forgotten, "forget_after_s": engine.config.forget_after_s},
        "thresholds": engine.thresholds.to_dict(),
        "step_cache": {
            "enabled": engine._steps is not None,
            "last_rows_cached": int(engine._step_rows[0]),
            "last_rows_computed": int(engine._step_rows[1]),
            "bytes": engine._steps.nbytes if engine._steps is not None else 0,
        },
    }


def fleet_history(engine: Engine, steps: int) -> dict[str, Any]:
    """The fleet risk trend (docs/API.md GET /fleet/history), oldest first."""
    with engine._lock:
        return engine._history.fleet_trend(steps, engine.spec.step_seconds)


def server_state(engine: Engine, name: str) -> str | None:
    """One tracked server's :data:`SERVER_STATES` entry, decided as :func:`servers` does;
    None for a name the engine does not track."""
    with engine._lock:
        slot = engine._buf.index.get(name)
        if slot is None:
            return None
        return SERVER_STATES[engine._readiness().states[slot]]


def servers(
    engine: Engine, state: str | None = None, after: str | None = None, limit: int | None = None
) -> tuple[list[dict[str, Any]], int, bool]:
    """The tracked servers (or those in ``state``), by name: profile, state, the time of
    its newest step with a sample (data time), its window's valid steps, and whether the
    model was trained on it. The states are those ``/status`` counts. One page: the first
    ``limit`` (None: all) of those whose name sorts after ``after``; the number of servers in
    all pages; whether more follow this page."""
    from fleetcast.appliance.windows import window_samples
    from fleetcast.contract.schema import VALID_PROFILES

    spec = engine.spec
    with engine._lock:
        r = engine._readiness()
        buf = engine._buf
        n = buf.n
        enc = spec.encoder_length
        samples = window_samples(buf.slot_step, buf.last_step, n, enc, enc)  # all, uncapped
        newest = buf.last_step[:n].copy()
        known = engine._known[:n].copy()
        profile = engine._profile[:n].copy()
        names = list(buf.names)
    untrained = engine.model.profiles_untrained
    states = r.states
    keep = r.used if state is None else r.used & (states == SERVER_STATES.index(state))
    order = sorted(np.flatnonzero(keep).tolist(), key=names.__getitem__)
    first = 0 if after is None else bisect.bisect_right(order, after, key=names.__getitem__)
    page = order[first:] if limit is None else order[first : first + limit]
    step = spec.step_seconds
    rows = [
        {
            "server_name": names[i],
            "profile": VALID_PROFILES[int(profile[i])],
            "state": SERVER_STATES[int(states[i])],
            "newest_step": iso(int(newest[i]) * step) if newest[i] >= 0 else None,
            "steps": int(samples[i]),
            "known": bool(known[i]),
            "profile_trained": (
                None if untrained is None else VALID_PROFILES[int(profile[i])] not in untrained
            ),
        }
        for i in page
    ]
    return rows, len(order), first + len(page) < len(order)
