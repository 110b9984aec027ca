"""The fused selection networks: the same function as pytorch-forecasting's, in far fewer nodes."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fleetcast.contract.step_graphs import STEP_INPUTS, STEP_OUTPUT, StepGraphs
from fleetcast.exporter import onnx_graph
from fleetcast.exporter.fused import FusedSelection, NotFusable, fusion_error
from fleetcast.exporter.graph import StepGraph, _input_vectors, _static_embedding

if TYPE_CHECKING:
    from fleetcast.exporter.export import ExportReport

SELECTIONS = (
    "static_variable_selection",
    "encoder_variable_selection",
    "decoder_variable_selection",
)


def _model(trained: tuple, **hparams: object) -> torch.nn.Module:
    """A TFT of the session dataset with ``hparams``, every weight perturbed (masks and biases
    are zeros at initialisation; perturbed, every folded term matters)."""
    from pytorch_forecasting import TemporalFusionTransformer

    _, dataset, _ = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TemporalFusionTransformer.from_dataset(
            dataset, hidden_size=8, attention_head_size=1, dropout=0.0, **hparams
        ).eval()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return model


def _rows(model: torch.nn.Module, n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rows: every categorical's codes over all its classes, reals of mixed magnitude."""
    hp = model.hparams
    generator = torch.Generator().manual_seed(3)
    cat = torch.stack(
        [
            torch.randint(0, model.input_embeddings[name].num_embeddings, (n,), generator=generator)
            for name in hp.x_categoricals
        ],
        dim=1,
    )
    cont = (
        torch.randn(n, len(hp.x_reals), generator=generator)
        * torch.tensor([0.1, 1.0, 10.0])[torch.arange(len(hp.x_reals)) % 3]
    )
    return cat, cont


def _errors(model: torch.nn.Module) -> dict[str, float]:
    cat, cont = _rows(model)
    vectors = _input_vectors(model, cat, cont)
    with torch.no_grad():
        context = model.static_context_variable_selection(_static_embedding(model, vectors))
    return {
        name: fusion_error(
            FusedSelection(model, getattr(model, name)),
            getattr(model, name),
            vectors,
            cat,
            cont,
            None if name == "static_variable_selection" else context,
        )
        for name in SELECTIONS
    }


@pytest.mark.parametrize("continuous", [4, 8], ids=["resampled-reals", "same-width-reals"])
def test_fused_selection_equals_pytorch_forecasting(trained: tuple, continuous: int) -> None:
    # 4 < hidden 8: each real's residual is resampled and normed; 8 = hidden: it is the
    # prescaled input itself. Both are folded differently.
    model = _model(trained, hidden_continuous_size=continuous)
    errors = _errors(model)
    assert set(errors) == set(SELECTIONS)
    assert max(errors.values()) < 1e-5, errors
    # The check is not vacuous: a wrong weight shows.
    fused = FusedSelection(model, model.encoder_variable_selection)
    with torch.no_grad():
        fused.w2[0, 0, 0] += 0.5
    cat, cont = _rows(model)
    vectors = _input_vectors(model, cat, cont)
    with torch.no_grad():
        context = model.static_context_variable_selection(_static_embedding(model, vectors))
    bad = fusion_error(fused, model.encoder_variable_selection, vectors, cat, cont, context)
    assert bad > 1e-3


def test_reals_of_different_widths_stay_unfused_and_still_agree(trained: tuple) -> None:
    model = _model(trained, hidden_continuous_size=4, hidden_continuous_sizes={"hour_sin": 2})
    with pytest.raises(NotFusable, match="different widths"):
        FusedSelection(model, model.encoder_variable_selection)
    step = StepGraph(model, "encoder").eval()
    assert step.fused == {"static": True, "selection": False}
    cat, cont = _rows(model, 50)
    with torch.no_grad():
        got = step(cat, cont)
        want = StepGraph(model, "encoder", fuse=False).eval()(cat, cont)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _nodes(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[int, np.ndarray]:
    proto = onnx_graph._trace(
        module, args, STEP_INPUTS, (STEP_OUTPUT,), {n: {0: "rows"} for n in STEP_INPUTS}, 17
    )
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {name: a.numpy() for name, a in zip(STEP_INPUTS, args, strict=True)}
    return len(proto.graph.node), session.run(None, feed)[0]


@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_fused_step_graph_is_a_fraction_of_the_nodes_with_the_same_output(
    trained: tuple, which: str
) -> None:
    model = _model(trained, hidden_continuous_size=4)
    args = _rows(model, 40)
    plain_nodes, plain = _nodes(StepGraph(model, which, fuse=False).eval(), args)
    fused_nodes, fused = _nodes(StepGraph(model, which).eval(), args)
    assert fused_nodes * 3 < plain_nodes, (fused_nodes, plain_nodes)
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-5)


def test_a_fusion_outside_the_tolerance_exports_the_unfused_graph(
    trained: tuple, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model(trained, hidden_continuous_size=4)
    args = _rows(model, 20)
    assert all(onnx_graph._checked_step_graph(model, "encoder", args).fused.values())
    monkeypatch.setattr(onnx_graph, "FUSION_TOLERANCE", 0.0)
    with caplog.at_level(logging.WARNING, logger="fleetcast.exporter"):
        step = onnx_graph._checked_step_graph(model, "encoder", args)
    assert step.fused == {"static": False, "selection": False}
    assert "exporting the unfused graph" in caplog.text


def test_the_exported_step_graphs_are_fused(exported: ExportReport, input_scaling: str) -> None:
    if input_scaling == "window":
        pytest.skip("only fixed input scaling has step graphs")
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    graphs = StepGraphs.from_metadata(dict(session.get_modelmeta().custom_metadata_map))
    assert graphs is not None
    for name in ("encoder_steps", "decoder_steps"):
        ops = [n.op_type for n in onnx.load_from_string(getattr(graphs, name)).graph.node]
        # Unfused, the toy model's selection is several hundred nodes, mostly Gemm/Add/Mul
        # per variable; fused, the reals' GRNs are batched MatMuls over stacked weights.
        assert len(ops) < 200, (name, len(ops))
        assert "MatMul" in ops
