"""The sample log and snapshots: framing, torn tails, atomic snapshots, recovery order."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from fleetcast.appliance.persistence import StateStore, decode_frames, encode_frame

if TYPE_CHECKING:
    from pathlib import Path

    from fleetcast.appliance.persistence import Columns


def _same(a: Columns, b: Columns) -> bool:
    return (
        np.array_equal(a.ts, b.ts)
        and np.array_equal(a.metrics, b.metrics)
        and a.server == b.server
        and a.state == b.state
        and a.profile == b.profile
    )


def test_frames_round_trip(svc: Any) -> None:
    data = encode_frame(svc.make_columns(3)) + encode_frame(svc.make_columns(2, start=10))
    batches, valid, problem = decode_frames(data)
    assert problem is None
    assert valid == len(data)
    assert _same(batches[0], svc.make_columns(3))
    assert _same(batches[1], svc.make_columns(2, start=10))


@pytest.mark.parametrize("cut", [1, 7, 12, 30])
def test_torn_tail_is_detected(cut: int, svc: Any) -> None:
    whole = encode_frame(svc.make_columns(3))
    data = whole + encode_frame(svc.make_columns(4))[:cut]
    batches, valid, problem = decode_frames(data)
    assert len(batches) == 1
    assert valid == len(whole)
    assert problem is not None
    assert "truncated" in problem


def test_crc_mismatch_is_detected(svc: Any) -> None:
    first = encode_frame(svc.make_columns(2))
    second = bytearray(encode_frame(svc.make_columns(2)))
    second[-3] ^= 0xFF
    batches, valid, problem = decode_frames(first + bytes(second))
    assert len(batches) == 1
    assert valid == len(first)
    assert problem is not None
    assert "CRC" in problem


def test_recover_replays_log_and_cuts_torn_tail(tmp_path: Path, svc: Any) -> None:
    store = StateStore(tmp_path, fsync=True)
    assert store.recover().batches == []
    store.append(svc.make_columns(3))
    store.append(svc.make_columns(2, start=5))
    log = next(store.iter_logs())
    store.close()
    size = log.stat().st_size
    with open(log, "ab") as fh:
        fh.write(encode_frame(svc.make_columns(9))[:20])  # a crash mid-write

    again = StateStore(tmp_path)
    found = again.recover()
    assert len(found.batches) == 2
    assert _same(found.batches[1], svc.make_columns(2, start=5))
    assert len(found.dropped) == 1
    assert log.stat().st_size == size
    again.close()


def test_a_dropped_tail_is_worded_by_what_it_can_be(
    tmp_path: Path, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Cut short: a crash mid-write, never acknowledged. Whole but failing its checksum: a
    power cut also leaves that, but so does a damaged disk; the warning says both."""
    store = StateStore(tmp_path)
    store.recover()
    store.append(svc.make_columns(3))
    store.append(svc.make_columns(2, start=5))
    log = next(store.iter_logs())
    store.close()
    data = bytearray(log.read_bytes())
    data[-1] ^= 0xFF  # the last frame is whole, its last byte flipped
    log.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="fleetcast.appliance.persistence"):
        found = StateStore(tmp_path).recover()
    assert len(found.batches) == 1
    (line,) = [r.getMessage() for r in caplog.records if "tail dropped" in r.getMessage()]
    assert "whole, but its bytes are wrong" in line
    assert "may be damage (docs/OPERATIONS.md#state)" in line
    assert "CRC mismatch in frame at byte" in line


def test_snapshot_truncates_log_and_recovery_uses_both(tmp_path: Path, svc: Any) -> None:
    store = StateStore(tmp_path)
    store.recover()
    store.append(svc.make_columns(3))
    gen = store.rotate()
    store.append(svc.make_columns(1, start=50))
    store.write_snapshot({"a": np.arange(4), "names": np.array(["x", "yy"])}, gen)
    assert len(list(store.iter_logs())) == 1  # the covered generation is gone
    store.close()

    found = StateStore(tmp_path).recover()
    assert found.arrays is not None
    assert np.array_equal(found.arrays["a"], np.arange(4))
    assert found.arrays["names"].tolist() == ["x", "yy"]
    assert len(found.batches) == 1
    assert _same(found.batches[0], svc.make_columns(1, start=50))


