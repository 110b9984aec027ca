"""Alert delivery: Alertmanager's ``/api/v2/alerts`` and a generic JSON webhook.

The engine computes alerts with every forecast set (``Engine.alerts()``, docs/API.md
``/alerts/active``). :class:`AlertPusher` turns them into Alertmanager alerts:

- labels ``alertname`` (``FleetcastForecastRisk``), ``server``, ``profile``, ``metric``,
  ``horizon``, ``severity`` — the identity of an alert. Each engine alert is a
  ``severity="warning"`` alert for as long as it is raised, and while it is critical also a
  ``severity="critical"`` one (:func:`alertmanager_alerts`): a severity change fires or
  resolves the critical alert and leaves the warning one firing;
- annotations ``summary``, ``description``, ``predicted_value`` (p50), ``predicted_p90``,
  ``threshold``, ``probability``, ``unit``, ``at`` (when the peak is predicted),
  ``data_time`` (the data the forecast read), and for the alert of a server no longer
  forecast (its data stopped) ``stale`` with a summary that says so — the same labels, so
  the same alert: it is not resolved for lack of data (docs/RISK.md#alerts);
- ``startsAt`` = when the engine first raised it; ``endsAt`` = now + ``ends_after_s`` while
  firing (re-sent every ``resend_s``, so an appliance that dies lets its alerts expire),
  and = now once the alert is gone from the forecast: Alertmanager marks it resolved. A
  forgotten server's alerts leave the served set at once (``DELETE /servers/...``,
  ``forget_after``), so the next push resolves them like any alert that is gone.

Deliveries are retried with backoff; resolutions that could not be delivered are kept
and sent again with the next push, so no resolution is lost while the receiver is down.
The webhook receives only changes: ``{"version": "1", "source": "fleetcast", "status",
"alerts": [{"status": "firing"|"resolved", "labels", "annotations", "startsAt",
"endsAt"}]}`` (the shape of Alertmanager's own webhook). See docs/PROMETHEUS.md#alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import math
import pathlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from fleetcast.appliance.alert_format import (
    ALERTNAME,
    alert_labels,
    alertmanager_alerts,
    firing_alert,
    forecasts_stale_alert,
    rfc3339,
    webhook_body,
)
from fleetcast.appliance.alerting_state import STATE_FILE, StateFile
from fleetcast.appliance.sources.backoff import Backoff
from fleetcast.appliance.urls import REDIRECTS, opener, redirect_target, shown, split_credentials

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from fleetcast.appliance.runtime import Runtime

__all__ = [
    "ALERTNAME",
    "AlertPusher",
    "AlertingConfig",
    "DeliveryError",
    "alert_labels",
    "alertmanager_alerts",
    "firing_alert",
    "post_json",
    "rfc3339",
    "webhook_body",
]

_log = logging.getLogger(__name__)

_SEE = "docs/PROMETHEUS.md#alerts"

Key = tuple[tuple[str, str], ...]


class DeliveryError(RuntimeError):
    """A receiver did not accept a POST (unreachable, timeout, non-2xx)."""


def post_json(url: str, payload: Any, timeout_s: float) -> int:
    """POST ``payload`` as JSON (blocking); returns the status. Raises DeliveryError for
    every failure to build or send the request (the message is the bare cause).

    ``user:password@`` in ``url`` is sent as HTTP Basic auth; messages show the URL without
    it, its path, query or fragment (a webhook's path may be its token).
    """
    target, auth = split_credentials(url)
    where = shown(url, path=False)
    try:
        data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        request = urllib.request.Request(
            target,
            data=data,
            headers={"Content-Type": "application/json", **auth},
            method="POST",
        )
        with opener().open(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        if exc.code in REDIRECTS:  # not followed: urllib would re-send the POST as a GET
            raise DeliveryError(
                f"{where} redirects to {redirect_target(exc.headers)} (HTTP {exc.code}); "
                "set the receiver's URL to the one it redirects to"
            ) from exc
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise DeliveryError(f"{where} answered HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"cannot reach {where} ({getattr(exc, 'reason', exc)})") from exc
    except (http.client.HTTPException, ValueError, TypeError) as exc:
        # InvalidURL (a port that is not a number), BadStatusLine (not an HTTP server),
        # IncompleteRead, a payload json cannot encode.
        raise DeliveryError(f"cannot post to {where} ({_one_line(exc)})") from exc


def _key(item: Mapping[str, Any]) -> Key:
    """The identity of an Alertmanager alert: its sorted labels."""
    return tuple(sorted(item["labels"].items()))


def _escalated(key: Key, active: Mapping[Key, Any]) -> bool:
    """Whether ``key`` is a critical alert whose warning twin was already firing."""
    labels = dict(key)
    if labels.get("severity") != "critical":
        return False
    return _key({"labels": {**labels, "severity": "warning"}}) in active


def _latest_per_alert(changes: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict]]:
    """The newest change of each alert, in the order of those changes: undelivered webhook
    changes stay bounded by the alerts (not the pushes) while the receiver is down, and a
    flapping alert is one change, not one per forecast."""
    latest: dict[Key, int] = {}
    for i, (_, item) in enumerate(changes):
        key = _key(item)
        latest.pop(key, None)
        latest[key] = i
    return [changes[i] for i in latest.values()]


def _one_line(exc: BaseException) -> str:
    """``Type: text`` of an exception on one line, cut to 200 characters."""
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class AlertingConfig:
    """Where and how alerts are delivered (built from the appliance's Settings)."""

    alertmanager_url: str | None = None
    """Alertmanager's base URL (``http://host:9093``); alerts go to ``/api/v2/alerts``."""
    webhook_url: str | None = None
    """A URL that receives every change (firing/resolved) as JSON."""
    resend_s: float = 60.0
    """Firing alerts are re-sent this often (Alertmanager expects it) even without a change."""
    ends_after_s: float | None = None
    """endsAt of a firing alert, seconds after each send; None = 4 × ``resend_s``."""
    timeout_s: float = 10.0
    """HTTP timeout per delivery."""
    attempts: int = 3
    """Tries per delivery (with backoff) before it waits for the next push."""
    retry_initial_s: float = 1.0
    """First delay between tries."""
    generator_url: str | None = None
    """Base URL of this appliance for each alert's ``generatorURL`` (None: left out)."""
    poll_s: float = 0.25
    """How often the loop looks for a new forecast set."""
    stale_after_s: float = 1200.0
    """No new forecast set for this long (wall clock) fires ``FleetcastForecastsStale``, as
    the Prometheus rule of that name does (docs/PROMETHEUS.md#alerts)."""

    @classmethod
    def from_settings(cls, settings: Any) -> AlertingConfig:
        """The config from Settings (``alertmanager_url``, ``webhook_url``, ``alert_resend_s``)."""
        resend = getattr(settings, "alert_resend_s", None)
        return cls(
            alertmanager_url=getattr(settings, "alertmanager_url", None) or None,
            webhook_url=getattr(settings, "webhook_url", None) or None,
            resend_s=float(resend) if resend else 60.0,
        )

    @property
    def enabled(self) -> bool:
        """True when at least one receiver is configured."""
        return bool(self.alertmanager_url or self.webhook_url)


@dataclass
class _Receiver:
    name: str
    url: str
    sent: int = 0
    failed: int = 0
    last_error: str | None = None
    last_success: float | None = None
    pending: list[Any] = field(default_factory=list)
    """Items not delivered yet: resolved alerts (Alertmanager), (status, alert) changes (webhook)."""


class AlertPusher:
    """Pushes the engine's alerts to Alertmanager and/or a webhook after each forecast set.

    ``sender(url, payload, timeout_s)`` defaults to :func:`post_json` (tests may record).
    ``state_path``: where the firing alerts and undelivered changes are kept across
    restarts (:mod:`~fleetcast.appliance.alerting_state`; None: in memory only).
    """

    def __init__(
        self,
        runtime: Runtime | None,
        config: AlertingConfig,
        clock: Callable[[], float] = time.time,
        sender: Callable[[str, Any, float], int] = post_json,
        state_path: pathlib.Path | None = None,
    ) -> None:
        self._runtime = runtime
        self.config = config
        self._clock = clock
        self._send = sender
        self._active: dict[Key, dict[str, Any]] = {}
        self._state_file = StateFile(state_path) if state_path is not None else None
        self._task: asyncio.Task[None] | None = None
        self._unexpected_logged: set[str] = set()
        self.am = (
            _Receiver("alertmanager", config.alertmanager_url.rstrip("/") + "/api/v2/alerts")
            if config.alertmanager_url
            else None
        )
        self.webhook = _Receiver("webhook", config.webhook_url) if config.webhook_url else None

    @classmethod
    def from_settings(cls, runtime: Runtime, settings: Any) -> AlertPusher | None:
        """A pusher when Settings name a receiver, else None."""
        config = AlertingConfig.from_settings(settings)
        if not config.enabled:
            return None
        state_dir = getattr(settings, "state_dir", None)
        path = pathlib.Path(state_dir) / STATE_FILE if state_dir is not None else None
        return cls(runtime, config, state_path=path)

    @property
    def receivers(self) -> list[_Receiver]:
        """The configured receivers."""
        return [r for r in (self.am, self.webhook) if r is not None]

    @property
    def firing(self) -> int:
        """Alerts currently firing (as last computed)."""
        return len(self._active)

    # -- the diff ------------------------------------------------------------------------
    def update(
        self, alerts: Iterable[Mapping[str, Any]], own: Iterable[dict[str, Any]] = ()
    ) -> tuple[list[dict], list[dict], list[dict]]:
        """Diff the engine's current ``alerts`` (and ``own``, the appliance's alerts about
        itself, already Alertmanager alerts) against the last call.

        Returns ``(firing, new, resolved)`` Alertmanager alerts: every firing one (with a
        fresh endsAt), the subset that is new, and those gone since the last call (endsAt
        = now). Pure bookkeeping, no I/O.
        """
        now = self._clock()
        ends = self.config.ends_after_s or 4 * self.config.resend_s
        current: dict[Key, dict[str, Any]] = {}
        items = [
            item
            for a in alerts
            for item in alertmanager_alerts(a, now, ends, self.config.generator_url)
        ]
        for item in [*items, *own]:
            key = _key(item)
            old = self._active.get(key)
            if old is not None:
                # Still the same alert (e.g. across a restart, where the engine's first
                # forecast raises it anew, or a critical one whose start is when it became
                # critical, not the engine's since): it keeps the start the receivers were told.
                item["startsAt"] = old["startsAt"]
            elif old is None and _escalated(key, self._active):
                # A warning gone critical: the critical alert starts now, not when the
                # engine first raised the warning (its ``since``).
                item["startsAt"] = rfc3339(now)
            current[key] = item
        new = [a for k, a in current.items() if k not in self._active]
        resolved = []
        for key, old in self._active.items():
            if key not in current:
                resolved.append({**old, "endsAt": rfc3339(now)})
        self._active = current
        return list(current.values()), new, resolved

    # -- delivery ------------------------------------------------------------------------
    async def _deliver(self, receiver: _Receiver, payload: Any) -> bool:
        backoff = Backoff(self.config.retry_initial_s, 30.0, jitter=0.1)
        for attempt in range(max(1, self.config.attempts)):
            try:
                await anyio.to_thread.run_sync(
                    self._send, receiver.url, payload, self.config.timeout_s, abandon_on_cancel=True
                )
            except Exception as exc:  # any failure of a try is counted and retried
                receiver.failed += 1
                cause = str(exc) if isinstance(exc, DeliveryError) else _one_line(exc)
                if receiver.last_error is None:
                    _log.warning(
                        "alerts to %s failed: %s. Why it matters: the undelivered alert "
                        "changes are kept and retried (%d tries now, then with the next push "
                        "or re-send every %g s) until the receiver accepts them. Fix: check "
                        "that the receiver is up and that --%s-url is right. See %s.",
                        receiver.name,
                        cause,
                        max(1, self.config.attempts),
                        self.config.resend_s,
                        receiver.name,
                        _SEE,
                    )
                receiver.last_error = cause
                if attempt + 1 < self.config.attempts:
                    await asyncio.sleep(backoff.next_delay())
                continue
            receiver.sent += 1
            receiver.last_success = self._clock()
            if receiver.last_error is not None:
                _log.info("alerts to %s delivered again", receiver.name)
            receiver.last_error = None
            return True
        return False

    async def push(
        self, alerts: Iterable[Mapping[str, Any]], own: Iterable[dict[str, Any]] = ()
    ) -> None:
        """Diff ``alerts`` (+ ``own``) and deliver: Alertmanager gets all firing + resolved,
        the webhook the changes, both at once (a receiver timing out must not hold the other's
        alerts back for its retries). Undelivered items wait for the next push."""
        firing, new, resolved = self.update(alerts, own)
        await asyncio.gather(
            self._push_alertmanager(firing, resolved), self._push_webhook(new, resolved)
        )
        await self._save()

    async def _push_alertmanager(self, firing: list[dict], resolved: list[dict]) -> None:
        if self.am is None:
            return
        self.am.pending = [p for p in self.am.pending if _key(p) not in self._active]
        payload = firing + self.am.pending + resolved
        if payload:
            ok = await self._deliver(self.am, payload)
            self.am.pending = [] if ok else self.am.pending + resolved

    async def _push_webhook(self, new: list[dict], resolved: list[dict]) -> None:
        if self.webhook is None:
            return
        changes = (
            self.webhook.pending
            + [("firing", a) for a in new]
            + [("resolved", a) for a in resolved]
        )
        if changes:
            body = webhook_body([a for _, a in changes], [s for s, _ in changes])
            ok = await self._deliver(self.webhook, body)
            self.webhook.pending = [] if ok else _latest_per_alert(changes)

    def _own(self, silent_s: float, fs: Any) -> list[dict[str, Any]]:
        """The appliance's alerts about itself: ``FleetcastForecastsStale`` once no new
        forecast set came for ``stale_after_s``; resolved by the next one. None while the
        served set holds no server (all forgotten: nothing to forecast)."""
        after = self.config.stale_after_s
        if silent_s <= after or not fs.servers:
            return []
        ends = self.config.ends_after_s or 4 * self.config.resend_s
        return [forecasts_stale_alert(silent_s, after, self._clock(), ends, fs.data_time)]

    # -- state across restarts (alerting_state.py) ---------------------------------------
    def restore(self) -> None:
        """Load what the receivers were told before a restart (blocking; no file: no-op)."""
        state = self._state_file.load() if self._state_file is not None else None
        if state is None:
            return
        self._active = {_key(item): item for item in state.active}
        if self.am is not None:
            self.am.pending = list(state.alertmanager_pending)
        if self.webhook is not None:
            self.webhook.pending = [(s, a) for s, a in state.webhook_pending]

    async def _save(self) -> None:
        if self._state_file is not None:
            await self._state_file.save(
                # endsAt changes with every re-send; a resolution sets its own.
                active=[
                    {k: v for k, v in a.items() if k != "endsAt"} for a in self._active.values()
                ],
                alertmanager_pending=list(self.am.pending) if self.am is not None else [],
                webhook_pending=list(self.webhook.pending) if self.webhook is not None else [],
            )

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the push loop (it follows the runtime's forecast sets)."""
        if self._task is not None or self._runtime is None:
            return
        await anyio.to_thread.run_sync(self.restore)
        self._task = asyncio.create_task(self._run(), name="fleetcast-alert-pusher")
        _log.info("alerts: pushing to %s", ", ".join(r.name for r in self.receivers))

    async def stop(self) -> None:
        """Stop the loop (idempotent). Firing alerts are left to expire at their endsAt."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        """Push after each change of the served set — a new forecast set, or servers
        forgotten from it — (checked every ``poll_s``) and every ``resend_s``."""
        runtime = self._runtime
        if runtime is None:
            return
        seen = made = -1
        last_push = changed = -math.inf
        while True:
            engine = runtime.engine
            sets = runtime.current_changes
            due = sets != seen or time.monotonic() - last_push >= self.config.resend_s
            if due and engine is not None and (fs := engine.current()) is not None:
                # A new forecast set restarts the stale clock; a forget changes the served
                # set (current_changes) without one, and must not resolve the stale alert.
                if (forecasts := runtime.forecast_sets) != made:
                    made, changed = forecasts, time.monotonic()
                seen, last_push = sets, time.monotonic()
                try:
                    await self.push(engine.alerts(), self._own(last_push - changed, fs))
                except Exception as exc:
                    # A bug (deliveries catch their own failures): traceback once per type.
                    kind = type(exc).__qualname__
                    if kind not in self._unexpected_logged:
                        self._unexpected_logged.add(kind)
                        _log.error(
                            "alert push failed unexpectedly (%s). Why it matters: alerts of "
                            "this forecast set may not reach the receivers. Fix: report it "
                            "with this traceback (logged once). See %s.",
                            _one_line(exc),
                            _SEE,
                            exc_info=exc,
                        )
                    else:
                        _log.debug("alert push failed again: %s", _one_line(exc))
            await asyncio.sleep(self.config.poll_s)

    def status(self) -> dict[str, Any]:
        """Delivery counters per receiver (for /metrics and logs)."""
        return {
            "firing": self.firing,
            "receivers": {
                r.name: {
                    "sent": r.sent,
                    "failed": r.failed,
                    "pending": len(r.pending),
                    "last_error": r.last_error,
                }
                for r in self.receivers
            },
        }
