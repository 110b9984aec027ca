"""Export: the file, its checks, parity at mixed lengths, and the refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from typing import TYPE_CHECKING

import numpy as np
import pytest

from fleetcast.exporter.graph import INPUT_NAMES
from fleetcast.exporter.metadata import read_metadata

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

    from fleetcast.exporter.export import ExportReport


def _windows(bundle_dir: Path, table: pa.Table) -> dict:
    from fleetcast.exporter.bundle_export import WindowSource, parity_windows
    from fleetcast.trainer.bundle import load_bundle

    return parity_windows(load_bundle(bundle_dir), table, WindowSource(windows=64, seed=3))


def test_file_is_valid_with_sidecar_and_dynamic_batch(exported: ExportReport) -> None:
    import onnx

    data = exported.path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert exported.sha256 == digest
    sidecar = exported.path.with_name("model.onnx.sha256").read_text()
    assert sidecar == f"{digest}  model.onnx\n"
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in proto.graph.output] == ["quantiles"]
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*proto.graph.input, *proto.graph.output)
    }
    assert dims["encoder_cat"] == ["batch", 48, 3]
    assert dims["encoder_lengths"] == ["batch"]
    assert dims["decoder_cont"][:2] == ["batch", 12]
    assert dims["quantiles"][0] == "batch"
    # debug metadata stripped
    assert not any(n.doc_string or len(n.metadata_props) for n in proto.graph.node)
    assert len(data) < 500_000  # tiny model with step graphs; catches debug bloat


def test_parity_report_passes_at_mixed_lengths(exported: ExportReport) -> None:
    assert [p.batch for p in exported.parity] == [1, 7, 90]
    assert all(p.passed for p in exported.parity)
    assert max(p.max_abs for p in exported.parity) < 1e-4
    assert max(p.max_rel_range for p in exported.parity) < 1e-4
    big = exported.parity[-1]
    assert big.lengths[0] < big.lengths[1] == 48  # short and full windows in one batch
    assert exported.latency_ms[1] > 0
    assert "parity ORT CPU vs PyTorch" in exported.format()


def test_report_gives_float32_rounding_floor_against_float64(exported: ExportReport) -> None:
    floor = exported.floor
    assert floor is not None
    assert floor.batch == 90
    # float32 is never exact: PyTorch's own float32 forward differs from float64 ...
    assert 0 < floor.pytorch.max_abs < 1e-3
    # ... and ONNX Runtime is as close to float64 as PyTorch float32 is (same order).
    assert floor.onnx.max_abs < 10 * floor.pytorch.max_abs + 1e-6
    assert "rounding floor at batch 90" in exported.format()
    assert exported.to_dict()["rounding_floor"]["pytorch_max_abs"] == floor.pytorch.max_abs


def test_relative_parity_is_measured_against_each_targets_range() -> None:
    from fleetcast.exporter.parity import compare, errors

    expected = np.zeros((2, 2, 3, 3))
    expected[:, 0] = 50.0  # a target around 50 ...
    expected[0, 0, 0, 0] = 0.001  # ... with one quantile near zero (float32 cancellation)
    expected[:, 1] = 200.0
    actual = expected.copy()
    actual[0, 0, 0, 0] += 5e-4  # 50 % of a value near zero, 1e-5 of the target's range
    err = errors(actual, expected, rtol=1e-4, atol=1e-4)
    assert err.max_abs == pytest.approx(5e-4)
    assert err.max_rel == pytest.approx(5e-4 / 1e-2)  # element-wise, floored at 0.01
    assert err.max_rel_range == pytest.approx(5e-4 / 50.0)
    assert err.share_within == pytest.approx(35 / 36)  # beyond 1e-4 + 1e-4·|ref|: reported
    assert compare(actual, expected, rtol=1e-4, atol=1e-4)[2]  # ... and passes the gate
    # 0.03 on a value of 200 is 1.5e-4 of that target's range: refused.
    actual[1, 1, 2, 2] += 0.03
    assert not compare(actual, expected, rtol=1e-4, atol=1e-4)[2]
    # Within atol + rtol·|ref| per element but above rtol of the range: refused too.
    small = np.full((1, 1, 1, 3), 0.5)
    assert errors(small + 9e-5, small, rtol=1e-4, atol=1e-4).share_within == 1.0
    assert not compare(small + 9e-5, small, rtol=1e-4, atol=1e-4)[2]
    # Non-finite values and a wrong shape never pass.
    assert not compare(small * np.nan, small, rtol=1e-4, atol=1e-4)[2]
    assert not compare(small[..., :2], small, rtol=1e-4, atol=1e-4)[2]


def test_ort_matches_pytorch_when_every_window_is_short(
    exported: ExportReport, bundle_dir: Path, toy_table: pa.Table
) -> None:
    """Lengths all below E (the batch's longest window is not E) and batch sizes 1 and 7."""
    import onnxruntime as ort
    import torch

    from fleetcast.exporter.graph import reference_forward
    from fleetcast.trainer.bundle import load_bundle

    model = load_bundle(bundle_dir).model
    windows = _windows(bundle_dir, toy_table)
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for size in (1, 7):
        batch = {k: v[:size].clone() for k, v in windows.items()}
        lengths = torch.as_tensor(rng.integers(12, 40, size))
        batch["encoder_lengths"] = lengths
        for i, length in enumerate(lengths.tolist()):
            batch["encoder_cat"][i, length:] = 0
            batch["encoder_cont"][i, length:] = 0.0
        out = session.run(None, {k: batch[k].numpy() for k in INPUT_NAMES})[0]
        ref = reference_forward(model, *(batch[k] for k in INPUT_NAMES)).numpy()
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
        # a window's forecast does not depend on the other windows of the batch
        single = session.run(None, {k: batch[k][-1:].numpy() for k in INPUT_NAMES})[0]
        np.testing.assert_allclose(single[0], out[-1], rtol=1e-5, atol=1e-5)


def test_fp16_variant_is_written_and_close(exported: ExportReport) -> None:
    assert exported.fp16_path is not None
    assert exported.fp16_path.exists()
    assert exported.fp16_path.name == "model.fp16.onnx"
    assert all(p.passed for p in exported.fp16_parity)
    assert 0 < max(p.max_rel for p in exported.fp16_parity) < 2e-2


def test_refuses_a_corrupted_bundle(bundle_dir: Path, toy_table: pa.Table, tmp_path: Path) -> None:
    from fleetcast.exporter.bundle_export import export_bundle
    from fleetcast.exporter.export import ExportError

    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    weights = broken / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00\x01\x02\x03\x04\x05\x06\x07"
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="Cannot load the bundle") as info:
        export_bundle(broken, data=toy_table)
    assert "SHA-256" in str(info.value)
    assert not (broken / "model.onnx").exists()


