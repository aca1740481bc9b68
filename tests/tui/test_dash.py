"""The dashboard on a seeded store with a fixed clock: SVG snapshots of every tab, and Pilot tests."""

from __future__ import annotations

import pytest

from loopmeter.config import ValueModel
from loopmeter.tui.app import LoopmeterApp
from tests.analytics.seed import FIXED_NOW


def make_app(store, home) -> LoopmeterApp:
    app = LoopmeterApp(store, home=home, value=ValueModel(value_per_merged_outcome=40.0), now=FIXED_NOW,
                       live_every=0, prefetch_tabs=False)
    app.animation_level = "none"  # a tab underline caught mid-slide would make snapshots flaky
    return app


async def settle(pilot) -> None:
    for _ in range(3):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("keys,size", [
    ([], (100, 34)), ([], (80, 24)), (["2"], (100, 34)), (["3"], (100, 30)), (["4"], (100, 30)),
    (["5"], (100, 30)), (["3", "enter"], (100, 30)), (["question_mark"], (80, 24)), (["2"], (80, 24)),
    (["3", "enter"], (80, 24)), (["5"], (80, 24)), (["f"], (80, 24)),
], ids=["overview", "overview-80x24", "usage", "runs", "evals", "policy", "run-detail", "help", "usage-80x24",
        "run-detail-80x24", "policy-80x24", "filters-80x24"])
def test_tab_snapshots(snap_compare, seeded, loopmeter_home, keys, size):
    async def run_before(pilot) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        pilot.app.screen.set_focus(None)  # focus lands by timing; the picture should not depend on it
        await settle(pilot)

    assert snap_compare(make_app(seeded, loopmeter_home), terminal_size=size, run_before=run_before)


