"""Panel 5, Advanced: model identity, appliance health, refresh setting, raw /status."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import panel as pn

from ..api import parse_time
from .html import STYLES, esc, table

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from ..settings import DashboardSettings
    from ..state import SessionState

__all__ = ["AdvancedView"]


def _when(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


class AdvancedView:
    """Facts for an operator debugging the appliance, and this session's refresh rate."""

    def __init__(self, settings: DashboardSettings, on_refresh: Callable[[float], None]) -> None:
        self.settings = settings
        self.refresh = pn.widgets.FloatSlider(
            label="Refresh every (seconds)",
            # the configured rate always on the scale (--refresh-seconds 120 sat past its end)
            start=min(1.0, settings.refresh_seconds),
            end=max(60.0, settings.refresh_seconds),
            step=1,
            value=settings.refresh_seconds,
            width=300,
        )
        self.refresh.param.watch(lambda e: on_refresh(float(e.new)), "value_throttled")
        self.facts = pn.pane.HTML("", stylesheets=[STYLES], sizing_mode="stretch_width")
        self.raw = pn.pane.HTML("", stylesheets=[STYLES], sizing_mode="stretch_width")
        self.view = pn.Column(
            pn.pane.Markdown("### Model and appliance"),
            self.facts,
            self.refresh,
            pn.pane.Markdown("### Raw /status"),
            self.raw,
            sizing_mode="stretch_width",
        )

    def update(self, state: SessionState) -> None:
        """Redraw from ``state``."""
        status = state.status
        # The same time as the header's "last forecast", on the data clock (its
        # prediction_time; data_time, the fleet's step it read, is a step before).
        # /status last_prediction_time is the appliance's wall clock when it ran (hours
        # apart under the demo's fast clock), so it gets its own label.
        forecast = state.prediction_time
        data = parse_time(state.current.data_time) if state.current is not None else None
        computed = parse_time(status.last_prediction_time) if status is not None else None
        rows = [
            ["appliance", self.settings.base_url],
            ["connection", state.connection + (" (data STALE)" if state.stale else "")],
            ["last contact", _when(state.last_contact) if state.last_contact else "never"],
            ["last forecast (on the data clock)", _when(forecast) if forecast else "none yet"],
            ["from data up to (fleet data time)", _when(data) if data else "n/a"],
            [
                "last forecast computed at (appliance wall clock)",
                _when(computed) if computed else "n/a",
            ],
            ["refresh rate", f"every {self.refresh.value:g} s (WebSocket pushes arrive sooner)"],
        ]
        if status is not None:
            rows += [
                ["model version", status.model_version or "n/a"],
                ["bundle id", status.bundle_id or "n/a"],
                ["contract version", status.contract_version or "n/a"],
                ["execution providers", ", ".join(status.providers) or "n/a"],
                [
                    "servers ready / warming / stale / ahead / unknown / known",
                    " / ".join(
                        _num(
                            None if status.servers(k) is None else float(status.servers(k)),
                            "{:.0f}",
                        )
                        for k in ("ready", "warming", "stale", "ahead", "unknown", "known")
                    ),
                ],
                [
                    "inference latency avg / p99 (ms)",
                    f"{_num(status.latency_ms('avg'))} / {_num(status.latency_ms('p99'))}",
                ],
                ["predictions per second", _num(status.predictions_per_second, "{:.1f}")],
                ["error rate", _num(status.error_rate, "{:.3f}")],
                ["uptime (s)", _num(status.uptime_s, "{:.0f}")],
                ["metric source", status.source or "n/a"],
                [
                    "demo",
                    f"enabled, scenario {status.demo_scenario}" if status.demo_enabled else "off",
                ],
            ]
            self.raw.object = f'<pre class="fc-json">{esc(json.dumps(status.raw, indent=2, sort_keys=True))}</pre>'
        self.facts.object = table(["", ""], rows)
