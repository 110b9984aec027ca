"""The step graphs: embedded for fixed input scaling only, equal to the full graph, refused
when wrong (docs/MODEL_FORMAT.md#step-cache)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest

from fleetcast.contract.errors import ContractError
from fleetcast.contract.features import ModelSpec
from fleetcast.contract.step_graphs import (
    GRAPH_NAMES,
    STEP_GRAPHS_KEY,
    StepGraphs,
    composed_forward,
    interpretable_attention,
    step_stable,
)
from fleetcast.exporter.graph import INPUT_NAMES, OUTPUT_NAME

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

    from fleetcast.exporter.export import ExportReport


def _metadata(path: Path) -> dict[str, str]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def test_step_graphs_only_for_fixed_input_scaling(
    exported: ExportReport, input_scaling: str
) -> None:
    metadata = _metadata(exported.path)
    spec = ModelSpec.from_metadata(metadata)
    sources = {name: s.source for name, s in spec.real_scalers.items()}
    graphs = StepGraphs.from_metadata(metadata)
    lags = [s.lag for s in spec.real_scalers.values() if s.source == "target_day_ago"]
    assert lags == ([288] * 4 if input_scaling == "day_ago" else [])
    if input_scaling != "window":
        assert step_stable(sources)
        assert sorted(s for s in sources.values() if s == "target_level") == ["target_level"] * 4
        assert graphs is not None
        assert graphs.embedding_size == 8
        assert [p.passed for p in exported.step_parity] == [True] * 3
        assert exported.step_cache_note == ""
        assert "step graphs embedded" in exported.format()
    else:
        assert not step_stable(sources)
        assert graphs is None
        assert exported.step_parity == []
        assert "--input-scaling fixed" in exported.step_cache_note
        assert "no step graphs" in exported.format()
    # The float16 copy always runs whole.
    assert STEP_GRAPHS_KEY not in _metadata(exported.fp16_path)


def test_composition_equals_the_full_graph_row_by_row(
    exported: ExportReport, bundle_dir: Path, toy_table: pa.Table, input_scaling: str
) -> None:
    if input_scaling == "window":
        pytest.skip("only fixed input scaling has step graphs")
    from fleetcast.exporter.bundle_export import WindowSource, parity_windows
    from fleetcast.trainer.bundle import load_bundle

    graphs = StepGraphs.from_metadata(_metadata(exported.path))
    assert graphs is not None
    sessions = [
        ort.InferenceSession(getattr(graphs, n), providers=["CPUExecutionProvider"])
        for n in GRAPH_NAMES
    ]
    full = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        windows = parity_windows(load_bundle(bundle_dir), toy_table, WindowSource(windows=40))
    feed = {name: windows[name].numpy() for name in INPUT_NAMES}
    assert feed["encoder_lengths"].min() < feed["encoder_lengths"].max()  # mixed lengths
    expected = full.run([OUTPUT_NAME], feed)[0]
    actual = composed_forward(*sessions, feed, graphs.embedding_size)
    scale = np.abs(expected).max(axis=(0, 2, 3))
    assert (np.abs(actual - expected).max(axis=(0, 2, 3)) / scale).max() < 1e-5
    # Each row's embedding depends on that row alone: computing rows one at a time, or in
    # another order, gives the same embeddings.
    rows_cat = feed["encoder_cat"][:, 0]
    rows_cont = feed["encoder_cont"][:, 0]
    together = sessions[0].run(None, {"step_cat": rows_cat, "step_cont": rows_cont})[0]
    alone = np.concatenate(
        [
            sessions[0].run(
                None, {"step_cat": rows_cat[i : i + 1], "step_cont": rows_cont[i : i + 1]}
            )[0]
            for i in range(len(rows_cat) - 1, -1, -1)
        ]
    )[::-1]
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)
    # A padded row's input does not reach the forecast: its embedding is zeroed and the
    # attention masks its key.
    short = feed["encoder_lengths"] < feed["encoder_cat"].shape[1]
    assert short.any()
    noisy = dict(feed)
    cont = feed["encoder_cont"].copy()
    for b in np.flatnonzero(short):
        cont[b, feed["encoder_lengths"][b] :] = 7.0
    noisy["encoder_cont"] = cont
    np.testing.assert_array_equal(
        composed_forward(*sessions, noisy, graphs.embedding_size)[short],
        actual[short],
    )


def test_export_with_no_step_cache_embeds_none(
    bundle_dir: Path,
    toy_table: pa.Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    import pyarrow.parquet as pq

    from fleetcast.contract.cli import main

    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    data = tmp_path / "metrics.parquet"
    pq.write_table(toy_table, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(
            [
                "export",
                "--bundle",
                str(bundle),
                "--data",
                str(data),
                "--parity-batches",
                "3",
                "--no-rounding-floor",
                "--no-step-cache",
            ]
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no step graphs: not requested (--no-step-cache)" in out
    assert STEP_GRAPHS_KEY not in _metadata(bundle / "model.onnx")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ('{"version": 3}', "version 3 (this fleetcast reads 2)"),
        ('{"version": 2, "embedding_size": 8}', "encoder_steps"),
        ("not json", "Expecting value"),
        (
            '{"version": 2, "embedding_size": 8, "encoder_steps": "@@", "decoder_steps": "", '
            '"head_pre": "", "head_post": ""}',
            "",
        ),
    ],
)
def test_malformed_step_graphs_are_refused_with_a_clear_error(document: str, problem: str) -> None:
    with pytest.raises(ContractError) as info:
        StepGraphs.from_metadata({STEP_GRAPHS_KEY: document})
    assert problem in info.value.what
    assert info.value.see == "docs/MODEL_FORMAT.md#step-cache"
    assert StepGraphs.from_metadata({}) is None


@pytest.mark.parametrize(("heads", "hidden"), [(4, 16), (2, 6), (1, 3)])
def test_projections_and_the_contracts_attention_equal_pytorch_forecasting(
    heads: int, hidden: int
) -> None:
    import torch
    from pytorch_forecasting.models.temporal_fusion_transformer.sub_modules import (
        InterpretableMultiHeadAttention,
    )

    from fleetcast.exporter.attention import attention_projections

    torch.manual_seed(heads)
    attn = InterpretableMultiHeadAttention(n_head=heads, d_model=hidden).eval()
    e, d = 20, 6
    x = torch.randn(4, e + d, hidden) * 2
    lengths = torch.tensor([20, 1, 9, 20])
    mask = torch.cat(
        (
            (torch.arange(e)[None, :] >= lengths[:, None])[:, None, :].expand(-1, d, -1),
            (torch.arange(d)[None, :] >= torch.arange(d)[:, None])[None].expand(4, -1, -1),
        ),
        dim=2,
    )
    with torch.no_grad():
        want, _ = attn(q=x[:, e:], k=x, v=x, mask=mask)
        query, key, value = attention_projections(attn, x, e)
        mean = interpretable_attention(query.numpy(), key.numpy(), value.numpy(), lengths.numpy())
        got = attn.w_h(torch.from_numpy(mean))
    assert query.shape == (4, heads, d, hidden // heads)
    assert key.shape == (4, heads, hidden // heads, e + d)
    assert value.shape == (4, hidden // heads, e + d)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)


def test_fusion_is_checked_on_every_valid_row_of_the_parity_windows(
    bundle_dir: Path,
    toy_table: pa.Table,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    input_scaling: str,
) -> None:
    """docs/EXPORT.md#checks: the fused selection networks are kept when they equal the
    unfused ones on the parity windows — not on the two windows the graph is traced with."""
    from fleetcast.exporter import onnx_graph
    from fleetcast.exporter.bundle_export import WindowSource, export_bundle, parity_windows
    from fleetcast.exporter.export import ExportOptions
    from fleetcast.trainer.bundle import load_bundle

    if input_scaling != "fixed":
        pytest.skip("one design with step graphs is enough")
    source = WindowSource(windows=16)
    windows = parity_windows(load_bundle(bundle_dir), toy_table, source)
    checked: dict[str, int] = {}
    real = onnx_graph._checked_step_graph

    def spy(model, which, args):  # type: ignore[no-untyped-def]
        checked[which] = int(args[0].shape[0])
        return real(model, which, args)

    monkeypatch.setattr(onnx_graph, "_checked_step_graph", spy)
    options = ExportOptions(parity_batches=(7,), latency_batches=(), rounding_floor=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_bundle(
            bundle_dir, data=toy_table, out=tmp_path / "m.onnx", options=options, source=source
        )
    assert checked == {
        "encoder": int(windows["encoder_lengths"].sum()),
        "decoder": 16 * windows["decoder_cat"].shape[1],
    }
