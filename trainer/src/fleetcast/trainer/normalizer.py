"""The window-relative target normalizer (docs/MODEL_FORMAT.md#features).

Every training/prediction window is scaled by its own encoder:

- centre = the *last observed value* of the encoder window, after the target's transform;
- scale  = the standard deviation of the encoder window (after the transform), floored at a
  per-target minimum (so a constant series, e.g. an offline server's zeros, never divides
  by zero).

A model output of 0 therefore means "persistence" (repeat the last value). Transforms are
``identity`` (cpu_pct, mem_pct) or ``log1p`` (disk_io_mb_s, latency_ms), and the inverse of
``log1p`` is ``expm1`` — not pytorch-forecasting's built-in ``exp``.

:class:`WindowNormalizer` subclasses pytorch-forecasting's ``EncoderNormalizer``, so that
``TimeSeriesDataSet.__getitem__`` refits it on each sample's encoder targets exactly as it
does for ``EncoderNormalizer`` (``isinstance`` checks in pytorch-forecasting 1.8.0), writes
the normalised target into ``x_cont`` and ``(centre, scale)`` into ``target_scale`` and the
``<target>_center`` / ``<target>_scale`` static reals.

The same rule in plain numpy is :func:`window_scale`, which is what the exporter and the
appliance reproduce.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from pytorch_forecasting.data.encoders import EncoderNormalizer, MultiNormalizer

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_MIN_SCALE",
    "TARGET_TRANSFORMS",
    "TRANSFORMS",
    "WindowNormalizer",
    "build_multi_normalizer",
    "forward_transform",
    "inverse_transform",
    "window_scale",
]

TARGET_TRANSFORMS: dict[str, str] = {
    "cpu_pct": "identity",
    "mem_pct": "identity",
    "disk_io_mb_s": "log1p",
    "latency_ms": "log1p",
}
"""Transform of each target before scaling; the inverse of ``log1p`` is ``expm1``."""

DEFAULT_MIN_SCALE: dict[str, float] = {
    "cpu_pct": 0.5,
    "mem_pct": 0.5,
    "disk_io_mb_s": 0.02,
    "latency_ms": 0.02,
}
"""Floor of the window scale per target, in transformed units (percentage points for cpu/mem,
log1p units ≈ relative change for disk/latency)."""


def _log1p_clamped(x: torch.Tensor) -> torch.Tensor:
    """``log1p`` of values clamped at 0 (the contract forbids negatives; -1 would be -inf)."""
    return torch.log1p(torch.clamp(x, min=0.0))


TRANSFORMS: dict[str, dict[str, Any]] = {
    "identity": {},
    "log1p": {"forward": _log1p_clamped, "reverse": torch.expm1, "inverse": torch.expm1},
}
"""pytorch-forecasting transformation dicts by name (``identity`` means no transformation)."""


def forward_transform(name: str, values: np.ndarray) -> np.ndarray:
    """Apply a named transform in numpy (float64 in, same shape out)."""
    if name == "identity":
        return values
    if name == "log1p":
        return np.log1p(np.clip(values, 0.0, None))
    raise ValueError(f"Unknown target transform {name!r}: expected 'identity' or 'log1p'.")


def inverse_transform(name: str, values: np.ndarray) -> np.ndarray:
    """Invert a named transform in numpy (``expm1`` for ``log1p``)."""
    if name == "identity":
        return values
    if name == "log1p":
        return np.expm1(values)
    raise ValueError(f"Unknown target transform {name!r}: expected 'identity' or 'log1p'.")


def window_scale(
    encoder_values: np.ndarray, transform: str, min_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """The (centre, scale) of windows, in transformed units — the numpy reference of the rule.

    ``encoder_values``: (..., E) raw target values of each window's valid encoder steps
    (oldest first). Returns ``centre`` (...) = transformed last value and ``scale`` (...) =
    max(std of the transformed window with ddof=1, ``min_scale``) — torch.std's estimator,
    which is what the trainer uses.
    """
    y = forward_transform(transform, np.asarray(encoder_values, dtype=np.float64))
    centre = y[..., -1]
    std = np.zeros_like(centre) if y.shape[-1] < 2 else np.std(y, axis=-1, ddof=1)
    return centre, np.maximum(std, min_scale)


class WindowNormalizer(EncoderNormalizer):
    """EncoderNormalizer whose centre is the last encoder value and whose scale is floored.

    Args (besides EncoderNormalizer's):
        transform_name: ``"identity"`` or ``"log1p"`` (inverse ``expm1``).
        min_scale: floor of the scale, in transformed units.

    ``fit(y)`` with ``y`` of shape (E,) (one window, as ``TimeSeriesDataSet.__getitem__``
    calls it) or (..., E) sets ``center_`` (...) and ``scale_`` (...).
    """

    def __init__(
        self,
        method: str = "standard",
        center: bool = True,
        max_length: int | list[int] | None = None,
        transformation: str | dict[str, Any] | None = None,
        method_kwargs: dict[str, Any] | None = None,
        transform_name: str = "identity",
        min_scale: float = 1e-3,
    ) -> None:
        if transform_name not in TRANSFORMS:
            raise ValueError(
                f"Unknown target transform {transform_name!r}: expected one of {sorted(TRANSFORMS)}."
            )
        if transformation is None and transform_name != "identity":
            transformation = dict(TRANSFORMS[transform_name])
        super().__init__(
            method=method,
            center=center,
            max_length=max_length,
            transformation=transformation,
            method_kwargs=method_kwargs,
        )
        self.transform_name = transform_name
        self.min_scale = float(min_scale)

    def fit(self, y: pd.Series | np.ndarray | torch.Tensor) -> WindowNormalizer:
        """Set centre = transformed last value, scale = max(std, min_scale) over the last axis."""
        if isinstance(y, pd.Series | pd.DataFrame):
            y = y.to_numpy(copy=True)
        if isinstance(y, np.ndarray):
            y = torch.as_tensor(np.array(y, copy=True))
        y = self.preprocess(y)
        if y.shape[-1] < 1:
            raise ValueError("WindowNormalizer.fit needs at least one encoder value.")
        center = y[..., -1]
        scale = torch.std(y, dim=-1) if y.shape[-1] >= 2 else torch.zeros_like(center)
        scale = torch.clamp(scale, min=self.min_scale)
        self.center_ = center
        self.scale_ = scale
        return self

    @property
    def min_length(self) -> int:
        """Windows need one encoder value (the centre); a single value takes the scale floor."""
        return 1


def build_multi_normalizer(
    targets: list[str] | tuple[str, ...],
    transforms: Mapping[str, str] | None = None,
    min_scale: Mapping[str, float] | None = None,
) -> MultiNormalizer:
    """One :class:`WindowNormalizer` per target, in ``targets`` order, inside a MultiNormalizer."""
    transforms = dict(TARGET_TRANSFORMS if transforms is None else transforms)
    min_scale = dict(DEFAULT_MIN_SCALE if min_scale is None else min_scale)
    return MultiNormalizer(
        [WindowNormalizer(transform_name=transforms[t], min_scale=min_scale[t]) for t in targets]
    )
