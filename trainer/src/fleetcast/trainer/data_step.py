"""The trainer's check of the data's step: data at another step than 300 s is refused.

:func:`check_data_step` judges the data (all servers together) and each server by the gaps
between consecutive rows, with the thresholds :data:`STEP_CHECK_MIN_GAPS` and
:data:`STEP_CHECK_OFF_SHARE` (trainer/README.md#data-step, docs/DATA_CONTRACT.md#step).
Split from :mod:`fleetcast.trainer.options`, which re-exports it. :func:`null_short_servers`
makes servers too short for a training window unknown servers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fleetcast.contract.schema import STEP_SECONDS

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DATA_STEP_DOC",
    "check_data_step",
    "null_short_servers",
    "null_state_blocks",
    "untrained_profiles",
]

DATA_STEP_DOC = "trainer/README.md#data-step"
"""Where the trainer's rule for data at another step is documented."""
STEP_CHECK_MIN_GAPS = 24
"""A server is judged to be at another step only with at least this many gaps between rows."""
STEP_CHECK_OFF_SHARE = 0.1
"""Data whose most common gap is k > 1 steps is at a k-step spacing when fewer than this
share of its gaps are not multiples of k (trainer/README.md#data-step)."""


def _other_step(gaps: np.ndarray) -> int | None:
    """k when these gaps (in steps, all > 0) are those of data at a k-step spacing, k > 1.

    At least :data:`STEP_CHECK_MIN_GAPS` gaps, the most common one k > 1 steps, and fewer
    than :data:`STEP_CHECK_OFF_SHARE` of them not a multiple of k (bucketing jitter).
    """
    if gaps.size < STEP_CHECK_MIN_GAPS:
        return None
    values, counts = np.unique(gaps, return_counts=True)
    common = int(values[np.argmax(counts)])
    if common == 1:
        return None
    off = float(np.count_nonzero(gaps % common)) / gaps.size
    return common if off < STEP_CHECK_OFF_SHARE else None


def check_data_step(frame: pd.DataFrame) -> None:
    """Refuse data whose step is not the contract's 300 s (docs/DATA_CONTRACT.md#step).

    ``frame``: a :func:`~fleetcast.trainer.dataset.prepare_frame` frame (``time_idx`` =
    timestamp // 300, one row per server and step, sorted by server and time). The gaps
    between consecutive rows of one server are counted in steps; the data (all servers
    together), or any one server, is at a k-step spacing when it has at least
    :data:`STEP_CHECK_MIN_GAPS` gaps, its most common gap (the data's step as
    docs/DATA_CONTRACT.md#model-step defines it) is k > 1 steps, and fewer than 10 % of its
    gaps are not multiples of k. 5-minute data with gaps cannot pass for that: random
    outages leave at least half of the gaps (in expectation) not multiples of any k > 1
    (every one-step gap among them), however many steps are missing
    (trainer/README.md#data-step). Raises ValueError with a four-part message.
    """
    from fleetcast.contract.errors import explain

    steps = frame["time_idx"].to_numpy(dtype=np.int64)
    names = frame["server_name"].to_numpy()
    if len(steps) < 2:
        return
    same = names[1:] == names[:-1]
    diffs = np.diff(steps)
    gaps = diffs[same & (diffs > 0)]
    why = (
        f"every length the model has (encoder, prediction, the day-ago lag, the horizons) is "
        f"a number of {STEP_SECONDS}-second steps: data at another step would be read as "
        f"{STEP_SECONDS}-second data with steps missing, and the model would learn a "
        "stretched time scale (never a silent reinterpretation)."
    )
    fix = (
        f"Resample the data to {STEP_SECONDS}-second steps (one row per server every 5 "
        "minutes; average the samples of each step), or drop the servers at another step. "
        f"The rule is explained in {DATA_STEP_DOC}."
    )
    common = _other_step(gaps)
    if common is not None:
        one_step = np.count_nonzero(gaps == 1) / gaps.size
        raise ValueError(
            explain(
                f"The data's step is {common * STEP_SECONDS} s: it is the most common gap "
                f"between consecutive rows of one server, and {one_step:.1%} of the "
                f"{gaps.size} gaps are one {STEP_SECONDS}-second step; the contract step is "
                f"{STEP_SECONDS} s.",
                why,
                fix,
                "docs/DATA_CONTRACT.md#step",
            )
        )
    # Per server. Only servers with few one-step gaps can be at another step: screen them
    # vectorised, then look at each candidate's gaps.
    starts = np.flatnonzero(np.r_[True, ~same])
    ends = np.r_[starts[1:], len(steps)]
    one = np.r_[(diffs == 1) & same, False].astype(np.int64)
    n_gaps = ends - starts - 1
    n_one = np.add.reduceat(one, starts)
    candidates = np.flatnonzero(
        (n_gaps >= STEP_CHECK_MIN_GAPS) & (n_one < STEP_CHECK_OFF_SHARE * n_gaps)
    )
    odd = []
    for i in candidates:
        k = _other_step(np.diff(steps[starts[i] : ends[i]]))
        if k is not None:
            odd.append((str(names[starts[i]]), k * STEP_SECONDS, int(n_gaps[i]) + 1))
    if odd:
        examples = ", ".join(f"{n} ({sec} s, {rows} rows)" for n, sec, rows in odd[:5])
        raise ValueError(
            explain(
                f"{len(odd)} server(s) are at another step than {STEP_SECONDS} s (their most "
                "common gap between rows is longer, and nearly every gap a multiple of it), "
                f"e.g. {examples}.",
                why,
                fix,
                "docs/DATA_CONTRACT.md#step",
            )
        )


