"""The TFT's attention between the step graphs' ``head_pre`` and ``head_post``, in Numba.

:func:`fleetcast.contract.step_graphs.interpretable_attention` defines it: per decoder step
and head, the softmax of ``query · key`` over the keys the TFT's mask allows (a window's
first ``length`` encoder steps, the decoder steps before this one), times the value all
heads share, averaged over the heads.

As ONNX operators that is five passes per head over a [B, D, E+D] score tensor in memory
(37 MB per head at 256 windows); ONNX Runtime's fused ``MultiHeadAttention`` still computes
the masked keys and runs at about 0.25 ms per window on one core. This kernel works on one
query row at a time, so its scores stay in the L1 cache:

- masked keys are never computed (about a sixth of the keys on average), which is exact:
  their weight is ``exp(-1e9 - max)``, 0 in float32; in a full window the attended
  encoder and decoder keys are one contiguous range, walked by one loop per pass (two
  loops with short, varying trip counts cost 40 % more at E 96);
- the scores' maximum is a pass of its own (kept inside the score loop, it stopped that
  loop from vectorising: 18 %);
- ``exp`` is a range-reduced polynomial (``2^t = 2^round(t) · 2^f``, |f| ≤ ½, degree 6,
  relative error below 2e-7) that LLVM vectorises; Numba's ``math.exp`` is a scalar libm
  call per element;
- the heads' weights, each divided by its own sum, are summed first and multiplied by the
  shared value once per query row instead of once per head.

It releases the GIL, so the inference workers run it side by side on their batches. It is
compiled with fast-math; inputs that are not all finite (never seen: the head's inputs are
LayerNorm outputs) go to the contract's numpy definition instead.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

__all__ = ["attend"]

_LOG2E = np.float32(1.4426950408889634)
# 2^f = e^(f·ln 2): Taylor coefficients (ln 2)^k / k!, k = 0..6.
_C = tuple(np.float32(c) for c in (1.0, 0.6931471805599453, 0.2402265069591007,
                                   0.05550410866482158, 0.009618129107628477,
                                   0.0013333558146428443, 0.00015403530393381606))  # fmt: skip


def _attend_impl(query, key, value, lengths, out):  # pragma: no cover - compiled by Numba
    b_count, n_head, d_steps, head_size = query.shape
    width = key.shape[3]
    e_width = width - d_steps
    c0, c1, c2, c3, c4, c5, c6 = _C
    log2e = _LOG2E
    lowest = np.float32(-126.0)
    half = np.float32(0.5)
    scores = np.empty(width, dtype=np.float32)
    bits = np.empty(width, dtype=np.int32)
    pow2 = bits.view(np.float32)
    weights = np.empty(width, dtype=np.float32)
    mean = np.float32(1.0) / np.float32(n_head)
    for b in range(b_count):
        ln = min(max(lengths[b], 0), e_width)
        full = ln == e_width  # encoder and decoder keys are one contiguous range
        for i in range(d_steps):
            n = ln + i  # attended keys: encoder 0..ln-1, then decoder 0..i-1
            if n == 0:  # no key at all (a window of length 0; the engine never sends one)
                for c in range(head_size):
                    out[b, i, c] = np.float32(0.0)
                continue
            for j in range(n):
                weights[j] = np.float32(0.0)
            for h in range(n_head):
                for c in range(0, head_size, 4):
                    q0 = query[b, h, i, c]
                    q1 = query[b, h, i, c + 1]
                    q2 = query[b, h, i, c + 2]
                    q3 = query[b, h, i, c + 3]
                    k0 = key[b, h, c]
                    k1 = key[b, h, c + 1]
                    k2 = key[b, h, c + 2]
                    k3 = key[b, h, c + 3]
                    # scores = Σ_c q_c · k_c, four channels per pass (the first writes)
                    if full:
                        if c == 0:
                            for j in range(n):
                                scores[j] = q0 * k0[j] + q1 * k1[j] + q2 * k2[j] + q3 * k3[j]
                        else:
                            for j in range(n):
                                scores[j] += q0 * k0[j] + q1 * k1[j] + q2 * k2[j] + q3 * k3[j]
                    elif c == 0:
                        for j in range(ln):
                            scores[j] = q0 * k0[j] + q1 * k1[j] + q2 * k2[j] + q3 * k3[j]
                        for j in range(i):
                            o = e_width + j
                            scores[ln + j] = q0 * k0[o] + q1 * k1[o] + q2 * k2[o] + q3 * k3[o]
                    else:
                        for j in range(ln):
                            scores[j] += q0 * k0[j] + q1 * k1[j] + q2 * k2[j] + q3 * k3[j]
                        for j in range(i):
                            o = e_width + j
                            scores[ln + j] += q0 * k0[o] + q1 * k1[o] + q2 * k2[o] + q3 * k3[o]
                top = np.float32(-3.0e38)  # its own pass: inside the score loop it cost 18 %
                for j in range(n):
                    top = max(top, scores[j])
                total = np.float32(0.0)
                for j in range(n):
                    t = max((scores[j] - top) * log2e, lowest)
                    whole = np.int32(t - half)  # t <= 0: rounds to nearest
                    f = t - np.float32(whole)
                    p = c0 + f * (c1 + f * (c2 + f * (c3 + f * (c4 + f * (c5 + f * c6)))))
                    bits[j] = (whole + 127) << 23  # the float32 bits of 2^whole
                    p = p * pow2[j]
                    scores[j] = p
                    total += p
                inv = np.float32(1.0) / total
                for j in range(n):
                    weights[j] += scores[j] * inv
            for c in range(0, head_size, 4):  # four channels per pass
                v0 = value[b, c]
                v1 = value[b, c + 1]
                v2 = value[b, c + 2]
                v3 = value[b, c + 3]
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                a3 = np.float32(0.0)
                if full:
                    for j in range(n):
                        w = weights[j]
                        a0 += w * v0[j]
                        a1 += w * v1[j]
                        a2 += w * v2[j]
                        a3 += w * v3[j]
                else:
                    for j in range(ln):
                        w = weights[j]
                        a0 += w * v0[j]
                        a1 += w * v1[j]
                        a2 += w * v2[j]
                        a3 += w * v3[j]
                    for j in range(i):
                        w = weights[ln + j]
                        o = e_width + j
                        a0 += w * v0[o]
                        a1 += w * v1[o]
                        a2 += w * v2[o]
                        a3 += w * v3[o]
                out[b, i, c] = a0 * mean
                out[b, i, c + 1] = a1 * mean
                out[b, i, c + 2] = a2 * mean
                out[b, i, c + 3] = a3 * mean


@cache
def _compiled() -> Any:
    """Compile on first use (Numba's on-disk cache makes later processes fast)."""
    from fleetcast.appliance.buffers import jit_kernel

    return jit_kernel(_attend_impl, fastmath=True)


def attend(
    query: np.ndarray, key: np.ndarray, value: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """float32 [B, D, d]: the attention of ``head_pre``'s outputs (shapes as in
    :func:`fleetcast.contract.step_graphs.interpretable_attention`).

    The kernel is compiled with fast-math (vectorised max and sum assume no NaN or inf), so
    inputs that are not all finite take the contract's numpy definition instead: a NaN
    stays in its own window and decoder step, as in the full graph.
    """
    if not (np.isfinite(query).all() and np.isfinite(key).all() and np.isfinite(value).all()):
        from fleetcast.contract.step_graphs import interpretable_attention

        with np.errstate(invalid="ignore"):
            return interpretable_attention(query, key, value, np.asarray(lengths))
    b, _, d, head_size = query.shape
    pad = -head_size % 4  # the kernel reads four channels at a time; zero channels add 0
    if pad:
        query = np.pad(query, ((0, 0), (0, 0), (0, 0), (0, pad)))
        key = np.pad(key, ((0, 0), (0, 0), (0, pad), (0, 0)))
        value = np.pad(value, ((0, 0), (0, pad), (0, 0)))
    out = np.empty((b, d, head_size + pad), dtype=np.float32)
    _compiled()(
        np.ascontiguousarray(query, dtype=np.float32),
        np.ascontiguousarray(key, dtype=np.float32),
        np.ascontiguousarray(value, dtype=np.float32),
        np.ascontiguousarray(lengths, dtype=np.int64),
        out,
    )
    return out[..., :head_size] if pad else out
