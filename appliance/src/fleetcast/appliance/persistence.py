"""Durable state: an append-only log of accepted samples plus periodic engine snapshots.

Layout of ``--state-dir``::

    snapshot.npz        engine.state_arrays() + a JSON header (log generation, times)
    log-00000042.wal    accepted samples since that snapshot, one frame per request

A frame is ``b"FCW1" | u32 length | u32 crc32(payload) | payload`` where the payload is a
MessagePack :class:`LogFrame` (numeric columns as raw little-endian bytes). Each POST is
written with one ``os.write`` and, with ``fsync=True``, one ``fdatasync`` before the
response: an acknowledged sample is on disk (``kill -9`` and power loss lose nothing
acknowledged). A snapshot rotates to a new log generation under the ingest lock, writes
``snapshot.npz`` via tmp + fsync + rename, then deletes older generations. On start the
snapshot is loaded and every log generation it does not cover is replayed in order; a
torn last frame (a crash mid-write) fails its length or CRC check, is dropped with a
warning and cut off the file. Why this design and what it costs: docs/OPERATIONS.md#state.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

__all__ = [
    "FRAME_MAGIC",
    "Columns",
    "LogFrame",
    "Recovery",
    "StateStore",
    "decode_frames",
    "encode_frame",
]

_log = logging.getLogger(__name__)

FRAME_MAGIC = b"FCW1"
_HEADER = struct.Struct("<4sII")
_SNAPSHOT = "snapshot.npz"
_META_KEY = "__fleetcast_meta__"
_MAX_FRAME = 1 << 30


class LogFrame(msgspec.Struct, array_like=True, frozen=True):
    """One logged batch. ``ts``: int64 (n,) bytes; ``metrics``: float64 (n, 4) bytes in
    contract metric order; names, states and profiles as lists."""

    ts: bytes
    metrics: bytes
    server: list[str]
    state: list[str | None]
    profile: list[str | None]


@dataclass
class Columns:
    """A batch of records as columns: ``ts`` int64 (n,), ``metrics`` float64 (n, 4) in
    contract order (cpu_pct, mem_pct, disk_io_mb_s, latency_ms), names/states/profiles (n,)."""

    ts: np.ndarray
    metrics: np.ndarray
    server: list[str]
    state: list[str | None]
    profile: list[str | None]

    def __len__(self) -> int:
        return len(self.server)

    def take(self, index: np.ndarray) -> Columns:
        """The rows at ``index`` (int array), in that order."""
        idx = index.tolist()
        return Columns(
            ts=self.ts[index],
            metrics=self.metrics[index],
            server=[self.server[i] for i in idx],
            state=[self.state[i] for i in idx],
            profile=[self.profile[i] for i in idx],
        )


def encode_frame(cols: Columns, encoder: msgspec.msgpack.Encoder | None = None) -> bytes:
    """One framed, CRC-protected log record of ``cols``."""
    frame = LogFrame(
        ts=np.ascontiguousarray(cols.ts, dtype="<i8").tobytes(),
        metrics=np.ascontiguousarray(cols.metrics, dtype="<f8").tobytes(),
        server=list(cols.server),
        state=list(cols.state),
        profile=list(cols.profile),
    )
    payload = (encoder or msgspec.msgpack.Encoder()).encode(frame)
    return _HEADER.pack(FRAME_MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_frames(data: bytes) -> tuple[list[Columns], int, str | None]:
    """Decode the frames of one log file.

    Returns (batches, valid_length, problem): ``valid_length`` is the byte offset after the
    last good frame; ``problem`` describes a torn or corrupt tail (None when clean).
    """
    decoder = msgspec.msgpack.Decoder(LogFrame)
    out: list[Columns] = []
    pos = 0
    size = len(data)
    while pos < size:
        if size - pos < _HEADER.size:
            return out, pos, f"truncated frame header at byte {pos}"
        magic, length, crc = _HEADER.unpack_from(data, pos)
        if magic != FRAME_MAGIC or length > _MAX_FRAME:
            return out, pos, f"bad frame header at byte {pos}"
        start = pos + _HEADER.size
        if start + length > size:
            return out, pos, f"truncated frame at byte {pos} ({size - start} of {length} bytes)"
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            return out, pos, f"CRC mismatch in frame at byte {pos}"
        try:
            frame = decoder.decode(payload)
        except msgspec.DecodeError as exc:
            return out, pos, f"undecodable frame at byte {pos} ({exc})"
        ts = np.frombuffer(frame.ts, dtype="<i8").astype(np.int64)
        metrics = np.frombuffer(frame.metrics, dtype="<f8").reshape(-1, 4).astype(np.float64)
        out.append(Columns(ts, metrics, frame.server, frame.state, frame.profile))
        pos = start + length
    return out, pos, None


@dataclass
class Recovery:
    """What :meth:`StateStore.recover` found on disk."""

    arrays: dict[str, np.ndarray] | None
    """The snapshot's engine state arrays, or None when there is no snapshot."""
    batches: list[Columns]
    """Logged batches not covered by the snapshot, in order (replay them through ingest)."""
    dropped: list[str]
    """Descriptions of torn/corrupt tails that were cut off."""


