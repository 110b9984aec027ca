"""One browser session's view of the appliance: the last data it sent and the link's health.

Pure Python (no Panel), so the stale-marking rules are unit-tested without a browser. The
codex allows exactly one fallback when the appliance is unreachable: keep showing the last
data it sent, clearly marked STALE. Nothing here fabricates or extrapolates a forecast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .api import parse_time

if TYPE_CHECKING:
    from .api import (
        Alert,
        CurrentPredictions,
        FleetHistory,
        ServerDetail,
        ServerHistory,
        TrackedServer,
    )
    from .status import StatusInfo

__all__ = ["CONNECTING", "DISCONNECTED", "LIVE", "POLLING", "REFUSED", "SessionState"]

CONNECTING = "connecting"
"""No answer yet from the appliance (the first refresh is under way)."""

LIVE = "connected (live)"
"""The appliance answers and pushes forecasts over /ws/predictions."""

POLLING = "connected (polling)"
"""The appliance answers; forecasts are fetched every refresh (WebSocket unavailable)."""

DISCONNECTED = "disconnected"
"""The last request failed; every panel shows the last data, marked STALE."""

REFUSED = "refused"
"""The appliance answers but refused the last refresh (a 4xx: a key it now requires, its
rate limit; or an answer this version cannot read): nothing on screen is being updated, so
every panel shows the last data, marked STALE, with the appliance's reason."""

_FAILED = (DISCONNECTED, REFUSED)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class SessionState:
    """What one browser session knows. Mutated only by that session's refresh loop."""

    connection: str = CONNECTING
    """One of CONNECTING, LIVE, POLLING, DISCONNECTED, REFUSED."""

    last_error: str | None = None
    """Why the last refresh failed (shown under the header while disconnected or refused)."""

    last_contact: datetime | None = None
    """Wall-clock time the appliance last answered (UTC)."""

    disconnected_since: datetime | None = None
    """Wall-clock time of the first failed refresh of the current outage or refusal (UTC)."""

    current: CurrentPredictions | None = None
    """The latest forecast set; kept through an outage, never altered."""

    status: StatusInfo | None = None
    fleet_history: FleetHistory | None = None
    alerts: list[Alert] = field(default_factory=list)
    unforecast: list[TrackedServer] = field(default_factory=list)
    """Tracked servers without a forecast (stale, ahead, warming): the heatmap's grey cells."""

    details: dict[str, ServerDetail] = field(default_factory=dict)
    """``/predictions/{name}`` bodies of the current forecast set, by server name."""

    histories: dict[str, ServerHistory] = field(default_factory=dict)
    """``/history/{name}`` bodies fetched with the current forecast set, by server name."""

    unavailable: dict[str, str] = field(default_factory=dict)
    """Servers of the current set whose curves the appliance refused, with its reason."""

    selected_server: str | None = None
    """The server whose detail is open (from a heatmap click); survives refreshes."""

    @property
    def has_data(self) -> bool:
        """True once a forecast set has arrived."""
        return self.current is not None

    @property
    def stale(self) -> bool:
        """True while disconnected or refused with data on screen: it must be marked STALE."""
        return self.connection in _FAILED and self.has_data

    @property
    def prediction_time(self) -> datetime | None:
        """Time of the forecast on screen (the appliance's ``prediction_time``)."""
        if self.current is None:
            return None
        return parse_time(self.current.prediction_time)

    def thresholds_for(self, profile: str) -> dict[str, float]:
        """Thresholds per metric for ``profile`` from the last ``/status`` (empty before it)."""
        return self.status.thresholds_for(profile) if self.status is not None else {}

    def mark_ok(self, websocket: bool, now: datetime | None = None) -> None:
        """Record a successful exchange; ``websocket`` says whether pushes are flowing."""
        self.connection = LIVE if websocket else POLLING
        self.last_contact = now or _utcnow()
        self.last_error = None
        self.disconnected_since = None

    def mark_failed(self, error: str, now: datetime | None = None, refused: bool = False) -> None:
        """Record a failed refresh: disconnected (or ``refused``), data kept and marked stale."""
        if self.connection not in _FAILED:
            self.disconnected_since = now or _utcnow()
        self.connection = REFUSED if refused else DISCONNECTED
        self.last_error = error

    def accept(self, current: CurrentPredictions) -> bool:
        """Take a new forecast set; returns True when it differs from the one on screen.

        Per-server curves and histories belong to one forecast set, so any other set drops
        them, also one with the same ``prediction_time``: a model reloaded (``POST
        /admin/reload``) or an appliance restarted on the same data forecasts the same step
        again with other numbers, and the curves of the old set would stay on screen.
        """
        changed = self.current is None or current != self.current
        if changed:
            self.details = {}
            self.histories = {}
            self.unavailable = {}
            self.current = current
        return changed

    def headline(self, now: datetime | None = None) -> str:
        """The always-visible status line, e.g. ``connected (live) · last forecast 10:05:00 UTC``."""
        now = now or _utcnow()
        forecast = self.prediction_time
        when = forecast.strftime("%Y-%m-%d %H:%M:%S UTC") if forecast else "none yet"
        parts = [self.connection, f"last forecast {when}"]
        if self.stale and self.last_contact is not None:
            age = int((now - self.last_contact).total_seconds())
            parts.append(f"STALE: last refreshed {age} s ago")
        elif self.connection in _FAILED:
            parts.append("no data received yet")
        return " · ".join(parts)
