"""Keep ``fleetcast train`` and ``fleetcast export`` readable: our lines, not the libraries'.

The libraries the trainer and the exporter drive print warnings an operator cannot act on
and that our own checks already answer: Lightning on how pytorch-forecasting saves its
hyperparameters, pytorch-forecasting on read-only numpy arrays it only reads, scikit-learn
on feature names of scalers pytorch-forecasting fitted, and torch's TorchScript ONNX
exporter, in C++, that the shape inference of ``PackPadded`` "may result in wrong shape
inference". The exporter's parity check compares the written graph with the PyTorch model
on real windows at several batch sizes, and refuses a graph that differs: that check, not
the warning, decides whether the graph is right (docs/EXPORT.md#parity).

Only these known messages are silenced; any other warning still prints. Set
``TORCH_CPP_LOG_LEVEL=WARNING`` to see torch's C++ warnings again.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["KNOWN_NOISE", "quiet_libraries"]

KNOWN_NOISE: tuple[str, ...] = (
    r"Attribute '.*' is an instance of `nn.Module`",
    r".*does not have many workers",
    r".*isinstance\(treespec, LeafSpec\)",
    r"Found \d+ unknown classes",
    r".*feature names.*",
    # pytorch-forecasting's target normalizer wraps pandas' read-only arrays; it only
    # reads them.
    r"The given NumPy array is not writable",
    # Servers too short for a window: the trainer names them (null_short_servers) or
    # refuses the data (windows_or_refuse), with a way out.
    r"Min encoder length and/or min_prediction_idx",
    # An earlier run's checkpoints: the trainer says what happens to them.
    r"Checkpoint directory .* exists and is not empty",
)
"""Warning messages (regular expressions matched at the start) that are silenced."""


def quiet_libraries() -> None:
    """Silence :data:`KNOWN_NOISE`, Lightning's info logs and torch's C++ warnings.

    Call it from a command's handler before torch is imported: torch reads
    ``TORCH_CPP_LOG_LEVEL`` once, when it loads (a value already set is kept).
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    for pattern in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    import lightning.pytorch  # noqa: F401 - it configures its loggers on import; override after

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
