"""``fleetcast export`` end to end through the real CLI, and the Triton repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from .cli_runs import copy_bundle, run_export, write_metrics

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

    from fleetcast.exporter.export import ExportReport


def test_cli_exports_into_the_bundle_with_triton(
    bundle_dir: Path,
    toy_table: pa.Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    input_scaling: str,
) -> None:
    bundle = copy_bundle(bundle_dir, tmp_path)
    data = write_metrics(toy_table, tmp_path)
    triton = tmp_path / "triton"
    code = run_export(
        [
            "--bundle",
            str(bundle),
            "--data",
            str(data),
            "--parity-batches",
            "1,7",
            "--optimization",
            "basic",
            "--triton",
            str(triton),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert (bundle / "model.onnx").is_file()
    assert (bundle / "model.onnx.sha256").is_file()
    assert "parity ORT CPU vs PyTorch" in out
    assert "batch     7" in out
    assert "ORT CPU latency: batch 1:" in out
    assert "ORT optimisation level basic" in out
    config = (triton / "fleetcast_tft" / "config.pbtxt").read_text()
    assert (triton / "fleetcast_tft" / "1" / "model.onnx").read_bytes() == (
        bundle / "model.onnx"
    ).read_bytes()
    assert 'name: "fleetcast_tft"' in config
    assert 'backend: "onnxruntime"' in config
    assert "dynamic_batching" in config
    # Reals: encoder_length, 4 calendar features, 4 metrics, and with window input scaling
    # each metric's window centre and scale, with day-ago inputs each metric a day earlier.
    n_real = {"window": 17, "fixed": 9, "day_ago": 13}[input_scaling]
    assert f'name: "encoder_cont"\n    data_type: TYPE_FP32\n    dims: [ 48, {n_real} ]' in config
    assert "reshape: { shape: [ ] }" in config  # encoder_lengths is [batch]
    assert 'name: "quantiles"\n    data_type: TYPE_FP32\n    dims: [ 4, 12, 3 ]' in config


@pytest.mark.parametrize("input_scaling", ["day_ago"], indirect=True)
def test_cli_prints_its_report_not_the_libraries_warnings(
    bundle_dir: Path, toy_table: pa.Table, tmp_path: Path, input_scaling: str
) -> None:
    # Its own process, as an operator runs it: torch reads its C++ log level when it loads,
    # and Lightning, pytorch-forecasting, scikit-learn and torch's ONNX exporter each warned
    # on every export (26 lines before the report; fleetcast.trainer.quiet).
    bundle = copy_bundle(bundle_dir, tmp_path)
    data = write_metrics(toy_table, tmp_path)
    env = {
        k: v for k, v in os.environ.items() if k not in ("TORCH_CPP_LOG_LEVEL", "PYTHONWARNINGS")
    }
    argv = ["export", "--bundle", str(bundle), "--data", str(data), "--parity-batches", "1,7",
            "--optimization", "basic", "--no-rounding-floor"]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from fleetcast.contract.cli import main; "
         "sys.exit(main(sys.argv[1:]))", *argv],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "parity ORT CPU vs PyTorch" in run.stdout
    assert "step graphs embedded" in run.stdout  # the graphs whose LSTMs torch warned about
    noise = [line for line in run.stderr.splitlines() if "arning" in line or "warn(" in line]
    assert noise == [], "\n".join(noise)


def test_cli_refuses_a_missing_bundle_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleetcast.contract.cli import main

    code = main(["export", "--bundle", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 1
    assert "Cannot load the bundle" in err
    assert "Traceback" not in err
    assert err.count("Fix:") == 1  # the bundle's own message, not wrapped in a second one
    assert err.count("Why it matters:") == 1
    assert "See docs/MODEL_FORMAT.md" in err


def test_cli_rejects_bad_parity_batches(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetcast.contract.cli import main

    assert main(["export", "--parity-batches", "0,x"]) == 2
    assert "positive integers" in capsys.readouterr().err


def test_report_json_is_serialisable(exported: ExportReport) -> None:
    data = json.loads(json.dumps(exported.to_dict()))
    assert data["parity"][0]["batch"] == 1
    assert data["tolerance"] == {"rtol": 1e-4, "atol": 1e-4}
    assert data["fp16_path"].endswith("model.fp16.onnx")
