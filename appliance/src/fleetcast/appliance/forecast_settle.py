"""A forecast's wait for the stragglers of a step (``--forecast-settle-s``, docs/RISK.md#buckets).

The fleet's step advances once a tenth of the servers still sending has closed it. Where
each host posts its own samples, the rest close it over the next seconds: forecasting at
once would read the step before for most of the fleet until the next step. So the
forecast loop waits until every server that could be forecast at the fleet's step has
closed it, or ``settle_s`` has passed, whichever comes first. A fleet sent in one batch
(the Prometheus source, the demo, a collector) is complete at once and waits nothing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    import asyncio

    from fleetcast.appliance.engine import Engine

__all__ = ["settle"]


async def settle(engine: Engine, arrived: asyncio.Event, settle_s: float) -> None:
    """Return once ``engine``'s step is complete (:meth:`Engine.step_complete`), or after
    ``settle_s`` seconds. ``arrived`` is set by every ingest: the check runs again then."""
    deadline = time.monotonic() + settle_s
    while True:
        arrived.clear()  # before the check: an ingest during it wakes the next wait
        if settle_s <= 0 or await anyio.to_thread.run_sync(engine.step_complete):
            return
        left = deadline - time.monotonic()
        if left <= 0:
            return
        with anyio.move_on_after(left):
            await arrived.wait()
