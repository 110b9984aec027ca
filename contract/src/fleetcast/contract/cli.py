"""The ``fleetcast`` program: one CLI, subcommands contributed by the installed distributions.

Each distribution registers ``name = "module:function"`` in the ``fleetcast.commands``
entry-point group; the function receives the argparse sub-parsers object and adds its
parser with ``set_defaults(handler=...)``. Handlers import their heavy modules lazily,
so ``fleetcast --help`` stays fast and imports no torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["KNOWN_COMMANDS", "build_parser", "main"]

KNOWN_COMMANDS: dict[str, str] = {
    "generate": "fleetcast-contract",
    "validate": "fleetcast-contract",
    "train": "fleetcast-trainer",
    "export": "fleetcast-exporter",
    "serve": "fleetcast-appliance",
    "dashboard": "fleetcast-dashboard",
    "bench": "fleetcast-exporter",
    "import": "fleetcast-trainer",
}
"""Every subcommand fleetcast has, and the distribution that provides it."""

_DISTRIBUTIONS = (
    "fleetcast-contract",
    "fleetcast-trainer",
    "fleetcast-exporter",
    "fleetcast-appliance",
    "fleetcast-dashboard",
)


def _versions() -> str:
    lines = []
    for dist in _DISTRIBUTIONS:
        try:
            lines.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            lines.append(f"{dist} (not installed)")
    from fleetcast.contract.schema import CONTRACT_VERSION

    lines.append(f"data contract {CONTRACT_VERSION}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every installed subcommand registered."""
    return _build_parser()[0]


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The parser, and the subcommands whose entry point failed to load (name -> error).

    A broken plugin must not take the other commands down with it: its failure is
    remembered and reported only when that command is asked for.
    """
    parser = argparse.ArgumentParser(
        prog="fleetcast",
        description="Forecast a server fleet's health: data, training, export, the appliance.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps --version's lines
    )
    parser.add_argument("--version", action="version", version=_versions())
    parser.add_argument(
        "--log-level",
        default=None,  # INFO; `serve` takes it as a flag above FLEETCAST_LOG_LEVEL and its file
        # The levels FLEETCAST_LOG_LEVEL accepts (docs/OPERATIONS.md#configuration).
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    broken: dict[str, str] = {}
    for ep in sorted(entry_points(group="fleetcast.commands"), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as exc:  # a plugin's bug, reported when its command is used
            broken[ep.name] = f"{type(exc).__name__}: {exc}"
    return parser, broken


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand in ``argv``: the first word that is neither an option nor its value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--log-level":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fleetcast`` program; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, broken = _build_parser()
    registered = set(parser._subparsers._group_actions[0].choices) if parser._subparsers else set()
    first = _command_word(argv)
    if first is not None and first in broken and first not in registered:
        dist = KNOWN_COMMANDS.get(first, "the distribution that provides it")
        print(
            f"fleetcast: the '{first}' command is installed but failed to load "
            f"({broken[first]}). Fix: reinstall {dist} (pip install -e ./<component> or "
            "`make setup`). See README.md#install.",
            file=sys.stderr,
        )
        return 2
    if first is not None and first not in registered and first in KNOWN_COMMANDS:
        dist = KNOWN_COMMANDS[first]
        # fleetcast is installed from its source checkout, not from a package index (a
        # same-named package there would not be ours).
        folder = dist.removeprefix("fleetcast-")
        target = f"'./{folder}[cpu]'" if folder == "appliance" else f"./{folder}"
        print(
            f"fleetcast: the '{first}' command is provided by {dist}, which is not installed. "
            f"Fix: pip install {target} from a fleetcast source checkout (or `make setup` "
            "there). See README.md#install.",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level or "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
