"""HTTP and WebSocket controllers, one per resource (docs/API.md)."""

from __future__ import annotations

from fleetcast.appliance.controllers.admin import AdminController, DemoController
from fleetcast.appliance.controllers.health import HealthController
from fleetcast.appliance.controllers.history import HistoryController
from fleetcast.appliance.controllers.metrics import MetricsController
from fleetcast.appliance.controllers.predictions import PredictionsController
from fleetcast.appliance.controllers.servers import ServersController
from fleetcast.appliance.controllers.ws import predictions_socket

__all__ = [
    "AdminController",
    "DemoController",
    "HealthController",
    "HistoryController",
    "MetricsController",
    "PredictionsController",
    "ServersController",
    "predictions_socket",
]
