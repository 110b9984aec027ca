"""The ``fleetcast dashboard`` subcommand."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
        help="X-API-Key for the appliance (default: $FLEETCAST_API_KEY if set)",
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


def settings_from_args(args: argparse.Namespace) -> DashboardSettings:
    """The one Settings object, from the parsed command line (and $FLEETCAST_API_KEY)."""
    import os

    from .settings import DashboardSettings

    if not 1 <= args.port <= 65535:
        raise ValueError(f"Expected --port between 1 and 65535, but got {args.port}.")
    return DashboardSettings(
        appliance_url=args.appliance,
        port=args.port,
        address=args.address,
        api_key=args.api_key or os.environ.get("FLEETCAST_API_KEY") or None,
        refresh_seconds=args.refresh_seconds,
        top_servers=args.top_servers,
        use_websocket=not args.no_websocket,
        allow_websocket_origin=tuple(args.allow_origin),
    )


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