class StateStore:
    """The state directory: one open log generation plus the latest snapshot.

    Not thread-safe by itself: the runtime calls ``append``/``rotate`` under its ingest lock.
    """

    def __init__(self, state_dir: Path, *, fsync: bool = True) -> None:
        self.state_dir = state_dir
        self.fsync = fsync
        self._fd: int | None = None
        self.generation = 0
        self.log_bytes = 0
        self._encoder = msgspec.msgpack.Encoder()
        self.last_snapshot_time: float | None = None
        self.appends = 0

    # -- files ---------------------------------------------------------------------------
    def _log_path(self, generation: int) -> Path:
        return self.state_dir / f"log-{generation:08d}.wal"

    def _generations(self) -> list[int]:
        gens = []
        for path in self.state_dir.glob("log-*.wal"):
            stem = path.stem.removeprefix("log-")
            if stem.isdigit():
                gens.append(int(stem))
        return sorted(gens)

    def _fsync_dir(self) -> None:
        fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- start-up ------------------------------------------------------------------------
    def recover(self) -> Recovery:
        """Load the snapshot and the log generations after it; cut torn tails off."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.state_dir.glob("*.tmp*"):
            tmp.unlink(missing_ok=True)
        arrays, meta = self._load_snapshot()
        first = int(meta.get("log_generation", 0)) if meta else 0
        if meta:
            self.last_snapshot_time = float(meta.get("created", 0.0))
        batches: list[Columns] = []
        dropped: list[str] = []
        for gen in self._generations():
            path = self._log_path(gen)
            if gen < first:
                path.unlink(missing_ok=True)  # covered by the snapshot (crash before pruning)
                continue
            data = path.read_bytes()
            found, valid, problem = decode_frames(data)
            batches.extend(found)
            if problem is not None:
                note = f"{path.name}: {problem}; {len(data) - valid} bytes dropped"
                _log.warning(
                    "sample log tail dropped (a crash mid-write; nothing in it was acknowledged): %s",
                    note,
                )
                dropped.append(note)
                os.truncate(path, valid)
        self.generation = max([first - 1, *self._generations()]) + 1
        self._open_log()
        return Recovery(arrays, batches, dropped)

    def _load_snapshot(self) -> tuple[dict[str, np.ndarray] | None, dict[str, Any] | None]:
        path = self.state_dir / _SNAPSHOT
        if not path.exists():
            return None, None
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
        meta_raw = arrays.pop(_META_KEY, None)
        meta = msgspec.json.decode(meta_raw.tobytes()) if meta_raw is not None else {}
        return arrays, meta

    def _open_log(self) -> None:
        path = self._log_path(self.generation)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.log_bytes = os.fstat(self._fd).st_size
        if self.fsync:
            self._fsync_dir()

    # -- running -------------------------------------------------------------------------
    def append(self, cols: Columns) -> int:
        """Write one frame and make it durable (fdatasync when ``fsync``); returns its size."""
        if self._fd is None:
            raise RuntimeError("StateStore.append before recover()")
        frame = encode_frame(cols, self._encoder)
        view = memoryview(frame)
        start = self.log_bytes
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError:
            # A part-written frame (disk full) must not stay in the middle of the log: the
            # next acknowledged frames would follow it and recovery would cut them off.
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                _log.exception("cannot cut a part-written frame off the sample log")
            raise
        self.log_bytes += len(frame)
        self.appends += 1
        return len(frame)

    def rotate(self) -> int:
        """Close the current log and start the next generation; returns the new generation.

        Call under the ingest lock together with taking the state arrays, so the snapshot
        covers exactly the generations before the returned one.
        """
        if self._fd is not None:
            os.close(self._fd)
        self.generation += 1
        self._open_log()
        return self.generation

    def write_snapshot(self, arrays: Mapping[str, np.ndarray], log_generation: int) -> None:
        """Atomically replace ``snapshot.npz`` (tmp + fsync + rename), then prune old logs."""
        meta = {"log_generation": log_generation, "created": time.time(), "format": 1}
        payload = dict(arrays)
        payload[_META_KEY] = np.frombuffer(msgspec.json.encode(meta), dtype=np.uint8)
        for name, arr in payload.items():
            if np.asarray(arr).dtype == object:
                raise TypeError(
                    f"state array {name!r} has object dtype; snapshots hold plain arrays"
                )
        final = self.state_dir / _SNAPSHOT
        tmp = self.state_dir / f"{_SNAPSHOT}.tmp{os.getpid()}"
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        self._fsync_dir()
        self.last_snapshot_time = meta["created"]
        for gen in self._generations():
            if gen < log_generation:
                self._log_path(gen).unlink(missing_ok=True)

    def iter_logs(self) -> Iterator[Path]:
        """The log files currently on disk (for backup tooling and tests)."""
        for gen in self._generations():
            yield self._log_path(gen)

    def close(self) -> None:
        """Close the open log (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
