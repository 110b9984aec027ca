"""Benchmark: the fleet simulator, generating AND writing the three training files.

Usage::

    python benchmarks/bench_simulate.py [--case all|default|large] [--repeat 1] [--keep DIR]

Cases (the issue's targets, on this machine):

* ``default``: 90 servers x 720 h (777,600 rows), target < 10 s;
* ``large``: 10,000 servers x 24 h (2,880,000 rows), target < 30 s.

Each case runs ``fleetcast generate``'s code path (``write_training_data``) into a
temporary directory and reports wall seconds (best of ``--repeat``), rows/s, the
simulation-only share and the Parquet size. Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

__all__ = ["CASES", "main", "measure"]

CASES: dict[str, tuple[int, int, float]] = {
    "default": (90, 720, 10.0),
    "large": (10_000, 24, 30.0),
}
"""name -> (servers, hours, target seconds)."""

_START = 1_736_121_600  # 2025-01-06T00:00:00Z: a fixed start keeps runs comparable


def measure(servers: int, hours: int, out_dir: Path, repeat: int = 1) -> dict[str, float | int]:
    """Generate and write ``servers`` x ``hours``; return timings (best of ``repeat``)."""
    from fleetcast.contract.simulate.batch import write_training_data
    from fleetcast.contract.simulate.engine import FleetSimulator

    best = float("inf")
    rows = 0
    for _ in range(repeat):
        began = time.perf_counter()
        result = write_training_data(out_dir, servers, hours, seed=42, start=_START)
        best = min(best, time.perf_counter() - began)
        rows = result.rows
    began = time.perf_counter()
    FleetSimulator(servers, 42, _START).run(hours * 12)
    simulate_only = time.perf_counter() - began
    return {
        "servers": servers,
        "hours": hours,
        "rows": rows,
        "seconds": round(best, 3),
        "rows_per_s": round(rows / best),
        "simulate_only_s": round(simulate_only, 3),
        "parquet_mb": round((out_dir / "server_metrics.parquet").stat().st_size / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark cases; exit 1 if a case misses its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["all", *CASES], default="all")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="write here instead of a temp dir")
    args = parser.parse_args(argv)
    names = list(CASES) if args.case == "all" else [args.case]
    missed = False
    for name in names:
        servers, hours, target = CASES[name]
        with tempfile.TemporaryDirectory() as tmp:
            out = args.keep / name if args.keep else Path(tmp)
            figures = measure(servers, hours, out, args.repeat)
        figures.update(case=name, target_s=target, met=figures["seconds"] < target)
        missed |= not figures["met"]
        print(json.dumps(figures))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
