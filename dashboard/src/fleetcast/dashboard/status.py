"""A lenient reader of ``GET /status``: the Advanced panel's facts, by name.

``/status`` is a debugging body that grows over time (docs/API.md), so it is kept as the raw
dict (shown verbatim in the Advanced panel) and read through :class:`StatusInfo`, which
returns ``None`` for any fact the appliance did not report instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["StatusInfo", "dig"]


def dig(body: Any, *path: str) -> Any:
    """``body[path[0]][path[1]]...`` or ``None`` where any step is missing or not a dict."""
    node = body
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class StatusInfo:
    """The facts of one ``/status`` body the dashboard shows; ``raw`` is the body itself."""

    raw: dict[str, Any]

    @property
    def model_version(self) -> str | None:
        """The model version (``model.version``)."""
        return dig(self.raw, "model", "version")

    @property
    def bundle_id(self) -> str | None:
        """The bundle the ONNX file was exported from (``model.bundle_id``)."""
        return dig(self.raw, "model", "bundle_id")

    @property
    def contract_version(self) -> str | None:
        """The data contract version the model was trained on."""
        return dig(self.raw, "model", "contract_version")

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime execution providers in use, best first."""
        value = dig(self.raw, "model", "providers")
        return [str(v) for v in value] if isinstance(value, list) else []

    def servers(self, key: str) -> int | None:
        """A server count: ``key`` in known/ready/warming/stale/ahead/unknown."""
        value = _number(dig(self.raw, "servers", key))
        return None if value is None else int(value)

    @property
    def step_seconds(self) -> float | None:
        """Seconds per model step (``model.step_seconds``; 300 for the contract's 5 minutes)."""
        value = _number(dig(self.raw, "model", "step_seconds"))
        return value if value is not None and value > 0 else None

    @property
    def predictions_per_second(self) -> float | None:
        """Forecasts produced per second, as the appliance measures it."""
        return _number(self.raw.get("predictions_per_second"))

    def latency_ms(self, key: str) -> float | None:
        """Inference latency in ms: ``key`` in avg/p99."""
        for name in ("inference_latency_ms", "latency_ms", "inference_ms"):
            value = _number(dig(self.raw, name, key))
            if value is not None:
                return value
        return None

    @property
    def error_rate(self) -> float | None:
        """Fraction of failed inference batches."""
        return _number(self.raw.get("error_rate"))

    @property
    def uptime_s(self) -> float | None:
        """Seconds since the appliance started."""
        return _number(self.raw.get("uptime_s"))

    @property
    def last_prediction_time(self) -> str | None:
        """ISO time of the appliance's latest forecast set, or ``None`` before the first."""
        value = self.raw.get("last_prediction_time")
        return None if value is None else str(value)

    @property
    def demo_enabled(self) -> bool:
        """True when the appliance runs its demo source (``--demo``)."""
        return dig(self.raw, "demo", "enabled") is True

    @property
    def demo_scenario(self) -> str | None:
        """The demo scenario now running (healthy/degrading/critical)."""
        value = dig(self.raw, "demo", "scenario")
        return None if value is None else str(value)

    @property
    def source(self) -> str | None:
        """The metric source and its own health, e.g. ``"demo (source healthy)"``.

        ``source.healthy`` says whether the source delivers metrics, not how the fleet is.
        """
        kind = dig(self.raw, "source", "kind")
        if kind is None:
            return None
        healthy = dig(self.raw, "source", "healthy")
        health = {True: "source healthy", False: "source unhealthy"}.get(healthy, "health n/a")
        return f"{kind} ({health})"

    def thresholds_for(self, profile: str) -> dict[str, float]:
        """Alert threshold per metric for servers of ``profile``, as ``/status`` reports them.

        Accepts ``thresholds: {metric: {profile: value}}`` (per profile) and
        ``thresholds: {metric: value}`` (one for all); empty when the appliance sends none.
        """
        table = self.raw.get("thresholds")
        if not isinstance(table, dict):
            return {}
        result: dict[str, float] = {}
        for metric, value in table.items():
            if isinstance(value, dict):
                value = value.get(profile)
            number = _number(value)
            if number is not None:
                result[str(metric)] = number
        return result
