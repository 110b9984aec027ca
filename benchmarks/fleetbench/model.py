"""The model under test: a given bundle/model folder, or a small one trained and exported here.

Every benchmark of one run uses the same model. When ``--model-dir`` is not given, the
suite trains a model with the project's own trainer on a simulated fleet
(:func:`fleetcast.contract.simulate.batch.simulate_table`) and exports it with the
project's exporter into the run's work folder: the bundle folder then holds
``model.safetensors`` (PyTorch baselines), ``model.onnx`` (ONNX Runtime, the appliance)
and ``training_info.json`` (the accuracy table).
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["FULL_SHAPE", "QUICK_SHAPE", "ModelShape", "PreparedModel", "prepare_model"]

log = logging.getLogger("fleetbench")

SIM_START = 1_767_225_600
"""2026-01-01T00:00:00Z: a fixed simulation start keeps runs comparable."""


@dataclass(frozen=True)
class ModelShape:
    """Architecture and (tiny) training budget of a model the suite trains itself."""

    encoder: int = 96
    """Encoder steps E (the trainer's default; its day-ago inputs read a day further back)."""
    hidden: int = 32
    """TFT hidden size."""
    heads: int = 4
    """Attention heads."""
    hidden_continuous: int = 16
    """Continuous-variable embedding size."""
    prediction: int = 96
    """Prediction steps D (96 = 8 h: the reported horizons need it)."""
    max_batches: int = 20
    """Training batches (one epoch): seconds, not a production training."""
    batch_size: int = 64
    """Windows per training batch."""
    evaluate: bool = True
    """Compute the trainer's accuracy table on the held-out tail."""
    eval_windows: int = 150
    """Cap of held-out accuracy windows."""
    servers: int = 24
    """Simulated training servers."""
    hours: int = 96
    """Simulated training hours."""

    @property
    def label(self) -> str:
        """Short name, e.g. ``E96-h32``."""
        return f"E{self.encoder}-h{self.hidden}"


QUICK_SHAPE = ModelShape(
    encoder=48, hidden=8, heads=1, hidden_continuous=4, max_batches=2, evaluate=False,
    servers=8, hours=72,
)  # fmt: skip
"""The CI model: the appliance fixture's shape (seconds to train)."""
FULL_SHAPE = ModelShape()
"""The production shape (E 96 with day-ago inputs, D 96, hidden 32), briefly trained."""


@dataclass
class PreparedModel:
    """Where the model under test lives and how it was made."""

    model_dir: Path
    """Folder with ``model.onnx`` (+ sidecar); a bundle folder when PyTorch is available."""
    onnx_path: Path
    has_bundle: bool
    """True when ``model.safetensors``/``config.json`` are there (PyTorch baselines possible)."""
    origin: str
    """``trained here (…)`` or ``given: …``."""
    shape: dict[str, Any] = field(default_factory=dict)
    training_info: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON summary (no accuracy table; that is benchmark 4's)."""
        return {
            "model_dir": str(self.model_dir),
            "origin": self.origin,
            "has_bundle": self.has_bundle,
            "shape": self.shape,
            "onnx_bytes": self.onnx_path.stat().st_size,
            "parity": self.export.get("parity", []),
            "timings_s": self.timings_s,
        }


def _shape_of_bundle(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        return {}
    config = json.loads(config_path.read_text())
    hp = config.get("hparams") or config.get("model", {}).get("hparams") or {}
    ds = config.get("dataset", {})
    return {
        "encoder": ds.get("max_encoder_length"),
        "prediction": ds.get("max_prediction_length"),
        "hidden": hp.get("hidden_size"),
        "heads": hp.get("attention_head_size"),
        "hidden_continuous": hp.get("hidden_continuous_size"),
    }


def _given(model_dir: Path) -> PreparedModel:
    from fleetcast.trainer.bundle import resolve_bundle_dir

    path = Path(model_dir)
    onnx_path = path if path.suffix == ".onnx" else path / "model.onnx"
    folder = onnx_path.parent
    if not onnx_path.is_file():
        try:
            folder = resolve_bundle_dir(path)
        except Exception as exc:
            raise FileNotFoundError(
                f"No model.onnx in {path}. Why it matters: every benchmark runs the exported "
                "model. Fix: export the bundle first (`fleetcast export --bundle DIR`) or "
                "leave --model-dir out to let the suite train and export a small model. "
                "See docs/BENCHMARKS.md#running-it."
            ) from exc
        onnx_path = folder / "model.onnx"
        if not onnx_path.is_file():
            raise FileNotFoundError(
                f"The bundle {folder} has no model.onnx. Fix: `fleetcast export --bundle "
                f"{folder}`. See docs/BENCHMARKS.md#running-it."
            )
    has_bundle = (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    info_path = folder / "training_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return PreparedModel(
        model_dir=folder,
        onnx_path=onnx_path,
        has_bundle=has_bundle,
        origin=f"given: {folder}",
        shape=_shape_of_bundle(folder),
        training_info=info,
    )


@contextmanager
def _training_threads() -> Iterator[None]:
    """One torch thread while the cores are already busy (load ≥ cores), else torch's default.

    Two OpenMP threads on one free core spin against each other: a training step measured
    here went from 2 s to 18 s under another helper's load. Training time is not a result
    of the suite, so this only keeps the run bounded.
    """
    import torch

    before = torch.get_num_threads()
    busy = bool(os.getloadavg()[0] >= (os.cpu_count() or 1)) if hasattr(os, "getloadavg") else False
    if busy:
        log.info("load average %.1f: training with 1 torch thread", os.getloadavg()[0])
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_and_export(work: Path, shape: ModelShape, *, seed: int = 0) -> PreparedModel:
    """Train ``shape`` on a simulated fleet and export it into ``work/models``."""
    from fleetcast.contract.simulate.batch import simulate_table
    from fleetcast.exporter.bundle_export import WindowSource, export_bundle
    from fleetcast.exporter.export import ExportOptions
    from fleetcast.trainer.bundle import save_bundle
    from fleetcast.trainer.train import TrainConfig, train_model

    began = time.perf_counter()
    table = simulate_table(shape.servers, shape.hours, seed=seed + 1, start=SIM_START)
    config = TrainConfig(
        hidden_size=shape.hidden,
        attention_head_size=shape.heads,
        hidden_continuous_size=shape.hidden_continuous,
        epochs=1,
        max_batches=shape.max_batches,
        batch_size=shape.batch_size,
        val_batches=2,
        encoder=shape.encoder,
        min_encoder=12,
        prediction=shape.prediction,
        evaluate=shape.evaluate,
        max_eval_windows=shape.eval_windows,
        dropout=0.1,
        seed=seed,
    )
    with _training_threads():
        model, dataset, info = train_model(table, config)
    trained = time.perf_counter()
    bundle = save_bundle(model, dataset, work / "models", training_info=info)
    data_path = work / "training.parquet"
    import pyarrow.parquet as pq

    pq.write_table(table, data_path)
    report = export_bundle(
        bundle,
        data=table,
        options=ExportOptions(parity_batches=(1, 7, 90), latency_batches=()),
        source=WindowSource(windows=96),
    )
    done = time.perf_counter()
    return PreparedModel(
        model_dir=Path(bundle),
        onnx_path=report.path,
        has_bundle=True,
        origin=f"trained here ({shape.label}, {shape.max_batches} batches of "
        f"{shape.batch_size} windows, {shape.servers} simulated servers × {shape.hours} h)",
        shape=asdict(shape),
        training_info=info,
        export=report.to_dict(),
        timings_s={"train": round(trained - began, 2), "export": round(done - trained, 2)},
    )


def prepare_model(work: Path, shape: ModelShape, model_dir: Path | None) -> PreparedModel:
    """The model under test: ``model_dir`` when given, else one trained into ``work``."""
    if model_dir is not None:
        return _given(model_dir)
    return train_and_export(work, shape)
