"""The codex's colour scale: green < 0.3, yellow 0.3–0.7, red > 0.7."""

from __future__ import annotations

import math

import pytest

from fleetcast.dashboard.risk import LEVEL_COLOURS, level_colour, risk_level


@pytest.mark.parametrize(
    ("risk", "level"),
    [
        (0.0, "green"),
        (0.2999, "green"),
        (0.3, "yellow"),
        (0.5, "yellow"),
        (0.7, "yellow"),
        (0.7001, "red"),
        (1.0, "red"),
        (None, "unknown"),
        (math.nan, "unknown"),
    ],
)
def test_risk_level_uses_the_codex_thresholds(risk: float | None, level: str) -> None:
    assert risk_level(risk) == level


def test_each_level_has_its_own_colour_and_missing_risk_is_never_green() -> None:
    assert len(set(LEVEL_COLOURS.values())) == 4
    assert level_colour(None) != level_colour(0.0)
    assert level_colour(0.1) == LEVEL_COLOURS["green"]
    assert level_colour(0.9) == LEVEL_COLOURS["red"]


def test_a_served_level_colours_the_badge_of_a_server() -> None:
    """The server ranking and detail badges show the appliance's level (decided before
    rounding); a mean risk, which has no served level, is coloured by its value."""
    from fleetcast.dashboard.views.html import badge

    assert 'data-level="red"' in badge(0.7, "red")
    assert ">0.70 red<" in badge(0.7, "red")
    assert 'data-level="yellow"' in badge(0.7)
    assert 'data-level="unknown"' in badge(None, "red")
