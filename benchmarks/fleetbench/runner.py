"""The suite's runner: ``python benchmarks/run.py [--quick | --full] [options]``.

Runs the benchmarks of the chosen mode on one model, checks the targets, writes
``benchmarks/results/<mode>-<UTC time>.json`` (+ ``.md``), updates the generated block of
docs/BENCHMARKS.md and its plots (full mode, or ``--update-docs``), prints the Markdown, and
exits 0 when every enforced target is met, 1 when one is missed or a benchmark failed
(0 with ``--no-fail``), 2 on bad usage. See docs/BENCHMARKS.md#running-it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS", "MODES", "Mode", "main", "run_suite"]

log = logging.getLogger("fleetbench")

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = (
    "inference",
    "windows",
    "service",
    "accuracy",
    "roofline",
    "gpu",
    "shapes",
    "options",
    "chunking",
)


@dataclass(frozen=True)
class Mode:
    """Sizes, repeats and time bounds of one mode."""

    name: str
    inference_sizes: tuple[int, ...]
    inference_repeats: dict[int, int]
    baseline_max: int
    budget_s: float
    """Time bound of one contender's timed runs (at least one run always happens)."""
    window_sizes: tuple[int, ...]
    window_repeats: int
    service_servers: int
    get_seconds: float
    ws_steps: int
    benchmarks: tuple[str, ...]
    sweep_batch: int = 256
    chunk_servers: int = 1000
    service_runs: int = 1
    """Fresh appliances the service benchmark starts (medians over them; 1: one of each)."""
    extra: dict[str, Any] = field(default_factory=dict)


MODES: dict[str, Mode] = {
    "quick": Mode(
        name="quick",
        inference_sizes=(1, 90),
        inference_repeats={1: 30, 90: 3},  # a 1-server call is ~1.5 ms: a median needs many
        baseline_max=90,
        budget_s=8.0,
        window_sizes=(90, 1000),
        window_repeats=3,
        service_servers=1000,
        get_seconds=2.0,
        ws_steps=2,
        benchmarks=("inference", "windows", "service", "accuracy", "roofline", "gpu"),
    ),
    "full": Mode(
        name="full",
        inference_sizes=(1, 90, 1000, 10000),
        inference_repeats={1: 100, 90: 10, 1000: 3, 10000: 1},
        baseline_max=1000,
        budget_s=40.0,
        window_sizes=(90, 1000, 10000),
        window_repeats=5,
        service_servers=1000,
        get_seconds=8.0,
        ws_steps=3,
        benchmarks=BENCHMARKS,
        service_runs=3,
    ),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleetcast bench",
        description="fleetcast's benchmark suite: fleetcast vs its baselines, targets checked "
        "(docs/BENCHMARKS.md). Runs from a source checkout.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode",
                      help="CI mode: the fixture-sized model, small fleets, < 2 minutes (default)")  # fmt: skip
    mode.add_argument("--full", action="store_const", const="full", dest="mode",
                      help="the production shape (E 96, hidden 32) at 1..10,000 servers, ≤ ~15 min")  # fmt: skip
    p.add_argument("--appliance-env", type=Path, default=None,
                   help="virtual environment whose bin/fleetcast runs the appliance in the "
                   "service benchmark (default: the checkout's .venv-appliance, the appliance "
                   "alone as an edge box installs it, when it exists; else this one)")  # fmt: skip
    p.add_argument("--model-dir", type=Path, default=None,
                   help="bundle folder with model.onnx (default: train and export a small model "
                   "into a temporary folder)")  # fmt: skip
    p.add_argument("--only", default="",
                   help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")  # fmt: skip
    p.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    p.add_argument("--no-fail", "--report-only", action="store_true", dest="no_fail",
                   help="exit 0 even when a target is missed or a benchmark failed (the JSON "
                   "and the table still say so; for the docs run)")  # fmt: skip
    docs = p.add_mutually_exclusive_group()
    docs.add_argument("--update-docs", action="store_true", default=None, dest="update_docs",
                      help="rewrite docs/BENCHMARKS.md's results block and docs/img/bench_*.svg "
                      "(default in a --full run of every benchmark, without --only/--skip)")  # fmt: skip
    docs.add_argument("--no-update-docs", action="store_false", dest="update_docs")
    p.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--render", type=Path, default=None, metavar="RESULTS_JSON",
                   help="run nothing: rebuild the Markdown (and, with --update-docs, the docs "
                   "block and plots) from an earlier results file")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def _selected(args: argparse.Namespace, mode: Mode) -> tuple[str, ...]:
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    unknown = [x for x in [*only, *skip] if x not in BENCHMARKS]
    if unknown:
        raise SystemExit(
            f"fleetcast bench: unknown benchmark(s) {unknown}; expected some of "
            f"{', '.join(BENCHMARKS)}. See docs/BENCHMARKS.md#running-it."
        )
    chosen = tuple(only) if only else mode.benchmarks
    return tuple(b for b in chosen if b not in skip)


