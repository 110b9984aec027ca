"""A grouped bar chart on a log axis, written as plain SVG (no plotting library needed)."""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["PALETTE", "grouped_bars"]

PALETTE = ("#1b6ca8", "#e07b39", "#6aa84f", "#a64d79", "#7f7f7f", "#c9a227")


def _nice_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi]."""
    first = math.floor(math.log10(lo))
    last = math.ceil(math.log10(hi))
    return [10.0**k for k in range(first, last + 1)]


def _fmt(v: float) -> str:
    if v >= 1:
        return f"{v:g}"
    return f"{v:.0e}".replace("e-0", "e-")


def grouped_bars(
    title: str,
    groups: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    unit: str,
    reference: tuple[float, str] | None = None,
    width: int = 760,
    height: int = 380,
) -> str:
    """SVG text: one group of bars per ``groups`` item, one bar per series (None = absent).

    Values must be positive (log axis). ``reference``: a horizontal dashed line (value, label),
    e.g. a target.
    """
    values = [v for vs in series.values() for v in vs if v is not None and v > 0]
    if reference is not None:
        values.append(reference[0])
    if not values:
        raise ValueError("Expected at least one positive value to plot, but got none.")
    ticks = _nice_ticks(min(values), max(values))
    lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])
    if hi == lo:
        hi = lo + 1
    left, right, top, bottom = 70, 20, 40, 70
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(v: float) -> float:
        return top + plot_h * (1 - (math.log10(v) - lo) / (hi - lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
    ]
    for t in ticks:
        ty = y(t)
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(
        f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
        f'text-anchor="middle">{escape(unit)} (log scale)</text>'
    )
    n_series = max(len(series), 1)
    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.8 / n_series
    for gi, group in enumerate(groups):
        gx = left + gi * group_w
        out.append(
            f'<text x="{gx + group_w / 2:.1f}" y="{top + plot_h + 18}" '
            f'text-anchor="middle">{escape(group)}</text>'
        )
        for si, (_name, vs) in enumerate(series.items()):
            v = vs[gi] if gi < len(vs) else None
            if v is None or v <= 0:
                continue
            bx = gx + group_w * 0.1 + si * bar_w
            by = y(v)
            out.append(
                f'<rect x="{bx:.1f}" y="{by:.1f}" width="{bar_w * 0.92:.1f}" '
                f'height="{top + plot_h - by:.1f}" fill="{PALETTE[si % len(PALETTE)]}">'
                f"<title>{escape(_name)} {escape(group)}: {v:.4g} {escape(unit)}</title></rect>"
            )
    if reference is not None:
        ry = y(reference[0])
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{ry:.1f}" y2="{ry:.1f}" '
            'stroke="#c00" stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<text x="{width - right - 4}" y="{ry - 5:.1f}" text-anchor="end" fill="#c00">'
            f"{escape(reference[1])}</text>"
        )
    lx = left
    ly = height - 22
    for si, name in enumerate(series):
        out.append(
            f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" '
            f'fill="{PALETTE[si % len(PALETTE)]}"/>'
        )
        out.append(f'<text x="{lx + 16}" y="{ly}">{escape(name)}</text>')
        lx += 24 + 7 * len(name)
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#333"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
