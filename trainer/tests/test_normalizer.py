"""The window-relative target normalizer: centre, floored scale, log1p ↔ expm1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fleetcast.trainer.normalizer import (
    DEFAULT_MIN_SCALE,
    TARGET_TRANSFORMS,
    WindowNormalizer,
    build_multi_normalizer,
    window_scale,
)


def test_fit_sets_last_value_and_std() -> None:
    norm = WindowNormalizer(transform_name="identity", min_scale=0.5)
    y = torch.tensor([10.0, 12.0, 14.0, 20.0])
    norm.fit(y)
    assert float(norm.center_) == 20.0
    assert float(norm.scale_) == pytest.approx(float(torch.std(y)))
    centre, scale = window_scale(y.numpy(), "identity", 0.5)
    assert float(centre) == 20.0
    assert float(scale) == pytest.approx(float(norm.scale_), rel=1e-6)


def test_log1p_centre_and_expm1_inverse() -> None:
    norm = WindowNormalizer(transform_name="log1p", min_scale=0.02)
    y = torch.tensor([0.01, 0.02, 0.015, 0.01])
    norm.fit(y)
    assert float(norm.center_) == pytest.approx(np.log1p(0.01), rel=1e-6)
    # a network output of 0 is the last value, in MB/s: expm1, not exp (which gives 1.01)
    out = norm(dict(prediction=torch.zeros(1, 5), target_scale=norm.get_parameters()[None]))
    np.testing.assert_allclose(out.numpy(), 0.01, rtol=1e-5)


@pytest.mark.parametrize("target", list(TARGET_TRANSFORMS))
@pytest.mark.parametrize("value", [0.0, 0.01, 3.0, 87.5])
def test_constant_series_round_trips_in_its_own_units(target: str, value: float) -> None:
    norm = build_multi_normalizer([target])[0]
    y = torch.full((48,), value)
    norm.fit(y)
    assert float(norm.scale_) == pytest.approx(DEFAULT_MIN_SCALE[target])  # floor, never 0
    scaled = norm.transform(y)
    assert torch.isfinite(scaled).all()
    assert float(scaled.abs().max()) == 0.0
    back = norm(dict(prediction=torch.zeros(1, 12), target_scale=norm.get_parameters()[None]))
    np.testing.assert_allclose(back.numpy(), value, rtol=1e-6, atol=1e-7)


def test_single_value_window_takes_the_floor() -> None:
    norm = WindowNormalizer(transform_name="identity", min_scale=0.5)
    norm.fit(torch.tensor([42.0]))
    assert float(norm.center_) == 42.0
    assert float(norm.scale_) == 0.5


def test_unknown_transform_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown target transform"):
        WindowNormalizer(transform_name="log")
