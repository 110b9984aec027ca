"""Export a trained model to one self-contained, checked ONNX file (and an optional float16 copy).

:func:`export_model` is the one entry point (the CLI, the fixture script and the tests use
it). It refuses to write anything unless every check passes:

1. the traced graph passes ``onnx.checker.check_model(full_check=True)``;
2. ONNX Runtime on CPU reproduces the PyTorch model on real windows of the training data
   at several batch sizes, mixed encoder lengths included, within ``rtol`` of each target's
   range (element-wise errors against ``atol + rtol·|ref|`` are reported);
3. with ``fp16``: the float16 graph passes the checker and matches the float32 graph
   within the looser ``fp16_rtol`` of each target's range;
4. for a model with fixed input scaling (and ``step_cache``): the step graphs
   (:mod:`fleetcast.contract.step_graphs`) are traced, embedded in the metadata, and their
   composition must pass the same parity gate against PyTorch as the full graph.

Files are written atomically (temporary name, then rename), each with a ``.sha256``
sidecar in ``sha256sum`` format that the appliance verifies before loading.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.contract.errors import ContractError
from fleetcast.contract.step_graphs import (
    GRAPH_NAMES,
    STEP_GRAPHS_KEY,
    StepGraphs,
    composed_forward,
    step_stable,
)
from fleetcast.exporter.graph import INPUT_NAMES, OUTPUT_NAME
from fleetcast.exporter.metadata import SIDECAR_SUFFIX
from fleetcast.exporter.onnx_graph import (
    DEFAULT_OPSET,
    to_float16,
    trace_onnx,
    trace_step_graphs,
)
from fleetcast.exporter.parity import (
    DEFAULT_PARITY_BATCHES,
    ParityResult,
    RoundingFloor,
    ort_session,
    parity_check,
    rounding_floor,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import onnx
    import torch
    from pytorch_forecasting import TemporalFusionTransformer

    from fleetcast.contract.features import ModelSpec

__all__ = [
    "MIN_OPSET",
    "ExportError",
    "ExportOptions",
    "ExportReport",
    "check_folder",
    "check_opset",
    "check_output",
    "export_model",
    "max_opset",
    "measure_latency",
    "output_paths",
    "split_explained",
]

logger = logging.getLogger("fleetcast.exporter")

_DOC = "docs/EXPORT.md#checks"


class ExportError(ContractError):
    """An export that failed a check; nothing was written."""


MIN_OPSET = 11
"""Lowest ONNX opset the graph exports at: the TFT's interpolation (``upsample_linear1d``
with ``align_corners``) needs the ``Resize`` of opset 11; 7-10 fail in the exporter."""

_FALLBACK_MAX_OPSET = 20
"""The TorchScript exporter's own maximum when torch does not say (torch 2.13 accepts 23)."""


def max_opset() -> int:
    """Highest ONNX opset torch's TorchScript exporter accepts (torch 2.13: 23)."""
    try:
        from torch.onnx import _constants
    except ImportError:  # pragma: no cover - a torch without the module
        return _FALLBACK_MAX_OPSET
    return int(getattr(_constants, "ONNX_MAX_OPSET", _FALLBACK_MAX_OPSET))


def check_opset(opset: object) -> int:
    """``opset`` if the exporter supports it (:data:`MIN_OPSET` .. :func:`max_opset`), else
    :class:`ExportError`."""
    high = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= high:
        raise ExportError(
            f"--opset {opset} is outside the opsets this exporter supports ({MIN_OPSET}..{high}).",
            f"below {MIN_OPSET} ONNX has no operator for the TFT's interpolation; above "
            f"{high} torch's TorchScript exporter has no translation.",
            f"Leave --opset out (default {DEFAULT_OPSET}, which ONNX Runtime 1.18+ and "
            f"TensorRT 8.6+ run) or pass one of {MIN_OPSET}..{high}.",
            f"{_DOC_PAGE}#refusals",
        )
    return opset


_DOC_PAGE = "docs/EXPORT.md"
_EXPLAINED = re.compile(
    r"(?s)(?P<what>.*?) Why it matters: (?P<why>.*?) Fix: (?P<fix>.*) See (?P<see>\S+?)\.?\s*"
)


def split_explained(text: str) -> tuple[str, str, str, str] | None:
    """The four parts of a message composed by :func:`fleetcast.contract.errors.explain`
    (what, why, fix, see), or None when ``text`` is not in that shape."""
    match = _EXPLAINED.fullmatch(text.strip())
    if match is None:
        return None
    return match["what"], match["why"], match["fix"], match["see"]


def output_paths(path: str | Path, fp16: bool = False) -> list[Path]:
    """Every file an export to ``path`` writes: the model, its sidecar, the float16 pair."""
    path = Path(path)
    out = [path, path.with_name(path.name + SIDECAR_SUFFIX)]
    if fp16:
        half = path.with_name(path.stem + ".fp16.onnx")
        out += [half, half.with_name(half.name + SIDECAR_SUFFIX)]
    return out


