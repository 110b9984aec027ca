"""The sample log's frames: log entries to bytes and back, and finding intact frames.

Split from :mod:`fleetcast.appliance.persistence`, which writes, cuts and replays the log
files (and re-exports these names). A frame is ``magic | u32 length | u32 crc32(payload) |
payload`` (little-endian). The magic names the frame's kind and its version: ``b"FC"``, a
kind letter, a version digit. Two kinds exist:

- ``b"FCW1"``, a batch of samples: the payload is a MessagePack :class:`LogFrame` (numeric
  columns as raw little-endian bytes); :class:`Columns` is the batch it holds, as the
  runtime logs it and the replay ingests it. Every log written before forgets existed
  holds only these, and replays as it did.
- ``b"FCF1"``, forget servers: the payload is a MessagePack :class:`ForgetFrame` (the
  names, in order, and whether ``forget_after`` expired them rather than a ``DELETE``);
  :class:`Forget` is the entry the replay applies at its place in the log.

A frame whose magic starts with ``b"FC"`` and whose length and CRC check out but whose kind
or version this code does not know was written by a newer fleetcast: reading it raises
:class:`UnknownFrameError` (the start is refused) — never skipped, never cut as a torn
tail. A change to a payload's layout takes a new version digit, and a new kind a new letter.
Pure: bytes in, bytes or entries out, no files.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import msgspec
import numpy as np

__all__ = [
    "FORGET_MAGIC",
    "FRAME_MAGIC",
    "Columns",
    "Entry",
    "Forget",
    "ForgetFrame",
    "LogFrame",
    "UnknownFrameError",
    "decode_frames",
    "encode_frame",
    "intact_frames",
    "next_frame",
]

FRAME_MAGIC = b"FCW1"
"""Magic of a frame holding a batch of samples (:class:`LogFrame`)."""
FORGET_MAGIC = b"FCF1"
"""Magic of a frame forgetting servers (:class:`ForgetFrame`)."""
_FAMILY = b"FC"
"""Every frame's magic starts with it: ``FC`` + kind letter + version digit."""
_HEADER = struct.Struct("<4sII")
_MAX_FRAME = 1 << 30


class LogFrame(msgspec.Struct, array_like=True, frozen=True):
    """One logged batch. ``ts``: int64 (n,) bytes; ``metrics``: float64 (n, 4) bytes in
    contract metric order; names, states and profiles as lists."""

    ts: bytes
    metrics: bytes
    server: list[str]
    state: list[str | None]
    profile: list[str | None]


class ForgetFrame(msgspec.Struct, array_like=True, frozen=True):
    """One logged forget: the servers' names, in the order they were forgotten, and
    ``expired``: by ``forget_after`` (else a ``DELETE``), so a replay counts it the same."""

    server: list[str]
    expired: bool = False


@dataclass(frozen=True)
class Forget:
    """Forget these servers, at this point of the log (docs/OPERATIONS.md#forgetting-servers):
    samples before it belong to the servers forgotten, samples after it start new ones.
    ``expired``: by ``forget_after`` (counted apart from a ``DELETE``'s)."""

    server: list[str]
    expired: bool = False


class UnknownFrameError(ValueError):
    """An intact frame (length and CRC check out) of a kind or version this code does not
    read: written by a newer fleetcast. ``offset``: its byte offset; ``magic``: its kind."""

    def __init__(self, offset: int, magic: bytes) -> None:
        self.offset = offset
        self.magic = magic
        super().__init__(
            f"frame of kind {magic.decode('ascii', 'replace')!r} at byte {offset}, which "
            f"this version does not read (it reads {FRAME_MAGIC.decode()} sample batches and "
            f"{FORGET_MAGIC.decode()} forgets)"
        )


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


Entry = Columns | Forget
"""One entry of the log: a batch of samples or a forget, replayed in the log's order."""


def encode_frame(entry: Entry, encoder: msgspec.msgpack.Encoder | None = None) -> bytes:
    """One framed, CRC-protected log record of ``entry`` (``FCW1`` or ``FCF1``)."""
    frame: LogFrame | ForgetFrame
    if isinstance(entry, Forget):
        magic, frame = FORGET_MAGIC, ForgetFrame(server=list(entry.server), expired=entry.expired)
    else:
        magic = FRAME_MAGIC
        frame = LogFrame(
            ts=np.ascontiguousarray(entry.ts, dtype="<i8").tobytes(),
            metrics=np.ascontiguousarray(entry.metrics, dtype="<f8").tobytes(),
            server=list(entry.server),
            state=list(entry.state),
            profile=list(entry.profile),
        )
    payload = (encoder or msgspec.msgpack.Encoder()).encode(frame)
    return _HEADER.pack(magic, len(payload), zlib.crc32(payload)) + payload


