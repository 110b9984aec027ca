"""The always-visible header: connection status, time of the last forecast, demo buttons."""

from __future__ import annotations

from typing import TYPE_CHECKING

import panel as pn

from ..client import DEMO_SCENARIOS
from ..state import DISCONNECTED, LIVE, REFUSED
from .html import esc

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..state import SessionState

__all__ = ["Header"]

_CSS = """
:host { width: 100%; }
.fc-header { display: flex; align-items: center; gap: 14px; flex-wrap: wrap;
  font-family: system-ui, sans-serif; padding: 8px 12px; border-radius: 6px; background: #1f2937; color: #fff; }
.fc-title { font-size: 20px; font-weight: 700; }
.fc-conn { font-weight: 700; padding: 2px 10px; border-radius: 12px; }
.fc-conn.ok { background: #2e9e44; }
.fc-conn.wait { background: #9aa0a6; }
.fc-conn.down { background: #d64545; }
.fc-banner { margin-top: 6px; padding: 8px 12px; border-radius: 6px; background: #fff3cd; color: #5c3c00;
  border: 2px solid #d64545; font-family: system-ui, sans-serif; font-weight: 600; }
"""


class Header:
    """Status line, STALE banner and (in demo mode) the Healthy/Degrading/Critical buttons."""

    def __init__(self, on_scenario: Callable[[str], None]) -> None:
        self.status = pn.pane.HTML("", stylesheets=[_CSS], sizing_mode="stretch_width")
        self.banner = pn.pane.HTML("", stylesheets=[_CSS], sizing_mode="stretch_width")
        self.message = pn.pane.HTML("", sizing_mode="stretch_width")
        self.buttons = []
        for scenario, kind in zip(DEMO_SCENARIOS, ("success", "warning", "danger"), strict=True):
            button = pn.widgets.Button(
                label=f"Demo: {scenario.capitalize()}", color=kind, width=150
            )
            button.on_click(lambda _event, s=scenario: on_scenario(s))
            self.buttons.append(button)
        self.demo = pn.Row(
            pn.pane.HTML("<b>Demo scenario</b>", margin=(12, 5)), *self.buttons, visible=False
        )
        self.view = pn.Column(
            self.status, self.banner, pn.Row(self.demo, self.message), sizing_mode="stretch_width"
        )

    def update(self, state: SessionState) -> None:
        """Redraw from ``state`` (cheap: a few strings)."""
        cls = {LIVE: "ok", DISCONNECTED: "down", REFUSED: "down"}.get(state.connection, "ok")
        if state.connection == "connecting":
            cls = "wait"
        forecast = state.prediction_time
        when = forecast.strftime("%Y-%m-%d %H:%M:%S UTC") if forecast else "none yet"
        scenario = ""
        if state.status is not None and state.status.demo_enabled:
            scenario = f" · demo scenario: <b>{esc(state.status.demo_scenario)}</b>"
        self.status.object = (
            f'<div class="fc-header"><span class="fc-title">fleetcast</span>'
            f'<span class="fc-conn {cls}" data-connection="{esc(state.connection)}">'
            f"{esc(state.connection)}</span>"
            f'<span class="fc-last">last forecast: <b>{esc(when)}</b></span>{scenario}</div>'
        )
        if state.connection in (DISCONNECTED, REFUSED):
            refused = state.connection == REFUSED
            what = "refuses the dashboard's requests" if refused else "is unreachable"
            if state.stale:
                since = state.disconnected_since or state.last_contact
                text = (
                    f"STALE DATA — the appliance {what}"
                    + (f" since {since:%H:%M:%S} UTC" if since else "")
                    + f". Everything below is the last forecast it sent ({esc(when)}); "
                    + "nothing is updating until it "
                    + ("accepts them again." if refused else "answers again.")
                )
            else:
                text = f"The appliance {what} and has sent no forecast yet."
            detail = f"<div style='font-weight:400;font-size:12px'>{esc(state.last_error)}</div>"
            self.banner.object = f'<div class="fc-banner">{text}{detail}</div>'
            self.banner.visible = True
        else:
            self.banner.object = ""
            self.banner.visible = False
        self.demo.visible = bool(state.status is not None and state.status.demo_enabled)

    def show_message(self, text: str, error: bool = False) -> None:
        """A one-line note beside the demo buttons (e.g. the appliance refused a scenario)."""
        colour = "#d64545" if error else "#1f2937"
        self.message.object = f"<div style='color:{colour};margin:12px'>{esc(text)}</div>"
