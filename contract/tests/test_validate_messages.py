"""Validator messages name what is really there: null times, versions that are not versions."""

from __future__ import annotations

import pytest

from fleetcast.contract import DataValidator
from fleetcast.contract.schema import CONTRACT_VERSION


def _issue(report, rule):
    (issue,) = [i for i in report.issues if i.rule == rule]
    assert "Why it matters:" in issue.message
    assert "Fix:" in issue.message
    assert issue.message.endswith(f"See docs/DATA_CONTRACT.md#{rule}.")
    return issue


def test_a_null_timestamp_is_not_shown_as_1970(tables):
    cols = tables.columns()
    cols["timestamp"][4] = None  # ppdb001's second row
    issue = _issue(DataValidator().validate(tables.table(cols)), "null-values")
    assert issue.examples[0] == "row 4 ('ppdb001', timestamp null)"
    assert "1970" not in issue.message


def test_examples_of_valid_times_keep_their_instant(tables):
    cols = tables.columns()
    cols["cpu_pct"][4] = 150.0
    cols["timestamp"][7] = None
    report = DataValidator().validate(tables.table(cols))
    ranges = _issue(report, "value-ranges")
    assert ranges.examples[0] == "row 4 ('ppdb001' at 2026-01-01T00:05:00Z): cpu_pct=150"


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (b"garbage", "'garbage'"),
        (b"", "empty"),
        (b"\xff\xfe1", "not UTF-8"),
        (b"1.x.0", "'1.x.0'"),
        (b"v1.1.0", "'v1.1.0'"),
    ],
)
def test_a_contract_version_that_is_no_version(tables, stored, shown):
    table = tables.table().replace_schema_metadata({b"fleetcast.contract_version": stored})
    report = DataValidator().validate(table)
    assert not report.is_valid
    issue = _issue(report, "contract-version")
    assert shown in issue.what
    assert "is not a contract version" in issue.what
    assert "different major version" not in issue.message
    assert CONTRACT_VERSION in issue.fix


@pytest.mark.parametrize("stored", [b"1.1.0", b"1.0.0", b"1.4"])
def test_same_major_versions_pass(tables, stored):
    table = tables.table().replace_schema_metadata({b"fleetcast.contract_version": stored})
    assert DataValidator().validate_schema(table) == (True, [], [])


def test_another_major_version_is_still_named_as_such(tables):
    table = tables.table().replace_schema_metadata({b"fleetcast.contract_version": b"2.0.0"})
    issue = _issue(DataValidator().validate(table), "contract-version")
    assert "written for data contract 2.0.0" in issue.what
    assert "different major version" in issue.what


def test_validate_cli_shows_the_invalid_version(tables, tmp_path, capsys):
    import pyarrow.parquet as pq

    from fleetcast.contract.cli import main

    path = tmp_path / "server_metrics.parquet"
    table = tables.table().replace_schema_metadata({b"fleetcast.contract_version": b"garbage"})
    pq.write_table(table, path)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "not a contract version" in text
    assert "Traceback" not in text
