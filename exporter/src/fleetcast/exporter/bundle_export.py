"""Bundle → ``model.onnx``: load the bundle, take real windows of its training data, export.

This is what ``fleetcast export --bundle models/latest`` runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetcast.exporter.export import (
    ExportError,
    ExportOptions,
    ExportReport,
    check_output,
    export_model,
    split_explained,
)
from fleetcast.exporter.metadata import spec_from_bundle
from fleetcast.exporter.parity import collate_windows, select_windows

if TYPE_CHECKING:
    from collections.abc import Callable

    import onnx
    import pandas as pd
    import pyarrow as pa
    import torch

    from fleetcast.trainer.bundle import Bundle

__all__ = [
    "DEFAULT_DATA",
    "ONNX_FILE",
    "WindowSource",
    "export_bundle",
    "parity_windows",
    "validate_data",
]

logger = logging.getLogger("fleetcast.exporter")

ONNX_FILE = "model.onnx"
"""The file name the exporter writes into the bundle folder (the appliance loads it)."""

DEFAULT_DATA = Path("training/server_metrics.parquet")
"""Where the training data is when neither ``--data`` nor the bundle says otherwise."""

_DOC = "docs/EXPORT.md"


@dataclass(frozen=True)
class WindowSource:
    """Which real windows the parity check uses."""

    servers: int = 24
    """At most this many servers (the first by name) of the data."""
    tail_steps: int = 160
    """Steps beyond ``E + D`` kept at the end of each server (its first windows are short)."""
    windows: int = 256
    """Distinct windows (a third short, cold-start ones)."""
    seed: int = 0
    """Seed of the window choice."""


def parity_windows(
    bundle: Bundle,
    data: pa.Table | pd.DataFrame | str | Path,
    source: WindowSource | None = None,
) -> dict[str, torch.Tensor]:
    """Real input windows of ``data`` through pytorch-forecasting's dataset with the bundle's encoders.

    Each kept server is cut to its last ``E + D + tail_steps`` steps so that the cut's first
    windows are short (``min_encoder_length..E``) and the rest full. Returns input name →
    tensor, padded to width ``E`` (:func:`~fleetcast.exporter.parity.collate_windows`).
    """
    from fleetcast.trainer.data_step import check_data_step
    from fleetcast.trainer.dataset import prepare_frame

    source = source or WindowSource()
    if isinstance(data, str | Path):
        data = _read_servers(Path(data), source.servers)
    cfg = bundle.dataset_config
    no_window = ExportError(
        f"The data has no window of {cfg.min_encoder_length}+{cfg.max_prediction_length} "
        "steps for the parity check.",
        "the exporter refuses to write a model it could not compare with PyTorch.",
        "Pass the training data with --data (at least a day per server).",
        f"{_DOC}#checks",
    )
    try:
        frame = prepare_frame(data)
    except (ValueError, KeyError, TypeError) as exc:
        logger.debug("no parity windows: %s: %s", type(exc).__name__, exc)
        raise no_window from None
    try:  # data at another step than 300 s is refused, as `fleetcast train` refuses it
        check_data_step(frame)
    except ValueError as exc:
        parts = split_explained(str(exc))
        raise (ExportError(*parts) if parts else ExportError(str(exc), "", "", "")) from None
    try:
        keep_steps = cfg.max_encoder_length + cfg.max_prediction_length + source.tail_steps
        names = sorted(frame["server_name"].astype(str).unique())[: source.servers]
        frame = frame[frame["server_name"].astype(str).isin(names)]
        last = frame.groupby("server_name", observed=True)["time_idx"].transform("max")
        frame = frame[frame["time_idx"] > last - keep_steps].reset_index(drop=True)
        for col in ("server_name", "state", "profile", "server_id"):
            frame[col] = frame[col].astype(str).astype("category")
        dataset = bundle.build_dataset(frame)
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        # Contract-valid data (validate_data ran first) that still gives pytorch-forecasting
        # no usable window, e.g. servers shorter than the minimum window.
        logger.debug("no parity windows: %s: %s", type(exc).__name__, exc)
        raise no_window from None
    if len(dataset) == 0:
        raise no_window
    return collate_windows(dataset, select_windows(dataset, source.windows, source.seed))


def validate_data(data: pa.Table | pd.DataFrame | str | Path) -> None:
    """Check ``data`` with the contract's validator (strict, as ``fleetcast train`` does).

    Raises :class:`ExportError` (four parts) for a file that is not readable Parquet and for
    data that breaks the contract; logs the validator's warnings.
    """
    import pyarrow as pa

    from fleetcast.contract.validate import DataFileError, DataValidator

    source: Any = data
    if not isinstance(data, pa.Table | str | Path):
        source = pa.Table.from_pandas(data, preserve_index=False)
    try:
        report = DataValidator(strict=True).validate(source)
    except DataFileError as exc:
        parts = split_explained(str(exc))
        what = parts[0] if parts else str(exc)
        raise ExportError(
            f"Cannot read the training data: {what}",
            "the parity check compares ONNX Runtime with PyTorch on real windows of the "
            "training data.",
            "Pass the Parquet file the model was trained on with --data PATH (convert a CSV "
            "export with `fleetcast import csv`).",
            "docs/DATA_CONTRACT.md#files",
        ) from None
    for warning in report.warnings:
        logger.warning("%s", warning)
    errors = [i for i in report.issues if i.severity == "error"]
    if not errors:
        return
    first = errors[0]
    more = ""
    if len(errors) > 1:
        listed = "" if report.source == "<table>" else f"; `fleetcast validate {report.source}`"
        more = f" ({len(errors) - 1} more error(s){listed and listed + ' lists them'})"
    examples = f" Examples: {'; '.join(first.examples)}." if first.examples else ""
    raise ExportError(
        f"The training data {report.source} breaks the data contract: {first.what}{examples}{more}",
        "the parity check runs the model on windows of this data, and data that breaks the "
        "contract is not what a model is trained on (nothing was exported).",
        f"{first.fix} Or pass the Parquet file the model was trained on with --data.",
        first.see,
    )


def _read_servers(path: Path, count: int) -> pa.Table:
    """The contract columns of the first ``count`` servers (by name) of a Parquet file."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from fleetcast.contract.tables import read_contract_columns

    dataset = pads.dataset(str(path), format="parquet")
    names = pc.unique(dataset.to_table(columns=["server_name"]).column(0)).to_pylist()
    return read_contract_columns(path, sorted(str(n) for n in names)[:count])


