"""GET /history/{server_name}, /profiles/{profile}/history and /fleet/history: recent
actuals of a server or a profile, and the fleet risk trend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
from litestar import Controller, Request, Response, get
from litestar.params import Parameter

from fleetcast.appliance.auth import read_guard
from fleetcast.appliance.controllers._paths import server_names
from fleetcast.appliance.http_errors import ApiError
from fleetcast.appliance.query_params import takes
from fleetcast.appliance.schemas import (  # noqa: TC001 (Litestar reads them at run time)
    FleetHistory,
    ProfileHistory,
    ServerHistory,
)
from fleetcast.contract.schema import VALID_PROFILES

if TYPE_CHECKING:
    from litestar.datastructures import State

__all__ = ["MAX_HISTORY_STEPS", "HistoryController"]

MAX_HISTORY_STEPS = 10_000
"""Upper bound of ``?steps=`` (the engine returns at most what it keeps)."""

Steps = Annotated[
    int, Parameter(ge=1, le=MAX_HISTORY_STEPS, description="number of 5-minute steps")
]


class HistoryController(Controller):
    """Recent actuals for the dashboard's historical panels."""

    path = "/"
    guards = [read_guard]  # noqa: RUF012
    tags = ["history"]  # noqa: RUF012

    @get(
        "/history/{server_name:path}",
        opt=takes("steps"),
        summary="Recent actuals and risk of one server",
    )
    async def server(
        self, request: Request[Any, Any, Any], state: State, server_name: str, steps: Steps = 288
    ) -> Response[ServerHistory]:
        """One value per step (null where a step had no sample), oldest first. Percent-encode
        the name as one segment (``a/b`` → ``a%2Fb``)."""
        engine = state.runtime.engine
        names = server_names(request.scope, 1, server_name) or [server_name]
        found = None
        if engine is not None:
            found = next(
                (h for h in (engine.history(n, steps) for n in names) if h is not None), None
            )
        if found is None:
            raise ApiError(
                404,
                "unknown server",
                f"no samples have been received for server {names[0][:255]!r}",
                "POST /metrics records for it first, or check the name in GET /predictions/current",
            )
        return Response(content=found)

    @get(
        "/profiles/{profile:str}/history",
        opt=takes("steps"),
        summary="Mean actuals and risk of one profile",
    )
    async def profile(
        self, state: State, profile: str, steps: Steps = 288
    ) -> Response[ProfileHistory]:
        """Per step, the mean over the profile's servers that reported (``reporting``)."""
        if profile not in VALID_PROFILES:
            raise ApiError(
                404,
                "unknown profile",
                f"{profile[:64]!r} is not a contract profile ({', '.join(VALID_PROFILES)})",
                "use one of the profiles listed in docs/SERVER_PROFILES.md",
            )
        engine = state.runtime.engine
        found = None
        if engine is not None:  # a gather over the profile's servers: off the event loop
            found = await anyio.to_thread.run_sync(engine.profile_history, profile, steps)
        if found is None:
            raise ApiError(
                404,
                "no servers",
                f"no server with profile {profile!r} has sent samples",
                "POST /metrics records of such servers first, or pick a profile listed in "
                "GET /predictions/current",
            )
        return Response(content=found)

    @get("/fleet/history", opt=takes("steps"), summary="Fleet risk trend")
    async def fleet(self, state: State, steps: Steps = 288) -> Response[FleetHistory]:
        """Mean risk and green/yellow/red counts per forecast step."""
        engine = state.runtime.engine
        body = engine.fleet_history(steps) if engine is not None else {}
        return Response(content=body)
