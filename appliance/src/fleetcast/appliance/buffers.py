"""Per-server ring buffers of model steps, filled by a Numba kernel (data time, not wall clock).

Layout (S = capacity servers, W = ring steps, M = 4 metrics in contract order):

- ``values``    float32 (S, W, M)  the step's value of each metric
- ``state``     int8    (S, W)     the step's state: index in VALID_STATES, -1 = null/unknown
- ``slot_step`` int32   (S, W)     which step (``ts // STEP_SECONDS``) a slot holds; -1 = empty
- ``slot_off``  int16   (S, W)     offset in seconds of the kept sample inside its step
- ``last_step`` int64   (S,)       the newest step seen per server (-1 = none); its slot is the
  *open* step, every older step is *closed*

Slots: a new server takes the lowest free slot. :meth:`RingBuffers.free` (a forgotten
server, docs/OPERATIONS.md#forgetting-servers) clears a slot and makes it free again, so
free slots may lie between used ones: ``used`` marks the servers' slots, ``names`` holds
``""`` for a free one, and every used slot is below :attr:`RingBuffers.n`.

Rules (docs/RISK.md#buckets):

- A sample goes to step ``ts // STEP_SECONDS``, slot ``step % W``.
- Several samples in one step: the **last by data timestamp** wins (a 5-minute step is a
  point sample, as in the training data). Same timestamp, different values: the larger
  (cpu, mem, disk, latency, state) tuple wins, so any order of the same samples gives the
  same buffer. An identical sample is a duplicate: accepted, idempotent, counted.
- Out of order within the ring: stored in its slot. Older than the ring
  (``step <= last_step - W``): rejected with :data:`REASON_TOO_OLD`.
- When ``last_step`` advances, slots that fall out of the ring are cleared, so the arrays
  hold exactly the steps ``last_step - W + 1 .. last_step`` whatever the arrival order
  (the "replay equality" the tests check).
"""

from __future__ import annotations

import heapq
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.schema import METRIC_COLUMNS, STEP_SECONDS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "CODE_ACCEPTED",
    "CODE_DUPLICATE",
    "CODE_SUPERSEDED",
    "CODE_TOO_OLD",
    "RingBuffers",
    "append_kernel",
    "jit_kernel",
    "records_to_columns",
]

CODE_ACCEPTED = 0
"""Stored (it is now the step's value)."""
CODE_SUPERSEDED = 1
"""Valid and acknowledged, but a later sample of the same step already holds the step."""
CODE_DUPLICATE = 2
"""An identical sample was already stored: idempotent."""
CODE_TOO_OLD = 3
"""Older than the ring (rejected)."""

N_METRICS = len(METRIC_COLUMNS)


def jit_kernel(func: Any, *, fastmath: bool | set[str] = False) -> Any:
    """``numba.njit(cache=True, nogil=True, fastmath=fastmath)(func)``, imported lazily
    (nothing at module import).

    Numba caches compiled kernels beside the source or in the user's cache directory; where
    neither is writable (a hardened service without ``NUMBA_CACHE_DIR``), it compiles
    without the on-disk cache instead of failing (slower start, same results).
    """
    import logging

    import numba

    try:
        return numba.njit(cache=True, nogil=True, fastmath=fastmath)(func)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        logging.getLogger(__name__).warning(
            "Numba cannot cache %s (%s); compiling in memory. Set NUMBA_CACHE_DIR to a "
            "writable folder for faster starts (docs/OPERATIONS.md).",
            func.__name__,
            exc,
        )
        return numba.njit(cache=False, nogil=True, fastmath=fastmath)(func)


