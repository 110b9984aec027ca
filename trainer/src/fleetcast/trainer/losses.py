"""The training loss: pytorch-forecasting's QuantileLoss with optional per-horizon weights.

Errors grow with the horizon, so an unweighted sum over 96 steps is dominated by the far
steps, and the near steps (30 min, 1 h), where the model must at least match persistence,
get little of the gradient. :class:`HorizonQuantileLoss` multiplies step ``h`` (1-based) by
``h ** -horizon_power`` normalised to mean 1 (``horizon_power=0`` is plain QuantileLoss).
The loss is used in training only; it is not part of the exported model.
"""

from __future__ import annotations

import torch
from pytorch_forecasting.metrics import QuantileLoss

__all__ = ["HorizonQuantileLoss", "horizon_weights"]


def horizon_weights(steps: int, power: float, device=None, dtype=None) -> torch.Tensor:
    """(steps,) weights ``h ** -power`` for h = 1..steps, normalised to mean 1."""
    h = torch.arange(1, steps + 1, device=device, dtype=dtype or torch.float32)
    w = h.pow(-float(power))
    return w / w.mean()


class HorizonQuantileLoss(QuantileLoss):
    """QuantileLoss whose per-step losses (batch, step, quantile) are weighted by horizon."""

    def __init__(
        self, quantiles: list[float] | None = None, horizon_power: float = 0.0, **kwargs
    ) -> None:
        super().__init__(quantiles=quantiles, **kwargs)
        self.horizon_power = float(horizon_power)

    def loss(self, y_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-element losses (batch, step, quantile), step ``h`` scaled by its weight."""
        losses = super().loss(y_pred, target)
        if self.horizon_power == 0.0:
            return losses
        w = horizon_weights(losses.size(1), self.horizon_power, losses.device, losses.dtype)
        return losses * w[None, :, None]
