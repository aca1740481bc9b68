"""Vendors: a line per vendor (spend under the tier rule and the tiers it came from, people, credits),
then spend per UTC day, vendor and tier with the active users and credits of that day.

Nothing heavy is imported here: the figures (analytics/vendor_section.py, pandas, the store) load in
the tab's worker the first time it is shown or prefetched.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from loopmeter.reports import fmt
from loopmeter.reports.tables import check_text
from loopmeter.safe_text import printable
from loopmeter.tui.base import DataTab, PagedTable

VENDOR_COLUMNS = ["vendor", "spend", "tier", "billed", "vendor est.", "measured", "credits", "people", "active/day"]
DAY_COLUMNS = ["day (UTC)", "vendor", "spend", "tier", "billed", "vendor est.", "measured", "active", "credits"]
EMPTY = ("no vendor figures in this range: `loopmeter vendors sync` reads the vendors' admin APIs "
         "(Anthropic, OpenAI, Cursor, Windsurf, GitHub Copilot)")


def _name(value: str) -> Text:
    """A vendor's name as plain text (no markup from it)."""
    return Text(printable(value)[:16])


def vendor_cells(v: dict[str, Any]) -> tuple[Any, ...]:
    return (_name(v["vendor"]), fmt.money(v["cost_usd"]), v["tier"] or fmt.DASH, fmt.money(v["billed_usd"]),
            fmt.money(v["vendor_usd"]), fmt.money(v["measured_usd"]), fmt.num(v["credits"], 2),
            fmt.num(v["users"]), fmt.num(v["active_users_per_day"], 1))


def day_cells(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["date"], _name(d["vendor"]), fmt.money(d["cost_usd"]), d["tier"] or fmt.DASH,
            fmt.money(d["billed_usd"]), fmt.money(d["vendor_usd"]), fmt.money(d["measured_usd"]),
            fmt.num(d["active_users"]), fmt.num(d["credits"], 2))


class VendorsTab(DataTab):
    DEFAULT_CSS = """
    VendorsTab #vendors-summary { height: auto; padding: 0 1; }
    VendorsTab #vendors-table { height: auto; max-height: 12; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="vendors-summary")
        yield DataTable(id="vendors-table", cursor_type="row", zebra_stripes=True)
        yield PagedTable(id="vendors-days", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#vendors-table", DataTable).add_columns(*VENDOR_COLUMNS)
        self.query_one("#vendors-days", DataTable).add_columns(*DAY_COLUMNS)

    def fetch(self, filters: Any) -> tuple[str, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        from loopmeter.analytics.vendor_section import section

        sec = section(self.lm.store, filters, self.lm.data(filters))
        vendors = [vendor_cells(v) for v in sec["vendors"]]
        days = [day_cells(d) for d in sec["days"]]
        if not sec["synced"]:
            summary = EMPTY
        else:
            summary = ("spend per UTC day and vendor from the best tier present: billed > vendor estimate > "
                       "measured (reported/calculated); never two tiers added")
        checks = [printable(check_text(c)) for c in sec["checks"]]
        return "\n".join([summary, *checks]), vendors, days

    def show(self, result: tuple[str, list[tuple[Any, ...]], list[tuple[Any, ...]]]) -> None:
        summary, vendors, days = result
        self.query_one("#vendors-summary", Static).update(Text(summary))
        table = self.query_one("#vendors-table", DataTable)
        table.clear()
        table.add_rows(vendors)
        self.query_one("#vendors-days", PagedTable).set_rows(days)
