"""What the panels get: trend data with gaps, the one "last forecast" time, STALE greying.

No browser and no appliance: the views are built from the bodies of tests/samples.py and
their Bokeh sources and HTML are checked directly.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from fleetcast.dashboard.api import CurrentPredictions, FleetHistory, ServerHistory, parse
from fleetcast.dashboard.session import DashboardSession
from fleetcast.dashboard.settings import DashboardSettings
from fleetcast.dashboard.shaping import break_gaps
from fleetcast.dashboard.state import SessionState
from fleetcast.dashboard.status import StatusInfo
from fleetcast.dashboard.views.advanced import AdvancedView
from fleetcast.dashboard.views.figures import FleetTrendFigure, ForecastFigures, HistoryFigures
from fleetcast.dashboard.views.header import Header

from .samples import current_body

T0 = datetime(2026, 11, 27, 23, 55)

# /fleet/history as the auditor saw it: one point from a forecast made mid-backfill, then
# continuous 5-minute points 28 hours later.
GAPPED = {
    "timestamps": [
        "2026-11-26T19:50:00Z",
        "2026-11-27T23:55:00Z",
        "2026-11-28T00:00:00Z",
        "2026-11-28T00:05:00Z",
    ],
    "mean_risk": [0.05, 0.2, 0.25, 0.3],
    "green": [40, 30, 29, None],
    "yellow": [0, 8, 9, 9],
    "red": [0, 2, 2, 2],
}


def is_nan(values: list[float]) -> list[bool]:
    return [isinstance(v, float) and math.isnan(v) for v in values]


def test_break_gaps_inserts_one_nan_row_per_gap_and_keeps_every_point() -> None:
    step = 300
    times = [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=7, seconds=30)]
    times += [T0 + timedelta(hours=2), T0 + timedelta(hours=2, minutes=5)]
    out_times, out = break_gaps(times, {"v": [1.0, 2.0, 3.0, 4.0, 5.0]}, step)
    # 2.5 min and 5 min apart: joined; 112.5 min apart (> 1.5 steps): broken once.
    assert out_times == [*times[:3], times[2] + timedelta(minutes=5), *times[3:]]
    assert out["v"][:3] == [1.0, 2.0, 3.0]
    assert math.isnan(out["v"][3])
    assert out["v"][4:] == [4.0, 5.0]
    # exactly 1.5 steps is still one line
    edge = [T0, T0 + timedelta(seconds=450)]
    assert break_gaps(edge, {"v": [1.0, 2.0]}, step) == (edge, {"v": [1.0, 2.0]})
    assert break_gaps([], {"v": []}, step) == ([], {"v": []})


def test_fleet_trend_breaks_the_line_and_the_level_bars_at_a_28_hour_gap() -> None:
    trend = FleetTrendFigure()
    trend.update(parse(GAPPED, FleetHistory, "test"))
    data = trend.source.data
    assert data["time"] == [
        datetime(2026, 11, 26, 19, 50),
        datetime(2026, 11, 26, 19, 55),  # the break: one step after the lone point
        datetime(2026, 11, 27, 23, 55),
        datetime(2026, 11, 28, 0, 0),
        datetime(2026, 11, 28, 0, 5),
    ]
    assert is_nan(data["mean_risk"]) == [False, True, False, False, False]
    assert [v for v in data["mean_risk"] if not math.isnan(v)] == [0.05, 0.2, 0.25, 0.3]
    for level in ("green", "yellow", "red"):
        assert is_nan(data[level])[1], level  # no bar, so no block of servers over the gap
    assert data["green"][0] == 40
    assert math.isnan(data["green"][4])  # a missing count is no bar, not 0 servers
    assert data["width"] == [300_000.0] * 5  # bars one step (ms) wide: touching, no overlap
    # /status model.step_seconds wins over the default step
    trend.update(parse(GAPPED, FleetHistory, "test"), step_seconds=60.0)
    assert trend.source.data["width"][0] == 60_000.0


def test_history_plot_breaks_lines_at_missing_steps() -> None:
    history = parse(
        {
            "server_name": "ppweb001",
            "step_seconds": 300,
            "timestamps": ["2026-11-27T10:00:00Z", "2026-11-27T10:05:00Z", "2026-11-27T12:00:00Z"],
            "cpu_pct": [10.0, 11.0, 12.0],
            "risk": [0.1, 0.2, 0.3],
        },
        ServerHistory,
        "test",
    )
    assert history.step_seconds == 300
    plot = HistoryFigures()
    plot.update(
        history.timestamps, {"cpu_pct": history.cpu_pct, "risk": history.risk}, history.step_seconds
    )
    assert len(plot.source.data["time"]) == 4
    assert is_nan(plot.source.data["cpu_pct"]) == [False, False, True, False]
    assert is_nan(plot.source.data["mem_pct"]) == [True] * 4  # not sent: nothing drawn


STATUS = {
    "model": {"bundle_id": "b1", "step_seconds": 300},
    "servers": {"known": 9, "ready": 4, "warming": 1, "stale": 2, "ahead": 1, "unknown": 1},
    # the run's wall-clock time: hours after the forecast's data time under a 60x demo clock
    "last_prediction_time": "2026-11-28T00:31:39Z",
    "source": {"kind": "demo", "healthy": True},
    "demo": {"enabled": True, "scenario": "healthy"},
}


def loaded_state() -> SessionState:
    state = SessionState()
    state.accept(parse(current_body(), CurrentPredictions, "test"))  # 2026-11-27T10:05:00Z
    state.status = StatusInfo(STATUS)
    state.mark_ok(websocket=False)
    return state


def test_header_and_advanced_show_the_same_last_forecast_time() -> None:
    state = loaded_state()
    header = Header(on_scenario=lambda _s: None)
    header.update(state)
    advanced = AdvancedView(DashboardSettings(), on_refresh=lambda _s: None)
    advanced.update(state)
    shown = "2026-11-27 10:05:00 UTC"
    assert f"last forecast: <b>{shown}</b>" in header.status.object
    facts = advanced.facts.object
    assert f"<td>last forecast (on the data clock)</td><td>{shown}</td>" in facts
    # the step it read, a step before: the row was labelled "data time" and showed 10:05
    assert "<td>from data up to (fleet data time)</td><td>2026-11-27 10:00:00 UTC</td>" in facts
    # the run's wall-clock time is shown only under its own label
    assert (
        "<td>last forecast computed at (appliance wall clock)</td>"
        "<td>2026-11-28 00:31:39 UTC</td>" in facts
    )
    assert "last prediction time" not in facts
    assert "<td>demo (source healthy)</td>" in facts
    # servers whose data stopped (stale) or runs ahead are counted, not lost between buckets
    assert (
        "<td>servers ready / warming / stale / ahead / unknown / known</td>"
        "<td>4 / 1 / 2 / 1 / 1 / 9</td>" in facts
    )


def test_advanced_before_any_forecast() -> None:
    advanced = AdvancedView(DashboardSettings(), on_refresh=lambda _s: None)
    advanced.update(SessionState())
    assert "<td>last forecast (on the data clock)</td><td>none yet</td>" in advanced.facts.object
    assert "<td>from data up to (fleet data time)</td><td>n/a</td>" in advanced.facts.object
    assert "<td>last forecast computed at (appliance wall clock)</td><td>n/a</td>" in (
        advanced.facts.object
    )


def test_every_panel_is_greyed_out_while_stale_and_restored_after() -> None:
    session = DashboardSession(DashboardSettings(use_websocket=False), doc=None)
    session.state = loaded_state()
    panels = [
        session.overview.view,
        session.heatmap.view,
        session.top.view,
        session.historical.view,
        session.advanced.view,
    ]
    session._draw()
    assert [p.css_classes for p in panels] == [[]] * 5
    session.state.mark_failed("refused")
    session._draw()
    assert [p.css_classes for p in panels] == [["fc-stale"]] * 5
    assert all(any("fc-stale" in str(s) for s in p.stylesheets) for p in panels)
    assert "(data STALE)" in session.advanced.facts.object
    session.state.mark_ok(websocket=False)
    session._draw()
    assert [p.css_classes for p in panels] == [[]] * 5


def test_the_alert_table_says_how_many_alerts_it_leaves_out() -> None:
    # Only the first 50 alerts were listed, with no word of the others: a fleet with 300
    # active alerts looked like one with 50.
    from fleetcast.dashboard.api import Alert
    from fleetcast.dashboard.views.overview import ALERT_ROWS, OverviewView

    state = loaded_state()
    state.alerts = [
        Alert(server_name=f"ppweb{i:03d}", metric="cpu_pct", probability=0.9 - i / 1000)
        for i in range(ALERT_ROWS + 10)
    ]
    overview = OverviewView()
    overview.update(state)
    shown = overview.alerts.object
    assert f"{ALERT_ROWS + 10} active alerts; the {ALERT_ROWS} most probable are listed" in shown
    assert shown.count("<tr>") == ALERT_ROWS + 1  # the header row and 50 alerts
    state.alerts = state.alerts[:3]
    overview.update(state)
    assert "3 active alerts</p>" in overview.alerts.object


def test_the_refresh_slider_covers_the_configured_rate() -> None:
    # --refresh-seconds 120 gave a slider from 1 to 60 holding 120: its handle sat past the
    # end and the rate could not be dragged back to the configured one.
    for seconds, start, end in ((120.0, 1.0, 120.0), (0.5, 0.5, 60.0), (5.0, 1.0, 60.0)):
        slider = AdvancedView(
            DashboardSettings(refresh_seconds=seconds), on_refresh=lambda _s: None
        ).refresh
        assert (slider.start, slider.value, slider.end) == (start, seconds, end)


def test_every_time_axis_says_utc() -> None:
    """The plots draw UTC times without a zone (Bokeh's axis): the axis must say UTC."""
    from bokeh.models import DatetimeAxis

    views = (HistoryFigures().view, ForecastFigures().view, FleetTrendFigure().view)
    panes = [p for v in views for p in (v.objects if hasattr(v, "objects") else [v])]
    assert len(panes) == 4
    for pane in panes:
        axes = list(pane.object.select({"type": DatetimeAxis}))
        assert axes
        assert {axis.axis_label for axis in axes} == {"UTC"}


def test_the_now_line_is_not_carried_over_to_a_server_without_a_data_time() -> None:
    from fleetcast.dashboard.api import ServerDetail

    from .samples import detail_body

    plots = ForecastFigures()
    plots.update(parse(detail_body(), ServerDetail, "test"), None, {})
    assert all(span.visible for span in plots.now.values())
    body = detail_body()
    body["data_time"] = None
    plots.update(parse(body, ServerDetail, "test"), None, {})
    assert not any(span.visible for span in plots.now.values())


def test_an_alert_of_a_server_whose_data_stopped_says_so() -> None:
    from fleetcast.dashboard.api import Alert
    from fleetcast.dashboard.views.overview import OverviewView

    state = loaded_state()
    state.alerts = [
        Alert(server_name="ppdb007", metric="latency_ms", severity="critical", probability=0.9,
              stale=True, data_time="2026-11-27T09:00:00Z"),
        Alert(server_name="ppweb001", metric="cpu_pct", severity="warning", probability=0.4),
    ]  # fmt: skip
    overview = OverviewView()
    overview.update(state)
    shown = overview.alerts.object
    assert "<td>critical (no data since 2026-11-27T09:00:00Z)</td>" in shown
    assert "<td>warning</td>" in shown

    # Left out for another reason: the row says which.
    t = "2026-11-27T09:00:00Z"
    state.alerts = [
        Alert(server_name="ppdb007", metric="latency_ms", severity="critical", probability=0.9,
              stale=True, data_time=t, left_out="ahead"),
        Alert(server_name="ppweb001", metric="cpu_pct", severity="warning", probability=0.4,
              stale=True, data_time=t, left_out="not_finite"),
        Alert(server_name="ppweb002", metric="cpu_pct", severity="warning", probability=0.3,
              stale=True, data_time=t, left_out="warming"),
    ]  # fmt: skip
    overview.update(state)
    shown = overview.alerts.object
    assert (
        f"<td>critical (clock ahead of the fleet&#x27;s; last forecast from data of {t})" in shown
    )
    assert f"<td>warning (no finite forecast since {t})</td>" in shown
    assert "<td>warning (warming up: too little history to forecast; last forecast from" in shown


def test_the_alert_table_shows_a_crossing_once_with_its_longer_horizons() -> None:
    from fleetcast.dashboard.api import Alert
    from fleetcast.dashboard.views.overview import OverviewView

    state = loaded_state()
    state.alerts = [
        Alert(server_name="ppdb007", metric="latency_ms", horizon=h, probability=p)
        for h, p in (("30min", 0.4), ("1hr", 0.6), ("8hr", 0.9))
    ]
    overview = OverviewView()
    overview.update(state)
    shown = overview.alerts.object
    assert "1 active alert (3 counting each horizon)</p>" in shown
    assert "<td>30min (also 1hr, 8hr)</td>" in shown
    assert shown.count("<tr>") == 2
