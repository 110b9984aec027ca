"""``fleetcast validate``: exit codes 0/1/2 and readable reports, through main() and a real process."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fleetcast.contract import cli
from fleetcast.contract.commands import register_validate  # noqa: F401  (entry point target)


@pytest.fixture
def files(tables, tmp_path):
    """A valid file, an invalid one, one with only warnings, and a non-Parquet file."""
    good = tmp_path / "good.parquet"
    pq.write_table(tables.table(), good)
    cols = tables.columns()
    cols["cpu_pct"][0] = 250.0
    cols["state"][1] = "on_fire"
    bad = tmp_path / "bad.parquet"
    pq.write_table(tables.table(cols), bad)
    soft = tmp_path / "soft.parquet"
    pq.write_table(tables.table().append_column("site", pa.array(["x"] * 36)), soft)
    text = tmp_path / "data.parquet.txt"
    text.write_text("not parquet")
    return {
        "good": good,
        "bad": bad,
        "soft": soft,
        "text": text,
        "missing": tmp_path / "no.parquet",
    }


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetcast.contract.cli", "validate", *args],
        capture_output=True,
        text=True,
    )


def test_valid_file_exits_0(files):
    out = run(str(files["good"]))
    assert out.returncode == 0, out.stderr
    assert "36 rows, 3 servers, 2026-01-01T00:00:00Z .. 2026-01-01T00:55:00Z" in out.stdout
    assert out.stdout.rstrip().endswith("VALID: 0 error(s), 0 warning(s).")


def test_invalid_file_exits_1_with_a_readable_report(files):
    out = run(str(files["bad"]))
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    assert "ERROR [value-ranges] 1 row has cpu_pct outside [0, 100] percent" in out.stdout
    assert "    see: docs/DATA_CONTRACT.md#value-ranges" in out.stdout
    assert "ERROR [valid-states]" in out.stdout
    assert out.stdout.rstrip().endswith("INVALID: 2 error(s), 0 warning(s).")


@pytest.mark.parametrize("which", ["missing", "text"])
def test_unreadable_file_exits_2_without_traceback(files, which):
    out = run(str(files[which]))
    assert out.returncode == 2
    assert out.stdout == ""
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("fleetcast validate: ")
    assert "See docs/DATA_CONTRACT.md#files." in out.stderr


def test_no_strict_turns_extra_columns_into_warnings(files, capsys, monkeypatch):
    assert cli.main(["validate", str(files["soft"])]) == 1
    assert "ERROR [extra-columns]" in capsys.readouterr().out
    assert cli.main(["validate", "--no-strict", str(files["soft"])]) == 0
    out = capsys.readouterr().out
    assert "WARNING [extra-columns] Column(s) ['site'] are not in the contract" in out
    assert "VALID: 0 error(s), 1 warning(s)." in out


def test_json_output(files, capsys):
    assert cli.main(["validate", "--json", str(files["bad"])]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is False
    assert [e["rule"] for e in data["errors"]] == ["value-ranges", "valid-states"]
    assert data["errors"][0]["examples"] == [
        "row 0 ('ppml0001' at 2026-01-01T00:00:00Z): cpu_pct=250"
    ]
    assert cli.main(["validate", "--json", str(files["missing"])]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is False
    assert "No such file" in data["unreadable"]


def test_directory_means_its_server_metrics_parquet(files, tmp_path, capsys):
    (tmp_path / "server_metrics.parquet").write_bytes(files["good"].read_bytes())
    assert cli.main(["validate", str(tmp_path)]) == 0
    assert "server_metrics.parquet: 36 rows" in capsys.readouterr().out
