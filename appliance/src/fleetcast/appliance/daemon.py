"""``--daemon``: detach from the terminal for hosts without systemd.

Classic double fork: the first child starts a new session (no controlling terminal), the
grandchild (the daemon) changes to ``/``, sets umask 027, points stdin at /dev/null and
stdout/stderr at the log file, writes the pid file and removes it at exit. The original
process returns the daemon's pid to print and exit. Under systemd use ``Type=notify``
instead (docs/OPERATIONS.md#systemd).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING

from fleetcast.contract.errors import ContractError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["DaemonError", "daemonize", "read_pid", "wait_for_exit"]

_SEE = "docs/OPERATIONS.md#without-systemd"


class DaemonError(ContractError):
    """The daemon cannot be started (already running, pid file not writable)."""


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


def daemonize(pid_file: Path, log_file: Path) -> int | None:
    """Fork into the background. Returns the daemon's pid in the original process and None
    in the daemon. Raises DaemonError when a live daemon already owns ``pid_file``."""
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
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    first = os.fork()
    if first > 0:  # original process: wait for the grandchild's pid, then return it
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        os.waitpid(first, 0)
        return int(data.decode() or "0") or None
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)  # the first child exits; the grandchild is re-parented to init
    os.chdir("/")
    os.umask(0o027)
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    pid = os.getpid()
    pid_file.write_text(f"{pid}\n")
    atexit.register(_remove_pid_file, pid_file, pid)
    os.write(write_end, str(pid).encode())
    os.close(write_end)
    return None


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
