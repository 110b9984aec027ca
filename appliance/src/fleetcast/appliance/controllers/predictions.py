"""GET /predictions/current, /predictions/{server_name}, /alerts/active: cached, never run the model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, Response, get

from fleetcast.appliance.auth import read_guard
from fleetcast.appliance.controllers._paths import server_names
from fleetcast.appliance.http_cache import etag, matches
from fleetcast.appliance.http_errors import ApiError
from fleetcast.appliance.schemas import (  # noqa: TC001 (Litestar reads them at run time)
    AlertsResponse,
    PredictionsCurrent,
    ServerDetail,
)

if TYPE_CHECKING:
    from litestar.datastructures import State

__all__ = ["EMPTY_PREDICTIONS", "PredictionsController"]

EMPTY_PREDICTIONS = (
    b'{"prediction_time":null,"data_time":null,"model_version":null,"servers":[],'
    b'"fleet":{"servers":0,"green":0,"yellow":0,"red":0,"mean_risk":0.0,'
    b'"incident_probability":{},"by_profile":{}}}'
)
"""Body of /predictions/current before the first forecast (no server ready yet)."""


_SEE = "docs/RISK.md#buckets"

_NO_FORECAST: dict[str | None, tuple[str, str]] = {
    None: (
        "is not tracked (never seen, or forgotten)",
        "check the name in GET /servers; percent-encode a name holding '/' (a%2Fb)",
    ),
    "warming": (
        "is warming up: fewer closed steps than the model needs to forecast it",
        "wait; GET /status → servers.warming_detail says when it will be ready",
    ),
    "stale": (
        "is stale: its data stopped (its newest step lags the fleet's by more than "
        "stale_after_steps), so it is not forecast; its alerts are kept (docs/RISK.md#alerts)",
        "check what sends its metrics; if it is gone for good, forget it (DELETE "
        "/servers/{name}, docs/OPERATIONS.md#forgetting-servers)",
    ),
    "ahead": (
        "is ahead: its clock runs in the future of the fleet's by more than "
        "stale_after_steps, so it is not forecast",
        "fix the clock of the host (or exporter) that stamps its samples",
    ),
    "ready": (
        "is ready but not in the newest forecast yet",
        "wait for the next forecast (the next closed step)",
    ),
}
"""Why a tracked or unknown server has no forecast, and what to do: by its state."""


class PredictionsController(Controller):
    """Forecasts and alerts, served from the cache the forecast loop fills."""

    path = "/"
    guards = [read_guard]  # noqa: RUF012
    tags = ["predictions"]  # noqa: RUF012

    @get("/predictions/current", summary="The newest forecast set for every ready server")
    async def current(
        self, request: Request[Any, Any, Any], state: State
    ) -> Response[PredictionsCurrent]:
        """Encoded once per forecast set; an empty set (``servers: []``) until servers are
        ready. ``If-None-Match`` with the last answer's ``ETag``: 304, no body, while the set
        is the same (docs/API.md#conditional-requests)."""
        runtime = state.runtime
        body = runtime.current_body or EMPTY_PREDICTIONS
        tag = (runtime.current_body is not None and runtime.current_etag) or etag(body)
        headers = {"ETag": tag, "Cache-Control": "no-cache"}
        if matches(request.headers.get("if-none-match"), tag):
            return Response(content=None, status_code=304, headers=headers)
        return Response(content=body, media_type="application/json", headers=headers)

    @get("/predictions/{server_name:path}", summary="One server's forecast with its full curves")
    async def server(
        self, request: Request[Any, Any, Any], state: State, server_name: str
    ) -> Response[ServerDetail]:
        """404 when the server is unknown or has no forecast yet (warming up: see /status).
        Percent-encode the name as one segment (``a/b`` → ``a%2Fb``)."""
        engine = state.runtime.engine
        names = server_names(request.scope, 1, server_name) or [server_name]
        found = None
        if engine is not None:
            found = next((f for f in map(engine.server_forecast, names) if f is not None), None)
        if found is None:
            tracked = [s for s in map(engine.server_state, names) if s] if engine else []
            why, fix = _NO_FORECAST[tracked[0] if tracked else None]
            raise ApiError(
                404, "no forecast for this server", f"server {names[0][:255]!r} {why}", fix, _SEE
            )
        return Response(content=found)

    @get("/alerts/active", summary="Alerts of the newest forecast set")
    async def alerts(self, state: State) -> Response[AlertsResponse]:
        """Each alert names the server, metric, horizon, predicted value and threshold."""
        engine = state.runtime.engine
        return Response(content={"alerts": engine.alerts() if engine is not None else []})
