"""An in-process stand-in for the appliance's HTTP API (httpx.MockTransport), for session
tests that must change what the appliance answers between two refreshes (a model reload at
the same forecast step, a refusal that goes away). Bodies are docs/API.md's, from samples.py.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from fleetcast.dashboard.client import ApplianceClient
from fleetcast.dashboard.session import DashboardSession
from fleetcast.dashboard.settings import DashboardSettings

from .samples import current_body, detail_body

__all__ = ["FakeAppliance", "session_for"]


def _history(name: str, profile: str) -> dict[str, Any]:
    stamps = ["2026-11-27T09:55:00Z", "2026-11-27T10:00:00Z"]
    values = [50.0, 51.0]
    return {
        "server_name": name,
        "profile": profile,
        "step_seconds": 300,
        "timestamps": stamps,
        **{m: values for m in ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")},
        "risk": [0.1, 0.2],
    }


@dataclass
class FakeAppliance:
    """Answers like the appliance; change ``current``/``p50``/``refuse`` between refreshes."""

    current: dict[str, Any] = field(default_factory=current_body)
    p50: float = 2.0
    """Every point of every p50 curve of ``/predictions/{name}``."""
    tracked: list[dict[str, Any]] = field(default_factory=list)
    """``GET /servers`` rows of servers without a forecast (``/status`` counts them)."""
    refuse: dict[str, int] = field(default_factory=dict)
    """Path → HTTP status to answer instead (with the appliance's JSON error body)."""
    requests: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        if path in self.refuse:
            error = {"error": "refused", "detail": "by the test", "fix": "none", "see": "x"}
            return httpx.Response(self.refuse[path], json=error)
        servers = {s["server_name"]: s for s in self.current["servers"]}
        if path == "/status":
            counts: dict[str, int] = {}
            for row in self.tracked:
                counts[row["state"]] = counts.get(row["state"], 0) + 1
            return httpx.Response(200, json={"model": {"step_seconds": 300}, "servers": counts})
        if path == "/servers":
            rows = [r for r in self.tracked if r["state"] == request.url.params.get("state")]
            return httpx.Response(200, json={"servers": rows, "count": len(rows), "next": None})
        if path == "/predictions/current":
            return httpx.Response(200, content=json.dumps(self.current).encode())
        if path == "/fleet/history":
            return httpx.Response(200, json={"timestamps": [], "mean_risk": []})
        if path == "/alerts/active":
            return httpx.Response(200, json={"alerts": []})
        if path == "/demo/scenario" and request.method == "POST":
            scenario = json.loads(request.content)["scenario"]
            return httpx.Response(200, json={"scenario": scenario, "applies_from": "next step"})
        kind, _, name = path.strip("/").partition("/")
        if kind == "predictions" and name in servers:
            body = copy.deepcopy(servers[name])
            curves = detail_body()["curves"]
            for metric in curves:
                curves[metric]["p50"] = [self.p50] * 96
            body.update(curves=curves, step_seconds=300, start=self.current["prediction_time"])
            return httpx.Response(200, json=body)
        if kind == "history" and name in servers:
            return httpx.Response(200, json=_history(name, servers[name]["profile"]))
        if kind == "profiles":
            profile = name.split("/")[0]
            body = _history("", profile)
            del body["server_name"]
            return httpx.Response(200, json={**body, "servers": 1, "reporting": [1, 1]})
        return httpx.Response(404, json={"error": "unknown server", "detail": path})


def session_for(fake: FakeAppliance, **settings: Any) -> DashboardSession:
    """A session (no browser, no WebSocket) whose client talks to ``fake``."""
    config = DashboardSettings(use_websocket=False, **settings)
    session = DashboardSession(config, doc=None)
    session.client = ApplianceClient(config, transport=httpx.MockTransport(fake.handle))
    return session
