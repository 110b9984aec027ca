"""Panel 2, Heatmap: every server as a named cell coloured by risk; a click opens its detail."""

from __future__ import annotations

from typing import TYPE_CHECKING

import panel as pn

from ..risk import GREEN_BELOW, LEVEL_COLOURS, RED_ABOVE
from ..shaping import heatmap_cells, no_forecast_note
from .detail import ServerDetailView
from .grid import RiskGrid

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..state import SessionState

__all__ = ["HeatmapView"]

DOC = "docs/RISK.md#buckets"

_LEGEND = (
    f'<span style="background:{LEVEL_COLOURS["green"]};color:#fff;padding:2px 8px">'
    f"green &lt; {GREEN_BELOW}</span> "
    f'<span style="background:{LEVEL_COLOURS["yellow"]};padding:2px 8px">'
    f"yellow {GREEN_BELOW}–{RED_ABOVE}</span> "
    f'<span style="background:{LEVEL_COLOURS["red"]};color:#fff;padding:2px 8px">'
    f"red &gt; {RED_ABOVE}</span> "
    f'<span style="background:{LEVEL_COLOURS["unknown"]};padding:2px 8px">no forecast '
    "(stale: data stopped; warming; ahead: clock in the future)</span>"
    " · hover a cell for its numbers, click it for its forecast"
)


class HeatmapView:
    """The risk grid grouped by profile and, below it, the clicked server's detail."""

    def __init__(self, on_select: Callable[[str], None]) -> None:
        self.grid = RiskGrid(on_select=on_select, sizing_mode="stretch_width")
        self.detail = ServerDetailView()
        self.detail.clear("Click a server above to see its forecast.")
        self._cells_key: object = None
        self.view = pn.Column(
            pn.pane.Markdown("### Risk heatmap"),
            pn.pane.HTML(_LEGEND),
            self.grid,
            pn.layout.Divider(),
            self.detail.view,
            sizing_mode="stretch_width",
        )

    def update(self, state: SessionState) -> None:
        """Redraw the grid (when the forecast set changed) and the selected server."""
        current = state.current
        if current is None and not state.unforecast:
            return
        servers = current.servers if current is not None else []
        key = (servers, state.unforecast)
        if key != self._cells_key:
            self._cells_key = key
            self.grid.cells = heatmap_cells(servers, state.unforecast)
        self.grid.stale = state.stale
        name = state.selected_server
        self.grid.selected = name or ""
        if name is None:
            return
        forecast = next((s for s in servers if s.server_name == name), None)
        if forecast is None:
            tracked = next((u for u in state.unforecast if u.server_name == name), None)
            note = no_forecast_note(tracked) if tracked else f"{name} has no forecast."
            self.detail.clear(f"{note} ({DOC})")
            return
        self.detail.update(
            forecast,
            state.details.get(name),
            state.histories.get(name),
            state.thresholds_for(forecast.profile),
            state.unavailable.get(name),
        )
