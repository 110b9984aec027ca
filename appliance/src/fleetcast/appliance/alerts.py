"""Alerts from one forecast's risk: one per (server, metric, horizon) at or above the warning,
and the alerts of servers left out of a forecast, carried over (never resolved for lack of data).

docs/RISK.md#alerts. Shapes: B servers, M metrics, D steps, Q quantiles, H horizons.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.appliance.forecast import iso
from fleetcast.contract.schema import METRIC_COLUMNS

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from fleetcast.appliance.risk import RiskResult

__all__ = [
    "HYSTERESIS",
    "LEFT_OUT",
    "NEVER",
    "AlertKey",
    "Seen",
    "build_alerts",
    "carried_alerts",
    "ordered",
]

AlertKey = tuple[str, str, str]
"""(server_name, metric, horizon)."""

LEFT_OUT = {
    "stale": ("no data since {since}", "has sent no data since {since}"),
    "ahead": (
        "clock ahead of the fleet's (last forecast from data of {since})",
        "stamps its samples ahead of the fleet's clock (its last forecast read data of {since})",
    ),
    "warming": (
        "warming up: too little history to forecast (last forecast from data of {since})",
        "has too little history for the model to forecast it (its last forecast read data "
        "of {since})",
    ),
    "not_finite": (
        "no finite forecast since {since}",
        "has had no finite forecast since {since} (docs/OPERATIONS.md#non-finite-forecasts)",
    ),
}
"""Why a server with alerts was left out of a forecast (an alert's ``left_out``): the
summary's lead and the description's sentence of its kept alerts."""

HYSTERESIS = 0.05
"""An alert raised by the previous forecast stays raised while its probability is at least
``warning - HYSTERESIS``, and a critical one stays critical while it is above ``critical -
HYSTERESIS`` (the margin at most half the gap below each level): a probability that
hovers at a level is one alert, not a firing/resolved pair with every forecast."""

NEVER = -(1 << 62)
"""The step of a level an alert has never reached (:data:`Seen`)."""

Seen = dict[AlertKey, tuple[int, int]]
"""Per raised alert, the newest data steps at which its own probability raised it (at
the warning level or within its hysteresis) and made it critical (:data:`NEVER`: not yet);
the keep-firing window counts from them."""


def build_alerts(
    *,
    names: Sequence[str],
    profiles: Sequence[str],
    quantiles: np.ndarray,
    levels: Sequence[float],
    risk: RiskResult,
    ends: np.ndarray,
    horizons: Mapping[str, int],
    step_seconds: int,
    prediction_time: str,
    since: Mapping[AlertKey, str],
    warning: float,
    critical: float,
    critical_before: Collection[AlertKey] = (),
    seen: Mapping[AlertKey, tuple[int, int]] | None = None,
    keep_steps: int = 0,
) -> tuple[list[dict[str, Any]], dict[AlertKey, str], Seen]:
    """Alerts of B servers, highest probability first, the new ``since`` table and the new
    :data:`Seen` table.

    ``quantiles`` (B, M, D, Q) cleaned; ``ends`` (B,) each server's data step; ``horizons``
    shortest first; ``since``: when each alert still active was first raised (an alert
    absent from the previous forecast starts at ``prediction_time``). ``predicted_value``
    (p50) and ``predicted_p90`` are read at the step of the highest probability within the
    horizon (``at``). ``critical_before``: the alerts that were critical in the previous
    forecast; with ``since`` they set the :data:`HYSTERESIS`.

    Keep firing: an alert stays raised until ``keep_steps`` steps of its server's data have
    passed since its probability last raised it (``seen``), and a critical one stays
    critical as long after its probability last made it critical (docs/RISK.md#alerts): a
    probability that dips for a forecast or two is one alert, not a resolved and a new one.
    """
    seen = seen or {}
    lv = list(levels)
    mid = lv.index(0.5) if 0.5 in lv else len(lv) // 2
    hi = len(lv) - 1
    hnames = list(horizons)
    hsteps = list(horizons.values())
    raised = risk.by_horizon >= warning
    hold = warning - min(HYSTERESIS, warning / 2)
    keep_critical = critical - min(HYSTERESIS, (critical - warning) / 2)
    row = {name: b for b, name in enumerate(names)}
    by_prob = raised.copy()  # raised by the probability itself, not kept
    kept = np.zeros_like(raised)
    held: list[tuple[int, int, int]] = []
    last: list[int] = []
    for key in since:
        name, metric, horizon = key
        b = row.get(name)
        if b is not None and metric in METRIC_COLUMNS and horizon in hnames:
            held.append((b, METRIC_COLUMNS.index(metric), hnames.index(horizon)))
            last.append(seen.get(key, (NEVER, NEVER))[0])
    if held:
        hb, hm, hh = (np.asarray(x, dtype=np.int64) for x in zip(*held, strict=True))
        by_prob[hb, hm, hh] |= risk.by_horizon[hb, hm, hh] >= hold
        if keep_steps > 0:  # 0: none kept, not even by a forecast of the same data step
            kept[hb, hm, hh] = ends[hb] - np.asarray(last, dtype=np.int64) <= keep_steps
        raised |= by_prob | kept
    b_idx, m_idx, h_idx = np.nonzero(raised)
    if b_idx.size == 0:
        return [], {}, {}
    peak = np.stack([np.argmax(risk.step_prob[:, :, :h], axis=-1) for h in hsteps], axis=-1)
    d_idx = peak[b_idx, m_idx, h_idx]
    p50 = np.round(quantiles[b_idx, m_idx, d_idx, mid].astype(np.float64), 3).tolist()
    p90 = np.round(quantiles[b_idx, m_idx, d_idx, hi].astype(np.float64), 3).tolist()
    raw = risk.by_horizon[b_idx, m_idx, h_idx]
    # Severity is decided on the unrounded probability, as the server's colour is
    # (risk.level_of): 0.70003 is red and critical, although it is shown as 0.7.
    severe = (raw > critical).tolist()
    held_severe = (raw > keep_critical).tolist()
    raised_now = by_prob[b_idx, m_idx, h_idx].tolist()
    prob = np.round(raw, 4).tolist()
    thr = risk.thresholds[b_idx, m_idx].tolist()
    when = (ends[b_idx] + 1 + d_idx).tolist()
    data = ends[b_idx].tolist()
    times: dict[int, str] = {}
    alerts = []
    active: dict[AlertKey, str] = {}
    new_seen: Seen = {}
    for i, (b, m, h) in enumerate(zip(b_idx.tolist(), m_idx.tolist(), h_idx.tolist(), strict=True)):
        key = (names[b], METRIC_COLUMNS[m], hnames[h])
        first = since.get(key, prediction_time)
        active[key] = first
        # A new alert starts its own window (a forgotten server's name back has no past).
        was_raised, was_critical = seen.get(key, (NEVER, NEVER)) if key in since else (NEVER, NEVER)
        is_critical = severe[i] or (held_severe[i] and key in critical_before)
        if is_critical:
            was_critical = data[i]
        elif keep_steps > 0 and key in critical_before and data[i] - was_critical <= keep_steps:
            is_critical = True  # kept critical
        new_seen[key] = (data[i] if raised_now[i] else was_raised, was_critical)
        for st in (when[i], data[i]):
            if st not in times:
                times[st] = iso(st * step_seconds)
        alerts.append(
            {
                "server_name": key[0],
                "profile": profiles[b],
                "metric": key[1],
                "horizon": key[2],
                "predicted_value": p50[i],
                "predicted_p90": p90[i],
                "threshold": thr[i],
                "probability": prob[i],
                "severity": "critical" if is_critical else "warning",
                "since": first,
                "at": times[when[i]],
                "data_time": times[data[i]],
                "stale": False,
                "left_out": None,
            }
        )
    return ordered(alerts), active, new_seen


def ordered(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``alerts`` highest probability first (then by server and metric), as served."""
    return sorted(alerts, key=lambda a: (-a["probability"], a["server_name"], a["metric"]))


def carried_alerts(
    previous: Sequence[Mapping[str, Any]], left_out: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The previous set's alerts of the servers this forecast left out that the engine still
    tracks (``left_out``: server → why, :data:`LEFT_OUT`), marked ``stale`` with the reason
    in ``left_out`` (docs/RISK.md#alerts).

    A server leaves the forecast when its data stops (``stale``), its clock runs ahead
    (``ahead``), its forecast is not finite (``not_finite``), or its window is too short for
    the model (``warming``: after a reload to a model that reads more history). None of these is evidence
    that the risk went away: a server that stops reporting while forecast to cross a
    threshold may have crossed it. Its alerts stay as the last forecast that had it raised
    them (``data_time`` says when that was) until it is forecast again, when the usual rules
    and hysteresis apply, or is forgotten (``DELETE /servers/…``, ``forget_after``), which
    resolves them.
    """
    return [
        {**alert, "stale": True, "left_out": left_out[name]}
        for alert in previous
        if (name := alert["server_name"]) in left_out
    ]
