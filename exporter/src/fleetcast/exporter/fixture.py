"""Regenerate the appliance's tiny model fixture with the project's own trainer and exporter.

    python -m fleetcast.exporter.fixture appliance/tests/fixtures/
    python -m fleetcast.exporter.fixture --input-scaling fixed --day-ago appliance/tests/fixtures/

writes ``tiny_model.onnx`` (+ ``tiny_model.onnx.sha256``) and ``tiny_model_reference.json``
(``tiny_model_steps.*`` for ``--input-scaling fixed``: the same model trained with fixed input
scaling, with step graphs, docs/MODEL_FORMAT.md#step-cache, and with ``--day-ago`` each
metric a day earlier as a known input, docs/MODEL_FORMAT.md#features):
a small model with the production *semantics* — a 96-step prediction (so the 30min/1hr/8hr
horizons exist), a 48-step encoder with a 12-step minimum (cold start), hidden size 8 — and a
few raw windows with the model's expected output, so the appliance's tests run without torch.
It is trained for a few hundred batches (about 2 minutes on two cores) on a simulated fleet
in the ``critical`` scenario (:data:`FIXTURE_FLEET`), so it has seen incidents and its
forecasts, and with them the fleet's risk, respond when the demo's scenario changes (the
dashboard's browser test relies on that). The
reference windows are built with :func:`fleetcast.contract.features.build_inputs` and run
on ONNX Runtime; the output is deterministic for a given torch/ORT build up to float
rounding (compare with a tolerance, e.g. 1e-4).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from fleetcast.contract.features import ModelSpec

__all__ = [
    "FIXTURE_FLEET",
    "FIXTURE_NAME",
    "REFERENCE_NAME",
    "STEPS_FIXTURE_NAME",
    "STEPS_REFERENCE_NAME",
    "make_fixture",
    "reference_windows",
    "tiny_config",
]

logger = logging.getLogger("fleetcast.exporter")

FIXTURE_FLEET = {
    "n_servers": 60,
    "hours": 120,
    "seed": 3,
    "start": 1_767_225_600,
    "scenario": "critical",
}
"""The simulated fleet the fixture is trained on (2026-01-01, five days, incidents included)."""
FIXTURE_NAME = "tiny_model.onnx"
REFERENCE_NAME = "tiny_model_reference.json"
STEPS_FIXTURE_NAME = "tiny_model_steps.onnx"
STEPS_REFERENCE_NAME = "tiny_model_steps_reference.json"


def tiny_config(input_scaling: str = "window", day_ago: bool = False) -> Any:
    """The fixture model's TrainConfig: seconds to train, production shape semantics."""
    from fleetcast.trainer.train import TrainConfig

    return TrainConfig(
        hidden_size=8,
        attention_head_size=1,
        hidden_continuous_size=4,
        epochs=6,
        max_batches=100,
        batch_size=32,
        learning_rate=0.01,
        val_batches=1,
        encoder=48,
        min_encoder=12,
        prediction=96,
        evaluate=False,
        dropout=0.0,
        seed=0,
        input_scaling=input_scaling,
        day_ago=day_ago,
    )


def reference_windows(table: pa.Table, spec: ModelSpec) -> dict[str, Any]:
    """Three raw windows of ``table`` (full, cold-start, unknown server) in build_inputs' terms.

    Gaps are forward-filled per step as the trainer does. Returns JSON-ready lists:
    ``values`` [3, E, T], ``lengths`` [3], ``states`` [3, E] (state indices, -1 unknown),
    ``profiles``, ``server_names``, ``last_time_idx``, and for a model with day-ago inputs
    ``day_ago`` [3, E + D, T] (:func:`fleetcast.contract.features.day_ago_rows`).
    """
    from fleetcast.contract.features import day_ago_rows, encode_states

    e = spec.encoder_length
    ts = table.column("timestamp").to_numpy().astype("datetime64[s]").astype(np.int64)
    names = np.asarray(table.column("server_name").to_pylist(), dtype=object)
    profiles_col = table.column("profile").to_pylist()
    states_col = np.asarray(table.column("state").to_pylist(), dtype=object)
    metrics = np.stack([table.column(t).to_numpy() for t in spec.targets], axis=1)
    servers = sorted(set(names.tolist()))
    chosen = [
        (servers[0], e, servers[0]),
        (servers[1], 12, servers[1]),
        (servers[2], 30, "ppgen999"),
    ]
    keys = ["values", "lengths", "states", "profiles", "server_names", "last_time_idx"]
    out: dict[str, list[Any]] = {k: [] for k in keys + (["day_ago"] if spec.max_lag else [])}
    for server, length, alias in chosen:
        rows = np.flatnonzero(names == server)
        steps = ts[rows] // spec.step_seconds
        order = np.argsort(steps, kind="stable")
        rows, steps = rows[order], steps[order]
        last = int(steps[-1]) - 2 * spec.prediction_length  # well inside the data
        wanted = np.arange(last - length + 1, last + 1)
        pos = np.searchsorted(steps, wanted, side="right") - 1  # forward fill
        values = np.zeros((e, spec.n_targets))
        values[:length] = metrics[rows[pos]]
        state_idx = np.full(e, -1, dtype=np.int64)
        state_idx[:length] = encode_states(spec, states_col[rows[pos]])
        if alias != server:
            state_idx[:length] = -1  # an unknown server reporting no state
        out["values"].append(values.tolist())
        out["lengths"].append(length)
        out["states"].append(state_idx.tolist())
        out["profiles"].append(profiles_col[rows[0]] if alias == server else "generic")
        out["server_names"].append(alias)
        out["last_time_idx"].append(last)
        if spec.max_lag:
            # A cold-start window (shorter than E) is a server with no older history.
            history = (steps <= last) & ((steps > last - length) | (length == e))
            lagged = day_ago_rows(spec, steps[history], metrics[rows[history]], length, last)
            out["day_ago"].append(lagged.tolist())
    return out


