"""A damaged state directory is never silently cut.

A damaged snapshot, or a damaged log frame with acknowledged frames after it (in its file
or a later generation), refuses the start with a clear message and leaves the files as they
are; only a torn last frame is cut, with a warning, and a frame that could not be cut stops
the log. The rest of the state's safety: test_state_safety.py. docs/OPERATIONS.md#state.
"""

from __future__ import annotations

import errno
import fcntl
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from fleetcast.appliance import persistence
from fleetcast.appliance.persistence import StateError, encode_frame

if TYPE_CHECKING:
    from pathlib import Path


# -- a damaged snapshot ------------------------------------------------------------------


def _write_snapshot(stores: Any, svc: Any) -> Path:
    store = stores()
    store.recover()
    store.append(svc.make_columns(4))
    gen = store.rotate()
    store.append(svc.make_columns(2, start=10))
    arrays = {"values": np.arange(4000, dtype=np.float32), "names": np.array(["a", "b"])}
    store.write_snapshot(arrays, gen)
    store.close()
    return store.state_dir / "snapshot.npz"


@pytest.mark.parametrize("damage", ["flip-middle", "flip-late", "truncate", "empty"])
def test_a_damaged_snapshot_refuses_the_start_and_is_kept(
    stores: Any, damage: str, svc: Any
) -> None:
    path = _write_snapshot(stores, svc)
    data = bytearray(path.read_bytes())
    if damage == "flip-middle":
        data[len(data) // 2] ^= 0x01
    elif damage == "flip-late":
        data[len(data) - 200] ^= 0x40
    elif damage == "truncate":
        data = data[: len(data) - 30]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    files = {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name != "lock"}

    with pytest.raises(StateError) as info:
        stores().recover()
    message = str(info.value)
    assert message.startswith("snapshot.npz in the state directory is damaged: ")
    assert "docs/OPERATIONS.md#back-up-and-restore" in message
    assert "move the state directory aside" in message
    svc.four_parts(message)
    assert {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name != "lock"} == files
    with open(path.parent / "lock", "rb+") as fh:  # the refused store let go of the directory
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.slow
def test_a_damaged_snapshot_is_one_clear_message_at_the_cli(
    model_dir: Path, stores: Any, svc: Any
) -> None:
    path = _write_snapshot(stores, svc)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = svc.run_serve(model_dir, path.parent)
    assert result.returncode == 1
    assert "snapshot.npz in the state directory is damaged" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_bytes() == bytes(data)


# -- a damaged sample log ----------------------------------------------------------------


def _log_with_frames(stores: Any, svc: Any, sizes: list[int]) -> tuple[Path, list[int]]:
    """A closed log holding one frame per size; returns it and the frames' byte offsets."""
    store = stores()
    store.recover()
    offsets = []
    for k, n in enumerate(sizes):
        offsets.append(store.log_bytes)
        store.append(svc.make_columns(n, start=10 * k))
    store.close()
    return next(store.iter_logs()), offsets


@pytest.mark.parametrize("where", ["magic", "length", "crc", "payload"])
def test_a_damaged_frame_before_intact_ones_refuses_the_start(
    stores: Any, where: str, svc: Any
) -> None:
    path, offsets = _log_with_frames(stores, svc, [3, 4, 5, 6])
    data = bytearray(path.read_bytes())
    at = offsets[1] + {"magic": 1, "length": 6, "crc": 9, "payload": 30}[where]
    data[at] ^= 0x20
    path.write_bytes(bytes(data))

    with pytest.raises(StateError) as info:
        stores().recover()
    message = str(info.value)
    assert f"{path.name}" in message
    assert f"at byte {offsets[1]}" in message
    assert "2 intact frames" in message
    assert f"{len(data) - offsets[2]} bytes" in message
    assert "back-up-and-restore" in message
    assert "move" in message
    svc.four_parts(message)
    assert path.read_bytes() == bytes(data)  # left untouched


def _two_generations(stores: Any, svc: Any) -> Path:
    """A closed log generation holding frames of 3 and 2 rows, and a newer one holding a
    frame of 4; returns the older one."""
    store = stores()
    store.recover()
    store.append(svc.make_columns(3))
    store.append(svc.make_columns(2, start=10))
    older = next(store.iter_logs())
    store.rotate()
    store.append(svc.make_columns(4, start=20))
    store.close()
    return older


def test_a_damaged_last_frame_before_a_newer_log_generation_refuses_the_start(
    stores: Any, svc: Any
) -> None:
    older = _two_generations(stores, svc)
    data = bytearray(older.read_bytes())
    data[-5] ^= 0x10  # the last frame of the older generation
    older.write_bytes(bytes(data))

    with pytest.raises(StateError) as info:
        stores().recover()
    message = str(info.value)
    assert older.name in message
    assert "1 intact frame" in message
    assert older.read_bytes() == bytes(data)


def test_a_torn_tail_is_still_cut_with_a_warning(
    stores: Any, caplog: pytest.LogCaptureFixture, svc: Any
) -> None:
    path, offsets = _log_with_frames(stores, svc, [3, 4])
    whole = path.read_bytes()
    damaged = bytearray(whole)
    damaged[-2] ^= 0x01  # a complete last frame that fails its CRC: never fdatasync'ed
    path.write_bytes(bytes(damaged) + encode_frame(svc.make_columns(9))[:17])
    with caplog.at_level(logging.WARNING, logger="fleetcast.appliance.persistence"):
        recovery = stores().recover()
    assert [len(b) for b in recovery.batches] == [3]
    assert len(recovery.dropped) == 1
    assert path.read_bytes() == whole[: offsets[1]]
    assert "most likely a crash mid-write, never acknowledged" in caplog.text


def test_moving_the_damaged_log_aside_starts_with_the_rest(
    stores: Any, tmp_path: Path, svc: Any
) -> None:
    older = _two_generations(stores, svc)
    data = bytearray(older.read_bytes())
    data[20] ^= 0x10
    older.write_bytes(bytes(data))
    with pytest.raises(StateError):
        stores().recover()
    older.rename(tmp_path / older.name)  # what the message tells the operator to do
    recovery = stores().recover()
    assert [len(b) for b in recovery.batches] == [4]


# -- a log that cannot be cut ------------------------------------------------------------


def test_a_part_written_frame_that_cannot_be_cut_stops_the_log(
    stores: Any, monkeypatch: pytest.MonkeyPatch, svc: Any
) -> None:
    """Disk full mid-frame and the cut fails too: later appends are refused (the service
    answers 503), so the torn frame stays the tail and the next start cuts it and keeps
    everything acknowledged before. (Both failures are injected at the os boundary.)"""
    store = stores()
    store.recover()
    store.append(svc.make_columns(3))
    real_write = persistence.os.write

    def half_then_full(fd: int, data: Any) -> int:
        if fd == store._fd:
            real_write(fd, bytes(data)[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def cannot_cut(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(persistence.os, "write", half_then_full)
    monkeypatch.setattr(persistence.os, "ftruncate", cannot_cut)
    with pytest.raises(OSError, match="No space"):
        store.append(svc.make_columns(2, start=10))
    monkeypatch.undo()  # the disk recovered, but the torn frame is still in the log
    with pytest.raises(OSError, match="stuck"):
        store.append(svc.make_columns(2, start=20))
    store.close()
    again = stores()
    recovery = again.recover()
    assert [len(b) for b in recovery.batches] == [3]
    assert recovery.dropped  # the torn tail, cut with a warning


def test_a_write_that_wrote_nothing_does_not_stop_the_log(
    stores: Any, monkeypatch: pytest.MonkeyPatch, svc: Any
) -> None:
    """A write refused before its first byte (a read-only remount, EIO) leaves nothing to
    cut: a failed cut then must not stop the log until a restart once the disk is back."""
    store = stores()
    store.recover()
    store.append(svc.make_columns(3))

    def refused(fd: int, data: Any) -> int:
        raise OSError(errno.EROFS, "Read-only file system")

    def cannot_cut(fd: int, length: int) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(persistence.os, "write", refused)
    monkeypatch.setattr(persistence.os, "ftruncate", cannot_cut)
    with pytest.raises(OSError, match="Read-only"):
        store.append(svc.make_columns(2, start=10))
    monkeypatch.undo()  # remounted read-write
    store.append(svc.make_columns(2, start=20))
    store.close()
    again = stores()
    recovery = again.recover()
    assert [len(b) for b in recovery.batches] == [3, 2]
    assert not recovery.dropped
