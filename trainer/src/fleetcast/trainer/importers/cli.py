"""``fleetcast import {prometheus,csv}``: real history as contract-valid training Parquet.

Registered in the ``fleetcast.commands`` entry-point group as ``import``. Imports no
torch: the handlers need pyarrow and numpy only. Exit codes: 0 written and valid,
1 written but the contract validation failed or the source failed, 2 bad arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

__all__ = ["register_import", "run_import_csv", "run_import_prometheus"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("training/real.parquet"),
        help="output Parquet (default training/real.parquet); metadata beside it",
    )
    parser.add_argument(
        "--profile-rule",
        action="append",
        default=[],
        metavar="REGEX=PROFILE",
        help="profile for server names matching REGEX (repeatable; first match wins; "
        "else the profile from the name)",
    )


def register_import(sub: Any) -> None:
    """Entry point of the ``fleetcast.commands`` group: add ``import`` and its sources."""
    parser = sub.add_parser(
        "import",
        help="import a real fleet's history (Prometheus, CSV) as contract Parquet",
        description="Write contract-valid Parquet from real metrics, so `fleetcast train` "
        "works on a real fleet. See docs/PROMETHEUS.md#import.",
    )
    kinds = parser.add_subparsers(dest="source", metavar="SOURCE")
    kinds.required = True
    prom = kinds.add_parser(
        "prometheus",
        help="query_range a Prometheus in chunks (resumable)",
        description="Read cpu, memory, disk and latency from Prometheus with the appliance's "
        "expressions (defaults: node_exporter) and write contract Parquet.",
    )
    prom.add_argument("--url", required=True, help="Prometheus base URL, http://host:9090")
    prom.add_argument(
        "--start",
        required=True,
        help="ISO 8601 with a zone (2026-10-01T00:00:00Z) or epoch seconds",
    )
    prom.add_argument(
        "--end", required=True, help="ISO 8601 with a zone (2026-11-27T00:00:00Z) or epoch seconds"
    )
    prom.add_argument("--step", type=int, default=300, help="must be 300 (the contract step)")
    prom.add_argument(
        "--chunk-hours",
        type=float,
        default=24.0,
        help="hours per query_range, at least one 5-minute step (default 24)",
    )
    prom.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="METRIC=PROMQL",
        help="PromQL for a metric (cpu_pct, mem_pct, disk_io_mb_s, latency_ms); repeatable",
    )
    prom.add_argument("--server-label", default="instance", help="label naming the server")
    prom.add_argument(
        "--keep-port", action="store_true", help="keep ':port' in server names (default: cut)"
    )
    prom.add_argument("--profile-label", help="label holding a contract profile")
    prom.add_argument(
        "--latency-fill",
        type=float,
        default=0.0,
        help="latency_ms without a value, finite and >= 0 (default 0)",
    )
    prom.add_argument(
        "--coverage",
        metavar="PROMQL",
        help="series whose scrapes did not cover a step: those steps become gaps (default: "
        "the appliance's up-based check; '' = no check; docs/PROMETHEUS.md#partial-steps)",
    )
    prom.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per query, > 0 (default 30)"
    )
    prom.add_argument(
        "--restart", action="store_true", help="discard chunks of an earlier run and start over"
    )
    _common(prom)
    prom.set_defaults(handler=run_import_prometheus)

    csv = kinds.add_parser(
        "csv",
        help="convert a CSV export (column mapping, unit factors)",
        description="Convert a CSV export into contract Parquet. --map column=CSV_COLUMN[*FACTOR].",
    )
    csv.add_argument("file", type=Path, help="the CSV file")
    csv.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=CSV_COLUMN[*FACTOR]",
        help="which CSV column is a contract column (repeatable), e.g. server_name=host",
    )
    csv.add_argument("--assume-utc", action="store_true", help="naive times are UTC")
    csv.add_argument("--epoch-unit", choices=["s", "ms"], default="s", help="numeric times")
    csv.add_argument(
        "--delimiter",
        default=",",
        help="field separator, one character (default ','; tab or \\t for a tab)",
    )
    csv.add_argument(
        "--latency-fill",
        type=float,
        default=None,
        help="latency_ms when the CSV has none, finite and >= 0",
    )
    _common(csv)
    csv.set_defaults(handler=run_import_csv)


def _failed(command: str, exc: Any) -> int:
    """Print an ImportFailure (after the dropped-row reasons it refers to); its exit code."""
    report = getattr(exc, "report", None)
    if report is not None:
        for line in report.dropped_lines():
            print(f"fleetcast {command}: {line}", file=sys.stderr)
    print(f"fleetcast {command}: {exc}", file=sys.stderr)
    return int(exc.exit_code)


def _finish(report: Any, out: Path) -> int:
    print(f"fleetcast import: wrote {out}")
    print(report.summary())
    for line in report.warnings:
        print(f"WARNING {line}", file=sys.stderr)
    if report.errors:
        for line in report.errors:
            print(f"ERROR {line}", file=sys.stderr)
        return 1
    return 0


def run_import_prometheus(args: argparse.Namespace) -> int:
    """Handler of ``fleetcast import prometheus``."""
    from fleetcast.trainer.importers.common import ImportFailure, parse_time
    from fleetcast.trainer.importers.prometheus import PrometheusImport, import_prometheus

    try:
        queries = {}
        for item in args.query:
            metric, sep, expr = item.partition("=")
            if not sep:
                raise ImportFailure(
                    f"Expected --query METRIC=PROMQL, but got {item!r}. "
                    "See docs/PROMETHEUS.md#queries."
                )
            queries[metric.strip()] = expr
        spec = PrometheusImport(
            url=args.url,
            start=parse_time(args.start, "--start"),
            end=parse_time(args.end, "--end"),
            queries=queries,
            server_label=args.server_label,
            strip_port=not args.keep_port,
            profile_label=args.profile_label,
            profile_rules=list(args.profile_rule),
            latency_fill=args.latency_fill,
            coverage=args.coverage,
            chunk_hours=args.chunk_hours,
            step=args.step,
            timeout_s=args.timeout,
        )
        report = import_prometheus(
            spec, args.out, restart=args.restart, progress=lambda m: print(m, file=sys.stderr)
        )
    except ImportFailure as exc:
        return _failed("import prometheus", exc)
    except OSError as exc:
        print(
            f"fleetcast import prometheus: cannot write {args.out} ({exc}). Fix: choose a "
            "writable --out. See docs/PROMETHEUS.md#import.",
            file=sys.stderr,
        )
        return 1
    return _finish(report, args.out)


def run_import_csv(args: argparse.Namespace) -> int:
    """Handler of ``fleetcast import csv``."""
    from fleetcast.trainer.importers.common import ImportFailure
    from fleetcast.trainer.importers.csv_import import import_csv, parse_map

    try:
        report = import_csv(
            args.file,
            args.out,
            parse_map(args.map),
            profile_rules=list(args.profile_rule),
            assume_utc=args.assume_utc,
            epoch_unit=args.epoch_unit,
            delimiter=args.delimiter,
            latency_fill=args.latency_fill,
        )
    except ImportFailure as exc:
        return _failed("import csv", exc)
    except OSError as exc:
        print(
            f"fleetcast import csv: cannot write {args.out} ({exc}). Fix: choose a writable "
            "--out. See docs/PROMETHEUS.md#csv.",
            file=sys.stderr,
        )
        return 1
    return _finish(report, args.out)
