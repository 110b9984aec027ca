"""``fleetcast import csv``: column mapping, unit factors, bucketing, profiles, errors."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from fleetcast.contract.cli import main
from fleetcast.contract.validate import DataValidator
from fleetcast.trainer.importers.common import ImportFailure
from fleetcast.trainer.importers.csv_import import import_csv, parse_map

if TYPE_CHECKING:
    from pathlib import Path

CSV = """time,host,cpu,mem,disk_bytes,lat,role
2026-11-27T10:00:10Z,web-1,0.50,40,2000000,12,
2026-11-27T10:04:10Z,web-1,0.60,41,3000000,13,
2026-11-27T10:05:10Z,web-1,1.70,41,3000000,13,
2026-11-27T10:06:00Z,web-1,0.65,42,1000000,14,
2026-11-27T10:15:10+00:00,web-1,0.70,43,3000000,15,
2026-11-27T11:00:10+01:00,db-1,0.10,80,1000000,5,
2026-11-27T10:00:10Z,x-9,abc,80,1000000,5,ml_compute
2026-11-27T10:05:00Z,x-9,0.2,80,1000000,5,ml_compute
"""
MAP = [
    "timestamp=time",
    "server_name=host",
    "cpu_pct=cpu*100",
    "mem_pct=mem",
    "disk_io_mb_s=disk_bytes*1e-6",
    "latency_ms=lat",
    "profile=role",
]


def _write(tmp_path: Path, text: str, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_parse_map() -> None:
    assert parse_map(["cpu_pct=cpu * 100", "server_name=host"]) == {
        "cpu_pct": ("cpu", 100.0),
        "server_name": ("host", 1.0),
    }
    assert parse_map(["server_name=a*b"]) == {"server_name": ("a*b", 1.0)}  # factors: metrics only
    with pytest.raises(ImportFailure, match="COLUMN one of timestamp"):
        parse_map(["cpu=cpu"])
    with pytest.raises(ImportFailure, match="--map COLUMN=CSV_COLUMN"):
        parse_map(["cpu_pct"])


def test_import_maps_scales_buckets_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "training" / "real.parquet"
    report = import_csv(_write(tmp_path, CSV), out, parse_map(MAP), profile_rules=["^db-=database"])
    rows = pq.read_table(out).to_pylist()
    got = [
        (
            r["server_name"],
            r["timestamp"].strftime("%H:%M"),
            round(r["cpu_pct"], 3),
            r["disk_io_mb_s"],
            r["profile"],
        )
        for r in rows
    ]
    assert got == [
        ("db-1", "10:00", 10.0, 1.0, "database"),  # +01:00 converted to UTC
        ("web-1", "10:00", 60.0, 3.0, "generic"),  # last sample of the step wins
        ("web-1", "10:05", 65.0, 1.0, "generic"),  # 170 % dropped, the valid one kept
        ("web-1", "10:15", 70.0, 3.0, "generic"),  # 10:10 missing: a gap, not filled
        ("x-9", "10:05", 20.0, 1.0, "ml_compute"),  # "abc" dropped; profile from the column
    ]
    assert all(r["state"] is None for r in rows)
    assert report.read == 8
    assert report.superseded == 1
    assert report.gaps == 1
    assert sum(report.dropped.values()) == 2
    assert any("cpu_pct" in reason and "outside [0, 100]" in reason for reason in report.dropped)
    # "abc" is named as what it was, not as the NaN it became on the way
    assert any("cpu_pct" in r and "text such as n/a" in r for r in report.dropped)
    assert not any("nan" in r.replace("n/a", "") for r in report.dropped)
    assert DataValidator(strict=True).validate(out).is_valid
    meta = json.loads((out.parent / "real.metadata.json").read_text())
    assert meta["source"]["map"]["cpu_pct"] == "cpu*100"
    assert meta["missing_steps"] == 1


def test_contract_named_columns_need_no_map(tmp_path: Path) -> None:
    text = "timestamp,server_name,cpu_pct,mem_pct,disk_io_mb_s,latency_ms\n"
    text += "1790000000,ppdb001,10,20,1,5\n1790000300,ppdb001,11,21,1,5\n"
    report = import_csv(_write(tmp_path, text), tmp_path / "o.parquet")
    assert report.rows == 2
    assert report.profile_counts == {"database": 1}


def test_missing_column_naive_times_and_epoch_ms(tmp_path: Path) -> None:
    with pytest.raises(
        ImportFailure, match=r"'cpu_pct' for cpu_pct, .*'lat' for latency_ms; it has \['time'"
    ):
        import_csv(
            _write(tmp_path, "time,host\n"), tmp_path / "o.parquet", parse_map(["latency_ms=lat"])
        )
    naive = "timestamp,server_name,cpu_pct,mem_pct,disk_io_mb_s,latency_ms\n2026-11-27 10:00:00,a,1,2,3,4\n"
    path = _write(tmp_path, naive, "naive.csv")
    with pytest.raises(ImportFailure, match=r"without a zone offset.*--assume-utc"):
        import_csv(path, tmp_path / "o.parquet")
    report = import_csv(path, tmp_path / "o.parquet", assume_utc=True)
    assert report.start == "2026-11-27T10:00:00Z"
    ms = "timestamp,server_name,cpu_pct,mem_pct,disk_io_mb_s\n1790000000000,a,1,2,3\n"
    path = _write(tmp_path, ms, "ms.csv")
    with pytest.raises(ImportFailure, match=r"epoch milliseconds.*--epoch-unit ms"):
        import_csv(path, tmp_path / "o.parquet", latency_fill=0.0)
    report = import_csv(path, tmp_path / "o.parquet", epoch_unit="ms", latency_fill=0.0)
    assert report.start == "2026-09-21T14:10:00Z"


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, CSV)
    out = tmp_path / "cli.parquet"
    args = ["import", "csv", str(path), "--out", str(out)]
    for item in MAP:
        args += ["--map", item]
    assert main(args) == 0
    assert "contract validation: valid" in capsys.readouterr().out
    assert main(["import", "csv", str(tmp_path / "nope.csv")]) == 2
    assert "No CSV file" in capsys.readouterr().err
    bad = _write(tmp_path, "time,host\n2026-11-27T10:00:00Z,a\n", "bad.csv")
    assert main(["import", "csv", str(bad), "--map", "timestamp=time", "--out", str(out)]) == 2
    assert "server_name" in capsys.readouterr().err


def test_cli_prints_the_validation_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A warning is on screen, not only in the metadata file (here: profiles outside the contract)."""
    text = "timestamp,server_name,cpu_pct,mem_pct,disk_io_mb_s,latency_ms,profile\n"
    text += "1790000000,alpha,10,20,1,5,gpu_box\n1790000300,alpha,11,21,1,5,gpu_box\n"
    args = ["import", "csv", str(_write(tmp_path, text)), "--out", str(tmp_path / "o.parquet")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "contract validation: valid, 1 warnings" in captured.out
    assert (
        "WARNING 2 rows had a profile value that is not a contract profile (e.g. 'gpu_box')"
        in captured.err
    )
