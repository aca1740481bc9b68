"""Usage: spend and tokens by source, agent, model, provider, project or user — sortable, filterable."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Select, Static

from loopmeter.analytics.filters import DIMENSIONS
from loopmeter.analytics.periods import PERIODS
from loopmeter.reports import fmt
from loopmeter.tui.base import DataTab
from loopmeter.tui.charts import BarChart

COLUMNS = [("value", None), ("calls", "calls"), ("cost", "cost"), ("unpriced", "unpriced"), ("input", "input"),
           ("cache rd", "cache_read"), ("output", "output"), ("hit", "cache_hit_ratio"), ("share", "share")]


class UsageTab(DataTab):
    BINDINGS = [Binding("g", "next_dimension", "group by"), Binding("s", "next_sort", "sort"),
                Binding("slash", "search", "search", key_display="/")]

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.dimension = "source"
        self.sort_key = "cost"
        self.search = ""
        self._frame: Any = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="usage-controls"):
            yield Select([(d, d) for d in ("source", "agent", "model", "provider", "project", "user")]
                         + [(p, p) for p in PERIODS], value="source", allow_blank=False, id="usage-dim")
            yield Input(placeholder="/ filter rows", id="usage-search")
        yield Static("", id="usage-total")
        table: DataTable[str] = DataTable(id="usage-table", cursor_type="row", zebra_stripes=True)
        yield table
        chart = BarChart(id="usage-chart")
        chart.border_title = "Cost per day"
        yield chart

    def fetch(self, filters: Any) -> Any:
        data = self.lm.data(filters)
        if self.dimension in PERIODS:
            from loopmeter.analytics.periods import usage_periods

            result = self.base_result(data, filters)
            result["periods"] = (self.dimension, usage_periods(self.lm.store, filters, PERIODS[self.dimension],
                                                               now=self.lm._clock()))
            return result
        return self.computed(data, filters, self.dimension, self.sort_key, self.search)

    @staticmethod
    def base_result(data: Any, filters: Any) -> dict[str, Any]:
        from loopmeter.analytics import spend

        return {"cube": data.cube, "summary": spend.summary(data.cube), "tz": filters.tz}

    @staticmethod
    def computed(data: Any, filters: Any, dim: str = "source", sort_key: str = "cost",
                 search: str = "") -> dict[str, Any]:
        """The tab's result for one grouping, kept with the loaded data: the app computes the default
        one right after the first screen, so a first visit finds it ready (worker threads only)."""
        key = ("usage-tab", dim, sort_key, search)
        found = data.extra.get(key)
        if found is None:
            found = UsageTab.base_result(data, filters)
            found["view"] = UsageTab._view(found, dim, sort_key, search)
            data.extra[key] = found
        return dict(found)

    def show(self, result: dict[str, Any]) -> None:
        self._result = result
        if self.dimension in PERIODS:
            self._show_periods(result)
            return
        view = result.get("view")
        if view is None or view[0] != (self.dimension, self.sort_key, self.search):
            view = result["view"] = self._view(result, self.dimension, self.sort_key, self.search)
        s = result["summary"]
        self.query_one("#usage-total", Static).update(
            f"{fmt.money(s['cost_usd'], s['unpriced_calls'])}  ·  "
            f"{s['calls']:,} calls  ·  cache hit {fmt.pct(s['cache_hit_ratio'])}  ·  grouped by "
            f"[b]{self.dimension}[/], sorted by [b]{self.sort_key}[/]")
        _key, frame, cells, chart = view
        self._frame = frame
        table = self.query_one("#usage-table", DataTable)
        table.clear(columns=True)
        table.add_columns(self.dimension, *[label for label, _ in COLUMNS[1:]])
        table.add_rows(cells)
        widget = self.query_one("#usage-chart", BarChart)
        widget.border_title = f"Cost per day by {self.dimension} (top 5, rest as other)"
        cats, series = chart
        widget.set_data(cats, series, lambda v: fmt.money(v))

    def _show_periods(self, result: dict[str, Any]) -> None:
        got = result.get("periods")
        if got is None or got[0] != self.dimension:
            self.reload()  # periods come from `loopmeter usage`'s own queries, in the worker
            return
        data = got[1]
        ignored = f"  ·  [b]not applied here:[/] {', '.join(data['ignored'])}" if data["ignored"] else ""
        self.query_one("#usage-total", Static).update(
            f"{self.dimension} from `loopmeter usage` ({len(data['rows'])} rows){ignored}")
        table = self.query_one("#usage-table", DataTable)
        table.clear(columns=True)
        table.add_columns("period", "calls", "cost", "unpriced", "input", "cache rd", "output", "hit")
        table.add_rows([(str(r["label"])[-28:], fmt.num(r["calls"]),
                         fmt.money(r["cost_usd"], r["unpriced_calls"], note=False),
                         fmt.num(r["unpriced_calls"]), fmt.tokens(r["input_tokens"]),
                         fmt.tokens(r["cache_read_tokens"]), fmt.tokens(r["output_tokens"]),
                         fmt.pct(r["cache_hit_ratio"])) for r in reversed(data["rows"])])
        self._frame = None
        chart = self.query_one("#usage-chart", BarChart)
        chart.border_title = f"Cost {self.dimension}"
        chart.set_data(
            [str(r["label"])[5:] for r in data["rows"]], {"cost": [r["cost_usd"] or 0.0 for r in data["rows"]]},
            lambda v: fmt.money(v))

    @staticmethod
    def _view(result: dict[str, Any], dim: str, sort_key: str, search: str) -> tuple[Any, ...]:
        """Table cells and chart series for one grouping, sort and search (pure: runs in the worker)."""
        from loopmeter.analytics import spend

        frame = spend.by_dimension(result["cube"], dim)
        if search:
            frame = frame[frame[dim].astype(str).str.contains(search, case=False, regex=False)]
        key = next((k for label, k in COLUMNS if sort_key in (label, k)), None) or dim
        frame = frame.sort_values(key, ascending=key == dim, na_position="last")
        cells = [(str(row[dim])[-28:], fmt.num(row["calls"]),
                  fmt.money(row["cost"], row["unpriced"], note=False),
                  fmt.num(row["unpriced"]), fmt.tokens(row["input"]), fmt.tokens(row["cache_read"]),
                  fmt.tokens(row["output"]), fmt.pct(row["cache_hit_ratio"]), fmt.pct(row["share"]))
                 for row in frame.to_dict(orient="records")]
        return (dim, sort_key, search), frame, cells, UsageTab._chart_series(result, dim)

    @staticmethod
    def _chart_series(result: dict[str, Any], dim: str) -> tuple[list[str], dict[str, list[float]]]:
        from loopmeter.analytics import spend

        daily = spend.over_time(result["cube"], "day", by=dim, tz=result["tz"])
        if not len(daily):
            return [], {}
        top = [str(x) for x in spend.by_dimension(result["cube"], dim)[dim][:5]]
        daily[dim] = daily[dim].astype(str).where(daily[dim].astype(str).isin(top), "other")
        pivot = daily.pivot_table(index="period", columns=dim, values="cost", aggfunc="sum").fillna(0)
        days = sorted(pivot.index)
        pivot = pivot.reindex(days)
        names = [n for n in [*top, "other"] if n in pivot.columns]
        return [d[5:] for d in days], {n[-18:]: pivot[n].tolist() for n in names}

    def _rerender(self) -> None:
        if getattr(self, "_result", None) is not None:
            self.show(self._result)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "usage-dim" and event.value != self.dimension and \
                (event.value in DIMENSIONS or event.value in PERIODS):
            self.dimension = str(event.value)
            self._rerender()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "usage-search":
            self.search = event.value.strip()
            self._rerender()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        label = str(event.label)
        self.sort_key = self.dimension if label == self.dimension else label
        self._rerender()

    def action_next_dimension(self) -> None:
        dims = ["source", "agent", "model", "provider", "project", "user", *PERIODS]
        self.query_one("#usage-dim", Select).value = dims[(dims.index(self.dimension) + 1) % len(dims)]

    def action_next_sort(self) -> None:
        if self.dimension in PERIODS:
            return
        labels = [self.dimension] + [label for label, _ in COLUMNS[1:]]
        cur = self.sort_key if self.sort_key in labels else "cost"
        self.sort_key = labels[(labels.index(cur) + 1) % len(labels)]
        self._rerender()

    def action_search(self) -> None:
        self.query_one("#usage-search", Input).focus()
