"""The Engine's state as plain numpy arrays: snapshot and restore.

Split from :mod:`fleetcast.appliance.engine` to keep it small; :meth:`Engine.state_arrays`
and :meth:`Engine.load_state` delegate here (persistence: :mod:`fleetcast.appliance.persistence`).
It also decides how many steps of actuals a server keeps (:func:`kept_history_steps`) and
the fleet's reference step, its "now" in data time (:func:`reference_step`).
Per-slot arrays cover the slots used so far, free ones (forgotten servers', named ``""``,
profile -1) included, so a restore puts every server back in its slot.
These functions are part of the Engine: they use its private state under its lock,
as its methods do; call them through :class:`~fleetcast.appliance.engine.Engine`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

import msgspec
import numpy as np

from fleetcast.contract.encoder import server_id
from fleetcast.contract.schema import VALID_PROFILES

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from fleetcast.appliance.engine import Engine

log = logging.getLogger("fleetcast.appliance.engine")

__all__ = [
    "SERVER_STATES",
    "Readiness",
    "carry_alerts",
    "carry_counters",
    "fleet_reference",
    "heard",
    "keep_alerts",
    "kept_history_steps",
    "load_state",
    "quiet",
    "readiness",
    "reference_step",
    "set_server_id",
    "state_arrays",
    "step_complete",
]

_PER_SLOT = (
    "buf_values",
    "buf_state",
    "buf_slot_step",
    "buf_slot_off",
    "buf_last_step",
    "buf_samples",
    "buf_names",
    "buf_name_lengths",
    "profile",
    "risk",
    "risk_step",
    "heard",
)
"""The snapshot's arrays with one row per slot."""


def fleet_reference(ends: np.ndarray) -> int:
    """The fleet's reference step: the 90th percentile (lower) of the servers' newest closed
    steps ``ends`` (n,), a robust "now" that a few servers with bad clocks cannot move (of
    two, the older: one running fast cannot move it); -1 for no servers. A server whose data
    stopped is left out before (:func:`reference_step`)."""
    return int(np.percentile(ends, 90, method="lower")) if ends.size else -1


QUIET_AFTER_STEPS = 3
"""A server that sent nothing for this many steps of the ingest clock, while others did,
is left out of the fleet's reference step (:func:`reference_step`)."""


def heard(engine: Engine, slots: np.ndarray, now: float | None) -> None:
    """Note that ``slots`` sent new data (their newest step moved) at ``now``, the ingest's
    clock (epoch seconds: this machine's, or the demo's simulated one); under the lock.

    The clock only runs while data arrives: a silence of the whole fleet longer than a
    step (the appliance down, a network outage) counts against no server, so the first
    one to send again is not taken for the whole fleet; a clock set back moves every
    server's time with it. The first clock (a fresh engine, a snapshot from before these
    times were kept) counts every server as just heard."""
    if now is None:  # a replay of the sample log (or a test): no clock, nothing heard
        return
    now = float(now)
    times = engine._heard[: engine._buf.n]
    if not np.isfinite(engine._clock):
        times[:] = now
    elif (skip := now - engine._clock - engine.spec.step_seconds) > 0:
        times += skip
    elif now < engine._clock:
        times += now - engine._clock
    engine._clock = now
    engine._heard[slots] = now


def reference_step(engine: Engine) -> int:
    """The fleet's reference step (:func:`fleet_reference`) over the servers still sending:
    one that sent nothing for :data:`QUIET_AFTER_STEPS` steps of the ingest clock is left
    out, so when most of a fleet stops, the servers still sending are the fleet's "now"
    (those stopped become stale, data time goes on, ``forget_after`` frees them), not
    "ahead" of it. A replay sent faster than real time leaves no one out. All servers'
    steps when every one is quiet; -1 for none. Under the lock."""
    buf = engine._buf
    n = buf.n
    used = buf.used[:n]
    ends = buf.last_step[:n] - 1
    live = used & ~quiet(engine)
    return fleet_reference(ends[live] if live.any() else ends[used])


def quiet(engine: Engine) -> np.ndarray:
    """(n,) bool: the slots that sent nothing for :data:`QUIET_AFTER_STEPS` steps of the
    ingest clock while others sent (a new server counts as heard when it registers); under
    the lock."""
    limit = engine._clock - QUIET_AFTER_STEPS * engine.spec.step_seconds
    return engine._heard[: engine._buf.n] < limit


