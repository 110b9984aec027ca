"""fleetcast.trainer — TFT training, the pickle-free bundle, accuracy against baselines.

Modules (heavy imports happen inside them, not here):

- :mod:`fleetcast.trainer.dataset` — contract table → frame → TimeSeriesDataSet (the features);
- :mod:`fleetcast.trainer.normalizer` — the window-relative target normalizer;
- :mod:`fleetcast.trainer.train` — :func:`train_model` and :class:`TrainConfig`;
- :mod:`fleetcast.trainer.bundle` — :func:`save_bundle`, :func:`load_bundle`;
- :mod:`fleetcast.trainer.predict` — pytorch-forecasting ``predict()`` for chosen windows;
- :mod:`fleetcast.trainer.evaluate` — accuracy on the held-out tail against baselines;
- :mod:`fleetcast.trainer.commands` — the ``fleetcast train`` subcommand.

``load_bundle``, ``save_bundle``, ``train_model``, ``TrainConfig`` and ``predict_windows``
are importable from this package (loaded on first use).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["TrainConfig", "load_bundle", "predict_windows", "save_bundle", "train_model"]

_LAZY = {
    "load_bundle": "fleetcast.trainer.bundle",
    "save_bundle": "fleetcast.trainer.bundle",
    "train_model": "fleetcast.trainer.train",
    "TrainConfig": "fleetcast.trainer.train",
    "predict_windows": "fleetcast.trainer.predict",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fleetcast.trainer' has no attribute {name!r}")
    return getattr(import_module(module), name)
