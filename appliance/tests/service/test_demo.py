"""The built-in demo source: backfill through the ingest path, streaming, scenario switch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import TestClient

from fleetcast.appliance.app import create_app

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


def test_demo_backfills_streams_and_switches_scenario(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    settings = svc.make_settings(
        model_dir, tmp_path / "state", demo=True, demo_servers=8, speed=3000, api_key=svc.API_KEY
    )
    with TestClient(create_app(settings)) as client:
        status = client.get("/status").json()
        assert status["demo"]["enabled"] is True
        assert status["demo"]["scenario"] == "healthy"
        assert status["source"]["kind"] == "demo"
        assert status["servers"]["known"] == 8
        body = svc.wait_until(
            lambda: client.get("/predictions/current").json()["servers"], timeout=20
        )
        assert len(body) == 8  # the 24 h backfill makes every server ready at once

        key = {"X-API-Key": svc.API_KEY}
        switched = client.post("/demo/scenario", json={"scenario": "critical"}, headers=key)
        assert switched.status_code == 200
        assert switched.json() == {"scenario": "critical", "previous": "healthy"}
        assert client.get("/status").json()["demo"]["scenario"] == "critical"
        first = client.get("/status").json()["data_time"]
        # 3000x: one simulated 5-minute step every 0.1 s streams into the same ingest path.
        svc.wait_until(lambda: client.get("/status").json()["data_time"] > first, timeout=20)
        source = client.get("/status").json()["source"]
        assert source["healthy"] is True
        assert "scenario critical" in source["detail"]
        assert (
            client.post("/demo/scenario", json={"scenario": "chaos"}, headers=key).status_code
            == 400
        )


def test_demo_after_restart_continues_after_saved_data(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    settings = svc.make_settings(model_dir, tmp_path / "state", demo=True, demo_servers=4, speed=60)
    with TestClient(create_app(settings)) as client:
        first = client.get("/status").json()
    with TestClient(create_app(settings)) as client:
        second = client.get("/status").json()
        assert second["ingest"]["too_old"] == 0
        assert second["ingest"]["rejected"] == 0
        assert second["data_time"] >= first["data_time"]
