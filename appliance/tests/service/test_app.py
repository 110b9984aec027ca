"""The app in-process (Litestar TestClient) with the real engine and the tiny ONNX fixture."""

from __future__ import annotations

import logging
import shutil
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from fleetcast.appliance.app import create_app
from fleetcast.appliance.schemas import (
    AlertsResponse,
    FleetHistory,
    HealthResponse,
    IngestResponse,
    PredictionsCurrent,
    ProfileHistory,
    ServerDetail,
    ServerHistory,
)

if TYPE_CHECKING:
    from pathlib import Path


def _model(client: TestClient[Any]) -> dict[str, Any]:
    return client.get("/status").json()["model"]


def _ready_steps(client: TestClient[Any]) -> int:
    return int(_model(client)["encoder_length"]) + 2


def _wait_forecast(client: TestClient[Any], svc: Any, servers: int = 1) -> dict[str, Any]:
    def got() -> dict[str, Any] | None:
        body = client.get("/predictions/current").json()
        return body if len(body["servers"]) >= servers else None

    return svc.wait_until(got, timeout=20)


def test_health_and_status_show_model_identity_not_paths(client_for: Any, model_dir: Path) -> None:
    client = client_for()
    health = msgspec.convert(client.get("/health").json(), HealthResponse)
    assert health == HealthResponse(status="ok", model_loaded=True)
    response = client.get("/status")
    assert response.status_code == 200
    status = response.json()
    model = status["model"]
    assert model["version"]
    assert model["bundle_id"]
    assert model["providers"] == ["CPUExecutionProvider"]
    assert model["step_seconds"] == 300
    for key in ("known", "ready", "warming", "unknown"):
        assert status["servers"][key] == 0
    assert status["demo"] == {"enabled": False, "scenario": None}
    assert status["source"]["kind"] == "push"
    assert status["persistence"]["fsync"] is True
    assert str(model_dir) not in response.text
    assert str(model_dir.parent.parent) not in response.text


def test_predictions_empty_before_any_data(client_for: Any) -> None:
    client = client_for()
    body = msgspec.convert(client.get("/predictions/current").json(), PredictionsCurrent)
    assert body.servers == []
    assert body.fleet.servers == 0
    assert client.get("/alerts/active").json() == {"alerts": []}


def test_ingest_to_forecast_end_to_end(client_for: Any, svc: Any) -> None:
    client = client_for()
    steps = _ready_steps(client)
    records = svc.make_records(steps=steps)
    response = client.post("/metrics", json={"records": records})
    assert response.status_code == 200, response.text
    ingest = msgspec.convert(response.json(), IngestResponse)
    assert ingest.accepted == len(records)
    assert ingest.rejected == []

    body = _wait_forecast(client, svc, servers=len(svc.SERVERS))
    current = msgspec.convert(body, PredictionsCurrent)
    assert {s.server_name for s in current.servers} == set(svc.SERVERS)
    assert current.fleet.servers == len(svc.SERVERS)
    assert current.fleet.green + current.fleet.yellow + current.fleet.red == len(svc.SERVERS)
    first = current.servers[0]
    assert set(first.predictions) == {"30min", "1hr", "8hr"}
    for horizon in ("30min", "1hr", "8hr"):
        for metric in ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms"):
            lo = first.quantiles["p10"][horizon][metric]
            mid = first.quantiles["p50"][horizon][metric]
            hi = first.quantiles["p90"][horizon][metric]
            assert lo <= mid <= hi
            assert first.predictions[horizon][metric] == mid
    assert 0.0 <= first.risk <= 1.0

    detail = msgspec.convert(client.get("/predictions/ppml0001").json(), ServerDetail)
    horizon_steps = int(_model(client)["prediction_length"])
    assert len(detail.curves["cpu_pct"]["p50"]) == horizon_steps
    assert detail.step_seconds == 300

    history = msgspec.convert(
        client.get("/history/ppml0001", params={"steps": 5}).json(), ServerHistory
    )
    sent = [r["cpu_pct"] for r in records if r["server_name"] == "ppml0001"][-5:]
    assert history.cpu_pct == sent
    assert len(history.timestamps) == 5
    assert history.profile == "ml_compute"

    fleet = msgspec.convert(client.get("/fleet/history").json(), FleetHistory)
    assert len(fleet.timestamps) >= 1
    msgspec.convert(client.get("/alerts/active").json(), AlertsResponse)
    status = client.get("/status").json()
    assert status["servers"]["ready"] == len(svc.SERVERS)
    assert status["service"]["forecast_sets"] >= 1


