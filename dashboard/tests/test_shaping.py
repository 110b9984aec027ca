"""Rows the panels show: heatmap cells, the riskiest servers, forecast curves, profile means."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from fleetcast.dashboard.api import CurrentPredictions, ServerDetail, parse
from fleetcast.dashboard.risk import LEVEL_COLOURS, risk_level
from fleetcast.dashboard.shaping import (
    curve_frame,
    format_risk,
    heatmap_cells,
    server_thresholds,
    top_servers,
)

from .samples import current_body, detail_body, forecast_body


def servers(extra: list[dict] | None = None):
    body = current_body()
    body["servers"] += extra or []
    return parse(body, CurrentPredictions, "test").servers


def test_heatmap_cells_group_by_contract_profile_order_then_name() -> None:
    cells = heatmap_cells(servers([forecast_body("ppgen001", "generic", None)]))
    assert [(c["profile"], c["name"]) for c in cells] == [
        ("ml_compute", "ppml0002"),
        ("ml_compute", "ppml0015"),
        ("web_api", "ppweb001"),
        ("generic", "ppgen001"),
    ]
    by_name = {c["name"]: c for c in cells}
    assert by_name["ppml0002"]["level"] == "red"
    assert by_name["ppml0002"]["colour"] == LEVEL_COLOURS["red"]
    assert by_name["ppml0015"]["level"] == "yellow"
    assert by_name["ppweb001"]["level"] == "green"
    assert by_name["ppgen001"]["level"] == "unknown"
    assert by_name["ppgen001"]["label"] == "n/a"
    tip = by_name["ppml0015"]["tooltip"]
    assert "ppml0015 (ml_compute)" in tip
    assert "risk 0.42 — yellow" in tip
    assert "30min 0.10 · 1hr 0.20 · 8hr 0.42" in tip
    assert "driver: cpu_pct > 90 at 8hr" in tip


def test_a_server_is_coloured_by_the_level_the_appliance_decided() -> None:
    """The appliance decides on the unrounded risk and sends it rounded: 0.70003 arrives as
    0.7 with level red, and the heatmap and tooltip follow the appliance (and its fleet
    counts and alerts), not the rounded value. A level it did not send, or one it does not
    know, falls back to the risk's own level; no risk stays unknown."""
    edge = forecast_body("ppml0099", "ml_compute", 0.7)
    edge["risk_level"] = "red"
    odd = forecast_body("ppml0098", "ml_compute", 0.75)
    odd["risk_level"] = "purple"
    bare = forecast_body("ppml0097", "ml_compute", 0.2)
    del bare["risk_level"]
    lost = forecast_body("ppml0096", "ml_compute", None)
    lost["risk_level"] = "red"
    cells = {c["name"]: c for c in heatmap_cells(servers([edge, odd, bare, lost]))}
    assert cells["ppml0099"]["level"] == "red"
    assert cells["ppml0099"]["label"] == ">0.70"  # not a yellow-looking "0.70" on red
    assert "risk >0.70 — red" in cells["ppml0099"]["tooltip"]
    assert cells["ppml0098"]["level"] == "red"
    assert cells["ppml0097"]["level"] == "green"
    assert cells["ppml0096"]["level"] == "unknown"


def test_top_servers_riskiest_first_without_risk_last() -> None:
    ranked = top_servers(servers([forecast_body("ppgen001", "generic", None)]), 4)
    assert [s.server_name for s in ranked] == ["ppml0002", "ppml0015", "ppweb001", "ppgen001"]
    assert [s.server_name for s in top_servers(servers(), 1)] == ["ppml0002"]
    assert top_servers(servers(), 0) == []


def test_curve_frame_times_start_at_start_and_step_by_step_seconds() -> None:
    detail = parse(detail_body(), ServerDetail, "test")
    frames = curve_frame(detail)
    cpu = frames["cpu_pct"]
    start = datetime(2026, 11, 27, 10, 5, tzinfo=UTC)
    assert cpu["time"][0] == start
    assert cpu["time"][-1] == start + timedelta(seconds=300 * 95)
    assert cpu["p10"][0] == 1.0
    assert cpu["p90"][0] == 3.0
    assert math.isnan(cpu["p50"][-1])  # a null stays a gap, never filled in


