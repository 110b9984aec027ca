"""The float16 variant: forecasts beyond float16's range (65,504) stay finite, and the gate checks it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from fleetcast.exporter.graph import INPUT_NAMES

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

    from fleetcast.exporter.export import ExportReport


def _windows(bundle_dir: Path, table: pa.Table) -> dict:
    from fleetcast.exporter.bundle_export import WindowSource, parity_windows
    from fleetcast.trainer.bundle import load_bundle

    return parity_windows(load_bundle(bundle_dir), table, WindowSource(windows=16, seed=1))


def test_extreme_windows_move_only_the_log1p_centres() -> None:
    import torch

    from fleetcast.exporter.parity import extreme_windows

    windows = {
        "encoder_cont": torch.ones(2, 3, 1),
        "target_scale": torch.ones(2, 4, 2),
    }
    out = extreme_windows(windows, ["identity", "identity", "log1p", "log1p"], 1e5)
    assert out["encoder_cont"] is windows["encoder_cont"]
    assert torch.equal(out["target_scale"][:, :2], windows["target_scale"][:, :2])
    assert torch.equal(out["target_scale"][:, 2:, 1], windows["target_scale"][:, 2:, 1])
    assert np.allclose(out["target_scale"][:, 2:, 0].numpy(), np.log1p(1e5))
    assert torch.equal(windows["target_scale"], torch.ones(2, 4, 2))  # not modified


@pytest.mark.parametrize("value", [1e5, 1e7])
def test_fp16_forecasts_above_float16_range_stay_finite(
    exported: ExportReport, bundle_dir: Path, toy_table: pa.Table, value: float
) -> None:
    """latency_ms above 65 s / disk_io_mb_s above 65 GB/s: float16 would give inf."""
    import onnxruntime as ort

    from fleetcast.exporter.metadata import read_spec
    from fleetcast.exporter.parity import extreme_windows

    assert exported.fp16_path is not None
    spec = read_spec(exported.path)
    windows = extreme_windows(
        _windows(bundle_dir, toy_table), [spec.target_transforms[t] for t in spec.targets], value
    )
    feed = {k: windows[k].numpy() for k in INPUT_NAMES}
    providers = ["CPUExecutionProvider"]
    full = ort.InferenceSession(str(exported.path), providers=providers).run(None, feed)[0]
    half = ort.InferenceSession(str(exported.fp16_path), providers=providers).run(None, feed)[0]
    assert full[:, 2:].max() > 65_504  # the log1p targets' forecasts are beyond float16
    assert np.isfinite(half).all()
    per_target = np.abs(half - full).max(axis=(0, 2, 3)) / np.abs(full).max(axis=(0, 2, 3))
    assert per_target.max() < 2e-2


def test_fp16_report_includes_the_extreme_check(exported: ExportReport) -> None:
    assert len(exported.fp16_extreme) == 1
    assert exported.fp16_extreme[0].passed
    assert exported.to_dict()["fp16_extreme_parity"][0]["passed"]
    assert "near 1e+06" in exported.format()


def test_fp16_gate_refuses_a_graph_that_overflows(
    bundle_dir: Path, toy_table: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A float16 graph whose de-normalisation is float16 (the converter's plain result) passes
    on the training windows but gives inf beyond 65,504: the export must refuse it."""
    from fleetcast.exporter import export as export_module
    from fleetcast.exporter.bundle_export import WindowSource, export_bundle
    from fleetcast.exporter.export import ExportError, ExportOptions
    from fleetcast.exporter.float16 import _convert
    from fleetcast.exporter.onnx_graph import sort_nodes

    def plain(proto):  # type: ignore[no-untyped-def]
        converted = _convert(proto)
        sort_nodes(converted.graph)
        return converted

    monkeypatch.setattr(export_module, "to_float16", plain)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="float16 graph on forecasts near") as info:
        export_bundle(
            bundle_dir,
            data=toy_table,
            out=out,
            options=ExportOptions(
                parity_batches=(7,), fp16=True, latency_batches=(), rounding_floor=False
            ),
            source=WindowSource(windows=16),
        )
    assert "Export without --fp16" in info.value.fix  # not "check the versions"
    assert not out.exists()
    assert not out.with_name("model.fp16.onnx").exists()


def test_the_tail_is_found_by_position_not_by_node_name() -> None:
    """Unnamed nodes (empty names are legal ONNX) must not all join the float32 tail."""
    from onnx import TensorProto, helper

    from fleetcast.exporter.float16 import downstream_nodes

    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"]),  # the body: no name
            helper.make_node("Mul", ["h", "target_scale"], ["m"]),  # the tail: no name either
            helper.make_node("Add", ["m", "target_scale"], ["y"]),
            helper.make_node("Neg", ["x"], ["z"]),
        ],
        "g",
        [helper.make_tensor_value_info(n, f32, [2]) for n in ("x", "target_scale")],
        [helper.make_tensor_value_info(n, f32, [2]) for n in ("y", "z")],
    )
    assert downstream_nodes(graph, ("target_scale",)) == {1, 2}
