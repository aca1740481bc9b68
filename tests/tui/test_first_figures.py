"""The dashboard's first figures: computed in a forked child by the same function as every refresh,
shown before the parent opens the store, and computed in-process when the child fails."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loopmeter.analytics import kpis
from loopmeter.analytics.filters import Filters, range_filters
from loopmeter.config import ValueModel
from loopmeter.tui.app import LoopmeterApp
from loopmeter.tui.first import FirstFigures
from tests.analytics.seed import FIXED_NOW

VALUE = ValueModel(value_per_merged_outcome=40.0)
HEAVY = ("sqlalchemy", "sqlmodel", "pandas", "numpy")


def _filters(zone: str = "UTC") -> Filters:
    return range_filters("30d", FIXED_NOW, Filters(timezone=zone))


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu"])
def test_the_child_computes_the_same_kpi_boxes_as_the_dashboard(seeded, sqlite_url, loopmeter_home, zone):
    filters = _filters(zone)
    first = FirstFigures.start(sqlite_url, filters, loopmeter_home, VALUE)
    head = first.take(filters)
    here = kpis.headline(kpis.load(seeded, filters, loopmeter_home), VALUE)
    assert head is not None
    assert head["spend"]["cost_usd"] == pytest.approx(here["spend"]["cost_usd"])
    assert head["spend"]["cost_usd"] > 0
    assert (head["spend"]["calls"], head["spend"]["unpriced_calls"]) == (here["spend"]["calls"],
                                                                          here["spend"]["unpriced_calls"])
    assert head["outcomes"] == here["outcomes"]
    assert first.take(filters) is None  # once
    with pytest.raises(ChildProcessError):
        os.waitpid(first.pid, os.WNOHANG)  # the child was reaped


def test_figures_for_other_filters_or_from_a_failed_child_are_not_used(seeded, sqlite_url, loopmeter_home):
    first = FirstFigures.start(sqlite_url, _filters(), loopmeter_home, VALUE)
    assert first.take(_filters("Asia/Kolkata")) is None
    (loopmeter_home / "not-a-dir").write_text("")
    broken = FirstFigures.start(f"sqlite:///{loopmeter_home / 'not-a-dir' / 'x.db'}", _filters(), loopmeter_home,
                                VALUE)
    assert broken.take(_filters()) is None
    broken.close()


def test_close_stops_a_child_still_computing(sqlite_url, loopmeter_home):
    first = FirstFigures.start(sqlite_url, _filters(), loopmeter_home, VALUE)
    first.close()
    assert first.take(_filters()) is None
    with pytest.raises(ChildProcessError):
        os.waitpid(first.pid, os.WNOHANG)


async def _spend_shown(app: LoopmeterApp, pilot) -> str:
    box = app.query_one("#kpi-spend")
    for _ in range(2000):
        text = str(box.render())
        if "$" in text or "unpriced" in text:
            return text
        await pilot.pause(0.005)
    raise AssertionError("the Spend box kept its placeholder")


@pytest.mark.anyio
@pytest.mark.parametrize("working_child", [True, False])
async def test_the_app_shows_the_spend_before_opening_the_store(seeded, sqlite_url, loopmeter_home,
                                                                working_child):
    filters = _filters()
    url = sqlite_url if working_child else f"sqlite:///{loopmeter_home / 'missing' / 'x.db'}"
    if not working_child:
        (loopmeter_home / "missing").write_text("")
    first = FirstFigures.start(url, filters, loopmeter_home, VALUE)
    opened = []

    def store():
        opened.append(seeded)
        return seeded

    app = LoopmeterApp(store, home=loopmeter_home, value=VALUE, live_every=0, prefetch_tabs=False, first=first)
    expected = LoopmeterApp(seeded, home=loopmeter_home, value=VALUE, now=FIXED_NOW, live_every=0,
                            prefetch_tabs=False)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            shown = await _spend_shown(app, pilot)
            assert bool(opened) is not working_child  # the store opens after the child's figures show
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            assert opened  # then the rest of the dashboard loads as before
            assert app.query_one("#overview-tab").ready
        async with expected.run_test(size=(120, 40)) as pilot:
            assert await _spend_shown(expected, pilot) == shown
    finally:
        first.close()


def test_importing_the_dashboard_loads_no_store_or_dataframe_library():
    code = f"import sys, loopmeter.tui.app; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