def test_mixed_batch_keeps_valid_records_and_names_bad_ones(client_for: Any, svc: Any) -> None:
    client = client_for()
    good = svc.make_records(names=("ppml0001",), steps=2)
    bad_range = dict(good[0], cpu_pct=150.0)
    bad_state = dict(good[0], state="exploded")
    missing = {k: v for k, v in good[0].items() if k != "latency_ms"}
    wrong_type = dict(good[0], mem_pct="high")
    naive_time = dict(good[0], timestamp="2026-09-21T10:00:00")
    batch = [good[0], bad_range, bad_state, missing, wrong_type, naive_time, good[1]]
    response = client.post("/metrics", json={"records": batch})
    assert response.status_code == 200, response.text
    body = msgspec.convert(response.json(), IngestResponse)
    assert body.accepted == 2
    reasons = {r.index: r.reason for r in body.rejected}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "cpu_pct" in reasons[1]
    assert "state" in reasons[2]
    assert "latency_ms" in reasons[3]
    assert "mem_pct" in reasons[4]
    assert "timestamp" in reasons[5]


def test_all_invalid_is_422_malformed_is_400(client_for: Any, svc: Any) -> None:
    client = client_for()
    record = svc.make_records(names=("ppml0001",), steps=1)[0]
    body = svc.error_body(
        client.post("/metrics", json={"records": [dict(record, cpu_pct=-5.0)]}), 422
    )
    assert body.rejected is not None
    assert body.rejected[0].index == 0
    assert svc.error_body(client.post("/metrics", json={"records": []}), 422).rejected == []
    svc.error_body(
        client.post("/metrics", content=b"{nope", headers={"content-type": "application/json"}), 400
    )
    svc.error_body(client.post("/metrics", json={"rows": []}), 400)


def test_out_of_range_timestamps_are_rejected_not_500(client_for: Any, svc: Any) -> None:
    """Epoch seconds past int64 or past year 9998 are per-record rejections; the appliance
    keeps answering afterwards (a year-31 million step once broke /status and every POST)."""
    client = client_for()
    good = svc.make_records(names=("ppml0001",), steps=2)
    far = [1e300, -1e20, 1e15, "9999-12-31T23:59:59Z", -300]
    batch = [good[0], *(dict(good[0], timestamp=t) for t in far), good[1]]
    response = client.post("/metrics", json={"records": batch})
    assert response.status_code == 200, response.text
    body = msgspec.convert(response.json(), IngestResponse)
    assert body.accepted == 2
    assert [r.index for r in body.rejected] == [1, 2, 3, 4, 5]
    assert all("timestamp" in r.reason for r in body.rejected)
    assert client.get("/status").status_code == 200
    assert client.post("/metrics", json={"records": good[1:]}).status_code == 200


def test_profile_history_is_the_mean_over_its_servers(client_for: Any, svc: Any) -> None:
    """One request for a profile: per-step means over its servers, with how many reported."""
    client = client_for()
    names = ("ppweb001", "ppweb002", "ppdb001")
    records = svc.make_records(names=names, steps=20)
    records = [
        r
        for r in records
        if not (r["server_name"] == "ppweb002" and r["timestamp"] == records[-1]["timestamp"])
    ]
    assert client.post("/metrics", json={"records": records}).status_code == 200
    body = msgspec.convert(
        client.get("/profiles/web_api/history", params={"steps": 4}).json(), ProfileHistory
    )
    assert (body.profile, body.servers) == ("web_api", 2)
    assert len(body.timestamps) == 4
    by_step: dict[int, list[float]] = {}
    for r in records:
        if r["server_name"].startswith("ppweb"):
            by_step.setdefault(r["timestamp"], []).append(r["cpu_pct"])
    last = sorted(by_step)[-4:]
    assert body.cpu_pct == [round(sum(by_step[t]) / len(by_step[t]), 3) for t in last]
    assert body.reporting == [len(by_step[t]) for t in last] == [2, 2, 2, 1]
    assert body.mem_pct[0] is not None
    # Refusals: a name that is not a profile, a profile without servers.
    assert svc.error_body(client.get("/profiles/webapi/history"), 404).error == "unknown profile"
    assert svc.error_body(client.get("/profiles/ml_compute/history"), 404).error == "no servers"


def test_a_sample_from_the_future_is_refused_with_its_reason(client_for: Any, svc: Any) -> None:
    """A sender whose clock is a day ahead gets 422 naming the clock; /status counts it."""
    client = client_for()
    good = svc.make_records(names=("ppml0001",), steps=2)
    ahead = dict(good[1], timestamp=int(time.time()) + 86_400)
    body = svc.error_body(client.post("/metrics", json={"records": [ahead]}), 422)
    assert "ahead of this appliance's clock" in body.rejected[0].reason
    assert "--max-future-seconds" in body.rejected[0].reason
    assert client.post("/metrics", json={"records": good}).status_code == 200
    assert client.get("/status").json()["ingest"]["future"] == 1
    # Switched off, the same sample is stored.
    off = client_for(state="off", max_future_seconds="off")
    assert off.post("/metrics", json={"records": [ahead]}).status_code == 200


