"""Failures of the Prometheus source and of alert delivery that must stay one clear message:
URLs checked at start, non-HTTP answers, expressions without the server label, receivers
that cannot be posted to. Real HTTP (and raw TCP) servers on local ports.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

import pytest

from fleetcast.appliance.alerting import AlertingConfig, AlertPusher, DeliveryError, post_json
from fleetcast.appliance.commands import main
from fleetcast.appliance.settings import SettingsError, build_settings
from fleetcast.appliance.sources.prometheus import PrometheusSource
from fleetcast.appliance.sources.promql import PromClient, PromError, resolve_queries, url_problem

from .conftest import TEST_QUERIES, FakePrometheus
from .promstack import Receiver
from .test_alerting import _alert
from .test_source import _config, _run, _until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from fleetcast.appliance.runtime import Runtime

    from .conftest import FakeClock

FOUR_PARTS = ("Why it matters:", "Fix:", "See docs/PROMETHEUS.md#")


def _four_parts(text: str) -> None:
    for part in FOUR_PARTS:
        assert text.count(part) == 1, (part, text)


# -- 1. URLs are checked when the settings are built --------------------------------------
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:9x90", "its port '9x90' is not a number in 1..65535"),
        ("http://127.0.0.1:70000", "its port '70000' is not a number in 1..65535"),
        ("http://127.0.0.1:0", "its port 0 is not in 1..65535"),
        ("ftp://127.0.0.1:9090", "its scheme is 'ftp', not http or https"),
        ("http://:9090", "it names no host"),
        ("http://[::1:9090", "it cannot be parsed"),
        ("http://127.0.0.1:9090/a b", "it contains whitespace or control characters"),
    ],
)
def test_url_problem(url: str, problem: str) -> None:
    assert (url_problem(url) or "").startswith(problem)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9090", "https://u:p@prom.example/prefix/", "http://[::1]:9090"]
)
def test_url_problem_accepts_usable_urls(url: str) -> None:
    assert url_problem(url) is None
    PromClient(url)  # no error either


@pytest.mark.parametrize(
    ("name", "url", "see"),
    [
        ("prometheus_url", "http://127.0.0.1:9x90", "docs/PROMETHEUS.md#configure"),
        ("webhook_url", "http://127.0.0.1:9x93/hook", "docs/PROMETHEUS.md#alerts"),
        ("alertmanager_url", "http://127.0.0.1:9x93", "docs/PROMETHEUS.md#alerts"),
        ("alertmanager_url", "http://127.0.0.1:99999", "docs/PROMETHEUS.md#alerts"),
        ("prometheus_url", "http://admin:S3cret@127.0.0.1:9x90", "docs/PROMETHEUS.md#configure"),
    ],
)
def test_bad_urls_are_refused_at_start(name: str, url: str, see: str) -> None:
    values = {"source": "prometheus", "prometheus_url": "http://127.0.0.1:9090", name: url}
    with pytest.raises(SettingsError) as info:
        build_settings(values, env={})
    message = str(info.value)
    assert message.startswith(f"Expected {name} to be an http(s) URL")
    # credentials and a webhook's path (its token, often) are never shown
    assert "S3cret" not in message
    assert "/hook" not in message
    assert repr(url.replace("admin:S3cret@", "").replace("/hook", "/…")) in message
    assert f"Fix: pass --{name.replace('_', '-')} http://HOST:" in message
    assert message.endswith(f"See {see}.")
    for part in ("Why it matters:", "Fix:", "See "):
        assert message.count(part) == 1


def test_serve_exits_2_with_one_message_for_a_bad_port(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for flags in (
        ["--source", "prometheus", "--prometheus-url", "http://127.0.0.1:9x90"],
        ["--webhook-url", "http://127.0.0.1:9x93/hook"],
        ["--alertmanager-url", "http://127.0.0.1:9x93"],
    ):
        code = main([*flags, "--state-dir", str(tmp_path / "state")])
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith("fleetcast serve: Expected ")
        assert "'9x9" in err
        assert "Traceback" not in err
        assert err.count("\n") == 1  # one line


# -- 3. answers that are not HTTP -------------------------------------------------------
class RawServer:
    """A TCP server on a local port that answers every connection with ``reply`` and
    closes it (an SSH banner, a truncated HTTP response)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(2.0)
                try:
                    conn.recv(65536)
                    conn.sendall(self.reply)
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):  # drain the request: close without a reset
                        pass
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


