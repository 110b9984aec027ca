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
FORECAST_SET = type("ForecastSet", (), {"data_time": "2026-09-21T13:45:00Z", "servers": [{}]})()
"""What the fake engines serve as their one forecast set (the pusher reads its data_time)."""


def _alert(server: str = "ppml0001", severity: str = "warning", **kw: Any) -> dict[str, Any]:
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
    item = firing_alert(_alert(severity="critical"), NOW, 240.0, generator_url="http://fc:8000/")
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
    # A name holding '/', '?' or '#' is one path segment (docs/API.md), not a path and query.
    odd = firing_alert(_alert(server="rack/7?db#1"), NOW, 240.0, generator_url="http://fc:8000")
    assert odd["generatorURL"] == "http://fc:8000/predictions/rack%2F7%3Fdb%231"
    dots = firing_alert(_alert(server=".."), NOW, 240.0, generator_url="http://fc:8000")
    assert dots["generatorURL"] == "http://fc:8000/predictions/%2E%2E"


class _Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


def _sev(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((a["labels"]["server"], a["labels"]["severity"]) for a in items)


def test_update_diffs_new_resolved_and_severity_changes() -> None:
    clock = _Clock()
    pusher = AlertPusher(
        None, AlertingConfig(alertmanager_url="http://am", resend_s=30), clock=clock
    )
    # A critical alert is two Alertmanager alerts: warning and critical.
    firing, new, resolved = pusher.update([_alert("a", "critical"), _alert("b", "warning")])
    assert _sev(firing) == [("a", "critical"), ("a", "warning"), ("b", "warning")]
    assert _sev(new) == _sev(firing)
    assert resolved == []
    assert pusher.firing == 3
    assert firing[0]["endsAt"] == rfc3339(NOW + 120)  # 4 x resend_s
    assert {a["startsAt"] for a in firing} == {"2026-09-21T13:50:00.000Z"}  # the engine's since
    # b goes critical: its critical alert fires, starting now; its warning one goes on.
    clock.t += 60
    firing, new, resolved = pusher.update([_alert("a", "critical"), _alert("b", "critical")])
    assert _sev(firing) == [
        ("a", "critical"),
        ("a", "warning"),
        ("b", "critical"),
        ("b", "warning"),
    ]
    assert _sev(new) == [("b", "critical")]
    assert new[0]["startsAt"] == rfc3339(NOW + 60)
    assert resolved == []
    # ... and keeps that start on every later push, not the engine's since.
    clock.t += 30
    firing, _, _ = pusher.update([_alert("a", "critical"), _alert("b", "critical")])
    (b_critical,) = [a for a in firing if _sev([a]) == [("b", "critical")]]
    assert b_critical["startsAt"] == rfc3339(NOW + 60)
    clock.t -= 30
    # a comes back to warning: only its critical alert resolves, now.
    clock.t += 60
    firing, new, resolved = pusher.update([_alert("a", "warning"), _alert("b", "critical")])
    assert _sev(firing) == [("a", "warning"), ("b", "critical"), ("b", "warning")]
    assert new == []
    assert _sev(resolved) == [("a", "critical")]
    assert resolved[0]["endsAt"] == rfc3339(NOW + 120)
    # The warning alerts kept the start the receivers were told first.
    assert {a["startsAt"] for a in firing if a["labels"]["severity"] == "warning"} == {
        "2026-09-21T13:50:00.000Z"
    }
    firing, new, resolved = pusher.update([])
    assert firing == []
    assert new == []
    assert _sev(resolved) == [("a", "warning"), ("b", "critical"), ("b", "warning")]
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
    engine = SimpleNamespace(current=lambda: FORECAST_SET, alerts=lambda: list(alerts))
    runtime: Any = SimpleNamespace(engine=engine, current_changes=1, forecast_sets=1)

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


# -- across restarts (alerting_state.py) ---------------------------------------------------


def _restarted(tmp_path: Any, bodies: list[Any], runtime: Any = None) -> AlertPusher:
    """A pusher built as the app builds it, on the state directory ``tmp_path``."""
    from types import SimpleNamespace

    settings = SimpleNamespace(webhook_url="http://hook", alert_resend_s=60, state_dir=tmp_path)
    pusher = AlertPusher.from_settings(runtime, settings)
    assert pusher is not None

    def sender(url: str, payload: Any, timeout: float) -> int:
        bodies.append(payload)
        return 200

    pusher._send = sender
    pusher._clock = _Clock()
    return pusher


def test_alerts_still_firing_after_a_restart_are_not_sent_again_as_new(tmp_path: Any) -> None:
    """Reproduced with a real appliance: each restart re-sent every firing alert to the
    webhook as a new one (the pusher's diff started empty)."""
    bodies: list[Any] = []
    first = _restarted(tmp_path, bodies)
    asyncio.run(first.push([_alert("a"), _alert("b")]))
    assert [len(b["alerts"]) for b in bodies] == [2]
    again = _restarted(tmp_path, bodies)  # the appliance restarted
    again.restore()
    assert again.firing == 2
    # The engine's first forecast after the restart raises "a" anew (a later since).
    asyncio.run(again.push([_alert("a", since="2026-09-21T16:00:00Z"), _alert("b")]))
    assert len(bodies) == 1  # no change: nothing sent
    asyncio.run(again.push([_alert("b")]))
    assert [(a["status"], a["labels"]["server"]) for a in bodies[-1]["alerts"]] == [
        ("resolved", "a")
    ]
    assert bodies[-1]["alerts"][0]["startsAt"] == "2026-09-21T13:50:00.000Z"  # the first start


def test_alerts_that_ended_while_the_appliance_was_down_are_resolved(tmp_path: Any) -> None:
    """Reproduced with a real appliance: a threshold raised during a restart (or calm data
    read by the backfill) ended an alert that the webhook then never heard resolved."""
    from types import SimpleNamespace

    bodies: list[Any] = []
    first = _restarted(tmp_path, bodies)
    asyncio.run(first.push([_alert("a")]))
    alerts: list[dict[str, Any]] = []  # the first forecast after the restart: calm
    engine = SimpleNamespace(current=lambda: FORECAST_SET, alerts=lambda: list(alerts))
    runtime: Any = SimpleNamespace(engine=engine, current_changes=1, forecast_sets=1)
    again = _restarted(tmp_path, bodies, runtime)
    again.config = AlertingConfig(webhook_url="http://hook", poll_s=0.01)

    async def scenario() -> None:
        await again.start()  # loads the state, then pushes the calm forecast
        for _ in range(500):
            if len(bodies) > 1:
                break
            await asyncio.sleep(0.01)
        await again.stop()

    asyncio.run(scenario())
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
    assert again.firing == 0
    assert json.loads((tmp_path / "alerts.json").read_text())["active"] == []


def test_a_damaged_alert_state_file_is_ignored_with_a_warning(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "alerts.json").write_text('{"version": 1, "active": [{"labels": 3}]}')
    bodies: list[Any] = []
    pusher = _restarted(tmp_path, bodies)
    pusher.restore()
    assert pusher.firing == 0
    assert "alerts.json is damaged" in caplog.text
    asyncio.run(pusher.push([_alert("a")]))
    assert [b["status"] for b in bodies] == ["firing"]
    saved = json.loads((tmp_path / "alerts.json").read_text())
    assert [a["labels"]["server"] for a in saved["active"]] == ["a"]


def test_undelivered_webhook_changes_stay_one_per_alert() -> None:
    """While the webhook is down a flapping alert added two changes per forecast, for as
    long as the outage lasted (memory, and one ever larger body when it came back)."""

    def down(url: str, payload: Any, timeout: float) -> int:
        raise DeliveryError("cannot reach http://hook (refused)")

    cfg = AlertingConfig(webhook_url="http://hook", attempts=1)
    pusher = AlertPusher(None, cfg, clock=_Clock(), sender=down)

    async def scenario() -> None:
        for _ in range(50):
            await pusher.push([_alert("a"), _alert("b")])
            await pusher.push([_alert("b")])

    asyncio.run(scenario())
    assert pusher.webhook is not None
    assert [(s, a["labels"]["server"]) for s, a in pusher.webhook.pending] == [
        ("firing", "b"),
        ("resolved", "a"),
    ]


@pytest.mark.parametrize("code", [301, 302, 307])
def test_a_receiver_that_redirects_is_a_failed_delivery(code: int) -> None:
    """Reproduced with a real Alertmanager behind a 301: urllib re-sent the POST as a GET,
    Alertmanager answered it with its (empty) alert list, HTTP 200, and every alert was
    counted delivered that Alertmanager never got."""
    posts: list[str] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(self.path)
            if self.path.startswith("/moved"):
                self.send_response(code)
                self.send_header("Location", "https://am.example:9093/secret/api/v2/alerts")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # what a followed redirect would reach
            posts.append("GET " + self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/moved/api/v2/alerts"
    try:
        with pytest.raises(DeliveryError) as info:
            post_json(url, [], 2.0)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert posts == ["/moved/api/v2/alerts"]  # not followed
    assert f"redirects to https://am.example:9093/… (HTTP {code})" in str(info.value)
    assert "secret" not in str(info.value)


def test_a_hanging_receiver_does_not_hold_back_the_other() -> None:
    # Deliveries ran one receiver after the other: an Alertmanager timing out (3 tries of
    # --timeout each) held the webhook's alerts back by its whole retry time on every push.
    # Here Alertmanager's send waits for the webhook's: one after the other it can only fail.
    webhook_sent = threading.Event()
    got: dict[str, Any] = {}

    def sender(url: str, payload: Any, timeout: float) -> int:
        if url.startswith("http://am"):
            if not webhook_sent.wait(10):
                raise DeliveryError("the webhook was not delivered meanwhile")
        else:
            webhook_sent.set()
        got[url] = payload
        return 200

    cfg = AlertingConfig(alertmanager_url="http://am/", webhook_url="http://hook/x", attempts=1)
    pusher = AlertPusher(None, cfg, clock=_Clock(), sender=sender)
    asyncio.run(pusher.push([_alert("a")]))
    assert pusher.am is not None
    assert pusher.webhook is not None
    assert (pusher.am.sent, pusher.am.failed) == (1, 0)
    assert (pusher.webhook.sent, pusher.webhook.failed) == (1, 0)
    assert set(got) == {"http://am/api/v2/alerts", "http://hook/x"}