def _quiet_libraries() -> None:
    import os
    import warnings

    if "torch" not in sys.modules:  # torch reads it once, when it loads: its C++ warnings
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # (the exporter's parity decides)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                 "httpx", "httpcore", "numba", "fleetcast", "pytorch_forecasting"):  # fmt: skip
        logging.getLogger(name).setLevel(logging.ERROR)


def _guard(results: dict[str, Any], name: str, func: Any) -> Any:
    """Run one benchmark; a failure is recorded (and fails the run), never fatal to the rest."""
    began = time.perf_counter()
    try:
        out = func()
    except Exception as exc:
        log.error("benchmark %s failed: %s", name, exc)
        results[name] = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc().splitlines()[-8:],
        }
        out = None
    else:
        results[name] = out
    results.setdefault("timings_s", {})[name] = round(time.perf_counter() - began, 1)
    return out


def run_suite(
    mode: Mode,
    selected: tuple[str, ...],
    model_dir: Path | None,
    work: Path,
    appliance_env: Path | None = None,
) -> dict[str, Any]:
    """Run the selected benchmarks; returns the results document (targets included)."""
    from fleetbench import accuracy, gpu, inference, service, windows
    from fleetbench.machine import best_limits, describe_machine, load_average, measure_limits
    from fleetbench.model import FULL_SHAPE, QUICK_SHAPE, prepare_model
    from fleetbench.stats import check_targets

    began = time.perf_counter()
    res: dict[str, Any] = {
        "suite": {
            "mode": mode.name,
            "benchmarks": list(selected),
            "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "machine": describe_machine(),
    }
    res["limits"] = measure_limits(quick=mode.name == "quick")
    shape = QUICK_SHAPE if mode.name == "quick" else FULL_SHAPE
    log.info("model: %s", "given" if model_dir else f"training {shape.label}")
    prepared = prepare_model(work, shape, model_dir)
    res["model"] = prepared.describe()
    spec = _spec(prepared.onnx_path)
    if "inference" in selected:
        _guard(res, "inference", lambda: inference.run_inference(
            prepared, mode.inference_sizes, mode.inference_repeats,
            baseline_max=mode.baseline_max, budget_s=mode.budget_s))  # fmt: skip
    if "windows" in selected:
        _guard(res, "windows", lambda: windows.run_windows(
            spec, mode.window_sizes, mode.window_repeats, budget_s=mode.budget_s))  # fmt: skip
    if "service" in selected:
        from fleetbench.fleet import simulate_fleet
        from fleetbench.service_repeat import run_service_repeated

        fleet = simulate_fleet(mode.service_servers, spec.history_steps + 2 + mode.ws_steps, seed=5)
        _guard(res, "service", lambda: run_service_repeated(mode.service_runs, lambda: service.run_service(
            prepared.model_dir, fleet, history_steps=spec.history_steps,
            get_seconds=mode.get_seconds, ws_steps=mode.ws_steps,
            ceilings=mode.name != "quick", appliance_env=appliance_env)))  # fmt: skip
    if "accuracy" in selected:
        agreement = (res.get("inference") or {}).get("agreement") or {}
        _guard(
            res, "accuracy", lambda: accuracy.summarize_accuracy(prepared.training_info, agreement)
        )
    if "roofline" in selected and prepared.has_bundle:
        _guard(res, "roofline", lambda: _roofline(prepared, spec, res))
    if "gpu" in selected:
        _guard(res, "gpu", lambda: gpu.run_gpu(prepared.onnx_path))
    if "shapes" in selected:
        from fleetbench.shapes import SWEEP, run_shapes

        _guard(
            res,
            "shapes",
            lambda: run_shapes(SWEEP, batch=mode.sweep_batch, repeats=3, budget_s=mode.budget_s),
        )
    if "options" in selected:
        from fleetbench.shapes import run_options

        _guard(
            res,
            "options",
            lambda: run_options(
                prepared.onnx_path, batch=mode.sweep_batch, repeats=3, budget_s=mode.budget_s
            ),
        )
    if "chunking" in selected:
        from fleetbench.shapes import run_chunking

        _guard(res, "chunking", lambda: run_chunking(
            prepared.onnx_path, servers=mode.chunk_servers, chunks=(1024, 256, 64, 16),
            repeats=2, budget_s=mode.budget_s))  # fmt: skip
    res["limits_start"] = res["limits"]
    res["limits_end"] = measure_limits(quick=mode.name == "quick")
    res["limits"] = best_limits(res["limits_start"], res["limits_end"])
    if isinstance(res.get("roofline"), dict) and res["roofline"].get("at"):
        from fleetbench.roofline import roofline

        rf = res["roofline"]
        rf["at"] = roofline(rf["cost"], res["limits"], rf["at"]["ms_per_server"])
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    targets = []
    for name, module in (("inference", inference), ("windows", windows), ("service", service),
                         ("accuracy", accuracy), ("gpu", gpu)):  # fmt: skip
        if name not in selected:
            continue
        targets += list(module.TARGETS)
        part = res.get(name) if isinstance(res.get(name), dict) else {}
        values.update(part.get("target_values") or {})
        notes.update(part.get("target_notes") or {})
        for t in module.TARGETS:
            if part.get("skipped"):
                skipped[t.name] = str(part.get("reason") or "not applicable here")
            elif "error" in part:
                notes[t.name] = f"the {name} benchmark failed (see its error)"
    if "accuracy" in selected and "inference" not in selected:
        # ONNX-vs-predict() agreement is measured by the inference benchmark: left out, its
        # target is not checked (as any left-out benchmark's), not missed.
        skipped["accuracy.onnx_vs_pytorch_rel_range"] = (
            "measured by the inference benchmark, which this run leaves out"
        )
    checked = check_targets(
        targets, values, quick=mode.name == "quick", notes=notes, skipped=skipped
    )
    res["targets"] = [c.to_dict() for c in checked]
    errors = [k for k in selected if isinstance(res.get(k), dict) and "error" in res[k]]
    res["errors"] = errors
    res["passed"] = not errors and all(c.met is not False for c in checked if c.enforced)
    res["load_average_end"] = load_average()
    res["suite"]["seconds"] = round(time.perf_counter() - began, 1)
    return res


def _spec(onnx_path: Path) -> Any:
    import onnxruntime as ort

    from fleetcast.contract.features import ModelSpec

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return ModelSpec.from_metadata(session.get_modelmeta().custom_metadata_map)


def _roofline(prepared: Any, spec: Any, res: dict[str, Any]) -> dict[str, Any]:
    from fleetbench.fleet import simulate_fleet
    from fleetbench.inference import _TorchSide
    from fleetbench.roofline import model_cost, module_shares, roofline
    from fleetcast.trainer.bundle import load_bundle

    bundle = load_bundle(prepared.model_dir)
    side = _TorchSide(bundle, simulate_fleet(32, spec.history_steps + 2))
    batch = side.batches[0]
    cost = model_cost(bundle, batch, 32, spec.encoder_length, spec.prediction_length)
    out: dict[str, Any] = {"cost": cost, "shares": module_shares(bundle, batch)}
    rows = (res.get("inference") or {}).get("rows") or []
    if rows:
        best = next((r for r in rows if r["servers"] == 1000), rows[-1])
        out["at_servers"] = best["servers"]
        # The cost is the full forward's: measure it against the full graph's time (with a
        # step cache the appliance does a fraction of that work per forecast).
        timed = "ort_full" if "ort_full" in best["per_server_ms"] else "ort"
        out["timed"] = timed
        out["at"] = roofline(cost, res["limits"], best["per_server_ms"][timed]["median"])
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``benchmarks/run.py`` and ``fleetcast bench``)."""
    args = _parser().parse_args(argv)
    mode = MODES[args.mode or "quick"]
    try:
        selected = _selected(args, mode)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    _quiet_libraries()
    if args.model_dir is not None and not args.model_dir.exists():
        print(f"fleetcast bench: --model-dir {args.model_dir} does not exist. Fix: pass a bundle "
              "folder with model.onnx, or leave it out to train a small one. "
              "See docs/BENCHMARKS.md#running-it.", file=sys.stderr)  # fmt: skip
        return 2
    if args.render is not None:
        return _render(args)
    command = "fleetcast bench " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="fleetbench-") as tmp:
        try:
            res = run_suite(mode, selected, args.model_dir, Path(tmp), args.appliance_env)
        except FileNotFoundError as exc:
            print(f"fleetcast bench: {exc}", file=sys.stderr)
            return 2
    res["suite"]["command"] = command.strip()
    return _publish(args, mode.name, res)


def _render(args: argparse.Namespace) -> int:
    try:
        res = json.loads(args.render.read_text())
    except (OSError, ValueError) as exc:
        print(f"fleetcast bench: cannot read {args.render}: {exc}. Fix: pass a results JSON "
              "written by an earlier run (benchmarks/results/).", file=sys.stderr)  # fmt: skip
        return 2
    from fleetbench.report import markdown, replace_block, write_plots

    if args.update_docs:
        plots = write_plots(res, args.docs.parent / "img")
        res["plots"] = [str(p.relative_to(args.docs.parent)) for p in plots]
        args.docs.write_text(replace_block(args.docs.read_text(), markdown(res)))
    print(markdown(res))
    return 0


def updates_docs(args: argparse.Namespace, mode_name: str) -> bool:
    """Whether a run rewrites docs/BENCHMARKS.md's block and plots: ``--update-docs`` /
    ``--no-update-docs`` when given, else only a whole ``--full`` run. A run limited by
    ``--only`` or ``--skip`` would replace every other benchmark's results with "not run"."""
    if args.update_docs is not None:
        return bool(args.update_docs)
    return mode_name == "full" and not args.only.strip() and not args.skip.strip()


def _publish(args: argparse.Namespace, mode_name: str, res: dict[str, Any]) -> int:
    """Write the JSON/Markdown results (and the docs), print the report, return the exit code."""
    from fleetbench.report import markdown, replace_block, write_plots

    update = updates_docs(args, mode_name)
    if update:
        plots = write_plots(res, args.docs.parent / "img")
        res["plots"] = [str(p.relative_to(args.docs.parent)) for p in plots]
    text = markdown(res)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = res["suite"]["started_utc"].replace(":", "").replace("-", "")
    base = args.results_dir / f"{mode_name}-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    base.with_suffix(".md").write_text(text)
    if update:
        doc = args.docs.read_text() if args.docs.is_file() else "# Benchmarks\n"
        args.docs.write_text(replace_block(doc, text))
    print(text)
    print(f"results: {base.with_suffix('.json')}")
    if not res["passed"]:
        missed = [t["name"] for t in res["targets"] if t["enforced"] and t["met"] is False]
        print(f"FAILED: missed {missed}, errors in {res['errors']}", file=sys.stderr)
        return 0 if args.no_fail else 1
    return 0
