"""GPU check of an exported fleetcast model: CUDA and TensorRT providers vs CPU, and timings.

Self-contained (numpy + onnxruntime, ideally ``onnxruntime-gpu``), for a machine with an
NVIDIA GPU::

    python3 benchmarks/gpu_check.py --model models/latest/model.onnx \
        [--fp16-model models/latest/model.fp16.onnx] [--batches 1,90,1000,10000,100000]

For each configuration (CPU float32 = the reference; CUDA float32; CUDA float16; TensorRT
float32; TensorRT with its float16 mode) it records whether the provider loaded — and
whether ONNX Runtime silently fell back to CPU —, the max absolute and relative error
against CPU float32 on the same mixed-length windows, and the median latency and
servers/s per batch size. A provider that fails is reported, never fatal. The result is
printed and, when ``$OUT`` is set (or ``--json PATH``), written as JSON.

Inputs are synthetic but valid, drawn from the model's own metadata (categorical codes
within each encoding, encoder lengths from ``min_encoder_length`` to ``E``, realistic
target scales). See docs/EXPORT.md#gpu.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "make_inputs", "run_checks"]

CONFIGS: tuple[tuple[str, str, str], ...] = (
    ("cpu_fp32", "CPUExecutionProvider", "fp32"),
    ("cuda_fp32", "CUDAExecutionProvider", "fp32"),
    ("cuda_fp16", "CUDAExecutionProvider", "fp16"),
    ("tensorrt_fp32", "TensorrtExecutionProvider", "fp32"),
    ("tensorrt_fp16", "TensorrtExecutionProvider", "trt_fp16"),
)
"""(name, provider, model variant); trt_fp16 = the float32 file with TensorRT's fp16 mode."""