def step_complete(engine: Engine) -> bool:
    """True when no server is late: still sending, with enough samples, its open step the
    fleet's step (its next sample closes it; one always further behind is not waited for)
    and in step with the fleet once it has closed it. The forecast need not wait."""
    with engine._lock:
        r = engine._readiness()
        step, lag = engine._fleet_closed, engine.config.stale_after_steps
        enough = r.samples >= engine.spec.min_encoder_length
        late = r.used & ~quiet(engine) & enough & (r.ends == step - 1)
        late &= np.abs(step - r.ref) <= lag
    return not late.any()


SERVER_STATES = ("ready", "warming", "stale", "ahead")
"""A tracked server's state in ``GET /servers`` (as counted in ``/status`` → ``servers``)."""


class Readiness(NamedTuple):
    """Every slot's window and state (:func:`readiness`); a free slot's ``used`` is false."""

    lengths: np.ndarray
    """(n,) encoder length: the window the model reads, its gaps forward-filled."""
    samples: np.ndarray
    """(n,) the steps of that window that have a sample, up to ``min_encoder_length``
    (exact for a warming server)."""
    ends: np.ndarray
    """(n,) newest closed step."""
    used: np.ndarray
    """(n,) bool: a tracked server."""
    states: np.ndarray
    """(n,) index into :data:`SERVER_STATES`."""
    ref: int
    """The fleet's reference step (:func:`reference_step`; -1: no servers)."""

    @property
    def ready(self) -> np.ndarray:
        """(n,) bool: forecast in the next run."""
        return self.used & (self.states == 0)


def readiness(engine: Engine) -> Readiness:
    """Each server's state (docs/RISK.md#buckets), under the lock: *stale* when its newest
    closed step lags the reference step by more than ``stale_after_steps`` (its data
    stopped, however few steps it had), *ahead* when it leads it by as much (a clock in
    the future), *warming* when in step with fewer than ``min_encoder_length`` steps with a
    sample in its window (forward-filled gaps do not count: one sample an hour must not
    look like an hour of data), else *ready*."""
    from fleetcast.appliance.windows import window_lengths, window_samples

    buf = engine._buf
    n, enc = buf.n, engine.spec.encoder_length
    lengths = window_lengths(buf.slot_step, buf.last_step, n, enc)
    samples = window_samples(buf.slot_step, buf.last_step, n, enc, engine.spec.min_encoder_length)
    ends = buf.last_step[:n] - 1
    ref = reference_step(engine)
    lag = engine.config.stale_after_steps
    short = samples < engine.spec.min_encoder_length
    states = np.select([ends < ref - lag, ends > ref + lag, short], [2, 3, 1], default=0)
    return Readiness(lengths, samples, ends, buf.used[:n].copy(), states, ref)


def set_server_id(engine: Engine, slot: int, name: str) -> None:
    """The model's server_id code of ``name`` in ``slot`` (the unknown-server code for a
    server the model has no embedding of), and whether the model learnt this server's own
    patterns (``known`` in GET /servers): trained on it with its ID, not one of the servers
    whose ID training nulled to train the unknown-server embedding."""
    spec = engine.spec
    known = name in spec.server_mapping
    if "server_id" in spec.categorical_classes:
        code = spec.encode_categorical("server_id", [server_id(name)])[0]
        engine._static[slot, 1] = code
        known = known and code != spec.unknown_codes["server_id"]
    engine._known[slot] = known


def state_arrays(engine: Engine) -> dict[str, np.ndarray]:
    """Everything needed to restore the buffers and histories, as plain numpy arrays."""
    with engine._lock:
        n = engine._buf.n
        out = {f"buf_{k}": v for k, v in engine._buf.state_arrays().items()}
        out["profile"] = engine._profile[:n].copy()
        out.update(engine._history.state_arrays(n))
        out["last_forecast_step"] = np.array([engine._last_forecast_step], dtype=np.int64)
        out["heard"] = engine._heard[:n].copy()
        out["clock"] = np.array([engine._clock])
        alerts = engine._current.alerts if engine._current is not None else engine._restored_alerts
        out["alerts"] = np.frombuffer(msgspec.json.encode(alerts), dtype=np.uint8).copy()
        seen = [[*key, *steps] for key, steps in engine._alert_seen.items()]
        out["alert_seen"] = np.frombuffer(msgspec.json.encode(seen), dtype=np.uint8).copy()
    return out


