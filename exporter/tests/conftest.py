"""Shared fixtures: a tiny fleet, a tiny bundle trained by the project's trainer, its export.

Trained and exported once per session and input design (seconds): hidden size 8, encoder
48 with a 12-step minimum (mixed lengths), prediction 12. Every test that uses them runs for
three designs: ``window`` input scaling (no step graphs), ``fixed`` (step graphs embedded)
and ``day_ago`` (fixed, plus each metric's value a day earlier as a known input).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

    from fleetcast.exporter.export import ExportReport

PARITY_BATCHES = (1, 7, 90)


@pytest.fixture(scope="session")
def toy_table() -> pa.Table:
    """Four servers, three days, with a gap, null states and an offline stretch."""
    from fleetcast.trainer.toydata import make_toy_table

    return make_toy_table(hours=72, seed=0)


@pytest.fixture(scope="session", params=["window", "fixed", "day_ago"])
def input_scaling(request: pytest.FixtureRequest) -> str:
    """The session model's input design: ``window``, ``fixed`` or ``day_ago`` (fixed)."""
    return str(request.param)


@pytest.fixture(scope="session")
def trained(toy_table: pa.Table, input_scaling: str) -> tuple:
    """(model, training dataset, training info) of a two-batch training run."""
    from fleetcast.trainer.train import TrainConfig, train_model

    config = TrainConfig(
        hidden_size=8,
        attention_head_size=1,
        hidden_continuous_size=4,
        epochs=1,
        max_batches=2,
        val_batches=1,
        batch_size=16,
        encoder=48,
        min_encoder=12,
        prediction=12,
        evaluate=False,
        accelerator="cpu",
        dropout=0.0,
        input_scaling="window" if input_scaling == "window" else "fixed",
        day_ago=input_scaling == "day_ago",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_model(toy_table, config)


@pytest.fixture(scope="session")
def bundle_dir(trained: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model saved as a bundle by the trainer's save_bundle."""
    from fleetcast.trainer.bundle import save_bundle

    model, dataset, info = trained
    return save_bundle(model, dataset, tmp_path_factory.mktemp("models"), training_info=info)


@pytest.fixture(scope="session")
def exported(
    bundle_dir: Path, toy_table: pa.Table, tmp_path_factory: pytest.TempPathFactory
) -> ExportReport:
    """The bundle exported (float32 and float16) into a temporary folder."""
    from fleetcast.exporter.bundle_export import WindowSource, export_bundle
    from fleetcast.exporter.export import ExportOptions

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_bundle(
            bundle_dir,
            data=toy_table,
            out=out,
            options=ExportOptions(
                parity_batches=PARITY_BATCHES, fp16=True, latency_batches=(1,), latency_runs=2
            ),
            source=WindowSource(windows=96),
        )
