"""Forgetting servers in the running service: logged, then applied, like a batch of samples.

Split from :mod:`fleetcast.appliance.runtime` to keep it small; :meth:`Runtime.forget`
(``DELETE /servers/{server_name}``) and the ingest path (``forget_after``) call these. They
are part of the Runtime: they use its store and engine under its ingest lock, as its
methods do. A forget is one ``FCF1`` frame in the sample log, written and synced before
the engine applies it, so a restart replays it at its place: samples logged before it do
not bring the server back, samples logged after it start a new one
(docs/OPERATIONS.md#forgetting-servers, docs/OPERATIONS.md#state).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fleetcast.appliance.persistence import Forget

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fleetcast.appliance.engine import Engine, Forgotten, IngestResult
    from fleetcast.appliance.persistence import Entry
    from fleetcast.appliance.runtime import Runtime

__all__ = ["apply_entry", "check_replay", "expire_locked", "forget_locked", "source_note"]

_log = logging.getLogger(__name__)

_SEE = "docs/OPERATIONS.md#forgetting-servers"


def apply_entry(engine: Engine, entry: Entry) -> IngestResult | list[Forgotten]:
    """Apply one logged entry to ``engine``, as it was applied when it was logged: a batch
    through ``ingest`` (no clock: what was acknowledged once is stored again), a forget
    through ``forget``."""
    from fleetcast.appliance.runtime import to_record_batch

    if isinstance(entry, Forget):
        return engine.forget(entry.server, expired=entry.expired)
    return engine.ingest(to_record_batch(entry))


def check_replay(engine: Engine, capacity: int) -> None:
    """Refuse the start (StartupError) when the sample log's replay into ``engine`` left out
    servers for want of ``capacity``: acknowledged samples would be lost, and for good once
    the next snapshot drops the log (a smaller ``--capacity`` than when they came). Samples
    too old for a shorter history are dropped with a WARNING, as a snapshot's are."""
    ingest = engine.status()["ingest"]
    too_old = int(ingest["too_old"])
    if too_old:  # logged samples were accepted: only a shorter ring makes them too old now
        _log.warning(
            "%d samples of the sample log are older than the %d steps of history each server "
            "keeps now (--history-steps, or a model that reads less, was longer when they "
            "came): they are dropped, as the snapshot's older steps are. Start with the "
            "longer --history-steps to keep them. See docs/OPERATIONS.md#state",
            too_old,
            engine.history_steps,
        )
    refused = int(ingest["capacity"])
    if refused:
        from fleetcast.appliance.runtime import StartupError

        raise StartupError(
            f"The sample log holds {refused} acknowledged samples of servers beyond "
            f"--capacity {capacity} (it was larger when they came). Why it matters: starting "
            "would drop them, and the next snapshot would make that for good. Fix: start "
            "with the --capacity they were acknowledged under (or larger); forget servers "
            "(DELETE /servers/…) before lowering it. See docs/OPERATIONS.md#state."
        )


def forget_locked(runtime: Runtime, names: Sequence[str], *, expired: bool) -> list[Forgotten]:
    """Forget the servers of ``names`` the engine knows: one ``FCF1`` frame naming them is
    written (and synced) first, then the engine forgets them. Call under ``runtime.lock``.
    An OSError from the log (disk full) leaves every server as it was. Logs one line per
    server; ``expired``: by ``forget_after`` (else asked for by ``DELETE``)."""
    engine = runtime.engine
    if engine is None:
        raise RuntimeError("forget before start")
    known = [name for name in dict.fromkeys(names) if engine.knows(name)]
    if not known:
        return []
    entry = Forget(known, expired)
    size = runtime.store.append(entry)
    try:
        done = engine.forget(known, expired=expired)
    except BaseException:
        runtime.store.retract(size)  # not applied: not logged
        raise
    if runtime._tee is not None:
        runtime._tee.append(entry)
    after = engine.config.forget_after_s
    why = (
        f"no sample for more than forget_after ({after:g} s of data time)"
        if expired
        else "DELETE /servers"
    )
    for f in done:
        _log.info(
            "server %r forgotten (%s): %d buffered steps dropped, its slot is free (%s)",
            f.server_name,
            why,
            f.steps_dropped,
            _SEE,
        )
    return done


def expire_locked(runtime: Runtime) -> list[Forgotten]:
    """Forget the servers ``forget_after`` has passed for (none when it is off). Call under
    ``runtime.lock``, after a batch moved the fleet's data time on. A log that cannot be
    written is a warning, not an error: the batch that triggered it is acknowledged
    already, and the check runs again when the next step closes."""
    engine = runtime.engine
    if engine is None or not engine.config.forget_after_s:
        return []
    names = engine.expired()
    if not names:
        return []
    try:
        return forget_locked(runtime, names, expired=True)
    except OSError as exc:
        _log.warning(
            "cannot forget %d expired servers: the sample log cannot be written (%s); they "
            "stay until the next step closes. Fix: free disk space or fix the state "
            "directory's permissions. See %s.",
            len(names),
            exc,
            _SEE,
        )
        return []


def source_note(source: str) -> str:
    """What brings a forgotten server back, for the answer of ``DELETE /servers/...``."""
    fresh = "as a new server with an empty history"
    if source == "prometheus":
        return (
            "the Prometheus source re-reads every server Prometheus reports: while Prometheus "
            f"still has series for it, it comes back at the next cycle, {fresh}; remove its "
            "targets from Prometheus to keep it gone (docs/PROMETHEUS.md#forgotten-servers)"
        )
    if source == "demo":
        return f"the demo simulator sends it again at the next step, {fresh}"
    return f"samples sent under this name from now on start it again, {fresh} ({_SEE})"
