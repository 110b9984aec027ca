"""Refuse query parameters a route does not take, instead of ignoring them.

Ignored, a misspelt parameter changes the meaning of a request silently: ``GET
/servers?status=stale`` (for ``?state=stale``) would list *every* server, and a script that
forgets the servers it lists would forget the whole fleet. Each route names the parameters
it takes in its ``opt`` (:data:`QUERY_OPT`); :func:`query_guard`, an app-wide guard,
answers 400 for any other, naming it and the ones the route takes. A route without the
``opt`` takes none; the OpenAPI router takes any (its UI pages add their own). A test holds
each route's list equal to the parameters its signature declares (the OpenAPI schema), so
the two cannot drift. docs/API.md#query-parameters.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from fleetcast.appliance.http_errors import ApiError

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

__all__ = ["ANY_QUERY", "QUERY_OPT", "query_guard", "takes"]

QUERY_OPT = "query"
"""Key of a route handler's ``opt`` that holds the query parameter names it takes."""

ANY_QUERY = "*"
"""``opt[QUERY_OPT]`` of a route that takes any parameter (the OpenAPI pages)."""

_SHOWN = 5


def takes(*names: str) -> dict[str, Any]:
    """The ``opt`` of a route that takes these query parameters (``@get(..., opt=takes("steps"))``)."""
    return {QUERY_OPT: tuple(names)}


async def query_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """400 when the request has a query parameter its route does not take (HTTP only: a
    WebSocket's handshake is answered by its own guards; not ``OPTIONS``, which names the
    methods, whatever the parameters). The route's other guards run first on that path, so
    a request without the API key gets their 401, not a 400 listing the parameters."""
    if connection.scope["type"] != "http" or connection.scope["method"] == "OPTIONS":
        return
    allowed = handler.opt.get(QUERY_OPT, ())
    if allowed == ANY_QUERY:
        return
    unknown = sorted({name for name in connection.query_params if name not in allowed})
    if not unknown:
        return
    for guard in handler.resolve_guards():  # app-wide, this guard would run before them
        if guard is not query_guard and inspect.isawaitable(done := guard(connection, handler)):
            await done
    shown = ", ".join(repr(name[:40]) for name in unknown[:_SHOWN])
    more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
    path = str(connection.scope.get("path", ""))[:100]
    if allowed:
        fix = f"{path} takes only: {', '.join(allowed)}; check the spelling"
    else:
        fix = f"{path} takes no query parameters: leave them out"
    raise ApiError(
        400,
        "unknown query parameter",
        f"{shown}{more} {'is not a parameter' if len(unknown) == 1 else 'are not parameters'} "
        f"of {path} (an ignored one could change what the "
        "answer means, so it is refused)",
        fix,
        "docs/API.md#query-parameters",
    )
