"""Fixtures of the dashboard tests: a real appliance, a real dashboard, Debian's Chromium.

``appliance``: ``fleetcast serve --demo`` on a free port with the committed ONNX fixture
(appliance/tests/fixtures/tiny_model.onnx). ``dashboard``: ``fleetcast dashboard`` pointed at
it. Both are real processes, started once per test session and stopped at its end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO = Path(__file__).resolve().parents[2]
TINY_ONNX = REPO / "appliance" / "tests" / "fixtures" / "tiny_model.onnx"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "dashboard"


def free_port() -> int:
    """A TCP port nobody listens on right now (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A child process serving HTTP on ``url``; ``log`` collects its output."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s (idempotent)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("FLEETCAST_API_KEY", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fleetcast.contract.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
        )


def _wait_http(
    process: Process,
    path: str,
    timeout_s: float,
    ready: Callable[[httpx.Response], bool] = lambda r: True,
) -> None:
    """Poll ``path`` until it answers 200 and ``ready(response)`` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.url} exited early:\n{process.output()[-3000:]}")
        try:
            response = httpx.get(process.url + path, timeout=2)
            if response.status_code == 200 and ready(response):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.stop()
    raise RuntimeError(
        f"{process.url}{path} not ready in {timeout_s} s:\n{process.output()[-3000:]}"
    )


@pytest.fixture(scope="session")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A real appliance (`fleetcast serve --demo`) with the tiny ONNX fixture, forecasting."""
    if not TINY_ONNX.is_file():
        pytest.fail(f"The ONNX fixture {TINY_ONNX} is missing; the appliance cannot start.")
    root = tmp_path_factory.mktemp("appliance")
    model_dir = root / "model"
    model_dir.mkdir()
    shutil.copyfile(TINY_ONNX, model_dir / "model.onnx")
    sidecar = TINY_ONNX.with_name(TINY_ONNX.name + ".sha256")
    if sidecar.is_file():
        digest = sidecar.read_text().split()[0]
        (model_dir / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    port = free_port()
    args = [
        "serve", "--demo", "--model-dir", str(model_dir), "--port", str(port),
        "--state-dir", str(root / "state"), "--speed", "240", "--demo-servers", "40",
    ]  # fmt: skip
    process = Process(
        _start(args, root / "appliance.log"), f"http://127.0.0.1:{port}", root / "appliance.log"
    )
    try:
        # 200 with an empty set until the first forecast: wait for servers in it.
        _wait_http(process, "/predictions/current", 90, lambda r: bool(r.json()["servers"]))
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def dashboard(appliance: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A real dashboard (`fleetcast dashboard`) on a free port, refreshing every second."""
    root = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    args = [
        "dashboard", "--appliance", appliance.url, "--port", str(port),
        "--refresh-seconds", "1",
    ]  # fmt: skip
    process = Process(
        _start(args, root / "dashboard.log"), f"http://127.0.0.1:{port}", root / "dashboard.log"
    )
    try:
        _wait_http(process, "/liveness", 60)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, object]:
    """Debian's Chromium (Playwright's own download does not work here), sandbox off for root."""
    if not CHROMIUM.exists():
        pytest.fail(
            "Chromium is missing: run `make system-deps` (apt-get install chromium). "
            "See docs/DASHBOARD.md#tests."
        )
    return {
        "executable_path": str(CHROMIUM),
        "args": [
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
        ],
    }  # fmt: skip


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``test-artifacts/dashboard/``: screenshots of every panel."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
