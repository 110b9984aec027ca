"""Risk from the model's quantiles: exceedance probabilities, levels, alerts, fleet summary.

Everything here is derived from the forecast quantiles only (codex: model-first, no
heuristics). docs/RISK.md explains the model and the default thresholds; the functions
state their array shapes (B = servers, M = metrics, D = steps, Q = quantiles).

- :func:`exceedance_probability`: P(X > threshold) from a piecewise-linear CDF through the
  quantile points (p10 → 0.1, p50 → 0.5, p90 → 0.9), extended beyond the outer quantiles
  with the slope of the neighbouring segment and clipped to [0, 1].
- "Within the horizon" = the maximum per-step probability over steps 1 … h.
- Server risk = the maximum over metrics of the 8hr (longest horizon) probability.
- Fleet incident probability per horizon = 1 − Π(1 − risk_server), servers independent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.schema import METRIC_COLUMNS, VALID_PROFILES

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "DEFAULT_THRESHOLDS",
    "RiskResult",
    "Thresholds",
    "driver_horizons",
    "exceedance_probability",
    "fleet_summary",
    "horizon_probabilities",
    "level_masks",
    "level_of",
    "levels_of",
    "risk_of",
]

DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "cpu_pct": {
        "default": 90.0,
        "generic": 85.0,
        # Batch profiles saturate their CPUs by design: 100 keeps P(X > 100) <= 0.1 (green).
        "ml_compute": 100.0,
        "data_ingest": 100.0,
        "risk_analytics": 100.0,
    },
    "mem_pct": {
        "default": 92.0,
        "database": 97.0,
        "web_api": 95.0,
        "data_ingest": 94.0,
        "conductor_mgmt": 90.0,
        "risk_analytics": 90.0,
        "generic": 90.0,
    },
    "disk_io_mb_s": {
        "default": 200.0,
        "ml_compute": 1000.0,
        "database": 1200.0,
        "web_api": 150.0,
        "conductor_mgmt": 60.0,
        "data_ingest": 1500.0,
        "risk_analytics": 300.0,
        "generic": 150.0,
    },
    "latency_ms": {
        "default": 500.0,
        "ml_compute": 500.0,
        "database": 200.0,
        "web_api": 1000.0,
        "conductor_mgmt": 200.0,
        "data_ingest": 800.0,
        "risk_analytics": 3500.0,
        "generic": 200.0,
    },
}
"""Alert thresholds per metric, in the metric's own unit; ``default`` covers every profile not
listed. Rationale per value: docs/RISK.md#thresholds."""

RISK_DOC = "docs/RISK.md"


