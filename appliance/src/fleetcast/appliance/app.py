"""The app factory: ``create_app(settings) -> Litestar``.

Everything the app needs hangs off one :class:`~fleetcast.appliance.runtime.Runtime` in
``app.state.runtime``; the lifespan starts it (model, state restore, loops, READY=1) and
stops it (STOPPING=1, final snapshot). Middleware, outermost first: the access log, the
request metrics, the rate limiter (which answers its own 429s, so the two before it see
them). Body size is capped by Litestar's ``request_max_body_size`` (413). The OpenAPI
schema under ``/schema`` is guarded like every read (``--read-key-required``).

:func:`listen` binds the listening sockets before uvicorn starts, so ``READY=1`` (sent at
the end of the lifespan's start-up) only ever reaches systemd once the port accepts
connections, and a taken port is one clear message instead of uvicorn's bare errno line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from litestar import Litestar, Request, Router
from litestar.datastructures import State
from litestar.exceptions import HTTPException, TooManyRequestsException
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from fleetcast.appliance.access_log import access_log_middleware
from fleetcast.appliance.auth import DENIAL_LOG_FILTER, read_guard
from fleetcast.appliance.controllers import (
    AdminController,
    DemoController,
    HealthController,
    HistoryController,
    MetricsController,
    PredictionsController,
    predictions_socket,
)
from fleetcast.appliance.controllers.metrics import IgnoredFieldWarnings
from fleetcast.appliance.exposition import Telemetry
from fleetcast.appliance.http_errors import exception_handlers
from fleetcast.appliance.notify import Notifier
from fleetcast.appliance.runtime import Runtime
from fleetcast.contract.errors import ContractError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from litestar.types import ASGIApp, Receive, Scope, Send

    from fleetcast.appliance.settings import Settings

__all__ = ["ListenError", "create_app", "listen"]

_log = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048
"""``listen()`` backlog of the pre-bound sockets (uvicorn's default)."""
_SEE_LISTEN = "docs/OPERATIONS.md#configuration"


class ListenError(ContractError):
    """The appliance cannot listen on ``--host``/``--port`` (taken, not allowed, no such address)."""


def listen(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> list[socket.socket]:
    """Bind and ``listen()`` on ``host:port`` the way uvicorn would (every address the host
    resolves to, ``SO_REUSEADDR``, IPv6 sockets v6-only); hand the sockets to
    ``uvicorn.Server.run(sockets=...)``.

    Called before the server starts, so the lifespan's ``READY=1`` comes after the port
    accepts connections (they wait in the backlog until uvicorn serves them). Raises
    :class:`ListenError` with the four parts (which address, why, how to fix, which doc).
    """
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise ListenError(
            f"Cannot listen on {where}: the host {host!r} does not resolve ({exc}).",
            "the appliance would not be reachable, so it does not start.",
            "set --host (FLEETCAST_HOST) to an address of this machine, e.g. 127.0.0.1 or 0.0.0.0.",
            _SEE_LISTEN,
        ) from exc
    sockets: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise _listen_error(where, exc) from exc
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    _log.info("listening on %s", where)
    return sockets


def _listen_error(where: str, exc: OSError) -> ListenError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        port = where.rsplit(":", 1)[1]
        return ListenError(
            f"Cannot listen on {where}: the address is already in use ({reason}).",
            "another process holds that port (often a second appliance or another service); "
            "this appliance would serve nothing, so it stops before telling systemd it is ready.",
            f"stop the other process (`ss -ltnp 'sport = :{port}'` names it) or start this "
            "one on a free port with --port (FLEETCAST_PORT).",
            _SEE_LISTEN,
        )
    if exc.errno == errno.EACCES:
        return ListenError(
            f"Cannot listen on {where}: permission denied ({reason}).",
            "ports below 1024 need privileges the appliance does not have (and should not).",
            "use a port of 1024 or above with --port (FLEETCAST_PORT), e.g. 8000, and put a "
            "reverse proxy in front if clients need port 80/443.",
            _SEE_LISTEN,
        )
    return ListenError(
        f"Cannot listen on {where}: {reason}.",
        "the appliance would not be reachable, so it does not start.",
        "set --host (FLEETCAST_HOST) to an address of this machine (127.0.0.1, 0.0.0.0) and "
        "--port (FLEETCAST_PORT) to a free port.",
        _SEE_LISTEN,
    )


def _rate_limiter(config: RateLimitConfig) -> Callable[[ASGIApp], ASGIApp]:
    """Litestar's rate limiter, answering its own 429 inside the middleware stack.

    ``RateLimitMiddleware`` raises ``TooManyRequestsException``; left to propagate, the
    app's outermost exception handler would answer it past the access log and the request
    metrics, which would then record a 500 with 0 bytes. Here the 429 (four-part body,
    ``RateLimit-*`` headers) goes out through the ``send`` those middlewares count.
    """
    handler = exception_handlers()[HTTPException]

    def build(app: ASGIApp) -> ASGIApp:
        limiter = RateLimitMiddleware(app, config)

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await limiter(scope, receive, send)
            except TooManyRequestsException as exc:
                request: Request[Any, Any, Any] = Request(scope, receive, send)
                response = handler(request, exc)
                await response.to_asgi_response(None, request)(scope, receive, send)

        return middleware

    return build


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
    logging.getLogger("uvicorn.error").addFilter(DENIAL_LOG_FILTER)  # WS 401s: see auth
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

    middleware: list[Any] = [access_log_middleware] if settings.access_log else []
    middleware.append(telemetry.middleware)
    if settings.rate_limit is not None:
        unit, count = settings.rate_limit
        middleware.append(
            _rate_limiter(
                RateLimitConfig(
                    rate_limit=(unit, count),  # type: ignore[arg-type]
                    exclude=["^/health$", "^/schema"],
                )
            )
        )
    openapi = OpenAPIConfig(
        title="fleetcast appliance",
        version=_version(),
        description="Server-fleet health forecasts (docs/API.md).",
        # /schema, /schema/openapi.json, /schema/swagger, ...: a read like any other.
        openapi_router=Router(path="/schema", route_handlers=[], guards=[read_guard]),
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
        state=State({"runtime": runtime, "ignored_fields": IgnoredFieldWarnings()}),
        middleware=middleware,
        exception_handlers=exception_handlers(),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi,
        logging_config=None,
        debug=False,
    )
