"""The state directory is never shared and never half-applied.

One owner per state directory (a lock), nothing applied that was not logged, the log holding
exactly the accepted rows, and a shorter history after a restart is logged. Damaged
snapshots and logs: test_state_damage.py. docs/OPERATIONS.md#state.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from litestar.testing import TestClient

from fleetcast.appliance import persistence
from fleetcast.appliance.app import create_app
from fleetcast.appliance.buffers import RingBuffers
from fleetcast.appliance.history import RiskHistory
from fleetcast.appliance.notify import Notifier
from fleetcast.appliance.persistence import StateError, decode_frames
from fleetcast.appliance.runtime import Runtime, StartupError
from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    from pathlib import Path


# -- one appliance per state directory ---------------------------------------------------


def test_second_store_on_one_state_dir_is_refused_naming_the_holder(
    stores: Any, tmp_path: Path, svc: Any
) -> None:
    first = stores()
    first.recover()
    first.append(svc.make_columns(2))
    lock = tmp_path / "state" / "lock"
    assert lock.read_text().strip() == str(os.getpid())

    second = stores()
    with pytest.raises(StateError) as info:
        second.recover()
    message = str(info.value)
    assert f"pid {os.getpid()}" in message
    assert "another fleetcast appliance" in message
    svc.four_parts(message)
    # The refused store changed nothing: the first one's log is intact and still in use.
    first.append(svc.make_columns(3, start=10))
    first.close()
    assert lock.read_text() == ""

    third = stores()
    recovery = third.recover()  # the lock was released by close()
    assert [len(b) for b in recovery.batches] == [2, 3]
    assert lock.read_text().strip() == str(os.getpid())


@pytest.mark.slow
def test_second_appliance_process_refuses_a_state_dir_in_use(
    server_factory: Any, svc: Any, model_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = server_factory(state)
    records = svc.make_records(steps=4)
    assert httpx.post(f"{first.url}/metrics", json={"records": records}).status_code == 200

    result = svc.run_serve(model_dir, state, port=svc.free_port())
    assert result.returncode == 1, result.stderr
    assert f"pid {first.proc.pid}" in result.stderr
    assert "Traceback" not in result.stderr
    svc.four_parts(result.stderr)

    more = svc.make_records(steps=2, start=svc.T0 + 4 * STEP_SECONDS)
    assert httpx.post(f"{first.url}/metrics", json={"records": more}).status_code == 200
    first.kill()  # no final snapshot: everything must come back from the log
    again = server_factory(state)
    status = httpx.get(f"{again.url}/status").json()
    assert status["persistence"]["replayed_on_start"] == len(records) + len(more)


def test_a_refused_start_releases_the_state_dir(model_dir: Path, tmp_path: Path, svc: Any) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "snapshot.npz").write_bytes(b"PK\x03\x04 not a snapshot")
    settings = svc.make_settings(model_dir, state)
    runtime = Runtime(settings, Notifier(None))
    with pytest.raises(StartupError, match="damaged"):
        runtime.prepare()
    (state / "snapshot.npz").rename(tmp_path / "snapshot.npz.damaged")
    again = Runtime(settings, Notifier(None))
    again.prepare()  # would be refused as "in use" if the failed start kept the lock
    again.store.close()
    again.engine.model.close()


# -- what is not persisted is not applied ------------------------------------------------


def test_a_batch_that_cannot_be_logged_is_not_applied(
    model_dir: Path, tmp_path: Path, svc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk answers 503 and leaves the engine exactly as it was; the resend after the
    disk recovered is applied once.

    A real full file system (a tiny tmpfs) needs root, so the disk-full error is injected at
    the file-write boundary: ``os.write`` on the sample log's descriptor raises ENOSPC.
    """
    settings = svc.make_settings(model_dir, tmp_path / "state")
    first = svc.make_records(steps=6)
    second = svc.make_records(steps=3, start=svc.T0 + 6 * STEP_SECONDS)
    real_write = os.write
    with TestClient(create_app(settings)) as client:
        runtime = client.app.state.runtime
        assert client.post("/metrics", json={"records": first}).status_code == 200
        status_before = client.get("/status").json()
        history_before = _actuals(client, "ppdb001", 9)
        arrays_before = runtime.engine.state_arrays()
        log_before = runtime.store.log_bytes

        def disk_full(fd: int, data: Any) -> int:
            if fd == runtime.store._fd:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(persistence.os, "write", disk_full)
        response = client.post("/metrics", json={"records": second})
        assert response.status_code == 503, response.text
        assert response.json()["detail"] == (
            "the disk holding the state directory is full (ENOSPC: No space left on device); "
            "nothing of the batch was stored or acknowledged"
        )
        persisted = client.get("/status").json()["persistence"]
        assert persisted["writable"] is False
        assert persisted["write_errors"] == 1
        assert persisted["last_write_error"]["cause"].startswith("the disk holding the state")
        assert client.get("/status").json()["source"]["healthy"] is False

        # The buffers (the forecast loop may add risk history meanwhile: not compared).
        arrays_after = runtime.engine.state_arrays()
        for key, value in arrays_before.items():
            if key.startswith("buf_") or key == "profile":
                assert np.array_equal(arrays_after[key], value), key
        assert _actuals(client, "ppdb001", 9) == history_before
        status = client.get("/status").json()
        assert status["ingest"] == status_before["ingest"]
        assert status["source"]["detail"] == status_before["source"]["detail"]
        assert runtime.latest_step == svc.T0 + 4 * STEP_SECONDS  # the last closed step
        assert runtime.store.log_bytes == log_before

        monkeypatch.setattr(persistence.os, "write", real_write)  # the disk recovered
        response = client.post("/metrics", json={"records": second})
        assert response.status_code == 200
        assert response.json()["accepted"] == len(second)
        persisted = client.get("/status").json()
        assert persisted["persistence"]["writable"] is True
        assert persisted["persistence"]["write_errors"] == 1  # since the start
        assert persisted["source"]["healthy"] is True
        ingest = client.get("/status").json()["ingest"]
        assert ingest["accepted"] == len(first) + len(second)
        assert ingest["duplicates"] == 0
        history = _actuals(client, "ppdb001", 9)
    # The restart replays exactly what was acknowledged.
    with TestClient(create_app(settings)) as again:
        assert _actuals(again, "ppdb001", 9) == history