class Thresholds:
    """A (profile, metric) matrix of thresholds built from defaults plus overrides.

    ``overrides``: ``{metric: {"default": x, profile: y, ...}}``, merged over
    :data:`DEFAULT_THRESHOLDS` (a metric's ``default`` replaces its default for the profiles
    the override does not name). Unknown metrics, profiles or non-positive values raise
    ValueError.
    """

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, float]] | None = None,
        profiles: Sequence[str] = VALID_PROFILES,
        metrics: Sequence[str] = METRIC_COLUMNS,
    ) -> None:
        self.profiles = tuple(profiles)
        self.metrics = tuple(metrics)
        merged: dict[str, dict[str, float]] = {m: dict(v) for m, v in DEFAULT_THRESHOLDS.items()}
        for metric, table in (overrides or {}).items():
            if metric not in merged:
                raise ValueError(
                    f"Unknown metric {metric!r} in the risk thresholds; expected one of "
                    f"{list(METRIC_COLUMNS)}. Fix the thresholds setting. See {RISK_DOC}#configuration."
                )
            if not hasattr(table, "items"):
                table = {"default": table}  # a bare number: one threshold for every profile
            for key, value in table.items():
                if key != "default" and key not in self.profiles:
                    raise ValueError(
                        f"Unknown profile {key!r} in the thresholds of {metric}; expected "
                        f"'default' or one of {list(self.profiles)}. See {RISK_DOC}#configuration."
                    )
                # bool is an int in Python: `true` in a TOML file is no threshold of 1.0.
                number = isinstance(value, int | float) and not isinstance(value, bool)
                if not (number and np.isfinite(value) and value > 0):
                    raise ValueError(
                        f"Threshold {metric}/{key} must be a positive number in "
                        f"the metric's own unit, got {value!r}. See {RISK_DOC}#configuration."
                    )
                merged[metric][key] = float(value)
            if "default" in table:
                # A new default applies to the profiles the override does not name.
                for p in self.profiles:
                    if p not in table and p in DEFAULT_THRESHOLDS[metric]:
                        merged[metric][p] = float(table["default"])
        self.table = merged
        self.matrix = np.array(
            [[merged[m].get(p, merged[m]["default"]) for m in self.metrics] for p in self.profiles],
            dtype=np.float64,
        )
        """(n_profiles, n_metrics) thresholds."""

    def of(self, profile: str, metric: str) -> float:
        """The threshold of one profile and metric."""
        return float(self.matrix[self.profiles.index(profile), self.metrics.index(metric)])

    def for_profiles(self, profile_codes: np.ndarray) -> np.ndarray:
        """(B, M) thresholds for servers with contract profile indices ``profile_codes`` (B,)."""
        return self.matrix[profile_codes]

    def to_dict(self) -> dict[str, dict[str, float]]:
        """Effective thresholds per metric and profile (for /status and docs)."""
        return {
            m: {p: float(self.matrix[i, j]) for i, p in enumerate(self.profiles)}
            for j, m in enumerate(self.metrics)
        }


def exceedance_probability(
    quantiles: np.ndarray, levels: Sequence[float], threshold: np.ndarray | float
) -> np.ndarray:
    """P(X > threshold) for each distribution given by sorted quantiles.

    ``quantiles`` (..., Q) ascending along the last axis at probability ``levels`` (Q,);
    ``threshold`` broadcasts against ``quantiles[..., 0]``. The CDF is linear between
    quantile points and continues with the slope of the outer segments beyond them, clipped
    to [0, 1]. Zero-width segments get a width of 1e-6·(1 + |q|), i.e. a near-step.
    Returns (...) float64 in [0, 1].
    """
    q = np.asarray(quantiles, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.float64)
    if q.shape[-1] != lv.shape[0] or lv.shape[0] < 2:
        raise ValueError(
            f"Expected quantiles (..., {lv.shape[0]}) for levels {list(lv)}, got shape {q.shape}."
        )
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), q.shape[:-1])
    cdf = None
    for k in range(lv.shape[0] - 1):
        hi = q[..., k + 1]
        width = np.maximum(hi - q[..., k], 1e-6 * (1.0 + np.abs(hi)))
        # A (near) zero-width segment is a near-step that ends at its value, so that
        # F(value) includes the value's mass: with p50 = p90 = 100 (cpu clamped at the
        # contract's maximum) P(X > 100) is 1 - 0.9, not 1 - 0.5. Wider segments: lo = q_k.
        lo = np.minimum(q[..., k], hi - width)
        val = lv[k] + (lv[k + 1] - lv[k]) / width * (t - lo)
        # Segment k covers [q_k, q_k+1); the first also the lower tail, the last the upper.
        cdf = val if cdf is None else np.where(t >= lo, val, cdf)
    return 1.0 - np.clip(cdf, 0.0, 1.0)


def horizon_probabilities(step_probs: np.ndarray, horizons: Sequence[int]) -> np.ndarray:
    """Max over steps 1..h: ``step_probs`` (..., D) → (..., H) for horizons in steps (h <= D)."""
    running = np.maximum.accumulate(step_probs, axis=-1)
    idx = np.asarray([h - 1 for h in horizons], dtype=np.int64)
    return running[..., idx]


def level_of(p: float, warning: float = 0.3, critical: float = 0.7) -> str:
    """Codex colour of a risk: green < warning <= yellow <= critical < red."""
    if p > critical:
        return "red"
    if p >= warning:
        return "yellow"
    return "green"


