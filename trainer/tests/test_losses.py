"""The horizon-weighted quantile loss."""

from __future__ import annotations

import pytest
import torch
from pytorch_forecasting.metrics import QuantileLoss

from fleetcast.trainer.losses import HorizonQuantileLoss, horizon_weights


def test_horizon_weights() -> None:
    w = horizon_weights(96, 0.5)
    assert float(w.mean()) == pytest.approx(1.0)
    assert float(w[0] / w[3]) == pytest.approx(2.0)  # 1 / sqrt(1) vs 1 / sqrt(4)
    assert torch.equal(horizon_weights(5, 0.0), torch.ones(5))


def test_weighted_loss_scales_each_step() -> None:
    torch.manual_seed(0)
    y_pred = torch.randn(4, 12, 3)
    target = torch.randn(4, 12)
    plain = QuantileLoss([0.1, 0.5, 0.9]).loss(y_pred, target)
    weighted = HorizonQuantileLoss([0.1, 0.5, 0.9], horizon_power=1.0).loss(y_pred, target)
    expected = plain * horizon_weights(12, 1.0)[None, :, None]
    torch.testing.assert_close(weighted, expected)
    same = HorizonQuantileLoss([0.1, 0.5, 0.9]).loss(y_pred, target)
    torch.testing.assert_close(same, plain)
