"""Overview: spend, outcomes, cost per outcome, time to green, ROI; spend per day; the agent table."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Grid
from textual.widgets import DataTable, Static

from loopmeter.reports import fmt
from loopmeter.tui.base import DataTab
from loopmeter.tui.charts import BarChart

AGENT_COLUMNS = ["agent", "attempts", "success", "$/verified", "p50 green", "cache hit", "wasted"]


class OverviewTab(DataTab):
    def compose(self) -> ComposeResult:
        with Grid(id="kpis"):
            for box, title in (("spend", "Spend"), ("outcomes", "Verified outcomes"), ("cpo", "Cost / outcome"),
                               ("green", "Time to green"), ("roi", "ROI")):
                s = Static("…", id=f"kpi-{box}", classes="kpi")
                s.border_title = title
                yield s
        chart = BarChart(id="spend-chart")
        chart.border_title = "Spend per day by agent"
        yield chart
        table: DataTable[str] = DataTable(id="agents", cursor_type="row", zebra_stripes=True)
        table.border_title = "Agents"
        yield table

    def on_mount(self) -> None:
        self.query_one("#agents", DataTable).add_columns(*AGENT_COLUMNS)

    def fetch(self, filters: Any) -> dict[str, Any]:
        from loopmeter.analytics import kpis, spend
        from loopmeter.outcomes.kpis import headline as pr_headline

        data = self.lm.data(filters)
        return {"head": kpis.headline(data, self.lm.value), "prs": pr_headline(self.lm.store, filters),
                "agents": kpis.agent_table(data),
                "daily": spend.over_time(data.cube, "day", by="agent", tz=filters.tz)}

    def show(self, result: dict[str, Any]) -> None:
        h = result["head"]
        o, c, v, roi = h["outcomes"], h["cost_per_outcome"], h["velocity"], h["roi"]
        self.show_spend(h["spend"])
        self.query_one("#kpi-outcomes", Static).update(
            f"[b]{o['verified']:,}[/] ({fmt.pct(v['success_rate'])} of {o['finished']:,})\n{o['merged']:,} merged")
        prs = result.get("prs")
        if prs is None:
            self.query_one("#kpi-cpo", Static).update(
                f"[b]{fmt.money_per(c['per_verified_usd'], c['cost_usd'], c['unpriced_calls'])}[/]\n"
                f"merged {fmt.money_per(c['per_merged_usd'], c['cost_usd'], c['unpriced_calls'])}")
        else:  # pull requests synced: the outcome is a merged PR, its cost what attribution tied to it
            per_pr = fmt.money_per(prs["cost_per_merged_pr_usd"], prs["attributed_cost_usd"],
                                   prs["attributed_unpriced_calls"])
            self.query_one("#kpi-cpo", Static).update(
                f"[b]{per_pr}[/] / merged PR ({prs['attributed_merged']:,})\n"
                f"[dim]unattributed {fmt.money(prs['unattributed_cost_usd'], prs['unattributed_unpriced_calls'], note=False)}[/]")
        self.query_one("#kpi-green", Static).update(
            f"p50 [b]{fmt.duration(v['time_to_green_p50_s'])}[/]\np90 {fmt.duration(v['time_to_green_p90_s'])}")
        if roi["shown"]:
            basis = (f"{fmt.money(self.lm.value.value_per_merged_outcome)}/merged"
                     if roi["model"] == "per_merged_outcome" else f"{fmt.money(self.lm.value.hourly_rate)}/human hour")
            self.query_one("#kpi-roi", Static).update(f"[b]{fmt.roi_text(roi)}[/]\n[dim]{basis}[/]")
        else:
            self.query_one("#kpi-roi", Static).update("not shown\n[dim]no value model[/]")
        self._chart(result["daily"])
        table = self.query_one("#agents", DataTable)
        table.clear()
        for a in result["agents"].to_dict(orient="records"):
            table.add_row(a["agent"], fmt.num(a["attempts"]), fmt.pct(a["success_rate"]),
                          fmt.money_per(a["per_verified_usd"], a["cost_usd"], a["unpriced_calls"]),
                          fmt.duration(a["time_to_green_p50_s"]), fmt.pct(a["cache_hit_ratio"]),
                          fmt.money(a["wasted_usd"], a["unpriced_calls"], note=False), key=a["agent"])

    def show_spend(self, s: dict[str, Any]) -> None:
        """The Spend box, from `kpis.headline(...)["spend"]` (also shown alone at start-up, tui/first.py)."""
        unpriced = f"\n[dim]{fmt.unpriced_note(s['unpriced_calls'])}[/]" if s["unpriced_calls"] else "\n[dim]all priced[/]"
        tiers = s.get("tiers") or {}
        if tiers.get("vendor_days"):  # a vendor's figure stands in for what was measured (analytics/tiers.py)
            unpriced = f"\n[dim]{' + '.join(tiers['by_tier'])}; measured {fmt.money(s.get('measured_usd'))}[/]"
        self.query_one("#kpi-spend", Static).update(
            f"[b]{fmt.money(s['cost_usd'], s['unpriced_calls'], note=False)}[/]{unpriced}")

    def _chart(self, daily: Any) -> None:
        chart = self.query_one("#spend-chart", BarChart)
        if not len(daily):
            chart.set_data([], {})
            return
        pivot = daily.pivot_table(index="period", columns="agent", values="cost", aggfunc="sum").fillna(0)
        days = sorted(pivot.index)
        pivot = pivot.reindex(days)
        chart.set_data([d[5:] for d in days], {str(a): pivot[a].tolist() for a in sorted(pivot.columns)},
                       lambda v: fmt.money(v))
