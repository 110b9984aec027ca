"""Saved state this appliance cannot take whole refuses the start with one message and
leaves the state directory as it was (docs/OPERATIONS.md#state): nothing acknowledged is
dropped silently."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from fleetcast.appliance.app import create_app
from fleetcast.appliance.notify import Notifier
from fleetcast.appliance.runtime import Runtime, StartupError

if TYPE_CHECKING:
    from pathlib import Path

META = "__fleetcast_meta__"
NAMES = [f"ppweb{i:03d}" for i in range(12)]


def _running_state(model_dir: Path, tmp_path: Path, svc: Any, *, snapshot: bool) -> Path:
    """A copy of the state directory of an appliance that took 12 servers' samples (in the
    log only, or also in a snapshot), as a kill -9 leaves it."""
    settings = svc.make_settings(model_dir, tmp_path / "state", capacity=64)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/metrics", json={"records": svc.make_records(names=NAMES, steps=3)})
        assert answer.json()["accepted"] == 36
        if snapshot:
            client.app.state.runtime.snapshot()
        shutil.copytree(tmp_path / "state", tmp_path / "crashed")
    (tmp_path / "crashed" / "lock").write_text("")
    return tmp_path / "crashed"


def _start(model_dir: Path, state: Path, svc: Any, **settings: Any) -> Runtime:
    runtime = Runtime(svc.make_settings(model_dir, state, **settings), Notifier(None))
    runtime.prepare()
    return runtime


def test_a_smaller_capacity_than_the_logged_servers_refuses_the_start(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    state = _running_state(model_dir, tmp_path, svc, snapshot=False)
    logged = (state / "log-00000000.wal").read_bytes()
    with pytest.raises(StartupError) as info:
        _start(model_dir, state, svc, capacity=10)
    message = str(info.value)
    assert "samples of servers beyond --capacity 10" in message
    assert "Fix: start with the --capacity they were acknowledged under" in message
    assert message.endswith("See docs/OPERATIONS.md#state.")
    assert (state / "log-00000000.wal").read_bytes() == logged  # nothing cut
    assert not (state / "snapshot.npz").exists()
    runtime = _start(model_dir, state, svc, capacity=64)  # the samples are all still there
    assert runtime.engine is not None
    assert runtime.engine.status()["servers"]["known"] == len(NAMES)
    assert runtime.replayed_records == 36
    runtime.store.close()


def _rewrite_snapshot(state: Path, change: Any) -> None:
    path = state / "snapshot.npz"
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: np.array(npz[k]) for k in npz.files}
    meta = msgspec.json.decode(arrays.pop(META).tobytes())
    change(arrays, meta)
    arrays[META] = np.frombuffer(msgspec.json.encode(meta), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def test_a_snapshot_of_a_newer_format_refuses_the_start(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    state = _running_state(model_dir, tmp_path, svc, snapshot=True)
    _rewrite_snapshot(state, lambda arrays, meta: meta.update(format=2))
    with pytest.raises(StartupError) as info:
        _start(model_dir, state, svc, capacity=64)
    message = str(info.value)
    assert "snapshot.npz in the state directory is of format 2" in message
    assert "written by a newer fleetcast" in message


def test_a_snapshot_whose_arrays_do_not_fit_each_other_refuses_the_start(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    state = _running_state(model_dir, tmp_path, svc, snapshot=True)
    _rewrite_snapshot(state, lambda arrays, meta: arrays.update(profile=arrays["profile"][:3]))
    with pytest.raises(StartupError) as info:
        _start(model_dir, state, svc, capacity=64)
    assert "The saved state in the state directory does not fit" in str(info.value)
