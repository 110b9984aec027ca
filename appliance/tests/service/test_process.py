"""A real ``fleetcast serve`` process on a free port: end to end, restarts, kill -9, notify."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

GRACEFUL = (0,)
"""Exit codes of a graceful SIGTERM shutdown."""


def _actuals(url: str, name: str, steps: int) -> dict[str, Any]:
    """/history without the risk column (forecasts run asynchronously, actuals do not)."""
    body = httpx.get(f"{url}/history/{name}", params={"steps": steps}).json()
    body.pop("risk")
    return body


def _encoder(url: str) -> tuple[int, int]:
    model = httpx.get(f"{url}/status").json()["model"]
    return int(model["encoder_length"]), int(model["min_encoder_length"])


def test_ingest_to_forecast_over_http(server_factory: Any, svc: Any, model_dir: Path) -> None:
    server = server_factory()
    encoder, _ = _encoder(server.url)
    records = svc.make_records(steps=encoder + 2)
    response = httpx.post(f"{server.url}/metrics", json={"records": records})
    assert response.status_code == 200
    assert response.json()["accepted"] == len(records)

    def forecast() -> dict[str, Any] | None:
        body = httpx.get(f"{server.url}/predictions/current").json()
        return body if len(body["servers"]) == len(svc.SERVERS) else None

    body = svc.wait_until(forecast, timeout=20)
    assert body["fleet"]["servers"] == len(svc.SERVERS)
    # Over uvicorn too: HEAD is GET's status and headers with no body, and polling with
    # the ETag of an unchanged set is a bodiless 304 (docs/API.md#conditional-requests).
    got = httpx.get(f"{server.url}/predictions/current")
    head = httpx.head(f"{server.url}/predictions/current")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["etag"] == got.headers["etag"]
    polled = httpx.get(
        f"{server.url}/predictions/current", headers={"If-None-Match": got.headers["etag"]}
    )
    assert (polled.status_code, polled.content) == (304, b"")
    status = httpx.get(f"{server.url}/status")
    assert status.json()["servers"]["ready"] == len(svc.SERVERS)
    assert str(model_dir) not in status.text
    schema = httpx.get(f"{server.url}/schema/openapi.json")
    assert schema.status_code == 200
    assert server.stop() in GRACEFUL
    assert '"path":"/metrics"' in server.log()  # the access log line of the POST
    assert '"method":"HEAD"' in server.log()  # and of the HEAD, as it came
    assert "snapshot written" in server.log()  # the access log line of the POST


def test_restart_keeps_history(server_factory: Any, svc: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = server_factory(state)
    records = svc.make_records(steps=10)
    assert httpx.post(f"{first.url}/metrics", json={"records": records}).status_code == 200
    before = _actuals(first.url, "ppml0001", 10)
    assert first.stop() in GRACEFUL
    assert (state / "snapshot.npz").is_file()

    second = server_factory(state)
    after = _actuals(second.url, "ppml0001", 10)
    assert after == before
    assert httpx.get(f"{second.url}/status").json()["servers"]["known"] == len(svc.SERVERS)


def test_kill_9_loses_no_acknowledged_sample(server_factory: Any, svc: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = server_factory(state)
    acknowledged: list[dict[str, Any]] = []
    for k in range(6):  # several requests, each acknowledged before the next
        batch = svc.make_records(steps=2, start=svc.T0 + k * 600)
        response = httpx.post(f"{server.url}/metrics", json={"records": batch})
        assert response.status_code == 200
        acknowledged.extend(batch)
    before = _actuals(server.url, "ppdb001", 12)
    server.kill()  # SIGKILL: no shutdown hook, no final snapshot
    assert not (state / "snapshot.npz").exists()
    log = max(state.glob("log-*.wal"))
    with open(log, "ab") as fh:
        fh.write(b"FCW1\x00\x10\x00\x00torn")  # and a frame torn by the crash

    again = server_factory(state)
    after = _actuals(again.url, "ppdb001", 12)
    assert after == before
    sent = [r["cpu_pct"] for r in acknowledged if r["server_name"] == "ppdb001"]
    assert after["cpu_pct"] == sent
    persistence = httpx.get(f"{again.url}/status").json()["persistence"]
    assert persistence["replayed_on_start"] == len(acknowledged)
    assert persistence["dropped_torn_frames"] == 1


def test_notify_protocol_ready_watchdog_stopping(server_factory: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        server = server_factory(NOTIFY_SOCKET=path, WATCHDOG_USEC="300000")
        messages: list[str] = []

        def until(key: str) -> None:
            while not any(m.startswith(f"{key}=1") or f"\n{key}=1" in m for m in messages):
                messages.append(sock.recv(4096).decode())

        until("READY")
        ready = next(m for m in messages if "READY=1" in m)
        assert f"MAINPID={server.proc.pid}" in ready
        until("WATCHDOG")
        server.proc.send_signal(signal.SIGTERM)
        until("STOPPING")
        assert server.proc.wait(30) in GRACEFUL
    statuses = [line for m in messages for line in m.splitlines() if line.startswith("STATUS=")]
    assert statuses[0].startswith("STATUS=loading")
    assert sum(line.startswith("STATUS=loading") for line in statuses) == 1  # said once


def test_bad_model_dir_is_one_clear_error(tmp_path: Path, svc: Any) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = svc.run_serve(empty, tmp_path / "state", timeout=60)
    assert result.returncode != 0
    assert "model.onnx" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_is_exit_2_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fleetcast.appliance.commands", "--rate-limit", "lots"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "rate limit" in result.stderr
    assert "Traceback" not in result.stderr
    # An empty path was the current folder: the state went wherever it was started.
    empty = subprocess.run(
        [sys.executable, "-m", "fleetcast.appliance.commands", "--state-dir", ""],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert empty.returncode == 2
    assert "--state-dir: an empty path" in empty.stderr
    assert list(tmp_path.iterdir()) == []


def test_daemon_detaches_with_pid_file(model_dir: Path, tmp_path: Path, svc: Any) -> None:
    from fleetcast.appliance.daemon import wait_for_exit

    port = svc.free_port()
    pid_file = tmp_path / "run" / "fleetcast.pid"
    log_file = tmp_path / "fleetcast.log"
    daemon = svc.daemon_args(port, pid_file, log_file)
    result = subprocess.run(
        svc.serve_argv(model_dir, tmp_path / "state", *daemon),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pid = int(pid_file.read_text())
    assert f"pid {pid}" in result.stdout
    assert pid_file.parent.stat().st_mode & 0o777 == 0o700  # created private
    try:
        svc.wait_until(lambda: _healthy(port), timeout=60)
        again = subprocess.run(
            [
                sys.executable,
                "-m",
                "fleetcast.appliance.commands",
                "--model-dir",
                str(model_dir),
                "--port",
                str(svc.free_port()),
                "--daemon",
                "--pid-file",
                str(pid_file),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert again.returncode == 1
        assert "already runs" in again.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
        assert wait_for_exit(pid, 30)
    assert not pid_file.exists()
    assert re.search(r"ready after [\d.]+ s, serving on 127\.0\.0\.1:\d+", log_file.read_text())


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.05)
        return False


def test_sighup_reloads_the_model_and_a_refused_one_keeps_serving(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    # SIGHUP's default action ended the process at once (no final snapshot), and systemd's
    # Restart=on-failure counts a death by SIGHUP as clean: `systemctl reload` or a stray
    # HUP left the service down. It is now `systemctl reload` (ExecReload=kill -HUP).
    import shutil

    from .conftest import ServerProcess

    models = tmp_path / "model"
    shutil.copytree(model_dir, models)
    server = ServerProcess(models, tmp_path / "state").start()
    try:
        server.proc.send_signal(signal.SIGHUP)
        svc.wait_until(lambda: "model reloaded (SIGHUP)" in server.log(), timeout=30)
        assert httpx.get(f"{server.url}/health").status_code == 200
        (models / "model.onnx").write_bytes(b"not a model")
        server.proc.send_signal(signal.SIGHUP)
        svc.wait_until(lambda: "model reload refused (SIGHUP)" in server.log(), timeout=30)
        assert server.proc.poll() is None
        assert httpx.get(f"{server.url}/health").json()["model_loaded"]
        assert "docs/OPERATIONS.md#upgrade-a-model" in server.log()
        assert server.stop() in GRACEFUL
    finally:
        server.kill()


def test_a_refused_model_behind_a_link_names_the_folder_it_resolves_to(
    tmp_path: Path, svc: Any
) -> None:
    bundle = tmp_path / "models" / "tft_model_bad"
    bundle.mkdir(parents=True)
    (tmp_path / "models" / "latest").symlink_to("tft_model_bad")
    result = svc.run_serve(tmp_path / "models" / "latest", tmp_path / "state", timeout=60)
    assert result.returncode == 1
    assert f"is a link to {bundle}: " in result.stderr
    assert "model.onnx" in result.stderr


def test_a_sighup_while_starting_does_not_end_the_appliance(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    """A HUP between the first status and READY (loading the model, restoring the state)
    took the default action: the appliance died, for systemd a clean exit."""
    path = str(tmp_path / "notify.sock")
    port = svc.free_port()
    argv = svc.serve_argv(model_dir, tmp_path / "state", "--port", str(port))
    env = {**os.environ, "NOTIFY_SOCKET": path}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)
        log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            first = sock.recv(4096).decode()
            assert first.startswith("STATUS=loading")
            proc.send_signal(signal.SIGHUP)  # still loading: READY=1 is yet to come
            while "READY=1" not in sock.recv(4096).decode():
                pass
            assert proc.poll() is None
            assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) in GRACEFUL
        finally:
            proc.kill()
            proc.wait(30)
            log.close()
