"""The machine a run was measured on, and its measured limits (numpy matmul and memory copy).

The limits are what "achieved fraction" in docs/BENCHMARKS.md is relative to: a large
float32 matmul (the best case for arithmetic), a skinny one shaped like the model's
(``[rows, 32] @ [32, 32]``), and a large array copy (bytes read + written per second).
"""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["best_limits", "describe_machine", "load_average", "measure_limits"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def describe_machine() -> dict[str, Any]:
    """nproc, CPU model, memory, OS, Python and the library versions that matter here."""
    versions = {
        name: _version(name)
        for name in (
            "numpy",
            "onnxruntime",
            "onnxruntime-gpu",
            "torch",
            "pytorch-forecasting",
            "lightning",
            "numba",
            "pandas",
            "litestar",
        )
    }
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {k: v for k, v in versions.items() if v is not None},
        "load_average": load_average(),
    }


def _best_seconds(func: Any, repeats: int) -> float:
    func()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - began)
    return best


def measure_limits(quick: bool = False) -> dict[str, float]:
    """Measured GFLOP/s (float32 matmul, large and skinny) and memory bandwidth (GB/s).

    Best of a few runs (the machine's capability, not its typical share under load).
    """
    import numpy as np

    rng = np.random.default_rng(0)
    n = 512 if quick else 1024
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    reps = 5 if quick else 10
    large = 2.0 * n**3 / _best_seconds(lambda: a @ b, reps) / 1e9
    rows = 20_000 if quick else 100_000
    x = rng.standard_normal((rows, 32), dtype=np.float32)
    w = rng.standard_normal((32, 32), dtype=np.float32)
    out = np.empty((rows, 32), dtype=np.float32)
    skinny = 2.0 * rows * 32 * 32 / _best_seconds(lambda: np.matmul(x, w, out=out), reps) / 1e9
    size = (32 if quick else 128) * 1024 * 1024 // 4
    src = np.ones(size, dtype=np.float32)
    dst = np.empty_like(src)
    copy_s = _best_seconds(lambda: np.copyto(dst, src), reps)
    bandwidth = 2.0 * src.nbytes / copy_s / 1e9
    return {
        "matmul_gflops": round(large, 2),
        "matmul_n": n,
        "skinny_matmul_gflops": round(skinny, 2),
        "memory_gb_s": round(bandwidth, 2),
    }


def best_limits(*measurements: dict[str, float]) -> dict[str, float]:
    """Element-wise maximum of several :func:`measure_limits` results (start and end of a run).

    On a shared machine one measurement can land in a busy moment; the machine's limit is
    the best that was seen.
    """
    out: dict[str, float] = {}
    for m in measurements:
        for key, value in m.items():
            out[key] = max(out.get(key, value), value)
    return out
