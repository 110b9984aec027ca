"""Benchmark the appliance's compute core: ingest samples/s, window build and inference ms.

Usage::

    python benchmarks/bench_engine.py [--model appliance/tests/fixtures/tiny_model.onnx]
        [--servers 90 1000] [--runs 5] [--threads 0] [--samples-per-step 1]

For each fleet size: a simulated fleet (fleetcast.contract.simulate) is ingested through
``Engine.ingest`` one batch per step (``--samples-per-step`` samples per server and step,
e.g. 5 = one per minute), for the encoder length + 2 steps, after a warm-up batch that
compiles the Numba kernels; then ``--runs`` forecasts (one more step each) are timed.
Prints one JSON object per fleet size: ingest samples/s, window build ms, inference ms
(total and per server), whole forecast ms (windows + inference + risk + formatting).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "measure"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "appliance" / "tests" / "fixtures" / "tiny_model.onnx"


def measure(model: Path, servers: int, runs: int, threads: int, per_step: int) -> dict[str, object]:
    """Run the benchmark for one fleet size; returns the figures."""
    import numpy as np

    from fleetcast.appliance.engine import Engine, EngineConfig, RecordBatch
    from fleetcast.contract.schema import METRIC_COLUMNS, VALID_STATES
    from fleetcast.contract.simulate import FleetSimulator

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(model, Path(tmp) / "model.onnx")
        sidecar = model.with_name(model.name + ".sha256")
        if sidecar.is_file():
            digest = sidecar.read_text().split()[0]
            (Path(tmp) / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
        engine = Engine.open(
            EngineConfig(model_dir=Path(tmp), capacity=servers + 8, intra_op_threads=threads)
        )
        spec = engine.spec
        step = spec.step_seconds
        steps = spec.history_steps + 2 + runs  # the encoder, plus a day for day-ago inputs
        start = 1_795_000_000 - 1_795_000_000 % step
        sim = FleetSimulator(n_servers=servers, seed=1, start=start)
        names = list(sim.fleet.names)
        data = sim.run(steps)
        state_names = np.array(VALID_STATES, dtype=object)
        offsets = (np.arange(per_step) * (step // per_step)).tolist()

        def batch(k: int) -> RecordBatch:
            ts = int(data["timestamp"][k])
            n = len(names) * per_step
            metrics = np.column_stack([data[m][k] for m in METRIC_COLUMNS]).astype(np.float64)
            return RecordBatch(
                ts=np.repeat(np.array([ts + o for o in offsets], dtype=np.int64), len(names)),
                server=names * per_step,
                cpu_pct=np.tile(metrics[:, 0], per_step),
                mem_pct=np.tile(metrics[:, 1], per_step),
                disk_io_mb_s=np.tile(metrics[:, 2], per_step),
                latency_ms=np.tile(metrics[:, 3], per_step),
                state=list(np.tile(state_names[data["state"][k]], per_step)),
                profile=[None] * n,
            )

        engine.ingest(batch(0))  # warm-up: Numba kernels compile or load from cache
        fill = steps - runs
        batches = [batch(k) for k in range(1, fill)]
        t0 = time.perf_counter()
        samples = 0
        for b in batches:
            r = engine.ingest(b)
            samples += r.accepted
        ingest_s = time.perf_counter() - t0
        engine.run_forecast()  # warm-up: first ORT run, window kernel compile
        windows, infer, total = [], [], []
        for k in range(fill, steps):
            engine.ingest(batch(k))
            fs = engine.run_forecast()
            windows.append(fs.window_ms)
            infer.append(fs.inference_ms)
            total.append(fs.total_ms)
        ready = len(fs.servers)
        return {
            "servers": servers,
            "forecast_servers": ready,
            "encoder_length": spec.encoder_length,
            "providers": engine.providers,
            "ingest_samples_per_s": round(samples / ingest_s),
            "samples_per_step": per_step,
            "window_build_ms": round(statistics.median(windows), 3),
            "inference_ms": round(statistics.median(infer), 3),
            "inference_ms_per_server": round(statistics.median(infer) / ready, 4),
            "forecast_total_ms": round(statistics.median(total), 3),
            "runs": runs,
        }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--servers", type=int, nargs="+", default=[90, 1000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = default)")
    parser.add_argument("--samples-per-step", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"model not found: {args.model}", file=sys.stderr)
        return 2
    for n in args.servers:
        result = measure(args.model, n, args.runs, args.threads, args.samples_per_step)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
