"""``--daemon``: detach from the terminal for hosts without systemd.

Classic double fork: the first child starts a new session (no controlling terminal), the
grandchild (the daemon) changes to ``/``, sets umask 027, points stdin at /dev/null and
stdout/stderr at the log file, writes the pid file and removes it at exit. The pid file and
the log file are opened before the fork, so a path that cannot be written is an error on
the terminal. The original process then waits, at most ``start_timeout_s``, for the daemon
to report over a pipe that it serves — or why it could not start — and returns that
outcome to print (exit 0 or 1); a daemon that does not report in time is stopped. Nothing
heavy (ONNX Runtime, Numba) is loaded before the fork. Under systemd use ``Type=notify``
instead (docs/OPERATIONS.md#systemd).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleetcast.contract.errors import ContractError, explain

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "START_TIMEOUT_S",
    "DaemonError",
    "StartReport",
    "Started",
    "daemonize",
    "read_pid",
    "wait_for_exit",
]

_SEE = "docs/OPERATIONS.md#without-systemd"

START_TIMEOUT_S = 180.0
"""How long ``fleetcast serve --daemon`` waits for the daemon to serve (the systemd unit's
``TimeoutStartSec=180``): a first start compiles the Numba kernels and loads the model."""


class DaemonError(ContractError):
    """The daemon cannot be started (already running, pid file not writable)."""


@dataclass(frozen=True)
class Started:
    """What the original process learnt from the daemon (returned by :func:`daemonize`)."""

    pid: int | None
    """The daemon's pid (None when it never reported one)."""
    ok: bool
    """True when the daemon serves; False when it failed, died or timed out (and is gone)."""
    message: str
    """``serving on ...``, or the four-part reason it is not serving."""


class StartReport:
    """The daemon's end of the pipe to the original process: say once that it serves
    (:meth:`ready`) or why it cannot (:meth:`failed`). Later calls do nothing."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def _send(self, kind: str, text: str) -> None:
        if self._fd is None:
            return
        data = f"{kind} {' '.join(text.split())}\n".encode()
        with contextlib.suppress(OSError):  # the original process may be gone (Ctrl-C)
            while data:
                data = data[os.write(self._fd, data) :]
        if kind != "pid":
            self.close()

    def pid(self, pid: int) -> None:
        """Tell the original process our pid (first message)."""
        self._send("pid", str(pid))

    def ready(self, text: str) -> None:
        """The daemon serves (``text``: where)."""
        self._send("ready", text)

    def failed(self, text: str) -> None:
        """The daemon cannot start (``text``: the four-part reason)."""
        self._send("failed", text)

    def close(self) -> None:
        """Close the pipe (the original process then sees end-of-file)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def daemonize(
    pid_file: Path, log_file: Path, *, start_timeout_s: float = START_TIMEOUT_S
) -> Started | StartReport:
    """Fork into the background.

    In the original process: waits until the daemon reports (at most ``start_timeout_s``)
    and returns :class:`Started`. In the daemon: returns the :class:`StartReport` it must
    call once it serves or fails. Raises DaemonError when a live daemon already owns
    ``pid_file``, OSError when the pid or log file cannot be opened (before any fork).
    """
    pid_file = pid_file.absolute()
    log_file = log_file.absolute()
    running = read_pid(pid_file)
    if running is not None:
        raise DaemonError(
            f"Another appliance (pid {running}) already runs with this pid file.",
            "two appliances on one state directory would corrupt its log.",
            f"stop it first (kill {running}) or use another --state-dir / --pid-file.",
            _SEE,
        )
    # Private, like the state directory they usually sit in (created here, before the fork).
    pid_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    try:
        os.close(os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except BaseException:
        os.close(log_fd)
        raise
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    first = os.fork()
    if first > 0:  # the original process
        os.close(write_end)
        os.close(log_fd)
        try:
            started = _wait(first, read_end, start_timeout_s, log_file)
        finally:
            os.close(read_end)
        if not started.ok:
            if started.pid is not None:
                wait_for_exit(started.pid, 10.0)  # a failed daemon exits (and is reaped)
            if read_pid(pid_file) is None:
                with contextlib.suppress(OSError):
                    pid_file.unlink()  # empty or naming a dead daemon
        return started
    try:
        os.close(read_end)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)  # the first child exits; the grandchild is re-parented to init
        os.chdir("/")
        os.umask(0o027)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        report = StartReport(write_end)
        pid = os.getpid()
        report.pid(pid)
        if not _hold_pid_file(pid_file, pid):
            report.failed(
                explain(
                    f"Another appliance started with the pid file {pid_file} at the same "
                    "time and holds it.",
                    "two appliances on one state directory would corrupt its log.",
                    f"stop the other one first (kill $(cat {pid_file})), or use another "
                    "--state-dir / --pid-file.",
                    _SEE,
                )
            )
            os._exit(1)  # no atexit: the pid file is the other daemon's
        atexit.register(_remove_pid_file, pid_file, pid)
    except BaseException as exc:  # never return into the caller's code from a broken child
        with contextlib.suppress(BaseException):
            StartReport(write_end).failed(
                explain(
                    f"The daemon could not detach ({type(exc).__name__}: {exc}).",
                    "nothing serves.",
                    f"check the pid file {pid_file} and the log file {log_file}.",
                    _SEE,
                )
            )
        os._exit(1)
    return report


def _wait(first: int, fd: int, timeout_s: float, log_file: Path) -> Started:
    """Read the daemon's pid and outcome from ``fd`` until it reports, dies or times out."""
    os.waitpid(first, 0)  # the first child exits as soon as it forked the daemon
    deadline = time.monotonic() + timeout_s
    buffer = b""
    pid: int | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return _timed_out(pid, timeout_s, log_file)
        chunk = os.read(fd, 65536)
        if not chunk:
            return _died(pid, log_file)
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            kind, _, text = line.decode("utf-8", "replace").partition(" ")
            if kind == "pid" and text.isdigit():
                pid = int(text)
            elif kind in ("ready", "failed"):
                return Started(pid, kind == "ready", text)


def _died(pid: int | None, log_file: Path) -> Started:
    return Started(
        pid,
        False,
        explain(
            f"The daemon{_pid(pid)} exited during start without saying why.",
            "nothing serves.",
            f"read its log file {log_file} (the traceback is there), or run the same "
            "command without --daemon to see the error on the terminal.",
            _SEE,
        ),
    )


def _timed_out(pid: int | None, timeout_s: float, log_file: Path) -> Started:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_for_exit(pid, 10.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return Started(
        pid,
        False,
        explain(
            f"The daemon{_pid(pid)} did not report serving within {timeout_s:g} s, so it "
            "was stopped.",
            "a start that hangs would leave a process that serves nothing.",
            f"read its log file {log_file} to see where it stopped; run the same command "
            "without --daemon once to watch the start (the first one compiles the Numba "
            "kernels).",
            _SEE,
        ),
    )


def _pid(pid: int | None) -> str:
    return "" if pid is None else f" (pid {pid})"


def _hold_pid_file(pid_file: Path, pid: int) -> bool:
    """Write ``pid`` into ``pid_file`` under an exclusive lock held for the life of the
    process (the descriptor stays open); False when another process holds the lock (two
    daemons started at once: the loser must not overwrite, nor later remove, the file)."""
    fd = os.open(pid_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{pid}\n".encode())
    return True


def _remove_pid_file(pid_file: Path, pid: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        if int(pid_file.read_text().strip()) == pid:
            pid_file.unlink()


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """True when ``pid`` is gone within ``timeout_s`` (for tests and stop scripts)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
