"""One forecast run's results: risk, ServerForecast dicts, fleet summary, alerts, histories.

Split from :mod:`fleetcast.appliance.engine` to keep it small; :meth:`Engine.run_forecast`
calls :func:`assemble` on the quantiles ONNX Runtime returned and caches the result.
These functions are part of the Engine: they use its private state under its lock,
as its methods do; call them through :class:`~fleetcast.appliance.engine.Engine`.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.appliance.engine_types import ForecastSet
from fleetcast.appliance.forecast import iso
from fleetcast.contract.schema import VALID_PROFILES

if TYPE_CHECKING:
    from fleetcast.appliance.engine import Engine

__all__ = ["assemble"]

log = logging.getLogger("fleetcast.appliance.engine")


def _previous_alerts(engine: Engine) -> list[dict[str, Any]]:
    """The alerts of the previous forecast set, or the snapshot's before the first one."""
    return engine._current.alerts if engine._current is not None else engine._restored_alerts


def _critical(previous: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """The (server, metric, horizon) alerts critical in the previous forecast set."""
    return {
        (a["server_name"], a["metric"], a["horizon"])
        for a in previous
        if a["severity"] == "critical"
    }


def assemble(
    engine: Engine,
    names: list[str],
    slots: tuple[np.ndarray, np.ndarray],
    prof: np.ndarray,
    ends: np.ndarray,
    lens: np.ndarray,
    q: np.ndarray,
    fleet_end: int,
) -> ForecastSet:
    """Risk, ServerForecast dicts, fleet summary, alerts and histories of one run.

    ``q``: quantiles (B, M, D, Q) of the ``names`` servers, in that order; ``slots``
    their buffer slots (B,) and those slots' generations (B,) when their windows were built;
    ``prof`` (B,) their contract profile indices, ``ends``/``lens`` (B,) their windows' last
    step and length. Records the run in the engine's histories and makes it the current
    forecast, which it returns: without the servers forgotten while the model ran
    (:func:`~fleetcast.appliance.engine_forget.drop_current`), and without those whose
    forecast is not finite (counted, logged: a NaN is no forecast, and never a green one).
    """
    from fleetcast.appliance.alerts import build_alerts
    from fleetcast.appliance.engine_forget import drop_current
    from fleetcast.appliance.engine_state import keep_alerts
    from fleetcast.appliance.forecast import clean_quantiles, server_forecast
    from fleetcast.appliance.risk import driver_horizons, fleet_summary, levels_of, risk_of

    finite = np.isfinite(q).all(axis=(1, 2, 3))
    bad: list[str] = []
    if not finite.all():
        keep = np.flatnonzero(finite)
        bad = [names[b] for b in np.flatnonzero(~finite).tolist()]
        engine._nonfinite += len(bad)
        log.warning(
            "the forecast of %d servers is not finite (e.g. %r): left out of this set (their "
            "alerts are kept, marked stale); a window holding a value the model cannot take? "
            "(docs/OPERATIONS.md#non-finite-forecasts)",
            len(bad),
            bad[:3],
        )
        names = [names[b] for b in keep.tolist()]
        slots = (slots[0][keep], slots[1][keep])
        prof, ends, lens, q = prof[keep], ends[keep], lens[keep], q[keep]
    spec = engine.spec
    cfg = engine.config
    step = spec.step_seconds
    q = clean_quantiles(q)
    levels = list(spec.quantiles)
    horizons = engine.horizons
    hnames = list(horizons)
    th = engine.thresholds.for_profiles(prof)
    risk = risk_of(q, levels, th, list(horizons.values()))
    profile_names = [VALID_PROFILES[p] for p in prof.tolist()]
    pred_time = iso((fleet_end + 1) * step)
    times: dict[int, str] = {}

    def at(st: int) -> str:
        if st not in times:
            times[st] = iso(st * step)
        return times[st]

    hidx = [s - 1 for s in horizons.values()]
    at_h = np.round(q[:, :, hidx, :].astype(np.float64), 3).tolist()
    r_h = np.round(risk.server_by_horizon, 4).tolist()
    m_h = np.round(risk.by_horizon, 4).tolist()
    # Decided on the unrounded probabilities, as the fleet summary and the alerts are.
    level_l = levels_of(
        risk.server_by_horizon[:, -1], cfg.warning_probability, cfg.critical_probability
    )
    drive_l = driver_horizons(risk.by_horizon, cfg.warning_probability).tolist()
    th_l = th.tolist()
    servers = []
    for b, name in enumerate(names):
        end = int(ends[b])
        servers.append(
            server_forecast(
                name=name,
                profile=profile_names[b],
                prediction_time=at(end + 1),
                data_time=at(end),
                encoder_steps=int(lens[b]),
                encoder_length=spec.encoder_length,
                at_horizons=at_h[b],
                levels=levels,
                horizons=hnames,
                risk_by_horizon=r_h[b],
                metric_by_horizon=m_h[b],
                thresholds=th_l[b],
                risk_level=level_l[b],
                driver_horizons=drive_l[b],
            )
        )
    fleet = fleet_summary(
        risk.server_by_horizon,
        profile_names,
        hnames,
        cfg.warning_probability,
        cfg.critical_probability,
    )
    seen_before = engine._alert_seen
    alerts, engine._alert_since, engine._alert_seen = build_alerts(
        names=names,
        profiles=profile_names,
        quantiles=q,
        levels=levels,
        risk=risk,
        ends=ends,
        horizons=horizons,
        step_seconds=step,
        prediction_time=pred_time,
        since=engine._alert_since,
        warning=cfg.warning_probability,
        critical=cfg.critical_probability,
        critical_before=_critical(_previous_alerts(engine)),
        seen=engine._alert_seen,
        keep_steps=math.ceil(cfg.alert_keep_firing_s / step),
    )
    order = np.argsort(-risk.risk, kind="stable")
    fs = ForecastSet(
        prediction_time=pred_time,
        data_time=iso(fleet_end * step),
        model_version=spec.model_version,
        servers=[servers[i] for i in order.tolist()],
        fleet=fleet,
        alerts=alerts,
    )
    idx, gens = slots
    with engine._lock:
        previous = _previous_alerts(engine)
        engine._current, engine._restored_alerts = fs, []
        keep_alerts(engine, previous, set(names), bad)  # servers left out keep theirs
        # ... and their keep-firing windows, for when they are forecast again.
        for key in engine._alert_since.keys() - engine._alert_seen.keys():
            if key in seen_before:
                engine._alert_seen[key] = seen_before[key]
        engine._current_q = q
        engine._current_rows = {name: b for b, name in enumerate(names)}
        engine._current_risk = risk.server_by_horizon
        engine._current_profiles = profile_names
        alive = engine._buf.generation[idx] == gens
        if not alive.all():  # forgotten while the model ran: gone from this set too
            gone = {names[b] for b in np.flatnonzero(~alive).tolist()}
            drop_current(engine, gone)
            engine._alert_since = {
                key: since for key, since in engine._alert_since.items() if key[0] not in gone
            }
        current = engine._current
        engine._history.record(
            idx[alive], ends[alive].astype(np.int64), risk.risk[alive], fleet_end, current.fleet
        )
    return current