def test_refuses_when_parity_fails(bundle_dir: Path, toy_table: pa.Table, tmp_path: Path) -> None:
    """Perturbed weights in the graph: the parity check must refuse and write nothing.

    Every float weight matrix is perturbed: the tiny model's output layer starts at zero
    (persistence) and barely moves in its few batches, so one perturbed matrix far from
    it may change the output by less than the gate, depending on how the run trained."""
    import onnx
    from onnx import numpy_helper

    from fleetcast.exporter.bundle_export import WindowSource, export_bundle
    from fleetcast.exporter.export import ExportError, ExportOptions

    def perturb(proto: onnx.ModelProto) -> None:
        for init in proto.graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) >= 2:
                array = numpy_helper.to_array(init) * 1.5 + 0.1
                init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), init.name))

    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="differs from its reference"):
        export_bundle(
            bundle_dir,
            data=toy_table,
            out=out,
            options=ExportOptions(parity_batches=(7,), latency_batches=()),
            source=WindowSource(windows=16),
            graph_hook=perturb,
        )
    assert not out.exists()
    assert not out.with_name("model.onnx.sha256").exists()


def test_refuses_missing_data(bundle_dir: Path, tmp_path: Path) -> None:
    from fleetcast.exporter.bundle_export import export_bundle
    from fleetcast.exporter.export import ExportError

    with pytest.raises(ExportError, match="Training data not found"):
        export_bundle(bundle_dir, data=tmp_path / "nope.parquet")


