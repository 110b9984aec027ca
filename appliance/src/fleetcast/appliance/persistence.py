"""Durable state: an append-only log of accepted samples plus periodic engine snapshots.

Layout of ``--state-dir``::

    lock                held (flock) by the one appliance using the directory; its pid
    snapshot.npz        engine.state_arrays() + a JSON header (log generation, times)
    log-00000042.wal    accepted samples since that snapshot, one frame per request,
                        and forgotten servers, one frame per forget

A frame is ``magic | u32 length | u32 crc32(payload) | payload``: ``b"FCW1"`` and a
MessagePack :class:`LogFrame` (a batch of samples, numeric columns as raw little-endian
bytes), or ``b"FCF1"`` and a :class:`ForgetFrame` (servers forgotten at that point); the
framing lives in :mod:`~fleetcast.appliance.log_frames` (its names re-exported here). An
intact frame of a kind this version does not read (a newer fleetcast's) refuses the start,
like damage. Each POST is
written with one ``os.write`` and, with ``fsync=True``, one ``fdatasync`` before the
response: an acknowledged sample is on disk (``kill -9`` and power loss lose nothing
acknowledged). A snapshot rotates to a new log generation under the ingest lock, writes
``snapshot.npz`` via tmp + fsync + rename, then deletes older generations. On start the
snapshot is loaded and every log generation it does not cover is replayed in order; a
torn last frame (a crash mid-write) fails its length or CRC check, is dropped with a
warning and cut off the file. A damaged frame with intact frames after it (in its file or
a later generation) is damage to acknowledged samples, not a torn write: the start is
refused (:class:`StateError`) and the file left as it is, as for a damaged snapshot.
Opening the store takes an exclusive ``flock`` on ``lock``: a second appliance on the same
directory is refused instead of overwriting the first one's snapshots and logs.
Why this design and what it costs: docs/OPERATIONS.md#state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from fleetcast.appliance.errors import write_error_cause
from fleetcast.appliance.log_frames import (
    FORGET_MAGIC,
    FRAME_MAGIC,
    Columns,
    Entry,
    Forget,
    ForgetFrame,
    LogFrame,
    UnknownFrameError,
    decode_frames,
    encode_frame,
    intact_frames,
    next_frame,
)
from fleetcast.appliance.state_errors import BACKUP_DOC as _BACKUP_DOC
from fleetcast.appliance.state_errors import STATE_DOC as _STATE_DOC
from fleetcast.appliance.state_errors import (
    LogScan,
    StateError,
    damaged_log_error,
    log_name,
    missing_logs_error,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

__all__ = [
    "FORGET_MAGIC",
    "FRAME_MAGIC",
    "Columns",
    "Entry",
    "Forget",
    "ForgetFrame",
    "LogFrame",
    "Recovery",
    "StateError",
    "StateStore",
    "UnknownFrameError",
    "decode_frames",
    "encode_frame",
    "intact_frames",
    "next_frame",
]

_log = logging.getLogger(__name__)

_SNAPSHOT = "snapshot.npz"
_LOCK = "lock"
_META_KEY = "__fleetcast_meta__"


@dataclass
class Recovery:
    """What :meth:`StateStore.recover` found on disk."""

    arrays: dict[str, np.ndarray] | None
    """The snapshot's engine state arrays, or None when there is no snapshot."""
    batches: list[Entry]
    """Logged entries not covered by the snapshot, in order: sample batches (replay them
    through ingest) and forgets (replay them through ``Engine.forget``)."""
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
        self._lock_fd: int | None = None
        self.generation = 0
        self.log_bytes = 0
        self._encoder = msgspec.msgpack.Encoder()
        self.last_snapshot_time: float | None = None
        self.appends = 0
        self.write_errors = 0
        """Appends that failed (nothing of them acknowledged), since the start."""
        self.last_write_error: tuple[float, str] | None = None
        self.writable = True
        """False from a failed append until the next one succeeds."""
        self._stuck: str | None = None
        """Why appends are refused: a part-written frame that could not be cut off stays the
        log's tail, which the next start cuts as a torn tail; a frame written after it
        would turn it into damage that refuses the start."""

    # -- files ---------------------------------------------------------------------------
    def _log_path(self, generation: int) -> Path:
        return self.state_dir / log_name(generation)

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
        """Lock the directory, load the snapshot and the log generations after it; cut torn
        tails off. Raises :class:`StateError` (and holds nothing) when the directory is in
        use by another appliance or its snapshot or logs are damaged; damaged files are
        never changed."""
        # Private when we create it (sample logs name the fleet's servers); an existing
        # directory keeps the mode its owner gave it. Its files are 0600 either way.
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock()
        try:
            return self._recover()
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        """Take the exclusive lock on ``lock`` (non-blocking) and write our pid into it."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.state_dir / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = (
                f"pid {holder}"
                if holder.isdigit()
                else "a process that has not written its pid yet"
            )
            raise StateError(
                f"The state directory {self.state_dir} is in use by another fleetcast "
                f"appliance ({who}).",
                "two appliances on one state directory overwrite each other's snapshots and "
                "delete each other's sample logs, so acknowledged samples would be lost.",
                f"stop the other appliance ({who}) first, or give this one its own --state-dir.",
                _STATE_DOC,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _recover(self) -> Recovery:
        for tmp in self.state_dir.glob("*.tmp*"):
            tmp.unlink(missing_ok=True)
        arrays, meta = self._load_snapshot()
        first = int(meta.get("log_generation", 0)) if meta else 0
        if meta:
            self.last_snapshot_time = float(meta.get("created", 0.0))
        present = self._generations()
        covered = [g for g in present if g < first]
        kept = [g for g in present if g >= first]
        # Generations are opened one after another and deleted only below a snapshot's, so
        # a hole in them is a missing file: samples acknowledged in it (not in the snapshot).
        start = first if meta else min(kept, default=0)
        missing = sorted(set(range(start, max(kept, default=start - 1) + 1)) - set(kept))
        if missing:
            raise missing_logs_error(self.state_dir, missing, kept)
        scans = [self._scan_log(self._log_path(g)) for g in kept]
        # Every check before any file changes: a refused start leaves the directory as it is.
        for i, scan in enumerate(scans):
            if scan.problem is None:
                continue
            later = sum(len(s.batches) + s.intact_after for s in scans[i + 1 :])
            if scan.intact_after or later:
                raise damaged_log_error(scan, later)
        for gen in covered:
            self._log_path(gen).unlink(missing_ok=True)  # crash before pruning
        batches: list[Entry] = []
        dropped: list[str] = []
        for scan in scans:
            batches.extend(scan.batches)
            if scan.problem is not None:
                note = f"{scan.path.name}: {scan.problem}; {scan.size - scan.valid} bytes dropped"
                why = (
                    "a crash mid-write; nothing in it was acknowledged"
                    if scan.problem.startswith("truncated")
                    else "whole, but its bytes are wrong: most likely a crash mid-write, never "
                    "acknowledged; if the disk reports errors, it may be damage (docs/OPERATIONS.md#state)"
                )
                _log.warning("sample log tail dropped (%s): %s", why, note)
                dropped.append(note)
                os.truncate(scan.path, scan.valid)
        self.generation = max([first - 1, *self._generations()]) + 1
        self._open_log()
        return Recovery(arrays, batches, dropped)

    @staticmethod
    def _scan_log(path: Path) -> LogScan:
        data = path.read_bytes()
        try:
            batches, valid, problem = decode_frames(data)
        except UnknownFrameError as exc:
            raise StateError(
                f"The sample log {path.name} in the state directory holds a {exc}; the file "
                "was left as it is.",
                "it was written by a newer fleetcast; replaying the log without it would "
                "silently lose what it records (a forgotten server could come back, or "
                "acknowledged samples be lost).",
                "start the fleetcast version that wrote it (upgrade this appliance), or "
                f"restore the state directory from a backup this version wrote ({_BACKUP_DOC}).",
                _STATE_DOC,
            ) from None
        scan = LogScan(path, len(data), batches, valid, problem)
        if problem is not None:
            scan.intact_after, scan.next_intact = intact_frames(data, valid + 1)
        return scan

    def _load_snapshot(self) -> tuple[dict[str, np.ndarray] | None, dict[str, Any] | None]:
        path = self.state_dir / _SNAPSHOT
        if not path.exists():
            return None, None
        with open(path, "rb") as fh:
            try:
                if fh.read(4) != b"PK\x03\x04":
                    raise ValueError("it is not an .npz archive (no zip header)")
                fh.seek(0)
                with np.load(fh, allow_pickle=False) as npz:
                    arrays = {k: np.array(npz[k]) for k in npz.files}
                meta_raw = arrays.pop(_META_KEY, None)
                meta = msgspec.json.decode(meta_raw.tobytes()) if meta_raw is not None else {}
                if not isinstance(meta, dict):
                    raise ValueError(f"its header is {type(meta).__name__}, not an object")
                int(meta.get("log_generation", 0))
                float(meta.get("created", 0.0))
                version = meta.get("format", 1)
            except MemoryError:
                raise
            except Exception as exc:  # zipfile, numpy and msgspec raise many types
                detail = str(exc)[:200].rstrip(". ") or "no detail"
                raise StateError(
                    f"{_SNAPSHOT} in the state directory is damaged: "
                    f"{type(exc).__name__}: {detail}; the file was left as it is.",
                    "it holds the history the sample logs build on; starting without it "
                    "would silently drop that history.",
                    f"restore it from the backup ({_BACKUP_DOC}) or move the state "
                    "directory aside to start empty.",
                    _STATE_DOC,
                ) from None
        if version != 1:
            raise StateError(
                f"{_SNAPSHOT} in the state directory is of format {version!r}; this fleetcast "
                "reads format 1; the file was left as it is.",
                "it was written by a newer fleetcast, whose arrays this version could "
                "misread or silently leave out.",
                "start the fleetcast version that wrote it (upgrade this appliance), or "
                f"restore the state directory from a backup this version wrote ({_BACKUP_DOC}).",
                _STATE_DOC,
            )
        return arrays, meta

    def _open_log(self) -> None:
        self._fd = self._create_log(self.generation)
        self.log_bytes = os.fstat(self._fd).st_size

    def _create_log(self, generation: int) -> int:
        fd = os.open(
            self._log_path(generation),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        try:
            if self.fsync:
                self._fsync_dir()
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- running -------------------------------------------------------------------------
    def append(self, cols: Entry) -> int:
        """Write one frame (a sample batch, or a :class:`Forget`) and make it durable
        (fdatasync when ``fsync``); returns its size."""
        if self._fd is None:
            raise RuntimeError("StateStore.append before recover()")
        if self._stuck is not None:
            stuck = OSError(errno.EIO, f"the sample log is stuck: {self._stuck}; restart")
            self._write_failed(stuck)
            raise stuck
        frame = encode_frame(cols, self._encoder)
        view = memoryview(frame)
        start = self.log_bytes
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._write_failed(exc)
            # A part-written frame (disk full) must not stay in the middle of the log: the
            # next acknowledged frames would follow it and recovery would cut them off. A
            # write that wrote nothing (a read-only remount, EIO) leaves nothing to cut.
            try:
                if os.fstat(self._fd).st_size > start:
                    os.ftruncate(self._fd, start)
            except OSError as cut:
                self._stuck = f"a part-written frame could not be cut off ({cut})"
                _log.exception(
                    "cannot cut a part-written frame off the sample log: refusing further "
                    "samples (503) until a restart, which drops that frame as a torn tail"
                )
            raise
        self.log_bytes += len(frame)
        self.appends += 1
        self.writable = True
        return len(frame)

    def _write_failed(self, exc: OSError) -> None:
        self.write_errors += 1
        self.last_write_error = (time.time(), write_error_cause(exc))
        self.writable = False

    def write_status(self) -> dict[str, Any]:
        """The log's writes for /status: failed appends since the start, the last failure."""
        from fleetcast.appliance.forecast import iso

        last = self.last_write_error
        return {
            "writable": self.writable,
            "write_errors": self.write_errors,
            "last_write_error": None if last is None else {"time": iso(last[0]), "cause": last[1]},
        }

    def rotate(self) -> int:
        """Start the next log generation and close the current one; returns the new generation.

        Call under the ingest lock together with taking the state arrays, so the snapshot
        covers exactly the generations before the returned one. When the new log cannot be
        created (disk full) it raises and the current log stays in use.
        """
        fd = self._create_log(self.generation + 1)
        old, self._fd = self._fd, fd
        self.generation += 1
        self.log_bytes = 0
        if old is not None:
            os.close(old)
        return self.generation

    def retract(self, size: int) -> None:
        """Cut the last appended frame (``size`` bytes, as :meth:`append` returned) off the
        log: the runtime calls it when applying that batch failed, so the log never holds a
        batch that was not applied."""
        if self._fd is None:
            raise RuntimeError("StateStore.retract before recover()")
        start = self.log_bytes - size
        os.ftruncate(self._fd, start)
        if self.fsync:
            os.fdatasync(self._fd)
        self.log_bytes = start
        self.appends -= 1

    def write_snapshot(self, arrays: Mapping[str, np.ndarray], log_generation: int) -> None:
        """Atomically replace ``snapshot.npz`` (tmp + fsync + rename), then prune old logs.

        The file is 0600 (owner only), like the logs and the lock."""
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
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fd, 0o600)  # a leftover temp file keeps its mode through O_CREAT
                np.savez(fh, **payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk must not keep a half snapshot
            raise
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
        """Close the open log and release the directory's lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)  # no pid: nobody holds it
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None
