"""Credentials in the URLs the appliance calls are sent as HTTP Basic auth, never shown.

``http://user:password@host`` used to reach urllib as a host name (``Name or service not
known``) and to be printed whole in ``/status`` (``source.detail``, ``last_error``) and
in the log; a webhook's path (often its token) was logged with every failed delivery.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import TYPE_CHECKING

import pytest

from fleetcast.appliance.alerting import DeliveryError, post_json
from fleetcast.appliance.sources.promql import PromClient, PromError
from fleetcast.appliance.urls import shown, split_credentials

from .promstack import Receiver, free_port
from .test_source import _config, _run

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from fleetcast.appliance.runtime import Runtime

    from .conftest import FakeClock

SECRET = "S3c@ret:pw"
QUOTED = "S3c%40ret%3Apw"


EMPTY_VECTOR = json.dumps(
    {"status": "success", "data": {"resultType": "vector", "result": []}}
).encode()


@pytest.fixture
def recorder() -> Iterator[Receiver]:
    """A receiver that answers like a Prometheus with no series (alert receivers ignore it)."""
    rec = Receiver(answer=EMPTY_VECTOR)
    yield rec
    rec.close()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_split_and_shown() -> None:
    url = f"https://admin:{QUOTED}@prom.example:9443/prom/?a=1#x"
    bare, headers = split_credentials(url)
    assert bare == "https://prom.example:9443/prom/?a=1#x"
    assert headers == {"Authorization": _basic("admin", SECRET)}
    assert split_credentials("http://prom:9090") == ("http://prom:9090", {})
    assert shown(url) == "https://prom.example:9443/prom/"
    assert shown("http://hooks.example/services/T0/B0/XXXX", path=False) == "http://hooks.example/…"
    assert shown("http://[::1]:9093", path=False) == "http://[::1]:9093"
    assert shown("http://u:p@127.0.0.1:9x93/hook") == "http://127.0.0.1:9x93/hook"


def test_prometheus_gets_basic_auth_and_errors_hide_it(recorder: Receiver) -> None:
    client = PromClient(f"http://admin:{QUOTED}@127.0.0.1:{recorder.port}")
    assert client.query("up", 1_790_000_000.0) == []
    assert recorder.auth == [_basic("admin", SECRET)]
    down = PromClient(f"http://admin:{QUOTED}@127.0.0.1:{free_port()}", timeout_s=2.0)
    with pytest.raises(PromError) as info:
        down.query("up", 1_790_000_000.0)
    assert info.value.kind == "unreachable"
    assert "S3c" not in str(info.value)
    assert "admin" not in str(info.value)
    assert f"Cannot reach Prometheus at http://127.0.0.1:{down.url.rsplit(':', 1)[1]}" in str(
        info.value
    )


def test_status_and_log_never_show_prometheus_credentials(
    model_dir: Path, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://admin:{QUOTED}@127.0.0.1:{free_port()}"

    async def body(runtime: Runtime) -> None:
        from fleetcast.appliance.sources.prometheus import PrometheusSource

        source = PrometheusSource(runtime, _config(url), clock=clock)
        with caplog.at_level(logging.DEBUG, logger="fleetcast"):
            await source.start()
            for _ in range(200):
                if source.last_error is not None:
                    break
                await asyncio.sleep(0.02)
            await source.stop()
        status = json.dumps(source.source_status())
        assert "Cannot reach Prometheus" in status
        for secret in ("admin", "S3c", QUOTED):
            assert secret not in status
            assert secret not in caplog.text

    _run(model_dir, tmp_path, body)


def test_alert_receivers_get_basic_auth_and_failures_hide_secrets(recorder: Receiver) -> None:
    assert post_json(f"http://am:{QUOTED}@127.0.0.1:{recorder.port}/api/v2/alerts", [], 5.0) == 200
    assert recorder.auth == [_basic("am", SECRET)]
    token_url = f"http://user:{QUOTED}@127.0.0.1:{free_port()}/services/T000/B000/XXXXSECRET"
    with pytest.raises(DeliveryError) as info:
        post_json(token_url, [], 2.0)
    message = str(info.value)
    assert message.startswith("cannot reach http://127.0.0.1:")
    assert "/…" in message
    for secret in ("XXXXSECRET", "services", "S3c", "user"):
        assert secret not in message
