"""The pickle-free bundle: four files, latest link, bit-for-bit reload, integrity checks."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fleetcast.contract.encoder import ServerEncoder
from fleetcast.contract.schema import CONTRACT_VERSION
from fleetcast.trainer.bundle import BUNDLE_FILES, BundleError, load_bundle, save_bundle
from fleetcast.trainer.dataset import prepare_frame
from fleetcast.trainer.predict import predict_windows
from fleetcast.trainer.toydata import make_toy_table


def _new_data_windows():
    """Data the model never saw (another seed), and a few windows in it."""
    frame = prepare_frame(make_toy_table(seed=7, hours=30))
    t_max = int(frame["time_idx"].max())
    windows = [("ppweb001", t_max - 30), ("ppdb001", t_max - 12), ("ppml0001", t_max - 200)]
    return frame, windows


def test_bundle_has_all_four_files_and_latest(bundle_dir: Path) -> None:
    assert bundle_dir.name.startswith("tft_model_")
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted(BUNDLE_FILES)
    latest = bundle_dir.parent / "latest"
    assert latest.is_symlink()
    assert latest.resolve() == bundle_dir.resolve()
    config = json.loads((bundle_dir / "config.json").read_text())
    assert config["dataset"]["x_categoricals"] == ["profile", "server_id", "state"]
    assert config["dataset"]["categorical_classes"]["state"][0] == "nan"
    assert config["quantiles"] == [0.1, 0.5, 0.9]
    info = json.loads((bundle_dir / "training_info.json").read_text())
    assert info["contract_version"] == CONTRACT_VERSION
    assert "accuracy" in info
    mapping = ServerEncoder.load(bundle_dir)
    assert "ppweb001" in mapping
    # Every file by the umask, the weights too (safetensors writes 0600: a bundle copied to
    # an appliance as root was unreadable to its service user).
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in bundle_dir.iterdir()}
    assert modes == dict.fromkeys(BUNDLE_FILES, 0o666 & ~mask)


def test_reload_parity_bit_for_bit_on_new_data(trained, bundle_dir: Path) -> None:
    model, dataset, _ = trained
    bundle = load_bundle(bundle_dir.parent)  # through models/latest
    assert not bundle.model.training
    frame, windows = _new_data_windows()
    before = predict_windows(model, dataset, frame, windows)
    after = bundle.predict_windows(frame, windows)
    assert before.shape == (3, 4, 12, 3)
    assert np.isfinite(after).all()
    assert np.array_equal(before, after)
    # the raw network output too, on one batch built from the bundle alone
    ds = bundle.build_dataset(frame)
    x, _ = next(iter(ds.to_dataloader(train=False, batch_size=8)))
    with torch.no_grad():
        a = model(x)["prediction"]
        b = bundle.model(x)["prediction"]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_save_and_load_use_no_pickle(trained, tmp_path: Path, monkeypatch) -> None:
    model, dataset, info = trained

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for obj, name in [
        (pickle, "dump"),
        (pickle, "dumps"),
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Pickler"),
        (pickle, "Unpickler"),
        (torch, "save"),
        (torch, "load"),
    ]:
        monkeypatch.setattr(obj, name, refuse)
    path = save_bundle(model, dataset, tmp_path / "models", training_info=info)
    bundle = load_bundle(path)
    monkeypatch.undo()
    files = {p.name for p in path.iterdir()}
    assert files == set(BUNDLE_FILES)  # no checkpoint, no .pt/.pkl, no data
    frame, windows = _new_data_windows()
    assert np.array_equal(
        predict_windows(model, dataset, frame, windows), bundle.predict_windows(frame, windows)
    )


def test_missing_server_mapping_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / bundle_dir.name
    shutil.copytree(bundle_dir, copy)
    (copy / "server_mapping.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"server_mapping\.json"):
        load_bundle(copy)


def test_tampered_weights_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / bundle_dir.name
    shutil.copytree(bundle_dir, copy)
    raw = bytearray((copy / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(copy)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("hparams", "hidden_size", 9),
        ("dataset", "max_encoder_length", 1_000_000),  # built, it would exhaust memory
        (None, "step_seconds", 600),
        (None, "quantiles", [0.5, 0.1, 0.9]),
    ],
)
def test_an_edited_config_is_refused_before_a_model_is_built(
    bundle_dir: Path, tmp_path: Path, section: str | None, key: str, value: object
) -> None:
    copy = tmp_path / bundle_dir.name
    shutil.copytree(bundle_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    assert len(config["config_sha256"]) == 64
    (config[section] if section else config)[key] = value
    (copy / "config.json").write_text(json.dumps(config, indent=2))
    with pytest.raises(BundleError, match=r"config\.json in .* does not match the SHA-256"):
        load_bundle(copy)
    # Reformatting alone (indentation, key order) changes nothing.
    config = json.loads((bundle_dir / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(dict(reversed(config.items()))))
    assert load_bundle(copy).config["bundle_id"] == config["bundle_id"]


def test_save_fails_when_a_file_is_missing(trained, tmp_path: Path, monkeypatch) -> None:
    model, dataset, info = trained
    monkeypatch.setattr(ServerEncoder, "save", lambda self, path: Path(path))  # writes nothing
    out = tmp_path / "models"
    with pytest.raises(BundleError, match=r"server_mapping\.json"):
        save_bundle(model, dataset, out, training_info=info)
    assert not any(p.name.startswith("tft_model_") for p in out.iterdir())
    assert not (out / "latest").exists()


def test_two_saves_in_one_second_get_distinct_folders(trained, tmp_path: Path) -> None:
    import datetime as dt

    model, dataset, info = trained
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    a = save_bundle(model, dataset, tmp_path, training_info=info, now=now)
    b = save_bundle(model, dataset, tmp_path, training_info=info, now=now)
    assert a.name == "tft_model_20260102_030405"
    assert b.name != a.name
    assert (tmp_path / "latest").resolve() == b.resolve()


def _round_trip(toy_table, make_config, folder: Path, **design: object) -> tuple:
    """Train a tiny model of ``design``, save it, reload it; the bundle's forecasts must equal
    the trained model's bit for bit. Returns (the saved dataset config dict, the bundle)."""
    import json
    import warnings

    from fleetcast.trainer.train import train_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, dataset, info = train_model(toy_table, make_config(**design))
    saved = save_bundle(model, dataset, folder, training_info=info)
    bundle = load_bundle(saved)
    frame, windows = _new_data_windows()
    before = predict_windows(model, dataset, frame, windows)
    after = bundle.predict_windows(frame, windows)
    assert np.isfinite(after).all()
    assert np.array_equal(before, after)
    return json.loads((saved / "config.json").read_text())["dataset"], bundle


