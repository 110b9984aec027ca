"""``fleetcast import prometheus``: chunks, values, gaps, profiles, resume, errors."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from fleetcast.contract.cli import main
from fleetcast.contract.schema import arrow_schema
from fleetcast.contract.validate import DataValidator
from fleetcast.trainer.importers.common import ImportFailure
from fleetcast.trainer.importers.prometheus import PrometheusImport, import_prometheus

if TYPE_CHECKING:
    from pathlib import Path
    from types import SimpleNamespace


def _spec(url: str, imp: SimpleNamespace, **kw: Any) -> PrometheusImport:
    values: dict[str, Any] = {
        "url": url,
        "start": imp.T0,
        "end": imp.T0 + 36 * imp.STEP,  # 36 complete steps = 3 h
        "queries": imp.QUERIES,
        "chunk_hours": 1.0,
        "profile_label": "role",
    }
    values.update(kw)
    return PrometheusImport(**values)


def test_import_in_chunks_matches_the_source(
    tmp_path: Path, prom_api: Any, imp: SimpleNamespace
) -> None:
    out = tmp_path / "training" / "real.parquet"
    report = import_prometheus(_spec(prom_api.url, imp), out)
    # 3 chunks of 12 steps x (4 metrics + the coverage check), each evaluated at the
    # steps' last seconds.
    assert len(prom_api.requests) == 15
    starts = sorted({float(r["start"]) for r in prom_api.requests})
    assert starts == [imp.T0 + k * imp.STEP + 299 for k in (0, 12, 24)]
    assert {r["step"] for r in prom_api.requests} == {"300"}
    table = pq.read_table(out)
    assert table.schema.equals(arrow_schema(), check_metadata=False)
    assert table.num_rows == 72
    assert report.rows == 72
    assert report.servers == 2
    names = table.column("server_name").to_pylist()
    assert names[:36] == ["db-1"] * 36  # row order: server, then time
    ts = table.column("timestamp").cast("int64").to_numpy() // 1_000_000
    assert ts[0] == imp.T0
    assert ts[35] == imp.T0 + 35 * imp.STEP
    cpu = table.column("cpu_pct").to_numpy()
    expected = [imp.value("db-1", "cpu_pct", t + 299) for t in ts[:36]]
    np.testing.assert_allclose(cpu[:36], expected, rtol=1e-6)
    assert table.column("state").null_count == 72  # unknown
    assert set(zip(names, table.column("profile").to_pylist(), strict=True)) == {
        ("db-1", "database"),
        ("web-1", "web_api"),
    }
    assert DataValidator(strict=True).validate(out).is_valid
    meta = json.loads((tmp_path / "training" / "real.metadata.json").read_text())
    assert meta["source"]["kind"] == "prometheus"
    assert meta["rows"] == 72
    assert meta["valid"]
    assert meta["source"]["eval_offset_s"] == 299
    assert not (tmp_path / "training" / "real.parquet.parts").exists()


def test_gaps_stay_gaps_and_latency_is_filled(
    tmp_path: Path, prom_api: Any, imp: SimpleNamespace
) -> None:
    prom_api.missing = {("db-1", "mem_pct"), ("web-1", "latency_ms")}
    out = tmp_path / "real.parquet"
    report = import_prometheus(_spec(prom_api.url, imp, latency_fill=0.0), out)
    table = pq.read_table(out)
    assert set(table.column("server_name").to_pylist()) == {"web-1"}  # db-1 has no memory
    assert report.dropped["a required metric (cpu, mem or disk) had no value (gap)"] == 36
    assert set(table.column("latency_ms").to_pylist()) == {0.0}


def test_interrupted_import_resumes(tmp_path: Path, prom_api: Any, imp: SimpleNamespace) -> None:
    out = tmp_path / "real.parquet"
    prom_api.fail_after = 7  # chunk 1 done (5 requests), chunk 2 fails half-way
    with pytest.raises(ImportFailure, match="1 of 3 chunks done") as info:
        import_prometheus(_spec(prom_api.url, imp), out)
    assert info.value.exit_code == 1
    parts = sorted(p.name for p in (tmp_path / "real.parquet.parts").glob("*.parquet"))
    assert len(parts) == 1
    prom_api.fail_after = None
    prom_api.requests.clear()
    import_prometheus(_spec(prom_api.url, imp), out)
    assert len(prom_api.requests) == 10  # only the two missing chunks
    resumed = pq.read_table(out)
    clean = tmp_path / "clean.parquet"
    import_prometheus(_spec(prom_api.url, imp), clean)
    assert resumed.equals(pq.read_table(clean))


def test_resume_with_other_settings_is_refused(
    tmp_path: Path, prom_api: Any, imp: SimpleNamespace
) -> None:
    out = tmp_path / "real.parquet"
    prom_api.fail_after = 5  # chunk 1 done, then 503
    with pytest.raises(ImportFailure):
        import_prometheus(_spec(prom_api.url, imp), out)
    prom_api.fail_after = None
    with pytest.raises(ImportFailure, match=r"other settings \(server_label\).*--restart"):
        import_prometheus(_spec(prom_api.url, imp, server_label="host"), out)
    report = import_prometheus(_spec(prom_api.url, imp), out, restart=True)
    assert report.rows == 72


def test_bad_arguments(tmp_path: Path, imp: SimpleNamespace) -> None:
    out = tmp_path / "x.parquet"
    with pytest.raises(ImportFailure, match="--step 300"):
        import_prometheus(_spec("http://127.0.0.1:9", imp, step=60), out)
    with pytest.raises(ImportFailure, match="no complete 5-minute step"):
        import_prometheus(_spec("http://127.0.0.1:9", imp, end=imp.T0 + 100), out)
    with pytest.raises(ImportFailure, match="11,000"):
        import_prometheus(_spec("http://127.0.0.1:9", imp, chunk_hours=1000), out)
    with pytest.raises(ImportFailure, match="http://host:9090"):
        import_prometheus(_spec("localhost:9090", imp), out)


def test_cli(
    tmp_path: Path, prom_api: Any, imp: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.parquet"
    args = ["import", "prometheus", "--url", prom_api.url, "--out", str(out)]
    args += ["--start", "2026-09-21T14:10:00Z", "--end", str(imp.T0 + 24 * imp.STEP)]
    for metric, expr in imp.QUERIES.items():
        args += ["--query", f"{metric}={expr}"]
    args += ["--profile-rule", "^db-=database"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    assert "contract validation: valid" in printed
    table = pq.read_table(out)
    assert dict(
        zip(
            table.column("server_name").to_pylist(),
            table.column("profile").to_pylist(),
            strict=True,
        )
    ) == {
        "db-1": "database",
        "web-1": "generic",
    }
    assert (
        main(["import", "prometheus", "--url", "http://127.0.0.1:9", "--start", "x", "--end", "1"])
        == 2
    )
    assert "Expected a time like" in capsys.readouterr().err


def test_partial_steps_are_gaps_and_reported(
    tmp_path: Path, prom_api: Any, imp: SimpleNamespace
) -> None:
    k0 = imp.T0 // imp.STEP
    prom_api.partial = {("db-1", k0 + 5), ("web-1", k0 + 20), ("web-1", k0 + 21)}
    out = tmp_path / "real.parquet"
    report = import_prometheus(_spec(prom_api.url, imp), out)
    table = pq.read_table(out)
    ts = table.column("timestamp").cast("int64").to_numpy() // 1_000_000 // imp.STEP
    rows = set(zip(table.column("server_name").to_pylist(), ts.tolist(), strict=True))
    assert len(rows) == 72 - 3
    assert not rows & prom_api.partial
    (reason,) = [r for r in report.dropped if "did not cover the whole step" in r]
    assert report.dropped[reason] == 3
    assert "docs/PROMETHEUS.md#partial-steps" in reason
    meta = json.loads((tmp_path / "real.metadata.json").read_text())
    assert meta["source"]["coverage"].startswith("(up unless up offset 299s)")


def test_the_coverage_check_can_be_turned_off(
    tmp_path: Path, prom_api: Any, imp: SimpleNamespace
) -> None:
    prom_api.partial = {("db-1", imp.T0 // imp.STEP + 5)}
    report = import_prometheus(_spec(prom_api.url, imp, coverage=""), tmp_path / "r.parquet")
    assert report.rows == 72
    assert all(r["query"].startswith("fc_") for r in prom_api.requests)
