"""``fleetcast import csv`` refuses what would lose or corrupt data, with a four-part message:
a wrong epoch unit, times that collapse into a few steps, a bad --delimiter, a bad or
repeated --map, an --out folder, and a time value that is no time (named with its row)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fleetcast.contract.cli import main
from fleetcast.trainer.importers.common import ImportFailure, ImportReport, write_parquet
from fleetcast.trainer.importers.csv_import import import_csv, parse_delimiter, parse_map
from fleetcast.trainer.importers.paths import atomic_write

if TYPE_CHECKING:
    from pathlib import Path

HEADER = "timestamp,server_name,cpu_pct,mem_pct,disk_io_mb_s,latency_ms\n"
T0 = 1_790_000_000 // 300 * 300  # 2026-09-21T14:10:00Z


def _csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "".join(f"{row}\n" for row in rows), encoding="utf-8")
    return path


def _every(seconds: int, count: int, servers: tuple[str, ...] = ("web-1",)) -> list[str]:
    """Rows every ``seconds`` from T0 per server, cpu_pct = the sample's index % 100."""
    return [f"{T0 + k * seconds},{s},{k % 100},50,1,5" for s in servers for k in range(count)]


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI: exit 2 and one four-part message (no traceback); the message."""
    assert main(["import", "csv", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("fleetcast import csv: ")
    for part in ("Why it matters:", "Fix:", " See docs/PROMETHEUS.md#csv"):
        assert line.count(part) == 1, line
    return line


def test_epoch_seconds_read_as_milliseconds_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _csv(tmp_path / "s.csv", _every(300, 12, ("web-1", "db-1")))
    out = tmp_path / "o.parquet"
    message = _refused([str(path), "--epoch-unit", "ms", "--out", str(out)], capsys)
    assert "looks like epoch seconds; drop --epoch-unit ms" in message
    assert "1970-01-21T" in message  # where the latest time would land
    assert not out.exists()
    report = import_csv(path, out)  # the same file without the flag: every step kept
    assert (report.rows, report.superseded, report.start) == (24, 0, "2026-09-21T14:10:00Z")


def test_times_too_large_even_for_milliseconds_are_named(tmp_path: Path) -> None:
    path = _csv(tmp_path / "us.csv", [f"{T0 * 1_000_000},web-1,1,2,3,4"])
    with pytest.raises(ImportFailure, match=r"even for epoch milliseconds.*microseconds"):
        import_csv(path, tmp_path / "o.parquet", epoch_unit="ms")


def test_times_that_collapse_into_a_few_steps_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f"{k + 1},web-1,10,50,1,5" for k in range(2000)]  # a row id mapped as time
    path = _csv(
        tmp_path / "id.csv", rows, "id,server_name,cpu_pct,mem_pct,disk_io_mb_s,latency_ms\n"
    )
    out = tmp_path / "o.parquet"
    message = _refused([str(path), "--map", "timestamp=id", "--out", str(out)], capsys)
    assert "The times in column 'id' collapse: 2,000 samples of 1 of 1 servers" in message
    assert "only 7 5-minute steps" in message
    assert "1,993 of them would be superseded" in message
    assert "--epoch-unit (now s)" in message
    assert not out.exists()


def test_sampling_faster_than_the_step_is_still_imported(tmp_path: Path) -> None:
    minute = _csv(tmp_path / "m.csv", _every(60, 60, ("web-1", "db-1")))  # 1 h, every minute
    report = import_csv(minute, tmp_path / "m.parquet")
    assert (report.read, report.rows, report.superseded) == (120, 24, 96)  # 4 of 5
    rows = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert [r["cpu_pct"] for r in rows if r["server_name"] == "web-1"][:3] == [4.0, 9.0, 14.0]
    second = _csv(tmp_path / "s.csv", _every(1, 3700))  # every second, just over an hour
    report = import_csv(second, tmp_path / "s.parquet")
    assert (report.rows, report.superseded) == (13, 3687)


@pytest.mark.parametrize("delimiter", ["", ";;", "ab", '"', "\n"])
def test_a_delimiter_that_is_not_one_character_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], delimiter: str
) -> None:
    path = _csv(tmp_path / "x.csv", _every(300, 2))
    out = str(tmp_path / "o.parquet")
    message = _refused([str(path), "--delimiter", delimiter, "--out", out], capsys)
    assert f"--delimiter {delimiter!r} is not a field separator" in message
    assert "--delimiter tab" in message


@pytest.mark.parametrize("delimiter", ["\\t", "tab", "TAB", "\t"])
def test_tab_delimiter_spellings(tmp_path: Path, delimiter: str) -> None:
    assert parse_delimiter(delimiter) == "\t"
    rows = [row.replace(",", "\t") for row in _every(300, 3)]
    path = _csv(tmp_path / "t.tsv", rows, HEADER.replace(",", "\t"))
    report = import_csv(path, tmp_path / "t.parquet", delimiter=delimiter)
    assert (report.rows, report.servers) == (3, 1)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("cpu_pct=cpu_ratio*abc", "the factor 'abc' is not a number"),
        ("cpu_pct=cpu_ratio*1e", "the factor '1e' is not a number"),
        ("cpu_pct=cpu_ratio*nan", "the factor 'nan' is not a finite number > 0"),
        ("cpu_pct=cpu_ratio*inf", "the factor 'inf' is not a finite number > 0"),
        ("cpu_pct=cpu_ratio*0", "the factor '0' is not a finite number > 0"),
        ("mem_pct=mem * -1", "the factor '-1' is not a finite number > 0"),
    ],
)
def test_a_bad_unit_factor_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str, expected: str
) -> None:
    with pytest.raises(ImportFailure, match="factor") as info:
        parse_map([item])
    assert expected in str(info.value)
    assert "no column" not in str(info.value)
    path = _csv(tmp_path / "x.csv", _every(300, 2))
    out = tmp_path / "o.parquet"
    assert expected in _refused([str(path), "--map", item, "--out", str(out)], capsys)
    assert not out.exists()


def test_a_column_mapped_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ImportFailure, match=r"--map cpu_pct= is given twice"):
        parse_map(["cpu_pct=a", "server_name=host", "cpu_pct=b*100"])
    message = _refused(["x.csv", "--map", "cpu_pct=a", "--map", "cpu_pct=b"], capsys)
    assert "given twice ('cpu_pct=a' and 'cpu_pct=b')" in message
    assert parse_map(["cpu_pct=a*2.5", "server_name=h*1"]) == {
        "cpu_pct": ("a", 2.5),
        "server_name": ("h*1", 1.0),  # factors only for metrics
    }


def test_an_out_folder_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _csv(tmp_path / "x.csv", _every(300, 2))
    folder = tmp_path / "io"
    folder.mkdir()
    message = _refused([str(path), "--out", str(folder)], capsys)
    assert f"--out {folder} is a folder, not a file" in message
    assert f"--out {folder / 'real.parquet'}" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["io", "x.csv"]  # no io.tmp
    assert list(folder.iterdir()) == []
    under_file = path / "o.parquet"
    assert f"{path} is a file, not a folder" in _refused(
        [str(path), "--out", str(under_file)], capsys
    )


def test_a_failed_write_leaves_no_tmp_file(tmp_path: Path) -> None:
    table = pa.table({"server_name": ["web-1"]})
    folder = tmp_path / "io"
    folder.mkdir()
    report = ImportReport(source={})
    with pytest.raises(OSError):
        write_parquet(table, folder, report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["io"]

    def half_written(tmp: Path) -> None:
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "f.parquet", half_written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["io"]


@pytest.mark.parametrize("assume_utc", [[], ["--assume-utc"]])
def test_a_value_that_is_no_time_is_named_with_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], assume_utc: list[str]
) -> None:
    rows = [
        "2026-11-27T10:00:00Z,a,1,2,3,4",
        "yesterday,a,1,2,3,4",
        "2026-11-27T10:10:00Z,a,1,2,3,4",
    ]
    path = _csv(tmp_path / "y.csv", rows)
    message = _refused([str(path), "--out", str(tmp_path / "o.parquet"), *assume_utc], capsys)
    assert (
        "holds 1 value that is not a time; the first is 'yesterday' in data row 2 (line 3"
        in message
    )
    assert "--assume-utc" not in message
    assert "zone" not in message
    naive = _csv(tmp_path / "n.csv", ["2026-11-27 10:00:00,a,1,2,3,4", "yesterday,a,1,2,3,4"])
    assert "'yesterday' in data row 2" in _refused([str(naive), *assume_utc], capsys)
    numbers = _csv(tmp_path / "e.csv", [f"{T0},a,1,2,3,4", "soon,a,1,2,3,4", "never,a,1,2,3,4"])
    message = _refused([str(numbers), *assume_utc], capsys)
    assert "holds 2 values that are not a time; the first is 'soon' in data row 2" in message


def test_zone_less_times_name_the_first_and_mixed_formats_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ["2026-11-27T10:00:00Z,a,1,2,3,4", "2026-11-27 10:05:00,a,1,2,3,4"]
    path = _csv(tmp_path / "m.csv", rows)
    message = _refused([str(path), "--out", str(tmp_path / "o.parquet")], capsys)
    assert "without a zone offset (1; the first is '2026-11-27 10:05:00' in data row 2" in message
    assert "--assume-utc" in message
    report = import_csv(path, tmp_path / "o.parquet", assume_utc=True)
    assert (report.rows, report.start, report.end) == (
        2,
        "2026-11-27T10:00:00Z",
        "2026-11-27T10:05:00Z",
    )
    mixed = _csv(tmp_path / "x.csv", ["2026-11-27T10:00:00Z,a,1,2,3,4", f"{T0},a,1,2,3,4"])
    message = _refused([str(mixed)], capsys)
    assert f"mixes epoch numbers ('{T0}' in data row 2" in message
    assert "ISO 8601 times ('2026-11-27T10:00:00Z' in data row 1" in message


def test_host_names_are_imported_exactly_as_written(tmp_path: Path) -> None:
    """The CSV reader inferred the name column's type: 007 and 7 both became 7 (one server,
    half its samples "superseded"), and a host named NA or nan became a missing name."""
    rows = _every(300, 12, ("007", "7", "0042", "NA", "nan", " ppweb001 ", "ppweb001"))
    report = import_csv(_csv(tmp_path / "d.csv", rows), tmp_path / "d.parquet")
    names = pq.read_table(tmp_path / "d.parquet").column("server_name").to_pylist()
    assert sorted(set(names)) == ["0042", "007", "7", "NA", "nan", "ppweb001"]
    assert names.count("007") == names.count("7") == 12
    # The spaces are removed, and said: ' ppweb001 ' is the same server as ppweb001.
    assert names.count("ppweb001") == 12
    assert report.superseded == 12
    (warning,) = (w for w in report.warnings if "spaces" in w)
    assert "' ppweb001 ' is imported as 'ppweb001'" in warning


def test_a_header_naming_a_column_twice_is_refused_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = "timestamp,server_name,cpu_pct,mem_pct,disk_io_mb_s,latency_ms,cpu_pct\n"
    path = _csv(tmp_path / "d.csv", [f"{T0},web-1,10,50,1,5,11"], header)
    line = _refused([str(path), "--out", str(tmp_path / "o.parquet")], capsys)
    assert "The CSV's header names 'cpu_pct' more than once" in line
    assert not (tmp_path / "o.parquet").exists()


def test_an_out_that_is_the_csv_itself_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _csv(tmp_path / "s.csv", _every(300, 12))
    before = path.read_bytes()
    line = _refused([str(path), "--out", str(path)], capsys)
    assert f"--out {path} is the CSV file being imported" in line
    assert path.read_bytes() == before
