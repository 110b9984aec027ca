"""msgspec Structs: the request and response bodies of docs/API.md.

Requests are decoded into these types (strictly, before anything else runs): a field
outside a request type is an error (400), except in a metrics record, where it is ignored
and named in the answer (``ignored_fields``; docs/DATA_CONTRACT.md#extra-columns). Forecast
responses are produced by the engine as plain dicts in exactly these shapes and encoded
once per forecast set; the Structs here give them their OpenAPI schema at ``/schema``.
"""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 (msgspec needs it at run time)
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "AlertItem",
    "AlertsResponse",
    "ErrorBody",
    "FleetHistory",
    "FleetSummary",
    "ForgetOut",
    "HealthResponse",
    "IngestResponse",
    "MetricsIn",
    "PredictionsCurrent",
    "RawMetricsIn",
    "RecordIn",
    "Rejected",
    "ReloadIn",
    "ReloadOut",
    "ScenarioIn",
    "ScenarioOut",
    "ServerDetail",
    "ServerForecast",
    "ServerHistory",
    "StatusResponse",
]

Scenario = Literal["healthy", "degrading", "critical"]
HorizonValues = dict[str, dict[str, float]]
"""horizon ("30min", "1hr", "8hr") -> metric -> value."""


class RecordIn(msgspec.Struct, frozen=True):
    """One contract record (docs/DATA_CONTRACT.md#columns). ``timestamp``: ISO 8601 with a
    time zone, or epoch seconds; ``profile`` null → from the server name (or, for a server
    already known, its profile). Other fields are ignored and reported: the ingest is the
    contract's non-strict path (docs/DATA_CONTRACT.md#extra-columns)."""

    timestamp: Annotated[datetime, msgspec.Meta(tz=True)] | int | float
    server_name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    cpu_pct: float
    mem_pct: float
    disk_io_mb_s: float
    latency_ms: float
    state: str | None = None
    profile: str | None = None


class MetricsIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of POST /metrics (JSON, or MessagePack with ``Content-Type: application/msgpack``);
    ``records`` is its only field."""

    records: list[RecordIn]


class RawMetricsIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /metrics as decoded on the wire: each record kept raw, so one bad record is
    reported by index instead of failing the whole batch."""

    records: list[msgspec.Raw]


class Rejected(msgspec.Struct, frozen=True):
    """A record that was not stored: its index in ``records`` and why."""

    index: int
    reason: str


class IngestResponse(msgspec.Struct, frozen=True):
    """Answer of POST /metrics: 200 if any record was accepted, 422 if none."""

    accepted: int
    rejected: list[Rejected]
    latest_step: str | None = None
    """ISO time of the fleet's step (its reference step) after this batch."""
    ignored_fields: list[str] = []
    """Record fields outside the contract that were ignored (sorted, each named once)."""


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every 4xx/5xx body: what went wrong, why/details, how to fix it, which doc explains it."""

    error: str
    detail: str
    fix: str
    see: str
    rejected: list[Rejected] | None = None
    """For POST /metrics answered 422: the reason per record."""


class HealthResponse(msgspec.Struct, frozen=True):
    """GET /health."""

    status: str
    model_loaded: bool


class Driver(msgspec.Struct, frozen=True):
    """What drives a server's risk: metric, horizon, probability, threshold."""

    metric: str
    horizon: str
    probability: float
    threshold: float


class ServerForecast(msgspec.Struct, frozen=True):
    """One server's forecast (the codex's Prediction Output Format plus risk)."""

    server_name: str
    profile: str
    prediction_time: str
    data_time: str
    encoder_steps: int
    short_history: bool
    predictions: HorizonValues
    quantiles: dict[str, HorizonValues]
    risk: float
    risk_level: Literal["green", "yellow", "red"]
    risk_by_horizon: dict[str, float]
    drivers: list[Driver]


class ProfileSummary(msgspec.Struct, frozen=True):
    """Fleet counts of one profile."""

    servers: int
    green: int
    yellow: int
    red: int
    mean_risk: float


class FleetSummary(msgspec.Struct, frozen=True):
    """Fleet-wide risk counts."""

    servers: int
    green: int
    yellow: int
    red: int
    mean_risk: float
    incident_probability: dict[str, float]
    by_profile: dict[str, ProfileSummary]


class PredictionsCurrent(msgspec.Struct, frozen=True):
    """GET /predictions/current and each WebSocket message."""

    prediction_time: str | None
    data_time: str | None
    model_version: str | None
    servers: list[ServerForecast]
    fleet: FleetSummary


class ServerDetail(ServerForecast, frozen=True):
    """GET /predictions/{server_name}: a ServerForecast plus its full curves."""

    curves: dict[str, dict[str, list[float]]] = {}
    """metric -> "p10"/"p50"/"p90" -> one value per step (prediction length)."""
    step_seconds: int = 300
    start: str | None = None


class AlertItem(msgspec.Struct, frozen=True):
    """One active alert."""

    server_name: str
    profile: str
    metric: str
    horizon: str
    predicted_value: float
    """The p50 at the forecast step where the exceedance probability peaks (``at``)."""
    predicted_p90: float
    threshold: float
    probability: float
    severity: str
    since: str | None
    at: str
    """Start of that peak step (ISO 8601)."""
    data_time: str
    """The server's newest closed step the forecast that raised it read (ISO 8601)."""
    stale: bool
    """True for the alert of a server this forecast left out (its data stopped, its clock
    runs ahead, or its forecast is not finite): carried over from the last forecast that had
    it, until it is forecast again or forgotten (docs/RISK.md#alerts)."""
    left_out: str | None = None
    """Why a ``stale`` alert's server is not forecast: ``stale`` (its data stopped), ``ahead``
    (its clock runs ahead of the fleet's), ``not_finite`` (its forecast was NaN or infinite)
    or ``warming`` (its window is too short for the model, after a reload to one that reads
    more history); null for the alert of a server this forecast has."""


