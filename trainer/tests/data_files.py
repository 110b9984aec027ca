"""The toy fleet as a training file on disk, for the tests that run ``fleetcast train``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from fleetcast.trainer.toydata import make_toy_table

if TYPE_CHECKING:
    from pathlib import Path


def write_toy_data(folder: Path) -> Path:
    """``make_toy_table()`` written as ``folder/training/server_metrics.parquet``."""
    path = folder / "training" / "server_metrics.parquet"
    path.parent.mkdir()
    pq.write_table(make_toy_table(), path)
    return path
