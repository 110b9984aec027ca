"""The sample log's frames: a batch of records to bytes and back, and finding intact frames.

Split from :mod:`fleetcast.appliance.persistence`, which writes, cuts and replays the log
files (and re-exports these names). A frame is ``b"FCW1" | u32 length | u32
crc32(payload) | payload`` where the payload is a MessagePack :class:`LogFrame` (numeric
columns as raw little-endian bytes); :class:`Columns` is the batch it holds, as the runtime
logs it and the replay ingests it. Pure: bytes in, bytes or columns out, no files.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import msgspec
import numpy as np

__all__ = [
    "FRAME_MAGIC",
    "Columns",
    "LogFrame",
    "decode_frames",
    "encode_frame",
    "intact_frames",
    "next_frame",
]

FRAME_MAGIC = b"FCW1"
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


class _BadFrame(Exception):
    """The bytes at an offset are not an intact frame (the message says why)."""


def _read_frame(
    data: bytes, pos: int, decoder: msgspec.msgpack.Decoder[LogFrame]
) -> tuple[Columns, int]:
    """The frame at byte ``pos`` of ``data`` and the offset after it; raises _BadFrame."""
    size = len(data)
    if size - pos < _HEADER.size:
        raise _BadFrame(f"truncated frame header at byte {pos}")
    magic, length, crc = _HEADER.unpack_from(data, pos)
    if magic != FRAME_MAGIC or length > _MAX_FRAME:
        raise _BadFrame(f"bad frame header at byte {pos}")
    start = pos + _HEADER.size
    if start + length > size:
        raise _BadFrame(f"truncated frame at byte {pos} ({size - start} of {length} bytes)")
    payload = data[start : start + length]
    if zlib.crc32(payload) != crc:
        raise _BadFrame(f"CRC mismatch in frame at byte {pos}")
    try:
        frame = decoder.decode(payload)
        ts = np.frombuffer(frame.ts, dtype="<i8").astype(np.int64)
        metrics = np.frombuffer(frame.metrics, dtype="<f8").reshape(-1, 4).astype(np.float64)
        n = len(frame.server)
        if not (ts.shape[0] == metrics.shape[0] == n == len(frame.state) == len(frame.profile)):
            raise ValueError(f"columns of different lengths ({ts.shape[0]}, {n}, ...)")
    except (msgspec.DecodeError, ValueError) as exc:
        raise _BadFrame(f"undecodable frame at byte {pos} ({exc})") from None
    return Columns(ts, metrics, frame.server, frame.state, frame.profile), start + length


def decode_frames(data: bytes) -> tuple[list[Columns], int, str | None]:
    """Decode the frames of one log file up to the first bad one.

    Returns (batches, valid_length, problem): ``valid_length`` is the byte offset after the
    last good frame; ``problem`` describes the first bad frame (None when clean). Whether
    that is a torn tail or damage followed by intact frames: :func:`next_frame`.
    """
    decoder = msgspec.msgpack.Decoder(LogFrame)
    out: list[Columns] = []
    pos = 0
    while pos < len(data):
        try:
            cols, pos_next = _read_frame(data, pos, decoder)
        except _BadFrame as exc:
            return out, pos, str(exc)
        out.append(cols)
        pos = pos_next
    return out, pos, None


def next_frame(data: bytes, start: int) -> int | None:
    """Byte offset of the first intact frame at or after ``start`` (magic, length, CRC and
    payload all check out), or None. A false match needs a 32-bit CRC to agree by chance."""
    decoder = msgspec.msgpack.Decoder(LogFrame)
    pos = data.find(FRAME_MAGIC, start)
    while pos >= 0:
        try:
            _read_frame(data, pos, decoder)
        except _BadFrame:
            pos = data.find(FRAME_MAGIC, pos + 1)
        else:
            return pos
    return None


def intact_frames(data: bytes, start: int) -> tuple[int, int | None]:
    """(intact frames at or after byte ``start``, offset of the first of them or None)."""
    decoder = msgspec.msgpack.Decoder(LogFrame)
    first = pos = next_frame(data, start)
    count = 0
    while pos is not None:
        count += 1
        _, end = _read_frame(data, pos, decoder)
        pos = next_frame(data, end)
    return count, first
