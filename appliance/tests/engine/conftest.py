"""Shared helpers of the engine tests: a synthetic ModelSpec and synthetic samples.

Only numpy / fleetcast imports (the appliance's test job runs without torch or onnx).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fleetcast.contract.encoder import server_id
from fleetcast.contract.features import ModelSpec, RealScaler
from fleetcast.contract.schema import (
    CONTRACT_VERSION,
    HORIZONS,
    METRIC_COLUMNS,
    STEP_SECONDS,
    VALID_PROFILES,
    VALID_STATES,
)

TRAINING_SERVERS = ("ppweb001", "ppdb001", "ppml0001", "ppetl001")


STEPS_ONNX = Path(__file__).parents[1] / "fixtures" / "tiny_model_steps.onnx"
"""The tiny model with step graphs (docs/MODEL_FORMAT.md#step-cache)."""

TOY_ONNX = Path(__file__).parent / "fixtures" / "toy_model.onnx"
"""The toy model of the engine tests (the ``toy_dir`` fixture)."""


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    """A model folder holding the toy model (fixtures/toy_model.onnx)."""
    shutil.copy(TOY_ONNX, tmp_path / "model.onnx")
    return tmp_path


@pytest.fixture
def steps_dir(tmp_path: Path) -> Path:
    """A model folder holding the step-graph fixture, its checksum and its reference
    windows (``reference.json``: inputs and the exporter's quantiles)."""
    if not STEPS_ONNX.is_file():
        pytest.skip("fixture tiny_model_steps.onnx missing (python -m fleetcast.exporter.fixture)")
    shutil.copyfile(STEPS_ONNX, tmp_path / "model.onnx")
    digest = STEPS_ONNX.with_name(STEPS_ONNX.name + ".sha256").read_text().split()[0]
    (tmp_path / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    shutil.copyfile(
        STEPS_ONNX.with_name("tiny_model_steps_reference.json"), tmp_path / "reference.json"
    )
    return tmp_path


def make_spec(
    encoder_length: int = 24, min_encoder_length: int = 6, day_ago_lag: int = 0
) -> ModelSpec:
    """A ModelSpec shaped like the trainer's (column order as pytorch-forecasting builds it).

    ``day_ago_lag`` > 0 adds each target ``day_ago_lag`` steps earlier as a known real.
    """
    reals = ["encoder_length"]
    scalers = {"encoder_length": RealScaler("encoder_length", mean=12.0, scale=12.0)}
    for k, t in enumerate(METRIC_COLUMNS):
        reals += [f"{t}_center", f"{t}_scale"]
        scalers[f"{t}_center"] = RealScaler("target_center", mean=1.0 + k, scale=2.0 + k, target=t)
        scalers[f"{t}_scale"] = RealScaler("target_scale", mean=0.5, scale=0.25 + k, target=t)
    for name in ("hour_sin", "hour_cos", "dow_sin", "dow_cos"):
        reals.append(name)
        scalers[name] = RealScaler("calendar", mean=0.0, scale=1.0)
    for k, t in enumerate(METRIC_COLUMNS if day_ago_lag else ()):
        reals.append(f"{t}_day_ago")
        scalers[f"{t}_day_ago"] = RealScaler(
            "target_day_ago", mean=0.5 * k, scale=1.5 + k, target=t, lag=day_ago_lag
        )
    for t in METRIC_COLUMNS:
        reals.append(t)
        scalers[t] = RealScaler("target", target=t)
    ids = {n: server_id(n) for n in TRAINING_SERVERS}
    # ppetl001's ID was nulled in training (unknown-server embedding): not among the classes.
    id_classes = {"nan": 0} | {ids[n]: i + 1 for i, n in enumerate(TRAINING_SERVERS[:3])}
    return ModelSpec(
        contract_version=CONTRACT_VERSION,
        model_version="test-1",
        bundle_id="tft_model_20261127_000000",
        weights_sha256="0" * 64,
        step_seconds=STEP_SECONDS,
        encoder_length=encoder_length,
        min_encoder_length=min_encoder_length,
        prediction_length=96,
        horizons=dict(HORIZONS),
        targets=METRIC_COLUMNS,
        target_transforms={
            "cpu_pct": "identity",
            "mem_pct": "identity",
            "disk_io_mb_s": "log1p",
            "latency_ms": "log1p",
        },
        target_min_scale={"cpu_pct": 0.5, "mem_pct": 0.5, "disk_io_mb_s": 0.02, "latency_ms": 0.02},
        quantiles=(0.1, 0.5, 0.9),
        profiles=VALID_PROFILES,
        states=VALID_STATES,
        x_categoricals=("profile", "server_id", "state"),
        x_reals=tuple(reals),
        feature_roles={},
        categorical_classes={
            "profile": {"nan": 0} | {p: i + 1 for i, p in enumerate(sorted(VALID_PROFILES))},
            "server_id": id_classes,
            "state": {"nan": 0} | {s: i + 1 for i, s in enumerate(sorted(VALID_STATES))},
        },
        unknown_codes={"profile": 0, "server_id": 0, "state": 0},
        real_scalers=scalers,
        server_mapping=ids,
    )


@pytest.fixture
def spec() -> ModelSpec:
    return make_spec()


@pytest.fixture
def spec_factory():
    """:func:`make_spec`, for tests that need another shape (e.g. day-ago inputs)."""
    return make_spec


def samples(
    names: list[str],
    start_ts: int,
    seconds: int,
    every: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Synthetic samples: each server every ``every`` s over ``seconds`` s, metrics in range."""
    rng = np.random.default_rng(seed)
    ts_one = np.arange(start_ts, start_ts + seconds, every, dtype=np.int64)
    n = len(ts_one) * len(names)
    ts = np.tile(ts_one, len(names))
    server = np.repeat(np.array(names, dtype=object), len(ts_one))
    metrics = np.column_stack(
        [
            rng.uniform(5, 95, n),
            rng.uniform(20, 90, n),
            rng.lognormal(2.0, 1.0, n),
            rng.lognormal(3.0, 0.5, n),
        ]
    )
    state = rng.choice(np.array([*VALID_STATES, None], dtype=object), n)
    return {"ts": ts, "server": server, "metrics": metrics, "state": state}


@pytest.fixture
def make_samples():
    """The :func:`samples` factory (tests cannot import conftest under importlib mode)."""
    return samples


def _record_batch(ts, names, metrics, states, profiles=None):
    """A RecordBatch from per-record arrays: ``metrics`` [n, 4] in METRIC_COLUMNS order."""
    from fleetcast.appliance.engine import RecordBatch

    metrics = np.asarray(metrics, dtype=np.float64)
    return RecordBatch(
        ts=np.asarray(ts, dtype=np.int64),
        server=list(names),
        cpu_pct=metrics[:, 0],
        mem_pct=metrics[:, 1],
        disk_io_mb_s=metrics[:, 2],
        latency_ms=metrics[:, 3],
        state=list(states),
        profile=list(profiles) if profiles is not None else [None] * len(names),
    )


@pytest.fixture
def record_batch():
    """:func:`_record_batch`, for tests that ingest hand-made records."""
    return _record_batch
