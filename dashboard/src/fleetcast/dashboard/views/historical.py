"""Panel 4, Historical: actuals and past risk over a chosen range, for a server or a profile."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import panel as pn

from fleetcast.contract.schema import METRIC_COLUMNS

from ..api import parse_time
from ..shaping import profile_order
from .figures import HistoryFigures
from .html import esc

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..api import ServerHistory
    from ..client import ApplianceClient
    from ..state import SessionState

__all__ = ["RANGES", "HistoricalView", "profile_mean"]

RANGES: dict[str, int] = {"1 h": 12, "6 h": 72, "24 h": 288}
"""Range choices and their length in 5-minute steps."""

_PROFILE = "profile: "


def profile_mean(histories: list[ServerHistory]) -> tuple[list[str], dict[str, list[float]]]:
    """Mean of each metric and of risk over servers, per timestamp (steps without data skipped).

    Returns the sorted timestamps and ``{column: [mean per timestamp]}`` (NaN where no server
    had a value). This averages the appliance's actuals; it forecasts nothing.
    """
    columns = (*METRIC_COLUMNS, "risk")
    sums: dict[str, dict[str, float]] = {c: {} for c in columns}
    counts: dict[str, dict[str, int]] = {c: {} for c in columns}
    stamps: set[str] = set()
    for history in histories:
        for column in columns:
            for ts, value in zip(history.timestamps, getattr(history, column), strict=False):
                stamps.add(ts)
                if value is None:
                    continue
                sums[column][ts] = sums[column].get(ts, 0.0) + float(value)
                counts[column][ts] = counts[column].get(ts, 0) + 1
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    ordered = sorted(stamps, key=lambda t: (parse_time(t) or epoch, t))
    series = {
        c: [sums[c][ts] / counts[c][ts] if counts[c].get(ts) else float("nan") for ts in ordered]
        for c in columns
    }
    return ordered, series


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
        if target.startswith(_PROFILE):
            profile = target[len(_PROFILE) :]
            names = [s.server_name for s in state.current.servers if s.profile == profile]
            histories = await asyncio.gather(*(client.history(n, steps) for n in names))
            stamps, series = profile_mean(list(histories))
            title = f"{profile} (mean of {len(names)})"
        else:
            history = await client.history(target, steps)
            stamps = history.timestamps
            series = {
                c: [float("nan") if v is None else float(v) for v in getattr(history, c)]
                for c in (*METRIC_COLUMNS, "risk")
                if len(getattr(history, c)) == len(stamps)
            }
            title = target
        self._loaded = key
        self.note.object = (
            f"<p>{esc(title)}: {len(stamps)} steps, {esc(stamps[0] if stamps else 'none')} → "
            f"{esc(stamps[-1] if stamps else 'none')}</p>"
        )
        self.plot.update(list(stamps), series)