def test_thresholds_from_the_appliance_only() -> None:
    detail = parse(detail_body(), ServerDetail, "test")
    assert server_thresholds(detail) == {"cpu_pct": 90.0}
    merged = server_thresholds(detail, {"mem_pct": 92.0, "cpu_pct": 95.0})
    assert merged == {"mem_pct": 92.0, "cpu_pct": 95.0}  # /status per-profile values win


def test_format_risk() -> None:
    assert format_risk(0.4249) == "0.42"
    assert format_risk(None) == "n/a"
    assert format_risk(math.nan) == "n/a"


def test_a_shown_risk_never_reads_as_another_level_than_its_colour() -> None:
    # The legend: green < 0.3 <= yellow <= 0.7 < red. Two decimals showed a green 0.296 as
    # "0.30" and a red 0.704 as "0.70", both yellow numbers by that legend.
    assert format_risk(0.296) == "0.296"
    assert format_risk(0.704) == "0.704"
    assert format_risk(0.2999) == "0.2999"
    assert format_risk(0.695) == "0.69"  # 0.695 rounds to 0.69 (binary 0.69499...): yellow
    assert format_risk(0.70) == "0.70"  # the boundary itself is yellow
    # The appliance decides on the unrounded value and sends 4 decimals: a red 0.70003
    # arrives as 0.7 with risk_level "red"; a green 0.299996 as 0.3 with "green".
    assert format_risk(0.7, "red") == ">0.70"
    assert format_risk(0.3, "green") == "<0.30"
    assert format_risk(0.7, "yellow") == "0.70"
    for risk in (0.294, 0.2951, 0.299, 0.3, 0.5, 0.6999, 0.7001, 0.705, 0.99):
        shown = format_risk(risk)
        assert risk_level(float(shown)) == risk_level(risk), (risk, shown)


def test_servers_without_a_forecast_are_grey_cells_that_say_why() -> None:
    # A stale server (its data stopped) left the forecast set and so the heatmap: the grey
    # "no forecast" cell of the legend never appeared.
    from fleetcast.dashboard.api import TrackedServer

    stale = TrackedServer("ppdb007", "database", "stale", "2026-11-27T09:00:00Z")
    warming = TrackedServer("ppweb010", "web_api", "warming", "2026-11-27T10:00:00Z")
    again = TrackedServer("ppweb001", "web_api", "stale", None)  # forecast meanwhile
    cells = heatmap_cells(servers(), [stale, warming, again])
    by_name = {c["name"]: c for c in cells}
    assert sorted(by_name) == ["ppdb007", "ppml0002", "ppml0015", "ppweb001", "ppweb010"]
    grey = by_name["ppdb007"]
    assert (grey["risk"], grey["level"], grey["label"]) == (None, "unknown", "stale")
    assert grey["colour"] == LEVEL_COLOURS["unknown"]
    assert grey["tooltip"] == (
        "ppdb007 (database) has no forecast: its data stopped (more than an hour behind the "
        "fleet); its alerts are kept; newest data 2026-11-27T09:00:00Z"
    )
    assert by_name["ppweb010"]["label"] == "warming"
    assert by_name["ppweb001"]["level"] == "green"  # its forecast, not the older state
    web = [c["name"] for c in cells if c["profile"] == "web_api"]
    assert web == ["ppweb001", "ppweb010"]  # grouped by profile, then by name


def test_alerts_of_one_crossing_are_one_row_at_its_shortest_horizon() -> None:
    # A crossing within 30 min also alerts for 1hr and 8hr: the table listed it 3 times and
    # counted 3 alerts.
    from fleetcast.dashboard.api import Alert
    from fleetcast.dashboard.shaping import group_alerts

    alerts = [
        Alert("db-7", "latency_ms", horizon="8hr", probability=0.95, severity="critical"),
        Alert("db-7", "latency_ms", horizon="30min", probability=0.5, severity="warning"),
        Alert("db-7", "latency_ms", horizon="1hr", probability=0.8, severity="critical"),
        Alert("web-1", "cpu_pct", horizon="8hr", probability=0.9, severity="critical"),
        Alert("db-7", "cpu_pct", horizon="8hr", probability=0.3, severity="warning"),
    ]
    rows = group_alerts(alerts)
    assert [(a.server_name, a.metric, a.horizon, longer) for a, longer in rows] == [
        ("db-7", "latency_ms", "30min", ["1hr", "8hr"]),  # its group peaks at 0.95
        ("web-1", "cpu_pct", "8hr", []),
        ("db-7", "cpu_pct", "8hr", []),
    ]