def level_masks(
    risks: np.ndarray, warning: float = 0.3, critical: float = 0.7
) -> tuple[np.ndarray, np.ndarray]:
    """(red, yellow) masks of ``risks`` (B,): :func:`level_of`'s rule, vectorised. The one
    place the fleet counts and the servers' levels read it, so they cannot disagree."""
    red = risks > critical
    return red, (risks >= warning) & ~red


def levels_of(risks: np.ndarray, warning: float = 0.3, critical: float = 0.7) -> list[str]:
    """:func:`level_of` of every risk in ``risks`` (B,), on the unrounded values."""
    red, yellow = level_masks(risks, warning, critical)
    return np.where(red, "red", np.where(yellow, "yellow", "green")).tolist()


def driver_horizons(by_horizon: np.ndarray, warning: float) -> np.ndarray:
    """(B, M) index of the shortest horizon whose probability in ``by_horizon`` (B, M, H)
    reaches ``warning``, or -1 when none does (the probabilities grow with the horizon, so
    a metric drives its server's risk when its longest horizon reaches the level)."""
    hit = by_horizon >= warning
    return np.where(hit[..., -1], np.argmax(hit, axis=-1), -1)


@dataclass
class RiskResult:
    """Risk of B servers. Shapes: step_prob (B, M, D), by_horizon (B, M, H), server (B, H)."""

    step_prob: np.ndarray
    by_horizon: np.ndarray
    server_by_horizon: np.ndarray
    thresholds: np.ndarray
    """(B, M) thresholds used."""

    @property
    def risk(self) -> np.ndarray:
        """(B,) server risk = the longest horizon's max over metrics."""
        return self.server_by_horizon[:, -1]


def risk_of(
    quantiles: np.ndarray,
    levels: Sequence[float],
    thresholds: np.ndarray,
    horizons: Sequence[int],
) -> RiskResult:
    """Risk of B servers from ``quantiles`` (B, M, D, Q) and ``thresholds`` (B, M)."""
    step = exceedance_probability(quantiles, levels, thresholds[:, :, None])
    by_h = horizon_probabilities(step, horizons)
    return RiskResult(
        step_prob=step,
        by_horizon=by_h,
        server_by_horizon=by_h.max(axis=1),
        thresholds=thresholds,
    )


def fleet_summary(
    server_by_horizon: np.ndarray,
    profiles: Sequence[str],
    horizon_names: Sequence[str],
    warning: float = 0.3,
    critical: float = 0.7,
) -> dict[str, Any]:
    """FleetSummary of docs/API.md from (B, H) server risks and the servers' profile names."""
    b = server_by_horizon.shape[0]
    risk = server_by_horizon[:, -1] if b else np.zeros(0)
    red, yellow = level_masks(risk, warning, critical)
    green = ~(red | yellow)
    incident = {}
    for j, name in enumerate(horizon_names):
        p = np.clip(server_by_horizon[:, j], 0.0, 1.0) if b else np.zeros(0)
        # 1 - Π(1 - p) computed as -expm1(Σ log1p(-p)); written 0.0 - x so that an empty
        # or all-green fleet reports 0.0, not -0.0 (-expm1(0.0) is negative zero).
        incident[name] = 0.0 - float(np.expm1(np.sum(np.log1p(-np.minimum(p, 1.0 - 1e-12)))))
    by_profile: dict[str, dict[str, Any]] = {}
    prof = np.asarray(profiles, dtype=object)
    for p in sorted(set(profiles)):
        mask = prof == p
        by_profile[p] = {
            "servers": int(mask.sum()),
            "green": int((green & mask).sum()),
            "yellow": int((yellow & mask).sum()),
            "red": int((red & mask).sum()),
            "mean_risk": float(risk[mask].mean()) if mask.any() else 0.0,
        }
    return {
        "servers": int(b),
        "green": int(green.sum()),
        "yellow": int(yellow.sum()),
        "red": int(red.sum()),
        "mean_risk": float(risk.mean()) if b else 0.0,
        "incident_probability": incident,
        "by_profile": by_profile,
    }
