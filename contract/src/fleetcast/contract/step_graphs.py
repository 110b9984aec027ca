"""The step graphs: the model split so that per-step work can be computed once and cached.

A model trained with fixed input scaling (docs/MODEL_FORMAT.md#step-cache) computes most of
its work — the variable selection of every encoder and decoder step — from that step's input
row alone. The exporter then embeds, beside the full graph, three smaller ONNX graphs in the
metadata key :data:`STEP_GRAPHS_KEY` (a JSON document; each graph base64-encoded):

- ``encoder_steps``: one encoder row per item — ``step_cat`` int64 [N, n_cat] and
  ``step_cont`` float32 [N, n_real], the same columns as a row of ``encoder_cat`` /
  ``encoder_cont`` — to its variable-selection output ``embedding`` float32 [N, H];
- ``decoder_steps``: the same for decoder rows;
- ``head``: ``encoder_embedding`` [B, E, H] (zeros on padding rows), ``decoder_embedding``
  [B, D, H], ``static_cat`` [B, n_cat] and ``static_cont`` [B, n_real] (row 0 of the
  window), ``encoder_lengths`` and ``target_scale`` as in the full graph → ``quantiles``.

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
    "HEAD_INPUTS",
    "STEP_GRAPHS_KEY",
    "STEP_GRAPHS_VERSION",
    "STEP_INPUTS",
    "STEP_OUTPUT",
    "StepGraphs",
    "composed_forward",
    "step_stable",
]

STEP_GRAPHS_KEY = "fleetcast.step_graphs"
"""The metadata key of the step graphs (absent: the model has none)."""
STEP_GRAPHS_VERSION = 1
"""Version of the document under :data:`STEP_GRAPHS_KEY`."""
GRAPH_NAMES: tuple[str, ...] = ("encoder_steps", "decoder_steps", "head")
STEP_INPUTS: tuple[str, str] = ("step_cat", "step_cont")
"""Inputs of ``encoder_steps`` and ``decoder_steps``; their output is ``embedding``."""
STEP_OUTPUT = "embedding"
HEAD_INPUTS: tuple[str, ...] = (
    "encoder_embedding",
    "decoder_embedding",
    "static_cat",
    "static_cont",
    "encoder_lengths",
    "target_scale",
)
"""Inputs of ``head``, in positional order; its output is the full graph's ``quantiles``."""

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
    """The three serialized graphs and the embedding width ``H``."""

    encoder_steps: bytes
    decoder_steps: bytes
    head: bytes
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
        """The graphs in ``metadata``, None when it has none; ContractError when malformed."""
        raw = metadata.get(STEP_GRAPHS_KEY)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            if int(doc["version"]) != STEP_GRAPHS_VERSION:
                raise ValueError(f"version {doc['version']} (this fleetcast reads 1)")
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


def composed_forward(
    encoder_steps: _Session,
    decoder_steps: _Session,
    head: _Session,
    feed: Mapping[str, np.ndarray],
    embedding_size: int,
) -> np.ndarray:
    """The full graph's ``quantiles`` for ``feed`` (its six inputs), through the step graphs.

    Every valid encoder row and every decoder row goes through its step graph; padding rows
    (at or after a window's length) get zero embeddings, which the head masks out.
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
    return head.run(
        None,
        {
            "encoder_embedding": enc_emb,
            "decoder_embedding": dec_emb,
            "static_cat": np.ascontiguousarray(enc_cat[:, 0]),
            "static_cont": np.ascontiguousarray(enc_cont[:, 0]),
            "encoder_lengths": lengths,
            "target_scale": np.asarray(feed["target_scale"]),
        },
    )[0]
