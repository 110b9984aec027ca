"""``fleetcast train`` end to end on tiny data: validation, bundle, sample, resume."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fleetcast.contract.cli import main
from fleetcast.trainer.data_io import file_sha256, sample_servers
from fleetcast.trainer.toydata import make_toy_table

from .data_files import write_toy_data

if TYPE_CHECKING:
    from pathlib import Path

TINY = [
    "--epochs",
    "1",
    "--max-batches-per-epoch",
    "2",
    "--val-batches",
    "1",
    "--hidden-size",
    "8",
    "--attention-heads",
    "1",
    "--hidden-continuous-size",
    "4",
    "--encoder-steps",
    "48",
    "--prediction-steps",
    "12",
    "--batch-size",
    "16",
    "--holdout-hours",
    "24",
    "--accelerator",
    "cpu",
    "--eval-windows",
    "40",
]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return write_toy_data(tmp_path)


def test_bad_data_is_refused_with_the_validators_message(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(make_toy_table().drop_columns(["profile"]), path)
    rc = main(["train", "--data", str(path), "--out", str(tmp_path / "models"), *TINY])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Missing required column(s) ['profile']" in err
    assert "See docs/DATA_CONTRACT.md" in err
    assert not (tmp_path / "models").exists()


def test_unreadable_file_exits_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "x.parquet"
    path.write_text("not parquet")
    assert main(["train", "--data", str(path), *TINY]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_train_writes_a_bundle_then_resumes(data_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "models"
    rc = main(
        [
            "train",
            "--data",
            str(data_file.parent),
            "--out",
            str(out),
            "--servers-sample",
            "3",
            *TINY,
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    assert "accuracy on" in printed
    assert "quality rules: profile feature on" in printed
    bundle = (out / "latest").resolve()
    assert sorted(p.name for p in bundle.iterdir()) == [
        "config.json",
        "model.safetensors",
        "server_mapping.json",
        "training_info.json",
    ]
    info = json.loads((bundle / "training_info.json").read_text())
    assert info["servers"] == 3
    assert info["data"]["sha256"] == file_sha256(data_file)
    assert (out / "checkpoints" / "last.ckpt").is_file()

    rc = main(
        [
            "train",
            "--data",
            str(data_file),
            "--out",
            str(out),
            "--servers-sample",
            "3",
            "--resume",
            "last",
            "--no-eval",
            *[a if a != "1" else "2" for a in TINY[:2]],
            *TINY[2:],
        ]
    )
    assert rc == 0
    resumed = json.loads(((out / "latest").resolve() / "training_info.json").read_text())
    assert resumed["resumed_from"].endswith("last.ckpt")
    assert [r["epoch"] for r in resumed["history"]] == [2]


def test_resume_from_a_missing_checkpoint_is_refused(
    data_file: Path, tmp_path: Path, capsys
) -> None:
    rc = main(
        ["train", "--data", str(data_file), "--out", str(tmp_path / "m"), "--resume", "last", *TINY]
    )
    assert rc == 1
    assert "no such checkpoint" in capsys.readouterr().err


def test_sample_servers_spreads_over_profiles() -> None:
    servers = {f"ppweb{i:03d}": ("web_api", 10) for i in range(10)}
    servers |= {f"ppdb{i:03d}": ("database", 10) for i in range(3)}
    servers["ppgen001"] = ("generic", 10)
    chosen = sample_servers(servers, 3)
    assert {servers[n][0] for n in chosen} == {"web_api", "database", "generic"}
    assert chosen == sample_servers(dict(reversed(list(servers.items()))), 3)


def test_the_design_flags_reach_the_dataset_config() -> None:
    import argparse

    from fleetcast.trainer.commands import config_from_args, register_train
    from fleetcast.trainer.train import TrainConfig

    parser = argparse.ArgumentParser()
    register_train(parser.add_subparsers())
    # The defaults: fixed scaling, day-ago inputs, an 8-hour encoder, 40 epochs, patience 5
    # (trainer/README.md#day-ago-inputs), the same as TrainConfig's.
    default = config_from_args(parser.parse_args(["train", "--data", "x.parquet"]))
    ds = default.dataset_config()
    assert (ds.input_scaling, ds.day_ago, ds.max_encoder_length) == ("fixed", True, 96)
    assert ds.known_reals[-4:] == tuple(f"{t}_day_ago" for t in ds.targets)
    assert (default.epochs, default.patience) == (40, 5)
    base = TrainConfig()
    assert (base.input_scaling, base.day_ago, base.encoder, base.epochs, base.patience) == (
        "fixed", True, 96, 40, 5
    )  # fmt: skip
    # The previous default design, by its flags.
    args = parser.parse_args(
        ["train", "--data", "x.parquet", "--input-scaling", "window", "--no-day-ago",
         "--encoder-steps", "288"]
    )  # fmt: skip
    ds = config_from_args(args).dataset_config()
    assert (ds.input_scaling, ds.day_ago, ds.max_encoder_length) == ("window", False, 288)
    assert not any(r.endswith("_day_ago") for r in ds.known_reals)


@pytest.mark.parametrize(("sig", "name", "code"), [(15, "SIGTERM", 143), (2, "SIGINT", 130)])
def test_a_training_stopped_by_a_signal_says_so_and_exits_non_zero(
    data_file: Path, tmp_path: Path, sig: int, name: str, code: int
) -> None:
    """SIGTERM (systemd, a job's time limit) ended the training with exit status 0 and no
    bundle: a nightly `fleetcast train && fleetcast export` re-exported the old model.
    Ctrl-C exited 1 without a word."""
    import os
    import subprocess
    import sys

    out = tmp_path / "models"
    args = ["train", "--data", str(data_file), "--out", str(out), *TINY]
    args[args.index("--epochs") + 1] = "50"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A process started in the background of a shell without job control (CI) inherits an
    # ignored SIGINT: Python then installs no KeyboardInterrupt handler. Ctrl-C is a
    # terminal's, so the child gets Python's usual one back.
    run = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from fleetcast.contract.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", run, *args], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "epoch 1/50" in line:
                os.kill(proc.pid, sig)
                break
        err = "".join(lines) + proc.stderr.read()
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert rc == code, err
    assert f"fleetcast train: stopped by {name} after " in err
    assert "no bundle was written" in err
    assert "Traceback" not in err
    assert not (out / "latest").exists()
    # Lightning stops at SIGTERM between batches, after the epoch's checkpoint; Ctrl-C
    # stops at once, perhaps before it: the message says what there is.
    written = (out / "checkpoints" / "last.ckpt").is_file()
    assert written or name == "SIGINT"
    assert ("--resume last" in err) is written
    assert ("No checkpoint was written yet" in err) is not written


def test_resuming_on_other_data_or_another_split_is_refused(
    data_file: Path, tmp_path: Path, capsys
) -> None:
    """--resume on other data kept the old run's best epoch, compared against its
    validation loss, and shipped its weights with the new data's scalers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = tmp_path / "models"
    assert main(["train", "--data", str(data_file), "--out", str(out), "--no-eval", *TINY]) == 0
    first = (out / "latest").resolve()
    capsys.readouterr()
    table = pq.read_table(data_file)
    other = tmp_path / "other.parquet"
    disk = table.column("disk_io_mb_s")
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("disk_io_mb_s"),
            "disk_io_mb_s",
            pc.multiply(disk, pa.scalar(3.0, disk.type)),
        ),
        other,
    )
    resume = ["--out", str(out), "--resume", "last", "--no-eval"]
    more = [a if a != "1" else "2" for a in TINY[:2]] + TINY[2:]
    assert main(["train", "--data", str(other), *resume, *more]) == 1
    err = capsys.readouterr().err
    assert "the checkpoint was trained on other data than this run's (the data: " in err
    assert ", other values)" in err
    assert "drop --resume to train a new run" in err
    assert "trainer/README.md#what-a-run-does" in err
    # Another split of the same data: refused too, naming it.
    holdout = more.index("--holdout-hours") + 1
    split = [*more[:holdout], "12", *more[holdout + 1 :]]
    assert main(["train", "--data", str(data_file), *resume, *split]) == 1
    assert "(the split: training up to step " in capsys.readouterr().err
    assert (out / "latest").resolve() == first  # nothing was written
    # The same data and split resume.
    assert main(["train", "--data", str(data_file), *resume, *more]) == 0