@pytest.mark.anyio
async def test_tabs_switch_by_key_and_load_their_data(seeded, loopmeter_home):
    app = make_app(seeded, loopmeter_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.query_one("#agents").row_count == 4
        await pilot.press("3")
        await settle(pilot)
        assert app.query_one("#tabs").active == "runs"
        assert app.query_one("#runs-table").row_count == seeded.seed_counts["runs"]
        await pilot.press("5")
        await settle(pilot)
        assert "ok, 60 records" in str(app.query_one("#chain-status").render())
        assert app.query_one("#audit-table").row_count == 60


@pytest.mark.anyio
async def test_range_and_filter_dialog_change_every_figure(seeded, loopmeter_home):
    app = make_app(seeded, loopmeter_home)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        usage = app.query_one("#usage-tab")
        assert usage._result["summary"]["calls"] == 400
        await pilot.press("d")  # 30d -> 90d: same rows here, but a new request
        await pilot.press("d", "d")  # -> all -> 24h
        await settle(pilot)
        assert app.range_name == "24h"
        assert usage._result["summary"]["calls"] < 400
        await pilot.press("f")
        await settle(pilot)
        from textual.widgets import Select

        screen = app.screen
        screen.query_one("#f-range", Select).value = "all"
        screen.query_one("#f-agent", Select).value = "codex"
        await pilot.click("#apply")
        await settle(pilot)
        assert app.filters.agent == "codex" and app.filters.since is None
        assert set(usage._result["cube"]["agent"]) == {"codex"}
        assert "agent=codex" in str(app.query_one("#topbar").render())


@pytest.mark.anyio
async def test_usage_group_sort_and_search(seeded, loopmeter_home):
    app = make_app(seeded, loopmeter_home)
    async with app.run_test(size=(100, 34)) as pilot:
        await pilot.press("2")
        await settle(pilot)
        usage = app.query_one("#usage-tab")
        await pilot.press("g")  # source -> agent
        await settle(pilot)
        assert usage.dimension == "agent" and app.query_one("#usage-table").row_count == 4
        await pilot.press("slash")
        await pilot.press(*"dex")
        await settle(pilot)
        assert list(usage._frame["agent"]) == ["codex"]


@pytest.mark.anyio
async def test_usage_periods_come_from_loopmeter_usage(seeded, loopmeter_home):
    from loopmeter.analytics.usage import Query, usage_report

    app = make_app(seeded, loopmeter_home)
    async with app.run_test(size=(100, 34)) as pilot:
        await pilot.press("2")
        await settle(pilot)
        from textual.widgets import Select

        app.query_one("#usage-dim", Select).value = "per week"
        await settle(pilot)
        f = app.filters
        expected = usage_report(seeded, Query(period="weekly", since=f.since.date(), until=f.until.date(), tz="UTC"))
        assert app.query_one("#usage-table").row_count == len(expected.rows)
        assert "from `loopmeter usage`" in str(app.query_one("#usage-total").render())


@pytest.mark.anyio
async def test_drill_into_a_run_then_an_attempt_and_back(seeded, loopmeter_home):
    app = make_app(seeded, loopmeter_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        from loopmeter.tui.run_detail import RunScreen

        screen = app.screen
        assert isinstance(screen, RunScreen)
        assert screen.query_one("#attempts-table").row_count == 2
        await pilot.press("down", "enter")
        await settle(pilot)
        assert screen.query_one("#run-tabs").active == "run-iterations"
        assert screen.attempt_id == screen.detail["attempts"][1]["id"]
        assert "check output" in str(screen.query_one("#check-output").render())
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, RunScreen)


@pytest.mark.anyio
async def test_stale_results_are_dropped(seeded, loopmeter_home):
    app = make_app(seeded, loopmeter_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        tab = app.query_one("#overview-tab")
        shown = tab.shown_generation
        tab._deliver(shown - 1, RuntimeError("old"))  # an answer for an older request
        assert tab.shown_generation == shown


@pytest.mark.anyio
async def test_live_refresh_picks_up_new_usage_while_runs_are_active(seeded, loopmeter_home):
    import asyncio
    from datetime import timedelta

    from loopmeter.records import UsageRow

    app = LoopmeterApp(seeded, home=loopmeter_home, now=FIXED_NOW, live_every=0.2, prefetch_tabs=False)
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        assert app.active_runs == 2
        before = str(app.query_one("#kpi-spend").render())
        seeded.add_usage([UsageRow(key="live:1", source="loop", ts=FIXED_NOW - timedelta(minutes=1),
                                   model="claude-sonnet-4-5", agent="claude-code", cost_usd=1000.0,
                                   cost_source="calculated")])
        for _ in range(50):
            await asyncio.sleep(0.1)
            await pilot.pause()
            if str(app.query_one("#kpi-spend").render()) != before:
                break
        assert "$1,00" in str(app.query_one("#kpi-spend").render())


@pytest.mark.anyio
async def test_policy_filters_by_decision_and_run(seeded, loopmeter_home):
    from textual.widgets import Select

    app = make_app(seeded, loopmeter_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("5")
        await settle(pilot)
        tab = app.query_one("#policy-tab")
        app.query_one("#policy-decision", Select).value = "deny"
        await settle(pilot)
        table = app.query_one("#audit-table")
        decisions = {str(table.get_row_at(i)[6]) for i in range(table.row_count)}
        assert decisions == {"deny"} and table.row_count == 32
        app.query_one("#policy-run").value = "01RUN00000003"
        app.query_one("#policy-run").focus()
        await pilot.press("enter")
        await settle(pilot)
        assert tab.run_filter == "01RUN00000003"
        assert all(str(table.get_row_at(i)[2]) == "000003" for i in range(table.row_count))


@pytest.mark.anyio
async def test_live_refresh_keeps_working_under_the_run_view(seeded, loopmeter_home):
    import asyncio

    from loopmeter.tui.run_detail import RunScreen

    app = LoopmeterApp(seeded, home=loopmeter_home, now=FIXED_NOW, live_every=0.2, prefetch_tabs=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        count = app.refresh_count
        for _ in range(30):
            await asyncio.sleep(0.1)
            await pilot.pause()
            if app.refresh_count > count + 1:
                break
        assert app.refresh_count > count and isinstance(app.screen, RunScreen)
        await pilot.press("escape")
        await settle(pilot)
        assert app.query_one("#runs-table").row_count == seeded.seed_counts["runs"]


@pytest.mark.anyio
async def test_a_live_check_that_ends_while_the_app_closes_is_dropped(seeded, loopmeter_home):
    # The live check runs on a thread; its answer can arrive after the app has begun
    # tearing its widgets down (seen once in CI as NoMatches('#topbar') at exit).
    app = LoopmeterApp(seeded, home=loopmeter_home, now=FIXED_NOW, live_every=0, prefetch_tabs=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await app.main_screen.query_one("#topbar").remove()
        refreshes, active = app.refresh_count, app.active_runs
        app._live_result(active + 5)  # as the thread's call_from_thread would deliver it
        await pilot.pause()
        assert app.active_runs == active and app.refresh_count == refreshes
    app._live_result(3)  # and after the app has closed


@pytest.mark.anyio
async def test_hidden_tabs_are_prefetched_after_the_first_screen(seeded, loopmeter_home):
    import asyncio

    app = LoopmeterApp(seeded, home=loopmeter_home, now=FIXED_NOW, live_every=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        hidden = ("usage", "runs", "evals", "policy")

        def ready() -> bool:  # each hidden tab is mounted by the prefetch that loads it
            found = [app.query(f"#{t}-tab") for t in hidden]
            return all(q and q.first().ready for q in found)

        for _ in range(60):
            await asyncio.sleep(0.1)
            await pilot.pause()
            if ready():
                break
        assert ready()
        assert str(app.query_one("#chain-status").render()) == "chain: verifying…"  # only when on screen


@pytest.mark.anyio
async def test_start_up_heap_is_frozen_while_the_dashboard_runs_and_thawed_after(seeded, loopmeter_home):
    import gc

    app = make_app(seeded, loopmeter_home)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert gc.get_freeze_count() > 0  # full collections no longer walk the start-up objects
    assert gc.get_freeze_count() == 0  # the process can collect the app once it has exited
