"""Benchmark 5: GPU — ``benchmarks/gpu_check.py`` when an NVIDIA GPU provider is present.

On a machine without ``CUDAExecutionProvider`` (this project's CPU development machine)
the benchmark is skipped and the docs keep the figures measured with ``benchmarks/gpu.sh``
on an H100 (docs/EXPORT.md#gpu).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fleetbench.stats import Target

__all__ = ["TARGETS", "run_gpu"]

TARGETS: tuple[Target, ...] = (
    Target(
        "gpu.servers_per_s@10000",
        "GPU throughput at 10,000 servers (best provider)",
        50_000,
        "min",
        "servers/s",
    ),
)

GPU_CHECK = Path(__file__).resolve().parents[1] / "gpu_check.py"


def run_gpu(onnx_path: Path, *, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run gpu_check.py in a subprocess when CUDA is available; else report the skip."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return {
            "skipped": True,
            "reason": f"no CUDA execution provider here (available: {', '.join(available)}); "
            "run benchmarks/gpu.sh on a GPU machine (docs/EXPORT.md#gpu)",
            "target_values": {},
        }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gpu_check.json"
        cmd = [sys.executable, str(GPU_CHECK), "--model", str(onnx_path), "--json", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        result = json.loads(out.read_text()) if out.is_file() else {}
    best = None
    for name, config in (result.get("configs") or {}).items():
        timing = (config.get("timings") or {}).get("10000") if name != "cpu_fp32" else None
        if isinstance(timing, dict) and timing.get("servers_per_s"):
            best = max(best or 0.0, float(timing["servers_per_s"]))
    out: dict[str, Any] = {}
    if proc.returncode != 0 or not result:
        # The check ran and failed (a crash, a provider that would not load): that is a
        # failed benchmark, never a skip.
        tail = " | ".join(proc.stderr.splitlines()[-3:])
        out["error"] = f"gpu_check.py exited with code {proc.returncode}: {tail or 'no output'}"
    return {
        **out,
        "skipped": False,
        "returncode": proc.returncode,
        "result": result,
        "stderr_tail": proc.stderr.splitlines()[-5:],
        "target_values": {"gpu.servers_per_s@10000": best},
        "target_notes": {}
        if best
        else {
            "gpu.servers_per_s@10000": "no GPU provider timed 10,000 servers (see result.configs)"
        },
    }
