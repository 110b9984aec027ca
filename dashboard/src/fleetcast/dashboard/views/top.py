"""Panel 3, Top Servers: the riskiest servers, each with its forecast curves."""

from __future__ import annotations

from typing import TYPE_CHECKING

import panel as pn

from fleetcast.contract.schema import HORIZONS

from ..shaping import format_risk, top_servers
from .detail import ServerDetailView
from .html import STYLES, badge, esc, table

if TYPE_CHECKING:
    from ..state import SessionState

__all__ = ["TopServersView"]

TABLE_ROWS = 10
"""Servers listed in the ranking table (curves are drawn for the first ``count``)."""


class TopServersView:
    """A ranking table of the riskiest servers and the curves of the first ``count``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.ranking = pn.pane.HTML("", stylesheets=[STYLES], sizing_mode="stretch_width")
        self.details = [ServerDetailView(title=f"#{i + 1} ") for i in range(count)]
        self.view = pn.Column(
            pn.pane.Markdown("### Riskiest servers"),
            self.ranking,
            pn.pane.Markdown(
                f"### Forecast curves of the top {count}: p50 (blue), p10–p90 band, actuals "
                "(black) up to now (dotted), alert threshold (dashed red)"
            ),
            *[d.view for d in self.details],
            sizing_mode="stretch_width",
        )

    def names(self, state: SessionState) -> list[str]:
        """The servers whose curves this panel needs (fetched by the session)."""
        if state.current is None:
            return []
        return [s.server_name for s in top_servers(state.current.servers, self.count)]

    def update(self, state: SessionState) -> None:
        """Redraw from ``state``."""
        if state.current is None:
            return
        ranked = top_servers(state.current.servers, TABLE_ROWS)
        rows = [
            [
                str(i + 1),
                f"<b>{esc(s.server_name)}</b>",
                esc(s.profile),
                badge(s.risk, s.risk_level),
                " / ".join(format_risk(s.risk_by_horizon.get(h)) for h in HORIZONS),
                esc(", ".join(f"{d.metric}@{d.horizon}" for d in s.drivers[:3]) or "none"),
            ]
            for i, s in enumerate(ranked)
        ]
        ranking = table(
            ["#", "server", "profile", "risk", "30min / 1hr / 8hr", "drivers"], rows, raw=True
        )
        self.ranking.object = f'<div class="fc-ranking">{ranking}</div>'

        for view, forecast in zip(self.details, ranked[: self.count], strict=False):
            name = forecast.server_name
            view.update(
                forecast,
                state.details.get(name),
                state.histories.get(name),
                state.thresholds_for(forecast.profile),
                state.unavailable.get(name),
            )
        for view in self.details[len(ranked) :]:
            view.clear("")
