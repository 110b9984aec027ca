"""Batch generation: a simulated fleet history as a contract table and the three training files.

``training/server_metrics.parquet`` rows are sorted by ``server_name`` then ``timestamp``
(each server's series is contiguous). ``metrics_metadata.json`` records how the file was
made; ``server_mapping.json`` is the ServerEncoder mapping of every server in it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract.encoder import MAPPING_FILE, ServerEncoder
from fleetcast.contract.errors import explain
from fleetcast.contract.schema import (
    CONTRACT_VERSION,
    END_EPOCH_S,
    STEP_SECONDS,
    VALID_STATES,
    arrow_schema,
)
from fleetcast.contract.simulate.engine import FleetSimulator
from fleetcast.contract.simulate.fleet import DEFAULT_FLEET_SIZE

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "DATA_FILE",
    "METADATA_FILE",
    "MIN_HOURS",
    "OFFLINE_MODES",
    "ROW_GROUP_ROWS",
    "ROW_ORDER",
    "SIMULATOR_VERSION",
    "GenerationResult",
    "check_hours",
    "check_offline_mode",
    "default_start",
    "parse_start",
    "simulate_table",
    "table_from_steps",
    "write_training_data",
]

logger = logging.getLogger(__name__)

DATA_FILE = "server_metrics.parquet"
METADATA_FILE = "metrics_metadata.json"
MIN_HOURS = 24
"""The codex refuses less than one day of training data."""
OFFLINE_MODES: tuple[str, ...] = ("dense", "sparse")
"""dense: offline servers keep emitting rows (zeros, state offline); sparse: they emit none."""
ROW_ORDER = ("server_name", "timestamp")
ROW_GROUP_ROWS = 1 << 20
"""Rows per Parquet row group (whole servers per group)."""
SIMULATOR_VERSION = "1.0.0"
"""Version of the simulation model; bump when the same seed would produce different data."""


MAX_HOURS = 24 * 3653
"""The longest run the simulator writes: 10 years of 5-minute steps."""


def _hours_error(hours: object) -> ValueError:
    return ValueError(
        explain(
            f"--hours {hours} is below the minimum of {MIN_HOURS}.",
            "a model needs at least a full day of history to see the daily cycle "
            "(the codex recommends 720 hours, 30 days).",
            f"Pass --hours {MIN_HOURS} or more, e.g. --hours 720.",
            "docs/SERVER_PROFILES.md#generating-data",
        )
    )


def check_hours(hours: object) -> int:
    """Return ``hours`` as an int if it is a whole number >= MIN_HOURS, else raise ValueError."""
    if isinstance(hours, bool) or not isinstance(hours, (int, np.integer)):
        raise ValueError(
            explain(
                f"--hours {hours!r} is not a whole number of hours.",
                "the file holds a whole number of 5-minute steps per server.",
                "Pass an integer, e.g. --hours 720.",
                "docs/SERVER_PROFILES.md#generating-data",
            )
        )
    if hours < MIN_HOURS:
        raise _hours_error(hours)
    if hours > MAX_HOURS:
        raise ValueError(
            explain(
                f"--hours {hours} is more than the simulator writes ({MAX_HOURS}, 10 years).",
                "every server gets one row per 5 minutes: 10 years are already about a "
                "million rows per server.",
                "Pass fewer hours (the codex recommends 720, 30 days).",
                "docs/SERVER_PROFILES.md#generating-data",
            )
        )
    return int(hours)


def _check_end(start: int, hours: int) -> None:
    """Refuse data that would run past :data:`END_EPOCH_S`."""
    if start + hours * 3600 > END_EPOCH_S:
        raise ValueError(
            explain(
                f"The data would run {hours} hours from its start, past the year 9999.",
                "timestamps past it cannot be written as ISO dates (nor read by the appliance).",
                "Use an earlier --start, e.g. 2025-01-06T00:00:00Z (or omit it to end at the "
                "last full step), or fewer --hours.",
                "docs/DATA_CONTRACT.md#timestamp",
            )
        )


def default_start(hours: int, now: float | None = None) -> int:
    """Start (epoch s) such that the last row is the last full step before ``now``."""
    now = time.time() if now is None else now
    end = int(now) // STEP_SECONDS * STEP_SECONDS
    return end - hours * 3600


def parse_start(text: str) -> int:
    """Parse an ISO-8601 start with a zone (``Z`` or an offset) into step-aligned epoch seconds.

    A time without a zone is refused (docs/DATA_CONTRACT.md#timestamp: it is ambiguous).
    """
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            explain(
                f"--start {text!r} is not an ISO-8601 time.",
                "the start fixes every timestamp of the generated data.",
                "Write it like 2025-01-06T00:00:00Z.",
                "docs/DATA_CONTRACT.md#timestamp",
            )
        ) from None
    if when.tzinfo is None:
        raise ValueError(
            explain(
                f"--start {text!r} has no time zone.",
                "the data contract stores UTC instants and refuses a time without a zone: "
                "it could be any local time.",
                f"Add the zone, e.g. {text.strip()}Z for UTC (or an offset such as +01:00).",
                "docs/DATA_CONTRACT.md#timestamp",
            )
        )
    seconds = when.timestamp()
    if seconds < 0:
        raise ValueError(
            explain(
                f"--start {text!r} is before 1970-01-01T00:00:00Z.",
                "contract timestamps count 5-minute steps from the Unix epoch, so the "
                "simulator starts at or after it.",
                "Use a start on or after 1970-01-01T00:00:00Z, e.g. 2025-01-06T00:00:00Z "
                "(or omit --start to end at the last full step).",
                "docs/DATA_CONTRACT.md#timestamp",
            )
        )
    if seconds % STEP_SECONDS:
        raise ValueError(
            explain(
                f"--start {text!r} is not aligned to the {STEP_SECONDS}-second step.",
                "every contract timestamp is a whole number of steps since the epoch.",
                "Use a start on a 5-minute boundary, e.g. 2025-01-06T00:00:00Z.",
                "docs/DATA_CONTRACT.md#timestamp",
            )
        )
    return int(seconds)


def check_offline_mode(offline_mode: str) -> str:
    """Return ``offline_mode`` if it is ``dense`` or ``sparse``, else raise ValueError."""
    if offline_mode not in OFFLINE_MODES:
        raise ValueError(
            explain(
                f"Unknown offline mode {offline_mode!r}: expected one of {', '.join(OFFLINE_MODES)}.",
                "it decides whether offline servers keep emitting rows.",
                "Use --offline-mode dense (the codex requirement for training data).",
                "docs/SERVER_PROFILES.md#generating-data",
            )
        )
    return offline_mode


def table_from_steps(
    names: tuple[str, ...] | list[str],
    profiles: tuple[str, ...] | list[str],
    run: dict[str, np.ndarray],
    offline_mode: str = "dense",
) -> pa.Table:
    """A contract table (server-major rows) from :meth:`FleetSimulator.run` output.

    ``run`` holds ``timestamp`` (T,) epoch s and (T, n) metric/state arrays.
    """
    import pyarrow as pa

    steps, n = run["cpu_pct"].shape
    server_idx = np.repeat(np.arange(n, dtype=np.int32), steps)
    ts_us = np.tile(run["timestamp"].astype(np.int64) * 1_000_000, n)
    state = run["state"].T.ravel()
    columns = {
        "timestamp": pa.array(ts_us, type=pa.timestamp("us", tz="UTC")),
        "server_name": _decode(server_idx, names),
        "cpu_pct": pa.array(run["cpu_pct"].T.ravel()),
        "mem_pct": pa.array(run["mem_pct"].T.ravel()),
        "disk_io_mb_s": pa.array(run["disk_io_mb_s"].T.ravel()),
        "latency_ms": pa.array(run["latency_ms"].T.ravel()),
        "state": _decode(state.astype(np.int32), VALID_STATES),
        "profile": _decode(server_idx, profiles),
    }
    table = pa.Table.from_arrays(list(columns.values()), schema=arrow_schema())
    if check_offline_mode(offline_mode) == "sparse":
        table = table.filter(pa.array(state != VALID_STATES.index("offline")))
    return table


def _decode(codes: np.ndarray, values: tuple[str, ...] | list[str]) -> pa.Array:
    """A string array from integer codes into ``values`` (a dictionary decode, vectorised)."""
    import pyarrow as pa

    dictionary = pa.DictionaryArray.from_arrays(
        pa.array(codes), pa.array(list(values), pa.string())
    )
    return dictionary.cast(pa.string())


def simulate_table(
    n_servers: int = DEFAULT_FLEET_SIZE,
    hours: int = 720,
    seed: int = 42,
    start: int | None = None,
    offline_mode: str = "dense",
    scenario: str = "healthy",
) -> pa.Table:
    """Simulate ``hours`` of a fleet from ``start`` (epoch s; default: ending now) as a table."""
    hours = check_hours(hours)
    start = default_start(hours) if start is None else start
    _check_end(start, hours)
    sim = FleetSimulator(n_servers, seed, start, scenario)
    run = sim.run(hours * 3600 // STEP_SECONDS)
    return table_from_steps(sim.fleet.names, sim.fleet.profiles, run, offline_mode)


@dataclass(frozen=True)
class GenerationResult:
    """What :func:`write_training_data` wrote."""

    data_path: Path
    metadata_path: Path
    mapping_path: Path
    rows: int
    seconds: float
    metadata: dict[str, object]


def write_training_data(
    out_dir: str | Path,
    n_servers: int = DEFAULT_FLEET_SIZE,
    hours: int = 720,
    seed: int = 42,
    start: int | None = None,
    offline_mode: str = "dense",
    scenario: str = "healthy",
    replace: bool = False,
) -> GenerationResult:
    """Simulate a fleet and write server_metrics.parquet, metrics_metadata.json, server_mapping.json.

    The Parquet file is written in row groups of about a million rows (whole servers),
    so the Arrow side never holds more than one group; the file appears atomically. A
    ``server_metrics.parquet`` already in ``out_dir`` is replaced only when an earlier
    generate wrote it, or with ``replace`` (``--replace``): an imported real fleet is not
    overwritten by a simulated one unasked.
    """
    import pyarrow.parquet as pq

    began = time.perf_counter()
    hours = check_hours(hours)
    check_offline_mode(offline_mode)
    start = default_start(hours) if start is None else start
    _check_end(start, hours)
    # The simulator checks the server count, the seed, the start and the scenario: a
    # refused run leaves no folder behind.
    _check_memory(n_servers, hours * 3600 // STEP_SECONDS)  # before the fleet is built
    sim = FleetSimulator(n_servers, seed, start, scenario)
    out = Path(out_dir)
    if not replace:
        _check_replace(out / DATA_FILE, out / METADATA_FILE)
    out.mkdir(parents=True, exist_ok=True)  # fail before the work, not after
    mapping = _folder_mapping(out)
    steps = hours * 3600 // STEP_SECONDS
    run = sim.run(steps)
    fleet = sim.fleet
    data_path = out / DATA_FILE
    tmp = data_path.with_suffix(".parquet.tmp")
    per_group = max(1, ROW_GROUP_ROWS // steps)
    rows = 0
    with pq.ParquetWriter(tmp, arrow_schema(), compression="snappy") as writer:
        for s0 in range(0, fleet.size, per_group):
            cols = slice(s0, s0 + per_group)
            part = {k: v if k == "timestamp" else v[:, cols] for k, v in run.items()}
            table = table_from_steps(fleet.names[cols], fleet.profiles[cols], part, offline_mode)
            writer.write_table(table, row_group_size=table.num_rows)
            rows += table.num_rows
    if mapping is None:
        mapping = ServerEncoder(fleet.names)
    else:  # the folder's other data sets (an import's) keep their servers
        mapping.fit(fleet.names)
    mapping_path = mapping.save(out / MAPPING_FILE)
    counts = np.bincount(run["state"].ravel(), minlength=len(VALID_STATES))
    if offline_mode == "sparse":
        counts[VALID_STATES.index("offline")] = 0
    seconds = time.perf_counter() - began
    metadata: dict[str, object] = {
        "contract_version": CONTRACT_VERSION,
        "generator": "fleetcast.contract.simulate",
        "generator_version": SIMULATOR_VERSION,
        "package_version": _package_version(),
        "seed": seed,
        "servers": fleet.size,
        "hours": hours,
        "step_seconds": STEP_SECONDS,
        "start": _iso(start),
        "end": _iso(start + hours * 3600 - STEP_SECONDS),
        "rows": rows,
        "row_order": list(ROW_ORDER),
        "offline_mode": offline_mode,
        "scenario": scenario,
        "profile_counts": fleet.counts(),
        "state_counts": {s: int(c) for s, c in zip(VALID_STATES, counts, strict=True)},
        "problem_children": [n for n, p in zip(fleet.names, sim.problem_child, strict=True) if p],
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "generation_seconds": round(seconds, 3),
    }
    metadata_path = out / METADATA_FILE
    meta_tmp = metadata_path.with_name(metadata_path.name + ".tmp")
    meta_tmp.write_text(json.dumps(metadata, indent=2) + "\n")
    if data_path.exists():
        logger.warning("replacing %s with the new simulated fleet", data_path)
    # The data and the metadata that says generate wrote it, back to back: an interruption
    # between them would leave the folder looking like someone else's data (_check_replace).
    tmp.replace(data_path)
    meta_tmp.replace(metadata_path)
    described = data_path.with_suffix(".metadata.json")  # an import's, of the data replaced
    if described.exists():
        logger.warning("removing %s: it described the data replaced", described)
        described.unlink()
    logger.info("wrote %d rows for %d servers to %s in %.2f s", rows, fleet.size, out, seconds)
    return GenerationResult(data_path, metadata_path, mapping_path, rows, seconds, metadata)


_BYTES_PER_CELL = 36
"""Peak memory of a generate run per server and step, measured: the simulator's four
float32 metrics and int8 state (17 bytes), its working blocks and the Arrow tables of one
row group (3,000 servers x 720 h: 34 bytes)."""


def _check_memory(servers: int, steps: int) -> None:
    """Refuse (ValueError) a fleet whose simulation would not fit in the memory available
    now (``MemAvailable``): it failed after minutes with numpy's allocation traceback, or
    drove the machine into its OOM killer. Skipped where /proc/meminfo does not exist, and
    for a count the simulator refuses anyway."""
    if not isinstance(servers, int) or isinstance(servers, bool) or servers < 1:
        return
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return
    need = servers * steps * _BYTES_PER_CELL
    if need > available:
        gib = 1024**3
        raise ValueError(
            explain(
                f"{servers:,} servers x {steps:,} steps need about {need / gib:.1f} GiB of "
                f"memory to simulate; {available / gib:.1f} GiB is available.",
                "the simulator holds the whole run in memory before it writes it; it would "
                "fail part-way, or drive the machine into its out-of-memory killer.",
                "generate fewer --servers or --hours, or several folders (each with its "
                "own --seed) and train on them one by one.",
                "docs/SERVER_PROFILES.md#generating-data",
            )
        )


def _check_replace(data_path: Path, metadata_path: Path) -> None:
    """Refuse (ValueError) to replace a ``server_metrics.parquet`` an earlier generate did
    not write: its ``metrics_metadata.json`` names the simulator and the file's row count."""
    if not data_path.exists():
        return
    try:
        import pyarrow.parquet as pq

        meta = json.loads(metadata_path.read_text(encoding="utf-8"))
        ours = (
            isinstance(meta, dict)
            and meta.get("generator") == "fleetcast.contract.simulate"
            and meta.get("rows") == pq.ParquetFile(data_path).metadata.num_rows
        )
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise ValueError(
            explain(
                f"{data_path} is there and was not written by `fleetcast generate` (no "
                f"{metadata_path.name} from the simulator describes it): an import, or data "
                "of your own.",
                "a simulated fleet would replace it; nothing was written.",
                "pass another --out-dir, or --replace to overwrite it.",
                "docs/SERVER_PROFILES.md#generating-data",
            )
        )


def _folder_mapping(out: Path) -> ServerEncoder | None:
    """The server mapping already in ``out`` (None when there is none): the generated
    servers are merged into it, as an import merges its own, never replacing it."""
    path = out / MAPPING_FILE
    if not path.exists():
        return None
    try:
        return ServerEncoder.load(path)
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ValueError(
            explain(
                f"{path} is there but cannot be read as a server mapping "
                f"({type(exc).__name__}: {exc}).",
                "generate merges its servers into the folder's mapping (other data sets "
                "there need theirs) and will not overwrite a file it cannot read; nothing "
                "was written.",
                f"Repair or move {path} away, or pass another --out-dir.",
                "docs/DATA_CONTRACT.md#server-ids",
            )
        ) from exc


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fleetcast-contract")
    except PackageNotFoundError:
        return "unknown"
