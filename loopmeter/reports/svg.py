"""Small inline SVG charts for the HTML report: no scripts, no fonts or files from elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** len(str(int(v))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * mag:
            return step * mag
    return 10 * mag


def stacked_bars(categories: Sequence[str], series: Mapping[str, Sequence[float]], *,
                 value_fmt: Callable[[float], str], width: int = 760, height: int = 240) -> str:
    """Vertical bars per category, stacked by series, with a legend and a y axis."""
    if not categories:
        return '<p class="empty">no data</p>'
    left, right, top, bottom = 64, 150, 10, 40
    pw, ph = width - left - right, height - top - bottom
    totals = [sum(s[i] for s in series.values()) for i in range(len(categories))]
    ymax = _nice_max(max(totals))
    bw = pw / len(categories)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'class="chart" width="{width}" height="{height}">']
    for k in range(5):
        y = top + ph - ph * k / 4
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(value_fmt(ymax * k / 4))}</text>')
    for i, cat in enumerate(categories):
        x, base = left + i * bw, 0.0
        for j, (name, values) in enumerate(series.items()):
            v = values[i]
            if v <= 0:
                continue
            h = ph * v / ymax
            y = top + ph - ph * (base + v) / ymax
            parts.append(f'<rect x="{x + bw * 0.1:.1f}" y="{y:.1f}" width="{bw * 0.8:.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(cat)} {escape(name)}: '
                         f'{escape(value_fmt(v))}</title></rect>')
            base += v
        every = max(1, len(categories) // 10)
        if i % every == 0:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph + 16}" text-anchor="middle">'
                         f'{escape(cat[5:] if len(cat) == 10 else cat)}</text>')
    for j, name in enumerate(series):
        y = top + 14 + j * 18
        parts.append(f'<rect x="{left + pw + 14}" y="{y - 10}" width="12" height="12" '
                     f'fill="{PALETTE[j % len(PALETTE)]}"/>')
        parts.append(f'<text x="{left + pw + 32}" y="{y}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def hbars(labels: Sequence[str], values: Sequence[float], *, value_fmt: Callable[[float], str],
          width: int = 760) -> str:
    if not labels:
        return '<p class="empty">no data</p>'
    row, left, right = 22, 220, 110
    height = row * len(labels) + 10
    vmax = max(max(values), 1e-12)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" class="chart" '
             f'width="{width}" height="{height}">']
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = 5 + i * row
        w = (width - left - right) * v / vmax
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{escape(label[-32:])}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" fill="{PALETTE[0]}"/>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 14}">{escape(value_fmt(v))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def interval_bars(labels: Sequence[str], rates: Sequence[float], lows: Sequence[float],
                  highs: Sequence[float], width: int = 760) -> str:
    """Pass rate per configuration as a bar with a 95% interval whisker, on a 0-100% axis."""
    if not labels:
        return '<p class="empty">no data</p>'
    row, left, right = 26, 260, 40
    height = row * len(labels) + 30
    pw = width - left - right

    def x(p: float) -> float:
        return left + pw * p

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" class="chart" '
             f'width="{width}" height="{height}">']
    for k in range(5):
        parts.append(f'<line x1="{x(k / 4):.1f}" x2="{x(k / 4):.1f}" y1="0" y2="{height - 20}" class="grid"/>')
        parts.append(f'<text x="{x(k / 4):.1f}" y="{height - 6}" text-anchor="middle">{k * 25}%</text>')
    for i, (label, p, lo, hi) in enumerate(zip(labels, rates, lows, highs, strict=True)):
        y = 4 + i * row
        mid = y + row / 2 - 2
        parts.append(f'<text x="{left - 8}" y="{mid + 4:.1f}" text-anchor="end">{escape(label[-38:])}</text>')
        parts.append(f'<rect x="{left}" y="{y + 4}" width="{pw * p:.1f}" height="{row - 12}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}" opacity="0.75"/>')
        parts.append(f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{mid:.1f}" y2="{mid:.1f}" class="whisker"/>')
        for e in (lo, hi):
            parts.append(f'<line x1="{x(e):.1f}" x2="{x(e):.1f}" y1="{mid - 6:.1f}" y2="{mid + 6:.1f}" class="whisker"/>')
    parts.append("</svg>")
    return "".join(parts)
