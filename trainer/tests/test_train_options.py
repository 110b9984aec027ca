"""``fleetcast train`` refuses bad options, unusable paths, data at another step and
encoders the data cannot fill with a four-part message and exit 1, before it reads the data
where it can; a run that trains no epoch writes nothing and leaves ``latest`` alone; the
bundle records the training data's absolute path (trainer/README.md#options)."""

from __future__ import annotations

import json
import math
import zipfile
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fleetcast.contract.cli import main
from fleetcast.trainer.dataset import prepare_frame
from fleetcast.trainer.toydata import make_toy_table
from fleetcast.trainer.train import (
    TrainConfig,
    check_data_step,
    check_encoder_fits,
    split_holdout,
)

from .data_files import write_toy_data

if TYPE_CHECKING:
    from pathlib import Path

TINY = [
    "--epochs", "1", "--max-batches-per-epoch", "2", "--val-batches", "1",
    "--hidden-size", "8", "--attention-heads", "1", "--hidden-continuous-size", "4",
    "--encoder-steps", "48", "--prediction-steps", "12", "--batch-size", "16",
    "--holdout-hours", "24", "--accelerator", "cpu", "--no-eval",
]  # fmt: skip


def _with(options: list[str], overrides: list[str]) -> list[str]:
    """TINY with the options named in ``overrides`` replaced (or added)."""
    out = list(options)
    for flag, value in zip(overrides[::2], overrides[1::2], strict=True):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def _four_parts(err: str, doc: str = "trainer/README.md#") -> None:
    assert "Traceback" not in err
    assert "Why it matters:" in err
    assert "Fix:" in err
    assert f"See {doc}" in err


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return write_toy_data(tmp_path)


# -- every option is checked before the data is read ------------------------------------------

