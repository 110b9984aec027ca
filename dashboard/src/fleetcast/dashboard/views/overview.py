"""Panel 1, Overview: risk counts, incident probability per horizon, trend, profiles."""

from __future__ import annotations

from typing import TYPE_CHECKING

import panel as pn

from fleetcast.contract.schema import HORIZONS

from ..shaping import format_risk, group_alerts, kept_because, profile_order
from .figures import FleetTrendFigure, ProfileBarsFigure
from .html import STYLES, badge, cards, table

if TYPE_CHECKING:
    from ..state import SessionState

__all__ = ["ALERT_ROWS", "OverviewView"]

ALERT_ROWS = 50
"""Alerts listed (the appliance sends them most probable first); the count says how many."""


class OverviewView:
    """Fleet health at a glance; figures get new data only when their data changed."""

    def __init__(self) -> None:
        self.counts = pn.pane.HTML("", stylesheets=[STYLES], sizing_mode="stretch_width")
        self.incident = pn.pane.HTML("", stylesheets=[STYLES], sizing_mode="stretch_width")
        self.profiles = pn.pane.HTML("", stylesheets=[STYLES])
        self.alerts = pn.pane.HTML("", stylesheets=[STYLES])
        self.trend = FleetTrendFigure()
        self.bars = ProfileBarsFigure()
        self._trend_key: object = None
        self._bars_key: object = None
        self.view = pn.Column(
            pn.pane.Markdown("### Fleet health"),
            self.counts,
            pn.pane.Markdown("### Environment incident probability"),
            self.incident,
            pn.Row(
                pn.Column(pn.pane.Markdown("### Fleet risk trend"), self.trend.view, min_width=420),
                pn.Column(
                    pn.pane.Markdown("### Profiles"), self.profiles, self.bars.view, min_width=380
                ),
                sizing_mode="stretch_width",
            ),
            pn.pane.Markdown("### Active alerts"),
            self.alerts,
            sizing_mode="stretch_width",
        )

    def update(self, state: SessionState) -> None:
        """Redraw from ``state``; nothing is drawn before the first forecast arrives."""
        current = state.current
        if current is None:
            self.counts.object = "<p>Waiting for the appliance's first forecast…</p>"
            return
        fleet = current.fleet
        self.counts.object = cards(
            [
                ("servers", str(fleet.servers), None),
                ("green (risk < 0.3)", str(fleet.green), "green"),
                ("yellow (0.3–0.7)", str(fleet.yellow), "yellow"),
                ("red (risk > 0.7)", str(fleet.red), "red"),
                ("mean risk", format_risk(fleet.mean_risk), None),
            ]
        )
        self.incident.object = cards(
            [
                (
                    f"incident within {h}",
                    "n/a"
                    if fleet.incident_probability.get(h) is None
                    else f"{100 * fleet.incident_probability[h]:.0f} %",
                    None,
                )
                for h in HORIZONS
            ]
        )
        rows = []
        for profile in sorted(fleet.by_profile, key=profile_order):
            p = fleet.by_profile[profile]
            rows.append(
                [
                    profile,
                    str(p.servers),
                    str(p.green),
                    str(p.yellow),
                    str(p.red),
                    badge(p.mean_risk),
                ]
            )
        self.profiles.object = table(
            ["profile", "servers", "green", "yellow", "red", "mean risk"], rows, raw=True
        )
        if state.alerts:
            grouped = group_alerts(state.alerts)
            alert_rows = [
                [
                    a.server_name,
                    a.profile or "",
                    a.metric,
                    (a.horizon or "") + (f" (also {', '.join(longer)})" if longer else ""),
                    "" if a.predicted_value is None else f"{a.predicted_value:.1f}",
                    "" if a.threshold is None else f"{a.threshold:g}",
                    format_risk(a.probability),
                    (a.severity or "") + (f" ({kept_because(a)})" if a.stale else ""),
                ]
                for a, longer in grouped[:ALERT_ROWS]
            ]
            shown = len(alert_rows)
            total = len(grouped)
            each = len(state.alerts)
            note = (
                f"<p class='fc-alert-count'>{total} active alert{'' if total == 1 else 's'}"
                + (f" ({each} counting each horizon)" if each != total else "")
                + (f"; the {shown} most probable are listed" if shown < total else "")
                + "</p>"
            )
            self.alerts.object = note + table(
                [
                    "server",
                    "profile",
                    "metric",
                    "horizon",
                    "predicted",
                    "threshold",
                    "p",
                    "severity",
                ],
                alert_rows,
            )
        else:
            self.alerts.object = "<p>No active alerts.</p>"
        if state.fleet_history is not None and state.fleet_history != self._trend_key:
            self._trend_key = state.fleet_history
            step = state.status.step_seconds if state.status is not None else None
            self.trend.update(state.fleet_history, step)
        if fleet != self._bars_key:
            self._bars_key = fleet
            self.bars.update(fleet)
