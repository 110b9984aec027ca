"""Typed views of the appliance's JSON bodies (docs/API.md), parsed with msgspec.

The dashboard is a pure client: these Structs mirror what the appliance sends and nothing
here computes a forecast. Fields the dashboard cannot work without are required; the rest
default, so an older or newer appliance that adds fields still parses. A body that does not
fit raises :class:`ApiFormatError` with the codex's four parts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from fleetcast.contract.errors import explain

__all__ = [
    "Alert",
    "ApiFormatError",
    "CurrentPredictions",
    "Driver",
    "FleetHistory",
    "FleetSummary",
    "ProfileHistory",
    "ProfileSummary",
    "ServerDetail",
    "ServerForecast",
    "ServerHistory",
    "ServerList",
    "TrackedServer",
    "parse",
    "parse_time",
]

API_DOC = "docs/API.md"

T = TypeVar("T")


class ApiFormatError(ValueError):
    """A body from the appliance that does not match docs/API.md."""


class Driver(msgspec.Struct, frozen=True):
    """One reason for a server's risk: a metric expected to cross its threshold."""

    metric: str
    horizon: str
    probability: float
    threshold: float | None = None


class ServerForecast(msgspec.Struct, frozen=True):
    """One server's forecast (codex Prediction Output Format plus risk).

    ``predictions[horizon][metric]`` is the p50; ``quantiles[q][horizon][metric]`` the bounds
    for q in p10/p50/p90 and horizon in 30min/1hr/8hr.
    """

    server_name: str
    profile: str
    risk: float | None = None
    risk_level: str | None = None
    prediction_time: str | None = None
    data_time: str | None = None
    encoder_steps: int | None = None
    short_history: bool = False
    predictions: dict[str, dict[str, float | None]] = {}
    quantiles: dict[str, dict[str, dict[str, float | None]]] = {}
    risk_by_horizon: dict[str, float | None] = {}
    drivers: list[Driver] = []


class ServerDetail(ServerForecast, frozen=True):
    """``GET /predictions/{name}``: the forecast plus full curves.

    ``curves[metric][q]`` is a list of ``prediction_length`` (96) floats, one per step of
    ``step_seconds`` starting at ``start`` (the first forecast step).
    """

    curves: dict[str, dict[str, list[float | None]]] = {}
    step_seconds: int = 300
    start: str | None = None
    thresholds: dict[str, float] = {}


class ProfileSummary(msgspec.Struct, frozen=True):
    """Risk counts of one profile."""

    servers: int = 0
    green: int = 0
    yellow: int = 0
    red: int = 0
    mean_risk: float | None = None


class FleetSummary(msgspec.Struct, frozen=True):
    """The fleet's risk counts and environment-level incident probability per horizon."""

    servers: int = 0
    green: int = 0
    yellow: int = 0
    red: int = 0
    mean_risk: float | None = None
    incident_probability: dict[str, float | None] = {}
    by_profile: dict[str, ProfileSummary] = {}


class CurrentPredictions(msgspec.Struct, frozen=True):
    """``GET /predictions/current`` and every ``/ws/predictions`` message."""

    servers: list[ServerForecast]
    fleet: FleetSummary = FleetSummary()
    prediction_time: str | None = None
    data_time: str | None = None
    """Start of the newest closed step the set was computed from (the step before
    ``prediction_time``)."""
    model_version: str | None = None


class Alert(msgspec.Struct, frozen=True):
    """One active alert from ``GET /alerts/active``."""

    server_name: str
    metric: str
    profile: str | None = None
    horizon: str | None = None
    predicted_value: float | None = None
    threshold: float | None = None
    probability: float | None = None
    severity: str | None = None
    since: str | None = None
    data_time: str | None = None
    stale: bool = False
    """The server is not in the forecast any more: the last forecast's alert, kept until it
    is forecast again or forgotten (docs/RISK.md#alerts)."""
    left_out: str | None = None
    """Why (``stale``: its data stopped, ``ahead``: its clock runs ahead, ``not_finite``,
    ``warming``); null from an appliance older than the field, which meant ``stale``."""


class TrackedServer(msgspec.Struct, frozen=True):
    """One server of ``GET /servers``."""

    server_name: str
    profile: str | None = None
    state: str | None = None
    """``ready``, ``warming``, ``stale`` (its data stopped) or ``ahead`` (a clock in the future)."""
    newest_step: str | None = None
    """Start of its newest step with a sample (data time)."""


class ServerList(msgspec.Struct, frozen=True):
    """``GET /servers``."""

    servers: list[TrackedServer] = []
    count: int = 0


class AlertList(msgspec.Struct, frozen=True):
    """``GET /alerts/active``."""

    alerts: list[Alert] = []


class ServerHistory(msgspec.Struct, frozen=True):
    """``GET /history/{name}``: recent actuals per step and the risk at each step.

    Every list has one entry per timestamp; ``None`` marks a step without data.
    """

    server_name: str
    timestamps: list[str]
    profile: str | None = None
    step_seconds: int = 300
    cpu_pct: list[float | None] = []
    mem_pct: list[float | None] = []
    disk_io_mb_s: list[float | None] = []
    latency_ms: list[float | None] = []
    risk: list[float | None] = []


class ProfileHistory(msgspec.Struct, frozen=True):
    """``GET /profiles/{profile}/history``: per-step means over the profile's servers.

    ``reporting`` counts the servers behind each step's mean; ``None`` marks a step where
    none had data. The appliance computes the means; the dashboard only draws them.
    """

    profile: str
    timestamps: list[str]
    servers: int = 0
    step_seconds: int = 300
    reporting: list[int] = []
    cpu_pct: list[float | None] = []
    mem_pct: list[float | None] = []
    disk_io_mb_s: list[float | None] = []
    latency_ms: list[float | None] = []
    risk: list[float | None] = []


class FleetHistory(msgspec.Struct, frozen=True):
    """``GET /fleet/history``: the fleet's mean risk and level counts per step.

    The body has no ``step_seconds`` today; the default is the contract's 5-minute step.
    """

    timestamps: list[str]
    step_seconds: int = 300
    mean_risk: list[float | None] = []
    red: list[int | None] = []
    yellow: list[int | None] = []
    green: list[int | None] = []


def parse(body: Any, kind: type[T], endpoint: str) -> T:
    """Convert a decoded JSON body to ``kind``, or raise :class:`ApiFormatError`.

    ``endpoint`` (e.g. ``"GET /predictions/current"``) goes into the message.
    """
    try:
        return msgspec.convert(body, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise ApiFormatError(
            explain(
                f"The appliance answered {endpoint} with a body the dashboard cannot read: {exc}.",
                "the dashboard shows only what the appliance sends and will not guess the rest.",
                "run a dashboard and an appliance of the same fleetcast version "
                "(`fleetcast --version` on both).",
                f"{API_DOC}",
            )
        ) from exc


def parse_time(value: str | float | None) -> datetime | None:
    """Parse an ISO 8601 string (``Z`` allowed) or epoch seconds to an aware UTC datetime.

    Returns ``None`` for ``None`` or an unreadable value (shown as "unknown", never guessed).
    """
    if value is None:
        return None
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), tz=UTC)
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
