"""Outcomes: pull requests tied to the sessions and runs that produced them. KPIs per agent
(no-agent PRs as the baseline), the PR table, and Enter on a PR for its sessions' usage."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from loopmeter.reports import fmt
from loopmeter.safe_text import printable
from loopmeter.tui.base import DataTab, PagedTable

AGENT_COLUMNS = ["agent", "PRs", "merged", "merge rate", "95% CI", "p50 merge", "reverted", "$/merged PR"]
PR_COLUMNS = ["PR", "agents", "attribution", "cost", "state", "to merge", "reverted", "title"]
SESSION_COLUMNS = ["source", "session / run", "agent", "calls", "tokens", "cost"]


class OutcomesTab(DataTab):
    def compose(self) -> ComposeResult:
        yield Static("", id="outcomes-summary")
        agents: DataTable[str] = DataTable(id="outcomes-agents", cursor_type="row", zebra_stripes=True)
        agents.border_title = "Per agent"
        yield agents
        prs = PagedTable(id="outcomes-prs", cursor_type="row", zebra_stripes=True)
        prs.border_title = "Pull requests"
        yield prs

    def on_mount(self) -> None:
        self.query_one("#outcomes-agents", DataTable).add_columns(*AGENT_COLUMNS)
        self.query_one("#outcomes-prs", DataTable).add_columns(*PR_COLUMNS)

    def fetch(self, filters: Any) -> Any:
        from loopmeter.outcomes import kpis
        if not kpis.has_prs(self.lm.store):
            return {}, [], [], []
        att = kpis.attribute_for(self.lm.store, filters)
        summary = kpis.summary(att)
        agents = [("no agent (baseline)" if a["agent"] == "none" else printable(a["agent"]), fmt.num(a["prs"]),
                   fmt.num(a["merged"]), fmt.pct(a["merge_rate"]), fmt.ci(*(a["merge_rate_ci"] or (None, None))),
                   fmt.duration(a["p50_time_to_merge_s"]), fmt.pct(a["revert_rate"]),
                   fmt.money_per(a["cost_per_merged_pr_usd"], a["cost_usd"], a["unpriced_calls"]))
                  for a in summary["by_agent"]]
        prs = sorted(att.prs, key=lambda p: p.created_at.timestamp() if p.created_at else 0.0, reverse=True)
        cells = []
        for p in prs:
            j = p.as_json()
            cells.append((printable(f"{p.repo.rsplit('/', 1)[-1]}#{p.number}"), printable(", ".join(p.agents)) or "—",
                          p.attribution, fmt.money(j["cost_usd"], j["unpriced_calls"], note=False) if p.costed else "—",
                          p.state, fmt.duration(p.time_to_merge_s), "yes" if p.reverted else "",
                          printable((p.title or "")[:40])))
        return summary, agents, prs, cells

    def show(self, result: Any) -> None:
        summary, agents, self.prs, cells = result
        table = self.query_one("#outcomes-agents", DataTable)
        table.clear()
        for row in agents:
            table.add_row(*row)
        self.query_one("#outcomes-prs", PagedTable).set_rows(cells)
        if not self.prs:
            text = "no pull requests yet: loopmeter outcomes sync --repo PATH --github OWNER/REPO"
        else:
            text = (f"{len(self.prs):,} PRs  ·  attributed "
                    f"{fmt.money(summary['attributed_cost_usd'], summary['attributed_unpriced_calls'])}  ·  "
                    f"unattributed {fmt.money(summary['unattributed_cost_usd'], summary['unattributed_unpriced_calls'])}"
                    f" in {summary['unattributed_sessions']:,} sessions  ·  Enter: a PR's sessions")
        self.query_one("#outcomes-summary", Static).update(text)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        prs = getattr(self, "prs", [])
        if event.data_table.id == "outcomes-prs" and 0 <= event.cursor_row < len(prs):
            self.app.push_screen(PRSessionsScreen(prs[event.cursor_row]))


class PRSessionsScreen(ModalScreen[None]):
    """The sessions (and loop runs) whose usage is a PR's cost."""

    BINDINGS = [Binding("escape", "app.pop_screen", "close"), Binding("q", "app.pop_screen", "close")]

    def __init__(self, pr: Any) -> None:
        super().__init__()
        self.pr = pr

    def compose(self) -> ComposeResult:
        p = self.pr
        j = p.as_json()
        cost = fmt.money(j["cost_usd"], j["unpriced_calls"]) if p.costed else "not known (no session matched)"
        with Vertical(id="pr-sessions-dialog"):
            yield Static(printable(f"{p.repo}#{p.number} {p.title or ''}\n"
                                   f"branch {p.branch or '—'} · {p.state} · {p.attribution} · cost {cost}"),
                         id="pr-sessions-header")
            yield DataTable(id="pr-sessions", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#pr-sessions", DataTable)
        table.add_columns(*SESSION_COLUMNS)
        for s in self.pr.sessions:
            table.add_row(printable(s["source"]), printable(s["session_id"] or s["run_id"] or "—"),
                          printable(s["agent"] or "—"), fmt.num(s["calls"]), fmt.tokens(s["tokens"]),
                          fmt.money(s["cost_usd"], s["unpriced_calls"]))
