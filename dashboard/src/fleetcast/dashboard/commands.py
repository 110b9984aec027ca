"""The ``fleetcast dashboard`` subcommand."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fleetcast.contract.errors import explain

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .settings import DashboardSettings

__all__ = ["TOP_SERVERS_MAX", "register_dashboard", "settings_from_args"]

TOP_SERVERS_MAX = 10
"""The most servers the Top Servers panel draws curves for."""


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"Expected a number of seconds > 0, but got {value}.")
    return number


def _top_servers(value: str) -> int:
    """1..10 curves: more would not fit the panel; fewer than one is no panel."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= TOP_SERVERS_MAX:
        raise argparse.ArgumentTypeError(
            f"Expected a whole number of servers from 1 to {TOP_SERVERS_MAX}, but got {value!r} "
            "(the Top Servers panel draws that many curves; see docs/DASHBOARD.md#running)."
        )
    return number


def register_dashboard(sub: argparse._SubParsersAction) -> None:
    """Add ``fleetcast dashboard`` to the ``fleetcast`` sub-parsers."""
    parser = sub.add_parser(
        "dashboard",
        help="serve the web dashboard (a client of a running appliance)",
        description="Serve the Panel dashboard for an appliance started with `fleetcast serve`. "
        "See docs/DASHBOARD.md.",
    )
    parser.add_argument("--appliance", default="http://127.0.0.1:8000", help="appliance base URL")
    parser.add_argument("--port", type=int, default=5006, help="dashboard port (default 5006)")
    parser.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="X-API-Key for the appliance (default: $FLEETCAST_API_KEY if set); visible in "
        "ps, prefer --api-key-file",
    )
    parser.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help="file holding the X-API-Key, read once at start (default: "
        "$FLEETCAST_API_KEY_FILE if set; under systemd %%d/api-key)",
    )
    parser.add_argument(
        "--refresh-seconds", type=_positive, default=5.0, help="poll period (default 5)"
    )
    parser.add_argument(
        "--top-servers",
        type=_top_servers,
        default=3,
        help=f"servers with curves in Top Servers, 1 to {TOP_SERVERS_MAX} (default 3)",
    )
    parser.add_argument(
        "--no-websocket", action="store_true", help="poll only; ignore /ws/predictions"
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        help="extra host:port allowed to open the dashboard (behind a reverse proxy)",
    )
    parser.set_defaults(handler=run_dashboard)


_KEY_DOC = "docs/DASHBOARD.md#running"


def settings_from_args(
    args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> DashboardSettings:
    """The one Settings object, from the parsed command line and ``env`` (default
    ``os.environ``: ``$FLEETCAST_API_KEY``, ``$FLEETCAST_API_KEY_FILE``). Bad input is a
    ValueError whose message is the one to print."""
    from .settings import DashboardSettings

    env = os.environ if env is None else env
    if not 1 <= args.port <= 65535:
        raise ValueError(f"Expected --port between 1 and 65535, but got {args.port}.")
    return DashboardSettings(
        appliance_url=args.appliance,
        port=args.port,
        address=args.address,
        api_key=_api_key(args, env),
        refresh_seconds=args.refresh_seconds,
        top_servers=args.top_servers,
        use_websocket=not args.no_websocket,
        allow_websocket_origin=tuple(args.allow_origin),
    )


def _api_key(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """The key from the highest level that gives one (flags, then the environment), as a
    key or a key file; both at one level is refused. An empty value counts as not given."""
    levels = (
        ("--api-key", args.api_key, "--api-key-file", getattr(args, "api_key_file", None)),
        (
            "FLEETCAST_API_KEY",
            env.get("FLEETCAST_API_KEY"),
            "FLEETCAST_API_KEY_FILE",
            env.get("FLEETCAST_API_KEY_FILE"),
        ),
    )
    for key_name, key, file_name, file in levels:
        if key and file:
            raise ValueError(
                explain(
                    f"Both {key_name} and {file_name} give the API key, at the same level of "
                    "precedence.",
                    "the dashboard would have to guess which key the appliance expects.",
                    "give the key once: keep the key file (a key on the command line is "
                    "visible in ps) and drop the other.",
                    _KEY_DOC,
                )
            )
        if file:
            return _read_key_file(Path(file), file_name)
        if key:
            return key
    return None


def _read_key_file(path: Path, where: str) -> str:
    """The key in ``path``, surrounding whitespace (the trailing newline) stripped, as the
    appliance reads the same file."""
    why = "the dashboard could not send the X-API-Key the appliance asks for."
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ValueError(
            explain(
                f"Cannot read the API key file {path} (from {where}): {reason}.",
                why,
                "check the path and that the user running the dashboard may read the file "
                "(under systemd: LoadCredential=api-key:/etc/fleetcast/api-key and "
                "FLEETCAST_API_KEY_FILE=%d/api-key).",
                _KEY_DOC,
            )
        ) from exc
    if not key:
        raise ValueError(
            explain(
                f"The API key file {path} (from {where}) is empty.",
                why,
                "write the appliance's key into it (one line).",
                _KEY_DOC,
            )
        )
    return key


def run_dashboard(args: argparse.Namespace) -> int:
    """Handler of ``fleetcast dashboard``: serve until Ctrl-C; returns the exit code."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"fleetcast dashboard: {exc}", file=sys.stderr)
        return 2
    if not settings.base_url.startswith(("http://", "https://")):
        print(
            f"fleetcast dashboard: Expected --appliance to be an http:// or https:// URL, but got "
            f"{settings.appliance_url!r}. Why it matters: the dashboard reaches the appliance "
            "only over HTTP. Fix: e.g. --appliance http://127.0.0.1:8000. "
            "See docs/DASHBOARD.md#running.",
            file=sys.stderr,
        )
        return 2
    from .app import serve

    try:
        serve(settings)
    except OSError as exc:
        print(
            f"fleetcast dashboard: cannot listen on {settings.address}:{settings.port} ({exc}). "
            "Why it matters: the dashboard cannot start. Fix: pick a free --port. "
            "See docs/DASHBOARD.md#running.",
            file=sys.stderr,
        )
        return 1
    return 0
