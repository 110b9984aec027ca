"""The dashboard's one Settings object, built once by the CLI and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DashboardSettings"]


@dataclass(frozen=True)
class DashboardSettings:
    """Everything the dashboard is configured with; nothing is read from the environment later."""

    appliance_url: str = "http://127.0.0.1:8000"
    """Base URL of the appliance's HTTP API (docs/API.md)."""

    port: int = 5006
    """TCP port the dashboard listens on."""

    address: str = "127.0.0.1"
    """Address the dashboard binds to; 0.0.0.0 exposes it on every interface."""

    api_key: str | None = field(default=None, repr=False)
    """Sent as ``X-API-Key`` on every request (needed for the demo buttons under systemd).
    From ``--api-key`` / ``--api-key-file``, else ``$FLEETCAST_API_KEY`` /
    ``$FLEETCAST_API_KEY_FILE`` (a key file is read once, at start). Never shown in repr."""

    refresh_seconds: float = 5.0
    """How often each browser session polls the appliance (WebSocket pushes come sooner)."""

    request_timeout_s: float = 3.0
    """Timeout of one HTTP request; after it the appliance counts as unreachable."""

    keepalive_expiry_s: float = 2.0
    """Idle pooled connections are closed after this; below any usual server keep-alive (5 s)."""

    top_servers: int = 3
    """How many of the riskiest servers the Top Servers panel shows with curves."""

    trend_steps: int = 288
    """Steps of fleet risk trend on the Overview (288 = 24 h at 5-minute steps)."""

    use_websocket: bool = True
    """Listen on ``/ws/predictions`` for pushes; polling alone when False or when it fails."""

    allow_websocket_origin: tuple[str, ...] = ()
    """Extra ``host:port`` origins allowed to open the dashboard (behind a proxy)."""

    @property
    def base_url(self) -> str:
        """``appliance_url`` without a trailing slash."""
        return self.appliance_url.rstrip("/")

    @property
    def websocket_url(self) -> str:
        """``ws://…/ws/predictions`` (``wss://`` for an https appliance)."""
        base = self.base_url
        if base.startswith("https://"):
            return "wss://" + base[len("https://") :] + "/ws/predictions"
        if base.startswith("http://"):
            return "ws://" + base[len("http://") :] + "/ws/predictions"
        return base + "/ws/predictions"
