"""``--max-future-seconds`` in demo mode: the simulator's own samples are checked against
its simulated clock (it runs ahead at ``--speed``), POST /metrics against this machine's
clock as always — a sample from the future cannot push a demo server's window ahead and
get the demo's next samples rejected as too old."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import TestClient

from fleetcast.appliance.app import create_app
from fleetcast.contract.simulate import FleetStream

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

SERVERS = 4
SEED = 7


def test_post_metrics_keeps_the_future_check_in_demo_mode(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    # max_future_seconds 0: nothing ahead of the real clock is accepted from a sender, yet
    # the demo at 3000x streams steps minutes ahead of it.
    settings = svc.make_settings(
        model_dir,
        tmp_path / "state",
        demo=True,
        demo_servers=SERVERS,
        demo_seed=SEED,
        speed=3000,
        max_future_seconds=0,
    )
    name = FleetStream(n_servers=SERVERS, seed=SEED).names[0]
    with TestClient(create_app(settings)) as client:
        first = client.get("/status").json()["data_time"]
        ahead = {
            "timestamp": int(time.time()) + 365 * 86_400,  # a year ahead
            "server_name": name,
            "cpu_pct": 50.0,
            "mem_pct": 50.0,
            "disk_io_mb_s": 1.0,
            "latency_ms": 10.0,
            "state": "healthy",
            "profile": None,
        }
        response = client.post("/metrics", json={"records": [ahead]})
        assert response.status_code == 422, response.text
        reason = response.json()["rejected"][0]["reason"]
        assert "ahead of this appliance's clock" in reason

        # 3000x: a simulated step every 0.1 s; 20 steps put the demo 100 min ahead.
        svc.wait_until(lambda: _steps_sent(client) >= 20, timeout=30)
        status = client.get("/status").json()
        assert status["data_time"] > first
        ingest = status["ingest"]
        assert ingest["future"] == 1  # the POST only: the demo's own steps are accepted
        assert ingest["too_old"] == 0
        assert status["source"]["healthy"] is True
        assert "last error" not in status["source"]["detail"]


def _steps_sent(client: TestClient[Any]) -> int:
    detail = client.get("/status").json()["source"]["detail"]
    # "... N steps backfilled, M streamed"
    return int(detail.rsplit(",", 1)[1].split()[0])
