"""The Numba kernels behind :mod:`fleetcast.appliance.windows` (plain Python until compiled).

``_lengths_impl`` gives each server's encoder length, ``_samples_impl`` how many of its
window's steps have a sample; ``_build_impl`` writes the six input
tensors of a batch of servers in one pass. The rules they implement are in the docstring of
:mod:`fleetcast.appliance.windows` and in docs/MODEL_FORMAT.md#features; the kernel codes
of the columns (``real_kind``/``cat_kind``) are the ``REAL_*``/``CAT_*`` constants there.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

__all__ = ["compiled_kernels"]


def _lengths_impl(slot_step, last_step, n, enc):
    """Encoder length per server (n,) int64: its closed steps from the first with a sample in
    its window to its newest (0 = none)."""
    w = slot_step.shape[1]
    out = np.zeros(n, dtype=np.int64)
    for s in range(n):
        last = last_step[s]
        if last < 1:
            continue
        end = last - 1
        lo = end - enc + 1
        first = -1
        for st in range(max(lo, 0), end + 1):
            if slot_step[s, st % w] == st:
                first = st
                break
        if first < 0:
            continue
        # From the first step with a sample: missing steps before it shorten the window, as
        # pytorch-forecasting's windows start at a row (none is filled from before the window).
        out[s] = end - first + 1
    return out


def _samples_impl(slot_step, last_step, n, enc, cap):
    """Steps with a sample per server (n,) int64 among the ``enc`` closed steps up to its
    newest (its window less the steps forward-filled), counted up to ``cap``: newest
    first, so a server with data stops after ``cap`` steps."""
    w = slot_step.shape[1]
    out = np.zeros(n, dtype=np.int64)
    for s in range(n):
        end = last_step[s] - 1
        count = 0
        k = end % w
        for st in range(end, max(end - enc, -1), -1):
            if slot_step[s, k] == st:
                count += 1
                if count >= cap:
                    break
            k = k - 1 if k > 0 else w - 1
        out[s] = count
    return out


def _build_impl(
    idx,
    lengths,
    values,
    states,
    slot_step,
    last_step,
    static_codes,
    step_seconds,
    real_kind,
    real_arg,
    real_mean,
    real_div,
    cat_kind,
    cat_arg,
    state_codes,
    decoder_state_code,
    transform,
    min_scale,
    pad_cat,
    lag,
    out_offset,
    enc_cat,
    enc_cont,
    enc_len,
    dec_cat,
    dec_cont,
    tscale,
):
    """Fill rows ``out_offset + b`` of the six input tensors for servers ``idx`` (B,)."""
    w = values.shape[1]
    n_metrics = values.shape[2]
    e_max = enc_cont.shape[1]
    d_len = dec_cont.shape[1]
    n_real = real_kind.shape[0]
    n_cat = cat_kind.shape[0]
    n_t = transform.shape[0]
    raw = np.zeros((e_max, n_metrics), dtype=np.float64)
    st_codes = np.zeros(e_max, dtype=np.int64)
    y = np.zeros((e_max, n_t), dtype=np.float64)
    centre = np.zeros(n_t, dtype=np.float64)
    scale = np.zeros(n_t, dtype=np.float64)
    src = np.zeros(e_max, dtype=np.int64)
    cal = np.zeros((e_max + d_len + 1, 4), dtype=np.float64)
    lagged = np.zeros((e_max + d_len + 1, n_metrics), dtype=np.float64)
    for b in range(idx.shape[0]):
        s = idx[b]
        n = lengths[b]
        row = out_offset + b
        end = last_step[s] - 1
        start = end - n + 1
        # A window starts at a step with a sample (``_lengths_impl``), as pytorch-forecasting's
        # do; a missing step after it is forward-filled: a filled row repeats its source row
        # whole, as pytorch-forecasting does: values, state, and (below) the calendar and
        # day-ago columns of the source step ``src[t]``.
        cur_state = -1
        prev = 0
        for t in range(n):
            st = start + t
            k = st % w
            if slot_step[s, k] == st:
                for j in range(n_metrics):
                    raw[t, j] = values[s, k, j]
                cur_state = states[s, k]
                src[t] = st
            elif t > 0:
                for j in range(n_metrics):
                    raw[t, j] = raw[prev, j]
                src[t] = src[prev]
            else:  # not a window from window_lengths: zeros
                for j in range(n_metrics):
                    raw[t, j] = 0.0
                src[t] = st
            st_codes[t] = state_codes[cur_state + 1]
            prev = t
        # Target scaling: centre = last transformed value, scale = max(std ddof=1, floor).
        for j in range(n_t):
            acc = 0.0
            for t in range(n):
                v = raw[t, j]
                if transform[j] == 1:
                    v = np.log1p(max(v, 0.0))
                y[t, j] = v
                acc += v
            mean = acc / n
            ss = 0.0
            for t in range(n):
                dv = y[t, j] - mean
                ss += dv * dv
            std = np.sqrt(ss / (n - 1)) if n > 1 else 0.0
            centre[j] = y[n - 1, j]
            scale[j] = max(std, min_scale[j])
            tscale[row, j, 0] = np.float32(centre[j])
            tscale[row, j, 1] = np.float32(scale[j])
        if lag > 0:
            # Values a lag before steps start-1..end+D (index i: step start - 1 + i - lag),
            # forward-filled; before the server's first step in the ring, backward-filled.
            first = start - 1 - lag
            oldest = max(last_step[s] - w + 1, 0)
            have = False
            for st in range(first - 1, oldest - 1, -1):
                if slot_step[s, st % w] == st:
                    for j in range(n_metrics):
                        lagged[0, j] = values[s, st % w, j]
                    have = True
                    break
            if not have:
                for st in range(max(first, oldest), last_step[s] + 1):
                    if slot_step[s, st % w] == st:
                        for j in range(n_metrics):
                            lagged[0, j] = values[s, st % w, j]
                        break
            for i in range(n + d_len + 1):
                st = first + i
                if st >= oldest and slot_step[s, st % w] == st:
                    for j in range(n_metrics):
                        lagged[i, j] = values[s, st % w, j]
                elif i > 0:
                    for j in range(n_metrics):
                        lagged[i, j] = lagged[i - 1, j]
            for i in range(n + d_len + 1):
                for j in range(n_t):
                    if transform[j] == 1:
                        lagged[i, j] = np.log1p(max(lagged[i, j], 0.0))
        # Calendar features of steps start-1..end+D (index i: step start - 1 + i): encoder
        # row t reads index src[t] - start + 1, decoder step t index n + t + 1.
        for i in range(n + d_len + 1):
            ts = (start - 1 + i) * step_seconds
            sod = ts % 86400
            ang_h = 2.0 * np.pi * (sod / 3600.0) / 24.0
            ang_d = 2.0 * np.pi * (((ts // 86400) + 3) % 7 + sod / 86400.0) / 7.0
            cal[i, 0] = np.float32(np.sin(ang_h))
            cal[i, 1] = np.float32(np.cos(ang_h))
            cal[i, 2] = np.float32(np.sin(ang_d))
            cal[i, 3] = np.float32(np.cos(ang_d))
        enc_len[row] = n
        # Encoder rows.
        for t in range(e_max):
            if t >= n:
                for c in range(n_real):
                    enc_cont[row, t, c] = 0.0
                for c in range(n_cat):
                    enc_cat[row, t, c] = pad_cat
                continue
            for c in range(n_real):
                kind = real_kind[c]
                a = real_arg[c]
                if kind == 0:
                    v = (y[t, a] - centre[a]) / scale[a]
                elif kind == 1:
                    v = (cal[src[t] - start + 1, a] - real_mean[c]) / real_div[c]
                elif kind == 2:
                    v = (n - real_mean[c]) / real_div[c]
                elif kind == 3:
                    v = (centre[a] - real_mean[c]) / real_div[c]
                elif kind == 5:
                    v = (y[t, a] - real_mean[c]) / real_div[c]
                elif kind == 6:
                    v = (lagged[src[t] - start + 1, a] - real_mean[c]) / real_div[c]
                else:
                    v = (scale[a] - real_mean[c]) / real_div[c]
                enc_cont[row, t, c] = v
            for c in range(n_cat):
                if cat_kind[c] == 0:
                    enc_cat[row, t, c] = static_codes[s, cat_arg[c]]
                else:
                    enc_cat[row, t, c] = st_codes[t]
        # Decoder rows: known reals and statics; unknown reals 0; future state = fixed code.
        for t in range(d_len):
            for c in range(n_real):
                kind = real_kind[c]
                a = real_arg[c]
                if kind == 0 or kind == 5:
                    v = 0.0
                elif kind == 1:
                    v = (cal[n + t + 1, a] - real_mean[c]) / real_div[c]
                elif kind == 2:
                    v = (n - real_mean[c]) / real_div[c]
                elif kind == 3:
                    v = (centre[a] - real_mean[c]) / real_div[c]
                elif kind == 6:
                    v = (lagged[n + t + 1, a] - real_mean[c]) / real_div[c]
                else:
                    v = (scale[a] - real_mean[c]) / real_div[c]
                dec_cont[row, t, c] = v
            for c in range(n_cat):
                if cat_kind[c] == 0:
                    dec_cat[row, t, c] = static_codes[s, cat_arg[c]]
                else:
                    dec_cat[row, t, c] = decoder_state_code


@cache
def compiled_kernels() -> dict[str, Any]:
    """Compile the kernels on first use (Numba's on-disk cache makes later processes fast)."""
    from fleetcast.appliance.buffers import jit_kernel

    return {
        "lengths": jit_kernel(_lengths_impl),
        "samples": jit_kernel(_samples_impl),
        "build": jit_kernel(_build_impl),
    }
