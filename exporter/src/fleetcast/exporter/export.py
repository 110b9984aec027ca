"""Export a trained model to one self-contained, checked ONNX file (and an optional float16 copy).

:func:`export_model` is the one entry point (the CLI, the fixture script and the tests use
it). It refuses to write anything unless every check passes:

1. the traced graph passes ``onnx.checker.check_model(full_check=True)``;
2. ONNX Runtime on CPU reproduces the PyTorch model on real windows of the training data
   at several batch sizes, mixed encoder lengths included, within ``rtol`` of each target's
   range (element-wise errors against ``atol + rtol·|ref|`` are reported);
3. with ``fp16``: the float16 graph passes the checker and matches the float32 graph
   within the looser ``fp16_rtol`` of each target's range, on the parity windows and on
   them again with the log1p targets' forecasts near 1e6 (beyond float16's range: its
   de-normalisation must stay float32, :mod:`fleetcast.exporter.float16`);
4. for a model with fixed input scaling (and ``step_cache``): the step graphs
   (:mod:`fleetcast.contract.step_graphs`) are traced, embedded in the metadata, and their
   composition must pass the same parity gate against PyTorch as the full graph.

Files are written atomically and durably (temporary name, ``fsync``, rename,
:func:`write_file_atomic`), each with a ``.sha256`` sidecar in ``sha256sum`` format that the
appliance verifies before loading. An export without parity batch sizes is refused.

The refusals made before any work (:class:`ExportError`, the opset range, the output paths)
live in :mod:`fleetcast.exporter.refusals`, :class:`ExportOptions` and :class:`ExportReport`
in :mod:`fleetcast.exporter.report`; both are re-exported here.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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
    EXTREME_VALUE,
    ParityResult,
    extreme_windows,
    ort_session,
    parity_check,
    rounding_floor,
)
from fleetcast.exporter.refusals import (
    MIN_OPSET,
    ExportError,
    check_folder,
    check_opset,
    check_output,
    max_opset,
    output_paths,
    split_explained,
)
from fleetcast.exporter.report import ExportOptions, ExportReport

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
    "write_file_atomic",
]

logger = logging.getLogger("fleetcast.exporter")

_DOC_PAGE = "docs/EXPORT.md"
_DOC = f"{_DOC_PAGE}#checks"


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


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` only ever holds the old or the new bytes.

    A temporary file beside it (``.<name>.tmp``), flushed to disk (``fsync``), then renamed
    over ``path`` and the folder synced: after a crash or a power cut the appliance finds
    the earlier file or the complete new one, never a truncated one. The temporary file is
    removed when writing it fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """``fsync`` a folder, so that a rename in it survives a power cut (where supported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without folder handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse it
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (:func:`write_file_atomic`), then its sidecar."""
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    write_file_atomic(path, data)
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    write_file_atomic(sidecar, f"{digest}  {path.name}\n".encode())
    return digest


def _failed(
    what: str,
    results: list[ParityResult],
    rtol: float,
    atol: float,
    fix: str = "",
    *,
    model_reference: bool = True,
) -> ExportError:
    """The refusal of a failed parity check; ``fix``: the way out when not the versions.
    ``model_reference``: the reference was the trained PyTorch model (False: the float32
    graph, for the float16 checks), so a non-finite reference is the model's own."""
    failing = [r.batch for r in results if not r.passed]
    if model_reference and any(not r.reference_finite for r in results):
        return ExportError(
            f"{what}: the trained model itself forecasts inf or NaN on the parity windows "
            f"(batch sizes {failing}); no file was written.",
            "the appliance would serve no forecast for such windows, whatever the export.",
            "look for extreme values in the training data (values near float32's limit, "
            "3.4e38, are legal but overflow the model's scaling); remove or cap them, train "
            "again (`fleetcast train` then reports the model's non-finite forecasts as a "
            "failed quality rule) and export the new bundle.",
            _DOC,
        )
    # The worst failing batch (NaN counts as the worst: max() would skip past it).
    worst = max(
        (r for r in results if not r.passed),
        key=lambda r: r.max_abs if r.max_abs == r.max_abs else float("inf"),
        default=max(results, key=lambda r: r.max_abs),
    )
    return ExportError(
        f"{what} differs from its reference by more than {rtol:g} of a target's range (or "
        f"gives non-finite values) at batch sizes {failing} (worst: max abs "
        f"{worst.max_abs:.3g}, max rel {worst.max_rel:.3g}, {worst.max_rel_range:.3g} of "
        "range); no file was written.",
        "the appliance would serve forecasts that are not the trained model's.",
        fix
        or "Check that the bundle loads the weights it was trained with and that torch, "
        "pytorch-forecasting and onnxruntime are the versions in docs/EXPORT.md; report the "
        "numbers above if they are.",
        _DOC,
    )


_FP16_FIX = (
    "Export without --fp16 (the float32 graph passed its checks; the appliance runs it on a "
    "GPU too) and report the numbers above with the versions of onnx and onnxruntime."
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
    if not options.parity_batches:
        raise ExportError(
            "No parity batch sizes were given (parity_batches is empty); no file was written.",
            "without the parity check nothing shows that the graph computes the trained "
            "model, and the appliance would serve it unchecked.",
            "Pass at least one batch size (the default is 1,7,90,1000).",
            _DOC,
        )
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
        step_graphs = _traced(
            functools.partial(trace_step_graphs, windows=windows), model, example, options.opset
        )
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
            raise _failed(
                "The step graphs' composition",
                step_parity,
                options.rtol,
                options.atol,
                "Export with --no-step-cache (the full graph passed its checks; the appliance "
                "then runs it whole) and report the numbers above.",
            )
    floor = None
    if options.rounding_floor and options.parity_batches:
        floor = rounding_floor(session, model, windows, max(options.parity_batches))

    fp16_data = None
    fp16_parity: list[ParityResult] = []
    fp16_extreme: list[ParityResult] = []
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
        session16 = ort_session(fp16_data, options.optimization)
        fp16_parity = parity_check(
            session16,
            model,
            windows,
            batches=options.parity_batches,
            rtol=options.fp16_rtol,
            atol=options.fp16_atol,
            reference=session,
        )
        if not all(p.passed for p in fp16_parity):
            raise _failed(
                "The float16 graph",
                fp16_parity,
                options.fp16_rtol,
                options.fp16_atol,
                _FP16_FIX,
                model_reference=False,
            )
        # Forecasts beyond float16's range (65,504): the windows again, log1p targets at 1e6
        # (identity targets are moved by nothing; a model without log1p targets skips it).
        transforms = [spec.target_transforms[t] for t in spec.targets]
        fp16_extreme = (
            []
            if "log1p" not in transforms
            else parity_check(
                session16,
                model,
                extreme_windows(windows, transforms),
                batches=(int(windows["encoder_lengths"].shape[0]),),
                rtol=options.fp16_rtol,
                atol=options.fp16_atol,
                reference=session,
            )
        )
        if not all(p.passed for p in fp16_extreme):
            raise _failed(
                f"The float16 graph on forecasts near {EXTREME_VALUE:g} (log1p targets)",
                fp16_extreme,
                options.fp16_rtol,
                options.fp16_atol,
                _FP16_FIX,
                model_reference=False,
            )

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
        fp16_extreme=fp16_extreme,
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
