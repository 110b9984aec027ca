"""``fleetcast serve``: parse flags, build the one Settings, run uvicorn on the app factory.

Registered in the ``fleetcast.commands`` entry-point group (see fleetcast.contract.cli).
Imports nothing heavy until the command runs; never imports torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetcast.appliance.settings import Settings

__all__ = ["add_serve_arguments", "cli_values", "main", "register_serve", "run_serve", "serve"]

_log = logging.getLogger(__name__)

_CLEAN_ERRORS = frozenset({"ModelError", "StartupError"})
"""Errors whose message is complete on its own (no traceback at the CLI)."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``fleetcast serve`` (all default to None: unset flags defer to env/TOML)."""
    add = parser.add_argument
    add("--model-dir", type=Path, help="folder with model.onnx (default models/latest)")
    add("--host", help="interface to bind (default 127.0.0.1)")
    add("--port", type=int, help="TCP port (default 8000)")
    add(
        "--state-dir",
        type=Path,
        help="sample log + snapshots ($STATE_DIRECTORY under systemd, else ./state)",
    )
    add("--api-key", help="API key for X-API-Key (prefer --api-key-file or FLEETCAST_API_KEY)")
    add("--api-key-file", type=Path, help="file holding the API key (systemd: %%d/api-key)")
    add(
        "--read-key-required",
        action="store_true",
        default=None,
        help="require the key for reads too",
    )
    add("--rate-limit", help="requests per client, e.g. 1200/minute (default); 'off' disables")
    add("--max-body-bytes", type=int, help="largest request body (default 8 MiB); larger gets 413")
    add(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fdatasync the sample log before acknowledging a POST (default on); --no-fsync "
        "acknowledges after write() (survives kill -9, not power loss)",
    )
    add("--snapshot-interval-s", type=float, help="seconds between state snapshots (default 300)")
    add("--demo", action="store_true", default=None, help="feed the built-in fleet simulator")
    add("--speed", type=float, help="demo: simulated seconds per real second (default 60)")
    add("--demo-servers", type=int, help="demo: fleet size (default 90)")
    add("--demo-seed", type=int, help="demo: simulator seed (default 7)")
    add("--capacity", type=int, help="max servers (preallocated buffers; default 20000)")
    add(
        "--max-future-seconds",
        help="reject samples more than this far ahead of this machine's clock "
        "(default 3600; 'off' disables; the demo is exempt)",
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
    add("--thresholds-file", type=Path, help="TOML/JSON risk thresholds per metric and profile")
    add(
        "--daemon",
        action="store_true",
        default=None,
        help="detach (no systemd): double fork + pid file",
    )
    add("--pid-file", type=Path, help="pid file for --daemon (default <state-dir>/fleetcast.pid)")
    add("--log-file", type=Path, help="log file for --daemon (default <state-dir>/fleetcast.log)")
    add(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        default=None,
        help="do not log one line per request",
    )
    add("--config", type=Path, help="TOML file with these settings (table [serve])")
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
    """The flags that were given, by Settings field name (for ``build_settings``)."""
    skip = {"handler", "command", "log_level"}
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
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fleetcast").setLevel(settings.log_level)
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)


def serve(settings: Settings) -> int:
    """Run the appliance until SIGTERM/SIGINT (or detach first with ``settings.daemon``)."""
    from fleetcast.contract.errors import ContractError

    # Relative paths are resolved once, before --daemon changes the working directory.
    settings = _absolute(settings)
    if settings.daemon:
        from fleetcast.appliance.daemon import daemonize

        state = settings.state_dir
        try:
            pid = daemonize(
                settings.pid_file or state / "fleetcast.pid",
                settings.log_file or state / "fleetcast.log",
            )
        except (ContractError, OSError) as exc:
            print(f"fleetcast serve: {exc}", file=sys.stderr)
            return 1
        if pid is not None:
            print(f"fleetcast serve: daemon started, pid {pid}")
            return 0
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stderr)
    _configure_logging(settings)
    import uvicorn

    from fleetcast.appliance.app import create_app

    app = create_app(settings)
    try:
        app.state.runtime.prepare()  # model checks + state restore before the port opens
    except Exception as exc:
        if (
            not isinstance(exc, (ContractError, OSError))
            and type(exc).__name__ not in _CLEAN_ERRORS
        ):
            raise
        print(f"fleetcast serve: cannot start: {exc}", file=sys.stderr)
        return 1
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=20,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, restores this handler and re-raises the
    # signal: exit 0 then (atexit hooks such as the pid file removal still run).
    signal.signal(signal.SIGTERM, _exit_zero)
    try:
        server.run()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
        return 0
    if not server.started:
        _log.error("the appliance did not start (see the error above)")
        return 1
    return 0


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
