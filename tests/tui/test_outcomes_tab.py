"""The dashboard's Outcomes tab on a store with PRs, sessions and usage: per-agent KPIs with
the baseline row, the PR table with attribution and cost, Enter for a PR's sessions; and the
Overview's cost per merged PR with the unattributed spend beside it."""

from __future__ import annotations

import pytest

from loopmeter.config import ValueModel
from loopmeter.tui.app import LoopmeterApp
from tests.analytics.seed import FIXED_NOW
from tests.outcomes.seed import seed_prs
from tests.tui.test_dash import make_app, settle


def all_time_app(store, home) -> LoopmeterApp:
    """The seeded PRs are from November 2026, after the tests' fixed clock's 30 days: all time."""
    app = LoopmeterApp(store, home=home, value=ValueModel(value_per_merged_outcome=40.0), now=FIXED_NOW,
                       live_every=0, prefetch_tabs=False, range_name="all")
    app.animation_level = "none"
    return app


@pytest.mark.anyio
async def test_outcomes_tab_shows_agents_prs_and_a_prs_sessions(store, loopmeter_home):
    seed_prs(store)
    app = all_time_app(store, loopmeter_home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        cpo = str(app.query_one("#kpi-cpo").render())
        # $2.00 + $2.00 (closed, unmerged: part of the price) + $0.50 over the two merged costed PRs
        assert "$2.25 / merged PR (2)" in cpo
        assert "unattributed $12.25" in cpo
        await pilot.press("6")
        await settle(pilot)
        assert app.query_one("#tabs").active == "outcomes"
        agents = app.query_one("#outcomes-agents")
        names = [agents.get_row_at(i)[0] for i in range(agents.row_count)]
        assert names[-1] == "no agent (baseline)" and "claude-code" in names
        prs = app.query_one("#outcomes-prs")
        assert prs.row_count == 7
        summary = str(app.query_one("#outcomes-summary").render())
        assert "7 PRs" in summary and "unattributed $12.25" in summary
        rows = [prs.get_row_at(i) for i in range(prs.row_count)]
        first = next(i for i, r in enumerate(rows) if r[0] == "r#1")
        assert rows[first][2] == "session" and rows[first][3] == "$2.00"
        prs.focus()
        prs.move_cursor(row=first)
        await pilot.press("enter")
        await settle(pilot)
        sessions = app.screen.query_one("#pr-sessions")
        assert sorted(sessions.get_row_at(i)[1] for i in range(sessions.row_count)) == ["s1", "s2"]
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is app.main_screen


@pytest.mark.anyio
async def test_outcomes_tab_without_prs_says_how_to_sync(store, loopmeter_home):
    app = make_app(store, loopmeter_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        assert "loopmeter outcomes sync" in str(app.query_one("#outcomes-summary").render())


@pytest.mark.anyio
async def test_the_overview_counts_only_prs_in_the_range(store, loopmeter_home):
    seed_prs(store)  # November 2026: after the 30 days that end at the fixed clock (March 2026)
    app = make_app(store, loopmeter_home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        cpo = str(app.query_one("#kpi-cpo").render())
        assert "/ merged PR (0)" in cpo and "$2.25" not in cpo