def check_output(path: str | Path, fp16: bool = False, flag: str = "--out") -> None:
    """Refuse (:class:`ExportError`) an output path that cannot be written, before any work.

    The nearest existing folder above ``path`` must be a writable folder (not a file), and
    none of the files the export writes may be a folder.
    """
    path = Path(path)
    for target in output_paths(path, fp16):
        if target.is_dir():
            raise ExportError(
                f"{flag} {path}: {target} is a folder, not a file.",
                "the exporter writes the model as a file at that path; nothing was written.",
                f"Pass a file path such as {target / 'model.onnx'} (or remove the folder).",
                f"{_DOC_PAGE}#refusals",
            )
    check_folder(path.parent, flag, path)


def check_folder(folder: Path, flag: str, shown: Path) -> None:
    """The nearest existing folder at or above ``folder`` must be a writable folder."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ExportError(
            f"{flag} {shown}: {probe} is a file, so no folder can be made inside it.",
            "the exporter checks every place it writes before it writes anything; nothing "
            "was written.",
            f"Choose a {flag} path under a folder (or move {probe} away).",
            f"{_DOC_PAGE}#refusals",
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExportError(
            f"{flag} {shown}: the folder {probe} is not writable.",
            "the exporter checks every place it writes before it writes anything; nothing "
            "was written.",
            f"Choose a {flag} path in a folder you can write to, or fix its permissions.",
            f"{_DOC_PAGE}#refusals",
        )


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
        return "\n".join(lines)


def measure_latency(
    session: Any, windows: dict[str, torch.Tensor], batches: tuple[int, ...], runs: int
) -> dict[int, float]:
    """Median wall time (ms) of ``session.run`` per batch size, after 3 warm-up runs."""
    out: dict[int, float] = {}
    n = int(windows["encoder_lengths"].shape[0])
    for size in batches:
        idx = np.arange(size) % n
        feed = {name: windows[name].numpy()[idx] for name in INPUT_NAMES}
        for _ in range(3):
            session.run([OUTPUT_NAME], feed)
        times = []
        for _ in range(max(runs, 1)):
            start = time.perf_counter()
            session.run([OUTPUT_NAME], feed)
            times.append(time.perf_counter() - start)
        out[size] = float(np.median(times) * 1000.0)
    return out


def _write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``; write the sidecar."""
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    tmp_sidecar = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp_sidecar.write_text(f"{digest}  {path.name}\n")
    os.replace(tmp_sidecar, sidecar)
    return digest


def _failed(what: str, results: list[ParityResult], rtol: float, atol: float) -> ExportError:
    worst = max(results, key=lambda r: r.max_abs)
    failing = [r.batch for r in results if not r.passed]
    return ExportError(
        f"{what} differs from its reference by more than {rtol:g} of a target's range (or "
        f"gives non-finite values) at batch sizes {failing} (worst: max abs "
        f"{worst.max_abs:.3g}, max rel {worst.max_rel:.3g}, {worst.max_rel_range:.3g} of "
        "range); no file was written.",
        "the appliance would serve forecasts that are not the trained model's.",
        "Check that the bundle loads the weights it was trained with and that torch, "
        "pytorch-forecasting and onnxruntime are the versions in docs/EXPORT.md; report the "
        "numbers above if they are.",
        _DOC,
    )


def _traced(trace: Callable[..., Any], model: Any, example: Any, opset: int) -> Any:
    """``trace(model, example, opset=opset)``; the exporter's own failures as ExportError."""
    import onnx
    import torch

    errors: tuple[type[BaseException], ...] = (RuntimeError, onnx.checker.ValidationError)
    symbolic = getattr(getattr(torch.onnx, "errors", None), "SymbolicValueError", None)
    if symbolic is not None:
        errors = (*errors, symbolic)
    try:
        return trace(model, example, opset=opset)
    except errors as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ExportError(
            f"torch's ONNX exporter cannot export this model at opset {opset} "
            f"({type(exc).__name__}: {first}); no file was written.",
            "the appliance can only serve a graph that exported and passed the checks.",
            f"Export at the default opset ({DEFAULT_OPSET}); if that fails too, report this "
            "with the versions of torch, pytorch-forecasting and onnx.",
            f"{_DOC_PAGE}#how-the-graph-is-made",
        ) from None


