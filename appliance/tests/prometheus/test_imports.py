"""The Prometheus/alerting modules stay light: no training stack, no client library."""

from __future__ import annotations

import subprocess
import sys

MODULES = (
    "fleetcast.appliance.sources",
    "fleetcast.appliance.sources.promql",
    "fleetcast.appliance.sources.prometheus",
    "fleetcast.appliance.alerting",
    "fleetcast.appliance.exposition",
)
HEAVY = ("torch", "pandas", "lightning", "pytorch_forecasting", "onnx", "prometheus_client")


def test_fresh_interpreter_imports_nothing_heavy() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}: importlib.import_module(m)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
