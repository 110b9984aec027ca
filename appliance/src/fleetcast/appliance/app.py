"""The app factory: ``create_app(settings) -> Litestar``.

Everything the app needs hangs off one :class:`~fleetcast.appliance.runtime.Runtime` in
``app.state.runtime``; the lifespan starts it (model, state restore, loops, READY=1) and
stops it (STOPPING=1, final snapshot). Every request passes, outermost first and *before*
Litestar's router (so an unknown path or a wrong method, answered 404/405 by the router,
is seen too; Litestar's own middleware only runs for matched routes): the access log, the
request metrics (route ``unmatched`` when the router matches nothing), the rate limiter
and the Host check, the last two answering their own 429/400 so the two before them see
those. Body size is capped by Litestar's ``request_max_body_size`` (413). The OpenAPI
schema under ``/schema`` is guarded like every read (``--read-key-required``).

The Host check (Litestar's :class:`AllowedHostsConfig`, :func:`allowed_hosts`) refuses a
request addressed to a name the appliance does not answer to: bound to loopback, only
``localhost``/``127.0.0.1``/``[::1]``, so a web page cannot read the API through DNS
rebinding (docs/OPERATIONS.md#cross-site-requests).

:func:`listen` binds the listening sockets before uvicorn starts, so ``READY=1`` (sent at
the end of the lifespan's start-up) only ever reaches systemd once the port accepts
connections, and a taken port is one clear message instead of uvicorn's bare errno line.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import math
import socket
import time
import urllib.parse
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import anyio
from litestar import Litestar, Router
from litestar.config.allowed_hosts import AllowedHostsConfig
from litestar.datastructures import Headers, State
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, TooManyRequestsException
from litestar.middleware.allowed_hosts import AllowedHostsMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.utils import normalize_path

from fleetcast.appliance.access_log import access_log_middleware
from fleetcast.appliance.auth import DENIAL_LOG_FILTER, deny_websocket, read_guard
from fleetcast.appliance.controllers import (
    AdminController,
    DemoController,
    HealthController,
    HistoryController,
    MetricsController,
    PredictionsController,
    ServersController,
    predictions_socket,
)
from fleetcast.appliance.controllers.metrics import IgnoredFieldWarnings
from fleetcast.appliance.exposition import Telemetry
from fleetcast.appliance.http_cache import head_as_get
from fleetcast.appliance.http_errors import CROSS_SITE_DOC, ApiError, exception_handlers, send_error
from fleetcast.appliance.notify import Notifier
from fleetcast.appliance.query_params import ANY_QUERY, QUERY_OPT, query_guard
from fleetcast.appliance.runtime import Runtime
from fleetcast.contract.errors import ContractError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from litestar.connection import Request
    from litestar.types import ASGIApp, Receive, Scope, Send

    from fleetcast.appliance.settings import Settings

__all__ = ["LOOPBACK_HOSTS", "ListenError", "allowed_hosts", "create_app", "is_loopback", "listen"]

_log = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048
"""``listen()`` backlog of the pre-bound sockets (uvicorn's default)."""
_SEE_LISTEN = "docs/OPERATIONS.md#configuration"
RATE_LIMIT_PURGE_EVERY = 1024
"""Requests between two sweeps of the expired entries out of the rate limiter's store (and
at least one rate-limit window: no entry expires sooner)."""
_WINDOW_S = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""The names a loopback-bound appliance answers to when ``allowed_hosts`` is not set."""


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
    # Not "listening" yet: the model and the state load next, and may refuse the start;
    # the runtime logs "ready … serving on" once requests are answered.
    _log.info("bound %s (starting)", where)
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


def is_loopback(host: str) -> bool:
    """Whether ``--host`` is a loopback address (or ``localhost``)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(name: str) -> str:
    """``name`` as a ``Host`` header names it, without a port: lower case, an IPv6 address
    bracketed (``::1``, ``[::1]`` and ``[::1]:8000`` are all ``[::1]``)."""
    name = name.strip().lower()
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(name.strip("[]")).version == 6:
            return f"[{name.strip('[]')}]"
    if name.startswith("["):  # [v6]:port
        return name[: name.find("]") + 1]
    return name.rsplit(":", 1)[0] if name.count(":") == 1 else name


def allowed_hosts(settings: Settings) -> tuple[str, ...]:
    """The ``Host`` header values the appliance answers, for Litestar's AllowedHostsConfig.

    ``settings.allowed_hosts``, or when it is None the loopback names (plus ``--host``)
    when bound to a loopback address and ``("*",)`` (any) otherwise; ``*`` among them
    means any. Names only: the port is not compared (a rebinding page differs by its name;
    an SSH tunnel or a proxy may use any port). ``*.example.com`` covers the subdomains.
    """
    names = settings.allowed_hosts
    if names is None:
        if not is_loopback(settings.host):
            return ("*",)
        names = (*LOOPBACK_HOSTS, settings.host)
    if "*" in names:
        return ("*",)
    return tuple(dict.fromkeys(_host_name(raw) for raw in names))


def _mark_route(scope: Scope) -> None:
    """Put the route template into ``scope`` for an answer given before routing (429, a
    refused host), so the request metrics label it like the router would; unknown path
    or method: left out (``unmatched``). Litestar's own (cached) routing function."""
    path = scope["path"]
    if root := scope.get("root_path", ""):
        path = path.split(root, maxsplit=1)[-1]
    with contextlib.suppress(HTTPException):  # NotFound / MethodNotAllowed: unmatched
        router = scope["litestar_app"].asgi_router
        scope["path_template"] = router.handle_routing(normalize_path(path), scope.get("method"))[4]


class _HostCheck(AllowedHostsMiddleware):
    """Litestar's Host check (the regex its :class:`AllowedHostsConfig` makes), answering a
    refused host with the four-part 400 of every other error instead of Litestar's
    ``{"message": "invalid host header"}``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pattern = self.allowed_hosts_regex
        host = Headers.from_scope(scope).get("host")
        # As Litestar does, but on the name alone (any port) and case-insensitive like host
        # names (curl sends them as typed).
        name = _host_name(host) if host else ""
        if pattern is None or (name and pattern.fullmatch(name)):
            await self.app(scope, receive, send)
            return
        _mark_route(scope)
        sent = "no Host header" if host is None else f"the Host {host[:100]!r}"
        error = ApiError(
            400,
            "host not allowed",
            f"the request is addressed to a name this appliance does not answer to ({sent}); "
            "it answers only its configured names, so a web page cannot reach it under a "
            "name of its own (DNS rebinding)",
            "address the appliance by an allowed name (bound to loopback: localhost, "
            "127.0.0.1 or [::1]), or add the name clients use to "
            "allowed_hosts (FLEETCAST_ALLOWED_HOSTS; * = any)",
            CROSS_SITE_DOC,
        )
        if scope["type"] == ScopeType.WEBSOCKET:  # a refused handshake: HTTP 400, no upgrade
            await deny_websocket(scope, receive, send, error)
            return
        await send_error(error, scope, receive, send)


class _ClientRateLimit(RateLimitMiddleware):
    """Litestar's rate limiter keyed by the client alone: it runs before routing, where
    Litestar's key (which reads the matched route handler) cannot be made."""

    def cache_key_from_request(self, request: Request[Any, Any, Any]) -> str:
        return f"{type(self).__name__}::{self.get_identifier_for_request(request)}"


def _rate_limiter(config: RateLimitConfig) -> Callable[[ASGIApp], ASGIApp]:
    """Litestar's rate limiter, answering its own 429 inside the middleware stack.

    ``RateLimitMiddleware`` raises ``TooManyRequestsException``; left to propagate, it
    would escape the app (the limiter runs before Litestar's exception handling) and the
    access log and the request metrics would record a 500 with 0 bytes. Here the 429
    (four-part body, ``RateLimit-*`` headers) goes out through the ``send`` they count.

    Every :data:`RATE_LIMIT_PURGE_EVERY` requests, at most once per rate-limit window, the
    expired entries are deleted from the limiter's store: Litestar's memory store drops an expired entry only when its own
    client comes back, so every address ever seen stayed (~320 bytes each; clients
    rotating through an IPv6 prefix grew the process without bound).
    """

    def build(app: ASGIApp) -> ASGIApp:
        limiter = _ClientRateLimit(app, config)
        purge_every = RATE_LIMIT_PURGE_EVERY
        window_s = _WINDOW_S.get(config.rate_limit[0], 60.0)
        seen = [0]
        swept = [-math.inf]  # monotonic time of the last sweep

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            seen[0] += 1
            # The sweep holds the store's lock while it walks every entry: at most once per
            # window (nothing expires sooner) and per RATE_LIMIT_PURGE_EVERY requests.
            if seen[0] >= purge_every and time.monotonic() - swept[0] >= window_s:
                seen[0] = 0
                swept[0] = time.monotonic()
                try:
                    await config.get_store_from_app(scope["litestar_app"]).delete_expired()
                except Exception as exc:  # never the request's failure; retried next window
                    _log.warning(
                        "could not sweep the rate limiter's expired entries (%s: %s)",
                        type(exc).__name__,
                        exc,
                    )
            try:
                await limiter(scope, receive, send)
            except TooManyRequestsException as exc:
                _mark_route(scope)
                await send_error(exc, scope, receive, send)

        return middleware

    return build


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _cross_origin(scope: Scope) -> str | None:
    """The ``Origin`` of a browser request sent from another site, else None.

    Browsers name the page's origin on every cross-site POST and WebSocket handshake; the
    appliance's clients (curl, the dashboard's server, Prometheus) send none. An origin is
    the appliance's own when its ``host[:port]`` is the request's ``Host`` (the API docs
    under /schema); ``null`` (a sandboxed page, a file) is never."""
    if scope["type"] == "http" and scope.get("method", "GET") in _SAFE_METHODS:
        return None
    headers = Headers.from_scope(scope)
    origin = headers.get("origin")
    if origin is None:
        return None
    with contextlib.suppress(ValueError):
        if urllib.parse.urlsplit(origin).netloc.lower() == (headers.get("host") or "").lower():
            return None
    return origin


def _origin_check(app: ASGIApp) -> ASGIApp:
    """Refuse a cross-site write (POST, DELETE, any method but GET, HEAD and OPTIONS) or
    WebSocket (:func:`_cross_origin`): 403 over HTTP, a
    refused handshake (HTTP 403) for a WebSocket. A page in an operator's browser could
    otherwise post metrics, reload the model or read the forecast stream of a keyless
    appliance (docs/OPERATIONS.md#cross-site-requests)."""

    async def guard(scope: Scope, receive: Receive, send: Send) -> None:
        origin = _cross_origin(scope) if scope["type"] in ("http", "websocket") else None
        if origin is None:
            if scope["type"] == "websocket" and scope.get("path") not in WEBSOCKET_PATHS:
                # Litestar closes such a handshake unanswered: uvicorn's empty text/plain 403,
                # which reads like a refused key.
                await deny_websocket(scope, receive, send, _no_websocket(scope))
                return
            await app(scope, receive, send)
            return
        error = ApiError(
            403,
            "cross-site request refused",
            f"the request comes from a web page of another site (Origin {origin[:100]!r}); "
            "a page must not write to the appliance or read its stream through an "
            "operator's browser",
            "send it from a program (curl, the dashboard) without an Origin header, or "
            "from the appliance's own address",
            CROSS_SITE_DOC,
        )
        if scope["type"] == "websocket":  # a refused handshake: HTTP 403 with the JSON body
            await deny_websocket(scope, receive, send, error)
            return
        _mark_route(scope)
        await send_error(error, scope, receive, send)

    return guard


WEBSOCKET_PATHS = frozenset({"/ws/predictions"})
"""The appliance's WebSocket routes (controllers/ws.py); a handshake to another is a 404."""


def _no_websocket(scope: Scope) -> ApiError:
    return ApiError(
        404,
        "not found",
        f"there is no WebSocket at {str(scope.get('path', ''))[:100]!r}",
        "connect to /ws/predictions",
        "docs/API.md",
    )


def _edge(app: Litestar, settings: Settings, telemetry: Telemetry) -> ASGIApp:
    """What every connection passes before Litestar's router, outermost first: the access
    log, the request metrics, the rate limit, the Host check, the cross-site check.
    Litestar's own middleware runs only once a route matched, so a 404 or 405 would bypass
    them."""
    handler: ASGIApp = _origin_check(head_as_get(app.asgi_handler))  # errors, router
    hosts = allowed_hosts(settings)
    if "*" not in hosts:
        handler = _HostCheck(
            handler,
            AllowedHostsConfig(
                allowed_hosts=list(hosts),
                exclude=["^/health$"],  # probes; it tells nothing worth a rebinding attack
                www_redirect=False,
                # The WebSocket too: a page that rebinds its own name to the appliance
                # sends an Origin that matches that name, so only the Host check stops it
                # reading the forecast stream.
                scopes={ScopeType.HTTP, ScopeType.WEBSOCKET},
            ),
        )
    if settings.rate_limit is not None:
        unit, count = settings.rate_limit
        handler = _rate_limiter(
            RateLimitConfig(
                rate_limit=(unit, count),  # type: ignore[arg-type]
                exclude=["^/health$", "^/schema(/|$)"],
            )
        )(handler)
    handler = telemetry.middleware(handler)
    if settings.access_log:
        handler = access_log_middleware(handler)
    return handler


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
        from fleetcast.appliance.runtime_reload import reload_on_sighup

        await runtime.start()
        await telemetry.start()
        unhook = reload_on_sighup(runtime)
        try:
            yield
        finally:
            unhook()
            await telemetry.stop()
            await runtime.stop()

    openapi = OpenAPIConfig(
        title="fleetcast appliance",
        version=_version(),
        description="Server-fleet health forecasts (docs/API.md).",
        # /schema, /schema/openapi.json, /schema/swagger, ...: a read like any other.
        openapi_router=Router(
            path="/schema", route_handlers=[], guards=[read_guard], opt={QUERY_OPT: ANY_QUERY}
        ),
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(
                    type="apiKey", name="X-API-Key", security_scheme_in="header"
                )
            }
        ),
        security=[{"apiKey": []}],
    )
    app = Litestar(
        route_handlers=[
            HealthController,
            PredictionsController,
            HistoryController,
            MetricsController,
            ServersController,
            AdminController,
            DemoController,
            predictions_socket,
            telemetry.route(),
        ],
        lifespan=[lifespan],
        state=State(
            {
                "runtime": runtime,
                "ignored_fields": IgnoredFieldWarnings(),
                # GET /servers' worker threads: two at a time, so a burst of them cannot
                # fill anyio's shared pool that ingest and the forecasts also use.
                "servers_limiter": anyio.CapacityLimiter(2),
            }
        ),
        guards=[query_guard],  # a parameter a route does not take: 400, not ignored
        exception_handlers=exception_handlers(),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi,
        logging_config=None,
        debug=False,
    )
    # Access log, request metrics, rate limit and Host check wrap the router itself (see
    # _edge), not each route, so that 404/405 answers are logged, counted and limited too.
    app.asgi_handler = _edge(app, settings, telemetry)
    return app
