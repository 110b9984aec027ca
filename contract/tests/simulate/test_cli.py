"""``fleetcast generate``: the three files, exit codes and messages."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from fleetcast.contract.simulate.cli import register_generate

from .generate_cli import run_generate

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_generate_writes_the_three_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_generate(
        [
            "--servers",
            "9",
            "--hours",
            "24",
            "--seed",
            "5",
            "--out-dir",
            str(tmp_path),
            "--start",
            "2025-01-06T00:00:00Z",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics_metadata.json",
        "server_mapping.json",
        "server_metrics.parquet",
    ]
    assert pq.read_metadata(tmp_path / "server_metrics.parquet").num_rows == 9 * 288
    meta = json.loads((tmp_path / "metrics_metadata.json").read_text())
    assert meta["servers"] == 9
    assert meta["seed"] == 5
    assert meta["offline_mode"] == "dense"
    assert "wrote 2,592 rows" in capsys.readouterr().out


def test_hours_below_24_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_generate(["--hours", "12", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--hours 12 is below the minimum of 24" in err
    assert "Fix:" in err
    assert "docs/SERVER_PROFILES.md" in err
    assert not any(tmp_path.iterdir())


def test_bad_start_and_bad_fleet_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run_generate(
            ["--hours", "24", "--start", "2025-01-06T00:02:00Z", "--out-dir", str(tmp_path)]
        )
        == 2
    )
    assert "not aligned" in capsys.readouterr().err
    assert run_generate(["--hours", "24", "--servers", "0", "--out-dir", str(tmp_path)]) == 2
    assert "Invalid server count 0" in capsys.readouterr().err


def test_unwritable_out_dir_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_generate(["--servers", "3", "--hours", "24", "--out-dir", str(blocker / "sub")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_registered_in_the_fleetcast_program() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="fleetcast.commands") if e.name == "generate"]
    assert ep.load() is register_generate
