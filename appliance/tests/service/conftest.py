"""Helpers of the service tests: synthetic records, settings, a real server process.

No torch, no onnx: the appliance's own test job runs without them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from fleetcast.appliance.settings import Settings, build_settings
from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

API_KEY = "test-key-0123456789abcdef"
T0 = 1_790_000_000 // STEP_SECONDS * STEP_SECONDS
"""A step-aligned start time for synthetic data (2026-09-21)."""
SERVERS = ("ppml0001", "ppdb001", "ppweb001")


def make_records(
    names: tuple[str, ...] | list[str] = SERVERS,
    steps: int = 30,
    start: int = T0,
    per_step: int = 1,
) -> list[dict[str, Any]]:
    """Deterministic contract records: ``per_step`` samples per server and step, step-major."""
    out = []
    for k in range(steps):
        for j in range(per_step):
            for i, name in enumerate(names):
                out.append(
                    {
                        "timestamp": start + k * STEP_SECONDS + j * (STEP_SECONDS // per_step),
                        "server_name": name,
                        "cpu_pct": 30.0 + (k * 7 + i * 3) % 40,
                        "mem_pct": 50.0 + (k % 5),
                        "disk_io_mb_s": 2.0 + i,
                        "latency_ms": 20.0 + (k % 3),
                        "state": "healthy",
                        "profile": None,
                    }
                )
    return out


def make_settings(model_dir: Path, state_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: small capacity, no rate limit unless asked."""
    values: dict[str, Any] = {
        "model_dir": model_dir,
        "state_dir": state_dir,
        "capacity": 256,
        "rate_limit": "off",
    }
    values.update(overrides)
    return build_settings(values, env={})


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@dataclass
class ServerProcess:
    """``python -m fleetcast.appliance.commands ...`` on a free port, stdout/err in a file."""

    model_dir: Path
    state_dir: Path
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    ready_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.port = free_port()
        self.log_path = self.state_dir.parent / f"server-{self.port}.log"
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "fleetcast.appliance.commands",
            "--model-dir",
            str(self.model_dir),
            "--state-dir",
            str(self.state_dir),
            "--port",
            str(self.port),
            "--capacity",
            "256",
            "--rate-limit",
            "off",
            *self.extra,
        ]
        env = {**os.environ, **self.env}
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    self.ready_s = time.monotonic() - started
                    return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"server not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait (graceful: final snapshot); returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL (no shutdown code runs) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server_factory(model_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """Start real servers; every one still running at the end is killed."""
    started: list[ServerProcess] = []

    def start(
        state_dir: Path | None = None, extra: list[str] | None = None, **env: str
    ) -> ServerProcess:
        server = ServerProcess(
            model_dir, state_dir or tmp_path / "state", list(extra or []), dict(env)
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def svc() -> Any:
    """The helpers above as one namespace (test modules cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        API_KEY=API_KEY,
        T0=T0,
        SERVERS=SERVERS,
        make_records=make_records,
        make_settings=make_settings,
        wait_until=wait_until,
        free_port=free_port,
    )