def _append_impl(
    srv,
    ts,
    vals,
    state,
    step_seconds,
    values,
    states,
    slot_step,
    slot_off,
    last_step,
    codes,
):
    """Bucket n samples into the rings. Shapes: srv/ts (n,), vals (n, 4), state (n,), codes (n,) out.

    ``srv[i] < 0`` marks a sample rejected before the kernel (its code is left untouched).
    Each server's ring first moves to its newest step in the batch, so a sample is judged
    too old against that step whatever its place in the batch.
    """
    n = srv.shape[0]
    w = values.shape[1]
    m = values.shape[2]
    for i in range(n):
        s = srv[i]
        if s < 0:
            continue
        step = ts[i] // step_seconds
        last = last_step[s]
        if step > last:
            # Clear the slots that leave the ring: steps last-w+1 .. step-w.
            if last >= 0:
                lo = last - w + 1
                hi = min(step - w, last)
                for old in range(lo, hi + 1):
                    if old < 0:
                        continue
                    k = old % w
                    if slot_step[s, k] == old:
                        slot_step[s, k] = -1
                        slot_off[s, k] = 0
                        states[s, k] = -1
                        for j in range(m):
                            values[s, k, j] = 0.0
            last_step[s] = step
    for i in range(n):
        s = srv[i]
        if s < 0:
            continue
        t = ts[i]
        step = t // step_seconds
        off = t - step * step_seconds
        if step <= last_step[s] - w:
            codes[i] = 3
            continue
        k = step % w
        write = False
        if slot_step[s, k] != step or off > slot_off[s, k]:
            write = True
        elif off == slot_off[s, k]:
            # Same timestamp: identical -> duplicate; else the larger tuple wins.
            cmp = 0
            for j in range(m):
                a = np.float32(vals[i, j])
                b = values[s, k, j]
                if a > b:
                    cmp = 1
                    break
                if a < b:
                    cmp = -1
                    break
            if cmp == 0:
                if state[i] > states[s, k]:
                    cmp = 1
                elif state[i] < states[s, k]:
                    cmp = -1
            if cmp == 0:
                codes[i] = 2
                continue
            write = cmp > 0
        if write:
            slot_step[s, k] = step
            slot_off[s, k] = off
            states[s, k] = state[i]
            for j in range(m):
                values[s, k, j] = vals[i, j]
            codes[i] = 0
        else:
            codes[i] = 1


@cache
def append_kernel() -> Any:
    """The compiled append kernel (compiled on first use, cached on disk by Numba)."""
    return jit_kernel(_append_impl)


