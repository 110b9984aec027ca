"""systemd's notify protocol (sd_notify) without a systemd dependency.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (an abstract socket when the name starts with ``@``). The appliance
sends ``READY=1`` once the model is loaded and state restored, ``WATCHDOG=1`` every half
of ``$WATCHDOG_USEC``, ``STATUS=...`` lines, and ``STOPPING=1`` on shutdown. Without
``$NOTIFY_SOCKET`` every call is a no-op. See docs/OPERATIONS.md#systemd.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Notifier", "journal_formatter", "to_journal"]

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
"""syslog priorities of the logging levels (sd-daemon(3)'s ``<N>`` line prefixes)."""


def to_journal(env: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether ``fd`` (stderr) is connected to the journal: ``$JOURNAL_STREAM`` names its
    device and inode (systemd.exec(5)); a redirected stderr (``--daemon``'s log file, a
    pipe) does not match it."""
    stream = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _JournalFormatter(logging.Formatter):
    """``<4>WARNING fleetcast…: …``: journald reads the prefix as the line's priority (so
    ``journalctl -p warning`` finds the warnings) and stamps the time itself."""

    def format(self, record: logging.LogRecord) -> str:
        level = max((lv for lv in _PRIORITY if lv <= record.levelno), default=logging.DEBUG)
        return f"<{_PRIORITY[level]}>{super().format(record)}"


def journal_formatter() -> logging.Formatter:
    """The appliance's log line for the journal: ``<N>LEVEL logger: message``."""
    return _JournalFormatter("%(levelname)s %(name)s: %(message)s")


_log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams; built from the environment once, at start-up."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (the watchdog is
        ours only if ``WATCHDOG_PID`` is unset or equals our pid)."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        if env.get("WATCHDOG_USEC") and (not pid or pid == str(os.getpid())):
            try:
                usec = int(env["WATCHDOG_USEC"])
            except ValueError:
                _log.warning(
                    "WATCHDOG_USEC=%r is not an integer; watchdog off", env["WATCHDOG_USEC"]
                )
            else:
                usec = usec if usec > 0 else None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        """True when a notify socket is configured."""
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the watchdog timeout, or None when off."""
        if not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2_000_000

    def send(self, **fields: str | int) -> bool:
        """Send one datagram with ``KEY=VALUE`` lines; returns False when it could not be sent."""
        if self._sock is None or self._address is None:
            return False
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode("utf-8")
        target = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            self._sock.sendto(payload, target)
        except OSError as exc:
            _log.warning("sd_notify failed (%s): %s", type(exc).__name__, exc)
            return False
        return True

    def ready(self, status: str = "ready") -> bool:
        """``READY=1`` with a STATUS line and our pid (MAINPID, for NotifyAccess=main)."""
        return self.send(READY=1, STATUS=status, MAINPID=os.getpid())

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: tells systemd the event loop is alive."""
        return self.send(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """``STATUS=...``: a one-line state shown by ``systemctl status``."""
        return self.send(STATUS=text.replace("\n", " "))

    def stopping(self, status: str = "stopping") -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
