"""``fleetcast serve``: parse flags, build the one Settings, run uvicorn on the app factory.

Registered in the ``fleetcast.commands`` entry-point group (see fleetcast.contract.cli).
Imports nothing heavy until the command runs; never imports torch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import struct
import sys
import termios
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetcast.appliance.start_errors import FirstError, not_serving, os_error, start_error

if TYPE_CHECKING:
    from fleetcast.appliance.daemon import StartReport
    from fleetcast.appliance.settings import Settings

__all__ = ["add_serve_arguments", "cli_values", "main", "register_serve", "run_serve", "serve"]

_log = logging.getLogger(__name__)

UNACKED_TIMEOUT_S = 30
"""Seconds data sent to a client may stay unacknowledged, or unsent because the client
does not read (a zero TCP window), before the kernel aborts the connection
(``TCP_USER_TIMEOUT``). Without it a closed connection to a client that never reads keeps
its unsent answer (a forecast body: 1.3 MB per 1,000 servers) and its descriptor forever:
an asyncio transport closes only once its buffer is sent."""


def _path(text: str) -> Path:
    """A path flag's value; an empty one is refused (``Path("")`` is the current folder:
    ``--state-dir ""`` wrote the state into whatever folder the appliance started in)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (give a folder or file, or drop the flag)")
    return Path(text)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``fleetcast serve`` (all default to None: unset flags defer to env/TOML)."""
    add = parser.add_argument
    add("--model-dir", type=_path, help="folder with model.onnx (default models/latest)")
    add("--host", help="interface to bind (default 127.0.0.1)")
    add("--port", type=int, help="TCP port (default 8000)")
    add(
        "--state-dir",
        type=_path,
        help="sample log + snapshots ($STATE_DIRECTORY under systemd, else ./state)",
    )
    add(
        "--api-key",
        help="API key for X-API-Key (visible in ps: prefer --api-key-file, or the systemd "
        "credential)",
    )
    add("--api-key-file", type=_path, help="file holding the API key (systemd: %%d/api-key)")
    add(
        "--read-key-required",
        action="store_true",
        default=None,
        help="require the key for reads too",
    )
    add("--rate-limit", help="requests per client, e.g. 1200/minute (default); 'off' disables")
    add("--max-body-bytes", type=int, help="largest request body (default 8 MiB); larger gets 413")
    add(
        "--max-connections",
        type=int,
        help="connections served at once (default 1024); requests beyond it get 503",
    )
    add(
        "--request-timeout-s",
        type=float,
        help="seconds a request may take to arrive whole (default 30); slower ones get 408",
    )
    add(
        "--keep-alive-s",
        type=float,
        help="seconds an idle connection stays open between requests (default 75)",
    )
    add(
        "--max-websocket-clients",
        type=int,
        help="WebSocket clients at once (default 32; 0: no WebSocket); more are refused",
    )
    add(
        "--trusted-proxies",
        help="comma-separated addresses of reverse proxies whose X-Forwarded-For names the "
        "client (default: none, the header is ignored)",
    )
    add(
        "--allowed-hosts",
        help="comma-separated Host names answered (default: bound to loopback, localhost, "
        "127.0.0.1 and [::1]; otherwise any; * = any); others get 400",
    )
    add(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fdatasync the sample log before acknowledging a POST (default on); --no-fsync "
        "acknowledges after write() (survives kill -9, not power loss)",
    )
    add("--snapshot-interval-s", type=float, help="seconds between state snapshots (default 300)")
    add(
        "--forecast-settle-s",
        type=float,
        help="seconds a forecast waits for the servers that have not closed the fleet's step "
        "yet (default 10; 0: never)",
    )
    add("--demo", action="store_true", default=None, help="feed the built-in fleet simulator")
    add("--speed", type=float, help="demo: simulated seconds per real second (default 60)")
    add("--demo-servers", type=int, help="demo: fleet size (default 90)")
    add("--demo-seed", type=int, help="demo: simulator seed (default 7)")
    add("--capacity", type=int, help="max servers (preallocated buffers; default 20000)")
    add(
        "--max-future-seconds",
        help="reject samples more than this far ahead of this machine's clock "
        "(default 3600; 'off' disables; the demo's own samples: of its simulated clock)",
    )
    add(
        "--forget-after",
        help="forget servers whose newest sample is this much data time older than the "
        "fleet's newest step, e.g. 7d (units s, m, h, d, w; default off); frees their slots",
    )
    add(
        "--providers",
        help="comma-separated ONNX Runtime providers (default: TensorRT,CUDA,CPU available)",
    )
    add(
        "--intra-op-threads",
        type=int,
        help="0 (default): one single-threaded ONNX Runtime call per core; N: one call at a "
        "time with N threads",
    )
    add(
        "--step-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reuse each window row's variable selection between forecasts when the model has "
        "step graphs (default on, CPU only); --no-step-cache runs the full graph",
    )
    add(
        "--history-steps",
        type=int,
        help="steps of actuals kept for /history (default and minimum: what the model reads, "
        "the encoder length plus a day for day-ago inputs)",
    )
    add("--thresholds-file", type=_path, help="TOML/JSON risk thresholds per metric and profile")
    add(
        "--daemon",
        action="store_true",
        default=None,
        help="detach (no systemd): double fork + pid file",
    )
    add("--pid-file", type=_path, help="pid file for --daemon (default <state-dir>/fleetcast.pid)")
    add("--log-file", type=_path, help="log file for --daemon (default <state-dir>/fleetcast.log)")
    add(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        default=None,
        help="do not log one line per request",
    )
    add("--config", type=_path, help="TOML file with these settings (table [serve])")
    from fleetcast.appliance.sources import add_integration_arguments

    # --source prometheus, --alertmanager-url, ... (docs/PROMETHEUS.md)
    add_integration_arguments(parser)


def register_serve(sub: Any) -> None:
    """Entry point of the ``fleetcast.commands`` group: add the ``serve`` sub-command."""
    parser = sub.add_parser(
        "serve",
        help="run the appliance: forecasts over HTTP/WebSocket (docs/API.md)",
        description="Serve fleet health forecasts from an exported ONNX model. See docs/OPERATIONS.md.",
    )
    add_serve_arguments(parser)
    parser.set_defaults(handler=run_serve)


def cli_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, by Settings field name (for ``build_settings``); the
    global ``--log-level`` is one of them when given (``fleetcast --log-level X serve``)."""
    skip = {"handler", "command"}
    return {k: v for k, v in vars(args).items() if k not in skip and v is not None}


