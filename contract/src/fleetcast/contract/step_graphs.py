"""The step graphs: the model split so that per-step work can be computed once and cached.

A model trained with fixed input scaling (docs/MODEL_FORMAT.md#step-cache) computes most of
its work — the variable selection of every encoder and decoder step — from that step's input
row alone. The exporter then embeds, beside the full graph, four smaller ONNX graphs in the
metadata key :data:`STEP_GRAPHS_KEY` (a JSON document; each graph base64-encoded):

- ``encoder_steps``: one encoder row per item — ``step_cat`` int64 [N, n_cat] and
  ``step_cont`` float32 [N, n_real], the same columns as a row of ``encoder_cat`` /
  ``encoder_cont`` — to its variable-selection output ``embedding`` float32 [N, H];
- ``decoder_steps``: the same for decoder rows;
- ``head_pre``: ``encoder_embedding`` [B, E, H] (zeros on padding rows),
  ``decoder_embedding`` [B, D, H], ``static_cat`` [B, n_cat] and ``static_cont`` [B, n_real]
  (row 0 of the window) and ``encoder_lengths`` → the attention's inputs ``query`` [B,
  n_head, D, d] (times 1/√d), ``key`` [B, n_head, d, E+D], ``value`` [B, d, E+D], and the
  residuals ``attn_residual`` and ``lstm_residual`` [B, D, H];
- the attention itself is not a graph: :func:`interpretable_attention` defines it (the
  appliance runs it as a Numba kernel, which keeps each query row's scores in the cache
  instead of streaming a score tensor through memory);
- ``head_post``: ``attention`` [B, D, d], the two residuals and ``target_scale`` →
  ``quantiles``.

:func:`composed_forward` runs them on the full graph's feed; it equals the full graph (the
exporter checks it against PyTorch, like the full graph). The appliance runs the step graphs
only for rows it has not seen before (:mod:`fleetcast.appliance.step_cache`).

Numpy only: no torch, no pandas; the graphs are run by whatever ONNX Runtime sessions the
caller opens.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fleetcast.contract.errors import ContractError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "GRAPH_NAMES",
    "HEAD_POST_INPUTS",
    "HEAD_PRE_INPUTS",
    "HEAD_PRE_OUTPUTS",
    "STEP_GRAPHS_KEY",
    "STEP_GRAPHS_VERSION",
    "STEP_INPUTS",
    "STEP_OUTPUT",
    "StepGraphs",
    "attention_mask",
    "composed_forward",
    "interpretable_attention",
    "step_graphs_version",
    "step_stable",
]

STEP_GRAPHS_KEY = "fleetcast.step_graphs"
"""The metadata key of the step graphs (absent: the model has none)."""
STEP_GRAPHS_VERSION = 2
"""Version of the document under :data:`STEP_GRAPHS_KEY` (1: one ``head`` graph with the
attention inside; no longer read, the appliance then runs the full graph)."""
GRAPH_NAMES: tuple[str, ...] = ("encoder_steps", "decoder_steps", "head_pre", "head_post")
STEP_INPUTS: tuple[str, str] = ("step_cat", "step_cont")
"""Inputs of ``encoder_steps`` and ``decoder_steps``; their output is ``embedding``."""
STEP_OUTPUT = "embedding"
HEAD_PRE_INPUTS: tuple[str, ...] = (
    "encoder_embedding",
    "decoder_embedding",
    "static_cat",
    "static_cont",
    "encoder_lengths",
)
"""Inputs of ``head_pre``, in positional order."""
HEAD_PRE_OUTPUTS: tuple[str, ...] = ("query", "key", "value", "attn_residual", "lstm_residual")
"""Outputs of ``head_pre``, in order."""
HEAD_POST_INPUTS: tuple[str, ...] = ("attention", "attn_residual", "lstm_residual", "target_scale")
"""Inputs of ``head_post``, in positional order; its output is the full graph's ``quantiles``."""

_UNSTABLE_SOURCES = ("target", "target_center", "target_scale")
_DOC = "docs/MODEL_FORMAT.md#step-cache"


def step_stable(real_sources: Mapping[str, str]) -> bool:
    """True when no real input depends on the window a step sits in (name → RealScaler source).

    Window-scaled targets and the window's centre/scale change every row of a window when
    the window moves by one step; calendar features, fixed-scaled levels and the encoder
    length (constant once a server has a full window) do not.
    """
    return not any(source in _UNSTABLE_SOURCES for source in real_sources.values())


