"""``fleetcast generate`` refusals: the real reason, four parts, and no folder left behind."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from fleetcast.contract.simulate.batch import parse_start, write_training_data

from .generate_cli import run_generate

if TYPE_CHECKING:
    from pathlib import Path


def _four_parts(text: str, see: str) -> None:
    assert "Why it matters:" in text
    assert "Fix:" in text
    assert f"See {see}" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("text", ["1900-01-01T00:00:00Z", "1969-12-31T23:55:00+00:00"])
def test_a_start_before_1970_says_so(text: str) -> None:
    with pytest.raises(ValueError, match="before 1970-01-01T00:00:00Z") as info:
        parse_start(text)
    assert "not aligned" not in str(info.value)
    _four_parts(str(info.value), "docs/DATA_CONTRACT.md#timestamp")


@pytest.mark.parametrize("text", ["2026-01-01T00:00:00", "2026-01-01 00:00"])
def test_a_start_without_a_zone_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="has no time zone") as info:
        parse_start(text)
    assert "Z for UTC" in str(info.value)
    _four_parts(str(info.value), "docs/DATA_CONTRACT.md#timestamp")


def test_the_epoch_itself_and_offsets_are_fine() -> None:
    assert parse_start("1970-01-01T00:00:00Z") == 0
    assert parse_start("2026-01-01T01:00:00+01:00") == 1_767_225_600


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start", "1900-01-01T00:00:00Z"], "before 1970"),
        (["--start", "2026-01-01T00:00:00"], "has no time zone"),
        (["--servers", "0"], "Invalid server count 0"),
        (["--seed", "-1"], "Invalid seed -1"),
    ],
)
def test_cli_refusals_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "training"
    assert run_generate(["--hours", "24", "--servers", "3", *argv, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err
    _four_parts(err, "docs/")
    assert not out.exists()


def test_write_training_data_refuses_before_creating_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with pytest.raises(ValueError, match="Invalid server count"):
        write_training_data(out, n_servers=0, hours=24, start=1_767_225_600)
    with pytest.raises(ValueError, match="Invalid seed"):
        write_training_data(out, n_servers=3, hours=24, seed=-1, start=1_767_225_600)
    assert not (tmp_path / "a").exists()


def test_data_generate_did_not_write_is_not_replaced_unasked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An imported fleet in the output folder was replaced by a simulated one (exit 0, a
    warning printed after the fact); the import's description stayed behind."""
    import pyarrow.parquet as pq

    out = tmp_path / "training"
    args = ["--hours", "24", "--servers", "3", "--out-dir", str(out)]
    assert run_generate(args) == 0
    assert run_generate([*args, "--seed", "7"]) == 0  # its own data: replaced as before
    data = out / "server_metrics.parquet"
    mine = pq.read_table(data).slice(0, 100)
    pq.write_table(mine, data)  # as an import or a user would: no simulator metadata for it
    (out / "server_metrics.metadata.json").write_text("{}")
    capsys.readouterr()
    assert run_generate(args) == 2
    err = capsys.readouterr().err
    assert f"{data} is there and was not written by `fleetcast generate`" in err
    assert "--replace to overwrite it" in err
    _four_parts(err, "docs/SERVER_PROFILES.md#generating-data")
    assert pq.read_table(data).num_rows == 100
    assert run_generate([*args, "--replace"]) == 0
    assert pq.read_table(data).num_rows > 100
    assert not (out / "server_metrics.metadata.json").exists()  # it described the old data


@pytest.mark.skipif(
    not os.path.exists("/proc/meminfo"), reason="the check reads /proc/meminfo (Linux)"
)
def test_a_fleet_beyond_the_memory_available_is_refused_before_the_work(
    tmp_path: Path,
) -> None:
    """200,000 servers x 720 h: numpy's allocation traceback after minutes, or the OOM killer."""
    out = tmp_path / "big"
    with pytest.raises(ValueError, match="GiB of memory to simulate") as info:
        write_training_data(out, n_servers=10_000_000, hours=720)
    _four_parts(str(info.value), "docs/SERVER_PROFILES.md#generating-data")
    assert not out.exists()
