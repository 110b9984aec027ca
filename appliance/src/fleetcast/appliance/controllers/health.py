"""GET /health (liveness, never guarded) and GET /status (model, servers, rates, source)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar import Controller, Response, get

from fleetcast.appliance.auth import read_guard
from fleetcast.appliance.schemas import HealthResponse, StatusResponse

if TYPE_CHECKING:
    from litestar.datastructures import State

__all__ = ["HealthController"]


class HealthController(Controller):
    """Liveness and status."""

    path = "/"
    tags = ["status"]  # noqa: RUF012

    @get("/health", summary="Liveness: the process answers and whether a model is loaded")
    async def health(self, state: State) -> HealthResponse:
        """``{"status": "ok", "model_loaded": bool}``; open even with --read-key-required."""
        return HealthResponse(status="ok", model_loaded=state.runtime.engine is not None)

    @get("/status", guards=[read_guard], summary="Model, servers, rates, latency, data source")
    async def status(self, state: State) -> Response[StatusResponse]:
        """Model identity (version, bundle id — never a path), providers in use, servers
        known/ready/warming/unknown, inference latency, error rate, source and demo state."""
        return Response(content=state.runtime.status())