def _restored_alerts(raw: np.ndarray | None, tracked: Collection[str]) -> list[dict]:
    """The alerts a snapshot holds (JSON bytes) of servers ``tracked``; [] for a snapshot
    from before they were kept, or one whose alerts do not read (logged: the history
    matters more than alerts the next forecast raises again)."""
    if raw is None:
        return []
    from fleetcast.appliance.schemas import AlertItem

    try:  # every field as GET /alerts/active serves it, checked (a foreign file too)
        items = msgspec.json.decode(np.asarray(raw, dtype=np.uint8).tobytes(), type=list[AlertItem])
    except msgspec.DecodeError as exc:
        log.warning("the snapshot's alerts do not read (%s): starting without them", exc)
        return []
    alerts = [msgspec.structs.asdict(a) for a in items]
    return [a for a in alerts if a["server_name"] in tracked and a["since"] is not None]


def _compacted(arrays: Mapping[str, np.ndarray], capacity: int) -> Mapping[str, np.ndarray]:
    """``arrays`` without their free slots when they have more slots than ``capacity`` but
    no more servers (a smaller capacity after servers were forgotten); else as they are."""
    names = np.asarray(arrays["buf_names"])
    if names.shape[0] <= capacity:
        return arrays
    keep = names != ""
    if "buf_name_lengths" in arrays:  # a name of NUL characters reads as "" (buffers.py)
        keep = np.asarray(arrays["buf_name_lengths"]) > 0
    if not keep.all():
        arrays = {k: (np.asarray(v)[keep] if k in _PER_SLOT else v) for k, v in arrays.items()}
    return arrays


def load_state(engine: Engine, arrays: Mapping[str, np.ndarray]) -> None:
    """Restore :func:`state_arrays` into this (fresh) engine."""
    arrays = _compacted(arrays, engine.config.capacity)
    buf_arrays = {k[4:]: v for k, v in arrays.items() if k.startswith("buf_")}
    with engine._lock:
        engine._buf.load_arrays(buf_arrays)
        n = engine._buf.n
        for i, name in enumerate(engine._buf.names):
            if not name:  # a free slot
                engine._profile[i] = -1
                continue
            profile = VALID_PROFILES[int(arrays["profile"][i])]
            engine._set_profile(i, profile)
            set_server_id(engine, i, name)
        engine._history.load_arrays(arrays, n)
        # The alerts of the last forecast before the snapshot: kept for the servers the
        # first forecast leaves out, and their ``since`` holds the hysteresis (RISK.md#alerts).
        engine._restored_alerts = _restored_alerts(arrays.get("alerts"), engine._buf.index)
        engine._alert_since = {
            (a["server_name"], a["metric"], a["horizon"]): a["since"]
            for a in engine._restored_alerts
            if isinstance(a.get("since"), str)
        }
        engine._alert_seen = restored_seen(
            arrays.get("alert_seen"), engine._restored_alerts, engine.spec.step_seconds
        )
        if "heard" in arrays:  # older snapshots: the first clock counts all as just heard
            engine._heard[:n] = arrays["heard"]
            engine._clock = float(np.asarray(arrays["clock"]).reshape(-1)[0])
        engine._fleet_closed = reference_step(engine)
        engine._last_forecast_step = -1  # forecast once after a restore


def kept_history_steps(asked: int | None, needed: int) -> int:
    """Steps of actuals kept per server: ``asked`` (``--history-steps``; None: ``needed``),
    never fewer than the model's inputs read (``needed``), with a WARNING when it is raised:
    a value the operator set is not changed silently."""
    if asked is not None and asked < needed:
        log.warning(
            "history_steps %d is fewer steps than the model reads (%d: its encoder, plus a "
            "day for day-ago inputs); keeping %d. Set --history-steps to %d or more, or leave "
            "it unset (docs/OPERATIONS.md#configuration)",
            asked,
            needed,
            needed,
            needed,
        )
    return max(int(asked or needed), needed)


