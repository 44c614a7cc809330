"""Inline SVG charts for the HTML report, drawn here (no library, no script): pass-rate
bars with their 95% interval, and box plots with every sample as a dot."""

from __future__ import annotations

import math
from html import escape

from ocak.evals.results import percentile

PALETTE = ("#3b6fd8", "#d8743b", "#3ba86b", "#a43bd8", "#d83b6a", "#6b7f2a", "#2ab3c4")
LABEL_W, ROW_H, PLOT_W, PAD = 220, 30, 520, 12


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _label(text: str, y: float) -> str:
    shown = text if len(text) <= 32 else text[:31] + "…"
    return (
        f'<text x="{LABEL_W - 8}" y="{y:.1f}" text-anchor="end" dominant-baseline="middle">'
        f"<title>{escape(text)}</title>{escape(shown)}</text>"
    )


def _frame(height: float, body: list[str], title: str) -> str:
    width = LABEL_W + PLOT_W + 2 * PAD
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" '
        f'viewBox="0 0 {width} {height:.0f}" width="{width}" height="{height:.0f}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _axis(top: float, bottom: float, ticks: list[tuple[float, str]]) -> list[str]:
    out = []
    for x, text in ticks:
        px = LABEL_W + x * PLOT_W
        out.append(
            f'<line x1="{px:.1f}" y1="{top:.1f}" x2="{px:.1f}" y2="{bottom:.1f}" class="grid"/>'
            f'<text x="{px:.1f}" y="{bottom + 14:.1f}" text-anchor="middle" class="tick">'
            f"{escape(text)}</text>"
        )
    return out


def pass_rate_bars(rows: list[tuple[str, float, float, float]], title: str) -> str:
    """One bar per (label, rate, low, high), the interval drawn as a whisker."""
    body = _axis(PAD, PAD + ROW_H * len(rows), [(i / 4, f"{i * 25}%") for i in range(5)])
    for i, (label, rate, low, high) in enumerate(rows):
        y = PAD + i * ROW_H
        mid = y + ROW_H / 2
        body.append(_label(label, mid))
        body.append(
            f'<rect x="{LABEL_W}" y="{y + 6:.1f}" width="{rate * PLOT_W:.1f}" '
            f'height="{ROW_H - 12}" fill="{colour(i)}" opacity="0.8">'
            f"<title>{escape(label)}: {rate * 100:.1f}% "
            f"(95% interval {low * 100:.0f}–{high * 100:.0f}%)</title></rect>"
        )
        x1, x2 = LABEL_W + low * PLOT_W, LABEL_W + high * PLOT_W
        body.append(
            f'<line x1="{x1:.1f}" y1="{mid:.1f}" x2="{x2:.1f}" y2="{mid:.1f}" class="whisker"/>'
            f'<line x1="{x1:.1f}" y1="{mid - 6:.1f}" x2="{x1:.1f}" y2="{mid + 6:.1f}" '
            f'class="whisker"/><line x1="{x2:.1f}" y1="{mid - 6:.1f}" x2="{x2:.1f}" '
            f'y2="{mid + 6:.1f}" class="whisker"/>'
        )
    return _frame(2 * PAD + ROW_H * len(rows) + 16, body, title)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(value))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * m:
            return step * m
    return value


def box_strip(groups: list[tuple[str, list[float]]], unit: str, title: str) -> str:
    """A box plot (quartiles, median, p10–p90 whiskers) per group, each value a dot."""
    top_value = _nice_max(max((max(v) for _, v in groups if v), default=1.0))
    rows = len(groups)
    row_h = ROW_H + 10
    ticks = [(i / 4, f"{top_value * i / 4:g} {unit}") for i in range(5)]
    body = _axis(PAD, PAD + row_h * rows, ticks)

    def px(v: float) -> float:
        return LABEL_W + (v / top_value) * PLOT_W

    for i, (label, values) in enumerate(groups):
        y = PAD + i * row_h
        mid = y + row_h / 2
        body.append(_label(label, mid))
        if not values:
            body.append(f'<text x="{LABEL_W + 4}" y="{mid:.1f}" class="tick">no data</text>')
            continue
        q: dict[float, float] = {
            k: percentile(values, k) or 0.0 for k in (0.1, 0.25, 0.5, 0.75, 0.9)
        }
        c = colour(i)
        body.append(
            f'<line x1="{px(q[0.1]):.1f}" y1="{mid:.1f}" x2="{px(q[0.9]):.1f}" y2="{mid:.1f}" '
            f'stroke="{c}"/><rect x="{px(q[0.25]):.1f}" y="{y + 8:.1f}" '
            f'width="{max(1.0, px(q[0.75]) - px(q[0.25])):.1f}" height="{row_h - 16}" '
            f'fill="{c}" fill-opacity="0.2" stroke="{c}"><title>{escape(label)}: p50 '
            f"{q[0.5]:.1f} {escape(unit)}, p25–p75 {q[0.25]:.1f}–{q[0.75]:.1f}, "
            f"p10–p90 {q[0.1]:.1f}–{q[0.9]:.1f}</title></rect>"
            f'<line x1="{px(q[0.5]):.1f}" y1="{y + 6:.1f}" x2="{px(q[0.5]):.1f}" '
            f'y2="{y + row_h - 6:.1f}" stroke="{c}" stroke-width="2.5"/>'
        )
        for j, v in enumerate(values):
            jitter = ((j * 7919) % 13 - 6) / 6 * (row_h / 2 - 8)
            body.append(
                f'<circle cx="{px(v):.1f}" cy="{mid + jitter:.1f}" r="2.5" fill="{c}" '
                f'fill-opacity="0.7"><title>{v:.1f} {escape(unit)}</title></circle>'
            )
    return _frame(2 * PAD + row_h * rows + 16, body, title)
