"""A variable selection network with its per-variable networks stacked and its linear maps folded.

pytorch-forecasting's ``VariableSelectionNetwork`` runs one small network per input
variable — a prescaler and a gated residual network (GRN) per real, a ``ResampleNorm`` per
categorical embedding — and a flattened GRN over all of them for the selection weights.
Traced, the encoder's selection of the default model is about 700 ONNX nodes. On one row
(the appliance's single-server forecast computes one new encoder and one new decoder row)
ONNX Runtime's per-node cost, not arithmetic, is the time: 0.43 and 0.31 ms.

:class:`FusedSelection` computes the same function in a few dozen nodes:

- **reals** (all with the same prescaler width ``s`` and GRN hidden size ``k``): the
  prescaler ``p = x·w + b`` is rank one in the scalar ``x``, so the GRN's first layer and
  its residual resampling (a linear interpolation: a fixed ``[s, H]`` matrix) fold into
  ``x·A + C`` per variable. The rest — ELU, second layer, gated linear unit, layer norm —
  runs for every real at once as batched matrix products over stacked weights ``[V, …]``;
- **categoricals**: a variable's embedding and its ``ResampleNorm`` output are functions of
  its code only, so they become lookup tables ``[classes, H]``;
- **the flattened GRN**: its first layer and its residual resampling are linear in the
  concatenated inputs, so each real contributes ``x·m_v`` and each categorical a table row.

The same weights, reassociated: outputs equal the original within float32 rounding (about
1e-6 relative; :func:`fusion_error` measures it and the exporter refuses a fusion above
1e-4). Structures this does not cover (one input, categorical groups, reals of different
widths, a GRN used with a residual of its own, shared networks) raise :class:`NotFusable`,
and the caller keeps pytorch-forecasting's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from pytorch_forecasting import TemporalFusionTransformer
    from pytorch_forecasting.models.temporal_fusion_transformer.sub_modules import (
        GatedResidualNetwork,
        VariableSelectionNetwork,
    )

__all__ = ["FusedSelection", "NotFusable", "fusion_error"]


class NotFusable(ValueError):
    """The selection network has a structure :class:`FusedSelection` does not cover."""


def _interpolation(size_in: int, size_out: int) -> torch.Tensor:
    """The ``[size_in, size_out]`` matrix of pytorch-forecasting's ``TimeDistributedInterpolation``
    (linear, ``align_corners=True``): ``interp(p) == p @ matrix``."""
    eye = torch.eye(size_in, dtype=torch.float64)
    return F.interpolate(eye.unsqueeze(1), size_out, mode="linear", align_corners=True).squeeze(1)


def _resample_gate(norm_module: nn.Module, size_in: int) -> tuple[torch.Tensor, nn.LayerNorm]:
    """A ``ResampleNorm``'s linear part ``[size_in, out]`` (interpolation × trainable gate) and its norm."""
    out = int(norm_module.output_size)
    matrix = (
        _interpolation(size_in, out) if size_in != out else torch.eye(size_in, dtype=torch.float64)
    )
    if norm_module.trainable_add:
        matrix = matrix * (torch.sigmoid(norm_module.mask.double()) * 2.0)[None, :]
    return matrix, norm_module.norm


def _check_grn(grn: GatedResidualNetwork, *, context: bool) -> None:
    from pytorch_forecasting.models.temporal_fusion_transformer import sub_modules

    if type(grn) is not sub_modules.GatedResidualNetwork:
        raise NotFusable(f"a {type(grn).__name__} where a gated residual network was expected")
    if grn.residual or (grn.context_size is not None) != context:
        raise NotFusable("a GRN with its own residual path or an unexpected context")
    add_norm = grn.gate_norm.add_norm
    if add_norm.trainable_add or add_norm.input_size != add_norm.skip_size:
        raise NotFusable("a GRN whose gate adds a resampled or gated skip")


