"""The likely-units warning: a unit error that stays inside the ranges
(docs/DATA_CONTRACT.md#likely-units)."""

from __future__ import annotations

import numpy as np
import pytest

from fleetcast.contract import DataValidator


@pytest.mark.parametrize("batch_rows", [None, 5])
def test_a_unit_error_inside_the_ranges_is_a_warning(tables, batch_rows):
    """cpu and mem as 0-1 fractions, latency in seconds: inside the ranges, so valid and
    trained without a word, and the thresholds could never fire."""
    cols = tables.columns()
    n = len(cols["cpu_pct"])
    cols["cpu_pct"] = np.linspace(0.05, 0.97, n)
    cols["mem_pct"] = np.full(n, 0.4)
    cols["latency_ms"] = np.linspace(0.01, 0.8, n)
    validator = DataValidator() if batch_rows is None else DataValidator(batch_rows=batch_rows)
    report = validator.validate(tables.table(cols))
    assert report.is_valid  # warnings only, strict or not
    found = [i for i in report.issues if i.rule == "likely-units"]
    assert [(i.severity, i.what.split(" is at most")[0]) for i in found] == [
        ("warning", "every cpu_pct"),
        ("warning", "every mem_pct"),
        ("warning", "every latency_ms"),
    ]
    assert "(the largest is 0.97): a 0-1 fraction instead of percent?" in found[0].what
    assert "seconds instead of milliseconds?" in found[2].what
    assert "multiply latency_ms by 1000" in found[2].fix
    assert found[0].message.endswith("See docs/DATA_CONTRACT.md#likely-units.")
    # Percent with one value above 1, all zeros (a latency not measured): no warning.
    cols["cpu_pct"][0] = 1.5
    cols["latency_ms"] = np.zeros(n)
    report = validator.validate(tables.table(cols))
    assert [i.what.split(" is at most")[0] for i in report.issues] == ["every mem_pct"]
