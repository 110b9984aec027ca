"""One server's detail: its numbers per horizon and its forecast curves (p10–p90, p50)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import panel as pn

from fleetcast.contract.schema import HORIZONS, METRIC_COLUMNS

from ..shaping import format_risk, server_thresholds
from .figures import ForecastFigures
from .html import STYLES, badge, esc, table

if TYPE_CHECKING:
    from ..api import ServerDetail, ServerForecast, ServerHistory

__all__ = ["ServerDetailView", "forecast_table"]


def _value(values: dict[str, dict[str, float | None]], horizon: str, metric: str) -> str:
    value = values.get(horizon, {}).get(metric)
    return "n/a" if value is None else f"{value:.1f}"


def forecast_table(forecast: ServerForecast) -> str:
    """p10 / p50 / p90 per metric and horizon, as the appliance sent them."""
    rows = []
    for metric in METRIC_COLUMNS:
        for h in HORIZONS:
            rows.append(
                [
                    metric,
                    h,
                    _value(forecast.quantiles.get("p10", {}), h, metric),
                    _value(forecast.predictions, h, metric),
                    _value(forecast.quantiles.get("p90", {}), h, metric),
                ]
            )
    return table(["metric", "horizon", "p10", "p50", "p90"], rows)


class ServerDetailView:
    """Heading, risk per horizon, drivers and the 8 h curves of one server."""

    def __init__(self, title: str = "") -> None:
        self.summary = pn.pane.HTML("", stylesheets=[STYLES], sizing_mode="stretch_width")
        self.plot = ForecastFigures()
        self.plot.view.visible = False
        self._plot_key: tuple[object, object] | None = None
        self.view = pn.Column(self.summary, self.plot.view, sizing_mode="stretch_width")
        self._title = title

    def clear(self, text: str) -> None:
        """Show a placeholder instead of a server."""
        self.summary.object = f"<p>{esc(text)}</p>"
        self.plot.view.visible = False
        self._plot_key = None

    def update(
        self,
        forecast: ServerForecast,
        detail: ServerDetail | None,
        history: ServerHistory | None,
        fallback_thresholds: dict[str, float],
        unavailable: str | None = None,
    ) -> None:
        """Redraw for ``forecast``; the curves need ``detail`` (``/predictions/{name}``).

        ``unavailable``: why the appliance gave no curves for it (shown instead of them).
        """
        by_h = " · ".join(f"{h}: {format_risk(forecast.risk_by_horizon.get(h))}" for h in HORIZONS)
        drivers = ", ".join(
            f"{esc(d.metric)} at {esc(d.horizon)} (p={d.probability:.2f}"
            + ("" if d.threshold is None else f", threshold {d.threshold:g}")
            + ")"
            for d in forecast.drivers
        )
        short = (
            " · <b>short history</b> (forecast from fewer steps than the model's context)"
            if forecast.short_history
            else ""
        )
        self.summary.object = (
            f'<h3 class="fc-server" data-server="{esc(forecast.server_name)}">'
            f"{esc(self._title)}{esc(forecast.server_name)} "
            f"<small>({esc(forecast.profile)})</small> {badge(forecast.risk, forecast.risk_level)}</h3>"
            f"<div>risk by horizon: {by_h}{short}</div>"
            f"<div>drivers: {drivers or 'none'}</div>"
            f"<div>data up to {esc(forecast.data_time)}, forecast at "
            f"{esc(forecast.prediction_time)}</div>"
            f"<details><summary>forecast numbers</summary>{forecast_table(forecast)}</details>"
        )
        if unavailable is not None and detail is None:
            self.summary.object += f'<p class="fc-unavailable">No curves: {esc(unavailable)}</p>'
            self.plot.view.visible = False  # never another server's curves under this name
            self._plot_key = None
            return
        if detail is None or detail.server_name != forecast.server_name:
            return  # curves not fetched yet: keep the summary, hide nothing already shown
        # The bodies themselves, by identity: a new fetch (a new forecast set, even one of
        # the same prediction_time after a model reload) redraws, a refresh without one not.
        key = (detail, history)
        old = self._plot_key
        if old is None or old[0] is not detail or old[1] is not history:
            self._plot_key = key
            self.plot.update(detail, history, server_thresholds(detail, fallback_thresholds))
            self.plot.view.visible = True
