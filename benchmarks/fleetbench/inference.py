"""Benchmark 1: inference per server — ONNX Runtime (the appliance's session) vs PyTorch.

Contenders, on the same model and the same windows (the last E steps of each server of a
simulated fleet), at each fleet size:

- ``ort``: what the appliance runs (:func:`fleetcast.appliance.model.load_model`: all graph
  optimisations, sequential execution, one single-threaded call per core), fed in chunks
  of the appliance's batch size, as ``Engine._infer`` does. For a model with step graphs
  (docs/MODEL_FORMAT.md#step-cache) that is the step cache at steady state: the timed
  calls alternate between the windows of two consecutive steps, so every call finds its
  cache one step behind and computes exactly one new encoder and one new decoder row per
  server (the row hashing, the step graphs, the gathering and the head are all timed);
- ``ort_full``: for a model with step graphs, the full graph on the same windows (what the
  appliance runs with ``--no-step-cache``);
- ``torch_forward``: the raw PyTorch forward of the same bundle (``model(x)`` under
  ``torch.inference_mode()`` over pre-collated batches);
- ``predict_dataloader``: pytorch-forecasting's ``predict()`` on a prepared DataLoader;
- ``predict_dataframe``: ``TimeSeriesDataSet.from_parameters(…, predict=True)`` on the
  windows' DataFrame plus ``predict()`` — what ``predict(dataframe)`` does internally.

Input preparation (windows, tensors, frames) is excluded from every contender; benchmark 2
times it. Reported per server: median and spread over repeated runs, and the ratios.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetbench.stats import Target, ratio, summarize, time_calls, time_interleaved

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fleetbench.model import PreparedModel

__all__ = ["TARGETS", "run_inference"]

log = logging.getLogger("fleetbench")

PREDICT_BATCH = 64
"""pytorch-forecasting's own ``predict()`` batch size (its default), for the PyTorch side."""

TARGETS: tuple[Target, ...] = (
    Target("inference.ort_ms_per_server@1000", "ONNX Runtime as the appliance runs it (the step cache at steady state, when the model has one), amortised per server at 1,000 servers", 0.25, "max", "ms"),
    Target("inference.ort_ms@1", "ONNX Runtime as the appliance runs it, single-server path", 2.0, "max", "ms"),
    Target("inference.speedup_vs_predict@90", "per server, the appliance's ONNX Runtime vs the faster predict() path at 90 servers", 20.0, "min", "×", quick_limit=1.0),
    Target("inference.speedup_vs_predict@1", "per server, the appliance's ONNX Runtime vs the faster predict() path at 1 server", 100.0, "min", "×", quick_limit=5.0),
)  # fmt: skip


def _ort_runner(model_dir: Any, feed: dict[str, np.ndarray], threads: int = 0) -> Callable[[], Any]:
    """The full graph, as ``Engine._infer`` runs it without a step cache."""
    from fleetcast.appliance.model import load_model

    loaded = load_model(model_dir, ["CPUExecutionProvider"], threads, step_cache=False)
    bounds = loaded.bounds(int(feed["encoder_lengths"].shape[0]))  # as Engine._infer

    def run() -> np.ndarray:  # as Engine._infer: its batches, `loaded.workers` at once
        parts = loaded.run_all([{k: v[lo:hi] for k, v in feed.items()} for lo, hi in bounds])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return run


class _CachedRunner:
    """The step cache at steady state (module docstring). ``feeds``: the windows ending at
    step ``last - 1`` and at ``last``; calls alternate between them."""

    def __init__(
        self,
        loaded: Any,
        feeds: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
        last: int,
    ) -> None:
        from fleetcast.appliance.step_cache import StepCache
        from fleetcast.appliance.windows import WindowInputs

        self.loaded = loaded
        spec = loaded.spec
        self.inputs = [WindowInputs(**feed) for feed in feeds]
        n = self.inputs[0].capacity
        self.idx = np.arange(n, dtype=np.int64)
        self.ends = [np.full(n, last - 1, dtype=np.int64), np.full(n, last, dtype=np.int64)]
        self.cache = StepCache(
            n, spec.encoder_length, spec.prediction_length, loaded.embedding_size
        )
        self.bounds = loaded.bounds(n, step_cache=True)
        self.turn = 0
        self.computed = 0
        self()  # fill the cache with both steps' rows; from here every call is steady state
        self()
        self()
        if self.computed != 2 * n:
            raise RuntimeError(f"step cache not at steady state: {self.computed} rows, {n} servers")

    def run(self, which: int) -> np.ndarray:
        """As Engine._infer with its step cache, on the windows ``which`` (0 or 1)."""
        win = self.inputs[which]
        rows, parts = self.cache.forecast(self.loaded, win, self.idx, self.ends[which], self.bounds)
        self.computed = rows[1]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __call__(self) -> np.ndarray:
        self.turn += 1
        return self.run(self.turn % 2)


