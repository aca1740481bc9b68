"""The dashboard's Vendors tab on the seeded store plus Cursor, Windsurf and Copilot synced from
their scripted servers (tests/servers/), driven with Textual's pilot."""

from __future__ import annotations

import pytest

from loopmeter.reports import fmt
from tests.analytics.seed import FIXED_NOW
from tests.tui.test_dash import make_app, settle
from tests.vendors._tool_sync import sync_three


def _cells(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


@pytest.mark.anyio
async def test_vendors_tab_shows_spend_per_vendor_and_tier(seeded, loopmeter_home):
    totals = sync_three(seeded, loopmeter_home, FIXED_NOW)
    app = make_app(seeded, loopmeter_home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert not app.query("#vendors-tab")  # not mounted (nor its module imported) before it is asked for
        await pilot.press("7")
        await settle(pilot)
        assert app.query_one("#tabs").active == "vendors"
        vendors = {row[0]: row for row in _cells(app.query_one("#vendors-table"))}
        # Cursor: billed = Σ chargedCents; Copilot: billed = Σ premium-request net amounts
        assert vendors["cursor"][1] == fmt.money(totals["cursor"]["charged_cents"] / 100)
        assert vendors["cursor"][2] == "billed"
        assert vendors["copilot"][1] == fmt.money(totals["copilot"]["net_usd"])
        assert vendors["copilot"][2] == "billed"
        # Windsurf: credits, no dollars (no credit price configured), the vendor's own tier
        assert vendors["windsurf"][1] == fmt.DASH and vendors["windsurf"][2] == "vendor"
        assert vendors["windsurf"][6] == fmt.num(totals["windsurf"]["credits"], 2)
        assert vendors["windsurf"][7] == "3"  # people
        # the seeded local logs are measured spend, their own vendors and tiers
        assert vendors["anthropic"][2] in ("calculated", "reported", "reported + calculated")

        # Cursor's cycle total (/teams/spend) beside the stored charges since the cycle start: a check, not a row
        cursor_usd = fmt.money(totals["cursor"]["charged_cents"] / 100)
        summary = str(app.query_one("#vendors-summary").render())
        assert f"cursor billing cycle spend (/teams/spend) since 2026-02-26: {cursor_usd}; " \
               f"stored for those days: {cursor_usd}" in summary
        assert "windsurf billing cycle credits (UserPageAnalytics)" in summary

        days = _cells(app.query_one("#vendors-days"))
        assert days[0][0] >= days[-1][0]  # newest day first
        cursor_days = [d for d in days if d[1] == "cursor"]
        assert len(cursor_days) == 5 and {d[3] for d in cursor_days} == {"billed"}
        assert all(d[3] != "—" for d in days)  # every row says its tier
        windsurf_days = [d for d in days if d[1] == "windsurf"]
        assert {d[7] for d in windsurf_days} == {"3"}  # active people that day


@pytest.mark.anyio
async def test_vendors_tab_without_vendor_figures_says_how_to_get_them(seeded, loopmeter_home):
    app = make_app(seeded, loopmeter_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.action_tab("vendors")
        await settle(pilot)
        assert "loopmeter vendors sync" in str(app.query_one("#vendors-summary").render())
