"""The exportable forward pass: plain tensors in, quantiles in real units out.

pytorch-forecasting's ``TemporalFusionTransformer.forward`` takes a dict and derives the
encoder width from ``int(encoder_lengths.max())`` at run time, which a traced graph bakes
in. :class:`ExportableTFT` runs the same submodules over a window of *fixed* width ``E``
(the bundle's maximum encoder length) and prediction length ``D``, so every shape in the
graph is either the batch axis or a constant:

- the encoder LSTM is pytorch-forecasting's own length-aware LSTM (a packed sequence), which
  the TorchScript exporter turns into an ONNX ``LSTM`` with ``sequence_lens``: each window
  keeps its own length (cold start: ``min_encoder_length`` steps are enough);
- the attention mask is built from the per-window lengths against the constant width ``E``
  (padding rows are never attended to), plus the constant causal decoder mask;
- the output is de-normalised as the trainer's target normaliser does it (``output ·
  scale + centre``, then ``expm1`` for log1p targets), so the graph returns real units.

Inputs and output are those of docs/MODEL_FORMAT.md#onnx-graph.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils import rnn

from fleetcast.contract.model_spec import INPUT_NAMES, OUTPUT_NAME
from fleetcast.exporter.attention import attention_projections
from fleetcast.exporter.fused import FusedSelection, NotFusable

if TYPE_CHECKING:
    from pytorch_forecasting import TemporalFusionTransformer

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "ExportableTFT",
    "HeadPost",
    "HeadPre",
    "StepGraph",
    "reference_forward",
    "target_transforms",
]

log = logging.getLogger(__name__)


def target_transforms(tft: TemporalFusionTransformer) -> list[str]:
    """The transform name (``identity`` or ``log1p``) of each target's normaliser, in target order.

    Raises ValueError for a normaliser that is not fleetcast's window-relative one.
    """
    transformer = tft.output_transformer
    normalizers = list(getattr(transformer, "normalizers", [transformer]))
    names = []
    for normalizer in normalizers:
        name = getattr(normalizer, "transform_name", None)
        if name not in ("identity", "log1p"):
            raise ValueError(
                f"Expected fleetcast's WindowNormalizer (transform identity or log1p) for every "
                f"target, but got a {type(normalizer).__name__} ({name!r}). Fix: train the "
                "model with `fleetcast train`. See docs/MODEL_FORMAT.md#features."
            )
        names.append(name)
    return names


class ExportableTFT(nn.Module):
    """A fixed-width forward over a trained TFT's submodules (see the module docstring).

    Parameters
    ----------
    tft:
        The trained model, in eval mode. Its weights are shared, not copied.
    encoder_width:
        ``E``, the width of every encoder input (the dataset's ``max_encoder_length``).
    prediction_length:
        ``D``, the number of decoder steps (the dataset's ``max_prediction_length``).
    """

    def __init__(
        self, tft: TemporalFusionTransformer, encoder_width: int, prediction_length: int
    ) -> None:
        super().__init__()
        self.tft = tft
        self.encoder_width = int(encoder_width)
        self.prediction_length = int(prediction_length)
        self.transforms = target_transforms(tft)
        # The causal decoder mask is a constant of the graph: step i attends to decoder
        # steps < i only (True = masked, pytorch-forecasting's convention).
        d = self.prediction_length
        self.register_buffer(
            "decoder_mask",
            torch.arange(d)[None, :] >= torch.arange(d)[:, None],
            persistent=False,
        )

    def forward(
        self,
        encoder_cat: torch.Tensor,
        encoder_cont: torch.Tensor,
        encoder_lengths: torch.Tensor,
        decoder_cat: torch.Tensor,
        decoder_cont: torch.Tensor,
        target_scale: torch.Tensor,
    ) -> torch.Tensor:
        """Quantile forecasts in real units.

        Shapes: ``encoder_cat`` int64 [B, E, n_cat], ``encoder_cont`` float32 [B, E, n_real],
        ``encoder_lengths`` int64 [B] (1..E, left-aligned windows), ``decoder_cat`` int64
        [B, D, n_cat], ``decoder_cont`` float32 [B, D, n_real], ``target_scale`` float32
        [B, n_target, 2] (centre, scale). Returns float32 [B, n_target, D, n_quantile].
        """
        m = self.tft
        e = self.encoder_width
        x_cat = torch.cat([encoder_cat, decoder_cat], dim=1)
        x_cont = torch.cat([encoder_cont, decoder_cont], dim=1)
        input_vectors = _input_vectors(m, x_cat, x_cont)
        static_embedding = _static_embedding(m, {k: v[:, 0] for k, v in input_vectors.items()})
        static_context_vs = m.expand_static_context(
            m.static_context_variable_selection(static_embedding), e + self.prediction_length
        )
        emb_enc = {name: input_vectors[name][:, :e] for name in m.encoder_variables}
        emb_enc, _ = m.encoder_variable_selection(emb_enc, static_context_vs[:, :e])
        emb_dec = {name: input_vectors[name][:, e:] for name in m.decoder_variables}
        emb_dec, _ = m.decoder_variable_selection(emb_dec, static_context_vs[:, e:])
        return _head(self, static_embedding, emb_enc, emb_dec, encoder_lengths, target_scale)


def _input_vectors(
    m: TemporalFusionTransformer, x_cat: torch.Tensor, x_cont: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Every input variable's vector: categorical embeddings and real columns ``[..., 1]``."""
    input_vectors = m.input_embeddings(x_cat)
    input_vectors.update(
        {
            name: x_cont[..., idx].unsqueeze(-1)
            for idx, name in enumerate(m.hparams.x_reals)
            if name in m.reals
        }
    )
    return input_vectors


def _static_embedding(
    m: TemporalFusionTransformer, vectors: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The static variable selection of one row per window (``vectors``: name → [B, ...])."""
    if len(m.static_variables) == 0:
        raise ValueError(
            "The model has no static variables; fleetcast models always have the "
            "profile and server_id static categoricals. See docs/MODEL_FORMAT.md#features."
        )
    static_embedding, _ = m.static_variable_selection(
        {name: vectors[name] for name in m.static_variables}
    )
    return static_embedding


def _head(
    wrapper: ExportableTFT,
    static_embedding: torch.Tensor,
    emb_enc: torch.Tensor,
    emb_dec: torch.Tensor,
    encoder_lengths: torch.Tensor,
    target_scale: torch.Tensor,
) -> torch.Tensor:
    """Everything after the variable selection: LSTMs, attention, output, de-normalisation."""
    m = wrapper.tft
    e = wrapper.encoder_width
    d = wrapper.prediction_length
    attn_input, lstm_output = _pre_attention(
        wrapper, static_embedding, emb_enc, emb_dec, encoder_lengths
    )
    encoder_mask = (
        torch.arange(e, device=encoder_lengths.device)[None, :] >= encoder_lengths[:, None]
    )
    mask = torch.cat(
        (
            encoder_mask[:, None, :].expand(-1, d, -1),
            wrapper.decoder_mask[None].expand(encoder_lengths.shape[0], -1, -1),
        ),
        dim=2,
    )
    attn_output, _ = m.multihead_attn(q=attn_input[:, e:], k=attn_input, v=attn_input, mask=mask)
    return _post_attention(
        wrapper, attn_output, attn_input[:, e:], lstm_output[:, e:], target_scale
    )


def _pre_attention(
    wrapper: ExportableTFT,
    static_embedding: torch.Tensor,
    emb_enc: torch.Tensor,
    emb_dec: torch.Tensor,
    encoder_lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LSTMs and the static enrichment: (attention input, LSTM output), both [B, E+D, H]."""
    m = wrapper.tft
    e = wrapper.encoder_width
    hp = m.hparams
    timesteps = e + wrapper.prediction_length
    input_hidden = m.static_context_initial_hidden_lstm(static_embedding).expand(
        hp.lstm_layers, -1, -1
    )
    input_cell = m.static_context_initial_cell_lstm(static_embedding).expand(hp.lstm_layers, -1, -1)
    # pytorch-forecasting's length-aware LSTM, with the output padded back to the full
    # width E (``total_length``) so that shapes do not depend on the batch's lengths.
    packed = rnn.pack_padded_sequence(
        emb_enc, encoder_lengths.cpu(), batch_first=True, enforce_sorted=False
    )
    packed_out, (hidden, cell) = nn.LSTM.forward(m.lstm_encoder, packed, (input_hidden, input_cell))
    encoder_output, _ = rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=e)
    # Every window has exactly D decoder steps: a plain (unpacked) LSTM run is identical.
    decoder_output, _ = nn.LSTM.forward(m.lstm_decoder, emb_dec, (hidden, cell))

    lstm_enc = m.post_lstm_add_norm_encoder(m.post_lstm_gate_encoder(encoder_output), emb_enc)
    lstm_dec = m.post_lstm_add_norm_decoder(m.post_lstm_gate_decoder(decoder_output), emb_dec)
    lstm_output = torch.cat([lstm_enc, lstm_dec], dim=1)

    enrichment = m.static_context_enrichment(static_embedding)
    attn_input = m.static_enrichment(lstm_output, m.expand_static_context(enrichment, timesteps))
    return attn_input, lstm_output


def _post_attention(
    wrapper: ExportableTFT,
    attn_output: torch.Tensor,
    attn_residual: torch.Tensor,
    lstm_residual: torch.Tensor,
    target_scale: torch.Tensor,
) -> torch.Tensor:
    """From the attention's output (after ``w_h``) and the decoder steps' attention input and
    LSTM output, [B, D, H] each, to quantiles in real units [B, T, D, Q]."""
    m = wrapper.tft
    attn_output = m.post_attn_gate_norm(attn_output, attn_residual)
    output = m.pos_wise_ff(attn_output)
    output = m.pre_output_gate_norm(output, lstm_residual)
    if m.n_targets > 1:
        outputs = [layer(output) for layer in m.output_layer]
    else:
        outputs = [m.output_layer(output)]
    # The target normaliser's inverse, as pytorch-forecasting's TorchNormalizer.__call__
    # computes it: y = output * scale + centre, then the transform's inverse. expm1 is
    # written exp(x) - 1: the TorchScript exporter has no aten::expm1 (the parity check
    # bounds the difference).
    prediction = []
    for i, out in enumerate(outputs):
        y = out * target_scale[:, i, 1, None, None] + target_scale[:, i, 0, None, None]
        if wrapper.transforms[i] == "log1p":
            y = torch.exp(y) - 1.0
        prediction.append(y)
    return torch.stack(list(prediction), dim=1)


class StepGraph(nn.Module):
    """One encoder (or decoder) row per item → its variable-selection output (step graphs).

    The row's own static columns give the static context, exactly as row 0 gives it to the
    whole window in :class:`ExportableTFT` (static columns are equal on every row).
    ``forward(step_cat [N, n_cat] int64, step_cont [N, n_real] float32) → [N, H]``.

    With ``fuse`` (the default) the static and the step's selection networks run as
    :class:`~fleetcast.exporter.fused.FusedSelection` where their structure allows it (a
    few dozen ONNX nodes instead of about 700: one row costs ONNX Runtime's per-node time,
    not arithmetic); ``fused`` says which did.
    """

    def __init__(self, tft: TemporalFusionTransformer, which: str, *, fuse: bool = True) -> None:
        super().__init__()
        if which not in ("encoder", "decoder"):
            raise ValueError(f"which must be 'encoder' or 'decoder', not {which!r}")
        self.tft = tft
        self.which = which
        _, selection = self._selection()
        self.fused_static = _try_fuse(tft, tft.static_variable_selection) if fuse else None
        self.fused_selection = _try_fuse(tft, selection) if fuse else None

    def _selection(self) -> tuple[list[str], nn.Module]:
        m = self.tft
        if self.which == "encoder":
            return m.encoder_variables, m.encoder_variable_selection
        return m.decoder_variables, m.decoder_variable_selection

    @property
    def fused(self) -> dict[str, bool]:
        """Which selection networks run fused: ``{"static": …, "selection": …}``."""
        return {
            "static": self.fused_static is not None,
            "selection": self.fused_selection is not None,
        }

    def forward(self, step_cat: torch.Tensor, step_cont: torch.Tensor) -> torch.Tensor:
        m = self.tft
        vectors = None
        if self.fused_static is not None:
            static_embedding = self.fused_static(step_cat, step_cont)
        else:
            vectors = _input_vectors(m, step_cat[:, None], step_cont[:, None])  # [N, 1, ...]
            static_embedding = _static_embedding(m, {k: v[:, 0] for k, v in vectors.items()})
        context = m.static_context_variable_selection(static_embedding)
        if self.fused_selection is not None:
            return self.fused_selection(step_cat, step_cont, context)
        if vectors is None:
            vectors = _input_vectors(m, step_cat[:, None], step_cont[:, None])
        names, selection = self._selection()
        embedding, _ = selection({name: vectors[name] for name in names}, context[:, None])
        return embedding[:, 0]


def _try_fuse(tft: TemporalFusionTransformer, vsn: nn.Module) -> FusedSelection | None:
    """``vsn`` as a :class:`FusedSelection`, or None (logged) when its structure is not covered."""
    try:
        return FusedSelection(tft, vsn).eval()
    except NotFusable as exc:
        log.info("Selection network kept unfused: %s.", exc)
        return None


class HeadPre(ExportableTFT):
    """From cached step embeddings to the attention's inputs (step graphs' ``head_pre``).

    ``forward(encoder_embedding [B, E, H], decoder_embedding [B, D, H], static_cat [B,
    n_cat], static_cont [B, n_real], encoder_lengths [B])`` returns ``query`` [B, N, D, d]
    (already multiplied by 1/√d), ``key`` [B, N, d, E+D], ``value`` [B, d, E+D] (shared by
    the N heads), ``attn_residual`` and ``lstm_residual`` [B, D, H]: the contract's
    :func:`~fleetcast.contract.step_graphs.interpretable_attention` and ``head_post`` take
    it from there.
    """

    def forward(  # type: ignore[override]  # the step graphs' head takes other inputs
        self,
        encoder_embedding: torch.Tensor,
        decoder_embedding: torch.Tensor,
        static_cat: torch.Tensor,
        static_cont: torch.Tensor,
        encoder_lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        m = self.tft
        e = self.encoder_width
        # The static selection stays unfused here: once per window it costs next to
        # nothing, and fused it measured 9 % slower in calls of 8 windows (ONNX Runtime
        # fuses the head's layer norms differently).
        static_embedding = _static_embedding(m, _input_vectors(m, static_cat, static_cont))
        attn_input, lstm_output = _pre_attention(
            self, static_embedding, encoder_embedding, decoder_embedding, encoder_lengths
        )
        query, key, value = attention_projections(m.multihead_attn, attn_input, e)
        return query, key, value, attn_input[:, e:], lstm_output[:, e:]


class HeadPost(ExportableTFT):
    """From the attention's mean over heads to quantiles (step graphs' ``head_post``).

    ``forward(attention [B, D, d], attn_residual [B, D, H], lstm_residual [B, D, H],
    target_scale [B, T, 2])`` returns what :class:`ExportableTFT` returns.

    The targets' output layers run as one matrix product over their stacked weights and the
    de-normalisation as one broadcast over targets (the full graph does both per target:
    about 45 of this graph's 82 nodes at one window, each costing ONNX Runtime's per-node
    time). Same values up to float32 summation order.
    """

    def __init__(
        self, tft: TemporalFusionTransformer, encoder_width: int, prediction_length: int
    ) -> None:
        super().__init__(tft, encoder_width, prediction_length)
        layers = list(tft.output_layer) if tft.n_targets > 1 else [tft.output_layer]
        with torch.no_grad():
            self.register_buffer(
                "out_weight", torch.cat([layer.weight for layer in layers]).T.contiguous()
            )  # [H, T·Q]
            self.register_buffer("out_bias", torch.cat([layer.bias for layer in layers]))
        self.n_quantiles = int(layers[0].out_features)
        if any(layer.out_features != self.n_quantiles for layer in layers):
            raise ValueError("every target's output layer must give the same number of quantiles")
        self.register_buffer(
            "log1p", torch.tensor([t == "log1p" for t in self.transforms])[None, :, None, None]
        )

    def forward(  # type: ignore[override]  # the step graphs' head takes other inputs
        self,
        attention: torch.Tensor,
        attn_residual: torch.Tensor,
        lstm_residual: torch.Tensor,
        target_scale: torch.Tensor,
    ) -> torch.Tensor:
        m = self.tft
        output = m.post_attn_gate_norm(m.multihead_attn.w_h(attention), attn_residual)
        output = m.pre_output_gate_norm(m.pos_wise_ff(output), lstm_residual)
        y = torch.matmul(output, self.out_weight) + self.out_bias  # [B, D, T·Q]
        y = y.reshape(-1, self.prediction_length, len(self.transforms), self.n_quantiles)
        y = y.permute(0, 2, 1, 3)  # [B, T, D, Q]
        y = y * target_scale[:, :, 1, None, None] + target_scale[:, :, 0, None, None]
        if "log1p" in self.transforms:
            # exp(x) - 1 as in _post_attention; Where picks it for the log1p targets only (an
            # identity target's exp may overflow to inf and is discarded).
            y = torch.where(self.log1p, torch.exp(y) - 1.0, y)
        return y


def reference_forward(
    tft: TemporalFusionTransformer,
    encoder_cat: torch.Tensor,
    encoder_cont: torch.Tensor,
    encoder_lengths: torch.Tensor,
    decoder_cat: torch.Tensor,
    decoder_cont: torch.Tensor,
    target_scale: torch.Tensor,
) -> torch.Tensor:
    """The unmodified pytorch-forecasting forward on the same tensors: the parity reference.

    The encoder inputs are cut to the batch's longest window first, exactly as
    pytorch-forecasting's collate function would have padded them. Shapes as in
    :meth:`ExportableTFT.forward`; returns float32 [B, n_target, D, n_quantile].
    """
    width = int(encoder_lengths.max())
    n_target = target_scale.shape[1]
    x = {
        "encoder_cat": encoder_cat[:, :width],
        "encoder_cont": encoder_cont[:, :width],
        "encoder_lengths": encoder_lengths,
        "decoder_cat": decoder_cat,
        "decoder_cont": decoder_cont,
        "decoder_lengths": torch.full_like(encoder_lengths, decoder_cat.shape[1]),
        "target_scale": [target_scale[:, i] for i in range(n_target)]
        if tft.n_targets > 1
        else target_scale[:, 0],
    }
    with torch.no_grad():
        prediction = tft(x)["prediction"]
    if tft.n_targets == 1:
        prediction = [prediction]
    return torch.stack(list(prediction), dim=1)
