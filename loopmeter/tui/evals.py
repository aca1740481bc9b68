"""Evals: pass rate per suite and configuration with its 95% interval drawn as a whisker; paired A/B verdicts."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from loopmeter.reports import fmt
from loopmeter.reports.tables import comparison_text
from loopmeter.tui.base import DataTab

WHISKER_WIDTH = 16


def whisker(p: float | None, lo: float | None, hi: float | None, width: int = WHISKER_WIDTH) -> Text:
    """|---█---| on a 0..100% line: the interval as a line, the rate as a block."""
    if p is None or lo is None or hi is None:
        return Text("—")
    cells = [" "] * width
    a, b, m = (min(width - 1, int(round(v * (width - 1)))) for v in (lo, hi, p))
    for i in range(a, b + 1):
        cells[i] = "─"
    cells[a], cells[b] = "├", "┤"
    cells[m] = "█"
    return Text("".join(cells), style="cyan")


class EvalsTab(DataTab):
    def compose(self) -> ComposeResult:
        yield DataTable(id="evals-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="evals-ab")

    def on_mount(self) -> None:
        self.query_one("#evals-table", DataTable).add_columns(
            "suite", "configuration", "tasks", "pass", "95% CI", "0%" + " " * (WHISKER_WIDTH - 6) + "100%", "$/task")

    def fetch(self, filters: Any) -> dict[str, Any]:
        from loopmeter.analytics.evals import eval_summary, load_results

        return eval_summary(load_results(self.lm.store, filters))

    def show(self, ev: dict[str, Any]) -> None:
        table = self.query_one("#evals-table", DataTable)
        table.clear()
        for c in ev["configs"]:
            lo, hi = c["pass_rate_ci"] or (None, None)
            table.add_row((c["suite"] or "")[:12], c["config"][-22:], str(c["n_tasks"]), fmt.pct(c["pass_rate"]),
                          fmt.ci(lo, hi), whisker(c["pass_rate"], lo, hi),
                          fmt.money(c["cost_per_task_usd"], c["unpriced_cells"], note=False))
        lines = [comparison_text(c) for c in ev["comparisons"]]
        if ev.get("stats") == "unavailable":
            lines = ["eval statistics: unavailable in this build"]
        elif not ev["configs"]:
            lines = ["no eval results in this range (run `loopmeter eval run`)"]
        self.query_one("#evals-ab", Static).update("\n".join(lines) or "no pair of configurations shares a task")
