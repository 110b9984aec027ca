"""Getting faster: latency against model shape (with accuracy beside it), ORT options, chunking.

- **Shapes**: each shape is trained briefly with the project's trainer on the same simulated
  fleet, exported, timed with the appliance's ONNX Runtime session (per server at
  ``batch`` servers, and single-server), and scored by the trainer's evaluation on the same
  held-out tail. Accuracy after a few dozen batches is a *relative* guide between shapes,
  not the production model's accuracy.
- **ORT session options** on the model under test: intra-op threads, graph optimisation
  level, execution mode.
- **Chunking**: one fleet of ``servers`` run as chunks of 1024, 256, 64 and 16 windows (the
  runner's list; the appliance's CPU default is 16, ``execution.default_batch_size``).
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleetbench.model import FULL_SHAPE, ModelShape, train_and_export
from fleetbench.stats import summarize, time_calls

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["SWEEP", "chunk_child", "run_chunking", "run_options", "run_shapes"]

log = logging.getLogger("fleetbench")

SWEEP: tuple[ModelShape, ...] = (
    replace(FULL_SHAPE, hidden=8, heads=1, hidden_continuous=4),
    replace(FULL_SHAPE, hidden=16, heads=2, hidden_continuous=8),
    FULL_SHAPE,
    replace(FULL_SHAPE, encoder=288),
    replace(FULL_SHAPE, encoder=48),
)
"""Shapes of the sweep around the default (E 96, hidden 32, day-ago inputs): hidden 8/16/32
at E 96, and E 288/48 at hidden 32."""


def _spec_and_feed(onnx_path: Path, n: int) -> tuple[Any, dict[str, np.ndarray]]:
    import onnxruntime as ort

    from fleetbench.fleet import simulate_fleet
    from fleetcast.contract.features import ModelSpec

    meta = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    spec = ModelSpec.from_metadata(meta.get_modelmeta().custom_metadata_map)
    return spec, simulate_fleet(n, spec.history_steps + 2).model_inputs(spec).as_feed()


def _session(
    onnx_path: Path,
    *,
    threads: int = 0,
    level: str = "all",
    parallel: bool = False,
    spinning: bool = True,
) -> Any:
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[level]
    opts.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    opts.inter_op_num_threads = 2 if parallel else 1
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


def _per_server(
    session: Any, feed: dict[str, np.ndarray], repeats: int, budget_s: float
) -> dict[str, Any]:
    n = int(feed["encoder_lengths"].shape[0])
    ms = time_calls(lambda: session.run(["quantiles"], feed), repeats, warmup=1, budget_s=budget_s)
    return summarize(ms).scaled(1.0 / n).to_dict()


def _accuracy_cells(info: dict[str, Any]) -> dict[str, Any]:
    acc = info.get("accuracy") or {}
    if not acc.get("windows"):
        return {}
    mase = [
        v["tft"]
        for by_h in acc["mase"].values()
        for v in by_h.values()
        if v["tft"] is not None and math.isfinite(v["tft"])  # None: NaN in training_info.json
    ]
    best_ratio = []
    goal = acc.get("goal", {}).get("per_target", {})
    met = 0
    cells = 0
    for target, by_h in goal.items():
        for horizon, cell in by_h.items():
            cells += 1
            met += bool(
                cell["no_worse_than_persistence"]
                if horizon == "30min"
                else cell["beats_best_baseline"]
            )
            if cell["best_baseline"]:
                best_ratio.append(cell["tft"] / cell["best_baseline"])
        del target
    return {
        "windows": acc["windows"],
        "mean_mase": round(float(np.mean(mase)), 4),
        "mean_mae_vs_best_baseline": round(float(np.mean(best_ratio)), 4) if best_ratio else None,
        "goal_cells_met": f"{met}/{cells}",
        "cpu_pct_1hr_mae": round(acc["mae"]["cpu_pct"]["1hr"]["tft"], 4),
    }


def run_shapes(
    shapes: Sequence[ModelShape], *, batch: int, repeats: int, budget_s: float
) -> list[dict[str, Any]]:
    """Train, export, time and score each shape; one row per shape."""
    rows = []
    for shape in shapes:
        log.info("shapes: training %s", shape.label)
        with tempfile.TemporaryDirectory(prefix="fleetbench-shape-") as tmp:
            prepared = train_and_export(Path(tmp), shape)
            _, feed = _spec_and_feed(prepared.onnx_path, batch)
            one = {k: v[:1] for k, v in feed.items()}
            session = _session(prepared.onnx_path)
            rows.append(
                {
                    "shape": shape.label,
                    "encoder": shape.encoder,
                    "hidden": shape.hidden,
                    "heads": shape.heads,
                    "parameters": prepared.training_info.get("parameters")
                    or _parameters(prepared.model_dir),
                    "onnx_kib": round(prepared.onnx_path.stat().st_size / 1024, 1),
                    "ms_per_server": _per_server(session, feed, repeats, budget_s),
                    "ms_single": _per_server(session, one, max(repeats, 5), budget_s),
                    "batch": batch,
                    "accuracy": _accuracy_cells(prepared.training_info),
                    "parity_max_rel": max(
                        (p["max_rel"] for p in prepared.export.get("parity", [])), default=None
                    ),
                    "train_s": prepared.timings_s.get("train"),
                }
            )
    return rows


def _parameters(folder: Path) -> int | None:
    try:
        from safetensors.numpy import load_file

        return int(sum(v.size for v in load_file(str(folder / "model.safetensors")).values()))
    except Exception:
        return None


def run_options(
    onnx_path: Path, *, batch: int, repeats: int, budget_s: float
) -> list[dict[str, Any]]:
    """Per-server latency of the model under a few ONNX Runtime session configurations."""
    _, feed = _spec_and_feed(onnx_path, batch)
    configs = [
        ("appliance (all, sequential, default threads)", {}),
        ("intra-op threads 1", {"threads": 1}),
        ("intra-op threads 2", {"threads": 2}),
        ("no spinning (default threads)", {"spinning": False}),
        ("graph optimisation extended", {"level": "extended"}),
        ("graph optimisation basic", {"level": "basic"}),
        ("graph optimisation disabled", {"level": "disable"}),
        ("parallel execution mode", {"parallel": True}),
    ]
    rows = []
    for name, kwargs in configs:
        log.info("options: %s", name)
        rows.append(
            {
                "config": name,
                "batch": batch,
                "ms_per_server": _per_server(
                    _session(onnx_path, **kwargs), feed, repeats, budget_s
                ),
            }
        )
    return rows


def chunk_child(
    onnx_path: str, servers: int, chunk: int, repeats: int, budget_s: float
) -> dict[str, Any]:
    """In a fresh process: ms/server of ``servers`` windows in chunks, and the peak RSS (MB).

    The session is configured as the appliance's; the RSS is the process's VmHWM after the
    runs (ONNX Runtime's arena keeps the largest chunk's activations).
    """
    _, feed = _spec_and_feed(Path(onnx_path), servers)
    session = _session(Path(onnx_path))

    def run() -> None:
        for lo in range(0, servers, chunk):
            session.run(["quantiles"], {k: v[lo : lo + chunk] for k, v in feed.items()})

    ms = time_calls(run, repeats, warmup=1, budget_s=budget_s)
    peak = None
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = round(int(line.split()[1]) / 1024, 1)
    return {
        "servers": servers,
        "chunk": chunk,
        "ms_per_server": summarize(ms).scaled(1.0 / servers).to_dict(),
        "peak_rss_mb": peak,
    }


def run_chunking(
    onnx_path: Path, *, servers: int, chunks: Sequence[int], repeats: int, budget_s: float
) -> list[dict[str, Any]]:
    """One fleet of ``servers`` windows run in chunks of each size, each in a fresh process."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    rows = []
    for chunk in chunks:
        log.info("chunking: %d servers in chunks of %d", servers, chunk)
        code = (
            "import json, sys; from fleetbench.shapes import chunk_child; "
            f"print(json.dumps(chunk_child({str(onnx_path)!r}, {servers}, {chunk}, {repeats}, "
            f"{budget_s})))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"chunk {chunk} failed: {' | '.join(proc.stderr.strip().splitlines()[-3:])}"
            )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows
