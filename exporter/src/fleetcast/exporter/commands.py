"""``fleetcast export``: bundle → checked ``model.onnx`` (+ float16 copy, + Triton repository).

Heavy imports (torch, pytorch-forecasting, onnx) happen inside the handler, so
``fleetcast --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

__all__ = ["register_export", "run_export"]

logger = logging.getLogger("fleetcast.exporter")


def register_export(subparsers: Any) -> None:
    """Add the ``export`` subcommand to the ``fleetcast`` CLI's sub-parsers."""
    parser = subparsers.add_parser(
        "export",
        help="compile a trained model bundle to one self-contained, parity-checked ONNX file",
        description=(
            "Export a model bundle to ONNX with everything the appliance needs in its "
            "metadata. Refuses to write a file that fails onnx.checker or differs from the "
            "PyTorch model on real windows of the training data. See docs/EXPORT.md."
        ),
    )
    parser.add_argument(
        "--bundle",
        type=Path,
        default=Path("models/latest"),
        help="bundle folder, models/latest or models/ (default: models/latest)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="training data (Parquet) for the parity windows (default: the path the bundle "
        "records, else training/server_metrics.parquet)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="ONNX path (default: <bundle>/model.onnx)"
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="also write model.fp16.onnx for GPU execution providers (float32 inputs/outputs)",
    )
    parser.add_argument(
        "--optimization",
        choices=["disable", "basic", "extended", "all"],
        default="all",
        help="ONNX Runtime graph optimisation level of the parity check and latency (default all)",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset, 11 to 23 with torch 2.13 (default 17)"
    )
    parser.add_argument(
        "--parity-batches",
        default="1,7,90,1000",
        help="comma-separated batch sizes of the parity check (default 1,7,90,1000)",
    )
    parser.add_argument(
        "--no-rounding-floor",
        action="store_true",
        help="skip the float64 comparison that reports float32's own rounding error "
        "(saves a float64 forward at the largest parity batch)",
    )
    parser.add_argument(
        "--no-step-cache",
        action="store_true",
        help="do not embed the step graphs of a model trained with --input-scaling fixed "
        "(the appliance then runs the full graph; docs/MODEL_FORMAT.md#step-cache)",
    )
    parser.add_argument(
        "--triton",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write a Triton model repository DIR/fleetcast_tft/{config.pbtxt,1/model.onnx}",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run_export)


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError(
            f"--parity-batches expects positive integers such as 1,7,90,1000, got {text!r}."
        )
    return values


class _Rollback:
    """All or nothing: files this run writes are removed, and the files it replaced restored,
    when the export fails after it started writing (docs/EXPORT.md: exit 1 = nothing written).

    The files are small (the model and its copies), so their old bytes are kept in memory.
    """

    def __init__(self, paths: list[Path]) -> None:
        self.saved: dict[Path, bytes | None] = {}
        self.created_dirs: list[Path] = []
        for path in paths:
            self.saved[path] = path.read_bytes() if path.is_file() else None
            folder = path.parent
            while not folder.exists() and folder != folder.parent:
                if folder not in self.created_dirs:
                    self.created_dirs.append(folder)
                folder = folder.parent
        # deepest first, so that a folder is empty when its parent is removed
        self.created_dirs.sort(key=lambda p: len(p.parts), reverse=True)

    def undo(self) -> None:
        """Put every planned path back as it was (best effort; never raises)."""
        from fleetcast.exporter.export import write_file_atomic

        for path, old in self.saved.items():
            try:
                path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)  # a torn write
                if old is None:
                    if path.is_file():
                        path.unlink()
                elif not path.is_file() or path.read_bytes() != old:
                    write_file_atomic(path, old)
            except OSError as exc:
                logger.warning("could not put back %s: %s", path, exc)
        for folder in self.created_dirs:
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty: not only this run's


def _planned_outputs(args: argparse.Namespace, fp16: bool) -> tuple[Path | None, list[Path]]:
    """The ONNX path (None when the bundle cannot be found) and every file the run writes.

    Each location is checked first (ExportError): nothing is written when one is unusable.
    """
    from fleetcast.exporter.bundle_export import ONNX_FILE
    from fleetcast.exporter.export import check_output, output_paths
    from fleetcast.trainer.bundle import BundleError, resolve_bundle_dir

    target: Path | None = args.out
    if target is None:
        try:
            target = resolve_bundle_dir(args.bundle) / ONNX_FILE
        except (BundleError, OSError):
            target = None  # export_bundle reports the missing bundle, before writing
    planned: list[Path] = []
    if target is not None:
        check_output(target, fp16)
        planned += output_paths(target, fp16)
    if args.triton is not None:
        from fleetcast.exporter.triton import check_triton_repository, triton_paths

        check_triton_repository(args.triton)
        planned += triton_paths(args.triton)
    return target, planned


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``fleetcast export``; returns the exit code (0 ok, 1 refused, 2 bad usage)."""
    from fleetcast.trainer.quiet import quiet_libraries

    quiet_libraries()  # first: torch reads its C++ log level when it loads
    from fleetcast.contract.errors import ContractError
    from fleetcast.exporter.bundle_export import export_bundle
    from fleetcast.exporter.export import ExportError, ExportOptions, check_opset
    from fleetcast.exporter.metadata import read_spec
    from fleetcast.exporter.onnx_graph import DEFAULT_OPSET

    try:
        batches = _batches(args.parity_batches)
    except ValueError as exc:
        print(f"fleetcast export: {exc}", file=sys.stderr)
        return 2
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    try:
        check_opset(opset)
    except ExportError as exc:
        print(f"fleetcast export: {exc}", file=sys.stderr)
        return 2
    options = ExportOptions(
        opset=opset,
        optimization=args.optimization,
        parity_batches=batches,
        fp16=args.fp16,
        rounding_floor=not args.no_rounding_floor,
        step_cache=not args.no_step_cache,
    )
    lines: list[str] = []
    rollback: _Rollback | None = None
    try:
        target, planned = _planned_outputs(args, options.fp16)
        rollback = _Rollback(planned)
        report = export_bundle(args.bundle, data=args.data, out=target, options=options)
        lines.append(report.format())
        if args.triton is not None:
            from fleetcast.exporter.triton import write_triton_repository

            model_dir = write_triton_repository(report.path, read_spec(report.path), args.triton)
            lines.append(f"wrote Triton model repository {model_dir} (config.pbtxt, 1/model.onnx)")
    except (ContractError, OSError) as exc:
        if rollback is not None:
            rollback.undo()
        refusal = exc
        if not isinstance(refusal, ContractError):  # writing failed once it had begun
            refusal = ExportError(
                f"cannot write the export ({type(exc).__name__}: {exc}).",
                "an export is all or nothing, so what this run wrote was removed and the "
                "files it replaced restored.",
                "check free disk space and the permissions of --out, the bundle folder and "
                "--triton.",
                "docs/EXPORT.md#refusals",
            )
        print(f"fleetcast export: {refusal}", file=sys.stderr)
        if args.json:  # a script reading stdout gets the refusal too, as `validate --json`
            refused = {
                "what": refusal.what,
                "why": refusal.why,
                "fix": refusal.fix,
                "see": refusal.see,
            }
            print(json.dumps({"exported": False, "error": refused}, indent=2))
        return 1
    except BaseException:  # anything else (a bug, Ctrl-C): still all or nothing
        if rollback is not None:
            rollback.undo()
        raise
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(lines))
    return 0
