"""The importers' output path: checked before anything is read, written atomically.

``check_out`` refuses an ``--out`` that cannot become a file (a folder, or a path under a
file) with an ImportFailure, before any source is read. ``atomic_write`` writes to
``<path>.tmp`` and renames it over ``path``; on any failure the temporary file is removed,
so a failed import leaves nothing half-written behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["atomic_write", "check_out"]


def check_out(out: Path, see: str) -> None:
    """ImportFailure when ``out`` is a folder or lies under a file (nothing read yet)."""
    from fleetcast.contract.errors import explain
    from fleetcast.trainer.importers.common import ImportFailure

    why = (
        "--out names the Parquet file to write (its metadata and server_mapping.json go "
        "beside it); the import would read everything and then fail to write it."
    )
    if out.is_dir():
        raise ImportFailure(
            explain(
                f"--out {out} is a folder, not a file.",
                why,
                f"Pass a file path, e.g. --out {out / 'real.parquet'}.",
                see,
            )
        )
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ImportFailure(
            explain(
                f"--out {out} cannot be written: {parent} is a file, not a folder.",
                why,
                "Pass --out in a folder (it is created when missing), e.g. "
                "--out training/real.parquet.",
                see,
            )
        )


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename ``tmp`` over ``path``; ``tmp`` removed on any failure."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
