"""POST /admin/reload's swap of the model: the new engine takes the old one's state.

Split from :mod:`fleetcast.appliance.runtime` to keep it small; :meth:`Runtime.reload`
calls :func:`reload` under its reload lock. Part of the Runtime: it uses its engine, its
ingest lock and its tee of the log as the runtime's methods do. While the new engine
loads, everything the old one logs (sample batches and forgets, in order) is teed and
applied to the new one before the swap, so nothing logged meanwhile is missing from it
(docs/OPERATIONS.md#upgrade-a-model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.to_thread
import numpy as np

from fleetcast.appliance.runtime_forget import apply_entry

if TYPE_CHECKING:
    from pathlib import Path

    from fleetcast.appliance.engine import Engine, EngineConfig, ForecastSet
    from fleetcast.appliance.runtime import Runtime

__all__ = ["reload"]


async def reload(runtime: Runtime, model_dir: Path) -> dict[str, Any]:
    """Swap in the model at ``model_dir``; the old engine serves until the new one passed
    its checks and holds the same buffers (plus anything logged meanwhile). Returns
    ``{"model_version", "bundle_id", "previous_model_version", "servers_carried"}``."""
    from fleetcast.appliance.engine import Engine

    old = runtime.engine
    if old is None:
        raise RuntimeError("reload before start")
    config: EngineConfig = runtime.settings.engine_config(model_dir)

    def take_state() -> dict[str, np.ndarray]:
        with runtime.lock:
            runtime._tee = []
            return {k: np.array(v, copy=True) for k, v in old.state_arrays().items()}

    def swap(new: Engine) -> None:
        with runtime.lock:
            for entry in runtime._tee or []:
                apply_entry(new, entry)
            runtime._tee = None
            runtime.engine = new

    def build() -> tuple[Engine, ForecastSet | None]:
        engine = Engine.restore(config, arrays)
        return engine, engine.run_forecast()  # serve forecasts from the first second

    arrays = await anyio.to_thread.run_sync(take_state)
    try:
        new, forecast = await anyio.to_thread.run_sync(build)
    except BaseException:
        with runtime.lock:
            runtime._tee = None
        raise
    await anyio.to_thread.run_sync(swap, new)
    await anyio.to_thread.run_sync(old.model.close)  # its inference worker threads
    if forecast is not None:
        runtime.publish(new.current() or forecast)  # less servers forgotten meanwhile
    runtime.request_forecast()
    before = old.status().get("model", {})
    after = new.status().get("model", {})
    servers = new.status().get("servers", {})
    return {
        "model_version": after.get("version"),
        "bundle_id": after.get("bundle_id"),
        "previous_model_version": before.get("version"),
        "servers_carried": int(servers.get("known", 0) or 0),
    }
