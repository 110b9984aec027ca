"""Start-up failures of a real ``fleetcast serve`` process: one four-part message, no
traceback, a non-zero exit — in the foreground and with ``--daemon``, whose original
process waits for the daemon to say that it serves (or why not) before it exits."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from litestar.testing import TestClient

from fleetcast.appliance import commands
from fleetcast.appliance.app import create_app
from fleetcast.appliance.daemon import wait_for_exit

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.slow


def _parts_once(message: str) -> None:
    assert "Traceback" not in message
    assert message.count("Why it matters:") == 1, message
    assert message.count("Fix:") == 1, message
    assert message.count(" See docs/") == 1, message


def _serve(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetcast.appliance.commands", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(autouse=True)
def _logging_levels_restored() -> Iterator[None]:
    """An in-process ``commands.serve`` configures logging; later tests must not see it."""
    root, ours = logging.getLogger(), logging.getLogger("fleetcast")
    levels = (root.level, ours.level)
    yield
    root.setLevel(levels[0])
    ours.setLevel(levels[1])


@pytest.fixture
def serve_here(capsys: pytest.CaptureFixture[str]) -> Any:
    """``commands.serve`` in this process: (exit code, what it wrote to stderr)."""

    def run(settings: Any) -> tuple[int, str]:
        previous = signal.getsignal(signal.SIGTERM)
        try:
            status = commands.serve(settings)
        finally:
            signal.signal(signal.SIGTERM, previous)  # serve() installs its own handler
        return status, capsys.readouterr().err

    return run


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "env", "name"),
    [
        (["--intra-op-threads", "-3"], {}, "--intra-op-threads"),
        (["--history-steps", "-5"], {}, "--history-steps"),
        ([], {"FLEETCAST_LOG_LEVEL": "BOGUS"}, "FLEETCAST_LOG_LEVEL"),
        (["--demo", "--demo-seed", "-1"], {}, "--demo-seed"),
        (["--rate-limit", "5/fortnight"], {}, "rate limit"),
        (["--source", "prometheus"], {}, "--prometheus-url"),
        (["--demo", "--demo-servers", "10", "--capacity", "5"], {}, "--capacity"),
    ],
)
def test_invalid_settings_are_exit_2_with_one_message(
    args: list[str], env: dict[str, str], name: str, model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    common = ["--model-dir", str(model_dir), "--state-dir", str(tmp_path / "state")]
    result = _serve(*common, "--port", str(svc.free_port()), *args, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert name in result.stderr
    _parts_once(result.stderr)
    assert not (tmp_path / "state").exists()  # nothing was started


def test_bad_threads_with_saved_state_is_a_settings_error(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    """Not "the saved state does not fit the model": the setting is what is wrong."""
    state = tmp_path / "state"
    settings = svc.make_settings(model_dir, state)
    with TestClient(create_app(settings)) as client:
        records = svc.make_records(steps=4)
        assert client.post("/metrics", json={"records": records}).status_code == 200
    assert (state / "snapshot.npz").is_file()
    result = _serve(
        "--model-dir", str(model_dir), "--state-dir", str(state), "--intra-op-threads", "-3"
    )
    assert result.returncode == 2
    assert "intra_op_threads" in result.stderr
    assert "saved state" not in result.stderr
    _parts_once(result.stderr)


def test_state_dir_that_is_a_file(model_dir: Path, tmp_path: Path, svc: Any) -> None:
    state = tmp_path / "state"
    state.write_text("not a directory")
    result = _serve(
        "--model-dir", str(model_dir), "--state-dir", str(state), "--port", str(svc.free_port())
    )
    assert result.returncode == 1
    assert f"Cannot use the state directory {state}" in result.stderr
    assert "is a file, not a directory" in result.stderr
    assert "docs/OPERATIONS.md#state" in result.stderr
    assert "[Errno" not in result.stderr
    # The socket was bound before the state was refused: the log said "listening on", as
    # if the appliance served (journald readers took it for a started one).
    assert "listening on" not in result.stderr
    assert "(starting)" in result.stderr
    _parts_once(result.stderr)


@pytest.mark.parametrize(
    ("code", "reason", "fix"),
    [
        (errno.EROFS, "Read-only file system", "StateDirectory=fleetcast"),
        (errno.EACCES, "Permission denied", "chown/chmod"),
        (errno.ENOSPC, "No space left on device", "free space"),
    ],
)
def test_state_dir_os_errors_at_start_are_four_parts(
    code: int,
    reason: str,
    fix: str,
    model_dir: Path,
    tmp_path: Path,
    svc: Any,
    monkeypatch: pytest.MonkeyPatch,
    serve_here: Any,
) -> None:
    """The OS refusing the state directory (a read-only mount, a foreign owner, a full
    disk: cannot be arranged for a test running as root) is one message with the path,
    the OS's reason and the fix, and exit code 1 — not a bare errno line."""
    from fleetcast.appliance.persistence import StateStore

    state = tmp_path / "state"
    wal = state / "log-00000000.wal"

    def refuse(self: Any) -> Any:
        raise OSError(code, reason, str(wal))

    monkeypatch.setattr(StateStore, "recover", refuse)
    settings = svc.make_settings(model_dir, state, port=svc.free_port())
    status, err = serve_here(settings)
    assert status == 1
    assert f"Cannot use the state directory {state}: {reason} ({wal})" in err
    assert fix in err
    assert "docs/OPERATIONS.md#state" in err
    assert "[Errno" not in err
    _parts_once(err)


