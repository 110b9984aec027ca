"""The running service around the engine: ingest path, forecast loop, snapshots, reload.

One :class:`Runtime` per app, created by the app factory and driven by its lifespan. It
owns the :class:`~fleetcast.appliance.engine.Engine` (swappable by /admin/reload), the
:class:`~fleetcast.appliance.persistence.StateStore`, the WebSocket subscribers and the
background tasks. Threading model: the event loop never runs the model or waits on disk;
``ingest`` (Numba + one fdatasync) and ``run_forecast`` (ONNX Runtime) run in worker
threads. One ``threading.Lock`` orders ingest, log appends, snapshots and the reload swap.
A batch is logged before it is applied, under that lock: what could not be logged (a full
disk) is not applied either, so forecasts never use samples that a restart would lose. A
forgotten server is logged and applied the same way (:mod:`~fleetcast.appliance.
runtime_forget`), and the served forecast set is published again without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import msgspec
import numpy as np

from fleetcast.appliance.errors import log_failure
from fleetcast.appliance.forecast import iso
from fleetcast.appliance.forecast_settle import settle
from fleetcast.appliance.http_cache import etag
from fleetcast.appliance.http_protocol import ReadTimeouts
from fleetcast.appliance.persistence import Columns, StateError, StateStore
from fleetcast.appliance.runtime_forget import apply_entry, expire_locked, forget_locked

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from fleetcast.appliance.demo import DemoSource
    from fleetcast.appliance.engine import (
        Engine,
        EngineConfig,
        ForecastSet,
        Forgotten,
        IngestResult,
    )
    from fleetcast.appliance.notify import Notifier
    from fleetcast.appliance.persistence import Entry, Recovery
    from fleetcast.appliance.settings import Settings

__all__ = ["Runtime", "StartupError", "to_record_batch"]

_log = logging.getLogger(__name__)

_REFUSAL_LOG_INTERVAL_S = 60.0
"""At most one log line a minute about refused WebSocket clients (each one is counted)."""


class StartupError(RuntimeError):
    """The appliance cannot start (model refused, state unusable); the message says why and how."""


def to_record_batch(cols: Columns) -> Any:
    """The engine's RecordBatch of ``cols`` (columns, no copies of the numeric data)."""
    from fleetcast.appliance.engine import RecordBatch

    m = cols.metrics
    return RecordBatch(
        ts=cols.ts,
        server=cols.server,
        cpu_pct=m[:, 0],
        mem_pct=m[:, 1],
        disk_io_mb_s=m[:, 2],
        latency_ms=m[:, 3],
        state=cols.state,
        profile=cols.profile,
    )


def _accepted_rows(n: int, rejected: list[tuple[int, str]]) -> np.ndarray | None:
    """Indices of the accepted rows of ``n``, or None when all were accepted."""
    if not rejected:
        return None
    keep = np.ones(n, dtype=bool)
    keep[[i for i, _ in rejected]] = False
    return np.flatnonzero(keep)


