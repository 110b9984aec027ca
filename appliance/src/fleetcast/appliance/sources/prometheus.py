"""The Prometheus source (``fleetcast serve --source prometheus --prometheus-url URL``).

Started by the app's lifespan like the demo source. It runs one loop:

1. **Backfill** (first cycle): the model's window (``backfill_steps``, default every step
   its inputs read: the encoder and, for a day-ago model, the day before it) is read with
   ``query_range`` in chunks of ``chunk_steps``, each step evaluated at its last second
   (:func:`~fleetcast.appliance.sources.promql.eval_time`).
   After a restart with saved state only the steps after the newest saved one are read.
2. **Each cycle** (every ``interval_s``): every step completed (and ``settle_s`` old)
   since the last cycle is read the same way (so an outage of the link to Prometheus
   leaves no hole as long as Prometheus kept the data), then one instant query at *now*
   lands in the open step — skipped while the previous step is not read yet, because the
   first sample of a new step closes the previous one. A forecast runs within
   ``settle_s`` + one interval of each 5-minute boundary (docs/PROMETHEUS.md#time).

Every batch goes through :meth:`Runtime.ingest` — the path of ``POST /metrics``: the same
contract checks, step bucketing, durable log. Errors (Prometheus down, slow, refusing an
expression) never stop the loop: it retries with exponential backoff, ``/status`` shows
``source.healthy = false`` with the reason, and the last forecasts stay served with
their age.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import numpy as np

from fleetcast.appliance.persistence import Columns
from fleetcast.appliance.sources.backoff import Backoff
from fleetcast.appliance.sources.promql import (
    LabelMapping,
    PromClient,
    PromError,
    Samples,
    assemble,
    eval_time,
    parse_profile_rules,
    resolve_coverage,
    resolve_queries,
)
from fleetcast.appliance.urls import shown
from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from fleetcast.appliance.runtime import Runtime

__all__ = ["PrometheusConfig", "PrometheusSource", "samples_to_columns"]

_log = logging.getLogger(__name__)

_COVERAGE = "coverage"
"""Key of the coverage expression's results beside the metrics'."""

NO_MODEL_BACKFILL_STEPS = 288
"""Steps backfilled (a day) when no model is loaded to say how many its inputs read."""


@dataclass(frozen=True)
class PrometheusConfig:
    """Configuration of the Prometheus source (built from the appliance's Settings)."""

    url: str
    """Prometheus' base URL, e.g. ``http://prometheus:9090``."""
    queries: Mapping[str, str | None] = field(default_factory=lambda: resolve_queries())
    """PromQL per contract metric (defaults: node_exporter; latency none)."""
    mapping: LabelMapping = field(default_factory=LabelMapping)
    """Which label is the server (``instance``, port stripped) and the profile."""
    interval_s: float = 30.0
    """Seconds between cycles (an instant query each; completed steps read at boundaries)."""
    timeout_s: float = 10.0
    """HTTP timeout per query."""
    backfill_steps: int | None = None
    """Steps read on start; None = every step the model's inputs read (``history_steps``:
    the encoder, plus a day for day-ago inputs), so forecasts start at once and complete."""
    chunk_steps: int = 48
    """Steps per ``query_range`` call (bounds one response's size)."""
    settle_s: float = 10.0
    """A step is read this many seconds after it ends (late scrapes have landed)."""
    latency_fill: float = 0.0
    """latency_ms when its expression is unset or has no value (docs/PROMETHEUS.md#latency)."""
    coverage: str | None = field(default_factory=lambda: resolve_coverage(None))
    """PromQL naming the series whose scrapes did not cover a step: its servers' steps are
    gaps, not biased values (docs/PROMETHEUS.md#partial-steps); None = no check."""
    backoff_initial_s: float = 1.0
    """First retry delay after a failed cycle."""
    backoff_max_s: float = 60.0
    """Longest retry delay."""

    @classmethod
    def from_settings(cls, settings: Any) -> PrometheusConfig:
        """The config from the appliance's Settings (``prometheus_*`` fields)."""

        def get(name: str, default: Any = None) -> Any:
            value = getattr(settings, f"prometheus_{name}", None)
            return default if value is None else value

        url = get("url")
        if not url:
            raise ValueError(
                "The Prometheus source needs a URL. Fix: pass --prometheus-url "
                "http://HOST:9090 (or prometheus_url in the config file). "
                "See docs/PROMETHEUS.md#configure."
            )
        overrides = {
            m: getattr(settings, f"prometheus_{m}", None)
            for m in ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")
        }
        mapping = LabelMapping(
            server_label=get("server_label", "instance"),
            strip_port=bool(get("strip_port", True)),
            profile_label=get("profile_label") or None,
            profile_rules=parse_profile_rules(get("profile_rules", ())),
        )
        return cls(
            url=str(url),
            queries=resolve_queries(overrides),
            mapping=mapping,
            interval_s=float(get("interval_s", 30.0)),
            timeout_s=float(get("timeout_s", 10.0)),
            backfill_steps=get("backfill_steps"),
            settle_s=float(get("settle_s", 10.0)),
            latency_fill=float(get("latency_fill", 0.0)),
            coverage=resolve_coverage(getattr(settings, "prometheus_coverage", None)),
            backoff_max_s=float(get("backoff_max_s", 60.0)),
        )


def samples_to_columns(samples: Samples) -> Columns:
    """The service's Columns of assembled samples (state null = unknown)."""
    return Columns(
        ts=samples.times.astype(np.int64),
        metrics=np.ascontiguousarray(samples.metrics, dtype=np.float64).reshape(-1, 4),
        server=list(samples.server),
        state=[None] * len(samples),
        profile=list(samples.profile),
    )


def _iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PrometheusSource:
    """Pulls the four metrics from Prometheus into the runtime's ingest path.

    ``clock`` returns epoch seconds (tests pass a fake one); ``client`` defaults to a
    :class:`PromClient` of ``config.url``.
    """

    kind = "prometheus"

    def __init__(
        self,
        runtime: Runtime,
        config: PrometheusConfig,
        clock: Callable[[], float] = time.time,
        client: PromClient | None = None,
    ) -> None:
        self._runtime = runtime
        self.config = config
        self._clock = clock
        self._client = client or PromClient(config.url, config.timeout_s)
        self._backoff = Backoff(
            config.backoff_initial_s, max(config.backoff_max_s, config.backoff_initial_s)
        )
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.done_step: int | None = None
        """Newest completed step read at its last second (None: not started)."""
        self.backfilled_steps = 0
        self.cycles = 0
        self.records = 0
        self.rejected = 0
        self.last_reject_reason: str | None = None
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.servers_last = 0
        self.gaps = 0
        self.partial = 0
        self.filled_latency = 0
        self.next_retry_s: float | None = None
        self.unlabelled: dict[str, int] = {}
        """Series dropped per metric for lacking the server label (summed over queries)."""
        self._unexpected_logged: set[str] = set()

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the loop (returns at once; the backfill runs in the loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fleetcast-prometheus-source")
            _log.info(
                "prometheus source: %s, every %gs",
                shown(self.config.url),
                self.config.interval_s,
            )

    async def stop(self) -> None:
        """Stop the loop (idempotent); an in-flight HTTP request is abandoned."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """Run the next cycle now instead of after the interval (tests, admin)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            delay = self.config.interval_s
            try:
                await self.run_cycle()
                self._backoff.reset()
                self.next_retry_s = None
            except PromError as exc:
                delay = self._failed(str(exc))
            except OSError as exc:  # the state directory: runtime.ingest could not log
                delay = self._failed(f"cannot persist samples ({type(exc).__name__}: {exc})")
            except Exception as exc:
                delay = self._unexpected(exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _unexpected(self, exc: Exception) -> float:
        """A cycle failed with an exception no error path expects (a bug): its traceback is
        logged once per exception type, then it is retried like any failure."""
        what = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        message = (
            f"a cycle failed unexpectedly ({what}). Why it matters: no samples until it "
            "passes (retried with backoff; the last forecasts stay served). Fix: report it "
            "with the traceback logged once at its first occurrence. See "
            "docs/PROMETHEUS.md#troubleshooting."
        )
        kind = type(exc).__qualname__
        if kind not in self._unexpected_logged:
            self._unexpected_logged.add(kind)
            _log.error("prometheus source: %s", message, exc_info=exc)
            return self._failed(message, logged=True)
        return self._failed(message)

    def _failed(self, message: str, *, logged: bool = False) -> float:
        first = self.last_error is None or self._backoff.failures == 0
        self.last_error = message
        self.last_error_time = self._clock()
        delay = self._backoff.next_delay()
        self.next_retry_s = delay
        if first and not logged:
            _log.warning("prometheus source: %s", message)
        else:
            _log.debug("prometheus source (failure %d): %s", self._backoff.failures, message)
        return delay

    # -- one cycle -----------------------------------------------------------------------
    def _window_steps(self) -> int:
        """Steps to backfill: the configured number, else every step the model's inputs
        read (its encoder plus, with day-ago inputs, the day before: ``history_steps``)."""
        if self.config.backfill_steps is not None:
            return max(int(self.config.backfill_steps), 1)
        engine = self._runtime.engine
        return int(engine.spec.history_steps) if engine is not None else NO_MODEL_BACKFILL_STEPS

    def _first_step(self, open_step: int) -> int:
        """First step to read: after the last done (or saved) step, within the window."""
        floor = open_step - self._window_steps()
        if self.done_step is not None:
            return max(self.done_step + 1, floor)
        latest = self._runtime.latest_step
        if latest is not None:
            return max(int(latest) // STEP_SECONDS + 1, floor)
        return floor

    async def _read(self, call: Callable[[str], Any]) -> Samples:
        """Every metric's expression and the coverage expression through ``call``
        (``query_range`` or ``query``), assembled into records."""
        cfg = self.config
        exprs = [(m, e) for m, e in cfg.queries.items() if e]
        if cfg.coverage:
            exprs.append((_COVERAGE, cfg.coverage))
        results: dict[str, list[Any]] = {}
        for key, expr in exprs:
            try:
                results[key] = await anyio.to_thread.run_sync(call, expr, abandon_on_cancel=True)
            except PromError as exc:
                if key != _COVERAGE or exc.retryable:
                    raise
                raise PromError(
                    exc.kind,
                    f"Prometheus refused the coverage check {expr!r}: {exc.detail}. Why it "
                    "matters: without it no step can be told complete, so no samples are "
                    'read. Fix: correct prometheus_coverage, or set it to "" to turn the '
                    "check off. See docs/PROMETHEUS.md#partial-steps.",
                    detail=exc.detail,
                ) from exc
        coverage = results.pop(_COVERAGE, ())
        return assemble(results, cfg.mapping, cfg.latency_fill, coverage=coverage)

    def _count_unlabelled(self, samples: Samples) -> None:
        """Add the series dropped for lacking the server label; warn once per metric."""
        label = self.config.mapping.server_label
        for metric, count in samples.unlabelled_by_metric.items():
            if metric not in self.unlabelled:
                expr = self.config.queries.get(metric)
                _log.warning(
                    "prometheus source: the expression for %s (%r) returned %d series without "
                    "the %r label; they are ignored. Why it matters: their values reach no "
                    "server, so %s. Fix: keep the label in the expression, e.g. aggregate "
                    "with 'sum by (%s) (...)' or 'avg by (%s) (...)' instead of a bare "
                    "sum/avg, or set --prometheus-server-label to the label it has. "
                    "See docs/PROMETHEUS.md#queries.",
                    metric,
                    expr,
                    count,
                    label,
                    "its latency is filled with latency_fill"
                    if metric == "latency_ms"
                    else "every server's record is a gap (no samples ingested)",
                    label,
                    label,
                )
            self.unlabelled[metric] = self.unlabelled.get(metric, 0) + count

    def _count_partial(self, samples: Samples) -> None:
        """Add the steps read as gaps because their series did not cover them; log them."""
        if not samples.partial:
            return
        self.partial += samples.partial
        server, at = samples.partial_example or ("?", 0)
        _log.info(
            "prometheus source: %d server-steps left as gaps because their series did not "
            "cover the whole step (a series started or stopped within it, or scrapes were "
            "missed), e.g. %r at %s; a rate over part of a step would read wrong values. "
            "See docs/PROMETHEUS.md#partial-steps.",
            samples.partial,
            server,
            _iso(at),
        )

    async def _ingest(self, samples: Samples, *, forecast: bool = True) -> int:
        self._count_unlabelled(samples)
        self.gaps += samples.incomplete
        self._count_partial(samples)
        self.filled_latency += samples.filled_latency
        if not len(samples):
            if forecast:
                self._runtime.release_forecast()
            return 0
        result = await self._runtime.ingest(samples_to_columns(samples), forecast=forecast)
        self.records += result.accepted
        self.rejected += len(result.rejected)
        if result.rejected:
            index, reason = result.rejected[0]
            # A label value may hold anything: quoted, and no line breaks reach the log.
            reason = f"{samples.server[index]!r}: {reason}".replace("\n", "\\n").replace(
                "\r", "\\r"
            )
            level = logging.WARNING if reason != self.last_reject_reason else logging.DEBUG
            self.last_reject_reason = reason
            _log.log(
                level,
                "prometheus source: %d of %d samples rejected, e.g. %s",
                len(result.rejected),
                len(samples),
                reason,
            )
        return result.accepted

    async def run_cycle(self) -> int:
        """Read completed steps (query_range) and the open step (instant query), ingest them.

        Returns the number of records ingested; raises PromError when Prometheus fails.
        """
        now = self._clock()
        open_step = int(now // STEP_SECONDS)
        last_complete = int((now - self.config.settle_s) // STEP_SECONDS) - 1
        first = self._first_step(open_step)
        ingested = 0
        client, cfg = self._client, self.config
        while first <= last_complete:
            last = min(first + cfg.chunk_steps - 1, last_complete)
            start, end = eval_time(first), eval_time(last)
            samples = await self._read(
                lambda expr, s=start, e=end: client.query_range(expr, s, e, STEP_SECONDS)
            )
            # One forecast, after the last chunk.
            ingested += await self._ingest(samples, forecast=last == last_complete)
            if self.last_success is None:
                self.backfilled_steps += last - first + 1
            self.done_step = last
            first = last + 1
        if self.done_step is None:
            self.done_step = last_complete
        if last_complete == open_step - 1:
            # The open step's sample closes the previous step, so only once that step has
            # been read at its last second: every forecast uses settled values.
            samples = await self._read(lambda expr: client.query(expr, now))
            self.servers_last = len(samples.servers_seen)
            ingested += await self._ingest(samples)
        self.cycles += 1
        self.last_success = self._clock()
        if self.last_error is not None:
            _log.info("prometheus source: recovered")
        self.last_error = None
        return ingested

    # -- status --------------------------------------------------------------------------
    def forecast_age_s(self) -> float | None:
        """Seconds between now and the end of the data the current forecast used."""
        engine = self._runtime.engine
        current = engine.current() if engine is not None else None
        if current is None:
            return None
        start = datetime.fromisoformat(current.prediction_time.replace("Z", "+00:00"))
        return round(self._clock() - start.timestamp(), 1)

    def source_status(self) -> dict[str, Any]:
        """The ``source`` block of /status."""
        running = self._task is not None and not self._task.done()
        healthy = running and self.last_success is not None and self.last_error is None
        if self.last_error is not None:
            detail = (
                f"failing ({self._backoff.failures} in a row, next try in "
                f"{self.next_retry_s or 0:.0f} s): {self.last_error}"
            )
        elif self.last_success is None:
            detail = "starting: backfill not done yet"
        else:
            detail = (
                f"{self.servers_last} servers in the last query, {self.backfilled_steps} steps "
                f"backfilled, {self.records} samples ingested, {self.rejected} rejected"
            )
            if self.partial:
                detail += f"; {self.partial} partially covered server-steps left as gaps"
            if self.unlabelled:
                detail += (
                    f"; series without the {self.config.mapping.server_label!r} label "
                    f"ignored for {', '.join(sorted(self.unlabelled))} (see unlabelled_series)"
                )
        return {
            "kind": self.kind,
            "healthy": healthy,
            "detail": detail,
            "url": shown(self.config.url),
            "last_success_time": _iso(self.last_success),
            "last_error": self.last_error,
            "last_error_time": _iso(self.last_error_time),
            "consecutive_failures": self._backoff.failures,
            "servers": self.servers_last,
            "backfilled_steps": self.backfilled_steps,
            "samples_ingested": self.records,
            "samples_rejected": self.rejected,
            "last_rejection": self.last_reject_reason,
            "gaps": self.gaps,
            "partial_steps": self.partial,
            "coverage_check": self.config.coverage is not None,
            "unlabelled_series": dict(sorted(self.unlabelled.items())),
            "latency_filled": self.filled_latency,
            "data_step": None if self.done_step is None else _iso(self.done_step * STEP_SECONDS),
            "forecast_age_s": self.forecast_age_s(),
        }