def carry_counters(old: Engine, new: Engine) -> None:
    """Give ``new`` (a reloaded model's engine, under the runtime's ingest lock, before it
    serves) ``old``'s counters: they count the process's work, not a model's, and Prometheus
    reads a counter that drops while the process runs as a restart (``/admin/reload`` took
    ``fleetcast_ingest_samples_total`` from 1,556,000 to 4,000). The ingest and forget
    counters are ``old``'s as they are (what ``new`` ingested while it loaded was ingested by
    ``old`` too); the forecast counters add ``new``'s first run to them."""
    with old._lock:
        counters, forgotten = dict(old._counters), dict(old._forgotten)
        runs, failures, nonfinite = old._runs, old._failures, old._nonfinite
        predictions, latency, first = old._predictions, list(old._latency_ms), old._first_run
    with new._lock:
        new._counters, new._forgotten = counters, forgotten
        new._runs += runs
        new._failures += failures
        new._nonfinite += nonfinite
        new._predictions += predictions
        mine = list(new._latency_ms)
        new._latency_ms.clear()
        new._latency_ms.extend(latency + mine)
        new._first_run = first if first is not None else new._first_run


def restored_seen(
    raw: np.ndarray | None, alerts: list[dict], step_seconds: int
) -> dict[tuple[str, str, str], tuple[int, int]]:
    """:data:`~fleetcast.appliance.alerts.Seen` of a snapshot's ``alerts``: as it was saved
    (``raw``, JSON), or for a snapshot without it (older, or damaged: logged) each alert as
    raised, and critical if it was, at the step of its ``data_time``: its keep-firing
    window starts again there."""
    from fleetcast.appliance.alerts import NEVER
    from fleetcast.appliance.forecast import epoch_of

    keys = {(a["server_name"], a["metric"], a["horizon"]) for a in alerts}
    if raw is not None:
        try:
            rows = msgspec.json.decode(
                np.asarray(raw, dtype=np.uint8).tobytes(), type=list[tuple[str, str, str, int, int]]
            )
        except msgspec.DecodeError as exc:
            log.warning("the snapshot's alert_seen does not read (%s): windows restart", exc)
        else:
            return {(s, m, h): (r, c) for s, m, h, r, c in rows if (s, m, h) in keys}
    seen = {}
    for a in alerts:
        try:
            step = int(epoch_of(a["data_time"]) // step_seconds) if a.get("data_time") else NEVER
        except ValueError:  # not a time: no window (the alert itself is kept)
            step = NEVER
        seen[a["server_name"], a["metric"], a["horizon"]] = (
            step,
            step if a.get("severity") == "critical" else NEVER,
        )
    return seen


def carry_alerts(old: Engine, new: Engine) -> None:
    """Give ``new`` (a reloaded model's engine, before it serves) the alerts ``old`` kept
    for servers its first forecast left out (stale, ahead, not finite; docs/RISK.md#alerts):
    without them, ``systemctl reload`` resolved the alerts of every server whose data had
    stopped, and they never fired again while it stayed stopped."""
    with old._lock:
        previous = list(old._current.alerts) if old._current is not None else []
    with new._lock:
        if new._current is not None:
            keep_alerts(new, previous, new._current_rows)


def keep_alerts(
    engine: Engine,
    previous: list[dict],
    forecast: Collection[str],
    not_finite: Collection[str] = (),
) -> None:
    """Add to ``engine``'s current set the alerts of ``previous`` whose servers it tracks but
    did not forecast (``forecast``: those it did), marked stale, with their ``since`` and
    why each server was left out (:func:`~fleetcast.appliance.alerts.carried_alerts`):
    ``not_finite`` names the servers whose forecast was not finite; the others have too
    short a window (``warming``), lead the fleet (``ahead``) or lag it (``stale``; also a
    server ready again since the forecast read the windows: it was left out as one).
    Under ``engine._lock``, where a forget takes it: a server forgotten by then is not in
    the index."""
    from fleetcast.appliance.alerts import carried_alerts, ordered

    fs = engine._current
    index = engine._buf.index
    if fs is None or not (left := {a["server_name"] for a in previous} - set(forecast)):
        return
    # An alert is carried once: a reload's first forecast carried the snapshot's already.
    held = {(a["server_name"], a["metric"], a["horizon"]) for a in fs.alerts}
    previous = [a for a in previous if (a["server_name"], a["metric"], a["horizon"]) not in held]
    states = engine._readiness().states
    why: dict[str, str] = {}
    for name in left & index.keys():
        state = SERVER_STATES[states[index[name]]]
        why[name] = "not_finite" if name in not_finite else state.replace("ready", "stale")
    kept = carried_alerts(previous, why)
    if not kept:
        return
    for a in kept:
        engine._alert_since[(a["server_name"], a["metric"], a["horizon"])] = a["since"]
    fs.alerts = ordered(fs.alerts + kept)
