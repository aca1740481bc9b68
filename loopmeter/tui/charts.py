"""A stacked bar chart drawn with block characters.

Used instead of textual-plotext: plotext rebuilds its whole canvas on every paint (a tab
switch, a resize, a hover), which cost hundreds of milliseconds per chart here; this widget
draws once per data change and size, its output is plain Rich text (stable in snapshots),
and it stacks series, which the dashboard's spend-per-day-by-agent chart needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rich.text import Text
from textual.widget import Widget

COLORS = ["cyan", "magenta", "green", "yellow", "bright_blue", "red", "bright_white", "bright_black"]
EIGHTHS = " ▁▂▃▄▅▆▇█"


def render_bars(categories: Sequence[str], series: Mapping[str, Sequence[float]], width: int, height: int,
                value_fmt: Callable[[float], str] = lambda v: f"{v:,.0f}") -> Text:
    """Stacked columns, one per category (the last `n` that fit), a y axis and a legend line."""
    text = Text(no_wrap=True)
    if not categories or height < 3 or width < 20:
        return Text("no data" if not categories else "")
    axis_w = 8
    plot_h = height - 2  # x labels and legend below
    n = min(len(categories), max(1, (width - axis_w) // 2))
    cats = list(categories)[-n:]
    names = list(series)
    cols = [[series[s][len(categories) - n + i] for s in names] for i in range(n)]
    top = max((sum(c) for c in cols), default=0.0) or 1.0
    bar_w = max(1, min(3, (width - axis_w) // n - 1))
    for row in range(plot_h, 0, -1):
        lo = top * (row - 1) / plot_h
        label = value_fmt(top) if row == plot_h else (value_fmt(0) if row == 1 else "")
        text.append(f"{label[:axis_w - 1]:>{axis_w - 1}}│")
        unit = top / plot_h
        for col in cols:
            total = sum(col)
            if total <= lo:
                text.append(" " * bar_w + " ")
                continue
            point = lo + min(unit, total - lo) / 2
            base, style = 0.0, COLORS[0]
            for j, v in enumerate(col):
                if base <= point < base + v:
                    style = COLORS[j % len(COLORS)]
                    break
                base += v
            fill = min(1.0, (total - lo) / unit)
            text.append(EIGHTHS[max(1, int(round(fill * 8)))] * bar_w, style=style)
            text.append(" ")
        text.append("\n")
    step = -(-6 // (bar_w + 1))  # a 5-character label and a space
    labels = [" "] * (n * (bar_w + 1))
    for i in range(0, n, step):
        for k, ch in enumerate(cats[i][-5:]):
            if i * (bar_w + 1) + k < len(labels):
                labels[i * (bar_w + 1) + k] = ch
    text.append(" " * (axis_w - 1) + "└" + "".join(labels)[: width - axis_w] + "\n")
    for j, name in enumerate(names[:8]):
        text.append("■ ", style=COLORS[j % len(COLORS)])
        text.append(f"{name[:18]}  ")
    return text


class BarChart(Widget):
    """Holds the data; draws it for its current size, caching the drawing until either changes."""

    def __init__(self, **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._data: tuple[list[str], dict[str, list[float]], Callable[[float], str]] = ([], {}, str)
        self._cache: tuple[tuple[int, int], Text] | None = None

    def set_data(self, categories: Sequence[str], series: Mapping[str, Sequence[float]],
                 value_fmt: Callable[[float], str] = lambda v: f"{v:,.0f}") -> None:
        self._data = (list(categories), {k: list(v) for k, v in series.items()}, value_fmt)
        self._cache = None
        self.refresh()

    def render(self) -> Text:
        size = (self.content_size.width, self.content_size.height)
        if self._cache is None or self._cache[0] != size:
            cats, series, value_fmt = self._data
            self._cache = (size, render_bars(cats, series, size[0], size[1], value_fmt))
        return self._cache[1]
