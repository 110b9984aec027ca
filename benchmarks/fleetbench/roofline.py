"""The model's cost per server and the distance to this machine's measured limits.

- FLOPs per server: ``torch.utils.flop_counter.FlopCounterMode`` over the PyTorch forward
  (matmuls, attention) plus the LSTMs counted analytically (the counter skips them:
  ``2 · 4 · (in + hidden) · hidden`` per step and layer).
- Bytes per server: every tensor each ATen op of the forward reads and writes (a
  ``TorchDispatchMode``), i.e. the traffic of an *unfused* execution — the upper bound a
  fused kernel would cut.
- Time per module: forward hooks on the TFT's top-level submodules, which shows the share
  a per-step cache of the variable-selection outputs could save (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["model_cost", "module_shares", "roofline", "step_cache_roofline"]


def _lstm_flops(model: Any, b: int, e: int, d: int) -> int:
    h = int(model.hparams.hidden_size)
    layers = int(model.hparams.lstm_layers)
    return 2 * 4 * (h + h) * h * (e + d) * layers * b


def model_cost(bundle: Any, batch: dict[str, Any], b: int, e: int, d: int) -> dict[str, Any]:
    """FLOPs and bytes per server of one forward over ``batch`` (``b`` windows)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import FlopCounterMode

    class _Bytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.read = 0
            self.written = 0
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten((args, kwargs))[0]:
                if isinstance(t, torch.Tensor):
                    self.read += t.numel() * t.element_size()
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.written += t.numel() * t.element_size()
            self.ops += 1
            return out

    model = bundle.model
    with torch.no_grad():  # FlopCounterMode's module tracker fails under inference_mode
        with FlopCounterMode(display=False) as counter:
            model(batch)
        matmul = int(counter.get_total_flops())
        by_module = {
            name.split(".", 1)[1]: sum(ops.values()) / b
            for name, ops in counter.get_flop_counts().items()
            if name.count(".") == 1
        }
        tracker = _Bytes()
        with tracker:
            model(batch)
    lstm = _lstm_flops(model, b, e, d)
    params = sum(p.numel() for p in model.parameters())
    return {
        "parameters": int(params),
        "flops_per_server": (matmul + lstm) / b,
        "matmul_flops_per_server": matmul / b,
        "lstm_flops_per_server": lstm / b,
        "bytes_per_server": (tracker.read + tracker.written) / b,
        "aten_ops_per_forward": tracker.ops,
        "matmul_flops_per_server_by_module": {
            k: round(v) for k, v in sorted(by_module.items(), key=lambda kv: -kv[1]) if v > 0
        },
        "batch": b,
    }


def module_shares(bundle: Any, batch: dict[str, Any], repeats: int = 3) -> dict[str, float]:
    """Share of forward time in each top-level TFT submodule (median of ``repeats``)."""
    import statistics

    import torch

    model = bundle.model
    spent: dict[str, list[float]] = {}
    starts: dict[str, float] = {}
    handles = []
    for name, module in model.named_children():

        def pre(_m: Any, _i: Any, name: str = name) -> None:
            starts[name] = time.perf_counter()

        def post(_m: Any, _i: Any, _o: Any, name: str = name) -> None:
            spent.setdefault(name, []).append(time.perf_counter() - starts.pop(name, 0.0))

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    totals = []
    per_run: list[dict[str, float]] = []
    try:
        with torch.inference_mode():
            for _ in range(repeats):
                spent.clear()
                began = time.perf_counter()
                model(batch)
                totals.append(time.perf_counter() - began)
                per_run.append({k: sum(v) for k, v in spent.items()})
    finally:
        for h in handles:
            h.remove()
    total = statistics.median(totals)
    names = sorted({k for run in per_run for k in run})
    shares = {k: statistics.median(run.get(k, 0.0) for run in per_run) / total for k in names}
    shares = {k: round(v, 4) for k, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v > 0.002}
    shares["(total forward ms)"] = round(total * 1000.0, 2)
    return shares


def roofline(
    cost: dict[str, Any], limits: dict[str, float], ms_per_server: float
) -> dict[str, Any]:
    """Achieved GFLOP/s and GB/s at ``ms_per_server`` and their fraction of the limits."""
    seconds = ms_per_server / 1000.0
    gflops = cost["flops_per_server"] / seconds / 1e9
    gbs = cost["bytes_per_server"] / seconds / 1e9
    return {
        "ms_per_server": ms_per_server,
        "achieved_gflops": round(gflops, 3),
        "fraction_of_matmul": round(gflops / limits["matmul_gflops"], 4),
        "fraction_of_skinny_matmul": round(gflops / limits["skinny_matmul_gflops"], 4),
        "achieved_gb_s": round(gbs, 3),
        "fraction_of_bandwidth": round(gbs / limits["memory_gb_s"], 4),
        "floor_ms_per_server_compute": round(
            cost["flops_per_server"] / (limits["matmul_gflops"] * 1e9) * 1000.0, 5
        ),
        "floor_ms_per_server_memory": round(
            cost["bytes_per_server"] / (limits["memory_gb_s"] * 1e9) * 1000.0, 5
        ),
    }


def step_cache_roofline(
    cost: dict[str, Any], limits: dict[str, float], ms_per_server: float, e: int, d: int
) -> dict[str, Any]:
    """The step cache's steady state against the matmul limits.

    Its FLOPs per server are the full forward's less the variable selection of all but one
    encoder and one decoder row (those rows come from the cache); the LSTMs, the enrichment,
    the attention and the output run in full. Bytes are not estimated (the head's traffic is
    not the unfused forward's).
    """
    by_module = cost.get("matmul_flops_per_server_by_module") or {}
    enc = float(by_module.get("encoder_variable_selection", 0.0))
    dec = float(by_module.get("decoder_variable_selection", 0.0))
    flops = cost["flops_per_server"] - enc * (e - 1) / e - dec * (d - 1) / d
    gflops = flops / (ms_per_server / 1000.0) / 1e9
    return {
        "flops_per_server": flops,
        "ms_per_server": ms_per_server,
        "achieved_gflops": round(gflops, 3),
        "fraction_of_matmul": round(gflops / limits["matmul_gflops"], 4),
        "fraction_of_skinny_matmul": round(gflops / limits["skinny_matmul_gflops"], 4),
        "floor_ms_per_server_compute": round(flops / (limits["matmul_gflops"] * 1e9) * 1000, 5),
    }
