"""POST /admin/reload's swap of the model: the new engine takes the old one's state.

Split from :mod:`fleetcast.appliance.runtime` to keep it small; :meth:`Runtime.reload`
calls :func:`reload` under its reload lock. Part of the Runtime: it uses its engine, its
ingest lock and its tee of the log as the runtime's methods do. While the new engine
loads, everything the old one logs (sample batches and forgets, in order) is teed and
applied to the new one before the swap, so nothing logged meanwhile is missing from it
(docs/OPERATIONS.md#upgrade-a-model).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import numpy as np

from fleetcast.appliance.runtime_forget import apply_entry

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from fleetcast.appliance.engine import Engine, EngineConfig, ForecastSet
    from fleetcast.appliance.runtime import Runtime

__all__ = ["reload", "reload_on_sighup"]

_log = logging.getLogger("fleetcast.appliance.runtime")


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
        from fleetcast.appliance.engine_state import carry_alerts, carry_counters

        with runtime.lock:
            for entry in runtime._tee or []:
                apply_entry(new, entry)
            runtime._tee = None
            carry_counters(old, new)
            carry_alerts(old, new)
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
    await anyio.to_thread.run_sync(old.close)  # its inference worker threads
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


def reload_on_sighup(runtime: Runtime) -> Callable[[], None]:
    """SIGHUP (``systemctl reload``) reloads ``--model-dir`` as ``POST /admin/reload`` does;
    returns the function that removes the handler. Before, SIGHUP's default action ended
    the process at once: no final snapshot, and ``Restart=on-failure`` counts a death by
    SIGHUP as a clean exit, so the service stayed down. Off the main thread (an
    in-process test server) there is no signal to handle, and nothing is installed."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    def handle() -> None:
        _log.info("SIGHUP: reloading the model at %s", runtime.settings.model_dir)
        task = loop.create_task(_reload_logged(runtime))
        running.add(task)
        task.add_done_callback(running.discard)

    def unhook() -> None:
        # At shutdown: a HUP now must neither end the process before its final snapshot
        # (the default action) nor swap engines under the stop.
        loop.remove_signal_handler(signal.SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for task in running:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGHUP, handle)
    except (NotImplementedError, RuntimeError, ValueError):
        return lambda: None
    return unhook


async def _reload_logged(runtime: Runtime) -> None:
    try:
        result = await runtime.reload(runtime.settings.model_dir)
    except Exception as exc:  # the previous model keeps serving; the log says why
        _log.error(
            "model reload refused (SIGHUP): %s: %s. Why it matters: the previous model keeps "
            "serving, and a restart would load the refused one. Fix: repoint --model-dir at a "
            "model that passes (or fix this one), then reload again. See "
            "docs/OPERATIONS.md#upgrade-a-model.",
            type(exc).__name__,
            exc,
        )
        return
    _log.info(
        "model reloaded (SIGHUP): %s -> %s",
        result["previous_model_version"],
        result["model_version"],
    )
