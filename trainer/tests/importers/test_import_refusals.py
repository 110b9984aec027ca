"""``fleetcast import``: settings refused up front, the import's own error wording, the
dropped-row reasons before "no rows", zone-less times, and server_mapping.json."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from fleetcast.appliance.sources import promql
from fleetcast.contract.cli import main
from fleetcast.contract.encoder import ServerEncoder, server_id
from fleetcast.trainer.importers.common import ImportFailure, parse_time
from fleetcast.trainer.importers.prometheus import PrometheusImport, import_prometheus

if TYPE_CHECKING:
    from pathlib import Path
    from types import SimpleNamespace

START = "2026-09-21T14:10:00Z"  # imp.T0
END = "2026-09-21T16:10:00Z"  # 24 steps later
CSV_HEADER = "timestamp,server_name,cpu_pct,mem_pct,disk_io_mb_s,latency_ms\n"


def _args(url: str, out: Path, imp: SimpleNamespace, *extra: str) -> list[str]:
    args = ["import", "prometheus", "--url", url, "--out", str(out), "--start", START]
    args += ["--end", END, *extra]
    for metric, expr in imp.QUERIES.items():
        args += ["--query", f"{metric}={expr}"]
    return args


def _csv(path: Path, *rows: str) -> Path:
    """``path`` written as a CSV export with every contract column: the header, then ``rows``."""
    path.write_text(CSV_HEADER + "".join(f"{row}\n" for row in rows))
    return path


def _message(err: str, command: str = "import prometheus") -> str:
    """The last stderr line: one four-part message, no traceback."""
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"fleetcast {command}: ")
    assert line.count("Why it matters:") == 1, line
    assert line.count("Fix:") == 1, line
    assert line.count(" See docs/") == 1, line
    return line


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--timeout", "-1"], "--timeout -1 is not a positive number of seconds"),
        (["--timeout", "0"], "--timeout 0 is not a positive number of seconds"),
        (["--timeout", "nan"], "--timeout nan is not a positive number of seconds"),
        (["--chunk-hours", "0"], "--chunk-hours 0 is not a chunk length"),
        (["--chunk-hours", "-1"], "--chunk-hours -1 is not a chunk length"),
        (["--chunk-hours", "0.05"], "--chunk-hours 0.05 is not a chunk length"),
        (["--chunk-hours", "inf"], "--chunk-hours inf is not a chunk length"),
        (["--latency-fill=-5"], "--latency-fill -5 is not a latency"),
        (["--latency-fill", "nan"], "--latency-fill nan is not a latency"),
        (["--latency-fill", "inf"], "--latency-fill inf is not a latency"),
    ],
)
def test_bad_settings_are_refused_before_any_query(
    tmp_path: Path,
    prom_api: Any,
    imp: SimpleNamespace,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    expected: str,
) -> None:
    out = tmp_path / "training" / "real.parquet"
    assert main(_args(prom_api.url, out, imp, *extra)) == 2
    message = _message(capsys.readouterr().err)
    assert expected in message
    assert "See docs/PROMETHEUS.md#import" in message
    assert prom_api.requests == []
    assert not any(tmp_path.iterdir())


def test_the_smallest_chunk_is_one_step(
    tmp_path: Path, prom_api: Any, imp: SimpleNamespace
) -> None:
    spec = PrometheusImport(
        url=prom_api.url,
        start=imp.T0,
        end=imp.T0 + 3 * imp.STEP,
        queries=imp.QUERIES,
        chunk_hours=300 / 3600,
    )
    report = import_prometheus(spec, tmp_path / "real.parquet")
    assert len(prom_api.requests) == 3 * 5  # 3 one-step chunks x (4 metrics + coverage)
    assert report.rows == 6


@pytest.mark.parametrize("flag", ["--start", "--end"])
def test_times_without_a_zone_are_refused(
    tmp_path: Path, imp: SimpleNamespace, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    args = _args("http://127.0.0.1:9", tmp_path / "r.parquet", imp)
    args[args.index(flag) + 1] = "2026-09-21T14:10:00"
    assert main(args) == 2
    message = _message(capsys.readouterr().err)
    assert f"{flag} '2026-09-21T14:10:00' has no time zone" in message
    assert "2026-09-21T14:10:00Z" in message
    assert "See docs/PROMETHEUS.md#import" in message
    assert not any(tmp_path.iterdir())


def test_parse_time() -> None:
    assert parse_time("2026-09-21T14:10:00Z") == 1_790_000_000 // 300 * 300
    assert parse_time("2026-09-21T16:10:00+02:00") == parse_time("2026-09-21T14:10:00Z")
    assert parse_time("1790000000") == 1_790_000_000
    for bad in ("inf", "nan", "yesterday", "2026-09-21 14:10"):
        with pytest.raises(ImportFailure):
            parse_time(bad)


def test_unreachable_prometheus_is_worded_for_the_import(
    tmp_path: Path, imp: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "training" / "real.parquet"
    assert main(_args("http://127.0.0.1:9", out, imp)) == 1
    message = _message(capsys.readouterr().err)
    assert "Cannot reach Prometheus at http://127.0.0.1:9" in message
    assert "correct --url" in message
    assert "0 of 1 chunks done; nothing was written" in message
    for appliance_words in ("--prometheus-url", "forecasts stay served", "backoff", "appliance"):
        assert appliance_words not in message
    assert not any(tmp_path.iterdir())  # not even the parts folder


def test_a_url_that_is_no_url_names_the_url_flag(
    tmp_path: Path, imp: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args("notaurl", tmp_path / "r.parquet", imp)) == 2
    message = _message(capsys.readouterr().err)
    assert "--url 'notaurl' is not a Prometheus URL like http://host:9090" in message
    assert "--prometheus-url" not in message
    assert "appliance" not in message
    assert not any(tmp_path.iterdir())


def test_http_error_mid_import_says_how_to_resume(
    tmp_path: Path, prom_api: Any, imp: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    prom_api.fail_after = 5  # the first chunk (4 metrics + coverage) done, then 503
    out = tmp_path / "real.parquet"
    assert main(_args(prom_api.url, out, imp, "--chunk-hours", "1")) == 1
    message = _message(capsys.readouterr().err)
    assert f"Prometheus at {prom_api.url} answered HTTP 503 to the cpu_pct query_range" in message
    assert "1 of 2 chunks done" in message
    assert "--url" in message
    assert "run the same command again to resume" in message
    assert "backoff" not in message
    assert len(list((tmp_path / "real.parquet.parts").glob("steps-*.parquet"))) == 1


class _Failing:
    """A client whose every query_range raises ``PromError(kind)``."""

    def __init__(self, kind: str, detail: str) -> None:
        self.error = promql.PromError(kind, "the appliance's words", detail=detail)

    def query_range(self, *args: Any) -> list[promql.Series]:
        raise self.error


@pytest.mark.parametrize(
    ("kind", "detail", "expected", "see"),
    [
        ("timeout", "no answer within 5 s", "within --timeout 30 s", "PROMETHEUS.md#import"),
        (
            "bad_query",
            "bad_data: parse error",
            "refused the cpu_pct expression 'fc_cpu_pct' (bad_data: parse error)",
            "PROMETHEUS.md#queries",
        ),
        ("bad_response", "expected '{'", "is not Prometheus API JSON", "PROMETHEUS.md#import"),
    ],
)
def test_every_source_failure_is_worded_for_the_import(
    tmp_path: Path, imp: SimpleNamespace, kind: str, detail: str, expected: str, see: str
) -> None:
    spec = PrometheusImport(
        url="http://prom:9090", start=imp.T0, end=imp.T0 + 12 * imp.STEP, queries=imp.QUERIES
    )
    with pytest.raises(ImportFailure) as info:
        import_prometheus(spec, tmp_path / "r.parquet", client=_Failing(kind, detail))
    message = str(info.value)
    assert info.value.exit_code == 1
    assert expected in message
    assert message.endswith(f"See docs/{see}.")
    assert "the appliance's words" not in message


class _OutOfRange:
    """A client answering every metric with 500 (cpu and mem far beyond 100 %), and the
    coverage check with no series (every step covered)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url

    def query_range(self, expr: str, start: float, end: float, step: int) -> list[promql.Series]:
        if expr == promql.DEFAULT_COVERAGE:
            return []
        times = np.arange(start, end + 1, step, dtype=np.float64)
        return [promql.Series({"instance": "web-1:9100"}, times, np.full(times.shape, 500.0))]


