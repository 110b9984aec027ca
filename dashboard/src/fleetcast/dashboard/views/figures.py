"""Bokeh figures built once per session and updated in place (only their data changes).

Re-rendering whole plots on every forecast set is too slow for a small box, so each figure
keeps its ``ColumnDataSource`` and a refresh only swaps the numbers: zoom and pan survive,
and nothing flickers. Every number plotted comes from the appliance.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import panel as pn
from bokeh.layouts import gridplot
from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Legend, Span
from bokeh.plotting import figure

from fleetcast.contract.schema import METRIC_COLUMNS, METRIC_UNITS

from ..api import parse_time
from ..risk import GREEN_BELOW, LEVEL_COLOURS, RED_ABOVE
from ..shaping import break_gaps, curve_frame, profile_order

if TYPE_CHECKING:
    from ..api import FleetHistory, FleetSummary, ServerDetail, ServerHistory

__all__ = ["FleetTrendFigure", "ForecastFigures", "HistoryFigures", "ProfileBarsFigure"]

_LEVELS = ("green", "yellow", "red")
_TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
_NOW = "#777777"


def to_naive(values: list[Any]) -> list[datetime | None]:
    """ISO strings or aware datetimes → naive UTC datetimes (Bokeh's datetime axis)."""
    out: list[datetime | None] = []
    for v in values:
        ts = v if isinstance(v, datetime) else parse_time(v)
        out.append(None if ts is None else ts.replace(tzinfo=None))
    return out


def nan_list(values: list[Any], n: int) -> list[float]:
    """``values`` as floats, ``None`` → NaN (a gap), padded/cut to ``n``."""
    out = [math.nan if v is None else float(v) for v in values[:n]]
    return out + [math.nan] * (n - len(out))


def _figure(title: str, height: int, width: int | None = None, **kwargs: Any) -> Any:
    opts: dict[str, Any] = {"height": height, "tools": _TOOLS, "toolbar_location": "right"}
    if width is None:
        opts["sizing_mode"] = "stretch_width"
    else:
        opts["width"] = width
    fig = figure(title=title, x_axis_type="datetime", **opts, **kwargs)
    fig.title.text_font_size = "12px"
    # Times are drawn as naive UTC (``to_naive``): say so, or a reader takes them as local.
    fig.xaxis.axis_label = "UTC"
    fig.xaxis.axis_label_text_font_size = "10px"
    fig.xaxis.axis_label_standoff = 2
    return fig


def _risk_spans(fig: Any) -> None:
    for y, level in ((GREEN_BELOW, "yellow"), (RED_ABOVE, "red")):
        fig.add_layout(
            Span(location=y, dimension="width", line_color=LEVEL_COLOURS[level], line_dash="dashed")
        )


class ForecastFigures:
    """Four small plots (one per metric): p10–p90 band, p50, actuals, threshold, "now"."""

    def __init__(self, width: int = 430) -> None:
        self.bands: dict[str, ColumnDataSource] = {}
        self.actuals: dict[str, ColumnDataSource] = {}
        self.limits: dict[str, ColumnDataSource] = {}
        self.now: dict[str, Span] = {}
        figs = []
        for i, metric in enumerate(METRIC_COLUMNS):
            band = ColumnDataSource({"time": [], "p10": [], "p50": [], "p90": []})
            actual = ColumnDataSource({"time": [], "value": []})
            limit = ColumnDataSource({"time": [], "value": []})
            fig = _figure(f"{metric} ({METRIC_UNITS[metric]})", 210, width)
            area = fig.varea(
                "time", "p10", "p90", source=band, fill_color="#8fb3ff", fill_alpha=0.5
            )
            p50 = fig.line("time", "p50", source=band, color="#1a4fd6", line_width=2)
            act = fig.line("time", "value", source=actual, color="#222222", line_width=1.5)
            lim = fig.line(
                "time",
                "value",
                source=limit,
                color=LEVEL_COLOURS["red"],
                line_dash="dashed",
                line_width=1.5,
            )
            now = Span(
                location=0, dimension="height", line_color=_NOW, line_dash="dotted", visible=False
            )
            fig.add_layout(now)
            fig.add_tools(
                HoverTool(
                    renderers=[p50],
                    mode="vline",
                    tooltips=[
                        ("time (UTC)", "@time{%F %H:%M}"),
                        ("p10", "@p10{0.0}"),
                        ("p50", "@p50{0.0}"),
                        ("p90", "@p90{0.0}"),
                    ],
                    formatters={"@time": "datetime"},
                )
            )
            if i == 0:
                legend = Legend(
                    items=[
                        ("p10–p90", [area]),
                        ("p50", [p50]),
                        ("actual", [act]),
                        ("threshold", [lim]),
                    ],
                    location="top_left",
                )
                legend.label_text_font_size = "10px"
                fig.add_layout(legend)
            self.bands[metric], self.actuals[metric], self.limits[metric] = band, actual, limit
            self.now[metric] = now
            figs.append(fig)
        grid = gridplot([figs[:2], figs[2:]], toolbar_location="right", merge_tools=True)
        # A Column, not the Bokeh pane itself: the pane ties ``visible`` to the Bokeh model.
        self.view = pn.Column(pn.pane.Bokeh(grid))

    def update(
        self, detail: ServerDetail, history: ServerHistory | None, thresholds: dict[str, float]
    ) -> None:
        """Swap in one server's curves (96 steps), actuals and thresholds."""
        frames = curve_frame(detail)
        data_time = parse_time(detail.data_time)
        for metric in METRIC_COLUMNS:
            frame = frames.get(metric)
            if frame is None:
                self.bands[metric].data = {"time": [], "p10": [], "p50": [], "p90": []}
                times: list[datetime | None] = []
            else:
                times = to_naive(frame["time"])
                self.bands[metric].data = {
                    "time": times,
                    "p10": frame["p10"],
                    "p50": frame["p50"],
                    "p90": frame["p90"],
                }
            if history is not None and getattr(history, metric, None):
                n = len(history.timestamps)
                actual_times, actual = break_gaps(
                    to_naive(history.timestamps),
                    {"value": nan_list(getattr(history, metric), n)},
                    history.step_seconds,
                )
                self.actuals[metric].data = {"time": actual_times, "value": actual["value"]}
            else:
                self.actuals[metric].data = {"time": [], "value": []}
            limit = thresholds.get(metric)
            start = self.actuals[metric].data["time"][:1] or times[:1]
            if limit is not None and times and start:
                self.limits[metric].data = {"time": [start[0], times[-1]], "value": [limit, limit]}
            else:
                self.limits[metric].data = {"time": [], "value": []}
            # Without a data time, no "now" line: the previous server's would be wrong here.
            if data_time is not None:
                self.now[metric].location = data_time.timestamp() * 1000.0
            self.now[metric].visible = data_time is not None


class FleetTrendFigure:
    """Mean fleet risk (with the 0.3/0.7 lines) and the servers per level, over time.

    Time without data stays empty: the line breaks at a NaN row (``break_gaps``) and the
    levels are stacked bars, one step wide, drawn only at steps with counts. (A Bokeh
    ``varea`` is one polygon and would join the points on both sides of a gap.)
    """

    def __init__(self) -> None:
        self.source = ColumnDataSource(
            {"time": [], "width": [], "mean_risk": [], **{k: [] for k in _LEVELS}}
        )
        risk = _figure("Fleet mean risk", 200, y_range=(0, 1))
        risk.line("time", "mean_risk", source=self.source, color="#1a4fd6", line_width=2)
        _risk_spans(risk)
        counts = _figure("Servers per risk level", 200, x_range=risk.x_range)
        counts.vbar_stack(
            list(_LEVELS),
            x="time",
            width="width",
            source=self.source,
            color=[LEVEL_COLOURS[k] for k in _LEVELS],
            line_color=None,
            legend_label=list(_LEVELS),
        )
        counts.legend.location = "top_left"
        counts.legend.label_text_font_size = "10px"
        self.view = pn.Column(
            pn.pane.Bokeh(risk), pn.pane.Bokeh(counts), sizing_mode="stretch_width"
        )

    def update(self, history: FleetHistory, step_seconds: float | None = None) -> None:
        """Swap in ``/fleet/history``; ``step_seconds`` (from ``/status``) wins over the body's."""
        n = len(history.timestamps)
        step = float(step_seconds or history.step_seconds or 300)
        times, columns = break_gaps(
            to_naive(history.timestamps),
            {
                "mean_risk": nan_list(history.mean_risk, n),
                **{k: nan_list(getattr(history, k), n) for k in _LEVELS},
            },
            step,
        )
        # A None count is a step without data: no bar, never a zero-height "all green" one.
        self.source.data = {"time": times, "width": [step * 1000.0] * len(times), **columns}


class ProfileBarsFigure:
    """Stacked bars: green/yellow/red servers per profile."""

    def __init__(self) -> None:
        self.source = ColumnDataSource({"profile": [], **{k: [] for k in _LEVELS}})
        self.fig = figure(
            title="Servers per profile and risk level",
            height=250,
            sizing_mode="stretch_width",
            y_range=FactorRange(),
            tools="save",
            toolbar_location=None,
        )
        self.fig.hbar_stack(
            list(_LEVELS),
            y="profile",
            height=0.7,
            source=self.source,
            color=[LEVEL_COLOURS[k] for k in _LEVELS],
            line_color=None,
            legend_label=list(_LEVELS),
        )
        self.fig.legend.location = "bottom_right"
        self.fig.legend.label_text_font_size = "10px"
        self.view = pn.pane.Bokeh(self.fig)

    def update(self, fleet: FleetSummary) -> None:
        """Swap in the fleet summary's ``by_profile``."""
        profiles = sorted(fleet.by_profile, key=profile_order, reverse=True)
        if list(self.fig.y_range.factors) != profiles:
            self.fig.y_range.factors = profiles
        self.source.data = {
            "profile": profiles,
            **{k: [getattr(fleet.by_profile[p], k) for p in profiles] for k in _LEVELS},
        }


class HistoryFigures:
    """Actuals per metric and the past risk, one small plot each, sharing the time axis."""

    COLUMNS: tuple[str, ...] = (*METRIC_COLUMNS, "risk")

    def __init__(self) -> None:
        self.source = ColumnDataSource({"time": [], **{c: [] for c in self.COLUMNS}})
        figs = []
        for column in self.COLUMNS:
            unit = METRIC_UNITS.get(column, "0..1")
            kwargs = {"x_range": figs[0].x_range} if figs else {}
            if column == "risk":
                kwargs["y_range"] = (0, 1)
            fig = _figure(f"{column} ({unit})", 200, 430, **kwargs)
            colour = LEVEL_COLOURS["red"] if column == "risk" else "#1a4fd6"
            line = fig.line("time", column, source=self.source, color=colour, line_width=1.5)
            fig.add_tools(
                HoverTool(
                    renderers=[line],
                    mode="vline",
                    tooltips=[("time (UTC)", "@time{%F %H:%M}"), (column, f"@{column}{{0.00}}")],
                    formatters={"@time": "datetime"},
                )
            )
            if column == "risk":
                _risk_spans(fig)
            figs.append(fig)
        rows = [figs[i : i + 2] for i in range(0, len(figs), 2)]
        self.view = pn.pane.Bokeh(gridplot(rows, toolbar_location="right", merge_tools=True))

    def update(
        self, timestamps: list[str], series: dict[str, list[float]], step_seconds: float = 300
    ) -> None:
        """Swap in one target's history: ``series[column]`` has one value per timestamp.

        Lines break where the timestamps skip more than 1.5 steps (``break_gaps``).
        """
        n = len(timestamps)
        times, columns = break_gaps(
            to_naive(timestamps),
            {c: nan_list(series.get(c, []), n) for c in self.COLUMNS},
            step_seconds,
        )
        self.source.data = {"time": times, **columns}
