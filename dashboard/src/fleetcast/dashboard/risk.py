"""The codex's risk colour scale: green < 0.3, yellow 0.3–0.7, red > 0.7.

Pure functions, no Panel: the heatmap, the tables and the tests share them. A risk is the
appliance's probability (0..1) that a server crosses a threshold within 8 h; the dashboard
never computes one, it only colours what the appliance sent.
"""

from __future__ import annotations

import math

__all__ = [
    "GREEN_BELOW",
    "LEVELS",
    "LEVEL_COLOURS",
    "LEVEL_TEXT_COLOURS",
    "RED_ABOVE",
    "UNKNOWN",
    "level_colour",
    "risk_level",
    "server_level",
]

GREEN_BELOW = 0.3
"""A risk strictly below this is green (codex "Color Coding")."""

RED_ABOVE = 0.7
"""A risk strictly above this is red; 0.3 <= risk <= 0.7 is yellow."""

LEVELS: tuple[str, ...] = ("green", "yellow", "red")
"""The three levels, calmest first."""

UNKNOWN = "unknown"
"""Level of a server without a forecast (warming up, or a risk the appliance did not send)."""

LEVEL_COLOURS: dict[str, str] = {
    "green": "#2e9e44",
    "yellow": "#f2c12e",
    "red": "#d64545",
    UNKNOWN: "#9aa0a6",
}
"""Background colour of each level (hex, used by the heatmap and the badges)."""

LEVEL_TEXT_COLOURS: dict[str, str] = {
    "green": "#ffffff",
    "yellow": "#1f1f1f",
    "red": "#ffffff",
    UNKNOWN: "#1f1f1f",
}
"""Text colour that stays readable on each level's background."""


def risk_level(risk: float | None) -> str:
    """Map a risk in [0, 1] to ``"green"``, ``"yellow"``, ``"red"`` or ``"unknown"``.

    ``None`` and NaN (no forecast) give ``"unknown"``: a missing risk is never shown as healthy.
    The boundaries are the codex's: 0.3 and 0.7 themselves are yellow.
    """
    if risk is None:
        return UNKNOWN
    value = float(risk)
    if math.isnan(value):
        return UNKNOWN
    if value < GREEN_BELOW:
        return "green"
    if value > RED_ABOVE:
        return "red"
    return "yellow"


def level_colour(risk: float | None) -> str:
    """The hex background colour for a risk (see :func:`risk_level`)."""
    return LEVEL_COLOURS[risk_level(risk)]


def server_level(risk: float | None, served: str | None) -> str:
    """A server's level: the one the appliance decided (``risk_level``) when it sent one,
    else :func:`risk_level` of its risk.

    The appliance decides on the unrounded probability and sends the risk rounded to 4
    decimals, so a risk shown as 0.7 may be red (0.70003): recomputing from the rounded
    value would disagree with the appliance's fleet counts and alerts. A server without a
    risk stays ``"unknown"`` whatever level came with it.
    """
    if risk is None or math.isnan(float(risk)):
        return UNKNOWN
    return served if served in LEVELS else risk_level(risk)
