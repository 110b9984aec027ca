"""Shared fixtures: a tiny contract-shaped fleet, a tiny trained TFT and its bundle (seconds)."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

import pytest

from fleetcast.trainer.toydata import make_toy_table

# Before torch is imported: idle OpenMP threads sleep instead of spinning (see commands.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

    from fleetcast.trainer.train import TrainConfig


def tiny_config(**overrides: object) -> TrainConfig:
    """A model and run small enough for a test: hidden 8, encoder 48, prediction 12."""
    from fleetcast.trainer.train import TrainConfig

    base = {
        "hidden_size": 8,
        "attention_head_size": 1,
        "hidden_continuous_size": 4,
        "epochs": 1,
        "max_batches": 3,
        "val_batches": 2,
        "batch_size": 16,
        "encoder": 48,
        "prediction": 12,
        "evaluate": False,
        "accelerator": "cpu",
    }
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def toy_table() -> pa.Table:
    """4 servers × 72 h with a gap, an offline stretch of zeros, level shifts, null states."""
    return make_toy_table()


@pytest.fixture(scope="session")
def trained(toy_table: pa.Table):
    """(model, dataset, info) of a 2-epoch tiny training run with the accuracy table."""
    from fleetcast.trainer.train import train_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_model(toy_table, tiny_config(epochs=2, evaluate=True))


@pytest.fixture(scope="session")
def bundle_dir(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a bundle under a fresh models/ folder."""
    from fleetcast.trainer.bundle import save_bundle

    model, dataset, info = trained
    return save_bundle(model, dataset, tmp_path_factory.mktemp("models"), training_info=info)


@pytest.fixture
def make_config():
    """The :func:`tiny_config` factory, for tests that need their own run."""
    return tiny_config
