"""The compute core imports without torch/pandas/onnx and does no work at import time."""

from __future__ import annotations

import subprocess
import sys

MODULES = (
    "engine",
    "engine_types",
    "model",
    "buffers",
    "windows",
    "risk",
    "forecast",
    "alerts",
    "history",
)


def test_engine_modules_import_light() -> None:
    code = (
        "import sys\n"
        + "".join(f"import fleetcast.appliance.{m}\n" for m in MODULES)
        + "bad = ['torch', 'lightning', 'pandas', 'pytorch_forecasting', 'onnx', 'numba', "
        "'onnxruntime']\n"
        "print(','.join(sorted(m for m in bad if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    # numba and onnxruntime are imported lazily (first ingest / model load), the rest never
    assert out.stdout.strip() == ""
