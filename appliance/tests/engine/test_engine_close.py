"""Closing an engine (a model reload's old one, the service's stop) while it forecasts."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .test_fleet_time import _open, _step

if TYPE_CHECKING:
    from pathlib import Path


def test_closing_an_engine_waits_for_its_running_forecast(toy_dir: Path) -> None:
    """A reload closes the old engine's model: under a forecast still running on it, the
    run failed (``cannot schedule new futures after shutdown``) and counted as an error."""
    engine = _open(toy_dir)
    fleet = [f"ppweb{i:03d}" for i in range(3)]
    for k in range(10):
        _step(engine, fleet, k)
    closed = threading.Event()
    with engine._forecast_lock:  # a forecast is running
        closer = threading.Thread(target=lambda: (engine.close(), closed.set()))
        closer.start()
        assert not closed.wait(0.3)
    closer.join(10)
    assert closed.is_set()
    assert engine.run_forecast() is None  # closed: no run, no worker threads started again
    assert engine.model._pool is None
