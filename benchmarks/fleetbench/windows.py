"""Benchmark 2: feature windows — the appliance's Numba kernels vs numpy and pandas.

Same fleet, same model spec, same windows (the last E closed steps of every server):

- ``numba``: :func:`fleetcast.appliance.windows.window_lengths` + ``build_windows`` from the
  appliance's ring buffers (:class:`fleetcast.appliance.buffers.RingBuffers`) into
  preallocated inputs — what every forecast of the appliance does;
- ``numpy``: the reference preprocessing :func:`fleetcast.contract.features.build_inputs`
  on windows cut from time-major arrays beforehand (outside the clock);
- ``pandas``: the same computation on a long DataFrame (groupby tail, transform, std,
  calendar features) — what a pandas pipeline would do.

The contenders are timed interleaved (:func:`fleetbench.stats.time_interleaved`). Each
contender's tensors are compared with the reference (max abs difference reported), and the
Numba ones must match it (target ``windows.numba_diff_vs_numpy``, enforced in both modes),
so a fast but wrong kernel cannot win.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetbench.stats import Target, ratio, summarize, time_interleaved

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from fleetcast.contract.features import ModelSpec

__all__ = ["TARGETS", "pandas_inputs", "run_windows"]

log = logging.getLogger("fleetbench")

TARGETS: tuple[Target, ...] = (
    Target(
        "windows.speedup_vs_numpy@1000",
        "Numba window build vs the numpy reference at 1,000 servers",
        1.0,
        "min",
        "×",
        quick_limit=1.0,
    ),
    Target(
        "windows.numba_diff_vs_numpy",
        "Numba windows vs the numpy reference, largest difference of any input element "
        "(relative to max(1, |reference|)), every fleet size",
        1e-6,
        "max",
        "",
        quick_limit=1e-6,
    ),
)

_INPUTS = (
    "encoder_cat",
    "encoder_cont",
    "encoder_lengths",
    "decoder_cat",
    "decoder_cont",
    "target_scale",
)


def pandas_inputs(spec: ModelSpec, long: pd.DataFrame) -> dict[str, np.ndarray]:
    """The six graph inputs from a long frame of full windows, computed with pandas.

    ``long``: columns ``server_name``, ``time_idx``, the targets and ``state`` (name or
    None), sorted by server then time, gap-free, the same number of rows per server (at
    least E, and ``spec.history_steps`` for day-ago inputs); the last E rows of each server
    form its window. Equal to ``build_inputs`` on the same windows (float rounding).
    """
    import pandas as pd

    from fleetcast.contract.encoder import server_id

    e, d = spec.encoder_length, spec.prediction_length
    tail = long.groupby("server_name", sort=False, observed=True).tail(e)
    key = tail["server_name"]
    names = pd.unique(key)
    b = len(names)
    trans = pd.DataFrame(index=tail.index)
    for t in spec.targets:
        col = tail[t].astype("float64")
        trans[t] = np.log1p(col.clip(lower=0.0)) if spec.target_transforms[t] == "log1p" else col
    grouped = trans.groupby(key, sort=False, observed=True)
    center = grouped.transform("last")
    std = grouped.transform("std").fillna(0.0)
    floors = pd.Series({t: spec.target_min_scale[t] for t in spec.targets})
    scale = std.clip(lower=floors, axis=1)
    norm = (trans - center) / scale
    seconds = tail["time_idx"].astype("int64") * spec.step_seconds
    sec_of_day = seconds % 86400
    hour = sec_of_day / 3600.0
    dow = (seconds // 86400 + 3) % 7 + sec_of_day / 86400.0
    cal = pd.DataFrame(
        {
            "hour_sin": np.sin(2 * math.pi * hour / 24.0),
            "hour_cos": np.cos(2 * math.pi * hour / 24.0),
            "dow_sin": np.sin(2 * math.pi * dow / 7.0),
            "dow_cos": np.cos(2 * math.pi * dow / 7.0),
        }
    ).astype("float32")
    firsts = grouped.head(1).index
    lasts = tail.groupby(key, sort=False, observed=True).tail(1)
    last_idx = lasts["time_idx"].to_numpy(dtype=np.int64)
    win_center = center.loc[lasts.index].to_numpy()
    win_scale = scale.loc[lasts.index].to_numpy()
    del firsts
    lengths = np.full(b, e, dtype=np.int64)
    enc_cont = np.zeros((b, e, len(spec.x_reals)))
    dec_cont = np.zeros((b, d, len(spec.x_reals)))
    dec_steps = last_idx[:, None] + 1 + np.arange(d)[None, :]
    dsec = dec_steps * spec.step_seconds
    dsod = dsec % 86400
    dec_cal = {
        "hour_sin": np.sin(2 * math.pi * (dsod / 3600.0) / 24.0),
        "hour_cos": np.cos(2 * math.pi * (dsod / 3600.0) / 24.0),
        "dow_sin": np.sin(2 * math.pi * ((dsec // 86400 + 3) % 7 + dsod / 86400.0) / 7.0),
        "dow_cos": np.cos(2 * math.pi * ((dsec // 86400 + 3) % 7 + dsod / 86400.0) / 7.0),
    }
    tindex = {t: j for j, t in enumerate(spec.targets)}
    lag = spec.max_lag
    for col, name in enumerate(spec.x_reals):
        s = spec.real_scalers[name]
        if s.source == "target_day_ago":
            full = long[s.target].astype("float64")
            if spec.target_transforms[s.target] == "log1p":
                full = np.log1p(full.clip(lower=0.0))
            by = full.groupby(long["server_name"], sort=False, observed=True)
            lagged = by.shift(lag).fillna(by.transform("first"))  # backward fill: first value
            enc_cont[..., col] = (
                ((lagged.loc[tail.index] - s.mean) / s.scale).to_numpy().reshape(b, e)
            )
            per = full.to_numpy().reshape(b, -1)  # gap-free, server-major
            k = per.shape[1]
            dec = per[:, np.maximum(np.arange(k, k + d) - lag, 0)]
            dec_cont[..., col] = (dec - s.mean) / s.scale
        elif s.source == "target_level":
            enc_cont[..., col] = ((trans[s.target] - s.mean) / s.scale).to_numpy().reshape(b, e)
        elif s.source == "calendar":
            enc_cont[..., col] = ((cal[name] - s.mean) / s.scale).to_numpy().reshape(b, e)
            dec_cont[..., col] = (dec_cal[name].astype(np.float32) - s.mean) / s.scale
        elif s.source == "target":
            enc_cont[..., col] = norm[s.target].to_numpy().reshape(b, e)
        else:
            if s.source == "encoder_length":
                raw = lengths.astype(np.float64)
            elif s.source == "target_center":
                raw = win_center[:, tindex[s.target]]
            else:
                raw = win_scale[:, tindex[s.target]]
            value = (raw - s.mean) / s.scale
            enc_cont[..., col] = value[:, None]
            dec_cont[..., col] = value[:, None]
    n_cat = len(spec.x_categoricals)
    enc_cat = np.zeros((b, e, n_cat), dtype=np.int64)
    dec_cat = np.zeros((b, d, n_cat), dtype=np.int64)
    profiles = lasts["profile"].astype(str).tolist()
    for col, name in enumerate(spec.x_categoricals):
        if name == "state":
            lookup = {s: i for i, s in enumerate(spec.states)}
            table = spec.state_code_table()
            idx = tail["state"].map(lookup).fillna(-1).astype("int64").to_numpy()
            enc_cat[..., col] = table[idx].reshape(b, e)
            dec_cat[..., col] = spec.unknown_codes[name]
        else:
            vals = [server_id(str(n)) for n in names] if name == "server_id" else profiles
            code = spec.encode_categorical(name, vals)
            enc_cat[..., col] = code[:, None]
            dec_cat[..., col] = code[:, None]
    return {
        "encoder_cat": enc_cat,
        "encoder_cont": enc_cont.astype(np.float32),
        "encoder_lengths": lengths,
        "decoder_cat": dec_cat,
        "decoder_cont": dec_cont.astype(np.float32),
        "target_scale": np.stack([win_center, win_scale], axis=-1).astype(np.float32),
    }


def _long_frame(fleet: Any, steps: int) -> pd.DataFrame:
    """Server-major long frame of the fleet's last ``steps`` steps (pandas' input)."""
    import pandas as pd

    from fleetcast.contract.schema import METRIC_COLUMNS, VALID_STATES

    k = steps
    n = fleet.n
    cols: dict[str, Any] = {
        "server_name": np.repeat(np.asarray(fleet.names, dtype=object), k),
        "profile": np.repeat(np.asarray(fleet.profiles, dtype=object), k),
        "time_idx": np.tile(fleet.timestamps[-k:] // 300, n),
    }
    for j, c in enumerate(METRIC_COLUMNS):
        cols[c] = fleet.metrics[-k:, :, j].T.ravel()
    cols["state"] = np.asarray(VALID_STATES, dtype=object)[fleet.states[-k:].T.ravel()]
    return pd.DataFrame(cols)


class _NumbaSide:
    """Ring buffers filled with the fleet, ready for the appliance's window kernels."""

    def __init__(self, spec: ModelSpec, fleet: Any) -> None:
        from fleetcast.appliance.buffers import RingBuffers
        from fleetcast.appliance.windows import WindowInputs, plan_from_spec
        from fleetcast.contract.encoder import server_id

        n = fleet.n
        steps = fleet.timestamps.shape[0]
        self.spec = spec
        self.plan = plan_from_spec(spec)
        self.buf = RingBuffers(n, spec.history_steps + 2, spec.step_seconds)
        srv = np.array([self.buf.register(name) for name in fleet.names], dtype=np.int64)
        for k in range(steps):
            self.buf.append(
                srv,
                np.full(n, fleet.timestamps[k], dtype=np.int64),
                fleet.metrics[k].astype(np.float64),
                fleet.states[k].astype(np.int8),
            )
        self.static = np.zeros((n, 2), dtype=np.int64)
        if "profile" in spec.categorical_classes:
            self.static[:, 0] = spec.encode_categorical("profile", list(fleet.profiles))
        if "server_id" in spec.categorical_classes:
            self.static[:, 1] = spec.encode_categorical(
                "server_id", [server_id(x) for x in fleet.names]
            )
        self.inputs = WindowInputs.allocate(self.plan, n)
        self.idx = np.arange(n, dtype=np.int64)

    def run(self) -> None:
        from fleetcast.appliance.windows import build_windows, window_lengths

        buf = self.buf
        lengths = window_lengths(buf.slot_step, buf.last_step, buf.n, self.spec.encoder_length)
        build_windows(
            self.plan,
            self.inputs,
            self.idx,
            lengths,
            buf.values,
            buf.state,
            buf.slot_step,
            buf.last_step,
            self.static,
        )


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(
        float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in _INPUTS
    )


