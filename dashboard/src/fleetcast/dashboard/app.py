"""Serve the dashboard: ``serve(settings)`` runs Panel's server until interrupted.

Every browser session gets its own :class:`DashboardSession` built from the one Settings
object. Every script, style and font comes from this server (Bokeh's ``server`` resources,
no template, the system font stack): it works air-gapped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import DashboardSettings

__all__ = ["build_session", "serve"]

log = logging.getLogger(__name__)


def build_session(settings: DashboardSettings) -> Any:
    """The page for one browser session (called by Panel once per session)."""
    import panel as pn

    from .session import DashboardSession

    session = DashboardSession(settings, pn.state.curdoc)
    pn.state.onload(session.start)
    pn.state.on_session_destroyed(session.stop)
    return session.view


def serve(settings: DashboardSettings) -> None:
    """Run the dashboard's web server (blocks until interrupted)."""
    import os

    # Bokeh and Panel read the resource mode from here; "server" means: served by this
    # process under /static, never from a CDN.
    os.environ["BOKEH_RESOURCES"] = "server"
    import panel as pn

    from .client import quiet_request_logs

    quiet_request_logs()
    pn.extension(design=None, notifications=False)
    origins = {
        f"{settings.address}:{settings.port}",
        f"localhost:{settings.port}",
        f"127.0.0.1:{settings.port}",
        *settings.allow_websocket_origin,
    }
    url = f"http://{'127.0.0.1' if settings.address == '0.0.0.0' else settings.address}:{settings.port}/"

    def page() -> Any:
        # A plain function: Panel calls it once per browser session.
        return build_session(settings)

    server = pn.serve(
        {"/": page},
        port=settings.port,
        address=settings.address,
        websocket_origin=sorted(origins),
        show=False,
        title="fleetcast",
        start=False,
        threaded=False,
        liveness=True,
    )  # binds the port now: a port in use raises OSError before anything is printed
    log.info("fleetcast dashboard on %s (appliance %s)", url, settings.base_url)
    print(f"fleetcast dashboard: {url}  (appliance {settings.base_url})", flush=True)
    server.start()
    server.io_loop.start()