def _cached_runner(
    model_dir: Any, feeds: tuple[dict[str, np.ndarray], dict[str, np.ndarray]], last: int
) -> _CachedRunner | None:
    """The appliance's step cache on these windows; None when the model has no step graphs."""
    from fleetcast.appliance.model import load_model

    loaded = load_model(model_dir, ["CPUExecutionProvider"], 0, step_cache=True)
    return None if loaded.steps is None else _CachedRunner(loaded, feeds, last)


class _TorchSide:
    """The bundle's PyTorch model and the pytorch-forecasting objects of one fleet's windows."""

    def __init__(self, bundle: Any, fleet: Any) -> None:
        from fleetcast.trainer.dataset import GROUP_ID
        from fleetcast.trainer.predict import window_frame

        self.bundle = bundle
        cfg = bundle.dataset_config
        lag = cfg.day_steps if cfg.day_ago else 0  # day-ago inputs read a day further back
        frame = fleet.frame(cfg.max_encoder_length + lag + 1)
        last = int(frame["time_idx"].max())
        self.windows = [(name, last) for name in fleet.names]
        self.wf = window_frame(frame, self.windows, cfg)
        params = dict(bundle.dataset_parameters())
        params["categorical_encoders"] = {
            k: v
            for k, v in params["categorical_encoders"].items()
            if k not in (GROUP_ID, f"__group_id__{GROUP_ID}")
        }
        self.params = params
        self.batch = min(len(self.windows), PREDICT_BATCH)
        self.dataset = self._dataset()
        self.loader = self.dataset.to_dataloader(train=False, batch_size=self.batch)
        self.batches = [x for x, _ in self.loader]

    def _dataset(self) -> Any:
        from pytorch_forecasting import TimeSeriesDataSet

        return TimeSeriesDataSet.from_parameters(self.params, self.wf, predict=True)

    def _predict(self, data: Any, *, index: bool = False) -> Any:
        return self.bundle.model.predict(
            data,
            mode="quantiles",
            return_index=index,
            batch_size=self.batch,
            trainer_kwargs={
                "accelerator": "cpu",
                "logger": False,
                "enable_progress_bar": False,
                "enable_model_summary": False,
            },
        )

    def predict_dataframe(self) -> Any:
        return self._predict(self._dataset())

    def predict_dataloader(self) -> Any:
        return self._predict(self.loader)

    def forward(self) -> Any:
        import torch

        with torch.inference_mode():
            return [self.bundle.model(x)["prediction"] for x in self.batches]