class RingBuffers:
    """Preallocated per-server step rings and the name registry.

    Args:
        capacity: maximum number of servers.
        ring_steps: W, steps kept per server (>= encoder length + 2; see windows.py).
        step_seconds: the model's step.
    """

    def __init__(self, capacity: int, ring_steps: int, step_seconds: int = STEP_SECONDS) -> None:
        if capacity < 1 or ring_steps < 2:
            raise ValueError(
                f"RingBuffers needs capacity >= 1 and ring_steps >= 2, got {capacity}, {ring_steps}."
            )
        self.capacity = int(capacity)
        self.ring_steps = int(ring_steps)
        self.step_seconds = int(step_seconds)
        # np.zeros maps untouched pages lazily: a large capacity costs memory only as servers
        # arrive. The empty marks (-1) of `state` and `slot_step` are therefore written per
        # slot when a slot is first used (:meth:`_initialise`), not here.
        self.values = np.zeros((capacity, ring_steps, N_METRICS), dtype=np.float32)
        self.state = np.zeros((capacity, ring_steps), dtype=np.int8)
        self.slot_step = np.zeros((capacity, ring_steps), dtype=np.int32)
        self._initialised = 0
        """Slots below this hold their empty marks; the rest were never used."""
        self.slot_off = np.zeros((capacity, ring_steps), dtype=np.int16)
        self.last_step = np.full(capacity, -1, dtype=np.int64)
        self.samples = np.zeros(capacity, dtype=np.int64)
        self.used = np.zeros(capacity, dtype=bool)
        """Slots holding a server (a free slot: False)."""
        self.generation = np.zeros(capacity, dtype=np.int64)
        """Times each slot was freed: a slot read before and after a forget is another server's
        when its generation changed (not saved; starts at 0)."""
        self.names: list[str] = []
        """Server name per slot below :attr:`n` (``""``: a free slot)."""
        self.index: dict[str, int] = {}
        self._free: list[int] = []
        """Free slots below :attr:`n`, a heap (the lowest is reused first)."""

    @property
    def n(self) -> int:
        """Slots used so far (the high-water mark): every server's slot is below it, free
        slots may be too. Slice per-slot arrays with it; :attr:`count` is the servers."""
        return len(self.names)

    @property
    def count(self) -> int:
        """Number of servers registered."""
        return len(self.index)

    def register(self, name: str) -> int:
        """Slot of ``name``, adding it if new (in the lowest free slot); -1 when the capacity
        is exhausted."""
        idx = self.index.get(name)
        if idx is not None:
            return idx
        if self._free:
            idx = heapq.heappop(self._free)
            self.names[idx] = name
        elif len(self.names) >= self.capacity:
            return -1
        else:
            idx = len(self.names)
            self._initialise(idx + 1)
            self.names.append(name)
        self.index[name] = idx
        self.used[idx] = True
        return idx

    def _initialise(self, slots: int) -> None:
        """Write the empty marks of every slot below ``slots`` not initialised yet."""
        if slots > self._initialised:
            self.state[self._initialised : slots] = -1
            self.slot_step[self._initialised : slots] = -1
            self._initialised = slots

    def free(self, idx: int) -> int:
        """Forget the server in slot ``idx``: clear its steps and free the slot for a new
        server. Returns how many steps it held (the open one included)."""
        name = self.names[idx]
        if not name or self.index.get(name) != idx:
            raise ValueError(f"slot {idx} holds no server")
        held = int(np.count_nonzero(self.slot_step[idx] >= 0))
        self.values[idx] = 0.0
        self.state[idx] = -1
        self.slot_step[idx] = -1
        self.slot_off[idx] = 0
        self.last_step[idx] = -1
        self.samples[idx] = 0
        self.used[idx] = False
        self.generation[idx] += 1
        self.names[idx] = ""
        del self.index[name]
        heapq.heappush(self._free, idx)
        return held

    def append(
        self,
        srv: np.ndarray,
        ts: np.ndarray,
        vals: np.ndarray,
        state: np.ndarray,
    ) -> np.ndarray:
        """Bucket samples (srv int64 (n,), ts int64 (n,), vals float64 (n, 4), state int8 (n,)).

        Returns int8 codes (n,): CODE_* per sample (-1 where ``srv < 0``).
        """
        codes = np.full(srv.shape[0], -1, dtype=np.int8)
        append_kernel()(
            np.ascontiguousarray(srv, dtype=np.int64),
            np.ascontiguousarray(ts, dtype=np.int64),
            np.ascontiguousarray(vals, dtype=np.float64),
            np.ascontiguousarray(state, dtype=np.int8),
            np.int64(self.step_seconds),
            self.values,
            self.state,
            self.slot_step,
            self.slot_off,
            self.last_step,
            codes,
        )
        ok = srv[codes <= CODE_DUPLICATE]
        if ok.size:
            np.add.at(self.samples, ok, 1)
        return codes

    def series(
        self, s: int, end_step: int, steps: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw (not filled) steps ``end_step-steps+1 .. end_step`` of server ``s``.

        Returns (present bool (steps,), values float32 (steps, 4), state int8 (steps,)).
        """
        wanted = np.arange(end_step - steps + 1, end_step + 1, dtype=np.int64)
        slots = wanted % self.ring_steps
        present = (self.slot_step[s, slots] == wanted) & (wanted >= 0)
        vals = np.where(present[:, None], self.values[s, slots], np.nan).astype(np.float32)
        st = np.where(present, self.state[s, slots], -1).astype(np.int8)
        return present, vals, st

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The buffers as plain arrays (names as a unicode array, ``""`` for a free slot, and
        each name's length: numpy's unicode arrays drop a name's trailing NUL characters,
        which the contract allows; no object dtype, no pickle)."""
        n = self.n
        return {
            "values": self.values[:n].copy(),
            "state": self.state[:n].copy(),
            "slot_step": self.slot_step[:n].copy(),
            "slot_off": self.slot_off[:n].copy(),
            "last_step": self.last_step[:n].copy(),
            "samples": self.samples[:n].copy(),
            "names": np.array(self.names, dtype=np.str_),
            "name_lengths": np.array([len(name) for name in self.names], dtype=np.int64),
            "ring_steps": np.array([self.ring_steps], dtype=np.int64),
            "step_seconds": np.array([self.step_seconds], dtype=np.int64),
        }

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_arrays` output (same step; a different ring length is re-bucketed,
        keeping the newest steps that fit; what a shorter ring drops is logged as a warning).
        A name ``""`` is a free slot (a forgotten server's), free again after the restore."""
        step = int(np.asarray(arrays["step_seconds"])[0])
        if step != self.step_seconds:
            raise ValueError(
                f"Saved buffers use {step}-second steps but the model uses {self.step_seconds}. "
                "Why it matters: steps of another size cannot be reinterpreted. Fix: start with "
                "an empty state directory or the model the state was saved with. "
                "See docs/OPERATIONS.md#state."
            )
        names = [str(x) for x in np.asarray(arrays["names"]).tolist()]
        if "name_lengths" in arrays:  # absent from snapshots written before it was kept
            lengths = np.asarray(arrays["name_lengths"]).tolist()
            names = [name.ljust(int(k), "\0") for name, k in zip(names, lengths, strict=True)]
        if len(names) > self.capacity:
            servers = sum(1 for name in names if name)
            raise ValueError(
                f"Saved state has {servers} servers in {len(names)} slots but capacity is "
                f"{self.capacity}. Fix: raise the capacity setting. See docs/OPERATIONS.md#state."
            )
        old_w = int(np.asarray(arrays["ring_steps"])[0])
        n = len(names)
        self._initialise(n)
        self.names = names
        self.index = {name: i for i, name in enumerate(names) if name}
        self.used[:] = False
        self.used[:n] = [bool(name) for name in names]
        self._free = [i for i, name in enumerate(names) if not name]  # ascending: a heap
        self.last_step[:n] = arrays["last_step"]
        self.samples[:n] = arrays["samples"]
        if old_w == self.ring_steps:
            self.values[:n] = arrays["values"]
            self.state[:n] = arrays["state"]
            self.slot_step[:n] = arrays["slot_step"]
            self.slot_off[:n] = arrays["slot_off"]
            return
        # Re-bucket the saved steps into the new ring length (keeps the newest that fit).
        old_steps = np.asarray(arrays["slot_step"]).astype(np.int64)
        fits = old_steps > (self.last_step[:n] - self.ring_steps)[:, None]
        dropped = (old_steps >= 0) & ~fits
        for s in range(n):
            for k in np.flatnonzero((old_steps[s] >= 0) & fits[s]):
                st = int(old_steps[s, k])
                j = st % self.ring_steps
                self.slot_step[s, j] = st
                self.slot_off[s, j] = arrays["slot_off"][s, k]
                self.state[s, j] = arrays["state"][s, k]
                self.values[s, j] = arrays["values"][s, k]
        if dropped.any():
            import logging

            logging.getLogger(__name__).warning(
                "saved history dropped: the ring of steps kept per server went from %d to %d "
                "steps (a smaller --history-steps, or a model that reads fewer steps), so the "
                "oldest %d steps of %d servers no longer fit and were dropped "
                "(docs/OPERATIONS.md#state)",
                old_w,
                self.ring_steps,
                int(dropped.sum()),
                int(dropped.any(axis=1).sum()),
            )


def records_to_columns(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Contract records (dicts) to RecordBatch columns; ISO timestamps parsed to epoch seconds."""
    from datetime import datetime

    ts = np.empty(len(records), dtype=np.int64)
    for i, r in enumerate(records):
        t = r.get("timestamp")
        if isinstance(t, str):
            t = datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
        ts[i] = int(t) if t is not None else -1
    cols: dict[str, Any] = {
        "ts": ts,
        "server": [r.get("server_name") for r in records],
        "state": [r.get("state") for r in records],
        "profile": [r.get("profile") for r in records],
    }
    for metric in METRIC_COLUMNS:
        cols[metric] = np.array(
            [np.nan if r.get(metric) is None else r.get(metric) for r in records],
            dtype=np.float64,
        )
    return cols
