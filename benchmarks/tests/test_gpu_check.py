"""``benchmarks/gpu_check.py`` on this CPU-only machine: its inputs, its report, its exits.

The GPU configurations cannot run here (no NVIDIA GPU, the CPU build of ONNX Runtime); what
can is everything around them, so the script does not fail on its first GPU machine for a
reason a CPU would have shown: the synthetic inputs for both fixture designs, the CPU
reference and its timings, the report of providers this build lacks, the JSON, and the exit
codes of a run (0) and of a missing model (2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "appliance" / "tests" / "fixtures"


@pytest.mark.parametrize("name", ["tiny_model.onnx", "tiny_model_steps.onnx"])
def test_synthetic_inputs_fit_the_model_and_run(name: str) -> None:
    import onnxruntime as ort
    from gpu_check import _meta, make_inputs

    session = ort.InferenceSession(str(FIXTURES / name), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    meta = _meta(session)
    feed = make_inputs(meta, shapes, 10, seed=1)
    assert set(feed) == set(shapes)
    for key, value in feed.items():
        assert [10, *shapes[key][1:]] == list(value.shape), key
    e = int(shapes["encoder_cat"][1])
    lengths = feed["encoder_lengths"]
    assert (lengths[:5] == e).all()  # half full windows
    assert lengths.min() >= meta["min_encoder_length"]
    assert lengths.max() <= e
    pad = np.arange(e)[None, :] >= lengths[:, None]
    assert not feed["encoder_cont"][pad].any()
    assert not feed["encoder_cat"][pad].any()
    for k, column in enumerate(meta["x_categoricals"]):
        classes = len(meta["categorical_encodings"][column]["classes"])
        assert feed["decoder_cat"][..., k].max() < classes, column
    out = session.run(None, feed)[0]
    assert out.shape[0] == 10
    assert np.isfinite(out).all()


def test_main_reports_cpu_and_the_providers_this_build_lacks(tmp_path: Path) -> None:
    import onnxruntime as ort
    from gpu_check import main

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a GPU build of ONNX Runtime: the GPU configurations would run")
    out = tmp_path / "gpu_check.json"
    code = main(
        ["--model", str(FIXTURES / "tiny_model_steps.onnx"), "--batches", "1,8",
         "--runs", "3", "--check-batch", "6", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    cpu = result["configs"]["cpu_fp32"]
    assert cpu["status"] == "ok"
    assert cpu["vs_cpu_fp32"]["finite"] is True
    assert cpu["vs_cpu_fp32"]["max_abs"] <= 1e-6  # a second CPU session: the same numbers
    for batch in ("1", "8"):
        timing = cpu["timings"][batch]
        assert 1 <= timing["runs"] <= 3
        assert timing["servers_per_s"] == pytest.approx(int(batch) / (timing["median_ms"] / 1e3))
    assert result["configs"]["cuda_fp32"]["status"].startswith("unavailable: CUDAExecutionProvider")
    assert result["configs"]["tensorrt_fp32"]["status"].startswith(
        "unavailable: TensorrtExecutionProvider"
    )
    assert result["configs"]["cuda_fp16"]["status"] == "skipped: no --fp16-model"
    assert result["model_meta"]["encoder_length"] == 48


def test_main_without_a_model_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpu_check import main

    assert main(["--model", str(tmp_path / "absent.onnx")]) == 2
    err = capsys.readouterr().err
    assert "model not found" in err
    assert "fleetcast export" in err
    assert "docs/EXPORT.md#gpu" in err


def _fake_check(tmp_path: Path, code: int, configs: dict | None) -> Path:
    """A stand-in for gpu_check.py (no GPU here): writes ``configs`` as its JSON, exits ``code``."""
    script = tmp_path / "fake_gpu_check.py"
    body = "" if configs is None else f"pathlib.Path(out).write_text(json.dumps({configs!r}))\n"
    script.write_text(
        "import json, pathlib, sys\n"
        "out = sys.argv[sys.argv.index('--json') + 1]\n"
        f"{body}"
        "print('CUDA failure: out of memory', file=sys.stderr)\n"
        f"sys.exit({code})\n"
    )
    return script


def test_a_failed_gpu_check_fails_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mocked, as no GPU runs here: a CUDA provider is claimed and gpu_check.py replaced. A
    check that exited 1 was a pass with no GPU figure: the suite ignored its exit code."""
    import onnxruntime as ort
    from fleetbench import gpu

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider"])
    monkeypatch.setattr(gpu, "GPU_CHECK", _fake_check(tmp_path, 1, None))
    out = gpu.run_gpu(tmp_path / "model.onnx")
    assert out["returncode"] == 1
    assert "gpu_check.py exited with code 1: CUDA failure: out of memory" in out["error"]
    # It ran but timed nothing on a GPU: the target is unmeasured, and says why.
    configs = {"configs": {"cpu_fp32": {"status": "ok", "timings": {}}}}
    monkeypatch.setattr(gpu, "GPU_CHECK", _fake_check(tmp_path, 0, configs))
    out = gpu.run_gpu(tmp_path / "model.onnx")
    assert "error" not in out
    assert out["target_values"] == {"gpu.servers_per_s@10000": None}
    assert "no GPU provider timed" in out["target_notes"]["gpu.servers_per_s@10000"]
    timed = {"configs": {"cuda_fp32": {"timings": {"10000": {"servers_per_s": 61000.0}}}}}
    monkeypatch.setattr(gpu, "GPU_CHECK", _fake_check(tmp_path, 0, timed))
    out = gpu.run_gpu(tmp_path / "model.onnx")
    assert out["target_values"] == {"gpu.servers_per_s@10000": 61000.0}
    assert out["target_notes"] == {}
