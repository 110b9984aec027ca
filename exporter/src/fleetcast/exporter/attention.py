"""The TFT's attention inputs in the step graphs' layout (``head_pre``'s last step).

pytorch-forecasting's ``InterpretableMultiHeadAttention`` runs its heads one by one: per
head a query and a key projection, ``bmm``, a division by √d, ``masked_fill``, softmax and
a second ``bmm`` with the value projection that all heads *share*, then the mean over heads
and ``w_h``. Exported as ONNX operators, every head is five passes over a [B, D, E+D]
score tensor in memory (37 MB per head at 256 windows): after the step cache, the largest
cost of the head (docs/BENCHMARKS.md#findings).

The step graphs therefore end ``head_pre`` at the attention's inputs: the queries and keys
of all heads from one stacked projection, the queries already times 1/√d, keys and the
shared value transposed so that a kernel reads each head's keys contiguously. The appliance
computes the attention with a Numba kernel (:mod:`fleetcast.appliance.attention`) and
``head_post`` applies ``w_h`` and the rest. The full graph keeps pytorch-forecasting's
per-head operators: ONNX Runtime's fused ``com.microsoft.MultiHeadAttention`` made it 1 %
faster on this machine (1.143 vs 1.155 ms per server at 1,000 servers), not worth a
non-standard operator in the file that TensorRT and Triton also load.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.nn import functional

if TYPE_CHECKING:
    from pytorch_forecasting.models.temporal_fusion_transformer.sub_modules import (
        InterpretableMultiHeadAttention,
    )

__all__ = ["attention_projections"]


def _stacked(layers: torch.nn.ModuleList) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights and biases of per-head ``Linear`` layers as one layer (heads on the output)."""
    weights = torch.cat([layer.weight for layer in layers])
    return weights, torch.cat([layer.bias for layer in layers])


def attention_projections(
    attn: InterpretableMultiHeadAttention, attn_input: torch.Tensor, encoder_width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attention's inputs in the step graphs' layout (docs/MODEL_FORMAT.md#step-cache).

    ``attn_input`` [B, E+D, H] → ``query`` [B, N, D, d] (the decoder steps' queries times
    1/√d), ``key`` [B, N, d, E+D] and the shared ``value`` [B, d, E+D], keys and values
    transposed so that a kernel reads each head's keys contiguously.
    """
    _check(attn)
    n, dk = attn.n_head, attn.d_k
    batch, width, _ = attn_input.shape
    w_q, b_q = _stacked(attn.q_layers)
    w_k, b_k = _stacked(attn.k_layers)
    query = functional.linear(attn_input[:, encoder_width:], w_q, b_q) * (1.0 / math.sqrt(dk))
    query = query.reshape(batch, width - encoder_width, n, dk).permute(0, 2, 1, 3)
    key = functional.linear(attn_input, w_k, b_k).reshape(batch, width, n, dk).permute(0, 2, 3, 1)
    value = attn.v_layer(attn_input).transpose(1, 2)
    return query, key, value


def _check(attn: InterpretableMultiHeadAttention) -> None:
    from fleetcast.contract.errors import ContractError

    if not attn.attention.scale:
        raise ContractError(
            "The model's attention is not scaled by 1/sqrt(d).",
            "the step graphs' queries carry the 1/sqrt(d) of pytorch-forecasting's default "
            "ScaledDotProductAttention(scale=True); this model would get other forecasts.",
            "Train with `fleetcast train`, or export with --no-step-cache.",
            "docs/MODEL_FORMAT.md#step-cache",
        )
