"""Benchmark: validate a 10M-row contract Parquet file (rows/s and peak memory).

Usage::

    python benchmarks/bench_validate.py [--rows 10000000] [--servers 3472] [--keep DIR]

Builds a contract-valid file with vectorised numpy (row groups of 1M rows, so building
it stays small too) in a temporary directory, then validates it in a fresh interpreter
so that the peak RSS reported is the validator's alone (plus the interpreter and
pyarrow). Prints rows, file size, seconds, rows/s and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["build_file", "main", "measure"]

_ROW_GROUP = 1_000_000


def build_file(path: Path, rows: int, servers: int, seed: int = 0) -> int:
    """Write a contract-valid Parquet file of about ``rows`` rows; returns the rows written.

    Layout: ``servers`` servers × ``rows // servers`` steps, sorted by time then server
    (as a scraper writes), dense (no missing steps), one profile per server.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fleetcast.contract import STEP_SECONDS, VALID_PROFILES, VALID_STATES, arrow_schema
    from fleetcast.contract.encoder import profile_from_name
    from fleetcast.contract.schema import PROFILE_NAME_PREFIXES

    rng = np.random.default_rng(seed)
    steps = rows // servers
    prefixes = list(PROFILE_NAME_PREFIXES.values())
    names = np.array(
        [f"{prefixes[i % 7][0]}{i // 7:0{max(4, prefixes[i % 7][1])}d}" for i in range(servers)],
        dtype=object,
    )
    profiles = np.array([VALID_PROFILES.index(profile_from_name(n)) for n in names])
    name_dict = pa.array(names.tolist(), pa.string())
    state_dict = pa.array(list(VALID_STATES), pa.string())
    profile_dict = pa.array(list(VALID_PROFILES), pa.string())
    start = 1_767_225_600 // STEP_SECONDS  # 2026-01-01T00:00:00Z in steps
    schema = arrow_schema()
    total = steps * servers
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, total, _ROW_GROUP):
            idx = np.arange(first, min(first + _ROW_GROUP, total))
            server = (idx % servers).astype(np.int32)
            step = start + idx // servers
            n = idx.size
            cpu = rng.uniform(0, 100, n).astype(np.float32)
            state = np.where(rng.random(n) < 0.9, 1, rng.integers(0, 8, n)).astype(np.int32)
            table = pa.table(
                {
                    "timestamp": pa.array(step * STEP_SECONDS * 1_000_000, pa.int64()).cast(
                        pa.timestamp("us", tz="UTC")
                    ),
                    "server_name": name_dict.take(pa.array(server)),
                    "cpu_pct": cpu,
                    "mem_pct": rng.uniform(0, 100, n).astype(np.float32),
                    "disk_io_mb_s": rng.lognormal(1.0, 1.5, n).astype(np.float32),
                    "latency_ms": rng.lognormal(3.0, 0.5, n).astype(np.float32),
                    "state": state_dict.take(pa.array(state)),
                    "profile": profile_dict.take(pa.array(profiles[server].astype(np.int32))),
                },
                schema=schema,
            )
            writer.write_table(table, row_group_size=_ROW_GROUP)
    return total


def measure(path: str, strict: bool = True) -> dict[str, object]:
    """Validate ``path`` in this process; returns seconds, rows/s, peak RSS and the verdict."""
    import resource

    from fleetcast.contract import DataValidator

    started = time.perf_counter()
    report = DataValidator(strict=strict).validate(path)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rows": report.rows,
        "servers": report.servers,
        "valid": report.is_valid,
        "issues": [i.rule for i in report.issues],
        "seconds": round(seconds, 3),
        "rows_per_s": round(report.rows / seconds),
        "peak_rss_mb": round(peak_kib / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Build the file, validate it in a child interpreter, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--servers", type=int, default=3472, help="servers (rows/servers steps)")
    parser.add_argument("--keep", type=Path, help="write the file here instead of a temp dir")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "server_metrics.parquet"
        started = time.perf_counter()
        rows = build_file(path, args.rows, args.servers)
        built = time.perf_counter() - started
        print(
            f"built {rows:,} rows ({args.servers:,} servers) in {built:.1f} s, "
            f"{path.stat().st_size / 2**20:.0f} MiB"
        )
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(path)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"validate_schema: {result['seconds']:.2f} s, {result['rows_per_s']:,} rows/s, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB, valid={result['valid']} "
            f"issues={result['issues']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