class AlertsResponse(msgspec.Struct, frozen=True):
    """GET /alerts/active."""

    alerts: list[AlertItem]


class ServerHistory(msgspec.Struct, frozen=True):
    """GET /history/{server_name}: actuals per step (null where a step has no sample)."""

    server_name: str
    profile: str
    step_seconds: int
    timestamps: list[str]
    cpu_pct: list[float | None]
    mem_pct: list[float | None]
    disk_io_mb_s: list[float | None]
    latency_ms: list[float | None]
    risk: list[float | None]


class ProfileHistory(msgspec.Struct, frozen=True):
    """GET /profiles/{profile}/history: per-step means over the profile's servers."""

    profile: str
    servers: int
    step_seconds: int
    timestamps: list[str]
    reporting: list[int]
    cpu_pct: list[float | None]
    mem_pct: list[float | None]
    disk_io_mb_s: list[float | None]
    latency_ms: list[float | None]
    risk: list[float | None]


class FleetHistory(msgspec.Struct, frozen=True):
    """GET /fleet/history: the fleet risk trend."""

    timestamps: list[str]
    mean_risk: list[float]
    red: list[int]
    yellow: list[int]
    green: list[int]


class StatusResponse(msgspec.Struct, frozen=True):
    """GET /status: the engine's part (model, servers, latency, ingest counters) plus the
    service's (uptime, source, demo, persistence). Never a file path. See docs/API.md."""

    model: dict[str, Any]
    """version, bundle_id, contract_version, providers, step_seconds, encoder/prediction lengths."""
    uptime_s: float
    servers: dict[str, Any]
    """known, ready, warming, stale, ahead, unknown, full_history, capacity, warming_detail."""
    predictions_per_second: float
    inference_latency_ms: dict[str, float | None]
    """avg, p99, last (milliseconds per batched ONNX Runtime run)."""
    error_rate: float
    last_prediction_time: str | None
    source: dict[str, Any]
    """kind (push, demo or prometheus), healthy, detail (and the Prometheus source's own)."""
    demo: dict[str, Any]
    """enabled, scenario (and speed with --demo)."""
    persistence: dict[str, Any]
    """fsync, log_bytes, last_snapshot_time, replayed_on_start, replayed_forgets_on_start,
    dropped_torn_frames, writable, write_errors, last_write_error."""
    forecast_runs: int = 0
    nonfinite_forecasts: int = 0
    """Servers left out of a forecast set because their forecast was NaN or infinite."""
    data_time: str | None = None
    """The fleet's step (its reference step, docs/RISK.md#buckets)."""
    ingest: dict[str, int] = {}
    """accepted, rejected, duplicates, superseded, too_old, future, capacity, invalid."""
    forgotten: dict[str, Any] = {}
    """deleted (DELETE /servers/...), expired (forget_after), forget_after_s (None: off)."""
    thresholds: dict[str, dict[str, float]] = {}
    """Risk thresholds per metric and profile, in each metric's unit."""
    ready_after_s: float | None = None
    service: dict[str, int] = {}
    """forecast_sets, forecast_errors, websocket_clients, websocket_refused,
    websocket_dropped, request_timeouts."""
    step_cache: dict[str, Any] = {}
    """enabled, last_rows_cached, last_rows_computed, bytes (docs/MODEL_FORMAT.md#step-cache)."""


class ServerEntry(msgspec.Struct, frozen=True):
    """One tracked server in GET /servers."""

    server_name: str
    profile: str
    state: Literal["ready", "warming", "stale", "ahead"]
    """ready: forecast; warming: fewer steps with a sample than the model needs; stale: its
    data stopped (it lags the fleet's step, however few steps it had); ahead: its clock
    runs ahead of the fleet."""
    newest_step: str | None
    """Start of its newest 5-minute step with a sample (data time, ISO 8601)."""
    steps: int
    """Steps with a sample in its current window, forward-filled gaps left out (the model
    needs min_encoder_length)."""
    known: bool
    """Whether the model learnt this server itself: trained on it with its own ID (else it
    forecasts it from its own data and its profile)."""
    profile_trained: bool | None = None
    """Whether any training server had its profile (false: the profile's embedding was never
    trained, docs/SERVER_PROFILES.md); null when the model does not say."""


class ServersOut(msgspec.Struct, frozen=True):
    """GET /servers: the tracked servers, by name."""

    servers: list[ServerEntry]
    count: int
    """Servers in all pages (those in ``?state=`` when given)."""
    next: str | None = None
    """With ``?limit=``: the ``?after=`` of the next page; null on the last page."""


class ForgetOut(msgspec.Struct, frozen=True):
    """Answer of DELETE /servers/{server_name}: the server that was forgotten."""

    server_name: str
    profile: str
    steps_dropped: int
    """Steps of actuals its buffer held (the open step included), now gone."""
    comes_back: str
    """What brings it back (as a new server, with an empty history)."""


class ScenarioIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /demo/scenario."""

    scenario: Scenario


class ScenarioOut(msgspec.Struct, frozen=True):
    """Answer of POST /demo/scenario."""

    scenario: str
    previous: str


class ReloadIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /admin/reload: optionally the name of a model folder beside ``--model-dir``
    (its only field: a misspelt one is a 400, never a silent reload of ``--model-dir``)."""

    model_dir: str | None = None


class ReloadOut(msgspec.Struct, frozen=True):
    """Answer of POST /admin/reload (model identity only, never a path)."""

    model_version: str | None
    bundle_id: str | None
    previous_model_version: str | None
    servers_carried: int