def make_fixture(
    out_dir: str | Path, input_scaling: str = "window", day_ago: bool = False
) -> dict[str, Path]:
    """Train, bundle, export and write the fixture files into ``out_dir``; returns their paths."""
    import onnxruntime as ort

    from fleetcast.contract.features import ModelSpec, build_inputs
    from fleetcast.contract.simulate import simulate_table
    from fleetcast.exporter.bundle_export import WindowSource, export_bundle
    from fleetcast.exporter.export import ExportOptions
    from fleetcast.trainer.bundle import save_bundle
    from fleetcast.trainer.train import train_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = simulate_table(**FIXTURE_FLEET)
    model, dataset, info = train_model(table, tiny_config(input_scaling, day_ago))
    fixed_scaling = input_scaling == "fixed"
    model_name = STEPS_FIXTURE_NAME if fixed_scaling else FIXTURE_NAME
    with tempfile.TemporaryDirectory() as tmp:
        # A fixed bundle time keeps bundle_id (and the metadata) stable across regenerations.
        fixed = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        bundle = save_bundle(model, dataset, tmp, training_info=info, now=fixed)
        report = export_bundle(
            bundle,
            data=table,
            out=out_dir / model_name,
            options=ExportOptions(parity_batches=(1, 7, 90), latency_batches=()),
            source=WindowSource(windows=96),
        )
    logger.info("%s", report.format())
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    spec = ModelSpec.from_metadata(session.get_modelmeta().custom_metadata_map)
    raw = reference_windows(table, spec)
    inputs = build_inputs(
        spec,
        np.asarray(raw["values"]),
        np.asarray(raw["lengths"]),
        np.asarray(raw["states"]),
        raw["profiles"],
        raw["server_names"],
        np.asarray(raw["last_time_idx"]),
        day_ago=np.asarray(raw["day_ago"]) if "day_ago" in raw else None,
    )
    quantiles = session.run(["quantiles"], inputs.as_feed())[0]
    reference = {
        "description": "Raw windows for fleetcast.contract.features.build_inputs and the "
        "model's expected output [window, target, step, quantile] in real units. "
        "Regenerate: python -m fleetcast.exporter.fixture "
        f"--input-scaling {input_scaling}{' --day-ago' if day_ago else ''} "
        "appliance/tests/fixtures/",
        "model_sha256": report.sha256,
        "inputs": raw,
        "quantiles": np.round(quantiles.astype(np.float64), 6).tolist(),
    }
    ref_path = out_dir / (STEPS_REFERENCE_NAME if fixed_scaling else REFERENCE_NAME)
    ref_path.write_text(json.dumps(reference, separators=(",", ":")) + "\n")
    return {"model": report.path, "reference": ref_path}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m fleetcast.exporter.fixture OUT_DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--input-scaling",
        choices=("window", "fixed"),
        default="window",
        help="window: tiny_model.*; fixed: tiny_model_steps.* (with step graphs)",
    )
    parser.add_argument(
        "--day-ago",
        action="store_true",
        help="each metric a day earlier as a known input (the fixed fixture has it)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = make_fixture(args.out_dir, args.input_scaling, args.day_ago)
    for name, path in paths.items():
        print(f"{name}: {path} ({path.stat().st_size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