def test_port_in_use_is_one_message(model_dir: Path, tmp_path: Path, held_port: int) -> None:
    result = _serve(
        "--model-dir", str(model_dir), "--state-dir", str(tmp_path / "s"), "--port", str(held_port)
    )
    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{held_port}" in result.stderr
    assert "already in use" in result.stderr
    _parts_once(result.stderr.split("fleetcast serve: ")[-1])


def test_port_in_use_is_reported_before_the_model_is_loaded(tmp_path: Path, held_port: int) -> None:
    """The port is bound first: a taken port is the message even when the model folder is
    missing too, and the state directory is left unlocked and untouched."""
    result = _serve(
        "--model-dir", str(tmp_path / "no-model"), "--state-dir", str(tmp_path / "s"),
        "--port", str(held_port),
    )  # fmt: skip
    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{held_port}" in result.stderr
    assert "model" not in result.stderr.split("fleetcast serve: ")[-1].split(".")[0]
    assert not (tmp_path / "s").exists()


def test_failed_lifespan_start_is_one_message(
    model_dir: Path, tmp_path: Path, svc: Any, monkeypatch: pytest.MonkeyPatch, serve_here: Any
) -> None:
    """A failure after the model loaded (here the demo source's start) ends the start with
    the reason in one line, not only uvicorn's traceback."""
    from fleetcast.appliance.demo import DemoSource

    async def broken(self: Any) -> None:
        raise ValueError("simulator refused its parameters")

    monkeypatch.setattr(DemoSource, "start", broken)
    settings = svc.make_settings(
        model_dir, tmp_path / "state", demo=True, demo_servers=4, port=svc.free_port()
    )
    status, err = serve_here(settings)
    assert status == 1
    err = err.split("fleetcast serve: ")[-1]
    assert "did not start serving: ValueError: simulator refused its parameters." in err
    _parts_once(err)


def _daemon(svc: Any, model_dir: Path, tmp_path: Path, port: int) -> list[str]:
    files = (tmp_path / "fleetcast.pid", tmp_path / "fleetcast.log")
    folders = ["--model-dir", str(model_dir), "--state-dir", str(tmp_path / "state")]
    return [*folders, *svc.daemon_args(port, *files)]


def test_daemon_returns_once_it_serves(model_dir: Path, tmp_path: Path, svc: Any) -> None:
    port = svc.free_port()
    result = _serve(*_daemon(svc, model_dir, tmp_path, port))
    assert result.returncode == 0, result.stderr
    pid = int((tmp_path / "fleetcast.pid").read_text())
    try:
        assert f"daemon started, pid {pid}, serving on http://127.0.0.1:{port}" in result.stdout
        # No polling: the original process returned after the daemon started serving.
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    finally:
        os.kill(pid, signal.SIGTERM)
        assert wait_for_exit(pid, 30)


