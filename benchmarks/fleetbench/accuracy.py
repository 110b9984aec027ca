"""Benchmark 4: accuracy against the baselines, so speed work cannot trade it away silently.

The accuracy table is the trainer's (:mod:`fleetcast.trainer.evaluate`: the TFT's p50 MAE
against seasonal-naive, persistence and linear-trend forecasts on held-out windows), read
from the model's ``training_info.json``. Beside it: how far the ONNX model that the
appliance serves is from PyTorch (the exporter's parity check, and benchmark 1's
end-to-end agreement between ``predict()`` and ONNX Runtime on the numpy reference inputs).
"""

from __future__ import annotations

import math
from typing import Any

from fleetbench.stats import Target

__all__ = ["TARGETS", "summarize_accuracy"]

TARGETS: tuple[Target, ...] = (
    Target(
        "accuracy.onnx_vs_pytorch_rel_range",
        "ONNX model vs predict() on the same windows, max difference relative to each "
        "target's range (the exporter's parity measure)",
        1e-4,
        "max",
        "",
        quick_limit=1e-4,
    ),
    Target(
        "accuracy.goal_share",
        "share of (target, horizon) cells where the TFT meets the trainer's goal",
        1.0,
        "min",
        "",
        report_only=True,
    ),
)


def summarize_accuracy(training_info: dict[str, Any], agreement: dict[str, Any]) -> dict[str, Any]:
    """Rows (target, horizon, TFT MAE, best baseline and its MAE, MASE, coverage) and targets."""
    acc = training_info.get("accuracy") or {}
    rows: list[dict[str, Any]] = []
    met_cells = 0
    cells = 0
    if acc.get("windows"):
        for target, by_h in acc["mae"].items():
            for horizon, maes in by_h.items():
                # The TFT's own lines (its p50, and with every state null) are no baselines.
                baselines = {
                    k: v for k, v in maes.items() if not k.startswith("tft") and math.isfinite(v)
                }
                best = min(baselines, key=lambda k: baselines[k]) if baselines else None
                goal = acc.get("goal", {}).get("per_target", {}).get(target, {}).get(horizon, {})
                ok = (
                    goal.get("no_worse_than_persistence")
                    if horizon == "30min"
                    else goal.get("beats_best_baseline")
                )
                cells += 1
                met_cells += bool(ok)
                rows.append(
                    {
                        "target": target,
                        "horizon": horizon,
                        "tft_mae": maes["tft"],
                        "tft_state_unknown_mae": maes.get("tft_state_unknown"),
                        "best_baseline": best,
                        "best_baseline_mae": baselines.get(best) if best else None,
                        "tft_mase": acc["mase"][target][horizon]["tft"],
                        "coverage_p10_p90": acc["coverage_p10_p90"][target][horizon],
                        "goal_met": bool(ok),
                    }
                )
    return {
        "windows": acc.get("windows", 0),
        "servers": acc.get("servers"),
        "goal_met": acc.get("goal", {}).get("met"),
        "rows": rows,
        "agreement": agreement,
        "target_values": {
            "accuracy.onnx_vs_pytorch_rel_range": agreement.get("max_rel_range"),
            "accuracy.goal_share": met_cells / cells if cells else None,
        },
        "target_notes": {}
        if agreement
        else {
            "accuracy.onnx_vs_pytorch_rel_range": "it is measured by the inference benchmark "
            "against predict(): run both, with the bundle's model.safetensors"
        },
        "note": "" if rows else "the model's training_info.json holds no accuracy table",
    }
