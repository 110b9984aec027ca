"""DELETE /servers/{server_name}: forget a server (docs/OPERATIONS.md#forgetting-servers).

A write like ``POST /metrics``: the API key when one is configured (:func:`~fleetcast.
appliance.auth.write_guard`), refused from another site's web page by the edge's Origin
check (every method but GET, HEAD and OPTIONS; docs/OPERATIONS.md#cross-site-requests). It
takes no body. The forget is logged (synced) before it is applied, so it survives a restart.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from litestar import Controller, Request, delete

from fleetcast.appliance.auth import write_guard
from fleetcast.appliance.controllers._paths import server_names
from fleetcast.appliance.http_errors import ApiError
from fleetcast.appliance.runtime_forget import source_note
from fleetcast.appliance.schemas import ForgetOut

if TYPE_CHECKING:
    from litestar.datastructures import State

__all__ = ["ServersController"]

_log = logging.getLogger(__name__)
_SEE = "docs/OPERATIONS.md#forgetting-servers"


class ServersController(Controller):
    """The servers the appliance tracks."""

    path = "/servers"
    guards = [write_guard]  # noqa: RUF012
    tags = ["servers"]  # noqa: RUF012

    @delete(
        "/{server_name:path}",
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
                f"the state directory is not writable ({type(exc).__name__}); the server was "
                "not forgotten",
                "free disk space or fix the state directory's permissions, then send the "
                "DELETE again",
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