def test_daemon_reports_a_refused_model(tmp_path: Path, svc: Any) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _serve(*_daemon(svc, empty, tmp_path, svc.free_port()))
    assert result.returncode == 1
    assert "daemon started" not in result.stdout
    assert "model.onnx" in result.stderr
    _parts_once(result.stderr)
    assert not (tmp_path / "fleetcast.pid").exists()
    assert "model.onnx" in (tmp_path / "fleetcast.log").read_text()  # and in its log


def test_daemon_reports_port_in_use(
    model_dir: Path, tmp_path: Path, held_port: int, svc: Any
) -> None:
    result = _serve(*_daemon(svc, model_dir, tmp_path, held_port))
    assert result.returncode == 1
    assert "daemon started" not in result.stdout
    assert f"Cannot listen on 127.0.0.1:{held_port}" in result.stderr
    _parts_once(result.stderr)
    assert not (tmp_path / "fleetcast.pid").exists()


def test_daemon_with_unwritable_log_file_fails_before_forking(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    args = _daemon(svc, model_dir, tmp_path, svc.free_port())
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    args[args.index("--log-file") + 1] = str(blocker / "fleetcast.log")
    result = _serve(*args)
    assert result.returncode == 1
    assert f"Cannot use the log file {blocker / 'fleetcast.log'}" in result.stderr
    assert "--log-file" in result.stderr
    _parts_once(result.stderr)


_FAKE_DAEMON = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from fleetcast.appliance.daemon import Started, daemonize

    out = daemonize(Path(sys.argv[1]), Path(sys.argv[2]), start_timeout_s=1.0)
    if isinstance(out, Started):
        print(out.pid, out.ok, out.message, sep="|")
        sys.exit(0)
    if sys.argv[3] == "hang":
        time.sleep(120)  # never reports
    os._exit(3)  # dies without a word
    """
)


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        ("hang", "did not report serving within 1 s, so it was stopped"),
        ("die", "exited during start without saying why"),
    ],
)
def test_daemon_that_never_reports_is_a_failure(behaviour: str, says: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "d.pid"
    log_file = tmp_path / "d.log"
    result = subprocess.run(
        [sys.executable, "-c", _FAKE_DAEMON, str(pid_file), str(log_file), behaviour],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    pid, ok, message = result.stdout.strip().split("|")
    assert ok == "False"
    assert says in message
    assert str(log_file) in message
    _parts_once(message)
    assert wait_for_exit(int(pid), 15)  # no daemon is left behind
    assert not pid_file.exists()


def test_only_one_daemon_holds_a_pid_file(tmp_path: Path) -> None:
    """Two daemons started at once both pass the "already running?" check; the pid file's
    lock decides: the loser neither overwrites the winner's pid nor may remove it later."""
    from fleetcast.appliance.daemon import _hold_pid_file, read_pid

    pid_file = tmp_path / "fleetcast.pid"
    assert _hold_pid_file(pid_file, os.getpid())
    assert not _hold_pid_file(pid_file, 999_999)
    assert read_pid(pid_file) == os.getpid()


def test_an_open_address_without_a_key_is_warned_about(
    model_dir: Path, tmp_path: Path, svc: Any
) -> None:
    # Bound to 0.0.0.0 with no key, the log said only "serving on 0.0.0.0:…": anyone on the
    # network could post metrics, reload the model or forget servers, and nothing said so.
    server = _serve(
        "--model-dir", str(tmp_path / "missing"), "--state-dir", str(tmp_path / "state"),
        "--host", "0.0.0.0", "--port", str(svc.free_port()),
    )  # fmt: skip
    assert "without an API key: anyone who reaches this address can post" in server.stderr
    assert "docs/OPERATIONS.md#api-key" in server.stderr
    local = _serve(
        "--model-dir", str(tmp_path / "missing"), "--state-dir", str(tmp_path / "state2"),
        "--port", str(svc.free_port()),
    )  # fmt: skip
    assert "without an API key" not in local.stderr  # loopback: the default, no warning
