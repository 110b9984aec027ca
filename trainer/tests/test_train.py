"""Training runs: history, finite losses on constant stretches, weights, quality, resume."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from fleetcast.trainer.dataset import prepare_frame
from fleetcast.trainer.evaluate import BASELINES, STATE_UNKNOWN, baseline_forecasts
from fleetcast.trainer.toydata import make_toy_table
from fleetcast.trainer.train import loss_weights, split_holdout, train_model

if TYPE_CHECKING:
    from pathlib import Path


def test_info_of_a_tiny_run(trained) -> None:
    model, _, info = trained
    assert not model.training
    assert info["epochs_run"] == 2
    assert [r["epoch"] for r in info["history"]] == [1, 2]
    for row in info["history"]:  # the toy fleet has an offline stretch of zeros
        assert math.isfinite(row["train_loss"])
        assert math.isfinite(row["val_loss"])
        assert row["lr"] > 0
    assert info["servers"] == 4
    assert info["unknown_server_trained"] is True
    assert info["quality"]["profile_feature"] is True
    assert set(info["quality"]) >= {"val_train_ratio", "val_below_1_5x_train", "passed"}
    assert info["hardware"]["precision"] == "32-true"


def test_accuracy_table_structure(trained) -> None:
    acc = trained[2]["accuracy"]
    assert acc["windows"] > 0
    # the toy fleet has states: the TFT is also scored with every state null
    assert acc["models"] == ["tft", *BASELINES, STATE_UNKNOWN]
    assert set(acc["horizons"]) == {"30min", "1hr"}  # prediction 12 steps: no 8hr
    for target in ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms"):
        for h in ("30min", "1hr"):
            assert set(acc["mae"][target][h]) == {"tft", *BASELINES, STATE_UNKNOWN}
            assert acc["mae"][target][h][STATE_UNKNOWN] != acc["mae"][target][h]["tft"]
            assert all(v >= 0 for v in acc["mae"][target][h].values())
            assert 0.0 <= acc["coverage_p10_p90"][target][h] <= 1.0
    assert isinstance(acc["goal"]["met"], bool)


def test_loss_weights_equalise_typical_changes(toy_table) -> None:
    frame = prepare_frame(toy_table)
    targets = ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")
    w = loss_weights(frame, targets)
    assert np.mean(w) == pytest.approx(1.0)
    g = frame.groupby("server_name", observed=True)
    typical = [float(np.nanmean((g[t].shift(-12) - frame[t]).abs())) for t in targets]
    products = np.array(w) * np.array(typical)
    np.testing.assert_allclose(products, products[0], rtol=1e-6)


def test_a_constant_target_does_not_take_the_loss(toy_table, caplog) -> None:
    """A latency filled with 0 (import --latency-fill 0) weighed 1 / 1e-6: ~4.0 of a mean
    of 1, the others ~1e-6, and cpu and mem then lost to persistence everywhere."""
    frame = prepare_frame(toy_table)
    targets = ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")
    moving = loss_weights(frame, targets)
    frame["latency_ms"] = 0.0
    with caplog.at_level("WARNING", logger="fleetcast.trainer"):
        w = loss_weights(frame, targets)
    assert np.mean(w) == pytest.approx(1.0)
    g = frame.groupby("server_name", observed=True)
    typical = [float(np.nanmean((g[t].shift(-12) - frame[t]).abs())) for t in targets[:3]]
    # latency weighs as a target of the median typical change; the others keep their ratios.
    assert w[3] * float(np.median(typical)) == pytest.approx(w[0] * typical[0], rel=1e-6)
    np.testing.assert_allclose(np.array(w[:3]) / w[0], np.array(moving[:3]) / moving[0])
    assert "latency_ms never change" in caplog.text


def test_a_target_whose_weight_is_set_by_a_spike_is_named(toy_table, caplog) -> None:
    """One legal 1e9 ms latency made latency's typical change ~10^5 times its median: its
    weight fell to ~2e-5 and it was never trained, silently."""
    frame = prepare_frame(toy_table)
    targets = ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms")
    with caplog.at_level("WARNING", logger="fleetcast.trainer"):
        loss_weights(frame, targets)
    assert "dominated by a few extreme values" not in caplog.text
    frame.loc[frame.index[100], "latency_ms"] = 1e9
    with caplog.at_level("WARNING", logger="fleetcast.trainer"):
        w = loss_weights(frame, targets)
    assert "dominated by a few extreme values" in caplog.text
    assert "latency_ms (mean" in caplog.text
    assert w[3] < 1e-3  # the weight itself is still the mean's (documented, not fixed)
    # A flat latency (median change 0) with the same spike: named too.
    caplog.clear()
    frame["latency_ms"] = 5.0
    frame.loc[frame.index[100], "latency_ms"] = 1e9
    with caplog.at_level("WARNING", logger="fleetcast.trainer"):
        loss_weights(frame, targets)
    assert "latency_ms (mean" in caplog.text
    assert "median 0" in caplog.text


def test_baselines_on_a_ramp() -> None:
    n = 600
    ramp = np.arange(n, dtype=np.float64)[:, None] * np.ones((1, 4))
    dense = {"s": (0, ramp, ramp)}
    fc, actual = baseline_forecasts(
        dense, [("s", 400)], ("cpu_pct", "mem_pct", "disk_io_mb_s", "latency_ms"), 12
    )
    h = np.arange(1, 13)
    np.testing.assert_allclose(actual[0, 1], 400 + h)
    np.testing.assert_allclose(fc["persistence"][0, 1], 400)
    np.testing.assert_allclose(fc["seasonal_naive"][0, 1], 400 + h - 288)
    np.testing.assert_allclose(fc["linear_trend"][0, 2], 400 + h)  # exact on a line


def test_short_data_is_refused_with_a_way_out(make_config) -> None:
    frame = prepare_frame(make_toy_table(hours=2))
    with pytest.raises(ValueError, match="too short"):
        split_holdout(frame, make_config())


def test_resume_from_checkpoint(toy_table, make_config, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    _, _, first = train_model(toy_table, make_config(checkpoint_dir=ckpt, checkpoint_every=1))
    assert (ckpt / "last.ckpt").is_file()
    assert (ckpt / "epoch000.ckpt").is_file()
    _, _, second = train_model(
        toy_table, make_config(epochs=2, checkpoint_dir=ckpt, resume_from=ckpt / "last.ckpt")
    )
    assert [r["epoch"] for r in first["history"]] == [1]
    assert [r["epoch"] for r in second["history"]] == [2]  # continued, not restarted
    assert second["resumed_from"] == str(ckpt / "last.ckpt")


def test_a_resumed_run_keeps_an_earlier_best_epoch(
    toy_table, make_config, tmp_path: Path, monkeypatch
) -> None:
    """The best weights travel in the checkpoint: when no epoch after a resume beats the
    best one before it, that one is kept (and reported), not the best of the resumed part."""
    import fleetcast.trainer.callbacks as callbacks

    ckpt = tmp_path / "ckpt"
    model_1, _, first = train_model(toy_table, make_config(checkpoint_dir=ckpt, checkpoint_every=1))
    real = callbacks._metric

    def worse(trainer, *names: str) -> float:  # epoch 2 validates far worse
        return real(trainer, *names) + (1e6 if "val_loss" in names else 0.0)

    monkeypatch.setattr(callbacks, "_metric", worse)
    model_2, _, second = train_model(
        toy_table, make_config(epochs=2, checkpoint_dir=ckpt, resume_from=ckpt / "last.ckpt")
    )
    assert [r["epoch"] for r in second["history"]] == [2]
    assert second["best_epoch"] == 1
    state_2 = model_2.state_dict()
    for name, value in model_1.state_dict().items():
        assert bool((value == state_2[name]).all()), name
    assert second["quality"]["val_loss"] == first["quality"]["val_loss"]
    assert second["quality"]["train_loss"] == pytest.approx(first["quality"]["train_loss"])


def test_a_server_too_short_for_a_window_is_trained_as_unknown(toy_table, make_config) -> None:
    """10 rows cannot make a window of 12 encoder + 12 predicted steps: such a server gets
    no embedding of its own (it would never be trained), the unknown one instead."""
    import pyarrow as pa

    from fleetcast.contract.encoder import server_id as hash_server_id
    from fleetcast.trainer.dataset import unknown_id_servers
    from fleetcast.trainer.train_setup import categorical_classes

    first = toy_table.slice(0, 10).to_pydict()
    first["server_name"] = ["ppdb777"] * 10
    first["profile"] = ["database"] * 10
    table = pa.concat_tables([toy_table, pa.table(first, schema=toy_table.schema)])
    config = make_config(epochs=1, max_batches=1, val_batches=1)
    _, dataset, info = train_model(table, config)
    need = 12 + config.prediction  # min_encoder_length + prediction
    assert info["servers_too_short"] == {"count": 1, "min_steps": need, "names": ["ppdb777"]}
    ids = categorical_classes(dataset)["server_id"]
    assert hash_server_id("ppdb777") not in ids
    others = {str(n) for n in toy_table.column("server_name").unique().to_pylist()}
    # One of the five is trained as unknown on purpose (unknown_id_servers: at least one).
    nulled = unknown_id_servers([*others, "ppdb777"], config.unknown_server_fraction)
    assert len(nulled) == 1
    assert {hash_server_id(n) for n in others - nulled} <= set(ids)
    assert not {hash_server_id(n) for n in nulled} & set(ids)
    assert info["servers"] == 5  # still counted and mapped: a server the fleet has
    # The toy fleet has four of the seven profiles (database twice, once too short).
    assert info["profiles_untrained"] == ["conductor_mgmt", "generic", "risk_analytics"]


def test_a_profile_only_a_too_short_server_has_counts_as_untrained() -> None:
    import pandas as pd

    from fleetcast.trainer.data_step import untrained_profiles

    frame = pd.DataFrame(
        {
            "server_name": pd.Categorical(["ppdb001", "ppdb001", "pprisk01", "ppweb001"]),
            "profile": pd.Categorical(["database", "database", "risk_analytics", "web_api"]),
        }
    )
    assert untrained_profiles(frame, []) == [
        "conductor_mgmt",
        "data_ingest",
        "generic",
        "ml_compute",
    ]
    assert "risk_analytics" in untrained_profiles(frame, ["pprisk01"])


def test_the_precision_recorded_is_the_one_lightning_ran(toy_table) -> None:
    """On CPU Lightning runs --precision 16-mixed as bf16-mixed (it warns); the bundle's
    training_info said 16-mixed."""
    import warnings

    from .conftest import tiny_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, info = train_model(toy_table, tiny_config(precision="16-mixed", max_batches=1))
    assert info["hardware"]["precision"] == "bf16-mixed"


def test_a_server_whose_data_ends_in_the_training_part_is_named(toy_table, caplog) -> None:
    """It was left out of validation and the accuracy table without a word."""
    import warnings

    import pyarrow.compute as pc

    from .conftest import tiny_config

    names = toy_table.column("server_name")
    gone = sorted(set(names.to_pylist()))[0]
    cutoff = pc.min(toy_table.column("timestamp")).value + 12 * 3600 * 1_000_000
    early = pc.and_(
        pc.equal(names, gone), pc.less(toy_table.column("timestamp").cast("int64"), cutoff)
    )
    table = toy_table.filter(pc.or_(pc.not_equal(names, gone), early))
    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="fleetcast.trainer"):
        warnings.simplefilter("ignore")
        _, _, info = train_model(table, tiny_config(max_batches=1))
    assert info["servers_not_evaluated"] == {"count": 1, "names": [gone]}
    assert "1 of 4 servers have no data after the training part" in caplog.text


def test_a_fleet_of_one_server_says_the_unknown_server_embedding_is_untrained(
    toy_table, caplog
) -> None:
    """One server keeps its own ID, so no row trains the embedding every new server is
    forecast from; nothing said so."""
    import warnings

    import pyarrow.compute as pc

    from .conftest import tiny_config

    names = toy_table.column("server_name")
    one = toy_table.filter(pc.equal(names, sorted(set(names.to_pylist()))[0]))
    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="fleetcast.trainer"):
        warnings.simplefilter("ignore")
        _, _, info = train_model(one, tiny_config(max_batches=1, evaluate=False))
    assert info["unknown_server_trained"] is False
    (warned,) = [r.getMessage() for r in caplog.records if "unknown server ID" in r.getMessage()]
    assert "stays untrained" in warned
    assert "Train on two servers or more" in warned
