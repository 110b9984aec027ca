"""The attention kernel between ``head_pre`` and ``head_post`` against the contract's numpy
definition (:func:`fleetcast.contract.step_graphs.interpretable_attention`)."""

from __future__ import annotations

import numpy as np
import pytest

from fleetcast.appliance.attention import attend
from fleetcast.contract.step_graphs import attention_mask, interpretable_attention


def _inputs(
    rng: np.random.Generator, b: int, heads: int, d: int, size: int, e: int, spread: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    query = (rng.normal(size=(b, heads, d, size)) * spread).astype(np.float32)
    key = (rng.normal(size=(b, heads, size, e + d)) * spread).astype(np.float32)
    value = rng.normal(size=(b, size, e + d)).astype(np.float32)
    return query, key, value


@pytest.mark.parametrize("size", [1, 3, 4, 5, 8])
def test_kernel_equals_the_contracts_attention_for_any_head_size(size: int) -> None:
    rng = np.random.default_rng(size)
    e, d = 24, 6
    query, key, value = _inputs(rng, 5, 3, d, size, e, spread=2.0)
    lengths = np.array([24, 1, 13, 24, 2])  # full, cold start, partial
    got = attend(query, key, value, lengths)
    want = interpretable_attention(query, key, value, lengths)
    assert got.shape == (5, d, size)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("size", [4, 8])
def test_kernel_at_the_default_models_shape_and_large_scores(size: int) -> None:
    # E 288, D 96, 4 heads of 8 (hidden 32, the default) or of 4: scores far apart (softmax
    # near one-hot) must stay finite and exact; the polynomial exp covers exponents down
    # to float32's smallest normal.
    rng = np.random.default_rng(size)
    query, key, value = _inputs(rng, 3, 4, 96, size, 288, spread=6.0)
    lengths = np.array([288, 100, 1])
    got = attend(query, key, value, lengths)
    want = interpretable_attention(query, key, value, lengths)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_a_nan_stays_in_its_own_row() -> None:
    # As in the full graph: a NaN query gives that window's decoder step NaN (the forecast
    # cleaning reports it), and nothing else changes (the batch takes the numpy path).
    rng = np.random.default_rng(7)
    query, key, value = _inputs(rng, 3, 2, 5, 8, 10, spread=1.0)
    lengths = np.array([10, 10, 10])
    base = attend(query, key, value, lengths)
    query[1, 0, 2, 3] = np.nan
    got = attend(query, key, value, lengths)
    assert np.isnan(got[1, 2]).all()
    bad = np.zeros(got.shape, dtype=bool)
    bad[1, 2] = True
    np.testing.assert_allclose(got[~bad], base[~bad], rtol=0, atol=2e-6)


def test_lengths_beyond_the_window_are_clamped_to_it() -> None:
    rng = np.random.default_rng(9)
    query, key, value = _inputs(rng, 2, 2, 4, 8, 12, spread=1.0)
    np.testing.assert_array_equal(
        attend(query, key, value, np.array([99, 12])),
        attend(query, key, value, np.array([12, 12])),
    )


def test_masked_keys_do_not_reach_the_output() -> None:
    rng = np.random.default_rng(3)
    e, d = 10, 4
    query, key, value = _inputs(rng, 2, 2, d, 4, e, spread=1.0)
    lengths = np.array([6, 10])
    base = attend(query, key, value, lengths)
    noisy_key, noisy_value = key.copy(), value.copy()
    allowed = attention_mask(lengths, e, d)  # [B, D, E+D]
    never = ~allowed.any(axis=1)  # keys no decoder step attends to
    noisy_key[np.broadcast_to(never[:, None, None, :], key.shape)] = 1e6
    noisy_value[np.broadcast_to(never[:, None, :], value.shape)] = -1e6
    np.testing.assert_array_equal(attend(query, noisy_key, noisy_value, lengths), base)
    # Decoder step 0 sees only the encoder; the last decoder key is never attended to.
    assert never[:, e + d - 1].all()
    assert never[0, 6:e].all()
    assert not never[1, :e].any()


def test_an_empty_batch_is_an_empty_result() -> None:
    out = attend(
        np.zeros((0, 4, 6, 4), np.float32),
        np.zeros((0, 4, 4, 30), np.float32),
        np.zeros((0, 4, 30), np.float32),
        np.zeros(0, np.int64),
    )
    assert out.shape == (0, 6, 4)
