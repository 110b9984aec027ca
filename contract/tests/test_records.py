"""validate_columns: the appliance's per-record check on numpy columns."""

from __future__ import annotations

import numpy as np
import pytest

from fleetcast.contract import ContractError, validate_columns


def test_valid_records_pass(tables):
    ok, reasons = validate_columns(tables.numpy_columns(8))
    assert ok.tolist() == [True] * 8
    assert reasons == {}


def test_each_bad_record_gets_its_reasons(tables):
    cols = tables.numpy_columns(6)
    cols["server_name"][0] = ""
    cols["cpu_pct"][1] = 120.0
    cols["mem_pct"][2] = np.nan
    cols["disk_io_mb_s"][3] = -1.0
    cols["state"][4] = "Healthy"
    cols["profile"][5] = "gpu"
    cols["latency_ms"][5] = np.inf
    ok, reasons = validate_columns(cols)
    assert ok.tolist() == [False] * 6
    assert reasons[0] == "server_name is empty or not a string (docs/DATA_CONTRACT.md#server-names)"
    assert reasons[1] == (
        "cpu_pct=120 is outside [0, 100] percent (docs/DATA_CONTRACT.md#value-ranges)"
    )
    assert reasons[2] == (
        "mem_pct is missing or not a finite float32 number (got nan) "
        "(docs/DATA_CONTRACT.md#non-finite-values)"
    )
    assert reasons[3] == (
        "disk_io_mb_s=-1 is outside [0, inf] MB/s (docs/DATA_CONTRACT.md#value-ranges)"
    )
    # Just over a bound, as rounding noise is: shown as sent, not rounded onto the bound.
    cols["cpu_pct"][1] = 100.0001
    assert validate_columns(cols)[1][1].startswith("cpu_pct=100.0001 is outside [0, 100]")
    assert reasons[4] == (
        "state 'Healthy' is not one of the 8 contract states (docs/DATA_CONTRACT.md#valid-states)"
    )
    assert reasons[5] == (
        "latency_ms is missing or not a finite float32 number (got inf) "
        "(docs/DATA_CONTRACT.md#non-finite-values); profile 'gpu' is not one of the 7 "
        "contract profiles (docs/DATA_CONTRACT.md#valid-profiles)"
    )


def test_codes_for_states_and_profiles(tables):
    cols = tables.numpy_columns(4)
    cols["state"] = np.array([0, 7, -1, 8])
    cols["profile"] = np.array([6, -1, 0, 7])
    ok, reasons = validate_columns(cols)
    assert ok.tolist() == [True, True, True, False]
    assert reasons[3].count("is not one of") == 2
    ok, reasons = validate_columns(cols, profile_required=True)
    assert ok.tolist() == [True, False, True, False]
    assert "(docs/DATA_CONTRACT.md#null-values)" in reasons[1]


def test_unicode_arrays_and_none_metrics(tables):
    cols = tables.numpy_columns(3)
    cols["server_name"] = np.array(["ppdb001", " ", "ppweb001"])
    cols["state"] = np.array(["", "idle", "nope"])
    cols["cpu_pct"] = np.array([1.0, None, "7"], dtype=object)
    ok, reasons = validate_columns(cols)
    assert ok.tolist() == [True, False, False]
    assert reasons[1].startswith("server_name is empty")
    assert "cpu_pct is missing or not a finite float32 number (got None)" in reasons[1]
    assert "cpu_pct is missing" in reasons[2]
    assert "state 'nope'" in reasons[2]


def test_timestamps_seconds_or_datetime64(tables):
    cols = tables.numpy_columns(3)
    cols["timestamp"] = np.array([1.7e9, -5.0, np.nan])
    ok, reasons = validate_columns(cols)
    assert ok.tolist() == [True, False, False]
    assert reasons[1].endswith("(docs/DATA_CONTRACT.md#time-range)")
    cols["timestamp"] = np.array(["2026-01-01T00:00", "NaT", "1969-12-31"], dtype="datetime64[s]")
    assert validate_columns(cols)[0].tolist() == [True, False, False]


def test_timestamps_from_the_year_9999_on_are_refused(tables):
    cols = tables.numpy_columns(3)
    cols["timestamp"] = np.array([253_370_764_799.0, 253_370_764_800.0, 1.7e12])  # ms as s
    ok, reasons = validate_columns(cols)
    assert ok.tolist() == [True, False, False]
    assert "from 1970 to before 9999, got 1700000000000.0" in reasons[2]
    cols["timestamp"] = np.array(["9998-12-31T23:55", "9999-01-01", "2026-01-01"], "datetime64[s]")
    assert validate_columns(cols)[0].tolist() == [True, False, True]


def test_optional_columns_may_be_absent(tables):
    cols = tables.numpy_columns(2)
    for name in ("timestamp", "state", "profile"):
        del cols[name]
    assert validate_columns(cols)[0].tolist() == [True, True]


def test_caller_bugs_raise_contract_error(tables):
    cols = tables.numpy_columns(3)
    del cols["latency_ms"]
    with pytest.raises(ContractError, match=r"missing \['latency_ms'\].*#columns"):
        validate_columns(cols)
    cols = tables.numpy_columns(3)
    cols["cpu_pct"] = np.zeros(2)
    with pytest.raises(ContractError, match="1-D arrays of one length"):
        validate_columns(cols)


def test_non_string_objects_are_rejected_not_raised(tables):
    cols = tables.numpy_columns(3)
    cols["server_name"] = np.array(["ppdb001", 42, None], dtype=object)
    cols["state"] = np.array([["healthy"], "idle", 3], dtype=object)
    ok, reasons = validate_columns(cols)
    assert ok.tolist() == [False, False, False]
    assert reasons[0] == (
        "state ['healthy'] is not one of the 8 contract states (docs/DATA_CONTRACT.md#valid-states)"
    )
    assert reasons[1].startswith("server_name is empty or not a string")
    assert "state 3 is not one of" in reasons[2]


def test_a_metric_beyond_float32_is_refused_like_infinity(tables):
    cols = tables.numpy_columns(3)
    cols["disk_io_mb_s"] = np.array([1e39, 3.4e38, -1e39])
    ok, reasons = validate_columns(cols)
    assert ok.tolist() == [False, True, False]
    assert reasons[0] == (
        "disk_io_mb_s is missing or not a finite float32 number (got 1e+39) "
        "(docs/DATA_CONTRACT.md#non-finite-values)"
    )
    assert "-1e+39" in reasons[2]
    assert "outside" not in reasons[2]  # reported as non-finite, not also out of range
