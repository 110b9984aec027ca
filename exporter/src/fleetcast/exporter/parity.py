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
    "ParityResult",
    "collate_windows",
    "compare",
    "ort_session",
    "parity_check",
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
    """max |onnx − reference| / max(|reference|, 1e-2)."""
    passed: bool
    """Every element within ``atol + rtol·|reference|``."""
    lengths: tuple[int, int]
    """Shortest and longest encoder length in the batch."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "batch": self.batch,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
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


def compare(
    actual: np.ndarray, expected: np.ndarray, *, rtol: float, atol: float
) -> tuple[float, float, bool]:
    """(max abs error, max relative error, within ``atol + rtol·|expected|`` everywhere)."""
    if actual.shape != expected.shape:
        return float("inf"), float("inf"), False
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    ref = np.abs(expected.astype(np.float64))
    finite = bool(np.isfinite(actual).all())
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(ref, 1e-2)).max()) if diff.size else 0.0
    passed = finite and bool((diff <= atol + rtol * ref).all())
    return max_abs, max_rel, passed


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
        max_abs, max_rel, passed = compare(actual, expected, rtol=rtol, atol=atol)
        lengths = batch["encoder_lengths"]
        results.append(
            ParityResult(
                batch=size,
                max_abs=max_abs,
                max_rel=max_rel,
                passed=passed,
                lengths=(int(lengths.min()), int(lengths.max())),
            )
        )
        logger.info(
            "parity batch %d: max abs %.3g, max rel %.3g, %s",
            size,
            max_abs,
            max_rel,
            "ok" if passed else "FAILED",
        )
    return results
