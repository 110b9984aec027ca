"""Refuse to resume a run on other data than the checkpoint's.

A resumed run continues the interrupted one: its weights, its best epoch and that epoch's
validation loss were fit to that run's data, split and scales. On other data (another file,
or the same file a day longer) the resumed epochs' validation losses were compared with the
old run's, the old best epoch's weights were kept, and the bundle shipped them with the new
data's scalers: a model off by its scales, with nothing said. The run's :func:`fingerprint`
travels in the checkpoints (``BestWeights`` state), and :func:`check_resume_data` compares
it with this run's as Lightning restores the callbacks, before any epoch (the checkpoint is
read once, by Lightning).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import pandas as pd

__all__ = ["ResumeDataMismatch", "check_resume_data", "fingerprint"]

logger = logging.getLogger("fleetcast.trainer")

_SEE = "trainer/README.md#what-a-run-does"


def fingerprint(
    frame: pd.DataFrame, targets: Sequence[str], train_cutoff: int, cutoff: int
) -> dict[str, Any]:
    """What a resumed run must share with the run it resumes: a digest of the data (servers,
    steps, target values) and the split (the last training and validation steps)."""
    import pandas as pd

    digest = hashlib.sha256()
    for column in ["server_name", "time_idx", *targets]:
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            digest.update("\0".join(map(str, values.cat.categories)).encode())
            values = values.cat.codes
        digest.update(np.ascontiguousarray(values.to_numpy()).tobytes())
    return {
        "data": digest.hexdigest(),
        "rows": len(frame),
        "servers": int(frame["server_name"].nunique()),
        "train_cutoff": int(train_cutoff),
        "cutoff": int(cutoff),
    }


class ResumeDataMismatch(ValueError):
    """The checkpoint being resumed was trained on other data or another split than this
    run's: raised by ``BestWeights.load_state_dict`` while Lightning restores it, before any
    epoch; the message says what, why, how to fix, where."""


def check_resume_data(path: Path | str, saved: Any, current: dict[str, Any]) -> None:
    """Raise :class:`ResumeDataMismatch` when ``saved`` (the :func:`fingerprint` the resumed
    checkpoint at ``path`` recorded) differs from ``current``, this run's. A checkpoint that
    does not record one (written before it did) is resumed with a WARNING."""
    if not isinstance(saved, dict):
        logger.warning(
            "--resume %s: the checkpoint does not record the data it was trained on (written "
            "by an earlier fleetcast): resuming without checking that this run's data and "
            "split are the same",
            path,
        )
        return
    changed = []
    if saved.get("data") != current["data"]:
        changed.append(
            f"the data: {saved.get('rows')} rows of {saved.get('servers')} servers then, "
            f"{current['rows']} rows of {current['servers']} servers now"
            + (", other values" if saved.get("rows") == current["rows"] else "")
        )
    split = ("train_cutoff", "cutoff")
    if any(saved.get(k) != current[k] for k in split):
        changed.append(
            f"the split: training up to step {saved.get('train_cutoff')} and validation up to "
            f"{saved.get('cutoff')} then, {current['train_cutoff']} and {current['cutoff']} now"
        )
    if not changed:
        return
    from fleetcast.contract.errors import explain

    raise ResumeDataMismatch(
        explain(
            f"--resume {path}: the checkpoint was trained on other data than this run's "
            f"({'; '.join(changed)}).",
            "resuming continues the interrupted run: its weights, best epoch and validation "
            "loss were fit to that run's data, split and scales; continued on other data, "
            "the old best epoch could be kept and shipped with the new data's scales.",
            "Resume with the data file and --holdout-hours/--val-hours/--servers-sample of "
            "the interrupted run, or drop --resume to train a new run on this data.",
            _SEE,
        )
    )
