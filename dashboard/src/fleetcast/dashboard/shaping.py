"""Turn API bodies into the rows the panels show: heatmap cells, top servers, tables.

Pure functions over the Structs of :mod:`fleetcast.dashboard.api`; they reorder and format
what the appliance sent and compute no forecast. Server names and profiles only, never IDs.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fleetcast.contract.schema import HORIZONS, METRIC_COLUMNS, VALID_PROFILES

from .api import TrackedServer, parse_time
from .risk import LEVEL_COLOURS, LEVEL_TEXT_COLOURS, LEVELS, UNKNOWN, risk_level, server_level

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from .api import Alert, ServerDetail, ServerForecast

__all__ = [
    "GAP_FACTOR",
    "break_gaps",
    "curve_frame",
    "format_risk",
    "group_alerts",
    "heatmap_cells",
    "kept_because",
    "no_forecast_note",
    "profile_order",
    "server_thresholds",
    "top_servers",
]


GAP_FACTOR = 1.5
"""Two points further apart than this many steps are not joined: the plot shows a gap."""


def break_gaps(
    times: list[datetime | None], columns: dict[str, list[float]], step_seconds: float | None
) -> tuple[list[datetime | None], dict[str, list[float]]]:
    """Insert a NaN row wherever consecutive times are more than ``GAP_FACTOR`` steps apart.

    Bokeh joins consecutive points of a line (and stacks bars only where there is data), so
    without the NaN row a line is drawn straight across time that has no data, e.g. from a
    forecast made mid-backfill to the points a day later. The NaN row sits one step after
    the point before the gap; no value is invented. ``columns`` hold one float per time.
    """
    step = float(step_seconds or 300)
    out_times: list[datetime | None] = []
    out: dict[str, list[float]] = {k: [] for k in columns}
    previous: datetime | None = None
    for i, ts in enumerate(times):
        if (
            previous is not None
            and ts is not None
            and (ts - previous).total_seconds() > GAP_FACTOR * step
        ):
            out_times.append(previous + timedelta(seconds=step))
            for values in out.values():
                values.append(math.nan)
        out_times.append(ts)
        for key, values in columns.items():
            out[key].append(values[i])
        if ts is not None:
            previous = ts
    return out_times, out


def format_risk(risk: float | None, level: str | None = None) -> str:
    """``0.42`` → ``"0.42"``; a missing risk → ``"n/a"`` (never a made-up number).

    Two decimals, and more where two would put the number on the other side of a colour
    boundary than its level (``level``: the one the appliance decided, else
    :func:`~fleetcast.dashboard.risk.risk_level` of ``risk``): 0.296 is green and reads
    ``"0.296"``, not ``"0.30"`` beside a legend that calls 0.3 yellow; 0.704 reads
    ``"0.704"``, red, not ``"0.70"``. A risk the appliance sent rounded to 4 decimals on the
    boundary (0.7 for a red 0.70003) reads ``">0.70"`` (``"<0.30"`` for green).
    """
    if risk is None or math.isnan(risk):
        return "n/a"
    level = level if level in LEVELS else risk_level(risk)
    for digits in (2, 3, 4):
        text = f"{risk:.{digits}f}"
        if risk_level(float(text)) == level:
            return text
    return {"red": ">", "green": "<"}.get(level, "") + f"{risk:.2f}"


def profile_order(profile: str) -> tuple[int, str]:
    """Sort key: the contract's profile order first, unknown profiles after, by name."""
    try:
        return (VALID_PROFILES.index(profile), profile)
    except ValueError:
        return (len(VALID_PROFILES), profile)


def _risk_sort_key(forecast: ServerForecast) -> tuple[float, str]:
    risk = forecast.risk if forecast.risk is not None else -1.0
    return (-risk, forecast.server_name)


def top_servers(servers: list[ServerForecast], n: int) -> list[ServerForecast]:
    """The ``n`` riskiest servers, riskiest first (ties by name; no-risk servers last)."""
    return sorted(servers, key=_risk_sort_key)[: max(0, n)]


def _tooltip(forecast: ServerForecast) -> str:
    level = server_level(forecast.risk, forecast.risk_level)
    lines = [
        f"{forecast.server_name} ({forecast.profile})",
        f"risk {format_risk(forecast.risk, level)} — {level}",
    ]
    by_h = forecast.risk_by_horizon
    if by_h:
        lines.append(" · ".join(f"{h} {format_risk(by_h.get(h))}" for h in HORIZONS))
    p50 = forecast.predictions.get("8hr", {})
    if p50:
        values = [f"{m} {p50[m]:.1f}" for m in METRIC_COLUMNS if p50.get(m) is not None]
        lines.append("8hr p50: " + ", ".join(values))
    for driver in forecast.drivers[:3]:
        limit = "" if driver.threshold is None else f" > {driver.threshold:g}"
        lines.append(
            f"driver: {driver.metric}{limit} at {driver.horizon} (p={driver.probability:.2f})"
        )
    if forecast.short_history:
        lines.append("short history: forecast from fewer steps than the model's context")
    return "\n".join(lines)


UNFORECAST_WHY: dict[str, str] = {
    "stale": "its data stopped (more than an hour behind the fleet); its alerts are kept",
    "ahead": "its clock runs in the future of the fleet's",
    "warming": "warming up: too few steps of data yet",
}
"""Why a server the appliance tracks has no forecast, by its state (docs/RISK.md#buckets)."""


