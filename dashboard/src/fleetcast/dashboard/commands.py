"""The ``fleetcast dashboard`` subcommand."""

from __future__ import annotations

import argparse
import errno
import math
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
    """A finite number of seconds > 0 (``inf`` would stop the polling for good)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (number > 0 and math.isfinite(number)):
        raise argparse.ArgumentTypeError(
            f"Expected a number of seconds > 0, but got {value!r} (how often each browser "
            "session polls the appliance; see docs/DASHBOARD.md#running)."
        )
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
        appliance_url=_appliance_url(args.appliance),
        port=args.port,
        address=args.address,
        api_key=_api_key(args, env),
        refresh_seconds=args.refresh_seconds,
        top_servers=args.top_servers,
        use_websocket=not args.no_websocket,
        allow_websocket_origin=tuple(_origin(o) for o in args.allow_origin),
    )


def _origin(value: str) -> str:
    """One ``--allow-origin``: ``HOST[:PORT]`` (or ``*``), as Bokeh's allow-list takes it.

    A URL (``https://proxy:8443``) or a bad port made Bokeh raise at start: a traceback
    instead of a message."""
    host, sep, port = value.rpartition(":") if ":" in value else (value, "", "")
    ok = value == "*" or (
        bool(host)
        and not any(c in host for c in "/:@?# ")
        and (not sep or (port.isdigit() and 1 <= int(port) <= 65535))
    )
    if not ok:
        hint = ""
        if "://" in value:
            rest = value.split("://", 1)[1].split("/", 1)[0]
            hint = f" (for that proxy: --allow-origin {rest})"
        raise ValueError(
            explain(
                f"Expected --allow-origin to be HOST or HOST:PORT, but got {value!r}.",
                "the browser's page is accepted only from the origins listed; a URL never "
                "matches one.",
                f"give the host and port the browser sees, without a scheme or a path{hint}.",
                _KEY_DOC,
            )
        )
    return value


def _appliance_url(value: str) -> str:
    """``--appliance`` checked once at start: an http(s) URL with a host and a valid port,
    no query or fragment (the API paths are appended to it). Returned with the scheme and
    host lower-cased. A URL httpx cannot use would otherwise fail in every browser session
    (a traceback on the page) or leave it ``disconnected`` for good."""
    import httpx  # here, not at import: every `fleetcast` command imports this module

    problem = None
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        problem = str(exc)
    else:
        if url.scheme not in ("http", "https"):
            problem = "it does not start with http:// or https://"
        elif not url.host or any(c.isspace() for c in value) or "%" in url.host:
            problem = "it names no valid host"
        elif url.port is not None and not 1 <= url.port <= 65535:
            problem = f"its port {url.port} is outside 1..65535"
        elif url.query or url.fragment:
            problem = "it has a query (?…) or a fragment (#…); the API paths are appended to it"
    if problem is not None:
        raise ValueError(
            explain(
                f"Expected --appliance to be an http:// or https:// URL, but got {value!r}: "
                f"{problem}.",
                "the dashboard reaches the appliance only over HTTP at that address.",
                "e.g. --appliance http://127.0.0.1:8000.",
                _KEY_DOC,
            )
        )
    return str(url)


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
    from .app import serve

    try:
        serve(settings)
    except OSError as exc:
        in_use = exc.errno == errno.EADDRINUSE
        fix = (
            "pick a free --port."
            if in_use
            else "give --address as an address of this machine (127.0.0.1, or 0.0.0.0 for "
            "every interface)."
        )
        print(
            f"fleetcast dashboard: cannot listen on {settings.address}:{settings.port} ({exc}). "
            f"Why it matters: the dashboard cannot start. Fix: {fix} "
            "See docs/DASHBOARD.md#running.",
            file=sys.stderr,
        )
        return 1
    return 0
