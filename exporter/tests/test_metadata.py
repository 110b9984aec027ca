"""Metadata: built from the bundle, equal to the dataset's view, round trip through the file."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from fleetcast.contract.features import METADATA_KEYS, ModelSpec

if TYPE_CHECKING:
    from pathlib import Path

    from fleetcast.exporter.export import ExportReport


def test_metadata_round_trip_through_the_file(exported: ExportReport, bundle_dir: Path) -> None:
    import onnxruntime as ort

    from fleetcast.exporter.metadata import read_metadata, read_spec

    meta = read_metadata(exported.path)
    assert set(METADATA_KEYS.values()) <= set(meta)
    assert all(isinstance(json.loads(v), object) for v in meta.values())
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    ort_map = session.get_modelmeta().custom_metadata_map
    spec = ModelSpec.from_metadata(ort_map)
    assert spec == read_spec(exported.path)
    assert ModelSpec.from_metadata(spec.to_metadata()) == spec

    config = json.loads((bundle_dir / "config.json").read_text())
    assert spec.bundle_id == bundle_dir.name
    assert spec.weights_sha256 == config["weights_sha256"]
    assert spec.encoder_length == 48
    assert spec.min_encoder_length == 12
    assert spec.prediction_length == 12
    assert spec.horizons == {"30min": 6, "1hr": 12}  # 8hr needs 96 steps
    assert spec.quantiles == (0.1, 0.5, 0.9)
    assert spec.targets == ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")
    assert spec.target_transforms["latency_ms"] == "log1p"
    assert spec.x_categoricals == ("profile", "server_id", "state")
    assert spec.real_scalers["encoder_length"].mean == 24.0
    assert spec.real_scalers["hour_sin"].scale == 1.0
    assert spec.categorical_classes["state"]["nan"] == 0
    assert spec.unknown_codes == {"profile": 0, "server_id": 0, "state": 0}
    assert "ppweb001" in spec.server_mapping


def test_bundle_spec_equals_the_training_dataset_spec(trained: tuple, bundle_dir: Path) -> None:
    """The metadata written from config.json equals what the fitted TimeSeriesDataSet holds."""
    from fleetcast.exporter.metadata import spec_from_bundle, spec_from_model
    from fleetcast.trainer.bundle import load_bundle

    model, dataset, _ = trained
    bundle = load_bundle(bundle_dir)
    from_bundle = spec_from_bundle(bundle)
    from_dataset = spec_from_model(
        model,
        dataset,
        model_version=from_bundle.model_version,
        bundle_id=from_bundle.bundle_id,
        weights_sha256=from_bundle.weights_sha256,
        server_mapping=from_bundle.server_mapping,
    )
    for f in dataclasses.fields(ModelSpec):
        a, b = getattr(from_bundle, f.name), getattr(from_dataset, f.name)
        if f.name == "real_scalers":
            for name in a:
                assert a[name].source == b[name].source, name
                assert abs(a[name].mean - b[name].mean) < 1e-9, name
                assert abs(a[name].scale - b[name].scale) < 1e-9, name
        else:
            assert a == b, f.name
