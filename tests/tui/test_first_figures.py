"""The dashboard's first figure: the Spend box computed in a forked child by the function every refresh uses,
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
    first = FirstFigures.start(sqlite_url, filters)
    spend = first.take(filters)
    here = kpis.headline(kpis.load(seeded, filters, loopmeter_home), VALUE)["spend"]
    assert spend is not None
    assert spend["cost_usd"] == pytest.approx(here["cost_usd"]) and spend["cost_usd"] > 0
    assert (spend["calls"], spend["unpriced_calls"]) == (here["calls"], here["unpriced_calls"]) != (0, 0)
    assert spend["tokens"] == here["tokens"]
    assert first.take(filters) is None  # once
    with pytest.raises(ChildProcessError):
        os.waitpid(first.pid, os.WNOHANG)  # the child was reaped


def test_figures_for_other_filters_or_from_a_failed_child_are_not_used(seeded, sqlite_url, loopmeter_home):
    first = FirstFigures.start(sqlite_url, _filters())
    assert first.take(_filters("Asia/Kolkata")) is None
    (loopmeter_home / "not-a-dir").write_text("")
    broken = FirstFigures.start(f"sqlite:///{loopmeter_home / 'not-a-dir' / 'x.db'}", _filters())
    assert broken.take(_filters()) is None
    broken.close()


def test_close_stops_a_child_still_computing(sqlite_url):
    first = FirstFigures.start(sqlite_url, _filters())
    first.close()
    assert first.take(_filters()) is None
    with pytest.raises(ChildProcessError):
        os.waitpid(first.pid, os.WNOHANG)


def test_close_ends_a_wait_in_take(sqlite_url):
    import threading

    first = FirstFigures.start(sqlite_url, _filters())
    waiter = threading.Thread(target=first.take, args=(_filters(),))
    waiter.start()
    first.close()  # the dashboard quit while its worker waited for the figures
    waiter.join(timeout=10)
    assert not waiter.is_alive()
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
    first = FirstFigures.start(url, filters)
    opened = []

    def store():  # what the dashboard was waiting for when it opened the store
        opened.append(app.waiting_first)
        return seeded

    app = LoopmeterApp(store, home=loopmeter_home, value=VALUE, live_every=0, prefetch_tabs=False, first=first)
    expected = LoopmeterApp(seeded, home=loopmeter_home, value=VALUE, now=FIXED_NOW, live_every=0,
                            prefetch_tabs=False)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            shown = await _spend_shown(app, pilot)
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            assert opened == [False]  # opened once, after the child's figures came (or did not)
            assert app.query_one("#overview-tab").ready  # then the rest of the dashboard loaded as before
        async with expected.run_test(size=(120, 40)) as pilot:
            assert await _spend_shown(expected, pilot) == shown
    finally:
        first.close()


def test_importing_the_dashboard_loads_no_store_or_dataframe_library():
    code = f"import sys, loopmeter.tui.app; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_first_figure_is_computed_without_a_store_or_dataframe_library(seeded, sqlite_url, loopmeter_home):
    """What makes it fast in a fresh process: on a SQLite store the stdlib driver alone, and the same box."""
    code = ("import json, sys\n"
            "from datetime import datetime\n"
            "from loopmeter.analytics.filters import Filters\n"
            "from loopmeter.tui.first import compute\n"
            f"f = Filters(since=datetime.fromisoformat({_filters().since.isoformat()!r}), "
            f"until=datetime.fromisoformat({_filters().until.isoformat()!r}))\n"
            f"box = compute({sqlite_url!r}, f)\n"
            f"print(json.dumps([box, [m for m in {HEAVY!r} if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    box, heavy = __import__("json").loads(out.stdout)
    assert heavy == []
    here = kpis.headline(kpis.load(seeded, _filters(), loopmeter_home), VALUE)["spend"]
    assert box == here