def test_fixed_input_scaling_round_trips_through_the_bundle(
    toy_table, make_config, tmp_path: Path
) -> None:
    ds, bundle = _round_trip(
        toy_table, make_config, tmp_path / "models", input_scaling="fixed", day_ago=False
    )
    assert ds["input_scaling"] == "fixed"
    assert ds["day_ago"] is False
    assert ds["add_target_scales"] is False
    assert ds["time_varying_unknown_reals"] == [f"{t}_level" for t in ds["targets"]]
    assert ds["scalers"]["cpu_pct_level"]["kind"] == "target_level"
    assert ds["scalers"]["cpu_pct_level"]["target"] == "cpu_pct"
    # The output scale's floor is each target's global std (output_scale_floors).
    for target in ds["targets"]:
        level_std = ds["scalers"][f"{target}_level"]["scale"]
        assert ds["min_scale"][target] == pytest.approx(
            max(level_std, 0.5 if "pct" in target else 0.02)
        )
        assert ds["target_normalizer"]["min_scale"][target] == ds["min_scale"][target]
    assert bundle.dataset_config.input_scaling == "fixed"


def test_the_earlier_window_design_round_trips_through_the_bundle(
    toy_table, make_config, tmp_path: Path
) -> None:
    """The design that was the default before contract 1.1.0 (window-scaled inputs, no
    day-ago inputs) still trains, saves, loads and predicts bit for bit."""
    ds, bundle = _round_trip(
        toy_table, make_config, tmp_path / "models", input_scaling="window", day_ago=False
    )
    assert (ds["input_scaling"], ds["day_ago"]) == ("window", False)
    assert ds["add_target_scales"] is True
    assert ds["time_varying_unknown_reals"] == list(ds["targets"])
    assert not any(r.endswith("_day_ago") for r in ds["time_varying_known_reals"])
    assert (bundle.dataset_config.input_scaling, bundle.dataset_config.day_ago) == ("window", False)


def _edited(bundle_dir: Path, tmp_path: Path, name: str, edit) -> Path:
    copy = tmp_path / bundle_dir.name
    shutil.copytree(bundle_dir, copy)
    path = copy / name
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return copy


def _unpinned(**changes: object):
    """A config without config_sha256 (as written before it existed), then edited."""

    def edit(config: dict) -> dict:
        del config["config_sha256"]
        for key, value in changes.items():
            config[key] = value
            config["dataset"][key] = value
        return config

    return edit


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        ("config.json", lambda c: [], r"config\.json in .* holds a JSON list, not the object"),
        ("config.json", lambda c: None, r"holds a JSON NoneType"),
        ("server_mapping.json", lambda c: 7, r"server_mapping\.json in .* holds a JSON int"),
        ("training_info.json", lambda c: "x", r"training_info\.json in .* holds a JSON str"),
        ("training_info.json", lambda c: {**c, "data": []}, r"its 'data' is \[\], not an object"),
        ("training_info.json", lambda c: {**c, "data": {"file": 3}}, r"its 'data' is"),
        ("config.json", lambda c: {**c, "bundle_format_version": 99}, r"bundle_format_version 99"),
        ("config.json", _unpinned(step_seconds=60), r"step_seconds 60 with targets"),
        ("config.json", _unpinned(targets=["latency_ms", "disk_io_mb_s", "mem_pct", "cpu_pct"]),
         r"the data contract's step is 300 s and its targets are"),
        ("config.json", _unpinned(hparams="none"), r"do not describe a model this fleetcast"),
    ],
)  # fmt: skip
def test_bundle_files_of_another_shape_are_a_bundle_error_not_a_traceback(
    bundle_dir: Path, tmp_path: Path, name: str, edit, expected: str
) -> None:
    """Each was an AttributeError, TypeError or IndexError traceback in `fleetcast export`,
    or (without config_sha256) a model exported with mislabelled outputs, exit 0."""
    copy = _edited(bundle_dir, tmp_path, name, edit)
    with pytest.raises(BundleError, match=expected) as info:
        load_bundle(copy)
    message = str(info.value)
    assert message.count("Why it matters:") == message.count("Fix:") == 1


def test_a_bundle_from_before_config_sha256_still_loads(bundle_dir: Path, tmp_path: Path) -> None:
    copy = _edited(bundle_dir, tmp_path, "config.json", _unpinned())
    assert (
        load_bundle(copy).config["bundle_id"]
        == json.loads((bundle_dir / "config.json").read_text())["bundle_id"]
    )
