"""Real windows for the parity check, and the check itself: ONNX Runtime vs PyTorch.

The windows come from the training data through pytorch-forecasting's own dataset and
collate function (the tensors the model was trained on), padded to the full width ``E``
the way the appliance sends them, with a deliberate mix of short (cold-start) and full
windows so that per-window encoder lengths are exercised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.exporter.graph import INPUT_NAMES, OUTPUT_NAME

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet

__all__ = [
    "DEFAULT_PARITY_BATCHES",
    "EXTREME_VALUE",
    "Errors",
    "ParityResult",
    "RoundingFloor",
    "collate_windows",
    "compare",
    "errors",
    "extreme_windows",
    "ort_session",
    "parity_check",
    "rounding_floor",
    "select_windows",
]

logger = logging.getLogger("fleetcast.exporter")

DEFAULT_PARITY_BATCHES: tuple[int, ...] = (1, 7, 90, 1000)
"""Batch sizes the parity check runs (windows repeat when the data has fewer)."""

_ORT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class ParityResult:
    """Errors of one comparison, in each target's own units."""

    batch: int
    """Windows in the batch."""
    max_abs: float
    """max |onnx − reference|."""
    max_rel: float
    """max |onnx − reference| / max(|reference|, 1e-2), element by element."""
    max_rel_range: float
    """Per target, max |onnx − reference| over the largest |reference| of that target in the
    batch; the largest over targets. The ``≤ rtol`` criterion: element-wise relative errors
    near zero measure float32 cancellation, not the export (docs/EXPORT.md#parity)."""
    passed: bool
    """All finite and ``max_rel_range ≤ rtol``: the gate. Element-wise bounds are reported
    (``share_within``) but cannot gate float32: PyTorch's own float32 forward misses them
    against float64 (docs/EXPORT.md#parity)."""
    lengths: tuple[int, int]
    """Shortest and longest encoder length in the batch."""
    share_within: float = 1.0
    """Share of elements within ``atol + rtol·|reference|``."""
    reference_finite: bool = True
    """The reference's own outputs were all finite (False: the model itself overflows)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "batch": self.batch,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "max_rel_range": self.max_rel_range,
            "share_within": self.share_within,
            "passed": self.passed,
            "min_length": self.lengths[0],
            "max_length": self.lengths[1],
        }


def select_windows(dataset: TimeSeriesDataSet, count: int, seed: int = 0) -> list[int]:
    """Indices of ``count`` windows of ``dataset``: a third short (cold start), the rest random.

    Short windows are those whose encoder is shorter than ``max_encoder_length`` (the first
    windows of each server). Deterministic for a seed.
    """
    index = dataset.index
    decoder = dataset.max_prediction_length
    enc_len = index["sequence_length"].to_numpy() - decoder
    rng = np.random.default_rng(seed)
    short = np.flatnonzero(enc_len < dataset.max_encoder_length)
    full = np.flatnonzero(enc_len >= dataset.max_encoder_length)
    n_short = min(len(short), count // 3)
    picked = list(rng.choice(short, size=n_short, replace=False)) if n_short else []
    n_rest = min(len(full), count - n_short)
    if n_rest:
        picked += list(rng.choice(full, size=n_rest, replace=False))
    if len(picked) < count:
        remaining = np.setdiff1d(np.arange(len(index)), picked)
        extra = min(len(remaining), count - len(picked))
        picked += list(rng.choice(remaining, size=extra, replace=False))
    return [int(i) for i in picked]


def collate_windows(dataset: TimeSeriesDataSet, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """The graph's input tensors for windows of ``dataset``, padded to the full width ``E``.

    Uses the dataset's ``__getitem__`` and collate function; the encoder tensors are padded
    with zeros (as the collate function pads) from the batch's longest window to ``E``, and
    ``target_scale`` is stacked to [B, T, 2]. Returns input name → tensor.
    """
    import torch

    x, _ = dataset._collate_fn([dataset[int(i)] for i in indices])
    width = dataset.max_encoder_length
    pad = width - x["encoder_cat"].shape[1]
    scale = x["target_scale"]
    if isinstance(scale, list | tuple):
        scale = torch.stack([torch.as_tensor(s) for s in scale], dim=1)
    else:
        scale = torch.as_tensor(scale)[:, None, :]
    return {
        "encoder_cat": torch.nn.functional.pad(x["encoder_cat"], (0, 0, 0, pad)),
        "encoder_cont": torch.nn.functional.pad(x["encoder_cont"], (0, 0, 0, pad)),
        "encoder_lengths": x["encoder_lengths"].to(torch.int64),
        "decoder_cat": x["decoder_cat"],
        "decoder_cont": x["decoder_cont"],
        "target_scale": scale.to(torch.float32),
    }


EXTREME_VALUE = 1e6
"""The forecast level of :func:`extreme_windows` in each log1p target's own unit (1e6 ms of
latency, 1e6 MB/s of disk I/O): far above float16's largest finite value, 65,504."""


