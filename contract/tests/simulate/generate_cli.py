"""``fleetcast generate`` run through its own parser, as the ``fleetcast`` CLI registers it."""

from __future__ import annotations

import argparse

from fleetcast.contract.simulate.cli import register_generate


def run_generate(argv: list[str]) -> int:
    """The exit code of ``fleetcast generate ARGV``."""
    parser = argparse.ArgumentParser(prog="fleetcast")
    register_generate(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", *argv])
    return args.handler(args)
