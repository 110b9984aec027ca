"""Exponential backoff of source retries and alert deliveries."""

from __future__ import annotations

import pytest

from fleetcast.appliance.sources.backoff import Backoff


def test_delays_double_up_to_the_cap_and_reset() -> None:
    b = Backoff(initial_s=0.5, maximum_s=3.0, jitter=0.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert b.failures == 6
    b.reset()
    assert b.failures == 0
    assert b.next_delay() == 0.5


def test_jitter_stretches_within_bounds_and_is_seeded() -> None:
    a = Backoff(initial_s=1.0, maximum_s=8.0, jitter=0.25, seed=3)
    b = Backoff(initial_s=1.0, maximum_s=8.0, jitter=0.25, seed=3)
    da = [a.next_delay() for _ in range(6)]
    assert da == [b.next_delay() for _ in range(6)]
    for got, base in zip(da, [1, 2, 4, 8, 8, 8], strict=True):
        assert base <= got <= base * 1.25


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="initial_s > 0"):
        Backoff(initial_s=0.0)
    with pytest.raises(ValueError, match="maximum_s >= initial_s"):
        Backoff(initial_s=5.0, maximum_s=1.0)
