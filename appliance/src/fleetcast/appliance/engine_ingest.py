"""The pure side of :meth:`Engine.ingest`: screening a batch, wording its refusals, counting.

Split from :mod:`fleetcast.appliance.engine` to keep it small. :func:`screen` runs the
checks that do not look at the buffers (the engine re-exports it); :func:`refusals` words
every refused record's reason, the ones the engine found on its buffers included
(docs/DATA_CONTRACT.md#stable-profile, docs/RISK.md#buckets); :func:`tally` counts the
batch into the engine's :data:`COUNTERS` and :func:`count` adds it to them. None of them
reads or changes an Engine: the engine passes in what it found under its lock.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.appliance.engine_types import RecordBatch, Screened
from fleetcast.appliance.forecast import iso

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["CAPACITY_REASON", "COUNTERS", "count", "refusals", "screen", "tally"]

log = logging.getLogger(__name__)

COUNTERS = (
    "accepted",
    "rejected",
    "duplicates",
    "superseded",
    "too_old",
    "future",
    "capacity",
    "invalid",
)
"""The engine's ingest counters, in the order /status reports them (docs/API.md)."""


def screen(batch: RecordBatch, now: float | None, max_future_s: float | None) -> Screened:
    """The checks of :meth:`Engine.ingest` that do not look at the buffers: the contract's
    per-record rules (docs/DATA_CONTRACT.md) and, when ``now`` and ``max_future_s`` are
    given, the clock check. Pure: the runtime runs it once per batch, logs the ``ok`` rows,
    then hands it to :meth:`Engine.ingest`."""
    from fleetcast.contract.records import validate_columns

    n = len(batch)
    names = list(batch.server)
    states = list(batch.state)
    profiles = list(batch.profile)
    metrics = np.empty((n, 4), dtype=np.float64)
    for j, col in enumerate((batch.cpu_pct, batch.mem_pct, batch.disk_io_mb_s, batch.latency_ms)):
        metrics[:, j] = col
    ts_raw = np.asarray(batch.ts)
    ok, reasons = validate_columns(
        {
            "server_name": np.asarray(names, dtype=object),
            "cpu_pct": metrics[:, 0],
            "mem_pct": metrics[:, 1],
            "disk_io_mb_s": metrics[:, 2],
            "latency_ms": metrics[:, 3],
            "timestamp": ts_raw,
            "state": np.asarray(states, dtype=object),
            "profile": np.asarray(profiles, dtype=object),
        }
    )
    ts = np.zeros(n, dtype=np.int64)
    ts[ok] = np.floor(ts_raw[ok].astype(np.float64)).astype(np.int64)
    future: list[int] = []
    if now is not None and max_future_s is not None:
        ahead = ok & (ts > now + max_future_s)
        future = np.flatnonzero(ahead).tolist()
        ok = ok & ~ahead
    return Screened(
        batch, names, states, profiles, metrics, ts, ok, reasons, future, now, max_future_s
    )


CAPACITY_REASON = "is new but the appliance already tracks its capacity"
"""In the reason of a record refused because its new server is beyond the capacity."""


def refusals(
    screened: Screened,
    conflicts: list[tuple[int, str]],
    capacity_full: list[int],
    capacity: int,
    too_old: np.ndarray,
    newest: np.ndarray,
    ring: int,
    step: int,
) -> list[tuple[int, str]]:
    """(index, reason) of every refused record of ``screened``, sorted by index.

    Besides the screen's own (invalid records, records ahead of the clock): ``conflicts``
    (index, the profile its server already has), ``capacity_full`` (new servers beyond the
    ``capacity``) and ``too_old`` (indices of samples older than the ``ring`` steps kept;
    ``newest``: their servers' newest step numbers), as :meth:`Engine.ingest` found them.
    ``step``: the model's step in seconds.
    """
    names, profiles, ts = screened.names, screened.profiles, screened.ts
    now, limit = screened.now, screened.max_future_s
    rejected = [(i, screened.reasons[i]) for i in sorted(screened.reasons)]
    for i, held in conflicts:
        rejected.append(
            (
                i,
                f"profile {profiles[i]!r} contradicts {held!r}, the profile server "
                f"{names[i]!r} already has (from its first records, or from its name when "
                "they had none): a server keeps one profile for its whole history, so "
                "this record is refused and the stored profile stays; send the same "
                "profile or none, and if the host really changed role, send it under a "
                "new name (docs/DATA_CONTRACT.md#stable-profile)",
            )
        )
    for i in capacity_full:
        rejected.append(
            (
                i,
                f"server {names[i]!r} {CAPACITY_REASON} of {capacity} servers; raise the "
                "capacity setting "
                "(docs/OPERATIONS.md#configuration), or free slots: DELETE "
                "/servers/{server_name} or forget_after forget servers "
                "(docs/OPERATIONS.md#forgetting-servers)",
            )
        )
    for i in screened.future:
        rejected.append(
            (
                i,
                f"timestamp {iso(ts[i])} is {(ts[i] - now) / 3600.0:.1f} h ahead of this "
                f"appliance's clock (more than the {limit:g} s allowed): a clock in the "
                f"future would move {names[i]!r}'s window past its real data; fix the "
                "sender's clock (NTP) or raise --max-future-seconds "
                "(docs/RISK.md#buckets)",
            )
        )
    for i, last in zip(too_old.tolist(), newest.tolist(), strict=True):
        rejected.append(
            (
                i,
                f"timestamp {iso(ts[i])} is older than the {ring} steps "
                f"({ring * step / 3600.0:.1f} h) kept for {names[i]!r}, whose newest "
                f"step is {iso(last * step)}; a sample that late "
                "can no longer change a forecast (docs/RISK.md#buckets)",
            )
        )
    rejected.sort()
    return rejected


def tally(
    screened: Screened,
    rejected: list[tuple[int, str]],
    conflicts: list[tuple[int, str]],
    capacity_full: list[int],
    too_old: np.ndarray,
    codes: np.ndarray,
) -> dict[str, int]:
    """One batch's increments of the :data:`COUNTERS`: ``rejected`` as :func:`refusals`
    returned it, ``codes`` the buffers' append codes, the rest as for :func:`refusals`."""
    from fleetcast.appliance.buffers import CODE_DUPLICATE, CODE_SUPERSEDED

    accepted = len(screened.batch) - len(rejected)
    return {
        "accepted": accepted,
        "rejected": len(rejected),
        "invalid": len(screened.reasons) + len(conflicts),
        "capacity": len(capacity_full),
        "future": len(screened.future),
        "too_old": int(too_old.size),
        "duplicates": int(np.count_nonzero(codes == CODE_DUPLICATE)),
        "superseded": int(np.count_nonzero(codes == CODE_SUPERSEDED)),
    }


def count(
    counters: dict[str, int], counts: Mapping[str, int], refused: str | None, capacity: int
) -> None:
    """Add one batch's ``counts`` (:func:`tally`) to the engine's ``counters``. The first
    new server refused for the capacity since the start (``refused``, its name) is logged:
    the sender of a POST reads it in its answer, the operator would not hear of it."""
    if counts["capacity"] and not counters["capacity"]:
        log.warning(
            "server %r is refused: the appliance already tracks its capacity of %d servers, "
            "so new servers' samples are refused (counted in /status ingest.capacity and "
            'fleetcast_ingest_samples_total{result="capacity"}; logged once). Fix: raise '
            "--capacity, or forget retired servers (DELETE /servers/{server_name}, "
            "--forget-after). See docs/OPERATIONS.md#forgetting-servers",
            (refused or "")[:200],
            capacity,
        )
    for key, value in counts.items():
        counters[key] += value