@pytest.mark.slow
def test_parity_at_batch_1000_with_mixed_lengths(
    exported: ExportReport, bundle_dir: Path, toy_table: pa.Table
) -> None:
    from fleetcast.exporter.parity import ort_session, parity_check
    from fleetcast.trainer.bundle import load_bundle

    session = ort_session(exported.path.read_bytes(), "all")
    windows = _windows(bundle_dir, toy_table)
    (result,) = parity_check(
        session, load_bundle(bundle_dir).model, windows, batches=(1000,), rtol=1e-4, atol=1e-4
    )
    assert result.passed
    assert result.lengths[0] < 24
    assert result.lengths[1] == 48
    assert result.max_rel < 1e-4


def test_a_model_that_itself_overflows_is_named_so_and_the_worst_batch_is_the_failing_one() -> None:
    """A legal 3.4e38 in the training data gave a model whose own forecasts are inf: the
    refusal quoted a passing batch as the worst (max() skips past NaN) and sent the user to
    check library versions."""
    from fleetcast.exporter.export import _failed
    from fleetcast.exporter.parity import ParityResult, errors

    inf = np.full((1, 1, 1, 3), np.inf)
    assert errors(inf, inf, rtol=1e-4, atol=1e-4).reference_finite is False
    ok = ParityResult(1, 4.6e-5, 1e-5, 1e-7, True, (48, 48))
    nan = ParityResult(7, float("nan"), float("nan"), float("nan"), False, (24, 48), 0.0, False)
    text = str(_failed("The ONNX graph on ONNX Runtime CPU", [ok, nan], 1e-4, 1e-4))
    assert "the trained model itself forecasts inf or NaN" in text
    assert "extreme values in the training data" in text
    assert "versions" not in text
    # The float16 checks compare with the float32 graph: not the model's own overflow.
    fp16 = str(_failed("The float16 graph", [ok, nan], 1e-2, 1e-2, "Export without --fp16.",
                       model_reference=False))  # fmt: skip
    assert "itself" not in fp16
    assert "Export without --fp16." in fp16
    # A graph that differs (a finite reference): the worst *failing* batch is quoted.
    bad = ParityResult(90, float("nan"), float("nan"), float("nan"), False, (24, 48))
    text = str(_failed("The ONNX graph on ONNX Runtime CPU", [ok, bad], 1e-4, 1e-4))
    assert "at batch sizes [90]" in text
    assert "max abs nan" in text
    assert "4.6e-05" not in text


def test_untrained_profiles_travel_to_the_appliance(
    exported: ExportReport, trained: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    """The trainer's profiles_untrained reach the ONNX file, and the appliance names them."""
    import logging

    from fleetcast.appliance.model import load_model

    untrained = trained[2]["profiles_untrained"]
    # four servers: database, ml_compute, data_ingest, web_api
    assert untrained == ["conductor_mgmt", "generic", "risk_analytics"]
    meta = read_metadata(exported.path)
    assert json.loads(meta["fleetcast.provenance"])["profiles_untrained"] == untrained
    with caplog.at_level(logging.WARNING, logger="fleetcast.appliance.model"):
        model = load_model(exported.path.parent, step_cache=False)
    try:
        # in the contract's profile order
        assert model.info()["profiles_untrained"] == ["conductor_mgmt", "risk_analytics", "generic"]
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("conductor_mgmt, risk_analytics, generic" in m for m in warned)
        # Four servers: one was nulled to train the unknown-server embedding.
        assert trained[2]["unknown_server_trained"] is True
        assert model.info()["unknown_server_trained"] is True
        assert not any("unknown-server embedding" in m for m in warned)
    finally:
        model.close()


def test_an_untrained_unknown_server_embedding_is_warned_of_at_load(
    exported: ExportReport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A model trained on one server forecasts every other server from an embedding no
    data trained: the trainer said so, the appliance did not."""
    import logging

    import onnx

    from fleetcast.appliance.model import load_model

    proto = onnx.load(str(exported.path))
    for prop in proto.metadata_props:
        if prop.key == "fleetcast.provenance":
            prop.value = json.dumps({**json.loads(prop.value), "unknown_server_trained": False})
    folder = tmp_path / "one-server"
    folder.mkdir()
    onnx.save(proto, str(folder / "model.onnx"))
    with caplog.at_level(logging.WARNING, logger="fleetcast.appliance.model"):
        model = load_model(folder, step_cache=False)
    try:
        assert model.info()["unknown_server_trained"] is False
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("unknown-server embedding was never trained" in m for m in warned)
    finally:
        model.close()
