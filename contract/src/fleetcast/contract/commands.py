"""``fleetcast validate FILE [--no-strict] [--json]``: check a Parquet file against the contract.

Exit codes: 0 valid (warnings allowed), 1 invalid, 2 the file cannot be read. Bad input
never produces a traceback: it produces a message that says what, why, how to fix, where.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from fleetcast.contract.validate import ValidationReport

__all__ = ["register_validate", "run_validate"]

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_UNREADABLE = 2


def register_validate(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``validate`` subcommand (entry point ``fleetcast.commands:validate``)."""
    parser = subparsers.add_parser(
        "validate",
        help="check a Parquet file against the data contract",
        description=(
            "Check a Parquet file (or a directory holding server_metrics.parquet) against "
            "docs/DATA_CONTRACT.md. Exit 0 valid, 1 invalid, 2 unreadable."
        ),
    )
    parser.add_argument("file", help="Parquet file, or a directory with server_metrics.parquet")
    parser.add_argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        help="report extra columns, integer metrics and non-UTC time zones as warnings",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    """Validate ``args.file``; print the report to stdout; return the exit code."""
    from fleetcast.contract.validate import DataFileError, DataValidator

    try:
        report = DataValidator(strict=args.strict).validate(args.file)
    except DataFileError as exc:
        if args.json:
            print(json.dumps({"source": args.file, "valid": False, "unreadable": str(exc)}))
        else:
            print(f"fleetcast validate: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return EXIT_VALID if report.is_valid else EXIT_INVALID


def format_report(report: ValidationReport) -> str:
    """The human-readable report: a summary line, then each issue with its four parts."""
    span = f", {report.start} .. {report.end}" if report.start else ""
    lines = [
        f"{report.source}: {report.rows:,} rows, {report.servers:,} servers{span} "
        f"(checked in {report.seconds:.2f} s, {'strict' if report.strict else 'non-strict'})"
    ]
    for issue in report.issues:
        label = "ERROR" if issue.severity == "error" else "WARNING"
        lines.append("")
        lines.append(f"{label} [{issue.rule}] {issue.what}")
        lines.extend(f"    e.g. {example}" for example in issue.examples)
        lines.append(f"    why: {issue.why}")
        lines.append(f"    fix: {issue.fix}")
        lines.append(f"    see: {issue.see}")
    n_err = sum(i.severity == "error" for i in report.issues)
    n_warn = len(report.issues) - n_err
    verdict = "VALID" if report.is_valid else "INVALID"
    lines.append("")
    lines.append(f"{verdict}: {n_err} error(s), {n_warn} warning(s).")
    return "\n".join(lines)