class _BadFrame(Exception):
    """The bytes at an offset are not an intact frame (the message says why)."""


class _Decoders:
    """The payload decoders of the frame kinds this code reads."""

    def __init__(self) -> None:
        self.batch = msgspec.msgpack.Decoder(LogFrame)
        self.forget = msgspec.msgpack.Decoder(ForgetFrame)


def _frame_bytes(data: bytes, pos: int) -> tuple[bytes, bytes, int]:
    """(magic, payload, offset after it) of the intact frame at byte ``pos`` of ``data``,
    whatever its kind (length and CRC checked); raises _BadFrame."""
    size = len(data)
    if size - pos < _HEADER.size:
        raise _BadFrame(f"truncated frame header at byte {pos}")
    magic, length, crc = _HEADER.unpack_from(data, pos)
    if magic[:2] != _FAMILY or length > _MAX_FRAME:
        raise _BadFrame(f"bad frame header at byte {pos}")
    start = pos + _HEADER.size
    if start + length > size:
        raise _BadFrame(f"truncated frame at byte {pos} ({size - start} of {length} bytes)")
    payload = data[start : start + length]
    if zlib.crc32(payload) != crc:
        raise _BadFrame(f"CRC mismatch in frame at byte {pos}")
    return magic, payload, start + length


def _read_frame(data: bytes, pos: int, decoders: _Decoders) -> tuple[Entry, int]:
    """The entry at byte ``pos`` of ``data`` and the offset after it; raises _BadFrame, or
    UnknownFrameError for an intact frame of a kind this code does not read."""
    magic, payload, end = _frame_bytes(data, pos)
    try:
        if magic == FORGET_MAGIC:
            forget = decoders.forget.decode(payload)
            return Forget(list(forget.server), forget.expired), end
        if magic != FRAME_MAGIC:
            raise UnknownFrameError(pos, magic)
        frame = decoders.batch.decode(payload)
        ts = np.frombuffer(frame.ts, dtype="<i8").astype(np.int64)
        metrics = np.frombuffer(frame.metrics, dtype="<f8").reshape(-1, 4).astype(np.float64)
        n = len(frame.server)
        if not (ts.shape[0] == metrics.shape[0] == n == len(frame.state) == len(frame.profile)):
            raise ValueError(f"columns of different lengths ({ts.shape[0]}, {n}, ...)")
    except UnknownFrameError:
        raise
    except (msgspec.DecodeError, ValueError) as exc:
        raise _BadFrame(f"undecodable frame at byte {pos} ({exc})") from None
    return Columns(ts, metrics, frame.server, frame.state, frame.profile), end


def decode_frames(data: bytes) -> tuple[list[Entry], int, str | None]:
    """Decode the frames of one log file up to the first bad one.

    Returns (entries, valid_length, problem): ``valid_length`` is the byte offset after the
    last good frame; ``problem`` describes the first bad frame (None when clean). Whether
    that is a torn tail or damage followed by intact frames: :func:`next_frame`. Raises
    :class:`UnknownFrameError` at an intact frame of a kind this code does not read.
    """
    decoders = _Decoders()
    out: list[Entry] = []
    pos = 0
    while pos < len(data):
        try:
            entry, pos_next = _read_frame(data, pos, decoders)
        except _BadFrame as exc:
            return out, pos, str(exc)
        out.append(entry)
        pos = pos_next
    return out, pos, None


def _intact_end(data: bytes, pos: int, decoders: _Decoders) -> int:
    """Offset after the intact frame at ``pos`` (one of an unknown kind too); raises _BadFrame."""
    try:
        return _read_frame(data, pos, decoders)[1]
    except UnknownFrameError:
        return _frame_bytes(data, pos)[2]


def next_frame(data: bytes, start: int) -> int | None:
    """Byte offset of the first intact frame at or after ``start`` (magic, length, CRC and
    payload all check out; a frame of a kind this code does not read counts), or None. A
    false match needs a 32-bit CRC to agree by chance."""
    decoders = _Decoders()
    pos = data.find(_FAMILY, start)
    while pos >= 0:
        try:
            _intact_end(data, pos, decoders)
        except _BadFrame:
            pos = data.find(_FAMILY, pos + 1)
        else:
            return pos
    return None


def intact_frames(data: bytes, start: int) -> tuple[int, int | None]:
    """(intact frames at or after byte ``start``, offset of the first of them or None)."""
    decoders = _Decoders()
    first = pos = next_frame(data, start)
    count = 0
    while pos is not None:
        count += 1
        pos = next_frame(data, _intact_end(data, pos, decoders))
    return count, first
