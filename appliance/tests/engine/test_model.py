"""Model loading: providers, session options, and every refusal with a clear message.

Corrupt copies are made by editing the metadata bytes in place (same length, so the
protobuf stays valid): the appliance's test environment has no ``onnx`` package.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fleetcast.appliance.execution import (
    MAX_CPU_WORKERS,
    choose_providers,
    default_batch_size,
    plan_workers,
    usable_cores,
)
from fleetcast.appliance.model import ModelError, load_model
from fleetcast.contract.encoder import server_id

TOY = Path(__file__).parent / "fixtures" / "toy_model.onnx"


def _copy(tmp_path: Path, edit: tuple[bytes, bytes, bytes] | None = None) -> Path:
    """Copy the toy model; ``edit`` = (key, old, new): replace ``old`` after ``key`` once."""
    data = TOY.read_bytes()
    if edit is not None:
        key, old, new = edit
        if len(old) != len(new):
            raise ValueError("same-length edits only")
        at = data.index(key)
        pos = data.index(old, at)
        data = data[:pos] + new + data[pos + len(old) :]
    (tmp_path / "model.onnx").write_bytes(data)
    return tmp_path


def test_loads_with_cpu_and_reports_providers(tmp_path: Path) -> None:
    model = load_model(_copy(tmp_path))
    assert model.providers[-1] == "CPUExecutionProvider"
    assert model.providers == model.session.get_providers()
    info = model.info()
    assert info["providers"] == model.providers
    assert info["encoder_length"] == 24
    assert "path" not in json.dumps(info)
    opts = model.session.get_session_options()
    assert opts.graph_optimization_level.name == "ORT_ENABLE_ALL"
    assert opts.execution_mode.name == "ORT_SEQUENTIAL"
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_default_batch_is_small_on_cpu_and_large_on_a_gpu() -> None:
    assert default_batch_size(["CPUExecutionProvider"]) == 16
    assert default_batch_size(["CPUExecutionProvider"], step_cache=True) == 8
    assert default_batch_size(["CUDAExecutionProvider", "CPUExecutionProvider"]) == 8192
    assert default_batch_size(["TensorrtExecutionProvider", "CPUExecutionProvider"]) == 8192


def test_batches_follow_the_configured_size_or_the_providers_default(tmp_path: Path) -> None:
    model = load_model(_copy(tmp_path), ["CPUExecutionProvider"])
    assert model.bounds(35) == [(0, 16), (16, 32), (32, 35)]
    assert model.bounds(17, step_cache=True) == [(0, 8), (8, 16), (16, 17)]
    assert model.bounds(25, 10, step_cache=True) == [(0, 10), (10, 20), (20, 25)]
    assert model.bounds(0) == []


def test_cpu_runs_one_single_threaded_call_per_core_unless_threads_are_set() -> None:
    cpu = ["CPUExecutionProvider"]
    assert plan_workers(cpu, 0) == (min(usable_cores(), MAX_CPU_WORKERS), 1)
    assert plan_workers(cpu, 2) == (1, 2)  # an explicit --intra-op-threads: the old way
    assert plan_workers(["CUDAExecutionProvider", *cpu], 0) == (1, 0)


def test_parallel_workers_give_the_sequential_result_in_order(tmp_path: Path) -> None:
    import numpy as np

    auto = load_model(_copy(tmp_path))
    assert auto.workers == min(usable_cores(), MAX_CPU_WORKERS)
    assert auto.session.get_session_options().intra_op_num_threads == 1
    assert auto.info()["inference_workers"] == auto.workers
    one = load_model(tmp_path, intra_op_threads=1)
    assert one.workers == 1
    rng = np.random.default_rng(5)
    feeds = []
    for b in (3, 1, 4, 2, 5):  # uneven batches, more of them than workers
        feed = {}
        for inp in one.session.get_inputs():
            shape = [b if isinstance(d, str) else d for d in inp.shape]
            if "int" in inp.type:
                feed[inp.name] = np.zeros(shape, dtype=np.int64)
            else:
                feed[inp.name] = rng.normal(size=shape).astype(np.float32)
        feed["encoder_lengths"][:] = one.spec.encoder_length
        feed["target_scale"][..., 1] = np.abs(feed["target_scale"][..., 1]) + 1.0
        feeds.append(feed)
    auto.workers = 2  # two workers even on a one-core runner
    parallel = auto.run_all(feeds)
    sequential = [one.run(f) for f in feeds]
    assert [p.shape[0] for p in parallel] == [3, 1, 4, 2, 5]
    for p, q in zip(parallel, sequential, strict=True):
        np.testing.assert_array_equal(p, q)
    auto.close()
    auto.close()  # idempotent


def test_provider_order_is_filtered_by_availability() -> None:
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(
        None, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    ) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(("TensorrtExecutionProvider",), ["CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]


def test_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"holds no model\.onnx\..*Fix: Export one"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match=r"The model directory '(.+)' does not exist\.") as info:
        load_model(tmp_path / "nowhere")
    assert f"'{tmp_path / 'nowhere'}'" in str(info.value)  # the whole path: a typo shows


def test_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"ONNX Runtime cannot open model\.onnx"):
        load_model(tmp_path)


def test_refuses_another_contract_major_version(tmp_path: Path) -> None:
    d = _copy(tmp_path, (b"fleetcast.contract_version", b'"1.0.0"', b'"2.0.0"'))
    with pytest.raises(ModelError, match=r"contract 2\.0\.0.*major versions differ") as err:
        load_model(d)
    assert "docs/DATA_CONTRACT.md#versioning" in str(err.value)


def test_a_minor_contract_difference_is_accepted(tmp_path: Path) -> None:
    d = _copy(tmp_path, (b"fleetcast.contract_version", b'"1.0.0"', b'"1.9.0"'))
    assert load_model(d).spec.contract_version == "1.9.0"


def test_refuses_missing_metadata(tmp_path: Path) -> None:
    d = _copy(tmp_path, (b"fleetcast.x_reals", b"fleetcast.x_reals", b"fleetcast.y_reals"))
    with pytest.raises(ModelError, match=r"no 'fleetcast\.x_reals' entry") as err:
        load_model(d)
    assert "fleetcast export" in str(err.value)


def test_refuses_a_step_other_than_the_contract(tmp_path: Path) -> None:
    d = _copy(tmp_path, (b"fleetcast.step_seconds", b"300", b"600"))
    with pytest.raises(ModelError, match="incompatible with this data contract"):
        load_model(d)


def test_refuses_a_weights_hash_mismatch(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(ModelError, match=r"model\.safetensors beside the model has SHA-256"):
        load_model(d)


def test_refuses_a_disagreeing_server_mapping(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    spec = load_model(d).spec
    good = {"contract_version": "1.0.0", "servers": dict(spec.server_mapping)}
    (d / "server_mapping.json").write_text(json.dumps(good))
    assert load_model(d).spec.server_mapping == good["servers"]
    bad = dict(good["servers"])
    bad.pop("ppweb001")
    bad["ppweb999"] = server_id("ppweb999")
    (d / "server_mapping.json").write_text(json.dumps({"servers": bad}))
    with pytest.raises(ModelError, match=r"disagrees.*\['ppweb999'\].*\['ppweb001'\]") as err:
        load_model(d)
    assert "docs/DATA_CONTRACT.md#server-ids" in str(err.value)


def test_refuses_metadata_that_disagrees_with_the_graph(tmp_path: Path) -> None:
    d = _copy(tmp_path, (b"fleetcast.encoder_length", b"24", b"25"))
    with pytest.raises(ModelError, match=r"Expected input encoder_cat of shape \[B, 25, 3\]"):
        load_model(d)


def test_verifies_the_sha256_sidecar(tmp_path: Path) -> None:
    import hashlib

    d = _copy(tmp_path)
    digest = hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest()
    (d / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    assert load_model(d).spec.model_version == "test-1"
    (d / "model.onnx.sha256").write_text(f"{'0' * 64}  model.onnx\n")
    with pytest.raises(
        ModelError, match=r"model\.onnx has SHA-256 .* but model\.onnx\.sha256 says"
    ):
        load_model(d)


def test_refuses_quantiles_it_cannot_serve(tmp_path: Path) -> None:
    """The same check as the exporter's (``ModelSpec.validate``), by the same code."""
    d = _copy(tmp_path, (b"fleetcast.quantiles", b"[0.1, 0.5, 0.9]", b"[0.9, 0.5, 0.1]"))
    with pytest.raises(ModelError, match=r"quantiles \[0\.9, 0\.5, 0\.1\] are not two or more"):
        load_model(d)


def test_weights_the_service_user_cannot_read_are_a_warning_not_a_refusal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Bundles written before the trainer followed the umask hold a 0600 model.safetensors:
    # copied as root, the DynamicUser service could not read it and refused to start.
    from fleetcast.appliance import model as model_module

    weights = tmp_path / model_module.WEIGHTS_FILE
    weights.write_bytes(b"weights")
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == weights:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    spec = SimpleNamespace(weights_sha256="0" * 64, server_mapping={})
    with caplog.at_level(logging.WARNING):
        model_module._check_beside(tmp_path, spec)  # type: ignore[arg-type]
    assert "cannot read model.safetensors beside the model (permission denied)" in caplog.text
    monkeypatch.setattr(Path, "open", real_open)
    with pytest.raises(model_module.ModelError, match="not the same model"):
        model_module._check_beside(tmp_path, spec)  # type: ignore[arg-type]  # readable: checked
