"""Runs: newest first; Enter opens one run (attempts, iterations, check output, span timeline, diff)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from loopmeter.reports import fmt
from loopmeter.tui.base import DataTab, PagedTable
from loopmeter.vocab import RunStatus

ROW_LIMIT = 200  # newest first; filters narrow it further
COLUMNS = ["run", "status", "task", "user", "att", "ok", "cost", "started"]
STATUS_STYLE = {RunStatus.RUNNING: "bold green", RunStatus.FAILED: "red", RunStatus.ERROR: "red"}


class RunsTab(DataTab):
    def compose(self) -> ComposeResult:
        yield Static("", id="runs-summary")
        yield PagedTable(id="runs-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#runs-table", DataTable).add_columns(*COLUMNS)

    def fetch(self, filters: Any) -> Any:
        """Rows formatted here, in the worker, so the UI thread only hands them to the table."""
        from loopmeter.analytics.runs import list_runs

        frame = list_runs(self.lm.store, filters, limit=ROW_LIMIT)
        ids, cells = [], []
        for r in frame.to_dict(orient="records"):
            status = Text(r["status"], style=STATUS_STYLE.get(r["status"], ""))
            started = r["started_at"].strftime("%m-%d %H:%M") if r["started_at"] is not None else "—"
            ids.append(r["id"])
            cells.append((r["id"][-8:], status, (r["task"] or "")[:28], r["user"] or "—", str(r["attempts"]),
                          str(r["passed"]), fmt.money(r["cost_usd"], r["unpriced_calls"]), started))
        return ids, cells

    def show(self, result: Any) -> None:
        self.run_ids, cells = result
        self.query_one("#runs-table", PagedTable).set_rows(cells)
        more = f" (newest {ROW_LIMIT})" if len(cells) >= ROW_LIMIT else ""
        self.query_one("#runs-summary", Static).update(f"{len(cells):,} runs{more}  ·  Enter: open a run")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        ids = getattr(self, "run_ids", [])
        if event.data_table.id == "runs-table" and 0 <= event.cursor_row < len(ids):
            from loopmeter.tui.run_detail import RunScreen

            self.app.push_screen(RunScreen(ids[event.cursor_row]))