def run_serve(args: argparse.Namespace) -> int:
    """Handler of ``fleetcast serve``; returns the exit code. Errors print one clear message."""
    from fleetcast.appliance.settings import build_settings
    from fleetcast.contract.errors import ContractError

    try:
        settings = build_settings(cli_values(args))
    except ContractError as exc:
        print(f"fleetcast serve: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


def _configure_logging(settings: Settings) -> None:
    from fleetcast.appliance.notify import journal_formatter, to_journal

    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if to_journal():  # under systemd: each line's priority for journalctl -p, no 2nd time
        for handler in root.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setFormatter(journal_formatter())
    logging.getLogger("fleetcast").setLevel(settings.log_level)  # checked by build_settings
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)


def serve(settings: Settings) -> int:
    """Run the appliance until SIGTERM/SIGINT (or detach first with ``settings.daemon``).

    Every start failure that is bad input or a bad environment (model refused, state
    directory unusable, port taken) is one four-part message on stderr and exit code 1; with
    ``--daemon`` the original process prints it (the daemon reports it over a pipe) and
    exits 1, or prints where the daemon serves and exits 0.
    """
    # SIGHUP reloads the model once serving (runtime_reload.reload_on_sighup); until then
    # its default action would end a starting appliance, for systemd a clean exit.
    with contextlib.suppress(ValueError):  # not the main thread: no signals to handle
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Relative paths are resolved once, before --daemon changes the working directory.
    settings = _absolute(settings)
    report: StartReport | None = None
    if settings.daemon:
        from fleetcast.appliance.daemon import START_TIMEOUT_S, DaemonError, Started, daemonize

        state = settings.state_dir
        try:
            outcome = daemonize(
                settings.pid_file or state / "fleetcast.pid",
                settings.log_file or state / "fleetcast.log",
                start_timeout_s=START_TIMEOUT_S,
            )
        except DaemonError as exc:
            print(f"fleetcast serve: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"fleetcast serve: cannot start: {os_error(exc, settings)}", file=sys.stderr)
            return 1
        if isinstance(outcome, Started):
            if outcome.ok:
                print(f"fleetcast serve: daemon started, pid {outcome.pid}, {outcome.message}")
                return 0
            print(f"fleetcast serve: cannot start: {outcome.message}", file=sys.stderr)
            return 1
        report = outcome
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stderr)
    _configure_logging(settings)
    try:
        return _serve(settings, report)
    except BaseException as exc:
        if report is not None:  # a bug: the traceback goes to the log file
            from fleetcast.contract.errors import explain

            log = settings.log_file or settings.state_dir / "fleetcast.log"
            report.failed(
                explain(
                    f"Unexpected {type(exc).__name__} during start: {exc}.",
                    "nothing serves.",
                    f"please report it with the traceback from {log}.",
                    "docs/OPERATIONS.md#logs",
                )
            )
        raise


