"""Forgets in the state directory (docs/OPERATIONS.md#state): the ``FCF1`` frame, its place
in the replay (before and after the server's samples), snapshots with free slots, a frame
of an unknown kind, and ``forget_after`` logged like a DELETE."""

from __future__ import annotations

import logging
import struct
import zlib
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pytest

from fleetcast.appliance.notify import Notifier
from fleetcast.appliance.persistence import (
    Forget,
    StateError,
    StateStore,
    UnknownFrameError,
    decode_frames,
    encode_frame,
    intact_frames,
)
from fleetcast.appliance.runtime import Runtime, StartupError
from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    from pathlib import Path

TARGET = "ppml0001"


def _frame(magic: bytes, payload: bytes) -> bytes:
    return struct.pack("<4sII", magic, len(payload), zlib.crc32(payload)) + payload


def _unknown() -> bytes:
    """An intact frame of a kind a newer fleetcast might write."""
    return _frame(b"FCZ9", msgspec.msgpack.encode(["something", "new"]))


# -- the frames ---------------------------------------------------------------------------


def test_forget_frames_replay_in_order_between_batches(svc: Any) -> None:
    data = (
        encode_frame(svc.make_columns(2))
        + encode_frame(Forget(["ppml0000", "a/b"]))
        + encode_frame(svc.make_columns(1, start=5))
    )
    assert data.count(b"FCF1") == 1
    entries, valid, problem = decode_frames(data)
    assert (valid, problem) == (len(data), None)
    assert [type(e).__name__ for e in entries] == ["Columns", "Forget", "Columns"]
    assert entries[1] == Forget(["ppml0000", "a/b"])
    assert entries[2].server == ["ppml0000"]


def test_a_torn_forget_frame_is_a_torn_tail(svc: Any) -> None:
    whole = encode_frame(svc.make_columns(2))
    entries, valid, problem = decode_frames(whole + encode_frame(Forget(["x"]))[:-2])
    assert (len(entries), valid) == (1, len(whole))
    assert problem is not None
    assert "truncated" in problem


def test_a_frame_of_an_unknown_kind_is_an_error_never_skipped(svc: Any) -> None:
    data = encode_frame(svc.make_columns(2)) + _unknown()
    with pytest.raises(UnknownFrameError, match="'FCZ9'") as info:
        decode_frames(data)
    assert info.value.offset == len(encode_frame(svc.make_columns(2)))
    # After damage it counts as intact: the damage is not a torn tail.
    damaged = b"\x00" * 7 + _unknown() + encode_frame(Forget(["x"]))
    assert intact_frames(damaged, 1) == (2, 7)