def extreme_windows(
    windows: dict[str, torch.Tensor], transforms: Sequence[str], value: float = EXTREME_VALUE
) -> dict[str, torch.Tensor]:
    """Copies of ``windows`` whose log1p targets are centred at ``value`` (real units).

    Only ``target_scale``'s centre changes: the model's output is de-normalised around it,
    so every forecast of such a target lies near ``value``. ``transforms``: each target's
    transform in target order. The float16 check runs on them (the contract bounds neither
    latency_ms nor disk_io_mb_s, and real windows rarely reach float16's limit).
    """
    import math

    scale = windows["target_scale"].clone()
    for i, name in enumerate(transforms):
        if name == "log1p":
            scale[:, i, 0] = math.log1p(value)
    return {**windows, "target_scale": scale}


def ort_session(model_bytes: bytes, optimization: str = "all", threads: int = 0) -> Any:
    """An ONNX Runtime CPU session of a serialized model at the given optimisation level."""
    import onnxruntime as ort

    if optimization not in _ORT_LEVELS:
        raise ValueError(
            f"Expected an optimisation level in {_ORT_LEVELS}, but got {optimization!r}."
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Errors:
    """Differences of two outputs ``[batch, target, step, quantile]`` in real units."""

    max_abs: float
    """max |actual − expected|."""
    max_rel: float
    """max |actual − expected| / max(|expected|, 1e-2), element by element."""
    max_rel_range: float
    """max over targets of (max |actual − expected|) / (max |expected|) of that target."""
    share_within: float
    """Share of elements within ``atol + rtol·|expected|`` (reported, not a gate)."""
    finite: bool
    """Same shape and every value finite."""
    reference_finite: bool = True
    """Every value of ``expected`` finite (False: the reference itself overflowed)."""


def errors(actual: np.ndarray, expected: np.ndarray, *, rtol: float, atol: float) -> Errors:
    """The :class:`Errors` of ``actual`` against ``expected`` (same shape, target on axis 1)."""
    if actual.shape != expected.shape or actual.size == 0:
        return Errors(float("inf"), float("inf"), float("inf"), 0.0, False)
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    ref = np.abs(expected.astype(np.float64))
    finite = bool(np.isfinite(actual).all())
    axes = tuple(i for i in range(diff.ndim) if i != 1)
    per_target = diff.max(axis=axes) / np.maximum(ref.max(axis=axes), 1e-12)
    return Errors(
        max_abs=float(diff.max()),
        max_rel=float((diff / np.maximum(ref, 1e-2)).max()),
        max_rel_range=float(per_target.max()),
        share_within=float((diff <= atol + rtol * ref).mean()),
        finite=finite,
        reference_finite=bool(np.isfinite(expected).all()),
    )


def compare(
    actual: np.ndarray, expected: np.ndarray, *, rtol: float, atol: float
) -> tuple[float, float, bool]:
    """(max abs error, max element-wise relative error, parity passed — see :class:`ParityResult`)."""
    e = errors(actual, expected, rtol=rtol, atol=atol)
    return e.max_abs, e.max_rel, e.finite and e.max_rel_range <= rtol


def _batch(windows: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """The first ``size`` windows, repeating them cyclically when there are fewer."""
    import torch

    n = windows["encoder_lengths"].shape[0]
    idx = torch.arange(size) % n
    return {k: v[idx] for k, v in windows.items()}


def parity_check(
    session: Any,
    model: TemporalFusionTransformer,
    windows: dict[str, torch.Tensor],
    *,
    batches: Sequence[int] = DEFAULT_PARITY_BATCHES,
    rtol: float,
    atol: float,
    reference: Any | None = None,
) -> list[ParityResult]:
    """Run ``session`` and the reference on batches of ``windows``; one result per batch size.

    ``reference``: another ORT session to compare against (the float16 check uses the
    float32 graph); default the unmodified PyTorch model
    (:func:`~fleetcast.exporter.graph.reference_forward`).
    """
    from fleetcast.exporter.graph import reference_forward

    results = []
    for size in batches:
        batch = _batch(windows, size)
        feed = {name: batch[name].numpy() for name in INPUT_NAMES}
        actual = session.run([OUTPUT_NAME], feed)[0]
        if reference is None:
            expected = reference_forward(model, *(batch[name] for name in INPUT_NAMES)).numpy()
        else:
            expected = reference.run([OUTPUT_NAME], feed)[0]
        err = errors(actual, expected, rtol=rtol, atol=atol)
        passed = err.finite and err.max_rel_range <= rtol
        lengths = batch["encoder_lengths"]
        results.append(
            ParityResult(
                batch=size,
                max_abs=err.max_abs,
                max_rel=err.max_rel,
                max_rel_range=err.max_rel_range,
                passed=passed,
                share_within=err.share_within,
                lengths=(int(lengths.min()), int(lengths.max())),
                reference_finite=err.reference_finite,
            )
        )
        logger.info(
            "parity batch %d: max abs %.3g, max rel %.3g (of range %.3g), %s",
            size,
            err.max_abs,
            err.max_rel,
            err.max_rel_range,
            "ok" if passed else "FAILED",
        )
    return results


@dataclass(frozen=True)
class RoundingFloor:
    """How far float32 itself is from exact arithmetic on one batch: the float64 PyTorch
    model as the reference, for the float32 PyTorch model and for the ONNX graph alike."""

    batch: int
    """Windows in the batch."""
    pytorch: Errors
    """float32 PyTorch vs float64 PyTorch."""
    onnx: Errors
    """float32 ONNX Runtime vs float64 PyTorch."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "batch": self.batch,
            **{
                f"{name}_{field}": getattr(err, field)
                for name, err in (("pytorch", self.pytorch), ("onnx", self.onnx))
                for field in ("max_abs", "max_rel", "max_rel_range")
            },
        }


def rounding_floor(
    session: Any, model: TemporalFusionTransformer, windows: dict[str, torch.Tensor], size: int
) -> RoundingFloor:
    """Compare float32 PyTorch and ``session`` with a float64 copy of ``model`` on ``size`` windows.

    When ONNX Runtime is as close to the float64 model as PyTorch's own float32 forward is,
    the remaining ORT-vs-PyTorch difference is float32 rounding, not an export error.
    """
    import copy

    from fleetcast.exporter.graph import reference_forward

    batch = _batch(windows, size)
    args32 = [batch[name] for name in INPUT_NAMES]
    args64 = [t.double() if t.is_floating_point() else t for t in args32]
    exact = reference_forward(copy.deepcopy(model).double().eval(), *args64).numpy()
    torch32 = reference_forward(model, *args32).numpy()
    onnx32 = session.run([OUTPUT_NAME], {n: batch[n].numpy() for n in INPUT_NAMES})[0]
    # The tolerances do not matter here: only the measured errors are reported.
    return RoundingFloor(
        batch=size,
        pytorch=errors(torch32, exact, rtol=0.0, atol=0.0),
        onnx=errors(onnx32, exact, rtol=0.0, atol=0.0),
    )
