"""How the appliance runs its ONNX Runtime sessions: providers, options, workers, batches.

On CPU each call runs on one thread and a fleet's calls go to one worker per usable core, at
most :data:`MAX_CPU_WORKERS` (data parallel over batches of windows): ONNX Runtime's own
intra-op threads did not speed up these small calls on two cores, two single-threaded
workers did, 1.7× (docs/BENCHMARKS.md). An explicit ``intra_op_threads`` keeps one worker
with that many intra-op threads; a GPU provider gets one worker and big batches.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    import onnxruntime as ort

__all__ = [
    "GPU_PROVIDERS",
    "MAX_CPU_WORKERS",
    "PREFERRED_PROVIDERS",
    "choose_providers",
    "default_batch_size",
    "plan_workers",
    "session_options",
    "usable_cores",
]

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
"""Providers tried in this order when none are configured (CPU is always the floor)."""


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Providers to ask for: ``requested`` (or TensorRT, CUDA, CPU) filtered by ``available``.

    CPU is always appended last as the floor. An explicitly requested provider that is not
    available is logged (not an error: the CPU floor still serves).
    """
    wanted = list(requested) if requested else list(PREFERRED_PROVIDERS)
    chosen = [p for p in wanted if p in available]
    for p in wanted:
        if p not in available and requested:
            log.warning(
                "ONNX Runtime provider %s was requested but is not available (available: %s); "
                "see docs/OPERATIONS.md#gpu",
                p,
                ", ".join(available),
            )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """Latency-tuned options: all graph optimisations, sequential execution, set threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    # Threads that spin between runs burn a core the ingest path needs, and measured
    # 1.2-1.4x slower on 2 cores (docs/BENCHMARKS.md): sleep instead.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if intra_op_threads > 0:
        opts.intra_op_num_threads = int(intra_op_threads)
    opts.log_severity_level = 3
    return opts


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


MAX_CPU_WORKERS = 4
"""Most concurrent CPU calls: each holds its batch's activations (about 38 MB for the default
model in batches of 16), and the gain was measured on two cores (docs/BENCHMARKS.md)."""


def usable_cores() -> int:
    """CPU cores this process may use: its affinity mask (e.g. systemd's CPUAffinity), capped
    by a cgroup v2 CPU quota (``cpu.max``, e.g. a container's ``--cpus``) when there is one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, int(float(quota) // float(period)) or 1)
    except (OSError, ValueError):
        pass
    return max(1, cores)


def plan_workers(providers: Sequence[str], intra_op_threads: int) -> tuple[int, int]:
    """(workers, intra-op threads per call) for these providers and the configured threads.

    CPU with ``intra_op_threads`` 0 (auto): one single-threaded call per usable core, at most
    :data:`MAX_CPU_WORKERS`. An explicit thread count, or a GPU provider: one call at a time
    with that many threads (a GPU that falls back to CPU keeps this plan).
    """
    if intra_op_threads > 0 or any(p in GPU_PROVIDERS for p in providers):
        return 1, intra_op_threads
    return min(usable_cores(), MAX_CPU_WORKERS), 1


def default_batch_size(providers: list[str] | tuple[str, ...], *, step_cache: bool = False) -> int:
    """Windows per ONNX Runtime call when none is configured: 8,192 on a GPU provider, else
    16 (8 for the step cache's head).

    On CPU, ONNX Runtime's arena keeps the activations of the largest call: for the default
    model about 2.4 MB per window (153 MB at 64, 38 MB at 16). Calls of 16 windows ran
    within the machine's noise of calls of 64 (2.43 vs 2.29 ms/server at 1,000 servers) and
    kept the appliance at 353 MB peak instead of 466 MB (docs/BENCHMARKS.md); a GPU needs
    big batches. The step cache's head in calls of 8 ran as fast as in calls of 16 (0.382
    vs 0.385 ms/server at 1,000 servers) and peaked 17 MB lower (366 vs 382 MB in-process).
    """
    if any(p in GPU_PROVIDERS for p in providers):
        return 8192
    return 8 if step_cache else 16