def test_a_frame_of_an_unknown_kind_refuses_the_start(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    store = StateStore(tmp_path)
    store.recover()
    store.append(svc.make_columns(2))
    store.append(Forget(["ppml0000"]))
    log = next(store.iter_logs())
    store.close()
    with open(log, "ab") as fh:
        fh.write(_unknown())
    size = log.stat().st_size
    with pytest.raises(StateError) as info:
        StateStore(tmp_path).recover()
    message = str(info.value)
    svc.four_parts(message)
    assert "'FCZ9'" in message
    assert "newer fleetcast" in message
    assert log.stat().st_size == size  # left as it is
    with pytest.raises(StartupError, match="'FCZ9'"):  # not "in use": the lock was released
        Runtime(svc.make_settings(model_dir, tmp_path), Notifier(None)).prepare()
    assert log.stat().st_size == size


# -- the replay ---------------------------------------------------------------------------


def _runtime(svc: Any, model_dir: Path, state: Path, **overrides: Any) -> Runtime:
    runtime = Runtime(svc.make_settings(model_dir, state, **overrides), Notifier(None))
    runtime.prepare()
    return runtime


def _crash(runtime: Runtime) -> None:
    """Stop without the final snapshot: the next start replays the log."""
    runtime.store.close()
    assert runtime.engine is not None
    runtime.engine.model.close()


def _columns(svc: Any, names: tuple[str, ...], steps: int, start_step: int = 0) -> Any:
    from fleetcast.appliance.persistence import Columns

    records = svc.make_records(names=names, steps=steps, start=svc.T0 + start_step * STEP_SECONDS)
    return Columns(
        ts=np.array([r["timestamp"] for r in records], dtype=np.int64),
        metrics=np.array(
            [[r["cpu_pct"], r["mem_pct"], r["disk_io_mb_s"], r["latency_ms"]] for r in records]
        ),
        server=[r["server_name"] for r in records],
        state=[r["state"] for r in records],
        profile=[r["profile"] for r in records],
    )


def test_a_forget_replays_at_its_place_in_the_log(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    state = tmp_path / "state"
    runtime = _runtime(svc, model_dir, state)
    runtime._ingest_sync(_columns(svc, svc.SERVERS, 6))  # logged before the forget
    gone = runtime.forget(["not-there", TARGET])
    assert gone is not None
    assert (gone.server_name, gone.steps_dropped) == (TARGET, 6)
    assert runtime.forget([TARGET]) is None  # nothing logged for an unknown name
    runtime._ingest_sync(_columns(svc, (TARGET,), 2, start_step=6))  # after it: a new server
    expected = runtime.engine.history(TARGET, 8)
    assert expected["cpu_pct"][:6] == [None] * 6
    others = runtime.engine.history("ppdb001", 8)
    _crash(runtime)

    again = _runtime(svc, model_dir, state)
    assert (again.replayed_records, again.replayed_forgets) == (3 * 6 + 2, 1)
    assert again.engine.history(TARGET, 8) == expected
    assert again.engine.history("ppdb001", 8) == others
    assert again.engine.status()["servers"]["known"] == 3
    # The forget is in the next snapshot too: gone after a clean restart as well.
    again.forget([TARGET])
    again.snapshot()
    _crash(again)
    third = _runtime(svc, model_dir, state)
    assert third.replayed_forgets == 0
    assert third.engine.history(TARGET, 8) is None
    assert third.engine.state_arrays()["buf_names"].tolist() == ["", "ppdb001", "ppweb001"]
    _crash(third)


def test_a_forget_that_cannot_be_logged_forgets_nothing(
    model_dir: Path, tmp_path: Path, svc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(svc, model_dir, tmp_path / "state")
    runtime._ingest_sync(_columns(svc, svc.SERVERS, 3))

    def disk_full(entry: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runtime.store, "append", disk_full)
    with pytest.raises(OSError, match="No space"):
        runtime.forget([TARGET])
    assert runtime.engine.knows(TARGET)
    assert runtime.engine.status()["forgotten"]["deleted"] == 0
    _crash(runtime)


def test_forget_after_forgets_in_data_time_logs_once_and_survives_a_restart(
    model_dir: Path, tmp_path: Path, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    runtime = _runtime(svc, model_dir, state, forget_after="1h")  # 12 steps
    assert runtime.settings.forget_after == 3600.0
    runtime._ingest_sync(_columns(svc, svc.SERVERS, 3))
    live = ("ppdb001", "ppweb001")
    with caplog.at_level(logging.INFO, logger="fleetcast.appliance.runtime_forget"):
        for k in range(3, 15):  # ppml0001's newest step is 2; the fleet's reaches 14
            runtime._ingest_sync(_columns(svc, live, 1, start_step=k))
        assert runtime.engine.knows(TARGET)  # 12 steps (3600 s) behind: not more
        runtime._ingest_sync(_columns(svc, live, 1, start_step=15))
        assert not runtime.engine.knows(TARGET)
        for k in range(16, 18):
            runtime._ingest_sync(_columns(svc, live, 1, start_step=k))
    lines = [r.getMessage() for r in caplog.records if "forgotten" in r.getMessage()]
    assert lines == [
        f"server {TARGET!r} forgotten (no sample for more than forget_after (3600 s of data "
        "time)): 3 buffered steps dropped, its slot is free (docs/OPERATIONS.md#forgetting-servers)"
    ]
    assert runtime.engine.status()["forgotten"] == {
        "deleted": 0,
        "expired": 1,
        "forget_after_s": 3600.0,
    }
    _crash(runtime)
    # Replayed from the log, and the setting is not needed for it.
    again = _runtime(svc, model_dir, state)
    assert again.replayed_forgets == 1
    assert not again.engine.knows(TARGET)
    # The frame says why: replayed, it is still an expiry, not a DELETE. The counters of
    # /status count this run's work, as after a clean stop; the replay is reported apart.
    assert again.replayed_reasons == {"deleted": 0, "expired": 1}
    assert again.replayed_records == 3 * len(svc.SERVERS) + 15 * 2
    assert again.engine.status()["ingest"]["accepted"] == 0  # as after a clean stop
    assert again.status()["persistence"]["replayed_forgets_on_start"] == {
        "deleted": 0,
        "expired": 1,
    }
    assert again.engine.status()["forgotten"] == {
        "deleted": 0,
        "expired": 0,
        "forget_after_s": None,
    }
    _crash(again)


def test_forget_after_frees_the_silent_server_of_a_two_server_fleet(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    # With two servers the silent one must not be the fleet's "now": data time would stop
    # at its last step, the live server would count as ahead, and nothing would expire.
    # Live, as a sender posts (a replay faster than real time leaves no one quiet).
    runtime = _runtime(svc, model_dir, tmp_path / "state", forget_after="1h")
    at = svc.T0 + 2 * STEP_SECONDS + 10
    runtime._ingest_sync(_columns(svc, ("ppdb001", TARGET), 3), now=at)
    for k in range(3, 21):
        at = svc.T0 + k * STEP_SECONDS + 10
        runtime._ingest_sync(_columns(svc, ("ppdb001",), 1, start_step=k), now=at)
    status = runtime.engine.status()
    assert not runtime.engine.knows(TARGET)
    assert status["forgotten"]["expired"] == 1
    assert status["servers"]["ahead"] == 0
    _crash(runtime)


def test_forget_after_set_at_a_restart_forgets_at_start(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    state = tmp_path / "state"
    runtime = _runtime(svc, model_dir, state)  # forget_after off: nothing expires
    runtime._ingest_sync(_columns(svc, svc.SERVERS, 3))
    for k in range(3, 20):
        runtime._ingest_sync(_columns(svc, ("ppdb001", "ppweb001"), 1, start_step=k))
    assert runtime.engine.knows(TARGET)
    _crash(runtime)
    again = _runtime(svc, model_dir, state, forget_after="1h")
    assert not again.engine.knows(TARGET)  # checked once after the replay
    assert again.engine.status()["forgotten"]["expired"] == 1
    _crash(again)
    third = _runtime(svc, model_dir, state)  # the setting off again: the forget is logged
    assert third.replayed_forgets == 1
    assert not third.engine.knows(TARGET)
    assert third.replayed_reasons == {"deleted": 0, "expired": 1}  # replayed, not this run's
    assert third.engine.status()["forgotten"]["expired"] == 0
    _crash(third)
