"""Panel 4, Historical: actuals and past risk over a chosen range, for a server or a profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

import panel as pn

from fleetcast.contract.schema import METRIC_COLUMNS

from ..shaping import profile_order
from .figures import HistoryFigures
from .html import esc

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..api import ProfileHistory, ServerHistory
    from ..client import ApplianceClient
    from ..state import SessionState

__all__ = ["RANGES", "HistoricalView"]

RANGES: dict[str, int] = {"1 h": 12, "6 h": 72, "24 h": 288}
"""Range choices and their length in 5-minute steps."""

_PROFILE = "profile: "


class HistoricalView:
    """Target (server or profile) and range selectors above the actuals and risk plots."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.target = pn.widgets.Select(label="Server or profile", options=[], width=260)
        self.range = pn.widgets.RadioButtonGroup(
            label="Range", options=list(RANGES), value="6 h", color="primary"
        )
        self.note = pn.pane.HTML("")
        self.plot = HistoryFigures()
        self._loaded: object = None
        self.target.param.watch(lambda _e: on_change(), "value")
        self.range.param.watch(lambda _e: on_change(), "value")
        self.view = pn.Column(
            pn.pane.Markdown("### Historical actuals and risk"),
            pn.Row(self.target, self.range),
            self.note,
            self.plot.view,
            sizing_mode="stretch_width",
        )

    def update_options(self, state: SessionState) -> None:
        """Offer every profile and server of the current forecast set; keep the selection."""
        if state.current is None:
            return
        profiles = sorted({s.profile for s in state.current.servers}, key=profile_order)
        names = sorted(s.server_name for s in state.current.servers)
        options = [_PROFILE + p for p in profiles] + names
        if options != self.target.options:
            keep = self.target.value
            self.target.options = options
            if keep in options:
                self.target.value = keep
            elif state.selected_server in options:
                self.target.value = state.selected_server
            elif names:
                self.target.value = names[0]

    async def load(self, client: ApplianceClient, state: SessionState) -> None:
        """Fetch and draw the chosen target's history (again when a new forecast set arrived)."""
        target = self.target.value
        if not target or state.current is None:
            return
        steps = RANGES[self.range.value]
        key = (target, steps, state.current.prediction_time)
        if key == self._loaded:
            return
        history: ProfileHistory | ServerHistory
        if target.startswith(_PROFILE):  # one request: the appliance computes the means
            history = await client.profile_history(target[len(_PROFILE) :], steps)
            title = f"{history.profile} (mean of {history.servers})"
        else:
            history = await client.history(target, steps)
            title = target
        stamps = history.timestamps
        series = {
            c: [float("nan") if v is None else float(v) for v in getattr(history, c)]
            for c in (*METRIC_COLUMNS, "risk")
            if len(getattr(history, c)) == len(stamps)
        }
        self._loaded = key
        self.note.object = (
            f"<p>{esc(title)}: {len(stamps)} steps, {esc(stamps[0] if stamps else 'none')} → "
            f"{esc(stamps[-1] if stamps else 'none')}</p>"
        )
        self.plot.update(list(stamps), series, history.step_seconds)