BAD_OPTIONS = [
    (["--epochs", "0"], "--epochs 0"),
    (["--epochs", "-1"], "--epochs -1"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--max-batches-per-epoch", "-1"], "--max-batches-per-epoch -1"),
    (["--val-batches", "0"], "--val-batches 0"),
    (["--learning-rate", "-1"], "--learning-rate -1.0"),
    (["--learning-rate", "nan"], "--learning-rate nan"),
    (["--horizon-power", "-1"], "--horizon-power -1.0"),
    (["--unknown-state-fraction", "1"], "--unknown-state-fraction 1.0"),
    (["--unknown-state-fraction", "nan"], "--unknown-state-fraction nan"),
    (["--hidden-size", "0"], "--hidden-size 0"),
    (["--attention-heads", "0"], "--attention-heads 0"),
    (["--attention-heads", "16"], "--attention-heads 16"),  # hidden size 8
    (["--hidden-continuous-size", "0"], "--hidden-continuous-size 0"),
    (["--dropout", "1.5"], "--dropout 1.5"),
    (["--dropout", "-0.1"], "--dropout -0.1"),
    (["--encoder-steps", "0"], "--encoder-steps 0"),
    (["--encoder-steps", "5", "--min-encoder-steps", "12"], "--encoder-steps 5 is shorter than"),
    (["--min-encoder-steps", "0"], "--min-encoder-steps 0"),
    (["--prediction-steps", "0"], "--prediction-steps 0"),
    (["--prediction-steps", "300"], "--prediction-steps 300"),  # day-ago: at most a day
    (["--holdout-hours", "0"], "--holdout-hours 0.0"),
    (["--holdout-hours", "-5"], "--holdout-hours -5.0"),
    (["--holdout-hours", "0.5"], "--holdout-hours 0.5 h (6 steps)"),  # < 12 predicted steps
    (["--val-hours", "-1"], "--val-hours -1.0"),
    (["--val-hours", "nan"], "--val-hours nan"),
    (["--val-hours", "0.5"], "--val-hours 0.5 h (6 steps)"),  # < 12 predicted steps
    (["--val-hours", "0.04"], "--val-hours 0.04"),  # rounds to 0 steps: not "validate on the tail"
    (["--eval-windows", "0"], "--eval-windows 0"),
    (["--patience", "-1"], "--patience -1"),
    (["--max-minutes", "-1"], "--max-minutes -1.0"),
    (["--seed", "-1"], "--seed -1"),
    (["--seed", str(2**32)], f"--seed {2**32}"),
    (["--accelerator", "bogus"], "--accelerator 'bogus'"),
    (["--devices", "0"], "--devices 0"),
    (["--devices", "two"], "--devices 'two'"),
    (["--strategy", "bogus"], "--strategy 'bogus'"),
    (["--precision", "bogus"], "--precision 'bogus'"),
    (["--precision", "16-true"], "--precision '16-true'"),
    (["--num-workers", "-1"], "--num-workers -1"),
    (["--checkpoint-every", "0"], "--checkpoint-every 0"),
    (["--servers-sample", "-1"], "--servers-sample -1"),
    (["--servers-sample", "0"], "--servers-sample 0"),
]


@pytest.mark.parametrize(("overrides", "what"), BAD_OPTIONS, ids=lambda v: " ".join(v))
def test_a_bad_option_is_refused_before_the_data_is_read(
    overrides: list[str], what: str, tmp_path: Path, capsys
) -> None:
    # The data file does not exist: had it been looked at, the exit code would be 2.
    missing = tmp_path / "nothing.parquet"
    out = tmp_path / "models"
    rc = main(["train", "--data", str(missing), "--out", str(out), *_with(TINY, overrides)])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert what in err
    _four_parts(err, "trainer/README.md#options")
    assert "nothing.parquet" not in err
    assert not out.exists()


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU"
)
def test_a_gpu_that_is_not_there_is_refused(tmp_path: Path, capsys) -> None:
    rc = main(
        ["train", "--data", str(tmp_path / "x.parquet"), *_with(TINY, ["--accelerator", "gpu"])]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "--accelerator 'gpu': needs a CUDA GPU" in err
    _four_parts(err, "trainer/README.md#options")


def test_the_python_api_validates_the_same_way() -> None:
    TrainConfig().validate()  # the defaults are valid
    for bad in (
        {"epochs": 0},
        {"hidden_size": 0},
        {"attention_head_size": 9, "hidden_size": 8},
        {"min_encoder": 13, "encoder": 12},
        {"holdout_steps": 0},
        {"quantiles": (0.1, 0.9)},
        {"gradient_clip": -1.0},
        {"max_batches": 0},
        {"max_minutes": 0.0},
        {"epochs": True},
        {"learning_rate": math.inf},
    ):
        with pytest.raises(ValueError, match=r"trainer/README\.md#options"):
            TrainConfig(**bad).validate()


# -- paths: --out, --checkpoint-dir, --resume --------------------------------------------------


def test_out_that_is_a_file_is_refused_before_the_data_is_read(tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "models"
    a_file.write_text("not a folder")
    missing = str(tmp_path / "nothing.parquet")
    for out in (a_file, a_file / "sub"):
        rc = main(["train", "--data", missing, "--out", str(out), *TINY])
        err = capsys.readouterr().err
        assert rc == 1
        assert f"--out {out}" in err
        _four_parts(err, "trainer/README.md#options")
    folder = tmp_path / "m"
    (folder / "latest").mkdir(parents=True)  # a real folder where the link goes
    rc = main(["train", "--data", missing, "--out", str(folder), *TINY])
    err = capsys.readouterr().err
    assert rc == 1
    assert "not the symbolic link" in err
    rc = main(
        ["train", "--data", missing, "--out", str(tmp_path / "ok"), "--checkpoint-dir",
         str(a_file), *TINY]
    )  # fmt: skip
    assert rc == 1
    assert f"--checkpoint-dir {a_file}: is an existing file" in capsys.readouterr().err


def test_resume_from_a_file_that_is_not_a_checkpoint(
    data_file: Path, tmp_path: Path, capsys
) -> None:
    missing = str(tmp_path / "nothing.parquet")
    rc = main(["train", "--data", missing, "--out", str(tmp_path / "m"), "--resume",
               str(data_file), *TINY])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    assert f"--resume {data_file}: not a checkpoint this run can resume from" in err
    _four_parts(err, "trainer/README.md#what-a-run-does")
    # A zip archive that is not a torch checkpoint gets past the cheap check; Lightning's
    # restore fails before the first epoch, and that is reported the same way.
    fake = tmp_path / "fake.ckpt"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("a", "b")
    rc = main(["train", "--data", str(data_file), "--out", str(tmp_path / "m"), "--resume",
               str(fake), *TINY])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    assert f"--resume {fake}: not a checkpoint this run can resume from" in err
    _four_parts(err, "trainer/README.md#what-a-run-does")
    assert not (tmp_path / "m" / "latest").exists()


# -- a run that trains no epoch, a checkpoint of another model, the recorded data path -------


def test_no_trained_epoch_writes_nothing_and_keeps_latest(
    data_file: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "models"
    monkeypatch.chdir(data_file.parent.parent)  # --data relative to here
    rc = main(["train", "--data", "training/server_metrics.parquet", "--out", str(out), *TINY])
    capsys.readouterr()
    assert rc == 0
    bundle = (out / "latest").resolve()
    info = json.loads((bundle / "training_info.json").read_text())
    # Recorded absolute, so `fleetcast export --bundle <abs>/latest` works from anywhere.
    assert info["data"]["file"] == str(data_file.resolve())
    assert info["best_epoch"] == 1

    # Resuming a checkpoint that already trained --epochs epochs trains none: refused.
    rc = main(["train", "--data", str(data_file), "--out", str(out), "--resume", "last", *TINY])
    err = capsys.readouterr().err
    assert rc == 1
    assert "No training epoch was completed" in err
    assert "had already trained 1 epoch(s)" in err
    _four_parts(err, "trainer/README.md#what-a-run-does")
    assert (out / "latest").resolve() == bundle
    assert sorted(p.name for p in out.glob("tft_model_*")) == [bundle.name]

    # A checkpoint of another model (hidden size 8, asked for 16): refused before any epoch.
    rc = main(["train", "--data", str(data_file), "--out", str(out), "--resume", "last",
               *_with(TINY, ["--epochs", "2", "--hidden-size", "16"])])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    assert "not a checkpoint this run can resume from" in err
    assert "size mismatch" in err
    assert "more lines)" in err  # the parameter list is cut short
    _four_parts(err, "trainer/README.md#what-a-run-does")
    assert (out / "latest").resolve() == bundle


def test_a_run_without_a_finite_validation_loss_is_not_saved(
    data_file: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import fleetcast.trainer.train as train_module

    def untrained(table, config):
        info = {"history": [{"epoch": 1, "val_loss": math.nan}], "best_epoch": None}
        return object(), object(), info

    monkeypatch.setattr(train_module, "train_model", untrained)
    out = tmp_path / "models"
    rc = main(["train", "--data", str(data_file), "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert rc == 1
    assert "No epoch of this run gave a finite validation loss" in err
    _four_parts(err, "trainer/README.md#what-a-run-does")
    assert not out.exists()


# -- the encoder must fit the data ---------------------------------------------------------------


def test_an_encoder_longer_than_the_data_is_refused(
    data_file: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "models"
    rc = main(["train", "--data", str(data_file), "--out", str(out),
               *_with(TINY, ["--encoder-steps", "100000"])])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    # Toy data: 72 h = 864 steps, 24 h held out, 24 h validation -> 288 training steps,
    # minus 12 predicted.
    assert "--encoder-steps 100000: must be at most 276 steps on this data" in err
    _four_parts(err, "trainer/README.md#options")
    # The way out names the validation part, which takes a day of this data.
    assert "or a shorter --val-hours (0: validate on the held-out tail)" in err
    assert not out.exists()


def test_the_encoder_limit_is_the_longest_training_part_minus_the_prediction() -> None:
    frame = prepare_frame(make_toy_table())
    config = TrainConfig(encoder=564, prediction=12, holdout_steps=288)
    cutoff, _ = split_holdout(frame, config)
    check_encoder_fits(frame, config, cutoff)  # exactly the limit: accepted
    with pytest.raises(ValueError, match="must be at most 564 steps"):
        check_encoder_fits(frame, TrainConfig(encoder=565, prediction=12), cutoff)
    # Without a validation part the message names no part that does not exist.
    with pytest.raises(ValueError, match="before the held-out tail") as refused:
        check_encoder_fits(frame, TrainConfig(encoder=565, prediction=12, val_steps=0), cutoff)
    assert "validation" not in str(refused.value).split("Why")[0]


# -- data at another step than 300 s -------------------------------------------------------------


def _steps(table: pa.Table) -> np.ndarray:
    seconds = pc.cast(table["timestamp"], pa.int64()).to_numpy() // 1_000_000
    return seconds // 300


def test_five_minute_data_passes_however_gappy() -> None:
    table = make_toy_table()
    check_data_step(prepare_frame(table))  # a gap, an offline stretch
    rng = np.random.default_rng(0)
    for missing in (0.5, 0.9, 0.97):
        for _ in range(10):
            keep = rng.random(table.num_rows) > missing
            check_data_step(prepare_frame(table.filter(pa.array(keep))))


@pytest.mark.parametrize(
    ("every", "jitter", "step"), [(2, 0.0, "600 s"), (3, 0.0, "900 s"), (2, 0.03, "600 s")]
)
def test_data_at_another_step_is_refused(every: int, jitter: float, step: str) -> None:
    table = make_toy_table()
    rng = np.random.default_rng(1)
    keep = (_steps(table) % every == 0) | (rng.random(table.num_rows) < jitter)
    with pytest.raises(ValueError, match=f"The data's step is {step}") as caught:
        check_data_step(prepare_frame(table.filter(pa.array(keep))))
    _four_parts(str(caught.value), "docs/DATA_CONTRACT.md#step")


def test_one_server_at_another_step_is_refused() -> None:
    table = make_toy_table()
    names = table["server_name"].to_numpy(zero_copy_only=False)
    one = sorted(set(names))[0]
    keep = ~((names == one) & (_steps(table) % 2 == 1))
    with pytest.raises(ValueError, match=f"1 server\\(s\\) are at another step.*{one} \\(600 s"):
        check_data_step(prepare_frame(table.filter(pa.array(keep))))


def test_train_refuses_600_second_data(tmp_path: Path, capsys) -> None:
    table = make_toy_table()
    path = tmp_path / "d600.parquet"
    pq.write_table(table.filter(pa.array(_steps(table) % 2 == 0)), path)
    out = tmp_path / "models"
    rc = main(["train", "--data", str(path), "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert rc == 1
    assert "The data's step is 600 s" in err
    _four_parts(err, "docs/DATA_CONTRACT.md#step")
    assert not out.exists()


def test_gpu_devices_are_checked_against_the_gpus_there(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    TrainConfig(accelerator="gpu", devices=1).validate()
    TrainConfig(accelerator="gpu", devices="1").validate()  # Lightning: a count
    TrainConfig(accelerator="auto", devices="0,").validate()  # GPU index 0
    TrainConfig(accelerator="gpu", devices="-1").validate()  # all of them
    TrainConfig(accelerator="gpu", devices=-1).validate()  # the same from Python
    for devices in (2, "2", "0", "0,1", "x", ","):
        with pytest.raises(ValueError, match="this machine has 1"):
            TrainConfig(accelerator="gpu", devices=devices).validate()