def test_dropped_row_reasons_are_printed_before_no_rows(
    tmp_path: Path,
    imp: SimpleNamespace,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(promql, "PromClient", _OutOfRange)
    out = tmp_path / "real.parquet"
    assert main(_args("http://prom:9090", out, imp)) == 2
    err = capsys.readouterr().err
    message = _message(err)
    assert "The import produced no rows: all 24 samples read were dropped" in message
    assert "listed above" in message
    above = err.strip().splitlines()[:-1]
    assert any("dropped 24 rows: cpu_pct" in line for line in above), err
    assert not out.exists()
    assert not (tmp_path / "server_mapping.json").exists()


def test_csv_drop_reasons_come_first_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _csv(tmp_path / "bad.csv", "2026-11-27T10:00:00Z,a,500,2,3,4")
    assert main(["import", "csv", str(path), "--out", str(tmp_path / "o" / "r.parquet")]) == 2
    err = capsys.readouterr().err
    assert "The import produced no rows" in _message(err, "import csv")
    assert "dropped 1 rows: cpu_pct" in err.strip().splitlines()[0]
    assert not (tmp_path / "o").exists()


def test_csv_latency_fill_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.csv"
    path.write_text("timestamp,server_name,cpu_pct,mem_pct,disk_io_mb_s\n")
    out = tmp_path / "r.parquet"
    assert main(["import", "csv", str(path), "--out", str(out), "--latency-fill", "nan"]) == 2
    message = _message(capsys.readouterr().err, "import csv")
    assert "--latency-fill nan is not a latency" in message
    assert message.endswith("See docs/PROMETHEUS.md#csv.")


def test_server_mapping_is_written_beside_the_parquet(
    tmp_path: Path, prom_api: Any, imp: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "training" / "real.parquet"
    assert main(_args(prom_api.url, out, imp)) == 0
    assert "server mapping:" in capsys.readouterr().out
    path = tmp_path / "training" / "server_mapping.json"
    saved = json.loads(path.read_text())
    assert saved["servers"] == {"db-1": server_id("db-1"), "web-1": server_id("web-1")}
    assert saved["algorithm"] == "sha256-hex12"
    assert set(ServerEncoder.load(path).names) == set(
        pq.read_table(out).column("server_name").to_pylist()
    )
    meta = json.loads((tmp_path / "training" / "real.metadata.json").read_text())
    assert meta["server_mapping"] == str(path)


def test_server_mapping_keeps_the_folders_other_data_set(
    tmp_path: Path, prom_api: Any, imp: SimpleNamespace
) -> None:
    """``fleetcast generate``'s mapping in the same folder stays valid for its servers."""
    folder = tmp_path / "training"
    folder.mkdir()
    ServerEncoder(["ppdb001", "ppweb001"]).save(folder)
    spec = PrometheusImport(
        url=prom_api.url, start=imp.T0, end=imp.T0 + 12 * imp.STEP, queries=imp.QUERIES
    )
    report = import_prometheus(spec, folder / "real.parquet")
    merged = ServerEncoder.load(folder)
    assert merged.names == ["db-1", "ppdb001", "ppweb001", "web-1"]
    assert report.mapping_file == str(folder / "server_mapping.json")
    assert not report.warnings


def test_csv_import_writes_the_mapping_too(tmp_path: Path) -> None:
    from fleetcast.trainer.importers.csv_import import import_csv

    path = _csv(
        tmp_path / "x.csv", "2026-11-27T10:00:00Z,a,1,2,3,4", "2026-11-27T10:05:00Z,b,1,2,3,4"
    )
    import_csv(path, tmp_path / "out" / "r.parquet")
    assert ServerEncoder.load(tmp_path / "out").names == ["a", "b"]


def test_an_unreadable_mapping_in_the_folder_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _csv(tmp_path / "x.csv", "2026-11-27T10:00:00Z,a,1,2,3,4")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "server_mapping.json").write_text("{not json")
    out = tmp_path / "out" / "r.parquet"
    assert main(["import", "csv", str(path), "--out", str(out)]) == 2
    message = _message(capsys.readouterr().err, "import csv")
    assert "cannot be read as a server mapping" in message
    assert message.endswith("See docs/DATA_CONTRACT.md#server-ids.")
    assert (tmp_path / "out" / "server_mapping.json").read_text() == "{not json"
    assert not out.exists()


class _RefusesCoverage:
    """A client answering the metrics with no series and refusing the coverage check."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url

    def query_range(self, expr: str, *args: Any) -> list[promql.Series]:
        if expr.startswith("fc_"):
            return []
        raise promql.PromError("bad_query", "the appliance's words", detail="parse error")


def test_a_refused_coverage_check_names_its_flag(
    tmp_path: Path,
    imp: SimpleNamespace,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(promql, "PromClient", _RefusesCoverage)
    out = tmp_path / "real.parquet"
    assert main(_args("http://prom:9090", out, imp, "--coverage", "up[(")) == 1
    message = _message(capsys.readouterr().err)
    assert "Prometheus refused the coverage check 'up[(' (parse error)" in message
    assert "--coverage ''" in message
    assert "docs/PROMETHEUS.md#partial-steps" in message
    assert not out.exists()
