"""sd_notify datagrams against sockets the test binds (path and abstract)."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from fleetcast.appliance.notify import Notifier

if TYPE_CHECKING:
    from pathlib import Path


def _fields(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().splitlines())


def test_notify_to_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
        assert notifier.enabled
        assert notifier.watchdog_interval_s == 15.0
        assert notifier.ready("up")
        assert _fields(sock.recv(4096)) == {
            "READY": "1",
            "STATUS": "up",
            "MAINPID": str(os.getpid()),
        }
        assert notifier.watchdog()
        assert _fields(sock.recv(4096)) == {"WATCHDOG": "1"}
        assert notifier.stopping()
        assert _fields(sock.recv(4096))["STOPPING"] == "1"
        notifier.close()


def test_notify_to_abstract_socket() -> None:
    name = f"fleetcast-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.status("restoring\nstate")
        assert _fields(sock.recv(4096)) == {"STATUS": "restoring state"}
        notifier.close()


def test_without_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval_s is None


def test_watchdog_for_another_pid_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_env(env).watchdog_interval_s is None


def test_unreachable_socket_does_not_raise() -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/nonexistent/notify.sock"})
    assert notifier.ready() is False
    notifier.close()


def test_the_loading_status_goes_out_before_the_slow_part_of_a_start() -> None:
    """systemd shows STATUS= while the model loads and the state is restored (minutes on a
    first start that compiles the kernels), not only once that is done."""
    from fleetcast.appliance.commands import prepare_runtime

    events: list[str] = []

    class _Notifier:
        def status(self, text: str) -> bool:
            events.append(f"STATUS={text}")
            return True

    class _Runtime:
        notifier = _Notifier()

        def prepare(self) -> None:
            events.append("prepare")

    prepare_runtime(_Runtime())
    assert events == ["STATUS=loading model and restoring state", "prepare"]


def test_log_lines_to_the_journal_carry_their_priority(tmp_path: Path) -> None:
    # Every line reached journald at its default priority: `journalctl -p warning` showed
    # none of the appliance's warnings or errors, and each line had two timestamps.
    import logging
    import os

    from fleetcast.appliance.notify import journal_formatter, to_journal

    with (tmp_path / "stderr").open("w") as stream:
        st = os.fstat(stream.fileno())
        assert to_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream.fileno())
        assert not to_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream.fileno())
        assert not to_journal({}, stream.fileno())
        assert not to_journal({"JOURNAL_STREAM": "junk"}, stream.fileno())
    fmt = journal_formatter()

    def line(level: int) -> str:
        record = logging.LogRecord("fleetcast.x", level, __file__, 1, "hello %s", ("you",), None)
        return fmt.format(record)

    assert line(logging.WARNING) == "<4>WARNING fleetcast.x: hello you"
    assert line(logging.ERROR).startswith("<3>ERROR ")
    assert line(logging.INFO).startswith("<6>INFO ")
    assert line(logging.DEBUG).startswith("<7>DEBUG ")
    assert line(logging.CRITICAL).startswith("<2>CRITICAL ")