def test_snapshot_refuses_object_arrays(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.recover()
    with pytest.raises(TypeError, match="object dtype"):
        store.write_snapshot({"bad": np.array(["a", None], dtype=object)}, 1)
    assert not (tmp_path / "snapshot.npz").exists()


def test_logs_older_than_snapshot_are_ignored(tmp_path: Path, svc: Any) -> None:
    store = StateStore(tmp_path)
    store.recover()
    store.append(svc.make_columns(2))
    gen = store.rotate()
    store.write_snapshot({"a": np.zeros(1)}, gen)
    store.close()
    # A crash between the snapshot rename and the pruning leaves an old generation behind.
    (tmp_path / "log-00000000.wal").write_bytes(encode_frame(svc.make_columns(5)))
    found = StateStore(tmp_path).recover()
    assert found.batches == []
    assert not (tmp_path / "log-00000000.wal").exists()


def test_failed_append_leaves_no_torn_frame_before_later_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, svc: Any
) -> None:
    """A write that fails half-way (disk full) is cut off, so frames acknowledged after it
    survive recovery instead of being dropped behind a torn frame."""
    import errno
    import os

    from fleetcast.appliance import persistence

    store = StateStore(tmp_path)
    store.recover()
    store.append(svc.make_columns(2))
    real_write = os.write
    calls = []

    def half_then_full(fd: int, data: memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(persistence.os, "write", half_then_full)
    with pytest.raises(OSError):
        store.append(svc.make_columns(3, start=5))
    monkeypatch.setattr(persistence.os, "write", real_write)
    store.append(svc.make_columns(4, start=20))
    store.close()

    again = StateStore(tmp_path)
    recovery = again.recover()
    again.close()
    assert recovery.dropped == []
    assert len(recovery.batches) == 2
    assert _same(recovery.batches[0], svc.make_columns(2))
    assert _same(recovery.batches[1], svc.make_columns(4, start=20))


def test_a_refused_write_is_one_line_naming_its_cause_and_a_bug_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import errno

    from fleetcast.appliance.errors import log_failure

    log = logging.getLogger("fleetcast.appliance.runtime")
    with caplog.at_level(logging.ERROR, logger=log.name):
        log_failure(log, "snapshot failed", OSError(errno.ENOSPC, "No space left on device"))
        log_failure(log, "snapshot failed", OSError(errno.EROFS, "Read-only file system"))
        log_failure(log, "snapshot failed", ValueError("a bug"))
    full, readonly, bug = caplog.records
    assert full.getMessage() == (
        "snapshot failed: the disk holding the state directory is full "
        "(ENOSPC: No space left on device)"
    )
    assert full.exc_info is None
    assert "mounted read-only (EROFS: Read-only file system)" in readonly.getMessage()
    assert bug.exc_info is not None
    assert bug.exc_info[1].args == ("a bug",)


def test_a_missing_log_between_the_snapshot_and_later_logs_refuses_the_start(
    tmp_path: Path, svc: Any
) -> None:
    from fleetcast.appliance.persistence import StateError

    store = StateStore(tmp_path)
    store.recover()
    gen = store.rotate()
    store.write_snapshot({"a": np.zeros(1)}, gen)  # continues from log `gen`
    store.append(svc.make_columns(3))  # acknowledged, in log `gen`
    store.rotate()
    store.append(svc.make_columns(1, start=50))  # in log `gen + 1`
    store.close()
    # A backup that copied the snapshot first, then the logs after another snapshot ran,
    # has the same shape: log `gen` is gone, a later one is there.
    hole = tmp_path / f"log-{gen:08d}.wal"
    hole.unlink()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StateError) as refused:
        StateStore(tmp_path).recover()
    message = str(refused.value)
    assert f"lacks the sample log {hole.name}" in message
    assert "copied the logs first" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing changed
    # Creating it empty is the documented way to accept the loss: the later log replays.
    hole.touch()
    found = StateStore(tmp_path).recover()
    assert len(found.batches) == 1
    assert _same(found.batches[0], svc.make_columns(1, start=50))