def _quiet() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_inference(
    prepared: PreparedModel,
    sizes: Sequence[int],
    repeats: dict[int, int],
    *,
    baseline_max: int,
    budget_s: float,
) -> dict[str, Any]:
    """Measure every contender at every size; returns rows, ratios and the target values."""
    from fleetbench.fleet import simulate_fleet
    from fleetcast.contract.features import ModelSpec

    _quiet()
    bundle = None
    if prepared.has_bundle:
        from fleetcast.trainer.bundle import load_bundle

        bundle = load_bundle(prepared.model_dir)
    import onnxruntime as ort

    meta = ort.InferenceSession(
        str(prepared.onnx_path), providers=["CPUExecutionProvider"]
    ).get_modelmeta()
    spec = ModelSpec.from_metadata(meta.custom_metadata_map)
    biggest = max(sizes)
    fleet_all = simulate_fleet(biggest, spec.history_steps + 3)
    rows: list[dict[str, Any]] = []
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    agreement: dict[str, Any] = {}
    checked = [s for s in sizes if s <= min(baseline_max, 1000)]
    agreement_size = max(checked) if checked else None
    for n in sizes:
        fleet = fleet_all.servers(n)
        feed = fleet.model_inputs(spec).as_feed()
        reps = repeats.get(n, 3)
        before = fleet.steps(None, -1).model_inputs(spec).as_feed()
        last = int(fleet.timestamps[-1]) // spec.step_seconds
        cached = _cached_runner(prepared.model_dir, (before, feed), last)
        contenders: dict[str, Callable[[], Any]] = {}
        if cached is not None:
            contenders["ort"] = cached
            contenders["ort_full"] = _ort_runner(prepared.model_dir, feed)
        else:
            contenders["ort"] = _ort_runner(prepared.model_dir, feed)
        note = ""
        torch_side = None
        if bundle is not None and n <= baseline_max:
            torch_side = _TorchSide(bundle, fleet)
            contenders["torch_forward"] = torch_side.forward
            contenders["predict_dataloader"] = torch_side.predict_dataloader
            contenders["predict_dataframe"] = torch_side.predict_dataframe
        elif bundle is None:
            note = "PyTorch baselines need the bundle (model.safetensors) beside model.onnx"
        else:
            note = f"PyTorch baselines run up to {baseline_max} servers (time bound)"
        if note:
            notes[f"inference.speedup_vs_predict@{n}"] = note
        log.info("inference: %s at %d servers (%d rounds)", ", ".join(contenders), n, reps)
        timed = time_interleaved(contenders, reps, warmup=1, budget_s=budget_s)
        # The appliance's path alone in a tight loop, for comparison only: warm from its
        # own previous call, it ran up to 2x faster at 1 server than interleaved (after
        # even a 5 ms pause), which is what an appliance forecasting once per step sees.
        timed["ort_warm"] = time_calls(contenders["ort"], reps, warmup=1, budget_s=budget_s)
        summaries = {name: summarize(ms).scaled(1.0 / n) for name, ms in timed.items()}
        if torch_side is not None and n == agreement_size:
            out = contenders["ort"]() if cached is None else cached.run(1)  # the newest windows
            agreement = _agreement(out, torch_side, n)
        row: dict[str, Any] = {
            "servers": n,
            "per_server_ms": {k: v.to_dict() for k, v in summaries.items()},
            "note": note,
        }
        speedups = {k: ratio(v, summaries["ort"]) for k, v in summaries.items() if k != "ort"}
        row["speedup_of_ort"] = {k: round(v, 2) for k, v in speedups.items()}
        rows.append(row)
        values[f"inference.ort_ms_per_server@{n}"] = summaries["ort"].median
        if n == 1:
            values["inference.ort_ms@1"] = summaries["ort"].median
        predicts = [
            speedups[k] for k in ("predict_dataloader", "predict_dataframe") if k in speedups
        ]
        if predicts:
            values[f"inference.speedup_vs_predict@{n}"] = min(predicts)
    return {
        "encoder_length": spec.encoder_length,
        "prediction_length": spec.prediction_length,
        "rows": rows,
        "agreement": agreement,
        "timing": "interleaved: each round times one call of every contender, order rotated",
        "target_values": values,
        "target_notes": notes,
    }


def _agreement(ort_out: np.ndarray, side: _TorchSide, n: int) -> dict[str, Any]:
    """ORT (inputs from the numpy reference) vs predict() (pytorch-forecasting's own inputs)."""
    pred = side._predict(side.loader, index=True)
    index = pred.index
    outputs = pred.output if isinstance(pred.output, list | tuple) else [pred.output]
    stacked = np.stack([o.detach().cpu().numpy() for o in outputs], axis=1).astype(np.float32)
    order = {name: i for i, name in enumerate(f"{s}@{e}" for s, e in side.windows)}
    rows = [order[str(k)] for k in index["server_name"].tolist()]
    ort_sorted = ort_out[rows]
    diff = np.abs(ort_sorted - stacked)
    rel = diff / np.maximum(np.abs(stacked), 0.01)
    # As the exporter's parity check: per target, relative to its largest |value|.
    axes = (0, 2, 3)
    rel_range = diff.max(axis=axes) / np.maximum(np.abs(stacked).max(axis=axes), 1e-12)
    return {
        "servers": n,
        "max_abs": float(diff.max()),
        "max_rel": float(rel.max()),
        "max_rel_range": float(rel_range.max()),
        "what": "ORT on build_inputs tensors vs predict() on pytorch-forecasting's own "
        "dataloader, same windows (real units)",
    }
