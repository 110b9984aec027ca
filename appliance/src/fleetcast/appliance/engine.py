"""The appliance's compute core behind one facade: ingest, forecast, risk, history, state.

:class:`Engine` owns the model (:mod:`fleetcast.appliance.model`), the per-server ring
buffers (:mod:`fleetcast.appliance.buffers`), the window builder
(:mod:`fleetcast.appliance.windows`) and the risk model (:mod:`fleetcast.appliance.risk`).
It knows nothing about HTTP: the service wraps it (docs/API.md).
The work behind some methods lives beside it: a batch's screening, the wording of its
refusals and its counts in :mod:`~fleetcast.appliance.engine_ingest` (:func:`screen`
re-exported here), a run's results in :mod:`~fleetcast.appliance.engine_assemble`, the
read-side views (status, one server's forecast and history) in
:mod:`~fleetcast.appliance.engine_views`, forgetting servers in
:mod:`~fleetcast.appliance.engine_forget`, snapshot and restore in
:mod:`~fleetcast.appliance.engine_state`, the plain data types in
:mod:`~fleetcast.appliance.engine_types` (re-exported here).

Threading: :meth:`Engine.ingest` and :meth:`Engine.run_forecast` may be called from
different threads. Both take the buffer lock only for the array work; ONNX Runtime runs
outside it on a private copy of the windows, so ingest never waits for inference.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.appliance import engine_assemble, engine_forget, engine_state, engine_views
from fleetcast.appliance.engine_ingest import COUNTERS, count, refusals, screen, tally
from fleetcast.appliance.engine_state import (
    Readiness,
    heard,
    readiness,
    reference_step,
    set_server_id,
    step_complete,
)
from fleetcast.appliance.engine_types import (
    EngineConfig,
    ForecastSet,
    Forgotten,
    IngestResult,
    RecordBatch,
    Screened,
    check_config,
)
from fleetcast.appliance.forecast import iso
from fleetcast.contract.encoder import profile_from_name
from fleetcast.contract.schema import VALID_PROFILES, VALID_STATES

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from fleetcast.appliance.model import LoadedModel
    from fleetcast.appliance.windows import WindowInputs

__all__ = [
    "Engine",
    "EngineConfig",
    "ForecastSet",
    "Forgotten",
    "IngestResult",
    "RecordBatch",
    "Screened",
    "screen",
]

log = logging.getLogger(__name__)


class Engine:
    """The facade the service drives: one model, one set of buffers, one cached forecast.

    Build with :meth:`open` (or :meth:`restore`); see the module docstring for threading.
    """

    def __init__(self, config: EngineConfig, model: LoadedModel) -> None:
        from fleetcast.appliance.buffers import RingBuffers
        from fleetcast.appliance.history import RiskHistory
        from fleetcast.appliance.risk import Thresholds

        check_config(config)
        spec = model.spec
        self.config = config
        self.model = model
        self.spec = spec
        enc = spec.encoder_length
        need = spec.history_steps  # the encoder plus the day-ago inputs' look-back
        self.history_steps = engine_state.kept_history_steps(config.history_steps, need)
        # +2: the open step and one step before the oldest step read, to forward-fill from.
        self._buf = RingBuffers(config.capacity, self.history_steps + 2, spec.step_seconds)
        cap = config.capacity
        self._profile = np.zeros(cap, dtype=np.int64)
        """Contract profile index (VALID_PROFILES) per server; -1 for a free slot."""
        self._static = np.zeros((cap, 2), dtype=np.int64)
        """Model codes per server: [:, 0] profile, [:, 1] server_id."""
        self._known = np.zeros(cap, dtype=bool)
        self._history = RiskHistory(cap, self._buf.ring_steps, config.risk_history_steps)
        self.thresholds = Thresholds(config.thresholds)
        self.horizons = dict(sorted(spec.horizons.items(), key=lambda kv: kv[1]))
        """Reported horizons (name → steps), shortest first; the last one is the server risk's."""
        self._state_index = {name: i for i, name in enumerate(VALID_STATES)}
        self._profile_index = {name: i for i, name in enumerate(VALID_PROFILES)}
        self._lock, self._forecast_lock = threading.Lock(), threading.Lock()
        self._closed = False
        self._inputs: WindowInputs | None = None
        self._steps: StepCache | None = None
        self._step_rows = (0, 0)
        """(rows served from the step cache, rows computed) in the last forecast."""
        if model.steps is not None and config.step_cache:
            from fleetcast.appliance.step_cache import StepCache

            self._steps = StepCache(
                config.capacity, enc, spec.prediction_length, model.embedding_size
            )
        self._current: ForecastSet | None = None
        self._current_q: np.ndarray | None = None
        self._current_rows: dict[str, int] = {}
        self._current_risk = np.zeros((0, len(self.horizons)))
        """(B, H) server risk per horizon of the current run's rows (to drop one of them)."""
        self._current_profiles: list[str] = []
        """Profile of each row of the current run (``_current_rows`` lists the served ones)."""
        self._freed_slots: list[int] = []
        """Slots forgotten since the last forecast: the step cache drops their rows."""
        self._forgotten = {"deleted": 0, "expired": 0}
        self._alert_since: dict[tuple[str, str, str], str] = {}
        self._alert_seen: dict[tuple[str, str, str], tuple[int, int]] = {}  # alerts.Seen
        self._restored_alerts: list[dict[str, Any]] = []  # the snapshot's, until a forecast
        self._fleet_closed = -1
        """The newest reference step (engine_state.reference_step) the fleet has reached."""
        self._last_forecast_step = -1
        self._heard = np.full(config.capacity, -np.inf)  # ingest clock of each slot's last sample
        self._clock = -np.inf  # the newest ingest clock (engine_state.heard)
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._runs = self._failures = 0
        self._nonfinite = 0
        """Servers left out of a forecast set because their forecast was not finite."""
        self._predictions = 0
        self._latency_ms: deque[float] = deque(maxlen=1000)
        self._first_run: float | None = None
        self._last_prediction_time: str | None = None
        self._started = time.monotonic()

    def close(self) -> None:
        """Stop the model's worker threads once a forecast running on this engine has ended
        (a reload's old engine: closed under it, the run failed); later runs return None."""
        with self._forecast_lock:
            self._closed = True
            self.model.close()

    def reset_counters(self) -> dict[str, int]:
        """Zero the ingest and forget counters (after a start's replay; docs/API.md /status);
        returns the forget counts, by reason, that it zeroed."""
        with self._lock:
            self._counters = dict.fromkeys(COUNTERS, 0)
            forgotten, self._forgotten = self._forgotten, {"deleted": 0, "expired": 0}
        return forgotten

    def count_undecodable(self, n: int) -> None:
        """Count ``n`` records POST /metrics could not decode: rejected, as invalid."""
        with self._lock:
            self._counters["rejected"] += n
            self._counters["invalid"] += n

    @classmethod
    def open(cls, config: EngineConfig) -> Engine:
        """Load and check the model, allocate the buffers. Raises ModelError with a clear message."""
        from fleetcast.appliance.model import load_model

        model = load_model(
            config.model_dir, config.providers, config.intra_op_threads, config.step_cache
        )
        engine = cls(config, model)
        engine.warm_up()
        return engine

    def warm_up(self) -> float:
        """Compile (or load from Numba's cache) the kernels now, on empty inputs; returns seconds.

        Keeps the first real ingest and forecast fast; nothing is compiled at import.
        """
        from fleetcast.appliance.windows import WindowInputs, build_windows

        started = time.perf_counter()
        buf = self._buf
        empty = np.zeros(0, dtype=np.int64)
        with self._lock:
            buf.append(empty, empty, np.zeros((0, 4)), np.zeros(0, dtype=np.int8))
            self._readiness()  # the lengths' and samples' kernels
            tiny = WindowInputs.allocate(self.model.plan, 1)
            build_windows(
                self.model.plan,
                tiny,
                empty,
                empty,
                buf.values,
                buf.state,
                buf.slot_step,
                buf.last_step,
                self._static,
            )
            if self._steps is not None:
                self._steps.warm_up(tiny)
        took = time.perf_counter() - started
        log.info("Numba kernels ready in %.2f s", took)
        return took

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime providers actually in use (``session.get_providers()``)."""
        return list(self.model.providers)

    # -- data in -------------------------------------------------------------------------
    def _register(self, name: str, profile: str | None) -> int:
        """Buffer slot of a server, registering it (profile from record or name).

        Returns -1 when a new server does not fit the capacity, and -2 when ``profile``
        contradicts the profile the server already has: a server has one profile for its
        whole history (docs/DATA_CONTRACT.md#stable-profile), so the record is refused and
        the stored profile never changes. A null profile always fits a known server.
        """
        buf = self._buf
        idx = buf.index.get(name)
        if idx is not None:
            if profile is not None and self._profile[idx] != self._profile_index[profile]:
                return -2
            return idx
        idx = buf.register(name)
        if idx < 0:
            return -1
        self._history.initialise(buf.n)
        self._heard[idx] = self._clock  # new, by any path (a replay has no clock of its own)
        self._set_profile(idx, profile or profile_from_name(name))
        set_server_id(self, idx, name)
        return idx

    def _set_profile(self, idx: int, profile: str) -> None:
        self._profile[idx] = self._profile_index[profile]
        if "profile" in self.spec.categorical_classes:
            self._static[idx, 0] = self.spec.encode_categorical("profile", [profile])[0]

    def ingest(
        self, batch: RecordBatch, now: float | None = None, screened: Screened | None = None
    ) -> IngestResult:
        """Validate and bucket a batch into the ring buffers (thread-safe w.r.t. forecasts).

        Invalid records (docs/DATA_CONTRACT.md), records whose profile contradicts the one
        their server already has (#stable-profile), samples older than the ring, new servers
        beyond the capacity and — when ``now`` (epoch seconds, the service's clock) is given
        and ``config.max_future_s`` is set — samples from further in the future than that are
        rejected with a reason; everything else is acknowledged. Replays of the sample log
        pass no ``now``: what was acknowledged once is stored again. ``screened``: this
        batch's :func:`screen` (with this engine's ``max_future_s``) when the caller already
        ran it; ``now`` is then the screen's.
        """
        from fleetcast.appliance.buffers import CODE_TOO_OLD

        if screened is None:
            screened = screen(batch, now, self.config.max_future_s)
        elif screened.batch is not batch or screened.max_future_s != self.config.max_future_s:
            raise ValueError("screened is another batch's, or another clock limit's")
        n = len(batch)
        names, states, profiles = screened.names, screened.states, screened.profiles
        metrics, ts, ok = screened.metrics, screened.ts, screened.ok
        srv = np.full(n, -1, dtype=np.int64)
        st = np.full(n, -1, dtype=np.int8)
        capacity_full: list[int] = []
        conflicts: list[tuple[int, str]] = []
        state_index = self._state_index
        step = self.spec.step_seconds
        with self._lock:
            for i in np.flatnonzero(ok).tolist():
                idx = self._register(names[i], profiles[i] or None)
                if idx == -2:
                    held = VALID_PROFILES[self._profile[self._buf.index[names[i]]]]
                    conflicts.append((i, held))
                    continue
                if idx < 0:
                    capacity_full.append(i)
                    continue
                srv[i] = idx
                s = states[i]
                st[i] = -1 if not s else state_index[s]
            slots = np.unique(srv[srv >= 0])
            before = self._buf.last_step[slots]  # a copy: the servers whose newest step moves
            codes = self._buf.append(srv, ts, metrics, st)
            heard(self, slots[self._buf.last_step[slots] > before], screened.now)
            newest = reference_step(self)
            old = self._fleet_closed
            closed = 0
            if newest > old:
                closed = newest - old if old >= 0 else 1
                self._fleet_closed = newest
            latest = self._fleet_closed
        too_old = np.flatnonzero(codes == CODE_TOO_OLD)
        last = self._buf.last_step[srv[too_old]]  # the too-old samples' servers' newest steps
        ring, cap = self._buf.ring_steps, self.config.capacity
        rejected = refusals(screened, conflicts, capacity_full, cap, too_old, last, ring, step)
        counts = tally(screened, rejected, conflicts, capacity_full, too_old, codes)
        count(self._counters, counts, names[capacity_full[0]] if capacity_full else None, cap)
        return IngestResult(
            accepted=counts["accepted"],
            rejected=rejected,
            closed_steps=int(closed),
            latest_step=int(latest * step) if latest >= 0 else None,
        )

    def forecast_due(self) -> bool:
        """True when the fleet's reference step is newer than the last forecast's."""
        return self._fleet_closed > self._last_forecast_step

    def step_complete(self) -> bool:
        """:func:`~fleetcast.appliance.engine_state.step_complete`: no need to wait."""
        return step_complete(self)

    # -- forecasts -----------------------------------------------------------------------
    def _readiness(self) -> Readiness:
        """Every slot's window and state (:func:`~fleetcast.appliance.engine_state.readiness`:
        ready, warming, stale, ahead); under the lock."""
        return readiness(self)

    def run_forecast(self) -> ForecastSet | None:
        """Batched inference over all ready servers; caches and returns the set (None: none ready).

        Ready = at least ``min_encoder_length`` closed steps and not stale. Windows are built
        under the buffer lock into preallocated inputs; ONNX Runtime runs outside it.
        Blocking (milliseconds to seconds): call it from a worker thread.
        """
        from fleetcast.appliance.windows import WindowInputs, build_windows

        with self._forecast_lock:
            if self._closed:
                return None
            started = time.perf_counter()
            with self._lock:
                if self._freed_slots and self._steps is not None:
                    self._steps.forget(np.array(self._freed_slots, dtype=np.int64))
                self._freed_slots.clear()
                r = self._readiness()
                lengths, ends = r.lengths, r.ends
                fleet_end = max(self._fleet_closed, r.ref)  # data time never goes back
                idx = np.flatnonzero(r.ready)
                b = int(idx.size)
                self._last_forecast_step = max(self._last_forecast_step, fleet_end)
                if b == 0:
                    return None
                if self._inputs is None or self._inputs.capacity < b:
                    size = max(b, 2 * (self._inputs.capacity if self._inputs else 0), 64)
                    self._inputs = WindowInputs.allocate(
                        self.model.plan, min(size, self.config.capacity)
                    )
                inputs = self._inputs
                buf = self._buf
                build_windows(
                    self.model.plan,
                    inputs,
                    idx,
                    lengths[idx],
                    buf.values,
                    buf.state,
                    buf.slot_step,
                    buf.last_step,
                    self._static,
                )
                names = [buf.names[i] for i in idx.tolist()]
                gens = buf.generation[idx].copy()  # a slot forgotten meanwhile: dropped
                prof = self._profile[idx].copy()
                ends_b = ends[idx].copy()
                lens_b = lengths[idx].copy()
            built = time.perf_counter()
            try:
                q = self._infer(inputs, b, idx, ends_b)
            except Exception:
                self._failures += 1
                self._runs += 1
                log.exception("inference failed for %d servers; the previous forecast stays", b)
                raise
            inferred = time.perf_counter()
            fs = engine_assemble.assemble(
                self, names, (idx, gens), prof, ends_b, lens_b, q, fleet_end
            )
            fs.inference_ms = (inferred - built) * 1000.0
            fs.window_ms = (built - started) * 1000.0
            fs.total_ms = (time.perf_counter() - started) * 1000.0
            self._runs += 1
            self._predictions += b
            self._latency_ms.append(fs.inference_ms)
            if self._first_run is None:
                self._first_run = started
            self._last_prediction_time = iso(time.time())
            log.info(
                "forecast %s: %d servers, windows %.1f ms, inference %.1f ms, total %.1f ms",
                fs.data_time,
                b,
                fs.window_ms,
                fs.inference_ms,
                fs.total_ms,
            )
            return fs

    def _infer(
        self,
        inputs: WindowInputs,
        b: int,
        idx: np.ndarray | None = None,
        ends: np.ndarray | None = None,
    ) -> np.ndarray:
        """Quantiles (B, M, D, Q) float32 for the first ``b`` windows, in batches.

        With a step cache (and ``idx``/``ends``, the windows' server slots and last closed
        steps) only rows not seen before go through the step graphs, then the head runs on
        the cached embeddings; otherwise the full graph runs.
        """
        parts = None
        if self._steps is not None and idx is not None and ends is not None:
            bounds = self.model.bounds(b, self.config.batch_size, step_cache=True)
            try:
                self._step_rows, parts = self._steps.forecast(self.model, inputs, idx, ends, bounds)
            except Exception:
                # The full graph gives the same forecasts: serve them, and stop using a
                # cache that failed (e.g. out of memory while growing).
                log.exception("the step cache failed; running the full graph from now on")
                self._steps = None
                self._step_rows = (0, 0)
        if parts is None:
            bounds = self.model.bounds(b, self.config.batch_size)
            parts = self.model.run_all([inputs.feed(lo, hi) for lo, hi in bounds])
        q = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return np.array(q, dtype=np.float32, copy=True)

    def current(self) -> ForecastSet | None:
        """The cached forecast set; never runs the model."""
        return self._current

    # -- forgetting servers (docs/OPERATIONS.md#forgetting-servers) -----------------------
    def knows(self, name: str) -> bool:
        """Whether ``name`` is a server the engine tracks."""
        return name in self._buf.index

    def forget(self, names: Sequence[str], *, expired: bool = False) -> list[Forgotten]:
        """Forget the known servers of ``names``: free their slots, drop their histories and
        their rows of the served forecast set. ``expired``: by ``forget_after_s``."""
        return engine_forget.forget(self, names, expired=expired)

    def expired(self) -> list[str]:
        """The servers ``config.forget_after_s`` of data time has passed for (none when off)."""
        return engine_forget.expired(self)

    def server_forecast(self, name: str) -> dict[str, Any] | None:
        """One ServerForecast plus full curves (docs/API.md GET /predictions/{server_name})."""
        return engine_views.server_detail(self, name)

    def server_state(self, name: str) -> str | None:
        """``ready``, ``warming``, ``stale`` or ``ahead`` (as GET /servers); None: not tracked."""
        return engine_views.server_state(self, name)

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts of the cached forecast (docs/API.md GET /alerts/active items)."""
        return list(fs.alerts) if (fs := self._current) is not None else []

    def history(self, name: str, steps: int) -> dict[str, Any] | None:
        """One server's actuals and risk, the newest ``steps`` (GET /history/{server_name})."""
        return engine_views.server_history(self, name, steps)

    def profile_history(self, profile: str, steps: int) -> dict[str, Any] | None:
        """Mean actuals and risk over one profile's servers (docs/API.md GET /profiles/{profile}/history)."""
        return engine_views.profile_history(self, profile, steps)

    def fleet_history(self, steps: int) -> dict[str, Any]:
        """The fleet risk trend (docs/API.md GET /fleet/history), oldest first."""
        return engine_views.fleet_history(self, steps)

    def servers(
        self, state: str | None = None, after: str | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """A page of tracked servers (in ``state``), by name; the total; more? (GET /servers)"""
        return engine_views.servers(self, state, after, limit)

    def status(self) -> dict[str, Any]:
        """Model info, servers known/ready/warming/unknown, latency, rates, ingest counters."""
        return engine_views.status(self)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to restore the buffers and histories, as plain numpy arrays."""
        return engine_state.state_arrays(self)

    @classmethod
    def restore(cls, config: EngineConfig, arrays: Mapping[str, np.ndarray]) -> Engine:
        """An engine whose buffers are those of :meth:`state_arrays` (model loaded fresh)."""
        engine = cls.open(config)
        engine.load_state(arrays)
        return engine

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_arrays` into this (fresh) engine."""
        engine_state.load_state(self, arrays)
