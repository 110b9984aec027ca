"""The app with the Prometheus source, GET /metrics and the alert pusher wired in (in-process).

``create_app`` with ``source="prometheus"`` against the fake Prometheus API: the lifespan
starts the source, GET and POST /metrics share the path, /status reports the source, the
CLI accepts the flags.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import TestClient

from fleetcast.appliance.app import create_app
from fleetcast.appliance.exposition import CONTENT_TYPE
from fleetcast.appliance.settings import SettingsError, build_settings

from .conftest import T0, TEST_QUERIES

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import FakePrometheus


def _settings(model_dir: Path, tmp_path: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "model_dir": model_dir,
        "state_dir": tmp_path / "state",
        "capacity": 64,
        "rate_limit": "off",
        # Litestar's TestClient sends Host: testserver.local (test_http_hardening checks
        # the real default: the loopback names)
        "allowed_hosts": "testserver.local",
        "fsync": False,
    }
    values.update(overrides)
    return build_settings(values, env={})


def _wait(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_prometheus_source_runs_in_the_app(
    model_dir: Path, tmp_path: Path, fake_prom: FakePrometheus
) -> None:
    settings = _settings(
        model_dir,
        tmp_path,
        source="prometheus",
        prometheus_url=fake_prom.url,
        prometheus_interval_s=0.2,
        prometheus_settle_s=0,
        **{f"prometheus_{m}": q for m, q in TEST_QUERIES.items()},
    )
    with TestClient(create_app(settings)) as client:
        status = _wait(lambda: (s := client.get("/status").json())["source"]["healthy"] and s)
        assert status["source"]["kind"] == "prometheus"
        assert status["source"]["servers"] == 3
        current = _wait(
            lambda: (
                (c := client.get("/predictions/current")).status_code == 200
                and c.json()["servers"]
                and c.json()
            )
        )
        assert {s["server_name"] for s in current["servers"]} == {"ppml0001", "ppdb001", "ppweb001"}
        text = client.get("/metrics")
        assert text.status_code == 200
        assert text.headers["content-type"] == CONTENT_TYPE  # the charset once
        assert 'fleetcast_source_up{kind="prometheus"} 1' in text.text
        assert (
            'fleetcast_http_requests_total{method="GET",route="/status",status="200"}' in text.text
        )
        assert 'fleetcast_forecast{server="ppml0001"' in text.text
        # POST /metrics (ingest) still answers on the same path.
        record = {
            "timestamp": T0,
            "server_name": "ppgen001",
            "cpu_pct": 1.0,
            "mem_pct": 2.0,
            "disk_io_mb_s": 3.0,
            "latency_ms": 4.0,
        }
        posted = client.post("/metrics", json={"records": [record]})
        assert posted.status_code in (200, 422)
        assert "accepted" in posted.json() or "rejected" in posted.json()


def test_push_mode_exposes_metrics_without_a_source(model_dir: Path, tmp_path: Path) -> None:
    with TestClient(create_app(_settings(model_dir, tmp_path))) as client:
        text = client.get("/metrics").text
        assert 'fleetcast_source_up{kind="push"} 1' in text
        assert "fleetcast_servers{state=" in text
        assert client.get("/status").json()["source"]["kind"] == "push"


def test_settings_validation(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--prometheus-url"):
        _settings(model_dir, tmp_path, source="prometheus")
    with pytest.raises(SettingsError, match="source"):
        _settings(model_dir, tmp_path, source="kafka")
    with pytest.raises(SettingsError, match="choose one data source"):
        _settings(
            model_dir, tmp_path, source="prometheus", prometheus_url="http://p:9090", demo=True
        )
    demo = _settings(model_dir, tmp_path, source="demo", demo_servers=8)  # <= capacity
    assert demo.demo is True
    assert demo.source == "demo"
    with pytest.raises(SettingsError, match="REGEX=PROFILE"):
        _settings(
            model_dir,
            tmp_path,
            source="prometheus",
            prometheus_url="http://p:9090",
            prometheus_profile_rules=["^db-=nope"],
        )
    s = _settings(
        model_dir,
        tmp_path,
        source="prometheus",
        prometheus_url="http://p:9090",
        prometheus_profile_rules="^db-=database",
        alertmanager_url="http://am:9093",
        alert_resend_s="15",
    )
    assert s.prometheus_profile_rules == ("^db-=database",)
    assert s.alert_resend_s == 15.0


def test_cli_flags_reach_the_settings() -> None:
    import argparse

    from fleetcast.appliance.commands import add_serve_arguments, cli_values

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(
        [
            "--source",
            "prometheus",
            "--prometheus-url",
            "http://p:9090",
            "--prometheus-latency-ms",
            "x * 1000",
            "--prometheus-profile-rule",
            "^db-=database",
            "--prometheus-profile-rule",
            "^web-=web_api",
            "--prometheus-keep-port",
            "--alertmanager-url",
            "http://am:9093",
            "--webhook-url",
            "http://hook/x",
            "--alert-keep-firing-s",
            "0",
        ]
    )
    settings = build_settings(cli_values(args), env={})
    assert settings.alert_keep_firing_s == 0.0
    assert settings.engine_config().alert_keep_firing_s == 0.0
    assert build_settings({}, env={}).engine_config().alert_keep_firing_s == 900.0
    env = build_settings({}, env={"FLEETCAST_ALERT_KEEP_FIRING_S": "600"})
    assert env.engine_config().alert_keep_firing_s == 600.0
    with pytest.raises(SettingsError, match="alert_keep_firing_s"):
        build_settings({}, env={"FLEETCAST_ALERT_KEEP_FIRING_S": "-5"})
    assert settings.source == "prometheus"
    assert settings.prometheus_latency_ms == "x * 1000"
    assert settings.prometheus_profile_rules == ("^db-=database", "^web-=web_api")
    assert settings.prometheus_strip_port is False
    assert settings.alertmanager_url == "http://am:9093"
    assert settings.webhook_url == "http://hook/x"
