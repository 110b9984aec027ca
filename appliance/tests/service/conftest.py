"""Helpers of the service tests: synthetic records and log columns, settings, ``fleetcast
serve`` command lines, a real server process, TestClients and StateStores that close.

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

    from litestar.testing import TestClient

    from fleetcast.appliance.persistence import Columns, StateStore
    from fleetcast.appliance.schemas import ErrorBody

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


def make_columns(n: int, start: int = 0) -> Columns:
    """``n`` rows for a sample log frame, one server each (ppml0000, ...), at the steps
    from ``start`` on; every other state null."""
    import numpy as np

    from fleetcast.appliance.persistence import Columns

    ts = np.arange(start, start + n, dtype=np.int64) * 300
    metrics = np.column_stack([np.arange(n) + k for k in range(4)]).astype(np.float64)
    return Columns(
        ts=ts,
        metrics=metrics,
        server=[f"ppml{i:04d}" for i in range(n)],
        state=["healthy" if i % 2 else None for i in range(n)],
        profile=[None] * n,
    )


def error_body(response: Any, status: int) -> ErrorBody:
    """The error body of ``response``, after checking its status and that it has all four
    parts (docs/API.md#errors)."""
    import msgspec

    from fleetcast.appliance.schemas import ErrorBody

    assert response.status_code == status, response.text
    body = msgspec.convert(response.json(), ErrorBody)
    assert body.error
    assert body.detail
    assert body.fix
    assert body.see
    return body


def four_parts(message: str) -> None:
    """``message`` says what, why, how to fix, and points into docs/OPERATIONS.md."""
    assert "Why it matters:" in message
    assert "Fix:" in message
    assert "See docs/OPERATIONS.md#" in message


def make_settings(model_dir: Path, state_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: small capacity, no rate limit unless asked."""
    values: dict[str, Any] = {
        "model_dir": model_dir,
        "state_dir": state_dir,
        "capacity": 256,
        "rate_limit": "off",
        # Litestar's TestClient sends Host: testserver.local (test_http_hardening checks
        # the real default: the loopback names)
        "allowed_hosts": "testserver.local",
    }
    values.update(overrides)
    return build_settings(values, env={})


def serve_argv(model_dir: Path, state_dir: Path, *args: str) -> list[str]:
    """The command line of ``fleetcast serve`` (this interpreter, ``-m``) on ``model_dir``
    and ``state_dir``, then ``args``."""
    folders = ["--model-dir", str(model_dir), "--state-dir", str(state_dir)]
    return [sys.executable, "-m", "fleetcast.appliance.commands", *folders, *args]


def daemon_args(port: int, pid_file: Path, log_file: Path) -> list[str]:
    """The ``fleetcast serve`` flags of a ``--daemon`` on ``port`` (capacity 64)."""
    files = ["--pid-file", str(pid_file), "--log-file", str(log_file)]
    return ["--port", str(port), "--daemon", *files, "--capacity", "64"]


def run_serve(
    model_dir: Path, state_dir: Path, port: int = 1, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``fleetcast serve`` that is expected to refuse the start (exit 1, one message)."""
    return subprocess.run(
        serve_argv(model_dir, state_dir, "--port", str(port)),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
        limits = ["--capacity", "256", "--rate-limit", "off"]
        cmd = serve_argv(self.model_dir, self.state_dir, "--port", str(self.port), *limits)
        cmd.extend(self.extra)
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
def client_for(model_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """Open TestClients for settings overrides; each is closed (lifespan stopped) at the end."""
    from litestar.testing import TestClient

    from fleetcast.appliance.app import create_app

    stack = contextlib.ExitStack()

    def open_client(state: str = "state", **overrides: Any) -> TestClient[Any]:
        settings = make_settings(model_dir, tmp_path / state, **overrides)
        return stack.enter_context(TestClient(create_app(settings)))

    with stack:
        yield open_client


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Any]:
    """Open StateStores on ``tmp_path/state``; every one is closed at the end."""
    from fleetcast.appliance.persistence import StateStore

    opened: list[StateStore] = []

    def open_store(state: Path | None = None, **kwargs: Any) -> StateStore:
        store = StateStore(state or tmp_path / "state", **kwargs)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def svc() -> Any:
    """The helpers above as one namespace (test modules cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        API_KEY=API_KEY,
        T0=T0,
        SERVERS=SERVERS,
        make_records=make_records,
        make_columns=make_columns,
        make_settings=make_settings,
        error_body=error_body,
        four_parts=four_parts,
        serve_argv=serve_argv,
        daemon_args=daemon_args,
        run_serve=run_serve,
        wait_until=wait_until,
        free_port=free_port,
    )
