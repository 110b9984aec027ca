"""The step cache's Numba kernels: hash and look up window rows, store computed rows, gather
a batch's embeddings (:mod:`fleetcast.appliance.step_cache` drives them; slots and hashing
are described there). Compiled on first use, nothing at import.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

__all__ = ["compiled"]


def _lookup_impl(
    idx,
    ends,
    lengths,
    enc_cat,
    enc_cont,
    dec_cat,
    dec_cont,
    enc_step,
    enc_hash,
    dec_step,
    dec_hash,
    miss_enc,
    miss_dec,
    miss_enc_hash,
    miss_dec_hash,
):
    """Hash every valid row of windows ``0..len(idx)``; list the rows the cache lacks.

    A row's hash: its int64 codes and float32 bits, mixed splitmix64-style into 64 bits.
    Returns (encoder misses, decoder misses); ``miss_*`` rows are (window, row).
    """
    e = enc_cat.shape[1]
    d = dec_cat.shape[1]
    n_cat = enc_cat.shape[2]
    enc_bits = enc_cont.view(np.uint32)
    dec_bits = dec_cont.view(np.uint32)
    n_real = enc_bits.shape[2]
    seed = np.uint64(0x9E3779B97F4A7C15)
    mul = np.uint64(0xBF58476D1CE4E5B9)
    add_cat = np.uint64(0x632BE59BD9B4E019)
    add_real = np.uint64(0x94D049BB133111EB)
    s31 = np.uint64(31)
    s29 = np.uint64(29)
    me = 0
    md = 0
    for b in range(idx.shape[0]):
        s = idx[b]
        n = lengths[b]
        start = ends[b] - n + 1
        for t in range(n):
            st = start + t
            k = st % e
            h = seed
            for c in range(n_cat):
                h = (h ^ (np.uint64(enc_cat[b, t, c]) + add_cat)) * mul
                h ^= h >> s31
            for c in range(n_real):
                h = (h ^ (np.uint64(enc_bits[b, t, c]) + add_real)) * mul
                h ^= h >> s29
            if enc_step[s, k] != st or enc_hash[s, k] != h:
                miss_enc[me, 0] = b
                miss_enc[me, 1] = t
                miss_enc_hash[me] = h
                me += 1
        for t in range(d):
            st = ends[b] + 1 + t
            k = st % d
            h = seed
            for c in range(n_cat):
                h = (h ^ (np.uint64(dec_cat[b, t, c]) + add_cat)) * mul
                h ^= h >> s31
            for c in range(n_real):
                h = (h ^ (np.uint64(dec_bits[b, t, c]) + add_real)) * mul
                h ^= h >> s29
            if dec_step[s, k] != st or dec_hash[s, k] != h:
                miss_dec[md, 0] = b
                miss_dec[md, 1] = t
                miss_dec_hash[md] = h
                md += 1
    return me, md


def _store_impl(idx, ends, lengths, miss, hashes, emb, width, c_step, c_hash, c_emb, decoder):
    """Write computed embeddings ``emb`` (m, H) of rows ``miss`` (m, 2) into their slots."""
    for m in range(miss.shape[0]):
        b = miss[m, 0]
        t = miss[m, 1]
        s = idx[b]
        st = ends[b] + 1 + t if decoder else ends[b] - lengths[b] + 1 + t
        k = st % width
        c_step[s, k] = st
        c_hash[s, k] = hashes[m]
        for j in range(emb.shape[1]):
            c_emb[s, k, j] = emb[m, j]


def _gather_impl(idx, ends, lengths, lo, hi, enc_emb, dec_emb, out_enc, out_dec):
    """Embeddings of windows ``lo:hi`` from the cache (zeros on padding rows)."""
    e = enc_emb.shape[1]
    d = dec_emb.shape[1]
    h = enc_emb.shape[2]
    for b in range(lo, hi):
        s = idx[b]
        n = lengths[b]
        start = ends[b] - n + 1
        r = b - lo
        for t in range(e):
            if t < n:
                k = (start + t) % e
                for j in range(h):
                    out_enc[r, t, j] = enc_emb[s, k, j]
            else:
                for j in range(h):
                    out_enc[r, t, j] = 0.0
        for t in range(d):
            k = (ends[b] + 1 + t) % d
            for j in range(h):
                out_dec[r, t, j] = dec_emb[s, k, j]


@cache
def compiled() -> dict[str, Any]:
    """Compile the kernels on first use (Numba's on-disk cache makes later processes fast)."""
    from fleetcast.appliance.buffers import jit_kernel

    return {
        "lookup": jit_kernel(_lookup_impl),
        "store": jit_kernel(_store_impl),
        "gather": jit_kernel(_gather_impl),
    }