STUCK_SAMPLE_S = 1.0
"""Seconds between two looks at the closing connections' unacknowledged bytes during a
shutdown."""
STUCK_SAMPLES = 3
"""Looks in a row without progress after which a closing connection is aborted."""


async def _abort_stuck_closes(server_state: Any) -> None:
    """During a shutdown, abort each connection that is closing and whose unacknowledged
    bytes (:func:`_unacknowledged`) did not shrink for :data:`STUCK_SAMPLES` looks in a row,
    :data:`STUCK_SAMPLE_S` apart: its peer does not read (a WebSocket client that stopped
    reading leaves its forecast frames in the buffers), so its close would wait for the
    kernel (``UNACKED_TIMEOUT_S``) and uvicorn's graceful shutdown for all of them (20 s,
    then an ERROR). A slow client still downloading a large answer makes progress and is
    left to finish within the graceful period, as are connections still answering a request
    (they are not closing yet). A reader on a slow link acknowledges in steps of a segment,
    so one second without progress is not yet a stuck one."""
    seen: dict[Any, tuple[int, int]] = {}  # transport -> (unacknowledged, looks unchanged)
    while True:
        await asyncio.sleep(STUCK_SAMPLE_S)
        now: dict[Any, tuple[int, int]] = {}
        for connection in list(server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is None or not transport.is_closing():
                continue
            pending = _unacknowledged(transport)
            before, still = seen.get(transport, (None, 0))
            still = still + 1 if before is not None and pending >= before else 0
            if still >= STUCK_SAMPLES:
                transport.abort()
            else:
                now[transport] = (pending, still)
        seen = now


def _unacknowledged(transport: Any) -> int:
    """Bytes written to ``transport`` that its peer has not acknowledged: the transport's
    buffer plus the kernel's send queue (Linux ``TIOCOUTQ``). The transport's buffer alone
    moves in steps of megabytes (the socket turns writable when half its queue is free), so
    a slow reader would look stuck for many seconds."""
    pending = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            pending += struct.unpack("i", queued)[0]
    return pending


def prepare_runtime(runtime: Any) -> None:
    """Tell systemd what the start is doing (``STATUS=``), then load the model and restore
    the state: the slow part of a start (up to minutes on a first start that compiles the
    kernels), which ``systemctl status`` should not show as silence."""
    runtime.notifier.status("loading model and restoring state")
    runtime.prepare()


def _serve(settings: Settings, report: StartReport | None) -> int:
    import uvicorn

    from fleetcast.appliance.app import ListenError, create_app, is_loopback, listen
    from fleetcast.appliance.controllers.ws import MAX_CLIENT_MESSAGE_BYTES
    from fleetcast.appliance.http_protocol import timed_h11_protocol

    def fail(message: str) -> int:
        print(f"fleetcast serve: cannot start: {message}", file=sys.stderr)
        if report is not None:
            report.failed(message)
        return 1

    try:  # listening before the lifespan sends READY=1; a taken port is one clear message,
        # and it comes first: before loading the model and replaying the state
        sockets = listen(settings.host, settings.port)
    except ListenError as exc:
        return fail(str(exc))
    if settings.api_key is None and not is_loopback(settings.host):
        _log.warning(
            "serving on %s without an API key: anyone who reaches this address can post "
            "metrics, reload the model and forget servers. Fix: set an API key "
            "(--api-key-file, the systemd credential), or bind 127.0.0.1 behind a reverse "
            "proxy. See docs/OPERATIONS.md#api-key.",
            settings.address,
        )
    try:
        app = create_app(settings)
        prepare_runtime(app.state.runtime)  # model checks + state restore before serving
    except Exception as exc:
        for sock in sockets:
            sock.close()
        message = start_error(exc, settings)
        if message is None:
            raise
        return fail(message)

    _limit_unacked_time(sockets)
    where = f"serving on http://{settings.host}:{settings.port}"

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and report is not None:
                report.ready(where)

        async def shutdown(self, sockets: Any = None) -> None:
            reaper = asyncio.ensure_future(_abort_stuck_closes(self.server_state))
            try:
                await super().shutdown(sockets=sockets)
            finally:
                reaper.cancel()

    config = uvicorn.Config(
        app,
        # h11 with a deadline for reading each request: a client sending half a request
        # would otherwise hold its connection for good (http_protocol).
        http=timed_h11_protocol(app.state.runtime.read_timeouts),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=20,
        # Idle keep-alive connections stay open longer than pollers wait between requests
        # (the dashboard: 5 s, uvicorn's default): a request sent on a connection that the
        # server closes at that very moment fails as if the appliance were down.
        timeout_keep_alive=settings.keep_alive_s,
        # Past this many connections (or requests in progress) a request is answered 503 at
        # once instead of waiting for descriptors and memory (uvicorn counts WebSocket
        # sessions apart: max_websocket_clients caps them).
        limit_concurrency=settings.max_connections,
        # Clients of /ws/predictions send nothing the appliance reads: a message past a few
        # KiB closes the connection (1009) instead of being buffered (default 16 MiB each).
        ws_max_size=MAX_CLIENT_MESSAGE_BYTES,
        # X-Forwarded-For / X-Forwarded-Proto are honoured only from the configured
        # reverse proxies: uvicorn's default trusts them from 127.0.0.1, so any local
        # client could pick its address for the rate limit and the access log.
        **_proxy_options(settings),
    )
    server = _Server(config)
    first_error = FirstError()
    watched = [logging.getLogger(name) for name in ("uvicorn.error", "fleetcast")]
    for logger in watched:
        logger.addHandler(first_error)
    # uvicorn shuts down gracefully on SIGTERM, restores this handler and re-raises the
    # signal: exit 0 then (atexit hooks such as the pid file removal still run).
    signal.signal(signal.SIGTERM, _exit_zero)
    try:
        server.run(sockets=sockets)
    except SystemExit as exc:
        if exc.code in (0, None):
            if not server.started and report is not None:
                report.failed(not_serving(settings, ["stopped by a signal before it served"]))
            return 0
        if server.started:
            raise
    finally:
        for logger in watched:
            logger.removeHandler(first_error)
    if not server.started:
        return fail(not_serving(settings, first_error.texts))
    return 0


def _proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy-header options: off unless ``trusted_proxies`` names proxies."""
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(settings.trusted_proxies)}


def _limit_unacked_time(sockets: list[Any]) -> None:
    """Set ``TCP_USER_TIMEOUT`` (Linux) on the listening sockets; accepted connections
    inherit it (see :data:`UNACKED_TIMEOUT_S`)."""
    import socket

    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None:  # pragma: no cover - not Linux
        return
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, UNACKED_TIMEOUT_S * 1000)
            except OSError as exc:  # pragma: no cover - a kernel without it
                _log.warning("cannot set TCP_USER_TIMEOUT on the listening socket: %s", exc)


def _exit_zero(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _absolute(settings: Settings) -> Settings:
    import dataclasses

    changes: dict[str, Any] = {}
    for name in ("model_dir", "state_dir", "thresholds_file", "pid_file", "log_file"):
        value = getattr(settings, name)
        if value is not None and not value.is_absolute():
            changes[name] = Path(os.path.abspath(value))
    return dataclasses.replace(settings, **changes) if changes else settings


def main(argv: list[str] | None = None) -> int:
    """``python -m fleetcast.appliance.commands [flags]``: ``fleetcast serve`` without the CLI."""
    parser = argparse.ArgumentParser(prog="fleetcast serve")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run_serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
