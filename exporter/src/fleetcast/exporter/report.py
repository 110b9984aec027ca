"""What an export is asked to do and what it reports.

:class:`ExportOptions` (opset, tolerances, float16, latency, step cache: one object, built
once by the CLI or a test) and :class:`ExportReport` (the written files, the parity results,
the latency; printed by the CLI with :meth:`ExportReport.format`, stored in provenance with
:meth:`ExportReport.to_dict`). Split from :mod:`fleetcast.exporter.export`, which
re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleetcast.exporter.onnx_graph import DEFAULT_OPSET
from fleetcast.exporter.parity import (
    DEFAULT_PARITY_BATCHES,
    EXTREME_VALUE,
    ParityResult,
    RoundingFloor,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["ExportOptions", "ExportReport"]


@dataclass(frozen=True)
class ExportOptions:
    """How to export; one object, built once by the CLI or a test."""

    opset: int = DEFAULT_OPSET
    """ONNX opset of the graph."""
    optimization: str = "all"
    """ORT graph optimisation level of the parity check and latency: disable, basic, extended, all."""
    parity_batches: tuple[int, ...] = DEFAULT_PARITY_BATCHES
    """Batch sizes compared against PyTorch."""
    rtol: float = 1e-4
    """The float32 parity gate: largest error of each target relative to its largest |value|
    in the batch (docs/EXPORT.md#parity); also the relative part of the reported bound."""
    atol: float = 1e-4
    """Absolute part of the reported element-wise bound ``atol + rtol·|ref|`` (each target's
    units); not a gate (float32 cancellation near zero, docs/EXPORT.md#parity)."""
    fp16: bool = False
    """Also write ``model.fp16.onnx`` (float16 weights and compute, float32 inputs/outputs)."""
    fp16_rtol: float = 2e-2
    """Relative tolerance of the float16 graph against the float32 graph."""
    fp16_atol: float = 0.1
    """Absolute tolerance of the float16 graph against the float32 graph."""
    rounding_floor: bool = True
    """Also compare float32 PyTorch and ORT with a float64 copy of the model at the largest
    parity batch (reported, not a check: float32's own distance from exact arithmetic)."""
    latency_batches: tuple[int, ...] = (1, 90)
    """Batch sizes of the ORT CPU latency measurement (empty: skip)."""
    latency_runs: int = 20
    """Timed runs per latency batch size (after 3 warm-up runs)."""
    step_cache: bool = True
    """Embed the step graphs when the model's inputs allow it (docs/MODEL_FORMAT.md#step-cache)."""


@dataclass
class ExportReport:
    """What an export produced and measured (printed by the CLI, stored in provenance)."""

    path: Path
    """The written float32 model."""
    size_bytes: int
    """Its size."""
    sha256: str
    """SHA-256 of its bytes (also in the ``.sha256`` sidecar)."""
    export_s: float
    """Seconds from the trained model to the written, checked file."""
    parity: list[ParityResult]
    """Float32 ORT CPU vs PyTorch, per batch size."""
    floor: RoundingFloor | None = None
    """float32 PyTorch and ORT vs float64 PyTorch, when ``options.rounding_floor``."""
    latency_ms: dict[int, float] = field(default_factory=dict)
    """Median ORT CPU latency per batch size, milliseconds."""
    fp16_path: Path | None = None
    """The float16 model, when requested."""
    fp16_size_bytes: int | None = None
    """Its size."""
    fp16_parity: list[ParityResult] = field(default_factory=list)
    """Float16 vs float32 ORT CPU, per batch size."""
    fp16_extreme: list[ParityResult] = field(default_factory=list)
    """Float16 vs float32 on the parity windows with every log1p target's forecast near
    :data:`~fleetcast.exporter.parity.EXTREME_VALUE` (float16 overflows above 65,504)."""
    step_parity: list[ParityResult] = field(default_factory=list)
    """The step graphs' composition on ORT CPU vs PyTorch, per batch size (empty: none)."""
    step_cache_note: str = ""
    """Why the model has no step graphs (empty when it has them)."""
    options: ExportOptions = field(default_factory=ExportOptions)
    """The options used."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "export_s": round(self.export_s, 3),
            "parity": [p.to_dict() for p in self.parity],
            "tolerance": {"rtol": self.options.rtol, "atol": self.options.atol},
            "rounding_floor": self.floor.to_dict() if self.floor else None,
            "latency_ms": {str(k): round(v, 3) for k, v in self.latency_ms.items()},
            "optimization": self.options.optimization,
            "fp16_path": str(self.fp16_path) if self.fp16_path else None,
            "fp16_size_bytes": self.fp16_size_bytes,
            "fp16_parity": [p.to_dict() for p in self.fp16_parity],
            "fp16_extreme_parity": [p.to_dict() for p in self.fp16_extreme],
            "fp16_tolerance": {"rtol": self.options.fp16_rtol, "atol": self.options.fp16_atol},
            "step_parity": [p.to_dict() for p in self.step_parity],
            "step_cache": not self.step_cache_note,
            "step_cache_note": self.step_cache_note,
        }

    def format(self) -> str:
        """The human-readable report."""
        o = self.options
        lines = [
            f"wrote {self.path} ({self.size_bytes / 1024:.1f} KiB, sha256 {self.sha256[:16]}…)",
            f"export time {self.export_s:.1f} s; ORT optimisation level {o.optimization}",
            f"parity ORT CPU vs PyTorch (gate: error ≤ {o.rtol:g} of each target's range; "
            f"share of elements within {o.atol:g} + {o.rtol:g}·|ref| reported):",
        ]
        lines += [
            f"  batch {p.batch:>5}: max abs {p.max_abs:.2e}, max rel {p.max_rel:.2e} per element, "
            f"{p.max_rel_range:.2e} of range, {100 * p.share_within:.3f} % within, encoder "
            f"lengths {p.lengths[0]}..{p.lengths[1]}  {'ok' if p.passed else 'FAILED'}"
            for p in self.parity
        ]
        if self.floor is not None:
            f = self.floor
            lines.append(
                f"float32 rounding floor at batch {f.batch} (float64 PyTorch as exact): "
                f"PyTorch float32 max abs {f.pytorch.max_abs:.2e}, max rel "
                f"{f.pytorch.max_rel:.2e}; ONNX max abs {f.onnx.max_abs:.2e}, max rel "
                f"{f.onnx.max_rel:.2e}"
            )
        if self.step_parity:
            lines.append("step graphs embedded; their composition vs PyTorch (same gate):")
            lines += [
                f"  batch {p.batch:>5}: max abs {p.max_abs:.2e}, {p.max_rel_range:.2e} of range  "
                f"{'ok' if p.passed else 'FAILED'}"
                for p in self.step_parity
            ]
        else:
            lines.append(f"no step graphs: {self.step_cache_note}")
        if self.latency_ms:
            lines.append(
                "ORT CPU latency: "
                + ", ".join(f"batch {b}: {ms:.2f} ms" for b, ms in self.latency_ms.items())
            )
        if self.fp16_path is not None:
            lines.append(
                f"wrote {self.fp16_path} ({(self.fp16_size_bytes or 0) / 1024:.1f} KiB); "
                f"float16 vs float32 (gate: error ≤ {o.fp16_rtol:g} of each target's range):"
            )
            lines += [
                f"  batch {p.batch:>5}: max abs {p.max_abs:.2e}, max rel {p.max_rel:.2e}  "
                f"{'ok' if p.passed else 'FAILED'}"
                for p in self.fp16_parity
            ]
            lines += [
                f"  {p.batch} windows with log1p targets near {EXTREME_VALUE:g}: max rel of range "
                f"{p.max_rel_range:.2e}  {'ok' if p.passed else 'FAILED'}"
                for p in self.fp16_extreme
            ]
        return "\n".join(lines)