def _max_rel_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest |a - b| / max(1, |b|) over every input (NaN anywhere gives NaN: it fails)."""
    worst = 0.0
    for k in _INPUTS:
        ref = b[k].astype(np.float64)
        diff = np.abs(a[k].astype(np.float64) - ref) / np.maximum(1.0, np.abs(ref))
        worst = max(worst, float(np.max(diff))) if not np.isnan(diff).any() else math.nan
        if math.isnan(worst):
            return worst
    return worst


def run_windows(
    spec: ModelSpec, sizes: Sequence[int], repeats: int, *, budget_s: float
) -> dict[str, Any]:
    """Time the three window builders at each fleet size; returns rows and target values."""
    from fleetbench.fleet import simulate_fleet

    e = spec.encoder_length
    whole = simulate_fleet(max(sizes), spec.history_steps + 2, seed=11)
    from fleetcast.contract.features import build_inputs

    rows = []
    values: dict[str, float | None] = {}
    worst = 0.0
    for n in sizes:
        fleet = whole.servers(n)
        closed = fleet.steps(None, -1)  # the appliance's windows end at the newest *closed* step
        numba = _NumbaSide(spec, fleet)
        long = _long_frame(closed, spec.history_steps)
        # The reference's arguments are cut once, outside the clock: the numpy contender is
        # build_inputs alone, as the Numba one is the kernels alone.
        raw = closed.raw_windows(spec)
        contenders = {
            "numba": numba.run,
            "numpy": lambda r=raw: build_inputs(
                spec, r["values"], r["lengths"], r["states"], r["profiles"],
                r["server_names"], r["last_time_idx"], day_ago=r.get("day_ago"),
            ),
            "pandas": lambda lf=long: pandas_inputs(spec, lf),
        }  # fmt: skip
        log.info("windows: %s at %d servers", ", ".join(contenders), n)
        timed = time_interleaved(contenders, repeats, warmup=1, budget_s=budget_s)
        summaries = {name: summarize(ms) for name, ms in timed.items()}
        reference = closed.model_inputs(spec).as_feed()
        numba_out = numba.inputs.feed(0, n)
        diffs = {
            "numba": _max_diff(numba_out, reference),
            "pandas": _max_diff(pandas_inputs(spec, long), reference),
        }
        rel = _max_rel_diff(numba_out, reference)
        worst = rel if math.isnan(rel) or math.isnan(worst) else max(worst, rel)
        rows.append(
            {
                "servers": n,
                "ms": {k: v.to_dict() for k, v in summaries.items()},
                "speedup_of_numba": {
                    k: round(ratio(v, summaries["numba"]), 2)
                    for k, v in summaries.items()
                    if k != "numba"
                },
                "max_abs_diff_vs_numpy": diffs,
            }
        )
        values[f"windows.speedup_vs_numpy@{n}"] = ratio(summaries["numpy"], summaries["numba"])
    values["windows.numba_diff_vs_numpy"] = worst
    return {"encoder_length": e, "rows": rows, "target_values": values}
