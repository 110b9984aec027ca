"""The step cache: each window row's variable-selection output, computed once per server.

For a model with step graphs (:mod:`fleetcast.contract.step_graphs`, docs/MODEL_FORMAT.md
#step-cache) a row's embedding is a function of the row alone. When a server's window moves
by one step, all but one of its E encoder rows and 95 of its 96 decoder rows are rows it
had last time; only the new ones go through the step graphs, and the head runs on the cached
embeddings. The full graph's variable selection was about 63 % of its work.

The cache is content-addressed: a row is a hit only when the slot holds the same absolute
step *and* a 64-bit hash of the row's exact bytes (every categorical code and every real's
float32 bits, static columns included) matches. Anything that changes a row — a late
sample, a forward fill, a new encoder length during cold start, another profile — changes
its hash, and the row is recomputed. Slots are ``step % E`` (encoder) and ``step % D``
(decoder) per server: a window's steps are consecutive, so they never share a slot.

Per forecast (:meth:`StepCache.prepare`, under the engine's forecast lock):

1. one Numba pass hashes every valid row and lists the misses;
2. the misses go through the step graphs in chunks (on the inference workers), and the
   results are stored in their slots;
3. per batch of windows, :meth:`StepCache.head_feed` gathers the embeddings (zeros for
   padding rows) into that batch's head inputs; the workers run ``head_pre``, the
   attention (:mod:`fleetcast.appliance.attention`) and ``head_post``.

Memory: ``(E + D) · (4·H + 16)`` bytes per server slot (28 KB for the default model, E 96),
grown with the fleet, never above the engine's capacity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fleetcast.appliance.step_kernels import compiled
from fleetcast.contract.step_graphs import STEP_INPUTS

if TYPE_CHECKING:
    import onnxruntime as ort

    from fleetcast.appliance.model import LoadedModel
    from fleetcast.appliance.windows import WindowInputs

__all__ = ["MISS_CHUNK", "PARALLEL_MISSES", "StepCache", "open_step_graphs"]

MISS_CHUNK = 256
"""Rows per step-graph call for the misses. ONNX Runtime's arena keeps the activations of
each session's largest call: at 1,000 servers, chunks of 4,096 rows raised the peak RSS by
46 MB, chunks of 256 by almost nothing, and a cold cache (384 rows per server) took 2.3
instead of 2.1 s to fill (docs/BENCHMARKS.md)."""

PARALLEL_MISSES = 64
"""Fewer rows to compute than this run on the calling thread, not on the workers."""

_EMPTY = np.int64(-1)


class StepCache:
    """Cached step embeddings of up to ``capacity`` server slots (see the module docstring).

    ``encoder_length`` E, ``prediction_length`` D, ``embedding_size`` H. Not thread-safe:
    the engine calls :meth:`prepare` and :meth:`head_feed` under its forecast lock.
    """

    def __init__(
        self, capacity: int, encoder_length: int, prediction_length: int, embedding_size: int
    ) -> None:
        self.capacity = int(capacity)
        self.e = int(encoder_length)
        self.d = int(prediction_length)
        self.h = int(embedding_size)
        self._slots = 0
        self._alloc(0)
        self.hits = 0
        """Rows served from the cache, all forecasts together."""
        self.misses = 0
        """Rows computed by the step graphs, all forecasts together."""
        self._idx = np.zeros(0, dtype=np.int64)
        self._ends = np.zeros(0, dtype=np.int64)
        self._lengths = np.zeros(0, dtype=np.int64)
        self._miss = {"encoder": np.zeros((0, 2), np.int64), "decoder": np.zeros((0, 2), np.int64)}
        self._hashes = {"encoder": np.zeros(0, np.uint64), "decoder": np.zeros(0, np.uint64)}

    def _alloc(self, slots: int) -> None:
        """Grow to ``slots`` server slots, keeping what is cached (all or nothing: a failed
        allocation leaves the cache as it was)."""
        new = {
            "enc_step": np.full((slots, self.e), _EMPTY, dtype=np.int64),
            "enc_hash": np.zeros((slots, self.e), dtype=np.uint64),
            "enc_emb": np.zeros((slots, self.e, self.h), dtype=np.float32),
            "dec_step": np.full((slots, self.d), _EMPTY, dtype=np.int64),
            "dec_hash": np.zeros((slots, self.d), dtype=np.uint64),
            "dec_emb": np.zeros((slots, self.d, self.h), dtype=np.float32),
        }
        n = min(self._slots, slots)
        if n:
            for name, array in new.items():
                array[:n] = getattr(self, name)[:n]
        for name, array in new.items():
            setattr(self, name, array)
        self._slots = slots

    @property
    def slots(self) -> int:
        """Server slots allocated so far."""
        return self._slots

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache arrays."""
        return sum(
            getattr(self, n).nbytes
            for n in ("enc_step", "enc_hash", "enc_emb", "dec_step", "dec_hash", "dec_emb")
        )

    def forget(self, slots: np.ndarray) -> None:
        """Drop every row cached for server ``slots`` (forgotten servers', whose slots a new
        server may take). Not needed for correctness — a row is a hit only for the same
        step and the same bytes, whichever server sent them — but a reused slot then starts
        as empty as a new one. Under the forecast lock, like :meth:`prepare`."""
        slots = np.asarray(slots, dtype=np.int64)
        slots = slots[slots < self._slots]
        self.enc_step[slots] = _EMPTY
        self.dec_step[slots] = _EMPTY

    def warm_up(self, inputs: WindowInputs) -> None:
        """Compile (or load from Numba's cache) the kernels now, on no windows."""
        from fleetcast.appliance.attention import attend

        k = compiled()
        empty = np.zeros(0, dtype=np.int64)
        pairs = np.zeros((0, 2), dtype=np.int64)
        hashes = np.zeros(0, dtype=np.uint64)
        k["lookup"](
            empty, empty, empty,
            inputs.encoder_cat, inputs.encoder_cont, inputs.decoder_cat, inputs.decoder_cont,
            self.enc_step, self.enc_hash, self.dec_step, self.dec_hash,
            pairs, pairs, hashes, hashes,
        )  # fmt: skip
        rows = np.zeros((0, self.h), dtype=np.float32)
        k["store"](empty, empty, empty, pairs, hashes, rows, self.e, self.enc_step, self.enc_hash, self.enc_emb, False)  # fmt: skip
        enc = np.zeros((0, self.e, self.h), dtype=np.float32)
        dec = np.zeros((0, self.d, self.h), dtype=np.float32)
        k["gather"](empty, empty, empty, 0, 0, self.enc_emb, self.dec_emb, enc, dec)
        attend(
            np.zeros((0, 1, self.d, 4), np.float32),
            np.zeros((0, 1, 4, self.e + self.d), np.float32),
            np.zeros((0, 4, self.e + self.d), np.float32),
            empty,
        )

    def prepare(
        self,
        inputs: WindowInputs,
        idx: np.ndarray,
        ends: np.ndarray,
        lengths: np.ndarray,
        run_steps: Any,
        workers: int = 1,
    ) -> tuple[int, int]:
        """Make the cache hold every row of windows ``0..len(idx)`` of ``inputs``.

        ``idx`` (B,) server slots, ``ends`` (B,) each window's last closed step, ``lengths``
        (B,) its encoder length. ``run_steps([(which, feed), ...]) -> list of (m, H)
        arrays`` runs each feed through the ``"encoder"`` or ``"decoder"`` step graph.
        Returns (rows hit, rows computed). ``workers``: step-graph calls that may run at once
        (their feeds are built ``workers`` chunks at a time).
        """
        k = compiled()
        b = int(idx.shape[0])
        if b == 0:
            return 0, 0
        need = int(idx.max()) + 1
        if need > self._slots:
            self._alloc(min(max(need, 2 * self._slots, 64), max(self.capacity, need)))
        self._idx = np.ascontiguousarray(idx, dtype=np.int64)
        self._ends = np.ascontiguousarray(ends, dtype=np.int64)
        self._lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        total_enc = int(self._lengths.sum())
        miss_enc, hash_enc = self._scratch("encoder", total_enc)
        miss_dec, hash_dec = self._scratch("decoder", b * self.d)
        me, md = k["lookup"](
            self._idx,
            self._ends,
            self._lengths,
            inputs.encoder_cat,
            inputs.encoder_cont,
            inputs.decoder_cat,
            inputs.decoder_cont,
            self.enc_step,
            self.enc_hash,
            self.dec_step,
            self.dec_hash,
            miss_enc,
            miss_dec,
            hash_enc,
            hash_dec,
        )
        kinds = {
            "encoder": (miss_enc[:me], hash_enc[:me], inputs.encoder_cat, inputs.encoder_cont,
                        self.e, self.enc_step, self.enc_hash, self.enc_emb),
            "decoder": (miss_dec[:md], hash_dec[:md], inputs.decoder_cat, inputs.decoder_cont,
                        self.d, self.dec_step, self.dec_hash, self.dec_emb),
        }  # fmt: skip
        # The misses in chunks of MISS_CHUNK rows, encoder and decoder chunks side by side
        # on the workers. A cold cache misses every row: ``workers`` chunks at a time are
        # computed and stored, so the step graphs' inputs and outputs stay small whatever
        # the fleet's size. A few rows (a small fleet) run on the calling thread: handing
        # them to the pool cost more than it saved (one server: 2.06 instead of 1.55 ms).
        if me + md < PARALLEL_MISSES:
            workers = 1
        chunks = [
            (which, lo, min(lo + MISS_CHUNK, kind[0].shape[0]))
            for which, kind in kinds.items()
            for lo in range(0, kind[0].shape[0], MISS_CHUNK)
        ]
        for first in range(0, len(chunks), max(1, workers)):
            group = chunks[first : first + max(1, workers)]
            feeds = []
            for which, lo, hi in group:
                miss, _, cat, cont = kinds[which][:4]
                rows_b, rows_t = miss[lo:hi, 0], miss[lo:hi, 1]
                feeds.append(
                    (
                        which,
                        {STEP_INPUTS[0]: cat[rows_b, rows_t], STEP_INPUTS[1]: cont[rows_b, rows_t]},
                    )
                )
            for (which, lo, hi), computed in zip(group, run_steps(feeds), strict=True):
                miss, hashes, _, _, width, step, hsh, emb = kinds[which]
                if computed.shape != (hi - lo, self.h):
                    raise RuntimeError(
                        f"the {which} step graph returned {computed.shape} for "
                        f"{hi - lo} rows of width {self.h}"
                    )
                k["store"](
                    self._idx,
                    self._ends,
                    self._lengths,
                    miss[lo:hi],
                    hashes[lo:hi],
                    np.ascontiguousarray(computed, dtype=np.float32),
                    width,
                    step,
                    hsh,
                    emb,
                    which == "decoder",
                )
        computed_rows = me + md
        hit = total_enc + b * self.d - computed_rows
        self.hits += hit
        self.misses += computed_rows
        return hit, computed_rows

    def forecast(
        self,
        model: LoadedModel,
        inputs: WindowInputs,
        idx: np.ndarray,
        ends: np.ndarray,
        bounds: list[tuple[int, int]],
    ) -> tuple[tuple[int, int], list[np.ndarray]]:
        """((rows hit, rows computed), quantiles per batch ``bounds``) of windows
        ``0..len(idx)``: :meth:`prepare`, then per batch on ``model``'s workers ``head_pre``,
        the attention kernel and ``head_post``."""
        from fleetcast.appliance.attention import attend
        from fleetcast.contract.model_spec import OUTPUT_NAME

        if model.steps is None:
            raise RuntimeError("a step cache needs a model with step graphs")
        b = int(idx.shape[0])
        rows = self.prepare(
            inputs, idx, ends, inputs.encoder_lengths[:b], model.run_steps, model.workers
        )
        pre = model.steps["head_pre"]
        post = model.steps["head_post"]

        def run_head(span: tuple[int, int]) -> np.ndarray:
            feed = self.head_feed(inputs, *span)
            query, key, value, attn_residual, lstm_residual = pre.run(None, feed)
            return post.run(
                [OUTPUT_NAME],
                {
                    "attention": attend(query, key, value, feed["encoder_lengths"]),
                    "attn_residual": attn_residual,
                    "lstm_residual": lstm_residual,
                    "target_scale": inputs.target_scale[span[0] : span[1]],
                },
            )[0]

        return rows, model.map(run_head, bounds)

    def _scratch(self, which: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The miss list and hashes of ``which``, reused between forecasts (grown as needed)."""
        if self._miss[which].shape[0] < rows:
            self._miss[which] = np.empty((rows, 2), dtype=np.int64)
            self._hashes[which] = np.empty(rows, dtype=np.uint64)
        return self._miss[which], self._hashes[which]

    def head_feed(self, inputs: WindowInputs, lo: int, hi: int) -> dict[str, np.ndarray]:
        """The ``head_pre`` graph's feed for windows ``lo:hi`` of the last :meth:`prepare`."""
        n = hi - lo
        enc = np.empty((n, self.e, self.h), dtype=np.float32)
        dec = np.empty((n, self.d, self.h), dtype=np.float32)
        compiled()["gather"](
            self._idx, self._ends, self._lengths, lo, hi, self.enc_emb, self.dec_emb, enc, dec
        )
        return {
            "encoder_embedding": enc,
            "decoder_embedding": dec,
            "static_cat": np.ascontiguousarray(inputs.encoder_cat[lo:hi, 0]),
            "static_cont": np.ascontiguousarray(inputs.encoder_cont[lo:hi, 0]),
            "encoder_lengths": inputs.encoder_lengths[lo:hi],
        }


def open_step_graphs(
    metadata: dict[str, str], options: ort.SessionOptions
) -> tuple[dict[str, ort.InferenceSession] | None, int]:
    """The step graphs' CPU sessions (with ``options``) and ``H``, or (None, 0) when the
    model has none or has them in another version than this appliance reads (logged: the
    appliance then runs the full graph, as without a cache). Raises
    :class:`~fleetcast.appliance.model.ModelError` for graphs that are malformed, do not
    load, or do not fit their metadata."""
    import logging

    import onnxruntime as ort

    from fleetcast.appliance.model import REEXPORT, ModelError
    from fleetcast.contract.errors import ContractError
    from fleetcast.contract.model_spec import OUTPUT_NAME
    from fleetcast.contract.step_graphs import (
        GRAPH_NAMES,
        HEAD_POST_INPUTS,
        HEAD_PRE_INPUTS,
        HEAD_PRE_OUTPUTS,
        STEP_GRAPHS_VERSION,
        STEP_INPUTS,
        STEP_OUTPUT,
        StepGraphs,
        step_graphs_version,
    )

    version = step_graphs_version(metadata)
    if version is not None and version != STEP_GRAPHS_VERSION:
        fix = (
            "upgrade the appliance to the exporter's version"
            if version > STEP_GRAPHS_VERSION
            else "re-export the model with `fleetcast export`"
        )
        logging.getLogger("fleetcast.appliance").warning(
            "The model's step graphs are version %d; this appliance reads version %d. It runs "
            "the full graph (no step cache); %s to use the cache "
            "(docs/MODEL_FORMAT.md#step-cache).",
            version,
            STEP_GRAPHS_VERSION,
            fix,
        )
        return None, 0
    try:
        graphs = StepGraphs.from_metadata(metadata)
    except ContractError as exc:
        raise ModelError(exc.what, exc.why, exc.fix, exc.see) from None
    if graphs is None:
        return None, 0
    sessions = {}
    for name in GRAPH_NAMES:
        try:
            sessions[name] = ort.InferenceSession(
                getattr(graphs, name),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # ORT raises several private exception types
            raise ModelError(
                f"ONNX Runtime cannot open the model's {name} step graph: "
                f"{type(exc).__name__}: {str(exc)[:300]}",
                "the step cache would serve forecasts from a graph that does not load.",
                REEXPORT,
                "docs/MODEL_FORMAT.md#step-cache",
            ) from None
    expected = {
        "encoder_steps": (list(STEP_INPUTS), [STEP_OUTPUT]),
        "decoder_steps": (list(STEP_INPUTS), [STEP_OUTPUT]),
        "head_pre": (list(HEAD_PRE_INPUTS), list(HEAD_PRE_OUTPUTS)),
        "head_post": (list(HEAD_POST_INPUTS), [OUTPUT_NAME]),
    }
    for name, session in sessions.items():
        got = (
            [i.name for i in session.get_inputs()],
            [o.name for o in session.get_outputs()],
        )
        width = session.get_outputs()[0].shape[-1]
        if name.endswith("_steps") and isinstance(width, int) and width != graphs.embedding_size:
            raise ModelError(
                f"The model's {name} step graph returns embeddings of width {width}, but its "
                f"metadata says {graphs.embedding_size}.",
                "the step cache stores embeddings of the width the metadata gives.",
                REEXPORT,
                "docs/MODEL_FORMAT.md#step-cache",
            )
        if got != expected[name]:
            raise ModelError(
                f"The model's {name} step graph has inputs {got[0]} and outputs {got[1]}, "
                f"expected {expected[name][0]} and {expected[name][1]}.",
                "the appliance feeds and reads the step graphs by these names.",
                REEXPORT,
                "docs/MODEL_FORMAT.md#step-cache",
            )
    return sessions, graphs.embedding_size