def no_forecast_note(server: TrackedServer) -> str:
    """``ppdb007 (database) has no forecast: its data stopped …; newest data …``."""
    why = UNFORECAST_WHY.get(server.state or "", f"state {server.state}")
    newest = f"; newest data {server.newest_step}" if server.newest_step else ""
    return f"{server.server_name} ({server.profile or 'unknown profile'}) has no forecast: {why}{newest}"


def heatmap_cells(
    servers: list[ServerForecast], unforecast: Sequence[TrackedServer] = ()
) -> list[dict[str, Any]]:
    """One dict per server for the heatmap, grouped by profile (contract order), then by name.

    Keys: name, profile, risk (float or None), label ("0.42"), level, colour, text_colour, tooltip.
    ``unforecast``: servers the appliance tracks without a forecast (stale, ahead, warming),
    grey cells labelled by their state, never a made-up risk; one also in ``servers`` (it
    was forecast meanwhile) is shown by its forecast.
    """
    forecast_names = {s.server_name for s in servers}
    rows: list[ServerForecast | TrackedServer] = [*servers]
    rows += [u for u in unforecast if u.server_name not in forecast_names]
    ordered = sorted(rows, key=lambda s: (profile_order(s.profile or ""), s.server_name))
    cells = []
    for forecast in ordered:
        if isinstance(forecast, TrackedServer):
            cells.append(
                {
                    "name": forecast.server_name,
                    "profile": forecast.profile or "",
                    "risk": None,
                    "label": forecast.state or "no forecast",
                    "level": UNKNOWN,
                    "colour": LEVEL_COLOURS[UNKNOWN],
                    "text_colour": LEVEL_TEXT_COLOURS[UNKNOWN],
                    "tooltip": no_forecast_note(forecast),
                }
            )
            continue
        level = server_level(forecast.risk, forecast.risk_level)
        cells.append(
            {
                "name": forecast.server_name,
                "profile": forecast.profile,
                "risk": forecast.risk,
                "label": format_risk(forecast.risk, level),
                "level": level,
                "colour": LEVEL_COLOURS[level],
                "text_colour": LEVEL_TEXT_COLOURS[level],
                "tooltip": _tooltip(forecast),
            }
        )
    return cells


def server_thresholds(
    detail: ServerDetail | ServerForecast, fallback: dict[str, float] | None = None
) -> dict[str, float]:
    """Alert threshold per metric for one server: the appliance's own numbers only.

    From ``thresholds`` of ``/predictions/{name}`` when present, then the drivers, then
    ``fallback`` (``/status`` thresholds). A metric without one gets no threshold line.
    """
    result: dict[str, float] = dict(fallback or {})
    for driver in detail.drivers:
        if driver.threshold is not None:
            result.setdefault(driver.metric, float(driver.threshold))
    result.update(getattr(detail, "thresholds", {}) or {})
    return result


def curve_frame(detail: ServerDetail) -> dict[str, dict[str, list[Any]]]:
    """Per metric: ``{"time": [...], "p10": [...], "p50": [...], "p90": [...]}`` for plotting.

    Times are ``start + i * step_seconds``; a curve without ``start`` falls back to
    ``data_time + step`` (the step after the last observed one). Metrics missing from
    ``curves`` are left out.
    """
    start: datetime | None = parse_time(detail.start)
    step = timedelta(seconds=detail.step_seconds or 300)
    if start is None:
        data_time = parse_time(detail.data_time)
        start = data_time + step if data_time is not None else None
    frames: dict[str, dict[str, list[Any]]] = {}
    if start is None:
        return frames
    for metric in METRIC_COLUMNS:
        curves = detail.curves.get(metric)
        if not curves or not curves.get("p50"):
            continue
        n = len(curves["p50"])
        frame: dict[str, list[Any]] = {"time": [start + i * step for i in range(n)]}
        for q in ("p10", "p50", "p90"):
            values = curves.get(q) or [None] * n
            frame[q] = [float("nan") if v is None else float(v) for v in values[:n]]
        frames[metric] = frame
    return frames


def group_alerts(alerts: Sequence[Alert]) -> list[tuple[Alert, list[str]]]:
    """One row per (server, metric): its alert at the shortest horizon, with the longer
    horizons that alert too. A crossing within 30 min also alerts for 1hr and 8hr (the
    probabilities are maxima over growing windows, docs/RISK.md#alerts), so a flat list
    showed every crossing three times. Rows by their group's highest probability, first."""
    order = {h: i for i, h in enumerate(HORIZONS)}
    groups: dict[tuple[str, str], list[Alert]] = {}
    for alert in alerts:
        groups.setdefault((alert.server_name, alert.metric), []).append(alert)
    ranked = []
    for members in groups.values():
        members.sort(key=lambda a: order.get(a.horizon or "", len(order)))
        peak = max((a.probability or 0.0) for a in members)
        first = members[0]
        ranked.append((-peak, first.server_name, first.metric, first, members[1:]))
    ranked.sort(key=lambda r: r[:3])
    return [(first, [a.horizon or "" for a in longer]) for *_, first, longer in ranked]


def kept_because(alert: Alert) -> str:
    """Why a kept (``stale``) alert's server is not forecast, for its row: ``no data since
    10:05`` (its data stopped), ``clock ahead…`` or ``no finite forecast since…``."""
    since = alert.data_time or "its last forecast"
    if alert.left_out == "ahead":
        return f"clock ahead of the fleet's; last forecast from data of {since}"
    if alert.left_out == "not_finite":
        return f"no finite forecast since {since}"
    if alert.left_out == "warming":
        return f"warming up: too little history to forecast; last forecast from data of {since}"
    return f"no data since {since}"
