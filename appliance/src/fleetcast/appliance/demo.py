"""The built-in demo source (``fleetcast serve --demo [--speed 60]``).

Uses the contract simulator's stream (:class:`fleetcast.contract.simulate.FleetStream`):
first it backfills the history the model reads (at least 24 h; the encoder plus the
day-ago look-back when longer, capped at what the engine keeps) ending now, so forecasts appear within
seconds of start, then it streams one 5-minute step each ``300 / speed`` real seconds
into the same ingest path as POST /metrics (validated, logged, persisted). Its simulated
clock runs ahead of the real one at ``--speed``, so its samples are checked against that
clock by ``--max-future-seconds`` (POST /metrics keeps this machine's clock). After a
restart with saved state it continues after the newest step the state holds.
``POST /demo/scenario`` switches healthy / degrading / critical from the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.appliance.errors import log_failure, write_error_cause
from fleetcast.appliance.persistence import Columns
from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    from fleetcast.appliance.runtime import Runtime
    from fleetcast.appliance.settings import Settings

__all__ = ["BACKFILL_CHUNK_STEPS", "DemoSource", "stream_columns"]

_log = logging.getLogger(__name__)

BACKFILL_CHUNK_STEPS = 48
"""Steps per ingest call during the backfill (bounds one request's size)."""


def stream_columns(rows: dict[str, np.ndarray]) -> Columns:
    """The service's Columns of one FleetStream output (float32 metrics widened to float64)."""
    metrics = np.column_stack(
        [rows[k].astype(np.float64) for k in ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")]
    )
    return Columns(
        ts=rows["timestamp"].astype(np.int64),
        metrics=metrics.reshape(-1, 4),
        server=[str(s) for s in rows["server_name"]],
        state=[None if s is None else str(s) for s in rows["state"]],
        profile=[None if p is None else str(p) for p in rows["profile"]],
    )


class DemoSource:
    """Simulated fleet feeding the runtime's ingest path."""

    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self._runtime = runtime
        self._settings = settings
        self._stream: Any = None
        self._lock = threading.Lock()  # FleetStream is not thread-safe
        self._task: asyncio.Task[None] | None = None
        self.steps_sent = 0
        self.backfilled_steps = 0
        self.last_error: str | None = None
        self._scenario = "healthy"

    @property
    def scenario(self) -> str:
        """The active scenario."""
        return self._scenario

    def set_scenario(self, name: str) -> None:
        """Switch the simulated fleet (effective from the next step)."""
        with self._lock:
            if self._stream is not None:
                self._stream.set_scenario(name)
            self._scenario = name
        _log.info("demo scenario: %s", name)

    def _start_epoch(self, now: float) -> int:
        """First step to simulate: 24 h, or what the model's inputs read if more (at most the
        engine's kept history), before now; or right after the saved data's open step when
        the state already holds newer data."""
        from fleetcast.contract.simulate.stream import DEFAULT_BACKFILL_STEPS as DAY

        engine = self._runtime.engine
        kept = int(getattr(engine, "history_steps", DAY))
        spec = getattr(engine, "spec", None)
        needed = int(getattr(spec, "history_steps", DAY))
        window = min(max(DAY, needed), kept)
        first = int(now) // STEP_SECONDS * STEP_SECONDS - window * STEP_SECONDS
        latest = self._runtime.latest_step
        if latest is not None:
            # latest is the newest *closed* step; the step after it is open and has data.
            first = max(first, int(latest) + 2 * STEP_SECONDS)
        return first

    async def start(self) -> None:
        """Build the stream, backfill up to now (awaited), then start streaming."""
        from fleetcast.contract.simulate import FleetStream

        now = time.time()
        start = self._start_epoch(now)
        self._stream = FleetStream(
            n_servers=self._settings.demo_servers,
            seed=self._settings.demo_seed,
            start=start,
            scenario=self._scenario,
        )
        steps = max(0, (int(now) - start) // STEP_SECONDS)
        while steps > 0:
            chunk = min(steps, BACKFILL_CHUNK_STEPS)
            with self._lock:
                rows = self._stream.backfill(chunk)
            try:
                await self._runtime.ingest(stream_columns(rows), forecast=steps == chunk)
            except OSError as exc:  # a full state disk: serve and say so, not a traceback
                log_failure(_log, "demo backfill not stored; the demo streams on", exc)
                self.last_error = write_error_cause(exc)
                break
            steps -= chunk
            self.backfilled_steps += chunk
        _log.info(
            "demo: %d servers, backfilled %d steps, streaming at %gx",
            self._settings.demo_servers,
            self.backfilled_steps,
            self._settings.speed,
        )
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        speed = self._settings.speed
        sim_origin = self._stream.next_timestamp
        real_origin = time.monotonic()
        while True:
            sim_now = sim_origin + (time.monotonic() - real_origin) * speed
            next_ts = self._stream.next_timestamp
            if next_ts <= sim_now:
                try:
                    with self._lock:
                        rows = self._stream.next_step()
                    # The step is due on the simulated clock, which runs ahead of ours.
                    clock = max(time.time(), sim_now)
                    await self._runtime.ingest(stream_columns(rows), now=clock)
                    self.steps_sent += 1
                    self.last_error = None
                except Exception as exc:
                    error = write_error_cause(exc) if isinstance(exc, OSError) else repr(exc)
                    if error != self.last_error:  # once per cause, not once a second
                        log_failure(_log, "demo step failed (retried every second)", exc)
                    self.last_error = error
                    await asyncio.sleep(1.0)
                continue
            await asyncio.sleep(min(1.0, max(0.01, (next_ts - sim_now) / speed)))

    async def stop(self) -> None:
        """Stop streaming (idempotent)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def source_status(self) -> dict[str, Any]:
        """The ``source`` block of /status."""
        running = self._task is not None and not self._task.done()
        return {
            "kind": "demo",
            "healthy": running and self.last_error is None,
            "detail": (
                f"simulated fleet of {self._settings.demo_servers} servers at {self._settings.speed:g}x, "
                f"scenario {self._scenario}, {self.backfilled_steps} steps backfilled, "
                f"{self.steps_sent} streamed"
                + (f"; last error: {self.last_error}" if self.last_error else "")
            ),
        }
