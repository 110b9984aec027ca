"""Model output → the API's ServerForecast dicts (docs/API.md), decoded names, never tensors.

Shapes: B servers, M = 4 metrics (contract order), D prediction steps, Q quantiles.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.schema import METRIC_COLUMNS, METRIC_RANGES

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "clean_quantiles",
    "curves",
    "iso",
    "quantile_names",
    "server_forecast",
]

_LOW = np.array([METRIC_RANGES[m][0] for m in METRIC_COLUMNS], dtype=np.float32)
_HIGH = np.array([METRIC_RANGES[m][1] for m in METRIC_COLUMNS], dtype=np.float32)


def iso(epoch_seconds: int | float) -> str:
    """ISO 8601 UTC with a ``Z``: ``2026-11-27T10:05:00Z``."""
    return datetime.fromtimestamp(int(epoch_seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_of(iso_time: str) -> float:
    """Epoch seconds of an ISO 8601 time as :func:`iso` writes it (``Z`` or an offset)."""
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def quantile_names(levels: Sequence[float]) -> list[str]:
    """``[0.1, 0.5, 0.9]`` → ``["p10", "p50", "p90"]``."""
    return [f"p{round(q * 100):d}" for q in levels]


def clean_quantiles(q: np.ndarray) -> np.ndarray:
    """Clamp (B, M, D, Q) quantiles to the contract ranges and sort them along Q (in place).

    A quantile crossing (p10 above p50) is possible in a quantile-loss model; sorting keeps
    the bounds meaningful. Non-finite values become the range's lower bound.
    """
    np.nan_to_num(q, copy=False, nan=0.0, posinf=np.float32(3.0e38), neginf=0.0)
    np.clip(q, _LOW[None, :, None, None], _HIGH[None, :, None, None], out=q)
    # A compare-exchange sorting network along the short Q axis (much faster than sort()).
    n = q.shape[-1]
    for i in range(n - 1):
        for j in range(n - 1 - i):
            lo = np.minimum(q[..., j], q[..., j + 1])
            np.maximum(q[..., j], q[..., j + 1], out=q[..., j + 1])
            q[..., j] = lo
    return q


def server_forecast(
    *,
    name: str,
    profile: str,
    prediction_time: str,
    data_time: str,
    encoder_steps: int,
    encoder_length: int,
    at_horizons: list[list[list[float]]],
    levels: Sequence[float],
    horizons: Sequence[str],
    risk_by_horizon: list[float],
    metric_by_horizon: list[list[float]],
    thresholds: list[float],
    risk_level: str,
    driver_horizons: list[int],
) -> dict[str, Any]:
    """One ServerForecast (docs/API.md) from plain lists (built once per run, vectorised).

    ``at_horizons`` [M][H][Q]: cleaned quantiles at each horizon's step (rounded);
    ``risk_by_horizon`` [H] and ``metric_by_horizon`` [M][H]: exceedance probabilities
    (rounded); ``thresholds`` [M] in the metric's unit. ``predictions`` hold the p50 (the
    0.5 quantile, else the middle one). ``risk_level`` and ``driver_horizons`` are decided
    on the unrounded probabilities (:func:`~fleetcast.appliance.risk.levels_of`,
    :func:`~fleetcast.appliance.risk.driver_horizons`), so a risk shown as 0.7 may be red.
    ``drivers``: the metrics with a driver horizon (>= 0: the shortest horizon at which
    the probability reaches the warning level), largest first.
    """
    names = quantile_names(levels)
    qdict = {
        qn: {
            h: {m: at_horizons[j][i][k] for j, m in enumerate(METRIC_COLUMNS)}
            for i, h in enumerate(horizons)
        }
        for k, qn in enumerate(names)
    }
    mid = names[list(levels).index(0.5)] if 0.5 in levels else names[len(names) // 2]
    risk = risk_by_horizon[-1]
    drivers = []
    for j, m in enumerate(METRIC_COLUMNS):
        first = driver_horizons[j]
        if first >= 0:
            drivers.append(
                {
                    "metric": m,
                    "horizon": horizons[first],
                    "probability": metric_by_horizon[j][-1],
                    "threshold": thresholds[j],
                }
            )
    drivers.sort(key=lambda x: -x["probability"])
    return {
        "server_name": name,
        "profile": profile,
        "prediction_time": prediction_time,
        "data_time": data_time,
        "encoder_steps": int(encoder_steps),
        "short_history": bool(encoder_steps < encoder_length),
        "predictions": qdict[mid],
        "quantiles": qdict,
        "risk": risk,
        "risk_level": risk_level,
        "risk_by_horizon": dict(zip(horizons, risk_by_horizon, strict=True)),
        "drivers": drivers,
    }


def curves(quantiles: np.ndarray, levels: Sequence[float]) -> dict[str, dict[str, list[float]]]:
    """Full curves per metric and quantile from (M, D, Q): ``{metric: {"p10": [...D], ...}}``."""
    names = quantile_names(levels)
    return {
        m: {
            qn: np.round(quantiles[j, :, k].astype(np.float64), 3).tolist()
            for k, qn in enumerate(names)
        }
        for j, m in enumerate(METRIC_COLUMNS)
    }
