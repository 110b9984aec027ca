"""GET /servers: the tracked servers and their state; DELETE /servers/{server_name}: forget a
server (docs/OPERATIONS.md#forgetting-servers).

The list is how an operator finds the servers to forget (``?state=stale``: their data
stopped). It is a read (:func:`~fleetcast.appliance.auth.read_guard`).

A write like ``POST /metrics``: the API key when one is configured (:func:`~fleetcast.
appliance.auth.write_guard`), refused from another site's web page by the edge's Origin
check (every method but GET, HEAD and OPTIONS; docs/OPERATIONS.md#cross-site-requests). It
takes no body. The forget is logged (synced) before it is applied, so it survives a restart.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
from litestar import Controller, Request, delete, get
from litestar.params import Parameter

from fleetcast.appliance.auth import read_guard, write_guard
from fleetcast.appliance.controllers._paths import server_names
from fleetcast.appliance.engine_state import SERVER_STATES
from fleetcast.appliance.errors import write_error_cause
from fleetcast.appliance.http_errors import ApiError
from fleetcast.appliance.query_params import takes
from fleetcast.appliance.runtime_forget import source_note
from fleetcast.appliance.schemas import ForgetOut, ServerEntry, ServersOut

if TYPE_CHECKING:
    from litestar.datastructures import State

__all__ = ["ServersController"]

_log = logging.getLogger(__name__)

StateQuery = Annotated[
    str | None,
    Parameter(
        query="state", description="only the servers in this state: " + ", ".join(SERVER_STATES)
    ),
]
MAX_PAGE = 100_000
"""Upper bound of ``?limit=``."""
LimitQuery = Annotated[
    int | None,
    Parameter(
        query="limit", ge=1, le=MAX_PAGE, description="at most this many servers (default: all)"
    ),
]
AfterQuery = Annotated[
    str | None,
    Parameter(
        query="after",
        max_length=255,
        description="only servers whose name sorts after this one: the previous page's next",
    ),
]
_SEE = "docs/OPERATIONS.md#forgetting-servers"


class ServersController(Controller):
    """The servers the appliance tracks."""

    path = "/servers"
    tags = ["servers"]  # noqa: RUF012

    @get(
        "/",
        guards=[read_guard],
        opt=takes("state", "limit", "after"),
        summary="The tracked servers: profile, state, newest step",
    )
    async def list_servers(
        self,
        state: State,
        server_state: StateQuery = None,
        limit: LimitQuery = None,
        after: AfterQuery = None,
    ) -> ServersOut:
        """Every server the appliance tracks, by name; ``?state=stale`` lists those whose data
        stopped (the ones to forget when they are gone for good). In pages with ``?limit=``:
        pass the answer's ``next`` as ``?after=`` for the next page (null: the last page);
        ``count`` is the number of servers in all pages."""
        if server_state is not None and server_state not in SERVER_STATES:
            raise ApiError(
                400,
                "unknown server state",
                f"state {server_state[:40]!r} is not one of {', '.join(SERVER_STATES)}",
                "ask for ?state=stale (data stopped), warming, ready or ahead, or leave it out",
                "docs/API.md",
            )
        engine = state.runtime.engine

        def build() -> ServersOut:
            rows, total, more = [], 0, False
            if engine is not None:
                rows, total, more = engine.servers(server_state, after, limit)
            return ServersOut(
                servers=[ServerEntry(**row) for row in rows],
                count=total,
                next=rows[-1]["server_name"] if more else None,
            )

        # Off the event loop: 0.1-0.2 s of Python at 20,000 servers would stall every other
        # request and the WebSocket pushes for as long.
        return await anyio.to_thread.run_sync(build, limiter=state.servers_limiter)

    @delete(
        "/{server_name:path}",
        guards=[write_guard],
        status_code=200,
        summary="Forget a server: its history, forecast and alerts; its slot is freed",
    )
    async def forget(
        self, request: Request[Any, Any, Any], state: State, server_name: str
    ) -> ForgetOut:
        """Percent-encode the name as one segment (``a/b`` → ``a%2Fb``). 404 for a server
        the appliance does not track; samples sent for the name later start a new server."""
        runtime = state.runtime
        names = server_names(request.scope, 1, server_name) or [server_name]
        try:
            done = await anyio.to_thread.run_sync(runtime.forget, names)
        except OSError as exc:
            _log.error("sample log write failed: %s", exc)
            raise ApiError(
                503,
                "cannot persist the forget",
                f"{write_error_cause(exc)}; the server was not forgotten",
                "free disk space or fix the state directory (permissions, read-only mount), "
                "then send the DELETE again",
                "docs/OPERATIONS.md#state",
            ) from exc
        if done is None:
            raise ApiError(
                404,
                "unknown server",
                f"the appliance tracks no server named {names[0][:255]!r} (never seen, or "
                "forgotten already)",
                "check the name (GET /history/{server_name} answers for every tracked server); "
                "percent-encode a name holding '/' as one segment (a%2Fb)",
                _SEE,
            )
        runtime.republish()
        return ForgetOut(
            server_name=done.server_name,
            profile=done.profile,
            steps_dropped=done.steps_dropped,
            comes_back=source_note(runtime.settings.source),
        )
