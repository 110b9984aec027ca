"""Trace a trained TFT to an ONNX graph, strip its debug metadata, convert it to float16.

The graph is traced by the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``)
from :class:`~fleetcast.exporter.graph.ExportableTFT`: the dynamo exporter cannot trace
pytorch-forecasting's packed LSTM ("Could not extract specialized integer from
data-dependent expression"), while the TorchScript exporter turns it into an ONNX ``LSTM``
with per-window ``sequence_lens``. The batch axis is dynamic; every other axis is fixed.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import TYPE_CHECKING

from fleetcast.contract.step_graphs import (
    HEAD_POST_INPUTS,
    HEAD_PRE_INPUTS,
    HEAD_PRE_OUTPUTS,
    STEP_INPUTS,
    STEP_OUTPUT,
    StepGraphs,
)
from fleetcast.exporter.graph import (
    INPUT_NAMES,
    OUTPUT_NAME,
    ExportableTFT,
    HeadPost,
    HeadPre,
    StepGraph,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import onnx
    import torch
    from pytorch_forecasting import TemporalFusionTransformer

__all__ = [
    "DEFAULT_OPSET",
    "compact_names",
    "sort_nodes",
    "strip_debug_info",
    "to_float16",
    "trace_onnx",
    "trace_step_graphs",
]

logger = logging.getLogger("fleetcast.exporter")

DEFAULT_OPSET = 17
"""ONNX opset of the exported graph (LayerNormalization needs 17; ORT 1.18+ and TensorRT 8.6+ run it)."""


def trace_onnx(
    model: TemporalFusionTransformer,
    example: Mapping[str, torch.Tensor],
    *,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Trace ``model`` into an ONNX model (debug metadata stripped, no metadata_props yet).

    ``example``: input name → tensor as in docs/MODEL_FORMAT.md#onnx-graph, with the full
    width ``E`` and at least one window of length ``E`` (the traced encoder width).
    """
    encoder_width = int(example["encoder_cat"].shape[1])
    prediction_length = int(example["decoder_cat"].shape[1])
    if int(example["encoder_lengths"].max()) != encoder_width:
        raise ValueError(
            f"The example batch must contain a full window of {encoder_width} steps; its "
            f"longest is {int(example['encoder_lengths'].max())}."
        )
    wrapper = ExportableTFT(model.eval(), encoder_width, prediction_length).eval()
    args = tuple(example[name] for name in INPUT_NAMES)
    dynamic = {name: {0: "batch"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    return _trace(wrapper, args, INPUT_NAMES, (OUTPUT_NAME,), dynamic, opset)


def _trace(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic: dict[str, dict[int, str]],
    opset: int,
) -> onnx.ModelProto:
    """``torch.onnx.export`` (TorchScript) of ``module``, debug info stripped, names compacted."""
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns about every traced Python int; the parity check,
        # not the warnings, decides whether the graph is right.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    strip_debug_info(proto)
    compact_names(proto)
    return proto


def trace_step_graphs(
    model: TemporalFusionTransformer,
    example: Mapping[str, torch.Tensor],
    *,
    opset: int = DEFAULT_OPSET,
    windows: Mapping[str, torch.Tensor] | None = None,
) -> StepGraphs:
    """Trace the step graphs of :mod:`fleetcast.contract.step_graphs` (``example`` as for
    :func:`trace_onnx`; their attention is a kernel of the appliance, not a graph). Each
    graph passes ``onnx.checker`` or this raises its error.

    ``windows``: the parity windows, on whose valid rows the fused selection networks must
    equal the unfused ones (:data:`FUSION_TOLERANCE`); default ``example``.
    """
    import onnx
    import torch

    model = model.eval()
    e = int(example["encoder_cat"].shape[1])
    d = int(example["decoder_cat"].shape[1])
    step_dynamic = {name: {0: "rows"} for name in (*STEP_INPUTS, STEP_OUTPUT)}
    graphs: dict[str, bytes] = {}
    embeddings = {}
    for which in ("encoder", "decoder"):
        cat = example[f"{which}_cat"]
        cont = example[f"{which}_cont"]
        args = (cat.reshape(-1, cat.shape[-1]), cont.reshape(-1, cont.shape[-1]))
        module = _checked_step_graph(model, which, _valid_rows(windows or example, which))
        with torch.no_grad():
            embeddings[which] = module(*args).reshape(cat.shape[0], cat.shape[1], -1)
        proto = _trace(module, args, STEP_INPUTS, (STEP_OUTPUT,), step_dynamic, opset)
        onnx.checker.check_model(proto, full_check=True)
        graphs[f"{which}_steps"] = proto.SerializeToString()
    with torch.no_grad():
        pre_args = (
            embeddings["encoder"],
            embeddings["decoder"],
            example["encoder_cat"][:, 0].contiguous(),
            example["encoder_cont"][:, 0].contiguous(),
            example["encoder_lengths"],
        )
        pre = HeadPre(model, e, d).eval()
        _, _, _, attn_residual, lstm_residual = pre(*pre_args)
        head_size = model.multihead_attn.d_k
        post_args = (
            torch.zeros(attn_residual.shape[0], d, head_size),
            attn_residual,
            lstm_residual,
            example["target_scale"],
        )
    batch = {0: "batch"}
    for name, module, args, inputs, outputs in (
        ("head_pre", pre, pre_args, HEAD_PRE_INPUTS, HEAD_PRE_OUTPUTS),
        ("head_post", HeadPost(model, e, d).eval(), post_args, HEAD_POST_INPUTS, (OUTPUT_NAME,)),
    ):
        proto = _trace(
            module, args, inputs, outputs, {n: batch for n in (*inputs, *outputs)}, opset
        )
        onnx.checker.check_model(proto, full_check=True)
        graphs[name] = proto.SerializeToString()
    return StepGraphs(embedding_size=int(embeddings["encoder"].shape[-1]), **graphs)


FUSION_TOLERANCE = 1e-4
"""Largest |fused − unfused| step embedding, relative to the largest |unfused| value, that the
exporter accepts from :class:`~fleetcast.exporter.fused.FusedSelection` (measured: about
5e-6, float32 rounding of reassociated sums); above it the step graph stays unfused."""


def _valid_rows(
    windows: Mapping[str, torch.Tensor], which: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``windows`` a step graph computes: every decoder row, the encoder rows
    before each window's length (padding rows never go through it)."""
    import torch

    cat, cont = windows[f"{which}_cat"], windows[f"{which}_cont"]
    if which == "encoder":
        valid = torch.arange(cat.shape[1])[None, :] < windows["encoder_lengths"][:, None]
        return cat[valid], cont[valid]
    return cat.reshape(-1, cat.shape[-1]), cont.reshape(-1, cont.shape[-1])


def _checked_step_graph(
    model: TemporalFusionTransformer, which: str, args: tuple[torch.Tensor, torch.Tensor]
) -> StepGraph:
    """The fused step graph when it equals the unfused one on ``args`` within
    :data:`FUSION_TOLERANCE`, else the unfused one (logged)."""
    import torch

    fused = StepGraph(model, which).eval()
    if not any(fused.fused.values()):
        return fused
    plain = StepGraph(model, which, fuse=False).eval()
    with torch.no_grad():
        want = plain(*args)
        got = fused(*args)
    scale = float(want.abs().max()) or 1.0
    error = float((got - want).abs().max()) / scale
    if error > FUSION_TOLERANCE:
        logger.warning(
            "The fused %s step graph differs from the unfused one by %.2e of its range "
            "(tolerance %.0e); exporting the unfused graph.",
            which,
            error,
            FUSION_TOLERANCE,
        )
        return plain
    logger.info(
        "%s step graph: fused selection networks, %.1e of the range from unfused.", which, error
    )
    return fused


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    out = []
    for attr in node.attribute:
        if attr.HasField("g"):
            out.append(attr.g)
        out.extend(attr.graphs)
    return out


def strip_debug_info(proto: onnx.ModelProto) -> None:
    """Remove doc strings and per-node metadata (source locations, scopes) in place."""

    def _graph(graph: onnx.GraphProto) -> None:
        graph.ClearField("doc_string")
        for node in graph.node:
            node.ClearField("doc_string")
            del node.metadata_props[:]
            for attr in node.attribute:
                attr.ClearField("doc_string")
            for sub in _subgraphs(node):
                _graph(sub)
        for value in (*graph.input, *graph.output, *graph.value_info):
            value.ClearField("doc_string")
            del value.metadata_props[:]
        for init in graph.initializer:
            init.ClearField("doc_string")
            del init.metadata_props[:]
        del graph.metadata_props[:]

    proto.ClearField("doc_string")
    _graph(proto.graph)
    for function in proto.functions:
        function.ClearField("doc_string")
        for node in function.node:
            node.ClearField("doc_string")
            del node.metadata_props[:]


def compact_names(proto: onnx.ModelProto) -> None:
    """Rename nodes and intermediate values to short names (``n12``, ``v34``) in place.

    The traced names spell out each module path ("/static_variable_selection/profile/
    resample/Concat_output_0") and make up most of a small model's file. Graph inputs and
    outputs keep their names; initializers become ``w<i>``; value_info is dropped.
    """
    graph = proto.graph
    keep = {v.name for v in (*graph.input, *graph.output)}
    rename: dict[str, str] = {}

    def _name(old: str, prefix: str) -> str:
        if not old or old in keep:
            return old
        if old not in rename:
            rename[old] = f"{prefix}{len(rename)}"
        return rename[old]

    counter = [0]

    def _graph(g: onnx.GraphProto) -> None:
        del g.value_info[:]
        for init in g.initializer:
            init.name = _name(init.name, "w")
        if g is not graph:
            for value in (*g.input, *g.output):
                value.name = _name(value.name, "v")
        for node in g.node:
            node.name = f"n{counter[0]}"
            counter[0] += 1
            for sub in _subgraphs(node):
                _graph(sub)
            node.input[:] = [_name(i, "v") for i in node.input]
            node.output[:] = [_name(o, "v") for o in node.output]

    _graph(graph)


def to_float16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of a float32 graph for GPU execution providers; inputs/outputs stay float32.

    Uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``, the same code as
    onnxconverter-common). Ops that lose too much in float16 (its default block list) stay
    float32, with casts around them. The de-normalisation to real units (everything computed
    from :data:`~fleetcast.exporter.float16.FLOAT32_INPUTS`) stays float32 as a whole, since
    float16 overflows above 65,504 (:mod:`fleetcast.exporter.float16`). ``metadata_props``
    are copied.
    """
    from fleetcast.exporter.float16 import convert_keeping_tail

    converted = convert_keeping_tail(proto)
    sort_nodes(converted.graph)
    strip_debug_info(converted)
    return converted


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Order ``graph.node`` topologically in place (the float16 converter appends its casts).

    Stable: nodes keep their relative order where dependencies allow. Subgraphs (``If``
    branches) may read outer values; those count as available once produced outside.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []

    def _needs(node: onnx.NodeProto) -> set[str]:
        needs = set(node.input)
        for attr in node.attribute:
            subs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            for sub in subs:
                inner = {n for node_ in sub.node for n in node_.output}
                inner |= {i.name for i in sub.input} | {i.name for i in sub.initializer}
                for node_ in sub.node:
                    needs |= {n for n in node_.input if n not in inner}
        return needs

    needs = {id(node): _needs(node) for node in pending}
    while pending:
        progress = False
        rest = []
        for node in pending:
            if needs[id(node)] <= available:
                ordered.append(node)
                available.update(node.output)
                progress = True
            else:
                rest.append(node)
        if not progress:
            missing = sorted(set().union(*(needs[id(n)] for n in rest)) - available)[:5]
            raise ValueError(f"The graph has a cycle or undefined inputs: {missing}")
        pending = rest
    copies = [type(node)() for node in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
