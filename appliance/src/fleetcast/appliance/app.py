"""The app factory: ``create_app(settings) -> Litestar``.

Everything the app needs hangs off one :class:`~fleetcast.appliance.runtime.Runtime` in
``app.state.runtime``; the lifespan starts it (model, state restore, loops, READY=1) and
stops it (STOPPING=1, final snapshot). Middleware, outermost first: the access log, the
rate limiter. Body size is capped by Litestar's ``request_max_body_size`` (413).
"""

from __future__ import annotations

import contextlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from fleetcast.appliance.access_log import access_log_middleware
from fleetcast.appliance.controllers import (
    AdminController,
    DemoController,
    HealthController,
    HistoryController,
    MetricsController,
    PredictionsController,
    predictions_socket,
)
from fleetcast.appliance.exposition import Telemetry
from fleetcast.appliance.http_errors import exception_handlers
from fleetcast.appliance.notify import Notifier
from fleetcast.appliance.runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fleetcast.appliance.settings import Settings

__all__ = ["create_app"]


def _version() -> str:
    try:
        return version("fleetcast-appliance")
    except PackageNotFoundError:  # pragma: no cover - source checkout without install
        return "0"


def create_app(settings: Settings, notifier: Notifier | None = None) -> Litestar:
    """Build the appliance's Litestar app. Nothing is loaded until the lifespan starts.

    ``notifier`` defaults to one built from ``$NOTIFY_SOCKET``/``$WATCHDOG_USEC``.
    """
    runtime = Runtime(settings, notifier or Notifier.from_env())
    telemetry = Telemetry.from_settings(runtime, settings)  # GET /metrics, pull source, alerts

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await runtime.start()
        await telemetry.start()
        try:
            yield
        finally:
            await telemetry.stop()
            await runtime.stop()

    middleware = [access_log_middleware] if settings.access_log else []
    middleware.append(telemetry.middleware)
    if settings.rate_limit is not None:
        unit, count = settings.rate_limit
        middleware.append(
            RateLimitConfig(
                rate_limit=(unit, count),  # type: ignore[arg-type]
                exclude=["^/health$", "^/schema"],
            ).middleware
        )
    openapi = OpenAPIConfig(
        title="fleetcast appliance",
        version=_version(),
        description="Server-fleet health forecasts (docs/API.md).",
        path="/schema",
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(
                    type="apiKey", name="X-API-Key", security_scheme_in="header"
                )
            }
        ),
        security=[{"apiKey": []}],
    )
    return Litestar(
        route_handlers=[
            HealthController,
            PredictionsController,
            HistoryController,
            MetricsController,
            AdminController,
            DemoController,
            predictions_socket,
            telemetry.route(),
        ],
        lifespan=[lifespan],
        state=State({"runtime": runtime}),
        middleware=middleware,
        exception_handlers=exception_handlers(),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi,
        logging_config=None,
        debug=False,
    )
