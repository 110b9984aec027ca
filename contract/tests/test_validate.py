"""DataValidator: every rule of docs/DATA_CONTRACT.md#validation-rules, failing and passing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fleetcast.contract import DataValidator, Issue, ValidationReport
from fleetcast.contract import _table_findings as findings_module
from fleetcast.contract.schema import CONTRACT_VERSION


def only(report: ValidationReport, rule: str) -> Issue:
    """The single issue of ``rule`` in ``report``, with the codex parts checked."""
    found = [i for i in report.issues if i.rule == rule]
    assert len(found) == 1, f"expected one {rule} issue, got {report.rules()}"
    issue = found[0]
    assert issue.message.endswith(f"See docs/DATA_CONTRACT.md#{rule}.")
    assert "Why it matters:" in issue.message
    assert "Fix:" in issue.message
    return issue


def test_valid_table_passes(tables):
    is_valid, errors, warnings = DataValidator(strict=True).validate_schema(tables.table())
    assert (is_valid, errors, warnings) == (True, [], [])
    report = DataValidator().validate(tables.table())
    assert (report.rows, report.servers) == (36, 3)
    assert (report.start, report.end) == ("2026-01-01T00:00:00Z", "2026-01-01T00:55:00Z")


def test_empty_table(tables):
    empty = tables.table().slice(0, 0)
    is_valid, errors, _ = DataValidator().validate_schema(empty)
    assert not is_valid
    assert only(DataValidator().validate(empty), "empty-table").what == "The table has no rows."
    assert len(errors) == 1


def test_missing_column_is_named(tables):
    table = tables.table().drop_columns(["latency_ms"])
    issue = only(DataValidator().validate(table), "required-columns")
    assert "Missing required column(s) ['latency_ms']" in issue.what
    assert issue.severity == "error"


def test_duplicate_column_name(tables):
    table = tables.table()
    table = table.append_column("cpu_pct", table.column("cpu_pct"))
    issue = only(DataValidator().validate(table), "required-columns")
    assert "['cpu_pct'] appear more than once" in issue.what


def test_wrong_metric_type_skips_its_value_checks(tables):
    cols = tables.columns()
    cols["cpu_pct"] = [str(v) for v in cols["cpu_pct"]]
    report = DataValidator().validate(tables.table(cols, cpu_pct=pa.string()))
    issue = only(report, "column-types")
    assert "Column cpu_pct has type string; expected float32 or float64." in issue.what
    assert "value checks of cpu_pct were skipped" in issue.what
    assert report.rules() == ["column-types"]


def test_timestamp_as_text_skips_time_checks(tables):
    cols = tables.columns()
    cols["timestamp"] = [str(v) for v in cols["timestamp"]]
    cols["timestamp"][1] = cols["timestamp"][0]  # a duplicate nobody can see without times
    report = DataValidator().validate(tables.table(cols, timestamp=pa.string()))
    issue = only(report, "column-types")
    assert "expected timestamp[us, tz=UTC]" in issue.what
    assert "duplicate and missing-step checks were skipped" in issue.what


@pytest.mark.parametrize(("strict", "severity"), [(True, "error"), (False, "warning")])
def test_integer_metric_strict_or_not(tables, strict, severity):
    cols = tables.columns()
    cols["latency_ms"] = [int(v) for v in cols["latency_ms"]]
    cols["cpu_pct"] = [int(v) for v in cols["cpu_pct"]]
    cols["cpu_pct"][4] = 150
    report = DataValidator(strict=strict).validate(
        tables.table(cols, latency_ms=pa.int64(), cpu_pct=pa.int32())
    )
    types = [i for i in report.issues if i.rule == "column-types"]
    assert {i.severity for i in types} == {severity}
    assert len(types) == 2
    # the values are still checked
    assert only(report, "value-ranges").count == 1
    assert not report.is_valid


@pytest.mark.parametrize(("strict", "valid"), [(True, False), (False, True)])
def test_extra_columns(tables, strict, valid):
    table = tables.table().append_column("__index_level_0__", pa.array(range(36)))
    report = DataValidator(strict=strict).validate(table)
    issue = only(report, "extra-columns")
    assert "['__index_level_0__'] are not in the contract" in issue.what
    assert "index=False" in issue.fix
    assert issue.severity == ("error" if strict else "warning")
    assert report.is_valid is valid


def test_naive_timestamp_is_an_error_even_non_strict(tables):
    table = tables.table(timestamp=pa.timestamp("us"))
    for strict in (True, False):
        issue = only(DataValidator(strict=strict).validate(table), "utc-timestamps")
        assert issue.severity == "error"
        assert "timestamp has no time zone" in issue.what


@pytest.mark.parametrize(("strict", "severity"), [(True, "error"), (False, "warning")])
def test_non_utc_time_zone(tables, strict, severity):
    table = tables.table(timestamp=pa.timestamp("ns", tz="Europe/Paris"))
    report = DataValidator(strict=strict).validate(table)
    issue = only(report, "utc-timestamps")
    assert "'Europe/Paris'; expected UTC" in issue.what
    assert issue.severity == severity
    assert report.rules() == ["utc-timestamps"]  # instants are still aligned, no other issue


@pytest.mark.parametrize(
    ("column", "fix"),
    [
        ("cpu_pct", "measured cpu_pct"),
        ("profile", "profile_from_name"),
        ("server_name", "host name"),
        ("timestamp", "cannot be placed"),
    ],
)
@pytest.mark.parametrize("batch_rows", [5, 1000])
def test_nulls_in_non_nullable_columns(tables, column, fix, batch_rows):
    cols = tables.columns()
    cols[column][3] = None
    cols[column][7] = None
    report = DataValidator(batch_rows=batch_rows).validate(tables.table(cols))
    issue = only(report, "null-values")
    # a row without a name or a time leaves its step missing for its server
    unplaced = ["missing-steps"] if column in ("server_name", "timestamp") else []
    assert report.rules() == ["null-values", *unplaced]
    assert issue.what == f"2 rows have a null {column} (of 36 rows); only state may be null."
    assert fix in issue.fix
    assert issue.count == 2
    assert issue.examples[0].startswith("row 3")


def test_null_state_means_unknown_and_is_valid(tables):
    cols = tables.columns()
    cols["state"] = [None] * len(cols["state"])
    assert DataValidator().validate_schema(tables.table(cols))[0]
    all_null = tables.table(cols, state=pa.null())
    assert DataValidator().validate_schema(all_null) == (True, [], [])


def test_blank_server_name(tables):
    cols = tables.columns()
    cols["server_name"][5] = "  "
    issue = only(DataValidator().validate(tables.table(cols)), "server-names")
    assert issue.what == "1 row has an empty or blank server_name."


def test_non_finite_values(tables):
    cols = tables.columns()
    cols["mem_pct"][0] = float("nan")
    cols["latency_ms"][1] = float("inf")
    report = DataValidator().validate(tables.table(cols))
    found = [i for i in report.issues if i.rule == "non-finite-values"]
    assert [i.what for i in found] == [
        "1 row has a non-finite mem_pct (NaN, ±inf, or beyond float32's ±3.4e38).",
        "1 row has a non-finite latency_ms (NaN, ±inf, or beyond float32's ±3.4e38).",
    ]
    assert "value-ranges" not in report.rules()  # inf is not also reported as out of range
    assert found[0].examples == ("row 0 ('ppml0001' at 2026-01-01T00:00:00Z): mem_pct=nan",)


def test_value_ranges_per_metric(tables):
    cols = tables.columns()
    cols["cpu_pct"][0] = 150.0
    cols["cpu_pct"][1] = 101.0
    cols["mem_pct"][2] = -1.0
    cols["disk_io_mb_s"][3] = -0.5
    cols["latency_ms"][4] = -3.0
    report = DataValidator().validate(tables.table(cols))
    found = {i.what.split(" outside")[0]: i for i in report.issues if i.rule == "value-ranges"}
    assert set(found) == {
        "2 rows have cpu_pct",
        "1 row has mem_pct",
        "1 row has disk_io_mb_s",
        "1 row has latency_ms",
    }
    cpu = found["2 rows have cpu_pct"]
    assert "outside [0, 100] percent: got values from 101 to 150." in cpu.what
    assert "0-1 fraction" in cpu.fix
    assert "outside [0, inf] ms" in found["1 row has latency_ms"].what


def test_invalid_states_are_counted_and_suggested(tables):
    cols = tables.columns()
    cols["state"][1] = "Healthy"
    cols["state"][2] = "Healthy"
    cols["state"][3] = "exploded"
    issue = only(DataValidator().validate(tables.table(cols)), "valid-states")
    assert "3 rows have a state outside the contract: 'Healthy' (2 rows), 'exploded' (1 row)" in (
        issue.what
    )
    assert "or null" in issue.what
    assert "'Healthy' -> 'healthy'" in issue.fix
    assert issue.count == 3


def test_invalid_profile(tables):
    cols = tables.columns()
    cols["profile"] = ["gpu_box"] * len(cols["profile"])
    issue = only(DataValidator().validate(tables.table(cols)), "valid-profiles")
    assert "36 rows have a profile outside the contract: 'gpu_box' (36 rows)" in issue.what
    assert "'generic'" in issue.fix


def test_unaligned_timestamps(tables):
    cols = tables.columns()
    cols["timestamp"][4] += 61_000_000
    issue = only(DataValidator().validate(tables.table(cols)), "step-alignment")
    assert issue.what.startswith("1 timestamp is not on a 300-second step boundary")
    assert issue.examples == ("row 4 ('ppdb001' at 2026-01-01T00:06:01Z)",)


@pytest.mark.parametrize("zone", ["UTC", "Etc/GMT+0", "GMT0", "etc/universal", "-00:00", "Zulu"])
def test_every_name_of_utc_is_utc(tables, zone):
    table = tables.table(timestamp=pa.timestamp("us", tz=zone))
    assert not [i for i in DataValidator().validate(table).issues if i.rule == "utc-timestamps"]


@pytest.mark.parametrize("zone", ["Etc/GMT+1", "GMT+01:00", "+00:01", "Europe/London"])
def test_zones_near_utc_are_not_utc(tables, zone):
    issue = only(
        DataValidator().validate(tables.table(timestamp=pa.timestamp("us", tz=zone))),
        "utc-timestamps",
    )
    assert f"time zone {zone!r}" in issue.what


def test_times_before_1970_are_out_of_range(tables):
    cols = tables.columns()
    for i in range(3):
        cols["timestamp"][i] -= 1_768_000_000 * 1_000_000  # 2026 → 1969
    issue = only(DataValidator().validate(tables.table(cols)), "time-range")
    assert issue.what.startswith(
        "3 rows have a timestamp outside 1970-01-01T00:00:00Z .. 9999-01-01T00:00:00Z: "
        "got times from 1969-"
    )
    assert issue.examples[0].startswith("row 0 ('ppml0001' at 1969-")


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_times_from_the_year_9999_on_are_out_of_range(tables, unit):
    """The last step before 9999-01-01 is valid; the step at it is not, in every unit."""
    cols = tables.columns()
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000}[unit]
    table = tables.table(cols)
    end = 253_370_764_800
    times = (np.arange(table.num_rows, dtype=np.int64) % 2) * 300 + end - 300
    table = table.set_column(
        table.schema.get_field_index("timestamp"),
        pa.field("timestamp", pa.timestamp(unit, tz="UTC"), nullable=False),
        pa.array(times * per_second, pa.timestamp(unit, tz="UTC")),
    )
    issue = only(DataValidator().validate(table), "time-range")
    assert issue.count == table.num_rows // 2
    assert issue.what.endswith("got times from 9999-01-01T00:00:00Z to 9999-01-01T00:00:00Z.")
    assert issue.examples[0].startswith("row 1 ")


def test_nanosecond_times_cannot_leave_the_range(tables):
    cols = tables.columns()
    table = tables.table(cols)
    ns = table.column("timestamp").cast(pa.int64()).to_numpy() * 1000
    table = table.set_column(
        table.schema.get_field_index("timestamp"),
        pa.field("timestamp", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.array(ns, pa.timestamp("ns", tz="UTC")),
    )
    assert not [i for i in DataValidator().validate(table).issues if i.rule == "time-range"]


def test_duplicates_across_batches(tables):
    cols = tables.columns()
    tables.append(cols, tables.row(cols, 0))  # first row repeated at the very end
    tables.append(cols, tables.row(cols, 0))
    tables.append(cols, tables.row(cols, 10))
    for batch_rows in (1, 4, 1000):
        report = DataValidator(batch_rows=batch_rows).validate(tables.table(cols))
        issue = only(report, "duplicate-rows")
        assert issue.what == (
            "3 rows repeat a (server_name, timestamp) pair already present "
            "(2 distinct pairs affected)."
        )
        assert issue.examples[0] == "'ppml0001' at 2026-01-01T00:00:00Z"


def test_duplicates_across_sort_chunks(tables, monkeypatch):
    monkeypatch.setattr(findings_module, "_CHUNK", 2)
    cols = tables.columns()
    for index in (0, 0, 0, 5, 5, 17):
        tables.append(cols, tables.row(cols, index))
    report = DataValidator(batch_rows=3).validate(tables.table(cols))
    issue = only(report, "duplicate-rows")
    assert issue.count == 6
    assert "(3 distinct pairs affected)" in issue.what
    assert "missing-steps" not in report.rules()


def test_missing_steps_are_a_warning_with_counts(tables, monkeypatch):
    monkeypatch.setattr(findings_module, "_CHUNK", 5)
    cols = tables.columns()
    # ppdb001 loses steps 3, 4, 5 (rows 10, 13, 16); ppweb001 loses step 7 (row 23)
    for index in (23, 16, 13, 10):
        tables.delete(cols, index)
    for strict in (True, False):
        report = DataValidator(strict=strict, batch_rows=4).validate(tables.table(cols))
        assert report.is_valid
        issue = only(report, "missing-steps")
        assert issue.severity == "warning"
        assert issue.count == 4
        assert issue.what == (
            "4 steps are missing (11.11% of the 36 steps between each server's first and "
            "last row) on 2 of 3 servers."
        )
        assert issue.examples == (
            "'ppdb001' misses 3 of 12 steps, longest gap 3 steps after 2026-01-01T00:10:00Z",
            "'ppweb001' misses 1 of 12 steps, longest gap 1 step after 2026-01-01T00:30:00Z",
        )
        assert report.warnings == [issue.message]


def test_profile_change_within_a_server_across_batches(tables):
    cols = tables.columns()
    cols["profile"][33] = "database"  # ppml0001's last row
    report = DataValidator(batch_rows=5).validate(tables.table(cols))
    issue = only(report, "stable-profile")
    assert issue.what == "1 server has more than one profile."
    assert issue.examples == ("'ppml0001': ml_compute (11 rows), database (1 row)",)


def test_major_contract_version_in_file_metadata(tables):
    table = tables.table()
    table = table.replace_schema_metadata({"fleetcast.contract_version": "2.1.0"})
    issue = only(DataValidator().validate(table), "contract-version")
    assert f"written for data contract 2.1.0; this is contract {CONTRACT_VERSION}" in issue.what


def test_dictionary_columns_are_strings(tables):
    table = tables.table()
    for name in ("server_name", "state", "profile"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).dictionary_encode())
    assert DataValidator().validate_schema(table) == (True, [], [])


def test_null_inside_a_dictionary_is_a_null_row(tables):
    table = tables.table()
    names = pa.DictionaryArray.from_arrays(
        pa.array([0, 1] * 18, pa.int32()), pa.array(["ppml0001", None])
    )
    table = table.set_column(1, "server_name", names)
    issue = only(DataValidator().validate(table), "null-values")
    assert issue.what.startswith("18 rows have a null server_name")


def test_chunked_results_equal_whole_table_results(tables):
    cols = tables.columns(steps=20)
    cols["cpu_pct"][7] = 300.0
    cols["state"][9] = "broken"
    cols["profile"][40] = "web_api"
    tables.append(cols, tables.row(cols, 2))
    tables.delete(cols, 30)
    table = tables.table(cols)
    reports = [DataValidator(batch_rows=n).validate(table) for n in (1, 7, 10_000)]
    summaries = [[(i.rule, i.count, i.what) for i in r.issues] for r in reports]
    assert summaries[0] == summaries[1] == summaries[2]
    assert [s[0] for s in summaries[0]] == [
        "value-ranges",
        "valid-states",
        "stable-profile",
        "duplicate-rows",
        "missing-steps",
    ]


def test_parquet_path_and_directory(tables, tmp_path):
    cols = tables.columns()
    cols["cpu_pct"][2] = -5.0
    path = tmp_path / "server_metrics.parquet"
    pq.write_table(tables.table(cols), path, row_group_size=10)
    for source in (path, str(path), tmp_path):
        report = DataValidator(batch_rows=4).validate(source)
        assert report.source == str(path)
        assert report.rules() == ["value-ranges"]
        assert report.issues[0].examples == (
            "row 2 ('ppweb001' at 2026-01-01T00:00:00Z): cpu_pct=-5",
        )


def test_other_inputs_are_a_type_error():
    with pytest.raises(TypeError, match=r"Table\.from_pandas"):
        DataValidator().validate_schema({"cpu_pct": [1.0]})
    with pytest.raises(ValueError, match="batch_rows must be at least 1"):
        DataValidator(batch_rows=0)


def test_report_json_form(tables):
    cols = tables.columns()
    cols["state"][0] = "bogus"
    data = DataValidator().validate(tables.table(cols)).to_dict()
    assert data["valid"] is False
    assert data["rows"] == 36
    assert data["errors"][0]["rule"] == "valid-states"
    assert data["errors"][0]["see"] == "docs/DATA_CONTRACT.md#valid-states"
    assert data["warnings"] == []


def test_validation_does_not_import_pandas(tables, tmp_path):
    """The appliance has no pandas; the validator must not need it (pyarrow's to_numpy would)."""
    path = tmp_path / "server_metrics.parquet"
    cols = tables.columns()
    cols["cpu_pct"][1] = None
    pq.write_table(tables.table(cols), path)
    code = (
        "import sys; from fleetcast.contract import DataValidator; "
        f"r = DataValidator().validate({str(path)!r}); "
        "print(r.rules(), 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['null-values'] False"


def test_a_float64_beyond_float32_is_non_finite_and_its_limit_is_not(tables):
    """Metrics are float32: 1e39 in a float64 column is infinity once stored
    (docs/DATA_CONTRACT.md#non-finite-values); float32's largest value itself is valid."""
    cols = tables.columns()
    cols["disk_io_mb_s"][0] = 1e39
    cols["latency_ms"][1] = float(np.finfo(np.float32).max)
    report = DataValidator().validate(tables.table(cols, disk_io_mb_s=pa.float64(),
                                                   latency_ms=pa.float64()))  # fmt: skip
    found = [i for i in report.issues if i.rule == "non-finite-values"]
    assert [(i.what, i.count) for i in found] == [
        ("1 row has a non-finite disk_io_mb_s (NaN, ±inf, or beyond float32's ±3.4e38).", 1)
    ]
    assert "value-ranges" not in report.rules()


def test_time_range_is_reported_in_contract_order(tables):
    """Errors follow the sections of docs/DATA_CONTRACT.md: time range before duplicate rows."""
    cols = tables.columns()
    for i in range(3):
        cols["timestamp"][i] -= 5_900_000 * 300 * 1_000_000  # aligned, before 1970
    tables.append(cols, tables.row(cols, 10))
    report = DataValidator().validate(tables.table(cols))
    assert report.rules("error") == ["time-range", "duplicate-rows"]


def test_a_float16_metric_column_is_validated_without_numpy_warnings(tables):
    """A float16 column printed numpy's "overflow encountered in cast" while validating (the
    comparison with float32's limit cast that limit to float16); its values are checked."""
    import warnings

    cols = tables.columns()
    cols["cpu_pct"][0] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = DataValidator().validate(tables.table(cols, cpu_pct=pa.float16()))
    found = [i for i in report.issues if i.rule == "non-finite-values"]
    assert [i.count for i in found] == [1]
