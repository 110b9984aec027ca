"""Reading training data: the Parquet file, its hash, and a bounded-memory server sample.

In-memory limit: training holds the chosen servers' rows in memory three times over — the
Arrow table, the pandas frame (~60 bytes/row) and pytorch-forecasting's tensors
(~120 bytes/row) — so budget about **250 bytes per row** (the default 90-server × 720 h fleet,
778k rows, needs ~0.2 GB; 10 million rows ~2.5 GB). Above the machine's memory, train on a
sample of servers (``fleetcast train --servers-sample N``): the server list is gathered by
scanning the file in bounded record batches (pyarrow.dataset), and only the sampled
servers' rows are read. The model generalises across servers through ``profile``, so a
sample that covers every profile loses little.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "BYTES_PER_ROW",
    "DATA_FILE",
    "file_sha256",
    "follow_umask",
    "read_training_table",
    "resolve_data_path",
    "sample_servers",
    "scan_servers",
]

logger = logging.getLogger("fleetcast.trainer")

DATA_FILE = "server_metrics.parquet"
BYTES_PER_ROW = 250
"""Approximate memory per row during training (table + frame + tensors)."""


def resolve_data_path(path: str | Path) -> Path:
    """A Parquet file path; a directory means its ``server_metrics.parquet``."""
    path = Path(path)
    if path.is_dir():
        return path / DATA_FILE
    return path


def follow_umask(path: Path) -> None:
    """Give ``path`` the mode a new file gets from the umask. safetensors writes its file
    0600 while the bundle's other files follow the umask: a bundle copied to an appliance as
    root was then unreadable to its service user (DynamicUser), which checks the weights
    beside the model and refused to start."""
    mask = os.umask(0o077)  # read it; a file another thread creates meanwhile is private
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scan_servers(path: str | Path, batch_rows: int = 1 << 20) -> dict[str, tuple[str, int]]:
    """``{server_name: (profile, rows)}`` of a Parquet file, scanned in bounded record batches."""
    import pyarrow.dataset as pads

    rows: Counter[str] = Counter()
    profiles: dict[str, str] = {}
    dataset = pads.dataset(str(path), format="parquet")
    for batch in dataset.to_batches(columns=["server_name", "profile"], batch_size=batch_rows):
        names = batch.column(0).to_pylist()
        profs = batch.column(1).to_pylist()
        rows.update(names)
        for n, p in zip(names, profs, strict=True):
            profiles.setdefault(n, p)
    return {n: (profiles[n], c) for n, c in rows.items()}


def sample_servers(servers: dict[str, tuple[str, int]], count: int) -> list[str]:
    """A deterministic sample of ``count`` servers, spread over the profiles.

    Servers are ordered by SHA-256 of their names within each profile and taken round-robin
    over the profiles, so every profile is represented when ``count`` ≥ the number of profiles.
    """
    by_profile: dict[str, list[str]] = {}
    for name, (profile, _) in servers.items():
        by_profile.setdefault(profile, []).append(name)
    queues = [
        sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
        for _, names in sorted(by_profile.items())
    ]
    chosen: list[str] = []
    while len(chosen) < min(count, len(servers)):
        for q in queues:
            if q and len(chosen) < count:
                chosen.append(q.pop(0))
    return sorted(chosen)


def read_training_table(path: str | Path, servers_sample: int | None = None) -> pa.Table:
    """The contract columns of a Parquet file, optionally only ``servers_sample`` servers."""
    from fleetcast.contract.tables import read_contract_columns

    if not servers_sample:
        table = read_contract_columns(path)
        logger.info(
            "read %d rows (~%.2f GB in training)",
            table.num_rows,
            table.num_rows * BYTES_PER_ROW / 1e9,
        )
        return table
    servers = scan_servers(path)
    chosen = sample_servers(servers, servers_sample)
    rows = sum(servers[n][1] for n in chosen)
    logger.info(
        "sampling %d of %d servers: %d rows (~%.2f GB in training)",
        len(chosen),
        len(servers),
        rows,
        rows * BYTES_PER_ROW / 1e9,
    )
    return read_contract_columns(path, chosen)
