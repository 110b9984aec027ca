"""Hosts that post their own samples close a step one by one: the forecast waits for them
(``--forecast-settle-s``, docs/RISK.md#buckets) instead of forecasting most of the fleet
from the step before, and gives up on one that does not come."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.appliance.forecast import iso
from fleetcast.appliance.notify import Notifier
from fleetcast.appliance.persistence import Columns
from fleetcast.appliance.runtime import Runtime
from fleetcast.appliance.settings import build_settings
from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    from pathlib import Path

T0 = 1_790_000_000 // STEP_SECONDS * STEP_SECONDS
NAMES = [f"ppweb{i:03d}" for i in range(10)]


def _step(k: int, names: list[str]) -> Columns:
    n = len(names)
    ts = np.full(n, T0 + k * STEP_SECONDS, np.int64)
    metrics = np.tile([[20.0 + k % 7, 50.0, 2.0, 20.0]], (n, 1))
    return Columns(ts, metrics, list(names), [None] * n, [None] * n)


async def _runs(runtime: Runtime, at_least: int = 1, data_time: str | None = None) -> int:
    """Forecast runs, once there are ``at_least`` and the served set is at ``data_time``."""
    engine = runtime.engine
    assert engine is not None
    for _ in range(500):
        runs = int(engine.status()["forecast_runs"])
        current = engine.current()
        at = current is not None and data_time in (None, current.data_time)
        if runs >= at_least and at:
            return runs
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {at_least} forecast runs, or none at {data_time}")


def _run(tmp_path: Path, model_dir: Path, settle_s: float, senders: list[str]):
    """History in one batch per step, then step 30 posted host by host (``senders``)."""
    values = {"model_dir": model_dir, "state_dir": tmp_path / "state", "rate_limit": "off"}
    settings = build_settings({**values, "forecast_settle_s": settle_s}, env={})

    async def main():
        runtime = Runtime(settings, Notifier(None))
        await runtime.start()
        try:
            for k in range(30):
                await runtime.ingest(_step(k, NAMES), now=T0 + k * STEP_SECONDS + 5)
            before = await _runs(runtime, data_time=iso(T0 + 28 * STEP_SECONDS))
            await asyncio.sleep(0.3)  # the history's last run has ended
            assert runtime.engine is not None
            assert runtime.engine.status()["forecast_runs"] == before
            posted = time.monotonic()
            for name in senders:
                await runtime.ingest(_step(30, [name]), now=T0 + 30 * STEP_SECONDS + 5)
                await asyncio.sleep(0.05)
            runs = await _runs(runtime, before + 1)
            waited = time.monotonic() - posted
            await asyncio.sleep(0.3)  # no second run for the same step
            assert runtime.engine is not None
            assert runtime.engine.status()["forecast_runs"] == runs
            current = runtime.engine.current()
            assert current is not None
            return waited, {s["server_name"]: s["data_time"] for s in current.servers}
        finally:
            await runtime.stop()

    return asyncio.run(main())


def test_the_forecast_waits_for_every_host_to_close_the_step(
    model_dir: Path, tmp_path: Path
) -> None:
    waited, data_times = _run(tmp_path, model_dir, 10.0, NAMES)
    assert data_times == dict.fromkeys(NAMES, iso(T0 + 29 * STEP_SECONDS))
    assert waited < 5.0  # all came: it ran then, not after the 10 s


def test_a_host_that_does_not_come_is_waited_for_settle_s_only(
    model_dir: Path, tmp_path: Path
) -> None:
    waited, data_times = _run(tmp_path, model_dir, 1.0, NAMES[:9])
    assert data_times == {
        **dict.fromkeys(NAMES[:9], iso(T0 + 29 * STEP_SECONDS)),
        NAMES[9]: iso(T0 + 28 * STEP_SECONDS),
    }
    assert 1.0 <= waited < 5.0