def _same_rows(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether two row selections (None = all rows) are the same."""
    if a is None or b is None:
        return a is b
    return np.array_equal(a, b)


class Runtime:
    """State of one running appliance. Create with settings, then ``await start()``."""

    def __init__(self, settings: Settings, notifier: Notifier) -> None:
        self.settings = settings
        self.notifier = notifier
        self.engine: Engine | None = None
        self.store = StateStore(settings.state_dir, fsync=settings.fsync)
        self.lock = threading.Lock()
        self.started_monotonic = time.monotonic()
        self.ready_after_s: float | None = None
        self.current_body: bytes | None = None
        self.current_etag: str | None = None
        """Entity tag of ``current_body`` (``GET /predictions/current`` answers 304 to it)."""
        self.forecast_sets = 0
        self.current_changes = 0
        """Changes of the served forecast set: each new set, and each forget that dropped
        servers from it (the alert pusher follows it)."""
        self.forecast_errors = 0
        self.ingest_requests = self.records_accepted = self.records_rejected = 0
        self.replayed_records = self.replayed_forgets = 0
        self.replayed_reasons = {"deleted": 0, "expired": 0}
        self.latest_step: int | None = None
        """Epoch seconds of the fleet's step (from the last ingest)."""
        self.dropped_tails: list[str] = []
        self.subscribers: set[asyncio.Queue[str]] = set()
        self.websocket_refused = 0
        """WebSocket clients refused because ``max_websocket_clients`` were connected."""
        self.websocket_dropped = 0
        """WebSocket clients dropped because a send to them stayed blocked (not reading)."""
        self.read_timeouts = ReadTimeouts(settings.request_timeout_s)
        self._refusal_log_after = 0.0
        """Monotonic time before which a refused WebSocket client is counted, not logged."""
        self.demo: DemoSource | None = None
        self.pull_source: Any = None
        """A pull source (e.g. Prometheus) set by the app's Telemetry; /status reports it."""
        self._tee: list[Entry] | None = None
        self._due = asyncio.Event()
        self._arrived = asyncio.Event()  # set by every ingest (a forecast's settle waits on it)
        self._forecast_deferred = False
        """A step closed during a backfill (``ingest(forecast=False)``) and no forecast ran."""
        self._forgot = False
        """An ingest forgot expired servers: the served set is published again."""
        self._snapshot_due = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._encoder = msgspec.json.Encoder()

    # -- life cycle ----------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the model, the snapshot and replay the log (blocking; idempotent).

        ``fleetcast serve`` calls it before the server starts, so a refused model is one
        clear message and exit code 1; otherwise :meth:`start` calls it in a worker thread.
        """
        if self.engine is None:
            self._open_engine()

    def _open_engine(self) -> None:
        config = self.settings.engine_config()
        try:
            recovery = self.store.recover()
        except StateError as exc:
            raise StartupError(str(exc)) from None
        try:
            self._restore(config, recovery)
        except BaseException:
            self.store.close()  # a refused start leaves the state directory free
            raise

    def _restore(self, config: EngineConfig, recovery: Recovery) -> None:
        from fleetcast.appliance.engine import Engine
        from fleetcast.appliance.runtime_forget import check_replay

        self.dropped_tails = recovery.dropped
        if recovery.arrays is not None:
            try:
                engine = Engine.restore(config, recovery.arrays)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise StartupError(
                    f"The saved state in the state directory does not fit the model ({exc}). "
                    "Why it matters: starting empty would silently drop the history. "
                    "Fix: start with the model the state was written with, or move the state "
                    "directory aside to start empty. See docs/OPERATIONS.md#state."
                ) from exc
        else:
            engine = Engine.open(config)
        for entry in recovery.batches:
            result = apply_entry(engine, entry)
            if isinstance(result, list):
                self.replayed_forgets += len(result)
                continue
            self.replayed_records += result.accepted
            if result.latest_step is not None:
                self.latest_step = int(result.latest_step)
        check_replay(engine, config.capacity)
        self.replayed_reasons = engine.reset_counters()  # /status counts this run's work
        self.engine = engine
        if self.latest_step is None:
            data_time = engine.status().get("data_time")
            if data_time:
                self.latest_step = int(datetime.fromisoformat(data_time).timestamp())
        if recovery.batches:
            n, forgets = self.replayed_records, self.replayed_forgets
            _log.info("replayed %d logged samples and %d forgotten servers", n, forgets)
        with self.lock:  # forget_after set (or shortened) since the last run
            expire_locked(self)

    async def start(self) -> None:
        """Open the engine, restore state, start the loops, then tell systemd READY=1."""
        if self.engine is None:  # `fleetcast serve` prepared it already (and said so)
            self.notifier.status("loading model and restoring state")
        try:
            await anyio.to_thread.run_sync(self.prepare)
        except Exception as exc:
            _log.error("cannot start: %s", exc)  # one clear line; no traceback for bad input
            self.notifier.status(f"failed: {type(exc).__name__}")
            raise
        engine = self.engine
        if engine is None:  # pragma: no cover - _open_engine sets it or raises
            raise StartupError("engine did not open")
        _log.info("model loaded; ONNX Runtime providers in use: %s", ", ".join(engine.providers))
        loop_tasks = [self._forecast_loop(), self._snapshot_loop(), self._watchdog_loop()]
        self._tasks = [asyncio.create_task(coro) for coro in loop_tasks]
        if self.settings.demo:
            from fleetcast.appliance.demo import DemoSource

            self.demo = DemoSource(self, self.settings)
            await self.demo.start()
        if engine.forecast_due():
            self._due.set()
        self.ready_after_s = time.monotonic() - self.started_monotonic
        self.notifier.ready(f"serving on {self.settings.address}")
        _log.info("ready after %.2f s, serving on %s", self.ready_after_s, self.settings.address)

    async def stop(self) -> None:
        """STOPPING=1, stop sources and loops, write a final snapshot, close files."""
        self.notifier.stopping("flushing state")
        if self.demo is not None:
            await self.demo.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.engine is not None:
            try:
                await anyio.to_thread.run_sync(self.snapshot)
            except Exception as exc:
                log_failure(_log, "final snapshot failed; the log holds everything", exc)
            await anyio.to_thread.run_sync(self.engine.close)
        self.store.close()
        self.notifier.close()

    # -- data in -------------------------------------------------------------------------
    def _ingest_sync(self, cols: Columns, now: float | None = None) -> IngestResult:
        """Log, then apply, under the ingest lock: an OSError from the log (disk full) leaves
        the engine and every counter as they were (the client resends the batch)."""
        with self.lock:
            engine = self.engine
            if engine is None:
                raise RuntimeError("ingest before start")
            from fleetcast.appliance.engine import screen

            batch = to_record_batch(cols)
            checked = screen(batch, time.time() if now is None else now, engine.config.max_future_s)
            # Rows refused without looking at the buffers (invalid, from the future) are never
            # logged: a replay passes no clock and must not accept them.
            keep = checked.ok_rows()
            logged = cols if keep is None else cols.take(keep)
            size = self.store.append(logged) if len(logged) else 0
            try:
                result = engine.ingest(batch, screened=checked)
            except BaseException:
                if size:
                    self.store.retract(size)  # not applied: not logged
                raise
            accepted = _accepted_rows(len(cols), result.rejected)
            if size and not _same_rows(keep, accepted):
                # The engine refused logged rows on its state (older than its ring, over the
                # capacity, another profile): a replay under other settings could accept
                # them, so the frame is rewritten with the accepted rows only. The rewrite
                # needs fewer bytes than the cut just freed.
                self.store.retract(size)
                logged = cols if accepted is None else cols.take(accepted)
                size = self.store.append(logged) if len(logged) else 0
            if size and self._tee is not None:
                self._tee.append(logged)
            if result.latest_step is not None:
                self.latest_step = int(result.latest_step)
            if result.closed_steps > 0 and expire_locked(self):  # data time moved on
                self._forgot = True
        return result

    async def ingest(
        self, cols: Columns, now: float | None = None, *, forecast: bool = True
    ) -> IngestResult:
        """Store a batch (engine + durable log) in a worker thread; schedule a forecast when a
        step closed. Returns only after accepted samples are on disk. ``now``: the clock that
        ``--max-future-seconds`` checks the timestamps against; None (POST /metrics, pull
        sources) = this machine's, the demo passes its simulated clock. ``forecast=False``
        (a backfill's chunks but its last): a closed step waits for the next ``ingest``
        that may forecast, so no forecast runs on half a backfill (it would be a risk
        history point a day before the rest, with nothing in between)."""
        result = await anyio.to_thread.run_sync(self._ingest_sync, cols, now)
        if self._forgot:
            self._forgot = False
            self.republish()
        self.ingest_requests += 1
        self.records_accepted += result.accepted
        self.records_rejected += len(result.rejected)
        self._arrived.set()
        if result.closed_steps > 0:
            self._forecast_deferred = True
        if forecast:
            self.release_forecast()
        if self.store.log_bytes > self.settings.snapshot_log_bytes:
            self._snapshot_due.set()
        return result

    def release_forecast(self) -> None:
        """Schedule the forecast that ``ingest(forecast=False)`` deferred (none: no-op)."""
        if self._forecast_deferred:
            self._forecast_deferred = False
            self._due.set()

    # -- forecasts -----------------------------------------------------------------------
    async def _forecast_loop(self) -> None:
        while True:
            await self._due.wait()
            if self.engine is not None:  # the step's stragglers, forecast_settle_s at most
                await settle(self.engine, self._arrived, self.settings.forecast_settle_s)
            self._due.clear()  # steps closing while we run coalesce into one more run
            engine = self.engine
            if engine is None:
                continue
            try:
                forecast = await anyio.to_thread.run_sync(engine.run_forecast)
            except Exception:
                self.forecast_errors += 1
                _log.exception("forecast run failed; the previous forecast stays served")
                continue
            if forecast is not None and engine is self.engine:
                # A run on a model that /admin/reload replaced meanwhile is dropped: the
                # reload publishes the new model's first forecast itself. The engine's
                # current set is this run's, less any server forgotten since it ended.
                self.publish(engine.current() or forecast)

    def publish(self, forecast: ForecastSet, *, new: bool = True) -> None:
        """Encode a new forecast set once; serve it to GETs and push it to WebSockets.
        ``new=False``: the same set with servers forgotten (not counted as a set)."""
        body = self._encoder.encode(forecast.to_dict())
        self.current_body, self.current_etag = body, etag(body)
        self.forecast_sets += int(new)
        self.current_changes += 1
        if not self.subscribers:
            return
        # Decoded once for all clients: a client that lags holds this shared text, not a
        # copy of its own (1.3 MB per 1,000 servers).
        text = body.decode("utf-8")
        for queue in list(self.subscribers):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()  # a slow client gets the newest set, not a backlog
            queue.put_nowait(text)

    def republish(self) -> None:
        """Serve the engine's current set again after a forget dropped servers from it."""
        engine = self.engine
        current = engine.current() if engine is not None else None
        if current is not None and self.current_body is not None:
            self.publish(current, new=False)

    def forget(self, candidates: Sequence[str]) -> Forgotten | None:
        """Forget the first server of ``candidates`` the engine knows (logged, then applied;
        blocking: call in a thread, then :meth:`republish`); None when it knows none. An
        OSError from the log (disk full) forgets nothing."""
        with self.lock:
            engine = self.engine
            if engine is None:
                raise RuntimeError("forget before start")
            name = next((n for n in candidates if engine.knows(n)), None)
            done = forget_locked(self, [name], expired=False) if name is not None else []
        return done[0] if done else None

    def subscribe(self) -> asyncio.Queue[str] | None:
        """A queue that receives every new forecast body as text (newest wins), or None
        when ``max_websocket_clients`` clients are subscribed already (0: the WebSocket is
        off): the caller refuses the client. Refusals are counted (``/status`` →
        ``service.websocket_refused``) and logged at most once a minute."""
        limit = self.settings.max_websocket_clients
        if len(self.subscribers) >= limit:
            self.websocket_refused += 1
            now = time.monotonic()
            if now >= self._refusal_log_after:
                self._refusal_log_after = now + _REFUSAL_LOG_INTERVAL_S
                _log.warning(
                    "WebSocket client refused: %s; %d refused since start "
                    "(docs/OPERATIONS.md#limits)",
                    f"{len(self.subscribers)} connected, max_websocket_clients is {limit}"
                    if limit
                    else "the WebSocket is off (max_websocket_clients is 0)",
                    self.websocket_refused,
                )
            return None
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str], *, stuck: bool = False) -> None:
        """Stop pushing to ``queue``; ``stuck``: its client was dropped for not reading
        (counted in ``/status`` → ``service.websocket_dropped``)."""
        if queue in self.subscribers and stuck:
            self.websocket_dropped += 1
        self.subscribers.discard(queue)

    def request_forecast(self) -> None:
        """Schedule one forecast run (coalesced with any pending one)."""
        self._due.set()

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(self) -> None:
        """Snapshot the engine state and truncate the log (blocking: call in a thread)."""
        with self.lock:
            engine = self.engine
            if engine is None:
                return
            arrays = {k: np.array(v, copy=True) for k, v in engine.state_arrays().items()}
            generation = self.store.rotate()
        self.store.write_snapshot(arrays, generation)
        _log.info("snapshot written (log generation %d)", generation)

    async def _snapshot_loop(self) -> None:
        interval = self.settings.snapshot_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._snapshot_due.wait(), timeout=interval)
            self._snapshot_due.clear()
            if self.store.log_bytes == 0:
                continue
            try:
                await anyio.to_thread.run_sync(self.snapshot)
            except Exception as exc:
                log_failure(_log, "snapshot failed; the sample log grows until one succeeds", exc)

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if interval is None:
            return
        while True:
            self.notifier.watchdog()  # sent from the event loop: proves it is not blocked
            await asyncio.sleep(interval)

    # -- model reload --------------------------------------------------------------------
    async def reload(self, model_dir: Path) -> dict[str, Any]:
        """Swap in the model at ``model_dir`` atomically; the old engine serves until the new
        one passed its checks and holds the same buffers (plus anything logged meanwhile).
        Returns the answer of POST /admin/reload (:mod:`~fleetcast.appliance.runtime_reload`)."""
        from fleetcast.appliance.runtime_reload import reload

        async with self._reload_lock:
            return await reload(self, model_dir)

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The body of GET /status: the engine's part plus the service's."""
        engine = self.engine
        body: dict[str, Any] = dict(engine.status()) if engine is not None else {}
        body["uptime_s"] = round(time.monotonic() - self.started_monotonic, 3)
        body["ready_after_s"] = None if self.ready_after_s is None else round(self.ready_after_s, 3)
        if self.demo is not None:
            body["source"] = self.demo.source_status()
            body["demo"] = {"enabled": True, "scenario": self.demo.scenario}
            body["demo"]["speed"] = self.settings.speed
        else:
            body["source"] = {
                "kind": "push",
                "healthy": self.store.writable,
                "detail": f"{self.ingest_requests} POST /metrics requests, "
                f"{self.records_accepted} samples accepted, {self.records_rejected} rejected",
            }
            body["demo"] = {"enabled": False, "scenario": None}
        if self.pull_source is not None:  # --source prometheus (docs/PROMETHEUS.md)
            body["source"] = self.pull_source.source_status()
        body["persistence"] = {
            "fsync": self.settings.fsync,
            "log_bytes": self.store.log_bytes,
            "last_snapshot_time": None if (t := self.store.last_snapshot_time) is None else iso(t),
            "replayed_on_start": self.replayed_records,
            "replayed_forgets_on_start": self.replayed_reasons,
            "dropped_torn_frames": len(self.dropped_tails),
            **self.store.write_status(),
        }
        body["service"] = {
            "forecast_sets": self.forecast_sets,
            "forecast_errors": self.forecast_errors,
            "websocket_clients": len(self.subscribers),
            "websocket_refused": self.websocket_refused,
            "websocket_dropped": self.websocket_dropped,
            "request_timeouts": self.read_timeouts.count,
        }
        return body