def null_short_servers(frame: pd.DataFrame, cutoff: int, min_steps: int) -> list[str]:
    """Servers with fewer than ``min_steps`` steps up to ``cutoff`` (the training part)
    form no training window, so an embedding of their own would never be trained: their
    ``server_id`` becomes the unknown ID (in place, train and held-out rows alike) and the
    model treats them as the new servers they are (docs/DATA_CONTRACT.md#unknown-servers).
    Returns their names, sorted."""
    import pandas as pd

    from fleetcast.trainer.dataset import CATEGORICAL_NAN

    names = frame["server_name"]
    steps = frame.loc[frame["time_idx"] <= cutoff].groupby(names, observed=True).size()
    counts = steps.reindex(names.cat.categories, fill_value=0)
    short = sorted(str(n) for n in counts.index[counts.to_numpy() < min_steps])
    if short:
        ids = frame["server_id"].astype(object).where(~names.isin(short), CATEGORICAL_NAN)
        frame["server_id"] = pd.Categorical(ids)
    return short


def untrained_profiles(frame: pd.DataFrame, short: list[str]) -> list[str]:
    """The contract's profiles that no server with a training window has (servers in
    ``short`` form none): the model's embedding of such a profile is never trained, so a
    server of it is forecast from an untrained profile embedding (its own recent data
    still feeds the model). Sorted."""
    from fleetcast.contract.schema import VALID_PROFILES

    trained = frame.loc[~frame["server_name"].isin(short), "profile"]
    return sorted(set(VALID_PROFILES) - {str(p) for p in trained.unique()})


def null_state_blocks(frame: pd.DataFrame, fraction: float, upto: int, day_steps: int) -> int:
    """Null ``state`` (in place) on each server's days up to step ``upto``, each day drawn
    with probability ``fraction`` (that share of the days on average; train_model passes the
    end of the validation part less an encoder, so the held-out windows keep their states).

    A model that only ever saw states learns nothing for the null state, and every source
    without state labels (Prometheus, most ``POST /metrics`` clients) sends null: its
    forecasts were then biased (a database's memory climbed 4-12 points in 30 minutes on a
    flat series). Whole days, so most windows are all-null or all-labelled, as a
    deployment's are. A day is chosen by the SHA-256 of ``"state:<server>:<day>"``: the
    choice does not depend on row order, process or machine. Returns the rows nulled."""
    import hashlib

    import pandas as pd

    from fleetcast.trainer.dataset import CATEGORICAL_NAN

    if fraction <= 0:
        return 0
    state = frame["state"].astype(object).to_numpy()
    labelled = state != CATEGORICAL_NAN
    if not labelled.any():
        return 0
    names = frame["server_name"].astype(str).to_numpy()
    day = frame["time_idx"].to_numpy() // day_steps
    codes, uniq = pd.factorize(pd.Series(names, copy=False))
    pairs, inverse = np.unique(np.c_[codes, day], axis=0, return_inverse=True)
    limit = int(fraction * 2**32)
    chosen = np.array(
        [
            int.from_bytes(hashlib.sha256(f"state:{uniq[c]}:{d}".encode()).digest()[:4]) < limit
            for c, d in pairs.tolist()
        ],
        dtype=bool,
    )
    hit = chosen[inverse.ravel()] & labelled & (frame["time_idx"].to_numpy() <= upto)
    if hit.any():
        frame["state"] = pd.Categorical(np.where(hit, CATEGORICAL_NAN, state))
    return int(hit.sum())
