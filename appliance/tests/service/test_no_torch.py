"""The appliance never imports torch, lightning, pandas, pytorch-forecasting or onnx."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "lightning", "pandas", "pytorch_forecasting", "onnx")

_PROBE = """
import json, sys
from pathlib import Path
import fleetcast.appliance.commands as commands
import fleetcast.appliance.app as app_module
import fleetcast.appliance.engine, fleetcast.appliance.model, fleetcast.appliance.buffers
import fleetcast.appliance.windows, fleetcast.appliance.risk, fleetcast.appliance.forecast
import fleetcast.appliance.demo, fleetcast.appliance.persistence, fleetcast.appliance.daemon
import fleetcast.contract.simulate
from fleetcast.appliance.settings import build_settings
settings = build_settings({"model_dir": Path("models/latest")}, env={})
app_module.create_app(settings)
commands.register_serve(__import__("argparse").ArgumentParser().add_subparsers())
import onnxruntime  # the runtime is allowed; the onnx package is not
print(json.dumps(sorted(m for m in sys.modules)))
"""


def test_fresh_interpreter_imports_no_training_stack() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    top = {m.split(".")[0] for m in modules}
    leaked = sorted(top & set(FORBIDDEN))
    assert leaked == [], f"the appliance imported {leaked}"
    assert "fleetcast.appliance.app" in modules
    assert "onnxruntime" in top
