"""Alertmanager payloads, the firing/resolved diff, retries, the webhook (real local HTTP)."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fleetcast.appliance.alerting import (
    ALERTNAME,
    AlertingConfig,
    AlertPusher,
    DeliveryError,
    firing_alert,
    post_json,
    rfc3339,
    webhook_body,
)

NOW = 1_790_000_000.0


def _alert(server: str = "ppml0001", severity: str = "critical", **kw: Any) -> dict[str, Any]:
    base = {
        "server_name": server,
        "profile": "ml_compute",
        "metric": "cpu_pct",
        "horizon": "8hr",
        "predicted_value": 93.25,
        "predicted_p90": 98.5,
        "threshold": 90.0,
        "probability": 0.8123,
        "severity": severity,
        "since": "2026-09-21T13:50:00Z",
        "at": "2026-09-21T18:00:00Z",
    }
    base.update(kw)
    return base


def test_rfc3339() -> None:
    assert rfc3339(NOW) == "2026-09-21T14:13:20.000Z"
    assert rfc3339(NOW + 0.25) == "2026-09-21T14:13:20.250Z"


def test_firing_alert_has_the_documented_labels_and_annotations() -> None:
    item = firing_alert(_alert(), NOW, 240.0, generator_url="http://fc:8000/")
    assert item["labels"] == {
        "alertname": ALERTNAME,
        "server": "ppml0001",
        "profile": "ml_compute",
        "metric": "cpu_pct",
        "horizon": "8hr",
        "severity": "critical",
    }
    ann = item["annotations"]
    assert ann["predicted_value"] == "93.25"
    assert ann["threshold"] == "90"
    assert ann["predicted_p90"] == "98.5"
    assert ann["probability"] == "0.8123"
    assert ann["unit"] == "percent"
    assert ann["at"] == "2026-09-21T18:00:00Z"
    assert ann["summary"] == (
        "ppml0001: cpu_pct forecast to reach 93.25 percent (threshold 90) within 8hr, probability 81%"
    )
    assert item["startsAt"] == "2026-09-21T13:50:00.000Z"
    assert item["endsAt"] == rfc3339(NOW + 240)
    assert item["generatorURL"] == "http://fc:8000/predictions/ppml0001"
    # All values are strings, as Alertmanager's API requires.
    assert all(isinstance(v, str) for v in (*item["labels"].values(), *ann.values()))


class _Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


def test_update_diffs_new_resolved_and_severity_changes() -> None:
    clock = _Clock()
    pusher = AlertPusher(
        None, AlertingConfig(alertmanager_url="http://am", resend_s=30), clock=clock
    )
    firing, new, resolved = pusher.update([_alert("a"), _alert("b", "warning")])
    assert len(firing) == 2
    assert len(new) == 2
    assert resolved == []
    assert firing[0]["endsAt"] == rfc3339(NOW + 120)  # 4 x resend_s
    clock.t += 60
    firing, new, resolved = pusher.update([_alert("a"), _alert("b", "critical")])
    assert [a["labels"]["server"] for a in firing] == ["a", "b"]
    assert [(a["labels"]["server"], a["labels"]["severity"]) for a in new] == [("b", "critical")]
    assert [(a["labels"]["server"], a["labels"]["severity"]) for a in resolved] == [
        ("b", "warning")
    ]
    assert resolved[0]["endsAt"] == rfc3339(NOW + 60)  # resolved now
    firing, new, resolved = pusher.update([])
    assert firing == []
    assert new == []
    assert {a["labels"]["server"] for a in resolved} == {"a", "b"}
    assert pusher.firing == 0


def test_push_retries_and_keeps_undelivered_resolutions() -> None:
    sent: list[tuple[str, Any]] = []
    failing = {"on": True}

    def sender(url: str, payload: Any, timeout: float) -> int:
        if failing["on"]:
            raise DeliveryError("cannot reach http://am (refused)")
        sent.append((url, payload))
        return 200

    clock = _Clock()
    cfg = AlertingConfig(alertmanager_url="http://am/", attempts=2, retry_initial_s=0.01)
    pusher = AlertPusher(None, cfg, clock=clock, sender=sender)

    async def scenario() -> None:
        failing["on"] = False
        await pusher.push([_alert("a")])
        failing["on"] = True
        await pusher.push([])  # a's resolution cannot be delivered...
        assert pusher.am is not None
        assert pusher.am.failed == 2
        assert len(pusher.am.pending) == 1
        assert "refused" in (pusher.am.last_error or "")
        failing["on"] = False
        clock.t += 30
        await pusher.push([_alert("c")])  # ...and goes out with the next push

    asyncio.run(scenario())
    assert [url for url, _ in sent] == ["http://am/api/v2/alerts"] * 2
    last = sent[-1][1]
    by_server = {a["labels"]["server"]: a for a in last}
    assert by_server["a"]["endsAt"] == rfc3339(NOW)  # the resolution, as computed when it happened
    assert by_server["c"]["endsAt"] == rfc3339(NOW + 30 + 240)
    assert pusher.am is not None
    assert pusher.am.pending == []
    assert pusher.am.last_error is None


def test_webhook_gets_changes_only() -> None:
    bodies: list[Any] = []

    def sender(url: str, payload: Any, timeout: float) -> int:
        bodies.append(payload)
        return 200

    pusher = AlertPusher(
        None, AlertingConfig(webhook_url="http://hook"), clock=_Clock(), sender=sender
    )

    async def scenario() -> None:
        await pusher.push([_alert("a")])
        await pusher.push([_alert("a")])  # no change: nothing sent
        await pusher.push([])

    asyncio.run(scenario())
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
    assert bodies[0]["version"] == "1"
    assert bodies[0]["source"] == "fleetcast"
    assert [(a["status"], a["labels"]["server"]) for a in bodies[1]["alerts"]] == [
        ("resolved", "a")
    ]
    assert webhook_body([], [])["status"] == "resolved"


def test_post_json_to_a_real_server() -> None:
    received: list[Any] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], json.loads(body)))
            code = 200 if self.path == "/ok" else 400
            self.send_response(code)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"bad")

        def log_message(self, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        assert post_json(url + "/ok", [{"labels": {"a": "b"}}], 2.0) == 200
        with pytest.raises(DeliveryError, match="answered HTTP 400: bad"):
            post_json(url + "/no", {}, 2.0)
    finally:
        httpd.shutdown()
        httpd.server_close()
    with pytest.raises(DeliveryError, match="cannot reach"):
        post_json(url + "/ok", {}, 1.0)
    assert received[0] == ("/ok", "application/json", [{"labels": {"a": "b"}}])


def test_config_from_settings() -> None:
    from types import SimpleNamespace

    assert not AlertingConfig.from_settings(SimpleNamespace()).enabled
    cfg = AlertingConfig.from_settings(
        SimpleNamespace(alertmanager_url="http://am:9093", webhook_url=None, alert_resend_s=15)
    )
    assert cfg.enabled
    assert cfg.resend_s == 15.0
    assert cfg.webhook_url is None
    assert AlertPusher.from_settings(None, SimpleNamespace()) is None  # type: ignore[arg-type]


def test_a_forgotten_servers_alerts_are_resolved_without_waiting_for_a_forecast() -> None:
    """A forget changes the served set without a new forecast set: the loop follows
    ``runtime.current_changes``, so the receivers hear "resolved" at once, not at the next
    forecast or re-send (docs/OPERATIONS.md#forgetting-servers)."""
    from types import SimpleNamespace

    bodies: list[Any] = []
    alerts = [_alert("a"), _alert("b")]
    engine = SimpleNamespace(current=lambda: object(), alerts=lambda: list(alerts))
    runtime: Any = SimpleNamespace(engine=engine, current_changes=1)

    def sender(url: str, payload: Any, timeout: float) -> int:
        bodies.append(payload)
        return 200

    cfg = AlertingConfig(webhook_url="http://hook", resend_s=3600.0, poll_s=0.01)
    pusher = AlertPusher(runtime, cfg, clock=_Clock(), sender=sender)

    async def scenario() -> None:
        await pusher.start()
        for _ in range(200):
            if bodies:
                break
            await asyncio.sleep(0.01)
        alerts.remove(alerts[0])  # server "a" forgotten: its alerts leave the served set
        runtime.current_changes += 1
        for _ in range(200):
            if len(bodies) > 1:
                break
            await asyncio.sleep(0.01)
        await pusher.stop()

    asyncio.run(scenario())
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
    assert [(a["status"], a["labels"]["server"]) for a in bodies[1]["alerts"]] == [
        ("resolved", "a")
    ]