def test_a_batch_that_fails_to_apply_is_cut_off_the_log(
    model_dir: Path, tmp_path: Path, svc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log never holds a batch the engine did not take: a replay would apply it."""
    settings = svc.make_settings(model_dir, tmp_path / "state")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        runtime = client.app.state.runtime
        assert (
            client.post("/metrics", json={"records": svc.make_records(steps=3)}).status_code == 200
        )
        log = max((tmp_path / "state").glob("log-*.wal"))
        size = log.stat().st_size

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug in the engine")

        monkeypatch.setattr(runtime.engine, "ingest", broken)
        more = svc.make_records(steps=2, start=svc.T0 + 3 * STEP_SECONDS)
        assert client.post("/metrics", json={"records": more}).status_code == 500
        assert log.stat().st_size == size == runtime.store.log_bytes
        monkeypatch.undo()
        assert client.post("/metrics", json={"records": more}).status_code == 200
        batches, _, problem = decode_frames(log.read_bytes())
    assert problem is None
    assert [len(b) for b in batches] == [9, 6]


def _actuals(client: TestClient[Any], name: str, steps: int) -> dict[str, Any]:
    """/history without the risk column (forecasts run asynchronously, actuals do not)."""
    body = client.get(f"/history/{name}", params={"steps": steps}).json()
    body.pop("risk")
    return body


def test_the_log_holds_exactly_the_accepted_rows(model_dir: Path, tmp_path: Path, svc: Any) -> None:
    """Invalid and future rows are never logged; rows refused on the buffers' state (too
    old, over the capacity) are cut from the frame after applying, so a restart rebuilds
    exactly the acknowledged state, and one with a larger capacity does not bring back a
    rejected server."""
    import shutil

    settings = svc.make_settings(model_dir, tmp_path / "state", capacity=2)
    good = svc.make_records(names=["ppdb001", "ppweb001"], steps=40)
    late = svc.make_records(names=["ppdb001"], steps=1, start=svc.T0 - 5000 * STEP_SECONDS)
    bad = [dict(good[0], cpu_pct=150.0), dict(good[1], timestamp=4_000_000_000)]
    extra = svc.make_records(names=["ppml0001"], steps=1)  # over the capacity of 2
    with TestClient(create_app(settings)) as client:
        runtime = client.app.state.runtime
        answer = client.post("/metrics", json={"records": good})
        assert answer.json()["accepted"] == len(good)
        runtime.snapshot()
        answer = client.post("/metrics", json={"records": [*late, *bad, *extra, good[-1]]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 1  # the duplicate of good[-1]
        assert [r["index"] for r in answer.json()["rejected"]] == [0, 1, 2, 3]
        answer = client.post("/metrics", json={"records": extra})  # refused on state only
        assert answer.status_code == 422, answer.text
        log = max((tmp_path / "state").glob("log-*.wal"))
        batches, _, problem = decode_frames(log.read_bytes())
        assert problem is None
        logged = [name for batch in batches for name in batch.server]
        assert logged == ["ppweb001"]  # the accepted row only; nothing for the refused batch
        history = _actuals(client, "ppdb001", 40)
        status = client.get("/status").json()
        shutil.copytree(tmp_path / "state", tmp_path / "copy")  # a copy of the running state
        (tmp_path / "copy" / "lock").write_text("")
    with TestClient(
        create_app(svc.make_settings(model_dir, tmp_path / "copy", capacity=3))
    ) as again:
        assert again.get("/status").json()["persistence"]["replayed_on_start"] == 1
        assert _actuals(again, "ppdb001", 40) == history
        assert again.get("/status").json()["servers"]["known"] == status["servers"]["known"]
        assert again.get("/history/ppml0001").status_code == 404


# -- a shorter history after a restart is logged -----------------------------------------


def test_a_shorter_ring_logs_what_it_drops(caplog: pytest.LogCaptureFixture) -> None:
    base = 10**9 // STEP_SECONDS
    rows = [(0, k) for k in range(15)] + [(1, k) for k in range(15)]
    rows += [(2, k) for k in range(11, 15)]  # server c has only the newest 4 steps
    wide = RingBuffers(4, 20)
    for name in ("a", "b", "c"):
        wide.register(name)
    n = len(rows)
    codes = wide.append(
        np.array([s for s, _ in rows], dtype=np.int64),
        np.array([(base + k) * STEP_SECONDS for _, k in rows], dtype=np.int64),
        np.ones((n, 4)),
        np.zeros(n, dtype=np.int8),
    )
    assert (codes == 0).all()
    arrays = wide.state_arrays()

    narrow = RingBuffers(4, 10)
    with caplog.at_level(logging.WARNING, logger="fleetcast.appliance.buffers"):
        narrow.load_arrays(arrays)
    # a and b lose their 5 oldest steps each; c keeps all 4.
    assert [int((narrow.slot_step[s] >= 0).sum()) for s in range(3)] == [10, 10, 4]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "10 steps of 2 servers" in text
    assert "20 to 10 steps" in text
    assert "--history-steps" in text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fleetcast.appliance.buffers"):
        RingBuffers(4, 20).load_arrays(arrays)
        RingBuffers(4, 30).load_arrays(arrays)  # a longer ring drops nothing
    assert caplog.records == []


def test_a_risk_history_of_another_size_is_reset_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    saved = RiskHistory(4, 20, 50)
    fleet = {"mean_risk": 0.5, "red": 1, "yellow": 0, "green": 2}
    saved.record(np.array([0, 1]), np.array([100, 100]), np.array([0.2, 0.7]), 100, fleet)
    arrays = saved.state_arrays(2)

    with caplog.at_level(logging.WARNING, logger="fleetcast.appliance.history"):
        RiskHistory(4, 20, 50).load_arrays(arrays, 2)
    assert caplog.records == []

    other = RiskHistory(4, 10, 30)
    with caplog.at_level(logging.WARNING, logger="fleetcast.appliance.history"):
        other.load_arrays(arrays, 2)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "risk history of 2 servers" in text
    assert "fleet risk trend" in text
    assert np.isnan(other.server(0, np.array([100]))).all()


@pytest.mark.slow
def test_restart_with_fewer_history_steps_warns(
    model_dir: Path, tmp_path: Path, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(svc.make_settings(model_dir, tmp_path / "probe"))) as probe:
        need = probe.app.state.runtime.engine.history_steps
    state = tmp_path / "state"
    longer = svc.make_settings(model_dir, state, history_steps=need + 40)
    with TestClient(create_app(longer)) as first:
        records = svc.make_records(steps=need + 60)
        assert first.post("/metrics", json={"records": records}).status_code == 200
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="fleetcast"),
        TestClient(create_app(svc.make_settings(model_dir, state))),
    ):
        pass
    text = caplog.text
    assert f"{40 * len(svc.SERVERS)} steps of {len(svc.SERVERS)} servers" in text
    assert "--history-steps" in text


@pytest.mark.slow
def test_restart_with_fewer_history_steps_warns_of_logged_samples_too(
    model_dir: Path, tmp_path: Path, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Samples only in the log (no snapshot yet: a kill -9) too old for the shorter ring
    were dropped without a word; the snapshot's were warned of."""
    import shutil

    with TestClient(create_app(svc.make_settings(model_dir, tmp_path / "probe"))) as probe:
        need = probe.app.state.runtime.engine.history_steps
    state, crashed = tmp_path / "state", tmp_path / "crashed"
    longer = svc.make_settings(model_dir, state, history_steps=need + 40)
    with TestClient(create_app(longer)) as first:
        records = svc.make_records(steps=need + 60)
        assert first.post("/metrics", json={"records": records}).status_code == 200
        shutil.copytree(state, crashed)  # as a kill -9 leaves it: the log, no snapshot
    assert not (crashed / "snapshot.npz").exists()
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="fleetcast"),
        TestClient(create_app(svc.make_settings(model_dir, crashed))),
    ):
        pass
    # need + 60 steps sent; the ring (the history + 2 steps) logged the newest need + 42,
    # the shorter one keeps need + 2 of them.
    dropped = 40 * len(svc.SERVERS)
    (warned,) = [
        r.getMessage() for r in caplog.records if "samples of the sample log" in r.getMessage()
    ]
    assert warned.startswith(f"{dropped} samples of the sample log are older than the {need} steps")
    assert "--history-steps" in warned