class _Session(Protocol):
    def run(self, output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class StepGraphs:
    """The four serialized graphs and the embedding width ``H``."""

    encoder_steps: bytes
    decoder_steps: bytes
    head_pre: bytes
    head_post: bytes
    embedding_size: int

    def to_metadata(self) -> dict[str, str]:
        """``{STEP_GRAPHS_KEY: JSON}`` for the model's metadata_props."""
        doc = {
            "version": STEP_GRAPHS_VERSION,
            "embedding_size": self.embedding_size,
            **{name: base64.b64encode(getattr(self, name)).decode("ascii") for name in GRAPH_NAMES},
        }
        return {STEP_GRAPHS_KEY: json.dumps(doc, separators=(",", ":"))}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> StepGraphs | None:
        """The graphs in ``metadata``, None when it has none; ContractError when malformed or
        of another version (:func:`step_graphs_version` tells which)."""
        raw = metadata.get(STEP_GRAPHS_KEY)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            if int(doc["version"]) != STEP_GRAPHS_VERSION:
                raise ValueError(
                    f"version {doc['version']} (this fleetcast reads {STEP_GRAPHS_VERSION})"
                )
            graphs = {name: base64.b64decode(doc[name], validate=True) for name in GRAPH_NAMES}
            size = int(doc["embedding_size"])
            if size < 1:
                raise ValueError(f"embedding_size {size}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ContractError(
                f"The model's step graphs ({STEP_GRAPHS_KEY}) are malformed: {exc}.",
                "the appliance would cache per-step results of a graph it cannot trust.",
                "Re-export the model with this version of fleetcast (`fleetcast export`).",
                _DOC,
            ) from None
        return cls(embedding_size=size, **graphs)


def step_graphs_version(metadata: Mapping[str, str]) -> int | None:
    """The version of the step graphs in ``metadata``; None when absent or unreadable."""
    try:
        return int(json.loads(metadata[STEP_GRAPHS_KEY])["version"])
    except (KeyError, TypeError, ValueError):
        return None


def attention_mask(
    encoder_lengths: np.ndarray, encoder_width: int, decoder_steps: int
) -> np.ndarray:
    """Which keys each decoder step attends to, bool [B, D, E+D] (True: attended).

    The TFT's mask: a window's first ``length`` encoder steps (the rest is padding) and the
    decoder steps *before* the query's own (pytorch-forecasting's causal decoder mask).
    Lengths are 1..E (the appliance forecasts no window shorter than the model's minimum
    encoder length): with length 0 the first decoder step would attend to nothing.
    """
    e, d = int(encoder_width), int(decoder_steps)
    lengths = np.asarray(encoder_lengths)
    enc = np.arange(e)[None, None, :] < lengths[:, None, None]
    dec = np.arange(d)[None, :] < np.arange(d)[:, None]
    return np.concatenate(
        (
            np.broadcast_to(enc, (lengths.shape[0], d, e)),
            np.broadcast_to(dec[None], (lengths.shape[0], d, d)),
        ),
        axis=2,
    )


def interpretable_attention(
    query: np.ndarray,
    key: np.ndarray,
    value: np.ndarray,
    encoder_lengths: np.ndarray,
    chunk: int = 64,
) -> np.ndarray:
    """The TFT's interpretable attention between ``head_pre`` and ``head_post``.

    ``query`` [B, n_head, D, d] (already times 1/√d), ``key`` [B, n_head, d, E+D], ``value``
    [B, d, E+D], ``encoder_lengths`` [B] (1..E) → float32 [B, D, d]: per head the softmax of ``query ·
    key`` over the keys :func:`attention_mask` allows, times ``value`` (which all heads
    share), averaged over the heads. The reference the appliance's kernel is tested
    against; computed ``chunk`` windows at a time to bound memory.
    """
    query = np.asarray(query, dtype=np.float32)
    key = np.asarray(key, dtype=np.float32)
    value = np.asarray(value, dtype=np.float32)
    b, _, d, _ = query.shape
    width = key.shape[-1]
    out = np.empty((b, d, value.shape[1]), dtype=np.float32)
    for lo in range(0, b, chunk):
        hi = min(lo + chunk, b)
        scores = np.matmul(query[lo:hi], key[lo:hi])  # [c, N, D, E+D]
        allowed = attention_mask(encoder_lengths[lo:hi], width - d, d)[:, None]
        scores = np.where(allowed, scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=-1, keepdims=True)
        # [c, N, D, E+D] · [c, 1, E+D, d] → [c, N, D, d], then the mean over heads
        out[lo:hi] = np.matmul(weights, value[lo:hi, None].swapaxes(-1, -2)).mean(axis=1)
    return out


def composed_forward(
    encoder_steps: _Session,
    decoder_steps: _Session,
    head_pre: _Session,
    head_post: _Session,
    feed: Mapping[str, np.ndarray],
    embedding_size: int,
) -> np.ndarray:
    """The full graph's ``quantiles`` for ``feed`` (its six inputs), through the step graphs.

    Every valid encoder row and every decoder row goes through its step graph; padding rows
    (at or after a window's length) get zero embeddings, which the attention masks out.
    """
    enc_cat = np.asarray(feed["encoder_cat"])
    enc_cont = np.asarray(feed["encoder_cont"])
    lengths = np.asarray(feed["encoder_lengths"])
    dec_cat = np.asarray(feed["decoder_cat"])
    dec_cont = np.asarray(feed["decoder_cont"])
    b, e = enc_cat.shape[:2]
    d = dec_cat.shape[1]
    valid = np.arange(e)[None, :] < lengths[:, None]
    enc_emb = np.zeros((b, e, embedding_size), dtype=np.float32)
    if valid.any():
        enc_emb[valid] = encoder_steps.run(
            None, {STEP_INPUTS[0]: enc_cat[valid], STEP_INPUTS[1]: enc_cont[valid]}
        )[0]
    dec_emb = decoder_steps.run(
        None,
        {
            STEP_INPUTS[0]: dec_cat.reshape(b * d, -1),
            STEP_INPUTS[1]: dec_cont.reshape(b * d, -1),
        },
    )[0].reshape(b, d, embedding_size)
    pre = head_pre.run(
        None,
        {
            "encoder_embedding": enc_emb,
            "decoder_embedding": dec_emb,
            "static_cat": np.ascontiguousarray(enc_cat[:, 0]),
            "static_cont": np.ascontiguousarray(enc_cont[:, 0]),
            "encoder_lengths": lengths,
        },
    )
    query, key, value, attn_residual, lstm_residual = pre
    return head_post.run(
        None,
        {
            "attention": interpretable_attention(query, key, value, lengths),
            "attn_residual": attn_residual,
            "lstm_residual": lstm_residual,
            "target_scale": np.asarray(feed["target_scale"]),
        },
    )[0]