def _layer_norm(
    x: torch.Tensor, size: int, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """Layer norm over the last axis (``size``, a constant of the graph) with per-variable
    affine parameters (``weight``, ``bias`` [V, 1, size])."""
    return F.layer_norm(x, (size,), eps=eps) * weight + bias


class FusedSelection(nn.Module):
    """A trained ``VariableSelectionNetwork`` of ``tft`` as stacked, folded operators.

    ``forward(x_cat [N, n_cat] int64, x_cont [N, n_real] float32, context [N, C] | None)``
    takes rows in the model's input layout (``hparams.x_categoricals`` / ``x_reals``
    columns) and returns the selection's output ``[N, H]``. The weights are copied
    (float64 folding, stored float32); the module is for inference only.
    """

    def __init__(self, tft: TemporalFusionTransformer, vsn: VariableSelectionNetwork) -> None:
        super().__init__()
        hp = tft.hparams
        if vsn.num_inputs < 2:
            raise NotFusable("fewer than two inputs (no selection weights)")
        if hp.get("categorical_groups"):
            raise NotFusable("categorical groups (several columns per embedding)")
        names = list(vsn.input_sizes)
        flags = vsn._input_embedding_flags
        cats = [n for n in names if flags.get(n, False)]
        reals = [n for n in names if not flags.get(n, False)]
        if not reals:
            raise NotFusable("no real inputs")
        self.hidden = int(vsn.hidden_size)
        self.has_context = vsn.context_size is not None
        flat = vsn.flattened_grn
        _check_grn(flat, context=self.has_context)
        if flat.input_size == flat.output_size:
            raise NotFusable("a flattened GRN without resampling")
        with torch.no_grad():
            self._fold_reals(tft, vsn, reals)
            self._fold_flat(tft, vsn, names, cats, reals)
        # Outputs are stacked categoricals first, then reals; the selection weights come in
        # the network's own variable order.
        order = [names.index(n) for n in (*cats, *reals)]
        self.register_buffer("order", torch.tensor(order, dtype=torch.int64), persistent=False)

    # -- construction ------------------------------------------------------------------
    def _fold_reals(
        self, tft: TemporalFusionTransformer, vsn: VariableSelectionNetwork, reals: list[str]
    ) -> None:
        hp = tft.hparams
        grns = [vsn.single_variable_grns[n] for n in reals]
        for g in grns:
            _check_grn(g, context=False)
        widths = {(g.input_size, g.hidden_size, g.output_size) for g in grns}
        if len(widths) != 1 or any(n not in vsn.prescalers for n in reals):
            raise NotFusable("reals with different widths or without prescalers")
        s, _, h = widths.pop()
        if h != self.hidden:
            raise NotFusable("a real's GRN does not output the hidden size")
        self.real_cols = [hp.x_reals.index(n) for n in reals]
        a1, c1, ra, rc, w2, b2, wg, bg = ([] for _ in range(8))
        ln_r: list[tuple[torch.Tensor, torch.Tensor]] = []
        ln_o: list[tuple[torch.Tensor, torch.Tensor]] = []
        eps: set[float] = set()
        for name, g in zip(reals, grns, strict=True):
            pre = vsn.prescalers[name]
            w, b = pre.weight[:, 0].double(), pre.bias.double()
            a1.append(g.fc1.weight.double() @ w)
            c1.append(g.fc1.weight.double() @ b + g.fc1.bias.double())
            if s != h:
                matrix, norm = _resample_gate(g.resample_norm, s)
                ra.append(w @ matrix)
                rc.append(b @ matrix)
                ln_r.append((norm.weight, norm.bias))
                eps.add(norm.eps)
            else:  # the residual is the prescaled input itself
                ra.append(w)
                rc.append(b)
            w2.append(g.fc2.weight.double().T)
            b2.append(g.fc2.bias.double())
            wg.append(g.gate_norm.glu.fc.weight.double().T)
            bg.append(g.gate_norm.glu.fc.bias.double())
            out_norm = g.gate_norm.add_norm.norm
            ln_o.append((out_norm.weight, out_norm.bias))
            eps.add(out_norm.eps)
        if len(eps) != 1:
            raise NotFusable("layer norms with different epsilons")
        self.eps = float(eps.pop())
        self.resample_real = s != h

        def stack(parts: list[torch.Tensor], *shape: int) -> torch.Tensor:
            return torch.stack(parts).reshape(len(parts), *shape).float()

        v = len(reals)
        self.register_buffer("a1", stack(a1, 1, -1))  # [V, 1, k]
        self.register_buffer("c1", stack(c1, 1, -1))
        self.register_buffer("ra", stack(ra, 1, -1))  # [V, 1, H]
        self.register_buffer("rc", stack(rc, 1, -1))
        self.register_buffer("w2", stack(w2, *w2[0].shape))  # [V, k, k]
        self.register_buffer("b2", stack(b2, 1, -1))
        self.register_buffer("wg", stack(wg, *wg[0].shape))  # [V, k, 2H]
        self.register_buffer("bg", stack(bg, 1, -1))
        if ln_r:
            self.register_buffer("ln_r_w", stack([p[0].double() for p in ln_r], 1, -1))
            self.register_buffer("ln_r_b", stack([p[1].double() for p in ln_r], 1, -1))
        self.register_buffer("ln_o_w", stack([p[0].double() for p in ln_o], 1, -1))
        self.register_buffer("ln_o_b", stack([p[1].double() for p in ln_o], 1, -1))
        self.n_real = v

    def _fold_flat(
        self,
        tft: TemporalFusionTransformer,
        vsn: VariableSelectionNetwork,
        names: list[str],
        cats: list[str],
        reals: list[str],
    ) -> None:
        hp = tft.hparams
        flat = vsn.flattened_grn
        k = int(flat.hidden_size)
        n_in = int(flat.output_size)
        matrix, norm = _resample_gate(flat.resample_norm, int(flat.input_size))
        # One linear map of the concatenated inputs: [fc1 | residual resampling].
        linear = torch.cat([flat.fc1.weight.double().T, matrix], dim=1)  # [T, k + V]
        const = torch.cat([flat.fc1.bias.double(), torch.zeros(n_in, dtype=torch.float64)])
        offsets, offset = {}, 0
        for name in names:
            offsets[name] = offset
            offset += int(vsn.input_sizes[name])
        if offset != linear.shape[0]:
            raise NotFusable("input sizes do not add up to the flattened GRN's input")
        real_rows = []
        for name in reals:
            pre = vsn.prescalers[name]
            seg = linear[offsets[name] : offsets[name] + int(vsn.input_sizes[name])]
            real_rows.append(pre.weight[:, 0].double() @ seg)
            const = const + pre.bias.double() @ seg
        self.register_buffer("flat_real", torch.stack(real_rows).float())  # [Vr, k + V]
        self.cat_cols: list[int] = []
        for i, name in enumerate(cats):
            n_classes = int(tft.input_embeddings[name].num_embeddings)
            codes = torch.zeros(n_classes, len(hp.x_categoricals), dtype=torch.int64)
            col = hp.x_categoricals.index(name)
            codes[:, col] = torch.arange(n_classes)
            embedding = tft.input_embeddings(codes)[name]  # [classes, e]
            seg = linear[offsets[name] : offsets[name] + embedding.shape[1]]
            self.register_buffer(f"flat_cat{i}", (embedding.double() @ seg).float())
            self.register_buffer(
                f"out_cat{i}", vsn.single_variable_grns[name](embedding).float()
            )  # [classes, H]
            self.cat_cols.append(col)
        self.register_buffer("flat_const", const.float())
        self.k_flat = k
        self.n_flat = n_in
        self.register_buffer("flat_ln_w", norm.weight.detach().clone())
        self.register_buffer("flat_ln_b", norm.bias.detach().clone())
        self.flat_ln_eps = float(norm.eps)
        self.flat_context = flat.context if self.has_context else None
        self.flat_fc2 = flat.fc2
        self.flat_glu = flat.gate_norm.glu.fc
        self.flat_out_norm = flat.gate_norm.add_norm.norm

    # -- forward -----------------------------------------------------------------------
    def forward(
        self, x_cat: torch.Tensor, x_cont: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x_cont[:, self.real_cols]  # [N, Vr]
        xv = x.T.unsqueeze(-1)  # [Vr, N, 1]
        # Every real's GRN at once, in [V, N, ·] layout.
        h = F.elu(xv * self.a1 + self.c1)
        h = torch.matmul(h, self.w2) + self.b2
        h = F.glu(torch.matmul(h, self.wg) + self.bg, dim=-1)
        residual = xv * self.ra + self.rc
        if self.resample_real:
            residual = _layer_norm(residual, self.hidden, self.ln_r_w, self.ln_r_b, self.eps)
        outputs = [
            _layer_norm(h + residual, self.hidden, self.ln_o_w, self.ln_o_b, self.eps)
        ]  # [Vr, N, H]
        # The flattened GRN: fc1 and its residual resampling, folded.
        z = torch.matmul(x, self.flat_real) + self.flat_const
        cat_outputs = []
        for i, col in enumerate(self.cat_cols):
            code = x_cat[:, col]
            z = z + getattr(self, f"flat_cat{i}")[code]
            cat_outputs.append(getattr(self, f"out_cat{i}")[code])
        if cat_outputs:
            outputs.insert(0, torch.stack(cat_outputs))  # [Vc, N, H]
        stacked = torch.cat(outputs, dim=0) if len(outputs) > 1 else outputs[0]  # [V, N, H]
        hidden = z[:, : self.k_flat]
        if self.flat_context is not None:
            hidden = hidden + self.flat_context(context)
        hidden = self.flat_fc2(F.elu(hidden))
        residual = F.layer_norm(
            z[:, self.k_flat :],
            (self.n_flat,),
            self.flat_ln_w,
            self.flat_ln_b,
            self.flat_ln_eps,
        )
        weights = self.flat_out_norm(F.glu(self.flat_glu(hidden), dim=-1) + residual)
        weights = torch.softmax(weights, dim=-1)[:, self.order]  # [N, V] in stacked order
        return torch.matmul(stacked.permute(1, 2, 0), weights.unsqueeze(-1)).squeeze(-1)


def fusion_error(
    fused: FusedSelection,
    vsn: VariableSelectionNetwork,
    vectors: dict[str, torch.Tensor],
    x_cat: torch.Tensor,
    x_cont: torch.Tensor,
    context: torch.Tensor | None,
) -> float:
    """Largest |fused − original| over rows, relative to the original output's largest magnitude."""
    with torch.no_grad():
        reference, _ = vsn({n: vectors[n] for n in vsn.input_sizes}, context)
        got = fused(x_cat, x_cont, context)
    scale = float(reference.abs().max()) or 1.0
    return float((got - reference).abs().max()) / scale
