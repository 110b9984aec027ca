"""Small HTML builders shared by the panels (escaped: every string may come from the network)."""

from __future__ import annotations

from html import escape
from typing import Any

from ..risk import LEVEL_COLOURS, LEVEL_TEXT_COLOURS, risk_level, server_level
from ..shaping import format_risk

__all__ = ["STYLES", "badge", "cards", "esc", "table"]

STYLES = """
:host { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.fc-cards { display: flex; flex-wrap: wrap; gap: 10px; }
.fc-card { min-width: 120px; padding: 10px 14px; border-radius: 6px; background: #f4f5f7; }
.fc-card .fc-value { font-size: 28px; font-weight: 700; }
.fc-card .fc-label { font-size: 12px; color: inherit; opacity: 0.85; }
table.fc-table { border-collapse: collapse; font-size: 13px; }
table.fc-table th, table.fc-table td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: left; }
.fc-badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; }
.fc-stale-tag { display: inline-block; padding: 2px 8px; margin: 4px 0; background: #6b6b6b; color: #fff;
  font-weight: 700; border-radius: 4px; }
pre.fc-json { font-size: 12px; background: #f6f8fa; padding: 8px; max-height: 420px; overflow: auto; }
"""


def esc(value: Any) -> str:
    """HTML-escape any value (``None`` → ``"n/a"``)."""
    return "n/a" if value is None else escape(str(value))


def badge(risk: float | None, served: str | None = None) -> str:
    """A risk coloured by the codex's scale, e.g. ``<span …>0.42 yellow</span>``; ``served``:
    the level the appliance decided for a server (:func:`~fleetcast.dashboard.risk.server_level`)."""
    level = server_level(risk, served) if served is not None else risk_level(risk)
    return (
        f'<span class="fc-badge" data-level="{level}" data-risk="{"" if risk is None else risk}" style="background:{LEVEL_COLOURS[level]};'
        f'color:{LEVEL_TEXT_COLOURS[level]}">{format_risk(risk, level)} {level}</span>'
    )


def cards(items: list[tuple[str, str, str | None]]) -> str:
    """Big-number cards: ``(label, value, level or None)``; a level colours the card."""
    parts = []
    for label, value, level in items:
        style = ""
        attr = ""
        if level is not None:
            style = f' style="background:{LEVEL_COLOURS[level]};color:{LEVEL_TEXT_COLOURS[level]}"'
            attr = f' data-level="{level}"'
        parts.append(
            f'<div class="fc-card"{attr}{style}><div class="fc-value">{esc(value)}</div>'
            f'<div class="fc-label">{esc(label)}</div></div>'
        )
    return f'<div class="fc-cards">{"".join(parts)}</div>'


def table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are trusted HTML)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else esc(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="fc-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
