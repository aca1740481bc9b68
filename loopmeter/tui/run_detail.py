"""One run: attempts side by side, each attempt's iterations and check output, the span timeline, the diff."""

from __future__ import annotations

from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from loopmeter.reports import fmt

ATTEMPT_COLUMNS = ["attempt", "agent", "model", "status", "iter", "tokens in/out", "cost", "time", "diff", "stop"]


class RunScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "back"), Binding("q", "app.pop_screen", "back", show=False)]

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.detail: dict[str, Any] | None = None
        self.attempt_id: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"run {self.run_id} …", id="run-header")
        with TabbedContent(id="run-tabs"):
            with TabPane("Attempts", id="run-attempts"):
                yield DataTable(id="attempts-table", cursor_type="row")
            with TabPane("Iterations", id="run-iterations"):
                yield DataTable(id="iterations-table", cursor_type="row")
                with VerticalScroll(id="check-output-box"):
                    yield Static("", id="check-output")
            with TabPane("Timeline", id="run-timeline"):
                with VerticalScroll():
                    yield Static("", id="timeline")
            with TabPane("Diff", id="run-diff"):
                with VerticalScroll():
                    yield Static("", id="diff")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#attempts-table", DataTable).add_columns(*ATTEMPT_COLUMNS)
        self.query_one("#iterations-table", DataTable).add_columns("#", "act", "check", "cost", "tokens", "took")
        self.query_one("#attempts-table", DataTable).focus()
        self._load()

    def reload(self) -> None:
        if self.is_mounted:  # before that, its tables have no columns yet and on_mount loads it anyway
            self._load()

    @work(thread=True, exclusive=True)
    def _load(self) -> None:
        from loopmeter.analytics.runs import attempt_diff, run_detail

        store = self.app.store  # type: ignore[attr-defined]
        detail = run_detail(store, self.run_id)
        if detail is not None:
            repo = detail["run"].get("repo")
            detail["diffs"] = {a["id"]: attempt_diff(repo, a) for a in detail["attempts"]}
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, detail)

    @staticmethod
    def _signature(detail: dict[str, Any]) -> str:
        attempts = [(a["id"], a["status"], a["iterations"], a["cost_usd"], a["wall_s"]) for a in detail["attempts"]]
        iterations = {k: [(i["n"], i["check_passed"]) for i in v] for k, v in detail["iterations"].items()}
        return repr((detail["run"]["status"], attempts, iterations, len(detail["spans"])))

    def _show(self, detail: dict[str, Any] | None) -> None:
        if not self.is_attached:  # closed while loading
            return
        if detail is not None and self.detail is not None and self._signature(detail) == self._signature(self.detail):
            return  # a live refresh found nothing new: keep the tables (and the cursor) as they are
        if detail is None:
            self.query_one("#run-header", Static).update(f"run {self.run_id}: not found")
            return
        self.detail = detail
        run = detail["run"]
        started = run["started_at"].strftime("%Y-%m-%d %H:%M") if run["started_at"] else "—"
        self.query_one("#run-header", Static).update(
            f"[b]run {run['id']}[/]  {run['status']}  {run['kind']}  {started}  {run.get('user') or ''}\n"
            f"{(run.get('task') or '')[:150]}")
        table = self.query_one("#attempts-table", DataTable)
        table.clear()
        for a in detail["attempts"]:
            ds = a.get("diffstat") or {}
            diff = f"+{ds.get('insertions', 0)} -{ds.get('deletions', 0)}" if ds else "—"
            tokens = f"{fmt.tokens(a['input_tokens'] + a['cache_read_tokens'])}/{fmt.tokens(a['output_tokens'])}"
            table.add_row(a["id"][-12:], a["agent"], (a.get("model") or "—")[:20], a["status"],
                          str(a["iterations"]), tokens, fmt.money(a["cost_usd"], a["unpriced_calls"]),
                          fmt.duration(a["wall_s"]), diff, (a.get("stop_reason") or "")[:24], key=a["id"])
        ids = [a["id"] for a in detail["attempts"]]
        if ids:
            self.select_attempt(self.attempt_id if self.attempt_id and self.attempt_id in ids else ids[0])
        self._timeline()

    def select_attempt(self, attempt_id: str) -> None:
        if self.detail is None:
            return
        self.attempt_id = attempt_id
        its = self.detail["iterations"].get(attempt_id, [])
        table = self.query_one("#iterations-table", DataTable)
        table.clear()
        for it in its:
            took = (it["ended_at"] - it["started_at"]).total_seconds() if it["ended_at"] and it["started_at"] else None
            check = "pass" if it["check_passed"] else ("—" if it["check_passed"] is None else f"fail ({it['check_exit']})")
            table.add_row(str(it["n"]), (it.get("act_summary") or "")[:30], check, fmt.money(it["cost_usd"]),
                          fmt.tokens(it["tokens"]), fmt.duration(took), key=str(it["n"]))
        self.show_iteration(its[-1]["n"] if its else None)
        diff = self.detail["diffs"].get(attempt_id)
        attempt = next(a for a in self.detail["attempts"] if a["id"] == attempt_id)
        if diff:
            self.query_one("#diff", Static).update(Syntax(diff, "diff", theme="ansi_dark", word_wrap=True))
        else:
            ds = attempt.get("diffstat") or {}
            self.query_one("#diff", Static).update(
                f"attempt {attempt_id}: the diff is not on this machine (branch {attempt.get('branch') or '—'})\n"
                f"diffstat: {ds.get('files', '—')} files, +{ds.get('insertions', 0)} -{ds.get('deletions', 0)}")

    def show_iteration(self, n: int | None) -> None:
        out = self.query_one("#check-output", Static)
        if self.detail is None or self.attempt_id is None or n is None:
            out.update("no iterations")
            return
        it = next((i for i in self.detail["iterations"].get(self.attempt_id, []) if i["n"] == n), None)
        tail = (it or {}).get("check_output_tail") or "(no check output)"
        out.update(Text(f"iteration {n} check output:\n{tail}"))

    def _timeline(self) -> None:
        spans = self.detail["spans"] if self.detail else []
        box = self.query_one("#timeline", Static)
        if not spans:
            box.update("no spans recorded for this run")
            return
        t0 = min(s["start_ns"] for s in spans)
        t1 = max(s["end_ns"] for s in spans)
        width = 40
        scale = max(t1 - t0, 1) / width
        lines = Text()
        for s in spans[:200]:
            a = int((s["start_ns"] - t0) / scale)
            b = max(a + 1, int((s["end_ns"] - t0) / scale))
            lines.append(f"{s['name'][:26]:<26} ", style="bold" if s["parent_span_id"] is None else "")
            lines.append(" " * a)
            lines.append("█" * (b - a), style="red" if s.get("status") == "error" else "cyan")
            lines.append(" " * (width - b + 1))
            lines.append(fmt.duration((s["end_ns"] - s["start_ns"]) / 1e9) + "\n")
        box.update(lines)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "attempts-table" and event.row_key.value:
            self.select_attempt(str(event.row_key.value))
            self.query_one("#run-tabs", TabbedContent).active = "run-iterations"

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "iterations-table" and event.row_key.value:
            self.show_iteration(int(str(event.row_key.value)))