def test_servers_without_a_held_out_window_are_named(tmp_path: Path, capsys, caplog) -> None:
    """A server whose data ends inside the held-out tail was left out of the accuracy table
    (and its goal) without a word: "accuracy on … windows of 3 servers" of a fleet of 4."""
    import datetime as dt

    table = make_toy_table()
    df = table.to_pandas()
    # 30 minutes into the 24-hour tail: less than a prediction (12 steps).
    end = df["timestamp"].max() - dt.timedelta(hours=23, minutes=30)
    df = df[(df["server_name"] != "ppetl001") | (df["timestamp"] <= end)]
    path = tmp_path / "late.parquet"
    pq.write_table(pa.Table.from_pandas(df, schema=table.schema, preserve_index=False), path)
    out = tmp_path / "models"
    with caplog.at_level("WARNING", logger="fleetcast.trainer"):
        assert main(["train", "--data", str(path), "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "windows of 3 servers (1 more have none: training_info.json -> " in printed
    (warned,) = [r.getMessage() for r in caplog.records if "no held-out window" in r.getMessage()]
    assert warned.startswith("1 of 4 servers have no held-out window")
    assert warned.endswith(": ppetl001")
    info = json.loads(((out / "latest").resolve() / "training_info.json").read_text())
    assert info["servers_not_evaluated"] == {"count": 1, "names": ["ppetl001"]}
    assert info["accuracy"]["servers"] == 3


def test_a_new_run_overwrites_the_earlier_runs_checkpoints(
    data_file: Path, tmp_path: Path, caplog
) -> None:
    """A second run into the same folder wrote last-v1.ckpt beside the first run's
    last.ckpt, so --resume last went on with the first run."""
    out = tmp_path / "models"
    args = ["train", "--data", str(data_file), "--out", str(out), "--no-eval", *TINY]
    args += ["--checkpoint-every", "1"]
    assert main(args) == 0
    first = (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    with caplog.at_level("WARNING", logger="fleetcast.trainer"):
        assert main(args) == 0
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["epoch000.ckpt", "last.ckpt"]
    assert (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns > first
    assert "holds checkpoints of an earlier run: this run overwrites them" in caplog.text