class _Composed:
    """The step graphs on ORT CPU, run like one session (the parity check's ``session``)."""

    def __init__(self, graphs: StepGraphs, optimization: str) -> None:
        self.graphs = graphs
        self.sessions = [ort_session(getattr(graphs, name), optimization) for name in GRAPH_NAMES]

    def run(self, output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [composed_forward(*self.sessions, feed, self.graphs.embedding_size)]


def export_model(
    model: TemporalFusionTransformer,
    spec: ModelSpec,
    windows: dict[str, torch.Tensor],
    path: str | Path,
    options: ExportOptions | None = None,
    *,
    graph_hook: Callable[[onnx.ModelProto], None] | None = None,
) -> ExportReport:
    """Trace, check and write ``model`` to ``path`` with ``spec`` as its metadata.

    ``windows``: real input windows (:func:`~fleetcast.exporter.parity.collate_windows`),
    input name → tensor padded to width ``E``; mixed encoder lengths wanted.
    ``graph_hook``: called on the traced graph before the checks (tests use it to inject a
    fault; the checks must then refuse). Raises :class:`ExportError` when a check fails;
    nothing is written then.
    """
    import onnx
    import torch

    options = options or ExportOptions()
    path = Path(path)
    started = time.perf_counter()
    model = model.to("cpu").eval()
    e, d = spec.encoder_length, spec.prediction_length
    if tuple(windows["encoder_cat"].shape[1:2]) != (e,) or windows["decoder_cat"].shape[1] != d:
        raise ValueError(
            f"Expected windows of width {e} and {d} decoder steps, but got "
            f"{tuple(windows['encoder_cat'].shape)} / {tuple(windows['decoder_cat'].shape)}."
        )
    check_opset(options.opset)
    check_output(path, options.fp16)
    example = {k: v[:2].clone() for k, v in windows.items()}
    example["encoder_lengths"] = torch.full_like(example["encoder_lengths"], e)
    proto = _traced(trace_onnx, model, example, options.opset)
    if graph_hook is not None:
        graph_hook(proto)
    metadata = spec.to_metadata()
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "fleetcast-exporter"
    proto.doc_string = "fleetcast TFT forecaster; inputs and metadata: docs/MODEL_FORMAT.md"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(
            f"The exported graph fails onnx.checker ({str(exc).splitlines()[0]}); no file was "
            "written.",
            "ONNX Runtime, TensorRT and Triton may reject or misread an invalid graph.",
            "Report this with the versions of torch, onnx and onnxruntime.",
            _DOC,
        ) from None
    step_graphs, step_note = None, ""
    if not options.step_cache:
        step_note = "not requested (--no-step-cache)"
    elif not step_stable({k: v.source for k, v in spec.real_scalers.items()}):
        step_note = (
            "the model scales its inputs per window (train with --input-scaling fixed; "
            "docs/MODEL_FORMAT.md#step-cache)"
        )
    else:
        step_graphs = _traced(trace_step_graphs, model, example, options.opset)
        for key, value in step_graphs.to_metadata().items():
            proto.metadata_props.add(key=key, value=value)
    data = proto.SerializeToString()
    session = ort_session(data, options.optimization)
    parity = parity_check(
        session,
        model,
        windows,
        batches=options.parity_batches,
        rtol=options.rtol,
        atol=options.atol,
    )
    if not all(p.passed for p in parity):
        raise _failed("The ONNX graph on ONNX Runtime CPU", parity, options.rtol, options.atol)
    step_parity: list[ParityResult] = []
    if step_graphs is not None:
        step_parity = parity_check(
            _Composed(step_graphs, options.optimization),
            model,
            windows,
            batches=options.parity_batches,
            rtol=options.rtol,
            atol=options.atol,
        )
        if not all(p.passed for p in step_parity):
            raise _failed("The step graphs' composition", step_parity, options.rtol, options.atol)
    floor = None
    if options.rounding_floor and options.parity_batches:
        floor = rounding_floor(session, model, windows, max(options.parity_batches))

    fp16_data = None
    fp16_parity: list[ParityResult] = []
    if options.fp16:
        proto16 = to_float16(proto)
        # The step graphs are float32: the float16 model runs whole (a GPU has no use for them).
        kept = [p for p in proto16.metadata_props if p.key != STEP_GRAPHS_KEY]
        del proto16.metadata_props[:]
        proto16.metadata_props.extend(kept)
        try:
            onnx.checker.check_model(proto16, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(
                f"The float16 graph fails onnx.checker ({str(exc).splitlines()[0]}); no file "
                "was written.",
                "GPU execution providers may reject an invalid graph.",
                "Export without --fp16 and report this.",
                _DOC,
            ) from None
        fp16_data = proto16.SerializeToString()
        fp16_parity = parity_check(
            ort_session(fp16_data, options.optimization),
            model,
            windows,
            batches=options.parity_batches,
            rtol=options.fp16_rtol,
            atol=options.fp16_atol,
            reference=session,
        )
        if not all(p.passed for p in fp16_parity):
            raise _failed("The float16 graph", fp16_parity, options.fp16_rtol, options.fp16_atol)

    digest = _write_atomic(path, data)
    export_s = time.perf_counter() - started
    report = ExportReport(
        path=path,
        size_bytes=len(data),
        sha256=digest,
        export_s=export_s,
        parity=parity,
        floor=floor,
        fp16_parity=fp16_parity,
        step_parity=step_parity,
        step_cache_note=step_note,
        options=options,
    )
    if fp16_data is not None:
        report.fp16_path = path.with_name(path.stem + ".fp16.onnx")
        report.fp16_size_bytes = len(fp16_data)
        _write_atomic(report.fp16_path, fp16_data)
    if options.latency_batches:
        report.latency_ms = measure_latency(
            session, windows, options.latency_batches, options.latency_runs
        )
    logger.info("exported %s in %.1f s", path, export_s)
    return report