def _data_path(bundle: Bundle, data: str | Path | None) -> Path:
    """``--data``, else the file training_info.json records, else the default; a folder → its Parquet."""
    if data is not None:
        path = Path(data)
    else:
        info: dict[str, Any] = bundle.training_info
        recorded = (info.get("data") or {}).get("file")
        path = Path(recorded) if recorded and Path(recorded).exists() else DEFAULT_DATA
    if path.is_dir():
        path = path / DEFAULT_DATA.name
    return path


def export_bundle(
    bundle_dir: str | Path,
    *,
    data: pa.Table | pd.DataFrame | str | Path | None = None,
    out: str | Path | None = None,
    options: ExportOptions | None = None,
    source: WindowSource | None = None,
    graph_hook: Callable[[onnx.ModelProto], None] | None = None,
) -> ExportReport:
    """Export the bundle at ``bundle_dir`` (a bundle, ``models/`` or ``models/latest``).

    ``data``: the training data (table, frame or Parquet path) for the parity windows;
    default the path recorded in training_info.json, else ``training/server_metrics.parquet``.
    ``out``: the ONNX path; default ``<bundle>/model.onnx``. Raises :class:`ExportError`
    (nothing written) when the bundle cannot be loaded or a check fails.
    """
    from fleetcast.trainer.bundle import BUNDLE_FILES, BundleError, load_bundle

    try:
        bundle = load_bundle(bundle_dir)
    except (BundleError, FileNotFoundError, OSError, ValueError, KeyError, RuntimeError) as exc:
        parts = split_explained(str(exc))
        if parts is not None:  # already what, why, fix, see (BundleError, ContractError)
            what, why, fix, see = parts
            raise ExportError(
                f"Cannot load the bundle at {bundle_dir}: {what}", why, fix, see
            ) from None
        raise ExportError(
            f"Cannot load the bundle at {bundle_dir}: {type(exc).__name__}: {exc}",
            "the exporter compiles exactly the trained weights, or nothing.",
            "Point --bundle at a folder written by `fleetcast train` (or retrain).",
            f"{_DOC}#checks",
        ) from None
    if data is None or isinstance(data, str | Path):
        path = _data_path(bundle, data)
        if not path.exists():
            recorded = (bundle.training_info.get("data") or {}).get("file")
            gone = data is None and recorded
            tried = f" (the bundle records {recorded}, which is gone)" if gone else ""
            raise ExportError(
                f"Training data not found at {path}{tried}.",
                "the parity check compares ONNX Runtime with PyTorch on real windows.",
                "Pass the training data with --data PATH (the Parquet file the model was "
                "trained on).",
                f"{_DOC}#checks",
            )
        data = path
    target = Path(out) if out is not None else bundle.path / ONNX_FILE
    fp16 = (options or ExportOptions()).fp16
    check_output(target, fp16=fp16)  # before the slow part
    _check_not_an_input(target, fp16, [bundle.path / name for name in BUNDLE_FILES], data)
    validate_data(data)
    windows = parity_windows(bundle, data, source)
    provenance: dict[str, Any] = {
        "exporter": "fleetcast-exporter",
        "bundle_created_utc": bundle.config.get("created_utc"),
        "versions": _versions(),
    }
    untrained = bundle.training_info.get("profiles_untrained")
    if isinstance(untrained, list):  # the appliance names them (docs/SERVER_PROFILES.md)
        provenance["profiles_untrained"] = [str(p) for p in untrained]
    unknown_trained = bundle.training_info.get("unknown_server_trained")
    if isinstance(unknown_trained, bool):  # the appliance warns when it is false
        provenance["unknown_server_trained"] = unknown_trained
    spec = spec_from_bundle(bundle, provenance=provenance)
    return export_model(bundle.model, spec, windows, target, options, graph_hook=graph_hook)


def _check_not_an_input(target: Path, fp16: bool, bundle_files: list[Path], data: Any) -> None:
    """Refuse an ``--out`` whose writes would replace a file the export reads: the bundle's
    own files or the training data (an ONNX file written over ``config.json`` or the
    Parquet file, exit 0, was the only sign)."""
    from fleetcast.exporter.export import output_paths

    written = {p.resolve() for p in output_paths(target, fp16)}
    inputs = [*bundle_files, *([Path(data)] if isinstance(data, str | Path) else [])]
    for source in inputs:
        if source.resolve() in written:
            raise ExportError(
                f"--out {target} would overwrite {source}, which this export reads.",
                "the export would replace its own input with the ONNX file; nothing was written.",
                "Pass an --out path of its own (the default is model.onnx in the bundle folder).",
                f"{_DOC}#refusals",
            )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("fleetcast-exporter", "torch", "pytorch-forecasting", "onnx", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out
