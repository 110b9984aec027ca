"""A backfill in chunks runs one forecast at its end, not one per chunk: a forecast on half
a backfill would be a fleet-risk point a day before the rest, with nothing in between."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.appliance.notify import Notifier
from fleetcast.appliance.persistence import Columns
from fleetcast.appliance.runtime import Runtime
from fleetcast.appliance.settings import build_settings
from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    from pathlib import Path

T0 = 1_790_000_000 // STEP_SECONDS * STEP_SECONDS
NAMES = ["ppweb001", "ppdb001"]


def _chunk(first: int, steps: int) -> Columns:
    ts = [T0 + (first + k) * STEP_SECONDS for k in range(steps) for _ in NAMES]
    n = len(ts)
    metrics = np.tile([[20.0, 50.0, 2.0, 20.0]], (n, 1))
    return Columns(np.array(ts, np.int64), metrics, NAMES * steps, [None] * n, [None] * n)


def test_backfill_chunks_forecast_once_at_the_end(model_dir: Path, tmp_path: Path) -> None:
    settings = build_settings(
        {"model_dir": model_dir, "state_dir": tmp_path / "state", "rate_limit": "off"}, env={}
    )

    async def runs_after(runtime: Runtime) -> int:
        assert runtime.engine is not None
        for _ in range(500):  # the run, then time for a second one that must not come
            if runtime.engine.status()["forecast_runs"]:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        return int(runtime.engine.status()["forecast_runs"])

    async def main() -> tuple[int, list[str | None]]:
        runtime = Runtime(settings, Notifier(None))
        await runtime.start()
        try:
            for k in range(3):  # three chunks of 40 steps, each closing steps
                await runtime.ingest(_chunk(40 * k, 40), forecast=False)
            await asyncio.sleep(0.5)
            assert runtime.engine is not None
            assert runtime.engine.status()["forecast_runs"] == 0  # nothing on half a backfill
            await runtime.ingest(_chunk(120, 40))  # the last chunk
            runs = await runs_after(runtime)
            history = runtime.engine.fleet_history(288)
            return runs, history["timestamps"]
        finally:
            await runtime.stop()

    runs, timestamps = asyncio.run(main())
    assert runs == 1
    assert len(timestamps) == 1  # one fleet-risk point, at the end of the backfill


def test_a_deferred_forecast_is_released_without_new_data(model_dir: Path, tmp_path: Path) -> None:
    """A pull source whose last backfill chunk is empty still gets its forecast."""
    settings = build_settings(
        {"model_dir": model_dir, "state_dir": tmp_path / "state", "rate_limit": "off"}, env={}
    )

    async def main() -> int:
        runtime = Runtime(settings, Notifier(None))
        await runtime.start()
        try:
            await runtime.ingest(_chunk(0, 60), forecast=False)
            runtime.release_forecast()
            assert runtime.engine is not None
            for _ in range(500):
                if runtime.engine.status()["forecast_runs"]:
                    break
                await asyncio.sleep(0.02)
            return int(runtime.engine.status()["forecast_runs"])
        finally:
            await runtime.stop()

    assert asyncio.run(main()) == 1