SSH_BANNER = b"SSH-2.0-OpenSSH_9.2\r\n"
TRUNCATED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    b'{"status":"success","data":{'
)


@pytest.fixture
def ssh_port() -> Iterator[RawServer]:
    server = RawServer(SSH_BANNER)
    yield server
    server.close()


@pytest.mark.parametrize(
    ("reply", "cause"),
    [(SSH_BANNER, "BadStatusLine: SSH-2.0-OpenSSH_9.2"), (TRUNCATED, "IncompleteRead")],
)
def test_non_http_answers_are_bad_response_errors(reply: bytes, cause: str) -> None:
    server = RawServer(reply)
    try:
        with pytest.raises(PromError) as info:
            PromClient(server.url, timeout_s=2.0).query("up", 1_790_000_000)
    finally:
        server.close()
    err = info.value
    assert err.kind == "bad_response"
    assert err.retryable
    assert err.detail.startswith(cause)
    assert str(err).startswith(f"Prometheus at {server.url} gave no valid HTTP answer")
    assert cause in str(err)
    _four_parts(str(err))


def test_ssh_port_logs_one_warning_then_recovers(
    model_dir: Path,
    tmp_path: Path,
    ssh_port: RawServer,
    fake_prom: FakePrometheus,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="fleetcast")

    async def body(runtime: Runtime) -> None:
        source = PrometheusSource(runtime, _config(ssh_port.url), clock=clock)
        await source.start()
        st = await _until(lambda: (s := source.source_status())["consecutive_failures"] >= 4 and s)
        assert st["healthy"] is False
        assert st["last_error"].startswith(f"Prometheus at {ssh_port.url} gave no valid HTTP")
        assert "BadStatusLine: SSH-2.0-OpenSSH_9.2" in st["last_error"]
        _four_parts(st["last_error"])
        # Pointed at Prometheus again (as after a config fix), it recovers.
        source._client = PromClient(fake_prom.url, 2.0)
        await _until(lambda: source.source_status()["healthy"])
        await source.stop()

    _run(model_dir, tmp_path, body)
    records = [r for r in caplog.records if r.name.endswith("sources.prometheus")]
    assert not any(r.exc_info for r in records)
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "BadStatusLine" in warnings[0].getMessage()
    assert [r.getMessage() for r in records if r.levelno == logging.INFO].count(
        "prometheus source: recovered"
    ) == 1


class _BrokenClient(PromClient):
    """Fault injection: a client whose range queries fail with an exception nothing expects."""

    def query_range(self, expr: str, start: float, end: float, step: int) -> list[Any]:
        raise KeyError("boom")


