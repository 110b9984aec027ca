"""Fixtures shared by every appliance test folder (keep additions additive).

``tiny_onnx``: the committed ONNX fixture ``appliance/tests/fixtures/tiny_model.onnx``
(made by the exporter from a tiny trained bundle). Tests that need it skip while it is
missing; ``FLEETCAST_TEST_ONNX=/path/model.onnx`` points them at another file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TINY_ONNX = FIXTURES / "tiny_model.onnx"


@pytest.fixture(scope="session")
def tiny_onnx() -> Path:
    """Path of the tiny ONNX model fixture (skips the test when it does not exist)."""
    override = os.environ.get("FLEETCAST_TEST_ONNX")
    path = Path(override) if override else TINY_ONNX
    if not path.is_file():
        pytest.skip(f"ONNX fixture {path.name} not present yet (exporter issue)")
    return path


@pytest.fixture
def model_dir(tmp_path: Path, tiny_onnx: Path) -> Path:
    """A model folder ``<tmp>/models/current/`` holding the tiny fixture as ``model.onnx``
    (plus its ``model.onnx.sha256`` sidecar)."""
    folder = tmp_path / "models" / "current"
    folder.mkdir(parents=True)
    shutil.copyfile(tiny_onnx, folder / "model.onnx")
    sidecar = tiny_onnx.with_name(tiny_onnx.name + ".sha256")
    if sidecar.is_file():  # the integrity sidecar, renamed with the model
        digest = sidecar.read_text().split()[0]
        (folder / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    return folder
