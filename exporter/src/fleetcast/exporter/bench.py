"""``fleetcast bench``: run the benchmark suite of a fleetcast **source checkout**.

The suite lives in the repository (``benchmarks/run.py``, docs/BENCHMARKS.md), not in an
installed distribution: this command finds the checkout (``--checkout DIR``, else the
current directory or one of its parents, else the checkout this package is installed
from in editable mode) and runs the suite there with the same interpreter, passing the
suite's options on (``fleetcast bench --quick``, ``--full``, ``--model-dir DIR`` …).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

__all__ = ["find_checkout", "register_bench", "run_bench", "suite_argv"]

RUNNER = Path("benchmarks") / "run.py"


def find_checkout(start: Path | None = None) -> Path | None:
    """The nearest folder holding ``benchmarks/run.py``: ``start`` and its parents, then this file's."""
    candidates = []
    if start is not None:
        candidates += [start, *start.parents]
    here = Path(__file__).resolve()
    candidates += list(here.parents)
    for folder in candidates:
        if (folder / RUNNER).is_file():
            return folder
    return None


_FLAGS: tuple[tuple[str, str], ...] = (
    ("--quick", "CI mode: small model and fleets, under 2 minutes (the default)"),
    (
        "--full",
        "the production shape at 1..10,000 servers, about 15 minutes; updates docs/ "
        "when it runs every benchmark (no --only/--skip)",
    ),
    ("--no-fail", "exit 0 even when a target is missed or a benchmark failed"),
    ("--report-only", "same as --no-fail"),
    ("--update-docs", "rewrite docs/BENCHMARKS.md's results block and plots"),
    ("--no-update-docs", "leave docs/ alone (also in --full)"),
    ("--verbose", "log progress"),
)
_VALUES: tuple[tuple[str, str], ...] = (
    ("--model-dir", "bundle folder with model.onnx (default: train and export a small model)"),
    (
        "--appliance-env",
        "virtual environment whose bin/fleetcast runs the appliance in the service benchmark "
        "(default: the checkout's .venv-appliance when it exists)",
    ),
    ("--only", "comma-separated subset of the benchmarks"),
    ("--skip", "comma-separated benchmarks to leave out"),
    ("--results-dir", "where the JSON/Markdown results go (default benchmarks/results)"),
    ("--docs", "the Markdown page to update (default docs/BENCHMARKS.md)"),
    (
        "--render",
        "run nothing: rebuild the report (with --update-docs, the docs block and "
        "plots) from an earlier results JSON",
    ),
)

_PATHS = frozenset({"--model-dir", "--appliance-env", "--results-dir", "--docs", "--render"})


def register_bench(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to the ``fleetcast`` CLI's sub-parsers."""
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmark suite (from a source checkout): fleetcast vs its baselines",
        description=(
            "Run benchmarks/run.py of a fleetcast source checkout: inference, feature "
            "windows, the appliance over HTTP, accuracy, GPU; targets checked, results in "
            "benchmarks/results/ and docs/BENCHMARKS.md. Exit 0: every checked target met; "
            "1: one missed or a benchmark failed; 2: bad usage or no checkout. "
            "See docs/BENCHMARKS.md."
        ),
    )
    parser.add_argument(
        "--checkout", type=Path, default=None, help="the source checkout (default: found)"
    )
    for flag, text in _FLAGS:
        parser.add_argument(flag, action="store_true", help=text)
    for flag, text in _VALUES:
        parser.add_argument(flag, default=None, help=text)
    parser.set_defaults(handler=run_bench)


def suite_argv(args: argparse.Namespace) -> list[str]:
    """The runner's arguments from the parsed ``fleetcast bench`` options."""
    out: list[str] = []
    for flag, _ in _FLAGS:
        if getattr(args, flag[2:].replace("-", "_"), False):
            out.append(flag)
    for flag, _ in _VALUES:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            # the suite runs in the checkout: paths are made absolute from the caller's cwd
            out += [flag, str(Path(value).resolve()) if flag in _PATHS else str(value)]
    return out


def run_bench(args: argparse.Namespace) -> int:
    """Locate the checkout and run its suite; returns the suite's exit code (2: no checkout)."""
    root = Path(args.checkout) if args.checkout else find_checkout(Path.cwd())
    if root is not None and not (root / RUNNER).is_file():  # --checkout DIR, not a checkout
        print(
            f"fleetcast bench: {root} is not a fleetcast source checkout (no {RUNNER} in it). "
            "Why it matters: the benchmark suite ships with the source. Fix: pass the folder "
            "of a clone of the repository to --checkout. See docs/BENCHMARKS.md#running-it.",
            file=sys.stderr,
        )
        return 2
    if root is None:
        print(
            "fleetcast bench: no fleetcast source checkout found (looked for benchmarks/run.py "
            f"in {Path.cwd()} and its parents). Why it matters: the benchmark suite ships with "
            "the source, not with the installed packages. Fix: run it inside a clone of the "
            "repository, or pass --checkout DIR. See docs/BENCHMARKS.md#running-it.",
            file=sys.stderr,
        )
        return 2
    return subprocess.call([sys.executable, str(root / RUNNER), *suite_argv(args)], cwd=root)