def test_msgpack_body(client_for: Any, svc: Any) -> None:
    client = client_for()
    records = svc.make_records(steps=2)
    response = client.post(
        "/metrics",
        content=msgspec.msgpack.encode({"records": records}),
        headers={"content-type": "application/msgpack"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(records)


def test_unknown_servers_are_accepted_and_counted(client_for: Any, svc: Any) -> None:
    client = client_for()
    steps = _ready_steps(client)
    names = ("zz-unknown-a", "zz-unknown-b")
    response = client.post("/metrics", json={"records": svc.make_records(names=names, steps=steps)})
    assert response.json()["accepted"] == 2 * steps
    servers = client.get("/status").json()["servers"]
    assert servers["known"] == 2
    assert servers["unknown"] == 2
    body = _wait_forecast(client, svc, servers=2)
    assert {s["profile"] for s in body["servers"]} == {"generic"}


def test_warming_servers_are_reported(client_for: Any, svc: Any) -> None:
    client = client_for()
    needed = int(_model(client)["min_encoder_length"])
    records = svc.make_records(names=("ppweb001",), steps=needed - 1)
    assert client.post("/metrics", json={"records": records}).status_code == 200
    servers = client.get("/status").json()["servers"]
    assert servers["warming"] == 1
    assert servers["ready"] == 0
    detail = servers["warming_detail"][0]
    assert detail["server_name"] == "ppweb001"
    assert detail["needed"] == needed
    assert detail["steps"] < needed
    svc.error_body(client.get("/predictions/ppweb001"), 404)
    svc.error_body(client.get("/history/never-seen"), 404)


def test_api_key_guards_writes_and_optionally_reads(client_for: Any, svc: Any) -> None:
    client = client_for(api_key=svc.API_KEY)
    payload = {"records": svc.make_records(steps=1)}
    missing = svc.error_body(client.post("/metrics", json=payload), 401)
    assert "X-API-Key" in missing.detail
    svc.error_body(
        client.post("/metrics", json=payload, headers={"X-API-Key": "wrong-key-wrong-key"}), 401
    )
    svc.error_body(client.post("/admin/reload"), 401)
    svc.error_body(client.post("/demo/scenario", json={"scenario": "critical"}), 401)
    ok = client.post("/metrics", json=payload, headers={"X-API-Key": svc.API_KEY})
    assert ok.status_code == 200
    assert client.get("/status").status_code == 200

    strict = client_for(state="state2", api_key=svc.API_KEY, read_key_required=True)
    svc.error_body(strict.get("/status"), 401)
    svc.error_body(strict.get("/predictions/current"), 401)
    assert strict.get("/health").status_code == 200
    assert strict.get("/status", headers={"X-API-Key": svc.API_KEY}).status_code == 200
    with (
        pytest.raises(WebSocketDisconnect, match="X-API-Key"),
        strict.websocket_connect("/ws/predictions") as ws,
    ):
        ws.receive_text()
    with strict.websocket_connect("/ws/predictions", headers={"X-API-Key": svc.API_KEY}) as ws:
        assert ws is not None


def test_rate_limit_answers_429(client_for: Any, svc: Any) -> None:
    client = client_for(rate_limit="3/minute")
    codes = [client.get("/status").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    body = svc.error_body(client.get("/predictions/current"), 429)
    assert "rate limit" in body.error
    assert client.get("/health").status_code == 200  # liveness is never limited


def test_oversized_body_is_413(client_for: Any, svc: Any) -> None:
    client = client_for(max_body_bytes=2048)
    payload = {"records": svc.make_records(steps=40)}
    svc.error_body(client.post("/metrics", json=payload), 413)
    small = {"records": svc.make_records(names=("ppml0001",), steps=2)}
    assert client.post("/metrics", json=small).status_code == 200


def test_websocket_pushes_new_forecast_sets(client_for: Any, svc: Any) -> None:
    client = client_for()
    steps = _ready_steps(client)
    with client.websocket_connect("/ws/predictions") as ws:
        client.post("/metrics", json={"records": svc.make_records(steps=steps)})
        first = msgspec.json.decode(ws.receive_text(), type=PredictionsCurrent)
        assert len(first.servers) == len(svc.SERVERS)
        client.post(
            "/metrics", json={"records": svc.make_records(steps=2, start=svc.T0 + steps * 300)}
        )
        second = msgspec.json.decode(ws.receive_text(), type=PredictionsCurrent)
        assert second.data_time > first.data_time


def test_reload_swaps_model_and_keeps_buffers(client_for: Any, svc: Any, model_dir: Path) -> None:
    client = client_for(api_key=svc.API_KEY)
    key = {"X-API-Key": svc.API_KEY}
    steps = _ready_steps(client)
    client.post("/metrics", json={"records": svc.make_records(steps=steps)}, headers=key)
    _wait_forecast(client, svc, servers=3)
    before = client.get("/history/ppdb001", params={"steps": 4}).json()
    counted = client.get("/status").json()
    other = model_dir.parent / "next"
    shutil.copytree(model_dir, other)

    response = client.post("/admin/reload", json={"model_dir": "next"}, headers=key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["servers_carried"] == 3
    # The process's counters go on: they dropped to the new engine's own (a counter that
    # falls while the process runs reads to Prometheus as a restart).
    after = client.get("/status").json()
    assert after["ingest"] == counted["ingest"]
    assert after["forecast_runs"] == counted["forecast_runs"] + 1  # the new model's first
    exposed = client.get("/metrics").text
    accepted = counted["ingest"]["accepted"]
    assert f'fleetcast_ingest_samples_total{{result="accepted"}} {accepted}\n' in exposed
    assert body["model_version"] == body["previous_model_version"]
    assert client.get("/predictions/ppdb001").status_code == 200  # forecast ready at the swap
    assert client.get("/history/ppdb001", params={"steps": 4}).json() == before
    assert client.post("/admin/reload", headers=key).status_code == 200  # --model-dir itself

    escape = svc.error_body(
        client.post("/admin/reload", json={"model_dir": "../../etc"}, headers=key), 422
    )
    nul = svc.error_body(
        client.post("/admin/reload", json={"model_dir": "next\u0000x"}, headers=key), 422
    )
    assert nul.error == "model_dir not allowed"
    long = svc.error_body(
        client.post("/admin/reload", json={"model_dir": "m" * 300}, headers=key), 422
    )
    assert long.error == "no model there"
    assert "m" * 100 + "'…" in long.detail  # the name sent, cut: not echoed whole
    assert "m" * 101 not in long.detail
    assert "/" not in escape.detail.replace("../../etc", "")
    broken = model_dir.parent / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    refused = svc.error_body(
        client.post("/admin/reload", json={"model_dir": "broken"}, headers=key), 422
    )
    assert str(broken) not in refused.detail
    assert client.get("/health").json()["model_loaded"] is True
    assert client.get("/history/ppdb001", params={"steps": 4}).json() == before


def test_demo_scenario_is_404_without_demo(client_for: Any, svc: Any) -> None:
    client = client_for()
    body = svc.error_body(client.post("/demo/scenario", json={"scenario": "critical"}), 404)
    assert "--demo" in body.fix
    svc.error_body(client.post("/demo/scenario", json={"scenario": "on-fire"}), 400)


def test_openapi_lists_every_endpoint(client_for: Any) -> None:
    client = client_for()
    schema = client.get("/schema/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/health",
        "/status",
        "/metrics",
        "/predictions/current",
        "/predictions/{server_name}",
        "/alerts/active",
        "/history/{server_name}",
        "/profiles/{profile}/history",
        "/fleet/history",
        "/demo/scenario",
        "/admin/reload",
    } <= paths
    body = schema["paths"]["/metrics"]["post"]["requestBody"]["content"]
    assert "application/msgpack" in body
    assert schema["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"


def test_every_request_is_logged_once(client_for: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = client_for(api_key="k" * 20)
    with caplog.at_level(logging.INFO, logger="fleetcast.appliance.access"):
        client.get("/health")
        client.post("/metrics", json={"records": []})
    lines = [
        msgspec.json.decode(r.getMessage())
        for r in caplog.records
        if r.name == "fleetcast.appliance.access"
    ]
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("GET", "/health", 200),
        ("POST", "/metrics", 401),
    ]
    assert all(x["ms"] >= 0 and x["client"] and x["bytes_out"] > 0 for x in lines)
    assert all("k" * 20 not in r.getMessage() for r in caplog.records)


def test_restart_in_process_restores_snapshot(
    client_for: Any, svc: Any, model_dir: Path, tmp_path: Path
) -> None:
    settings = svc.make_settings(model_dir, tmp_path / "keep")
    records = svc.make_records(steps=8)
    with TestClient(create_app(settings)) as first:
        assert first.post("/metrics", json={"records": records}).status_code == 200
        before = first.get("/history/ppweb001", params={"steps": 8}).json()
    assert (tmp_path / "keep" / "snapshot.npz").is_file()
    with TestClient(create_app(settings)) as second:
        assert second.get("/history/ppweb001", params={"steps": 8}).json() == before
        assert second.get("/status").json()["persistence"]["replayed_on_start"] == 0


def test_unknown_path_and_method_are_json_errors(client_for: Any, svc: Any) -> None:
    client = client_for()
    assert svc.error_body(client.get("/nope"), 404).see == "docs/API.md"
    svc.error_body(client.delete("/metrics"), 405)