def _meta(session: Any) -> dict[str, Any]:
    raw = session.get_modelmeta().custom_metadata_map
    out = {}
    for key, value in raw.items():
        try:
            out[key.removeprefix("fleetcast.")] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def make_inputs(
    meta: dict[str, Any], shapes: dict[str, list[Any]], batch: int, seed: int
) -> dict[str, np.ndarray]:
    """Valid synthetic inputs for ``batch`` windows with mixed encoder lengths."""
    rng = np.random.default_rng(seed)
    e = int(shapes["encoder_cat"][1])
    d = int(shapes["decoder_cat"][1])
    n_cat = int(shapes["encoder_cat"][2])
    n_real = int(shapes["encoder_cont"][2])
    n_target = int(shapes["target_scale"][1])
    min_len = int(meta.get("min_encoder_length", 1))
    cats = meta.get("x_categoricals", [])
    enc = meta.get("categorical_encodings", {})
    sizes = [max(len(enc.get(c, {}).get("classes", {})), 1) for c in cats] or [1] * n_cat
    lengths = rng.integers(min_len, e + 1, size=batch).astype(np.int64)
    lengths[: max(1, batch // 2)] = e  # half full windows, half cold-start
    encoder_cat = np.stack([rng.integers(0, s, size=(batch, e)) for s in sizes], axis=-1)
    decoder_cat = np.stack([rng.integers(0, s, size=(batch, d)) for s in sizes], axis=-1)
    encoder_cont = rng.normal(0.0, 1.0, size=(batch, e, n_real)).astype(np.float32)
    decoder_cont = rng.normal(0.0, 1.0, size=(batch, d, n_real)).astype(np.float32)
    pad = np.arange(e)[None, :] >= lengths[:, None]
    encoder_cat[pad] = 0
    encoder_cont[pad] = 0.0
    target_scale = np.stack(
        [
            rng.uniform(0.5, 3.5, size=(batch, n_target)),
            rng.uniform(0.05, 0.5, size=(batch, n_target)),
        ],
        axis=-1,
    ).astype(np.float32)
    return {
        "encoder_cat": encoder_cat.astype(np.int64),
        "encoder_cont": encoder_cont,
        "encoder_lengths": lengths,
        "decoder_cat": decoder_cat.astype(np.int64),
        "decoder_cont": decoder_cont,
        "target_scale": target_scale,
    }


def _subset(feed: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    reps = -(-n // len(feed["encoder_lengths"]))
    return {k: np.concatenate([v] * reps)[:n] if reps > 1 else v[:n] for k, v in feed.items()}


def _provider_options(
    provider: str,
    variant: str,
    max_batch: int,
    shapes: dict[str, list[Any]],
    cache: str,
    tf32: bool,
) -> list[Any]:
    cuda = ("CUDAExecutionProvider", {"use_tf32": int(tf32)})
    if provider == "CUDAExecutionProvider":
        return [cuda, "CPUExecutionProvider"]
    if provider == "TensorrtExecutionProvider":

        def profile(b: int) -> str:
            return ",".join(
                f"{n}:{'x'.join(str(x) for x in [b, *s[1:]])}" for n, s in shapes.items()
            )

        opts = {
            "trt_fp16_enable": variant == "trt_fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_profile_min_shapes": profile(1),
            "trt_profile_opt_shapes": profile(min(1000, max_batch)),
            "trt_profile_max_shapes": profile(max_batch),
        }
        return [(provider, opts), cuda, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _errors(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    ref = np.abs(expected.astype(np.float64))
    return {
        "max_abs": float(diff.max()),
        "max_rel": float((diff / np.maximum(ref, 1e-2)).max()),
        "finite": bool(np.isfinite(actual).all()),
    }


def _time(
    session: Any, feed: dict[str, np.ndarray], runs: int, budget_s: float
) -> dict[str, float]:
    session.run(None, feed)  # warm-up (TensorRT may build an engine here)
    times = []
    start = time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    median = float(np.median(times))
    batch = int(feed["encoder_lengths"].shape[0])
    return {
        "median_ms": median * 1e3,
        "p90_ms": float(np.percentile(times, 90)) * 1e3,
        "runs": len(times),
        "servers_per_s": batch / median,
    }


def _gpu_info() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi unavailable: {exc}"


def run_checks(args: argparse.Namespace) -> dict[str, Any]:
    """Run every configuration; returns the JSON-ready result."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    preload_error = None
    if preload is not None:
        try:  # CUDA/cuDNN libraries from the nvidia-* pip packages (ORT >= 1.21)
            preload()
        except Exception as exc:  # reported; the system libraries may do
            preload_error = f"{type(exc).__name__}: {exc}"
    result: dict[str, Any] = {
        "model": str(args.model),
        "fp16_model": str(args.fp16_model) if args.fp16_model else None,
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "device": ort.get_device(),
        "gpu": _gpu_info(),
        "python": platform.python_version(),
        "host": platform.node(),
        "preload_dlls_error": preload_error,
        "cuda_tf32": bool(args.tf32),
        "configs": {},
    }
    options = ort.SessionOptions()
    options.log_severity_level = 3
    cpu = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in cpu.get_inputs()}
    meta = _meta(cpu)
    result["model_meta"] = {
        k: meta.get(k)
        for k in (
            "bundle_id",
            "encoder_length",
            "min_encoder_length",
            "prediction_length",
            "quantiles",
            "targets",
        )
    }
    batches = [int(b) for b in args.batches.split(",")]
    max_batch = max(batches)
    check_feed = make_inputs(meta, shapes, args.check_batch, seed=1)
    reference = cpu.run(None, check_feed)[0]
    timing_feeds = {b: _subset(make_inputs(meta, shapes, min(b, 4096), seed=2), b) for b in batches}

    for name, provider, variant in CONFIGS:
        entry: dict[str, Any] = {"provider": provider, "variant": variant}
        result["configs"][name] = entry
        if args.only and name not in args.only.split(","):
            entry["status"] = "skipped"
            continue
        path = args.model
        if variant == "fp16":
            if not args.fp16_model or not Path(args.fp16_model).exists():
                entry["status"] = "skipped: no --fp16-model"
                continue
            path = args.fp16_model
        if provider != "CPUExecutionProvider" and provider not in ort.get_available_providers():
            entry["status"] = f"unavailable: {provider} not in this onnxruntime build"
            continue
        try:
            t0 = time.perf_counter()
            session = ort.InferenceSession(
                str(path),
                options,
                providers=_provider_options(
                    provider, variant, max_batch, shapes, args.trt_cache, args.tf32
                ),
            )
            entry["load_s"] = time.perf_counter() - t0
            entry["session_providers"] = session.get_providers()
            if session.get_providers()[0] != provider:
                entry["status"] = f"fell back to {session.get_providers()[0]}"
                continue
            t0 = time.perf_counter()
            out = session.run(None, check_feed)[0]
            entry["first_run_s"] = time.perf_counter() - t0
            entry["vs_cpu_fp32"] = _errors(out, reference)
            entry["timings"] = {}
            for b in batches:
                if provider == "CPUExecutionProvider" and b > args.cpu_max_batch:
                    entry["timings"][str(b)] = "skipped (CPU)"
                    continue
                try:
                    entry["timings"][str(b)] = _time(
                        session, timing_feeds[b], args.runs, args.budget_s
                    )
                except Exception as exc:  # report and go on
                    entry["timings"][str(b)] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
                    break
            entry["status"] = "ok"
        except Exception as exc:  # a failing provider is a result
            entry["status"] = f"failed: {type(exc).__name__}: {str(exc)[:500]}"
            entry["traceback"] = traceback.format_exc(limit=3)[-1500:]
    return result


def _summary(result: dict[str, Any]) -> str:
    lines = [
        f"onnxruntime {result['onnxruntime']} ({result['device']}); providers {result['available_providers']}",
        f"GPU: {result['gpu']}",
    ]
    for name, entry in result["configs"].items():
        lines.append(f"{name:14s} {entry.get('status')}")
        if "vs_cpu_fp32" in entry:
            err = entry["vs_cpu_fp32"]
            lines.append(
                f"{'':14s} vs CPU fp32: max abs {err['max_abs']:.3g}, max rel {err['max_rel']:.3g}"
            )
        for b, t in entry.get("timings", {}).items():
            if isinstance(t, dict):
                lines.append(
                    f"{'':14s} batch {b:>6}: {t['median_ms']:9.2f} ms  {t['servers_per_s']:12.0f} servers/s"
                )
            else:
                lines.append(f"{'':14s} batch {b:>6}: {t}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 when at least the CPU reference ran."""
    parser = argparse.ArgumentParser(
        description="fleetcast ONNX model: CUDA/TensorRT vs CPU check and timings"
    )
    parser.add_argument("--model", type=Path, default=Path("models/latest/model.onnx"))
    parser.add_argument(
        "--fp16-model",
        type=Path,
        default=None,
        help="the float16 file (default: model.fp16.onnx beside --model, if present)",
    )
    parser.add_argument("--batches", default="1,90,1000,10000,100000")
    parser.add_argument("--check-batch", type=int, default=90, help="windows of the accuracy check")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per batch size (at most)")
    parser.add_argument("--budget-s", type=float, default=10.0, help="time budget per batch size")
    parser.add_argument(
        "--cpu-max-batch", type=int, default=1000, help="largest batch timed on CPU"
    )
    parser.add_argument("--only", default="", help="comma-separated config names to run")
    parser.add_argument("--trt-cache", default="/tmp/fleetcast_trt_cache")
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="let CUDA use TF32 matrix products (faster, ~1e-4 relative error)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write the result here (default $OUT/gpu_check.json)",
    )
    args = parser.parse_args(argv)
    if args.fp16_model is None:
        candidate = args.model.with_name(args.model.stem + ".fp16.onnx")
        args.fp16_model = candidate if candidate.exists() else None
    if not args.model.exists():
        print(
            f"gpu_check: model not found at {args.model}. Fix: export one with "
            "`fleetcast export` or pass --model. See docs/EXPORT.md#gpu.",
            file=sys.stderr,
        )
        return 2
    try:
        result = run_checks(args)
    except ImportError as exc:
        print(
            f"gpu_check: {exc}. Fix: pip install onnxruntime-gpu (see docs/EXPORT.md#gpu).",
            file=sys.stderr,
        )
        return 2
    print(_summary(result))
    target = args.json or (
        Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None
    )
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {target}")
    return 0 if result["configs"]["cpu_fp32"].get("status") in ("ok", "skipped") else 1


if __name__ == "__main__":
    raise SystemExit(main())
