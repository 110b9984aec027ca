"""``fleetcast generate``: write a simulated fleet's training data (three files)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from argparse import _SubParsersAction

__all__ = ["register_generate", "run_generate"]


def register_generate(sub: _SubParsersAction[Any]) -> None:
    """Add the ``generate`` subcommand to the fleetcast sub-parsers."""
    parser = sub.add_parser(
        "generate",
        help="simulate a fleet and write training/server_metrics.parquet + metadata + mapping",
        description=(
            "Simulate a server fleet (codex proportions and names) and write "
            "server_metrics.parquet, metrics_metadata.json and server_mapping.json. "
            "See docs/SERVER_PROFILES.md."
        ),
    )
    parser.add_argument("--servers", type=int, default=90, help="fleet size (default 90)")
    parser.add_argument(
        "--hours", type=int, default=720, help="hours of history, at least 24 (default 720)"
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--out-dir", default="training", help="output directory (default training/)"
    )
    parser.add_argument(
        "--start",
        default=None,
        help="first timestamp, ISO-8601 with a zone on a 5-minute boundary, e.g. "
        "2025-01-06T00:00:00Z (default: end at the last full step)",
    )
    parser.add_argument(
        "--offline-mode",
        choices=["dense", "sparse"],
        default="dense",
        help="dense: offline servers emit zero rows with state offline (default, codex); "
        "sparse: no rows while offline",
    )
    parser.add_argument(
        "--scenario",
        choices=["healthy", "degrading", "critical"],
        default="healthy",
        help="demo scenario for the whole run (default healthy)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="overwrite a server_metrics.parquet in --out-dir that an earlier generate did "
        "not write (an import, your own data); without it that is refused",
    )
    parser.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    """Handler of ``fleetcast generate``; returns the exit code (2 on bad input)."""
    from fleetcast.contract.simulate.batch import check_hours, parse_start, write_training_data

    try:
        hours = check_hours(args.hours)
        start = None if args.start is None else parse_start(args.start)
        result = write_training_data(
            args.out_dir,
            n_servers=args.servers,
            hours=hours,
            seed=args.seed,
            start=start,
            offline_mode=args.offline_mode,
            scenario=args.scenario,
            replace=args.replace,
        )
    except ValueError as exc:
        print(f"fleetcast generate: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"fleetcast generate: cannot write to {args.out_dir!r}: {exc}. Why it matters: "
            "nothing was written. Fix: choose a writable --out-dir. "
            "See docs/SERVER_PROFILES.md#generating-data.",
            file=sys.stderr,
        )
        return 1
    meta = result.metadata
    print(
        f"wrote {result.rows:,} rows ({meta['servers']} servers x {meta['hours']} h, "
        f"{meta['start']} .. {meta['end']}) in {result.seconds:.1f} s\n"
        f"  {result.data_path}\n  {result.metadata_path}\n  {result.mapping_path}"
    )
    return 0
