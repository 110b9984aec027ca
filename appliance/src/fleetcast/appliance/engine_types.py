"""The Engine's plain data types: its configuration, the record batch in, the results out.

Re-exported by :mod:`fleetcast.appliance.engine` (import them from there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    import numpy as np

__all__ = [
    "EngineConfig",
    "ForecastSet",
    "Forgotten",
    "IngestResult",
    "RecordBatch",
    "Screened",
    "check_config",
]


@dataclass(frozen=True)
class EngineConfig:
    """Configuration of the compute core (part of the service's Settings)."""

    model_dir: Path
    """Folder holding ``model.onnx`` (and optionally ``server_mapping.json``, checked against
    the mapping embedded in the model)."""
    capacity: int = 20_000
    """Maximum number of servers; the ring buffers are preallocated for this many."""
    providers: tuple[str, ...] | None = None
    """ONNX Runtime execution providers in order of preference; ``None`` = TensorRT, CUDA,
    CPU filtered by what ONNX Runtime reports available."""
    intra_op_threads: int = 0
    """0 = auto: on CPU, one single-threaded ONNX Runtime call per usable core, each on its own
    batch (:func:`fleetcast.appliance.execution.plan_workers`); N = one call at a time with N
    intra-op threads."""
    step_cache: bool = True
    """Use the model's step graphs with a :class:`~fleetcast.appliance.step_cache.StepCache`
    when it has them and runs on CPU (docs/MODEL_FORMAT.md#step-cache)."""
    thresholds: Mapping[str, Any] | None = None
    """Override of the risk thresholds per metric and per profile (docs/RISK.md#configuration),
    e.g. ``{"latency_ms": {"default": 300, "database": 120}}``."""
    history_steps: int | None = None
    """Steps of actuals kept per server for /history; ``None`` = what the model's inputs read
    (``ModelSpec.history_steps``: the encoder length, plus a day for a model with day-ago
    inputs). Never less than that."""
    batch_size: int | None = None
    """Servers per ONNX Runtime call; bigger fleets run in several calls (bounds memory).
    ``None``: 16 on CPU (the appliance's peak RSS at 1,000 servers 353 MB vs 466 MB with 64
    per call and 2.2 GB with 1,024, at equal speed — docs/BENCHMARKS.md) and 8,192 when a GPU
    provider is in use (the GPU needs
    big batches; one call must stay under ~58,000 windows, docs/MODEL_FORMAT.md)."""
    max_future_s: float | None = None
    """Reject samples whose timestamp is more than this many seconds ahead of the ``now``
    passed to :meth:`Engine.ingest` (a clock in the future would move the server's window
    past its real data); ``None``: no check. The service sets it (default 1 h); the demo
    passes its simulated clock, which runs ahead by design, as ``now``."""
    stale_after_steps: int = 12
    """A server whose newest closed step is more than this many steps behind the fleet's
    reference step (the 90th percentile of the servers' newest closed steps,
    :func:`~fleetcast.appliance.engine_state.fleet_reference`) is *stale*: not forecast (its
    data stopped), counted in status; one as far ahead of it is *ahead*, likewise."""
    warning_probability: float = 0.3
    """Alert (severity ``warning``, level yellow) at or above this exceedance probability."""
    critical_probability: float = 0.7
    """Alert severity ``critical`` (level red) above this exceedance probability."""
    alert_keep_firing_s: float = 900.0
    """An alert stays raised this many seconds of its server's data after its probability
    last raised it, and a critical one stays critical as long (docs/RISK.md#alerts); 0:
    resolved by the first forecast below the level's hysteresis."""
    risk_history_steps: int = 288
    """Fleet risk trend points kept for /fleet/history."""
    forget_after_s: float | None = None
    """Forget a server once the fleet's step is more than this many seconds of data
    time after its newest step (:meth:`Engine.expired` lists them); ``None``: never
    (docs/OPERATIONS.md#forgetting-servers)."""


@dataclass
class RecordBatch:
    """A batch of contract records as columns (already validated by the service or not).

    ``ts``: int64 epoch seconds (n,); ``server``: names (n,); the four metrics float64 (n,);
    ``state``/``profile``: str or None per record.
    """

    ts: np.ndarray
    server: Sequence[str] | np.ndarray
    cpu_pct: np.ndarray
    mem_pct: np.ndarray
    disk_io_mb_s: np.ndarray
    latency_ms: np.ndarray
    state: Sequence[str | None] | np.ndarray
    profile: Sequence[str | None] | np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> RecordBatch:
        """Columns from dicts with contract keys (``timestamp`` as epoch seconds or ISO 8601)."""
        from fleetcast.appliance.buffers import records_to_columns

        return cls(**records_to_columns(records))


@dataclass(frozen=True)
class Screened:
    """A batch after the checks that do not look at the buffers (:func:`~fleetcast.appliance.
    engine.screen`): the contract's per-record rules and the clock check. The runtime logs
    the ``ok`` rows before :meth:`Engine.ingest` applies them, from this same object."""

    batch: RecordBatch
    names: list[str]
    states: list[str | None]
    profiles: list[str | None]
    metrics: np.ndarray
    """float64 (n, 4): cpu_pct, mem_pct, disk_io_mb_s, latency_ms."""
    ts: np.ndarray
    """int64 (n,): epoch seconds, floored (0 where invalid)."""
    ok: np.ndarray
    """bool (n,): valid and not too far ahead of ``now``."""
    reasons: dict[int, str]
    """Index → why, for the invalid records."""
    future: list[int]
    """Valid records further ahead of ``now`` than ``max_future_s``."""
    now: float | None
    max_future_s: float | None

    def ok_rows(self) -> np.ndarray | None:
        """Indices of the ``ok`` rows, or None when every row is."""
        return None if self.ok.all() else self.ok.nonzero()[0]


@dataclass
class IngestResult:
    """What one :meth:`Engine.ingest` call did."""

    accepted: int
    """Records stored in the buffers."""
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """(index in the batch, reason) for every record not stored."""
    closed_steps: int = 0
    """How many steps the fleet's step (its reference step) advanced (> 0: a forecast is due)."""
    latest_step: int | None = None
    """Epoch seconds of the fleet's step after this batch (None: none yet)."""


@dataclass(frozen=True)
class Forgotten:
    """One server :meth:`Engine.forget` forgot (the body of DELETE /servers/{server_name})."""

    server_name: str
    profile: str
    steps_dropped: int
    """Steps of actuals its ring buffer held (the open step included)."""


@dataclass
class ForecastSet:
    """One batched forecast over all ready servers (the body of GET /predictions/current)."""

    prediction_time: str
    """ISO 8601 UTC of the first predicted step (the fleet's step + 1)."""
    data_time: str
    """ISO 8601 UTC of the fleet's step (its reference step, docs/RISK.md#buckets) the
    forecast ran at; each server's own newest closed step is its ServerForecast's."""
    model_version: str
    servers: list[dict[str, Any]]
    """ServerForecast dicts (docs/API.md), sorted by descending risk."""
    fleet: dict[str, Any]
    """FleetSummary (docs/API.md)."""
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """Active alerts (docs/RISK.md#alerts), highest probability first."""
    inference_ms: float = 0.0
    """ONNX Runtime time of this run (all batches)."""
    window_ms: float = 0.0
    """Time to build the input windows (under the buffer lock)."""
    total_ms: float = 0.0
    """Whole run: windows, inference, risk and formatting."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of GET /predictions/current."""
        return {
            "prediction_time": self.prediction_time,
            "data_time": self.data_time,
            "model_version": self.model_version,
            "servers": self.servers,
            "fleet": self.fleet,
        }


def check_config(config: EngineConfig) -> None:
    """Refuse settings the engine cannot honour, naming the setting and the way out."""
    problems = []
    if config.capacity < 1:
        problems.append(f"capacity must be >= 1 (got {config.capacity})")
    if config.batch_size is not None and config.batch_size < 1:
        problems.append(f"batch_size must be >= 1 (got {config.batch_size})")
    if config.intra_op_threads < 0:
        problems.append(f"intra_op_threads must be >= 0 (got {config.intra_op_threads})")
    if config.max_future_s is not None and config.max_future_s < 0:
        problems.append(f"max_future_s must be >= 0 or None (got {config.max_future_s})")
    if config.stale_after_steps < 0:
        problems.append(f"stale_after_steps must be >= 0 (got {config.stale_after_steps})")
    if config.forget_after_s is not None and not config.forget_after_s > 0:
        problems.append(f"forget_after_s must be > 0 or None (got {config.forget_after_s})")
    if config.history_steps is not None and config.history_steps < 1:
        problems.append(f"history_steps must be >= 1 or None (got {config.history_steps})")
    if not 0.0 <= config.alert_keep_firing_s < float("inf"):
        problems.append(
            f"alert_keep_firing_s must be a number of seconds >= 0 (got {config.alert_keep_firing_s})"
        )
    if not 0.0 < config.warning_probability <= config.critical_probability < 1.0:
        problems.append(
            "probabilities must satisfy 0 < warning_probability <= critical_probability < 1 "
            f"(got {config.warning_probability}, {config.critical_probability})"
        )
    if problems:
        raise ValueError(
            "Invalid engine settings: " + "; ".join(problems) + ". Fix the settings "
            "(docs/OPERATIONS.md#configuration, docs/RISK.md#configuration)."
        )
