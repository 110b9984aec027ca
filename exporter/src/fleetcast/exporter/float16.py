"""The float16 copy of the graph, with its de-normalisation kept float32 as a whole.

The graph ends in ``output · scale + centre`` and, for log1p targets, ``exp(x) − 1``: the
forecast in real units. Float16's largest finite value is 65,504, so in float16 a forecast
of latency_ms above 65 s or of disk_io_mb_s above 65 GB/s (the contract bounds neither)
would come out ``inf``. ONNX Runtime's converter keeps a *blocked* node's arithmetic in
float32 but still rounds every value between two blocked nodes through float16, so blocking
the tail's nodes is not enough. :func:`convert_keeping_tail` therefore takes the tail —
every node computed from :data:`FLOAT32_INPUTS` — out of the graph, converts the rest
(its inputs to the tail become float32 outputs, ``keep_io_types``) and puts the tail back
unchanged behind it. The tail is a few dozen element-wise nodes: its cost is nil.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

__all__ = ["FLOAT32_INPUTS", "convert_keeping_tail", "downstream_nodes"]

FLOAT32_INPUTS: tuple[str, ...] = ("target_scale",)
"""Graph inputs whose consumers, and everything computed from them, stay float32."""


def downstream_nodes(graph: onnx.GraphProto, inputs: tuple[str, ...]) -> set[int]:
    """Indices of the nodes of ``graph`` (topologically ordered) computed from ``inputs``.

    Indices, not names: a graph's node names may be empty or repeated.
    """
    tainted = set(inputs)
    found: set[int] = set()
    for k, node in enumerate(graph.node):
        if tainted.intersection(node.input):
            found.add(k)
            tainted.update(o for o in node.output if o)
    return found


def convert_keeping_tail(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` converted to float16 (inputs and outputs float32), its tail float32.

    The tail: the nodes :func:`downstream_nodes` finds from :data:`FLOAT32_INPUTS`, plus the
    constants only they read. Without such inputs this is the converter's plain result.
    """
    import onnx

    model = onnx.shape_inference.infer_shapes(proto)
    graph = model.graph
    in_tail = downstream_nodes(graph, FLOAT32_INPUTS)
    readers: dict[str, set[int]] = {}
    for k, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, set()).add(k)
    # Constants (nodes and initializers) read by the tail alone travel with it.
    for k, node in enumerate(graph.node):
        if node.op_type == "Constant" and all(
            readers.get(o, set()) <= in_tail and readers.get(o) for o in node.output
        ):
            in_tail.add(k)
    tail = [n for k, n in enumerate(graph.node) if k in in_tail]
    body = [n for k, n in enumerate(graph.node) if k not in in_tail]
    tail_inits = [i for i in graph.initializer if readers.get(i.name, {-1}) <= in_tail]
    kept_inputs = [i for i in graph.input if i.name not in FLOAT32_INPUTS]
    produced = {o for n in body for o in n.output} | {i.name for i in graph.initializer}
    produced -= {i.name for i in tail_inits}
    handover = list(dict.fromkeys(i for n in tail for i in n.input if i in produced))
    types = {v.name: v for v in (*graph.value_info, *graph.output)}
    missing = [name for name in handover if name not in types]
    if not tail or missing:
        if tail:  # shape inference left a hand-over tensor untyped: no clean cut
            logging.getLogger("fleetcast.exporter").warning(
                "float16: the de-normalisation could not be kept float32 (no type for %s); "
                "the whole graph is converted, and the check on forecasts near 1e6 decides",
                ", ".join(missing[:3]),
            )
        return _convert(proto)

    body_model = onnx.ModelProto()
    body_model.CopyFrom(model)
    body_graph = body_model.graph
    del body_graph.node[:]
    body_graph.node.extend(body)
    tail_init_names = {i.name for i in tail_inits}
    kept_inits = [i for i in graph.initializer if i.name not in tail_init_names]
    del body_graph.initializer[:]
    body_graph.initializer.extend(kept_inits)
    del body_graph.input[:]
    body_graph.input.extend(kept_inputs)
    del body_graph.output[:]
    body_graph.output.extend(types[name] for name in handover)
    del body_graph.value_info[:]
    converted = _convert(body_model)

    out = converted.graph
    out.node.extend(tail)
    out.initializer.extend(tail_inits)
    del out.input[:]
    out.input.extend(graph.input)  # the original inputs, in their order
    del out.output[:]
    out.output.extend(graph.output)
    del out.value_info[:]
    return converted


def _convert(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's converter, float32 at the graph's boundary (``keep_io_types``)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_float_to_float16(copy, keep_io_types=True, disable_shape_infer=False)
