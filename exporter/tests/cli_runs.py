"""``fleetcast export`` through the real CLI: the inputs a run needs, and the run itself."""

from __future__ import annotations

import shutil
import warnings
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from fleetcast.contract.cli import main

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa


def copy_bundle(bundle_dir: Path, folder: Path) -> Path:
    """A copy of ``bundle_dir`` at ``folder/bundle``: an export writes into its bundle."""
    copy = folder / "bundle"
    shutil.copytree(bundle_dir, copy)
    return copy


def write_metrics(table: pa.Table, folder: Path) -> Path:
    """``table`` written as ``folder/metrics.parquet``, the ``--data`` of an export."""
    data = folder / "metrics.parquet"
    pq.write_table(table, data)
    return data


def run_export(argv: list[str]) -> int:
    """The exit code of ``fleetcast export ARGV``, the libraries' warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(["export", *argv])
