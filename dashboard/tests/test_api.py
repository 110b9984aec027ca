"""Parsing the appliance's bodies (docs/API.md) into typed Structs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleetcast.dashboard.api import (
    ApiFormatError,
    CurrentPredictions,
    ProfileHistory,
    ServerDetail,
    ServerHistory,
    parse,
    parse_time,
)

from .samples import current_body, detail_body


def test_current_predictions_parse_with_names_profiles_and_fleet() -> None:
    current = parse(current_body(), CurrentPredictions, "GET /predictions/current")
    assert [s.server_name for s in current.servers] == ["ppweb001", "ppml0015", "ppml0002"]
    assert current.servers[1].profile == "ml_compute"
    assert current.servers[1].predictions["30min"]["cpu_pct"] == pytest.approx(65.2)
    assert current.servers[1].quantiles["p90"]["8hr"]["latency_ms"] == pytest.approx(51.0)
    assert current.servers[1].drivers[0].threshold == pytest.approx(90.0)
    assert current.fleet.red == 1
    assert current.fleet.incident_probability["8hr"] == pytest.approx(0.95)
    assert current.fleet.by_profile["ml_compute"].yellow == 1


def test_unknown_fields_are_ignored_and_optional_ones_default() -> None:
    body = current_body()
    body["data_time"] = "2026-11-27T10:00:00Z"  # a field the dashboard does not use
    body["servers"][0].pop("drivers")
    current = parse(body, CurrentPredictions, "GET /predictions/current")
    assert current.servers[0].drivers == []


def test_a_body_missing_a_required_field_raises_a_codex_error() -> None:
    body = current_body()
    del body["servers"][0]["server_name"]
    with pytest.raises(ApiFormatError) as err:
        parse(body, CurrentPredictions, "GET /predictions/current")
    text = str(err.value)
    assert "GET /predictions/current" in text
    assert "server_name" in text
    assert "Fix:" in text
    assert "docs/API.md" in text


def test_detail_curves_keep_nulls_as_gaps() -> None:
    detail = parse(detail_body(), ServerDetail, "GET /predictions/ppml0015")
    assert len(detail.curves["cpu_pct"]["p50"]) == 96
    assert detail.curves["cpu_pct"]["p50"][-1] is None
    assert detail.step_seconds == 300


def test_history_with_null_steps() -> None:
    body = {
        "server_name": "ppml0015",
        "profile": "ml_compute",
        "timestamps": ["2026-11-27T09:55:00Z", "2026-11-27T10:00:00Z"],
        "cpu_pct": [50.0, None],
        "mem_pct": [1.0, 2.0],
        "disk_io_mb_s": [1.0, 2.0],
        "latency_ms": [1.0, 2.0],
        "risk": [None, 0.4],
    }
    history = parse(body, ServerHistory, "GET /history/ppml0015")
    assert history.cpu_pct == [50.0, None]
    assert history.risk == [None, 0.4]


def test_profile_history_with_null_steps() -> None:
    body = {
        "profile": "database",
        "servers": 3,
        "step_seconds": 300,
        "timestamps": ["2026-11-27T09:55:00Z", "2026-11-27T10:00:00Z"],
        "reporting": [0, 2],
        "cpu_pct": [None, 41.5],
        "mem_pct": [None, 2.0],
        "disk_io_mb_s": [None, 2.0],
        "latency_ms": [None, 2.0],
        "risk": [None, 0.25],
    }
    history = parse(body, ProfileHistory, "GET /profiles/database/history")
    assert (history.profile, history.servers, history.reporting) == ("database", 3, [0, 2])
    assert history.cpu_pct == [None, 41.5]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-27T10:05:00Z", datetime(2026, 11, 27, 10, 5, tzinfo=UTC)),
        ("2026-11-27T11:05:00+01:00", datetime(2026, 11, 27, 10, 5, tzinfo=UTC)),
        ("2026-11-27T10:05:00", datetime(2026, 11, 27, 10, 5, tzinfo=UTC)),
        (1795773900, datetime(2026, 11, 27, 10, 5, tzinfo=UTC)),
        ("not a time", None),
        (None, None),
    ],
)
def test_parse_time(value: object, expected: datetime | None) -> None:
    assert parse_time(value) == expected
