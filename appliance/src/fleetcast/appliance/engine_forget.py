"""Forgetting servers: free a server's slot, drop its histories and its served forecast.

Split from :mod:`fleetcast.appliance.engine` to keep it small; :meth:`Engine.forget` and
:meth:`Engine.expired` delegate here, and a forecast run calls :func:`drop_current` for a
server forgotten while it ran (docs/OPERATIONS.md#forgetting-servers). These functions are
part of the Engine: they use its private state under its lock, as its methods do; call them
through :class:`~fleetcast.appliance.engine.Engine`.

What a forget leaves behind: nothing of the server's own. Its ring buffer, risk history,
profile and model codes are cleared and its slot is free for the next new server; the
served forecast set loses its row, its alerts and its share of the fleet summary at once
(the fleet trend keeps the points already recorded: they were the fleet as it was); the
step cache drops the slot's rows before the next forecast. Samples sent under the name
later start a new server with an empty history.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.appliance.engine_types import Forgotten
from fleetcast.contract.schema import VALID_PROFILES

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fleetcast.appliance.engine import Engine

__all__ = ["drop_current", "expired", "forget"]


def forget(engine: Engine, names: Iterable[str], *, expired: bool = False) -> list[Forgotten]:
    """Forget every server of ``names`` the engine knows (unknown names are skipped), in
    order; ``expired``: by ``forget_after`` rather than asked for (counted apart)."""
    done: list[Forgotten] = []
    with engine._lock:
        buf = engine._buf
        for name in dict.fromkeys(names):
            s = buf.index.get(name)
            if s is None:
                continue
            profile = VALID_PROFILES[int(engine._profile[s])]
            steps = buf.free(s)
            engine._profile[s] = -1  # no profile: left out of every profile's views
            engine._static[s] = 0
            engine._known[s] = False
            engine._history.clear(s)
            engine._freed_slots.append(s)  # the step cache drops them before the next run
            done.append(Forgotten(server_name=name, profile=profile, steps_dropped=steps))
        if done:
            gone = {f.server_name for f in done}
            engine._alert_since = {
                key: since for key, since in engine._alert_since.items() if key[0] not in gone
            }
            engine._restored_alerts = [
                a for a in engine._restored_alerts if a["server_name"] not in gone
            ]
            drop_current(engine, gone)
            engine._forgotten["expired" if expired else "deleted"] += len(done)
    return done


def expired(engine: Engine) -> list[str]:
    """The servers ``forget_after_s`` has passed for, in slot order; [] when it is off.

    A server expires when the fleet's step (its reference step + 1, the open step;
    servers whose clock runs ahead do not move it) is more than ``forget_after_s`` of data
    time after the server's newest step. Data time, not the wall clock: an appliance that
    receives nothing forgets nothing (docs/RISK.md#buckets). One numpy pass over the
    servers' newest steps."""
    after = engine.config.forget_after_s
    if not after:
        return []
    with engine._lock:
        buf = engine._buf
        if engine._fleet_closed < 0:
            return []
        n = buf.n
        age = (engine._fleet_closed + 1 - buf.last_step[:n]) * engine.spec.step_seconds
        old = np.flatnonzero(buf.used[:n] & (age > after))
        return [buf.names[i] for i in old.tolist()]


def drop_current(engine: Engine, gone: set[str]) -> None:
    """Remove the ``gone`` servers from the served forecast set, under the engine's lock:
    their ServerForecast rows, their alerts, and their share of the fleet summary (computed
    again from the remaining servers' risks, as a forecast without them would have). The
    run's arrays stay as they are (no copy of its quantiles): the remaining servers keep
    their rows, the gone ones are only unlisted."""
    from fleetcast.appliance.risk import fleet_summary

    fs, rows = engine._current, engine._current_rows
    if fs is None:
        return
    if not any(name in rows for name in gone):
        # Not forecast in this set (stale, ahead), but its carried alerts may be in it.
        if any(a["server_name"] in gone for a in fs.alerts):
            alerts = [a for a in fs.alerts if a["server_name"] not in gone]
            engine._current = dataclasses.replace(fs, alerts=alerts)
        return
    rows = {name: b for name, b in rows.items() if name not in gone}
    kept = np.array(sorted(rows.values()), dtype=np.int64)
    cfg = engine.config
    fleet = fleet_summary(
        engine._current_risk[kept],
        [engine._current_profiles[b] for b in kept.tolist()],
        list(engine.horizons),
        cfg.warning_probability,
        cfg.critical_probability,
    )
    engine._current = dataclasses.replace(
        fs,
        servers=[s for s in fs.servers if s["server_name"] not in gone],
        fleet=fleet,
        alerts=[a for a in fs.alerts if a["server_name"] not in gone],
    )
    engine._current_rows = rows
