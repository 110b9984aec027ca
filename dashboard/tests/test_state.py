"""Connection state and STALE marking: the codex's only fallback, never invented data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleetcast.dashboard.api import CurrentPredictions, parse
from fleetcast.dashboard.state import CONNECTING, DISCONNECTED, LIVE, POLLING, SessionState
from fleetcast.dashboard.status import StatusInfo

from .samples import current_body

T0 = datetime(2026, 11, 27, 10, 0, 30, tzinfo=UTC)


def current(prediction_time: str = "2026-11-27T10:05:00Z") -> CurrentPredictions:
    body = current_body()
    body["prediction_time"] = prediction_time
    return parse(body, CurrentPredictions, "test")


def test_starts_connecting_without_data_and_not_stale() -> None:
    state = SessionState()
    assert state.connection == CONNECTING
    assert not state.has_data
    assert not state.stale
    assert "none yet" in state.headline(T0)


def test_failure_keeps_the_last_data_unchanged_and_marks_it_stale() -> None:
    state = SessionState()
    data = current()
    state.accept(data)
    state.mark_ok(websocket=True, now=T0)
    assert state.connection == LIVE
    assert not state.stale
    state.mark_failed("refused", now=T0 + timedelta(seconds=5))
    state.mark_failed("refused again", now=T0 + timedelta(seconds=9))
    assert state.connection == DISCONNECTED
    assert state.stale
    assert state.current is data  # the very same forecasts, nothing recomputed
    assert state.disconnected_since == T0 + timedelta(seconds=5)  # first failure of the outage
    assert state.last_error == "refused again"
    line = state.headline(T0 + timedelta(seconds=42))
    assert line.startswith("disconnected")
    assert "STALE: last refreshed 42 s ago" in line
    assert "2026-11-27 10:05:00 UTC" in line


def test_disconnected_before_any_data_is_not_called_stale() -> None:
    state = SessionState()
    state.mark_failed("refused", now=T0)
    assert not state.stale
    assert "no data received yet" in state.headline(T0)


def test_recovery_clears_the_outage() -> None:
    state = SessionState()
    state.accept(current())
    state.mark_failed("refused", now=T0)
    state.mark_ok(websocket=False, now=T0 + timedelta(seconds=3))
    assert state.connection == POLLING
    assert not state.stale
    assert state.disconnected_since is None
    assert state.last_error is None


def test_a_new_forecast_set_drops_curves_of_the_old_one_and_keeps_the_selection() -> None:
    state = SessionState(selected_server="ppml0015")
    assert state.accept(current("2026-11-27T10:05:00Z"))
    state.details["ppml0015"] = object()  # type: ignore[assignment]
    assert not state.accept(current("2026-11-27T10:05:00Z"))  # same set: nothing to redraw
    assert "ppml0015" in state.details
    assert state.accept(current("2026-11-27T10:10:00Z"))
    assert state.details == {}
    assert state.selected_server == "ppml0015"


def test_thresholds_per_profile_from_status() -> None:
    state = SessionState()
    assert state.thresholds_for("database") == {}
    state.status = StatusInfo(
        {"thresholds": {"cpu_pct": {"database": 90.0, "ml_compute": 100.0}, "mem_pct": 95}}
    )
    assert state.thresholds_for("database") == {"cpu_pct": 90.0, "mem_pct": 95.0}
    assert state.thresholds_for("generic") == {"mem_pct": 95.0}
