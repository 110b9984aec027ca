"""What the alert receivers were told, kept in the state directory across restarts.

:class:`~fleetcast.appliance.alerting.AlertPusher` diffs each forecast set's alerts
against the alerts it last reported firing. Kept in memory only, a restart forgets them:
every alert still firing reaches the webhook a second time as new, and an alert that
ended while the appliance was down (the missed data was calm, a threshold was raised)
is never reported resolved to the webhook (Alertmanager at least lets it expire). The
pusher therefore saves, after each change, ``<state_dir>/alerts.json``:

``{"version": 1, "active": [firing Alertmanager alerts], "alertmanager_pending": [...],
"webhook_pending": [["firing"|"resolved", alert], ...]}``

written atomically (a temporary file renamed over it), mode 0600 like the other state
files. A missing file is a first start; an unreadable one is logged and ignored (the
receivers then hear about every firing alert again, as before this file existed).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import msgspec

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["STATE_FILE", "DeliveredState", "StateFile", "load_state", "save_state"]

_log = logging.getLogger("fleetcast.appliance.alerting")

STATE_FILE = "alerts.json"
"""Name of the file in the state directory."""

_VERSION = 1


class DeliveredState(msgspec.Struct):
    """The pusher's bookkeeping: firing alerts and the changes not delivered yet."""

    version: int = _VERSION
    active: list[dict[str, Any]] = msgspec.field(default_factory=list)
    alertmanager_pending: list[dict[str, Any]] = msgspec.field(default_factory=list)
    webhook_pending: list[tuple[str, dict[str, Any]]] = msgspec.field(default_factory=list)


def load_state(path: Path) -> DeliveredState | None:
    """The saved state, or None (no file yet; an unreadable file is logged and ignored)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _log.warning(
            "cannot read %s (%s: %s). Why it matters: alerts firing before the restart are "
            "sent to the webhook again as new, and those that ended meanwhile are not "
            "reported resolved. Fix: check the state directory's permissions. See "
            "docs/PROMETHEUS.md#alerts.",
            path,
            type(exc).__name__,
            exc,
        )
        return None
    try:
        state = msgspec.json.decode(raw, type=DeliveredState)
        for item in (*state.active, *state.alertmanager_pending):
            _check_item(item)
        for status, item in state.webhook_pending:
            if status not in ("firing", "resolved"):
                raise ValueError(f"unknown status {status!r}")
            _check_item(item)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        _log.warning(
            "%s is damaged (%s); ignored. Why it matters: alerts firing before the restart "
            "are sent to the webhook again as new. Fix: none needed, the file is rewritten "
            "with the next alert change. See docs/PROMETHEUS.md#alerts.",
            path,
            " ".join(str(exc).split())[:200],
        )
        return None
    if state.version != _VERSION:
        _log.warning("%s has version %s, not %d; ignored", path, state.version, _VERSION)
        return None
    return state


def _check_item(item: dict[str, Any]) -> None:
    labels = item.get("labels")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError("an alert without string labels")


def save_state(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it), mode 0600.
    Raises OSError."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class StateFile:
    """The pusher's file: :meth:`load` at start, :meth:`save` after each push (written only
    when it changed; a failure is logged once, and retried with the next push)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved: bytes | None = None
        self._failed = False

    def load(self) -> DeliveredState | None:
        """The saved state (blocking), or None."""
        state = load_state(self.path)
        if state is not None:
            self._saved = msgspec.json.encode(state)
            if state.active or state.alertmanager_pending or state.webhook_pending:
                _log.info("alerts: %d firing before the restart (%s)", len(state.active), self.path)
        return state

    async def save(
        self,
        active: list[dict[str, Any]],
        alertmanager_pending: list[dict[str, Any]],
        webhook_pending: list[tuple[str, dict[str, Any]]],
    ) -> None:
        """Write the state in a worker thread when it differs from the last one written."""
        data = msgspec.json.encode(
            DeliveredState(
                active=active,
                alertmanager_pending=alertmanager_pending,
                webhook_pending=webhook_pending,
            )
        )
        if data == self._saved:
            return
        try:
            await anyio.to_thread.run_sync(save_state, self.path, data)
        except OSError as exc:
            if not self._failed:
                _log.warning(
                    "cannot save %s (%s: %s). Why it matters: after a restart, alerts still "
                    "firing reach the webhook again as new, and those that ended meanwhile "
                    "are not reported resolved. Fix: free space in, or fix the permissions "
                    "of, the state directory. See docs/PROMETHEUS.md#alerts.",
                    self.path,
                    type(exc).__name__,
                    exc,
                )
            self._failed = True
            return
        if self._failed:
            _log.info("alerts: %s saved again", self.path)
        self._failed = False
        self._saved = data
