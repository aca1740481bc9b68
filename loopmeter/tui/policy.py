"""Policy: audit records filtered by decision, layer and run; the chain's status always at the top."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Select, Static
from textual.worker import get_current_worker

from loopmeter.tui.base import DataTab, PagedTable

ROW_LIMIT = 200  # newest first; the decision, layer and run filters narrow it
VERIFY_AFTER_S = 0.25  # the records paint first; the check is a second Python process hashing the chain
DECISIONS = ["allow", "deny", "ask"]
LAYERS = ["policy", "proxy", "kernel", "limit"]


class PolicyTab(DataTab):
    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.decision_filter: str | None = None
        self.layer_filter: str | None = None
        self.run_filter: str | None = None
        self.chain_key: Any = None

    def compose(self) -> ComposeResult:
        yield Static("chain: verifying…", id="chain-status")
        with Horizontal(id="policy-controls"):
            yield Select([(d, d) for d in DECISIONS], prompt="any decision", id="policy-decision")
            yield Select([(x, x) for x in LAYERS], prompt="any layer", id="policy-layer")
            yield Input(placeholder="run id", id="policy-run")
        yield Static("", id="policy-counts")
        yield PagedTable(id="audit-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#audit-table", DataTable).add_columns(
            "seq", "time", "run", "layer", "action", "target", "decision", "rule")

    def _deliver(self, generation: int, result: Any) -> None:
        super()._deliver(generation, result)
        self._maybe_verify()

    def ensure_loaded(self) -> None:
        super().ensure_loaded()
        self._maybe_verify()

    def _maybe_verify(self) -> None:
        """Verify once per refresh, after the records show, and only when this tab is on screen."""
        if self.chain_key != self.lm.refresh_count and self.ready and self.lm.current_tab() is self:
            self.chain_key = self.lm.refresh_count
            self._verify()

    @work(thread=True, exclusive=True, group="chain")
    def _verify(self) -> None:
        from loopmeter.analytics.policy import chain_status_isolated

        time.sleep(VERIFY_AFTER_S)
        if get_current_worker().is_cancelled:
            return
        status = chain_status_isolated(self.lm.store, nice=10)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_chain, status)

    def _show_chain(self, c: dict[str, Any]) -> None:
        style = {"ok": "b $success", "broken": "b $error"}.get(c["status"], "b $warning")
        n = f", {c['records']:,} records" if c.get("records") is not None else ""
        detail = f" — {c['detail']}" if c.get("detail") else ""
        self.query_one("#chain-status", Static).update(f"audit chain: [{style}]{c['status']}[/]{n}{detail}")

    def fetch(self, filters: Any) -> dict[str, Any]:
        from loopmeter.analytics.policy import audit_records, decision_counts
        from loopmeter.safe_text import printable

        store = self.lm.store
        frame = audit_records(store, filters, decision=self.decision_filter, layer=self.layer_filter,
                              run_id=self.run_filter, limit=ROW_LIMIT)
        cells = [(str(r["seq"]), r["ts"].strftime("%m-%d %H:%M"), (r["run_id"] or "—")[-6:], r["layer"], r["action"],
                  Text(printable(r["target"] or "", 22)),
                  Text(r["decision"], style={"deny": "bold red", "ask": "yellow"}.get(r["decision"], "")),
                  (r["rule_id"] or "")[:18]) for r in frame.to_dict(orient="records")]
        return {"cells": cells,
                "counts": decision_counts(store, filters, layer=self.layer_filter, run_id=self.run_filter)}

    def show(self, result: dict[str, Any]) -> None:
        counts = result["counts"]
        self.query_one("#policy-counts", Static).update("  ".join(
            f"{d}: [b]{counts.get(d, 0):,}[/]" for d in DECISIONS) + f"  (newest {ROW_LIMIT} shown)")
        self.query_one("#audit-table", PagedTable).set_rows(result["cells"])

    def on_select_changed(self, event: Select.Changed) -> None:
        value = None if event.value is Select.NULL else str(event.value)
        if event.select.id == "policy-decision":
            self.decision_filter = value
        elif event.select.id == "policy-layer":
            self.layer_filter = value
        else:
            return
        self.reload()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "policy-run":
            self.run_filter = event.value.strip() or None
            self.reload()