def test_unexpected_error_logs_its_traceback_once(
    model_dir: Path, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fleetcast")

    async def body(runtime: Runtime) -> None:
        cfg = _config("http://127.0.0.1:9")
        source = PrometheusSource(runtime, cfg, clock=clock, client=_BrokenClient(cfg.url))
        await source.start()
        st = await _until(lambda: (s := source.source_status())["consecutive_failures"] >= 4 and s)
        assert st["last_error"].startswith("a cycle failed unexpectedly (KeyError: 'boom')")
        _four_parts(st["last_error"])
        await source.stop()

    _run(model_dir, tmp_path, body)
    records = [r for r in caplog.records if r.name.endswith("sources.prometheus")]
    assert sum(1 for r in records if r.exc_info) == 1
    assert sum(1 for r in records if r.levelno >= logging.WARNING) == 1


# -- 4. expressions without the server label ----------------------------------------------
class UnlabelledMemPrometheus(FakePrometheus):
    """The fake, but mem_pct comes back as one series without labels (a bare ``sum``)."""

    def _answer(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        code, body = super()._answer(path, form)
        if form.get("query") == TEST_QUERIES["mem_pct"] and code == 200:
            result = body["data"]["result"][:1]
            for item in result:
                item["metric"] = {}
            body["data"]["result"] = result
        return code, body


def test_series_without_the_server_label_are_reported(
    model_dir: Path, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleetcast")
    fake = UnlabelledMemPrometheus(["ppml0001", "ppdb001"]).start()

    async def body(runtime: Runtime) -> None:
        cfg = _config(fake.url, backfill_steps=6, chunk_steps=48)
        source = PrometheusSource(runtime, cfg, clock=clock)
        await source.run_cycle()  # backfill (1 range query) + the open step (1 instant)
        st = source.source_status()
        assert st["samples_ingested"] == 0
        assert st["unlabelled_series"] == {"mem_pct": 2}
        assert st["gaps"] == 2 * 6 + 2  # every server, every step
        assert "ignored for mem_pct (see unlabelled_series)" in st["detail"]
        await source.run_cycle()
        assert source.source_status()["unlabelled_series"] == {"mem_pct": 3}

    try:
        _run(model_dir, tmp_path, body)
    finally:
        fake.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per metric, not per cycle
    text = warnings[0]
    assert f"the expression for mem_pct ({TEST_QUERIES['mem_pct']!r})" in text
    assert "without the 'instance' label" in text
    assert "'sum by (instance) (...)'" in text
    _four_parts(text)


def test_a_labelled_fleet_reports_no_unlabelled_series(
    model_dir: Path, tmp_path: Path, fake_prom: FakePrometheus, clock: FakeClock
) -> None:
    async def body(runtime: Runtime) -> None:
        source = PrometheusSource(runtime, _config(fake_prom.url, backfill_steps=2), clock=clock)
        await source.run_cycle()
        st = source.source_status()
        assert st["unlabelled_series"] == {}
        assert st["samples_ingested"] == 3 * 3

    _run(model_dir, tmp_path, body)
    assert resolve_queries(TEST_QUERIES)["mem_pct"] == TEST_QUERIES["mem_pct"]


# -- 2. alert delivery --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("http://127.0.0.1:9x93/hook", "InvalidURL"),
        ("http://127.0.0.1:{ssh}/hook", "BadStatusLine"),
    ],
)
def test_post_json_wraps_every_failure(url: str, cause: str, ssh_port: RawServer) -> None:
    with pytest.raises(DeliveryError, match=cause):
        post_json(url.format(ssh=ssh_port.port), [{"labels": {}}], 2.0)


def test_failed_webhook_deliveries_are_counted_and_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="fleetcast")
    alerts = [_alert(f"srv{i:02d}") for i in range(24)]
    cfg = AlertingConfig(webhook_url="http://127.0.0.1:9x93/hook", attempts=2, retry_initial_s=0.01)
    pusher = AlertPusher(None, cfg)
    hook = Receiver()

    async def scenario() -> None:
        await pusher.push(alerts)
        await pusher.push(alerts)  # no change, the 24 are still pending: tried again
        assert pusher.webhook is not None
        assert pusher.webhook.failed == 4
        assert pusher.webhook.sent == 0
        assert len(pusher.webhook.pending) == 24
        assert "InvalidURL" in (pusher.webhook.last_error or "")
        status = pusher.status()["receivers"]["webhook"]
        assert (status["failed"], status["pending"]) == (4, 24)
        pusher.webhook.url = hook.url  # the receiver is reachable again
        await pusher.push(alerts)

    try:
        asyncio.run(scenario())
    finally:
        hook.close()
    assert len(hook.bodies) == 1
    assert [(a["status"], a["labels"]["server"]) for a in hook.bodies[0]["alerts"]] == [
        ("firing", f"srv{i:02d}") for i in range(24)
    ]
    assert pusher.webhook is not None
    assert (pusher.webhook.sent, pusher.webhook.pending, pusher.webhook.last_error) == (1, [], None)
    records = [r for r in caplog.records if r.name.endswith("alerting")]
    assert not any(r.exc_info for r in records)
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("alerts to webhook failed: cannot post to http://127.0.0.1:9x93")
    assert "Fix: check that the receiver is up and that --webhook-url is right." in warnings[0]
    _four_parts(warnings[0])
    assert [r.getMessage() for r in records if r.levelno == logging.INFO] == [
        "alerts to webhook delivered again"
    ]


def test_any_sender_exception_is_a_counted_failure() -> None:
    calls = {"n": 0}

    def sender(url: str, payload: Any, timeout: float) -> int:
        calls["n"] += 1
        raise TypeError("Object of type datetime is not JSON serializable")

    cfg = AlertingConfig(alertmanager_url="http://am:9093", attempts=3, retry_initial_s=0.01)
    pusher = AlertPusher(None, cfg, sender=sender)
    asyncio.run(pusher.push([_alert("a")]))
    assert pusher.am is not None
    assert (calls["n"], pusher.am.failed, pusher.am.sent) == (3, 3, 0)
    assert pusher.am.last_error == "TypeError: Object of type datetime is not JSON serializable"
