"""`loopmeter dash`: Overview, Usage, Runs, Evals and Policy over one shared date range and filters."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from loopmeter.analytics.filters import RANGE_LABELS, RANGES, Filters, range_filters
from loopmeter.config import ValueModel
from loopmeter.tui.base import DataTab, freeze_heap, thaw_heap
from loopmeter.tui.evals import EvalsTab
from loopmeter.tui.overview import OverviewTab
from loopmeter.tui.policy import PolicyTab
from loopmeter.tui.runs import RunsTab
from loopmeter.tui.usage import UsageTab

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported when first used, after the first figures show
    from loopmeter.store import Store
    from loopmeter.tui.first import FirstFigures

HERE = Path(__file__).parent


def _outcomes_tab(**kwargs: Any) -> DataTab:
    from loopmeter.tui.outcomes import OutcomesTab  # imported when the tab first mounts

    return OutcomesTab(**kwargs)


def _vendors_tab(**kwargs: Any) -> DataTab:
    from loopmeter.tui.vendors import VendorsTab  # imported when the tab first mounts

    return VendorsTab(**kwargs)


TABS: list[tuple[str, str, Callable[..., DataTab]]] = [
    ("overview", "Overview", OverviewTab), ("usage", "Usage", UsageTab), ("runs", "Runs", RunsTab),
    ("evals", "Evals", EvalsTab), ("policy", "Policy", PolicyTab), ("outcomes", "Outcomes", _outcomes_tab),
    ("vendors", "Vendors", _vendors_tab)]


class LoopmeterApp(App[None]):
    """The dashboard. `now` is the clock (a fixed datetime in tests); `live_every` 0 turns live refresh off."""

    TITLE = "loopmeter"
    CSS_PATH = [HERE / f"{name}.tcss" for name in
                ("app", "overview", "usage", "runs", "run_detail", "evals", "policy", "outcomes", "filters", "help")]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (28, "-tall")]
    BINDINGS = [
        Binding("question_mark", "help", "keys", key_display="?"),
        Binding("f", "filters", "filters"),
        Binding("d", "cycle_range", "range"),
        Binding("r", "refresh", "refresh"),
        Binding("1", "tab('overview')", "overview", show=False),
        Binding("2", "tab('usage')", "usage", show=False),
        Binding("3", "tab('runs')", "runs", show=False),
        Binding("4", "tab('evals')", "evals", show=False),
        Binding("5", "tab('policy')", "policy", show=False),
        Binding("6", "tab('outcomes')", "outcomes", show=False),
        Binding("7", "tab('vendors')", "vendors", show=False),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, store: Store | Callable[[], Store], *, home: Path, value: ValueModel | None = None,
                 now: datetime | Callable[[], datetime] | None = None, range_name: str = "30d",
                 filters: Filters | None = None, live_every: float = 5.0, prefetch_tabs: bool = True,
                 first: FirstFigures | None = None):
        """`store` may be a function that opens it, called on first use. `first` holds the Spend box a
        child process is computing for its filters (tui/first.py); it shows before the store opens."""
        super().__init__()
        from loopmeter.records import utcnow

        if "TEXTUAL_ANIMATIONS" not in os.environ:
            # A dashboard switches tabs all day: the tab underline's 0.3 s slide kept the
            # screen busy well after the data was there. TEXTUAL_ANIMATIONS=full brings it back.
            self.animation_level = "none"

        self._store = store
        self._store_lock = threading.Lock()
        self.first = first
        self.waiting_first = first is not None  # no load starts before the first figures show
        self.home = home
        self.value = value or ValueModel()
        self._clock: Callable[[], datetime] = (now if callable(now) else (lambda: now)) if now else utcnow  # type: ignore[assignment,return-value]
        self.range_name = range_name
        self.filters = first.filters if first else range_filters(range_name, self._clock(), filters or Filters())
        self.refresh_count = 0
        self.live_every = live_every
        self.prefetch_tabs = prefetch_tabs
        self.active_runs = 0
        self._live_checked = False
        self._data_lock = threading.Lock()
        self._data: tuple[Any, Any] | None = None
        self.first_screen_frozen = False

    # -- state shared by the tabs ------------------------------------------------
    @property
    def store(self) -> Store:
        with self._store_lock:
            if callable(self._store):
                self._store = self._store()
            return self._store

    @property
    def load_key(self) -> tuple[Filters, int]:
        return (self.filters, self.refresh_count)

    def data(self, filters: Filters) -> Any:
        """The usage cube and attempts for `filters`, loaded once and shared by Overview and Usage."""
        from loopmeter.analytics.kpis import load

        key = (filters, self.refresh_count)
        with self._data_lock:
            if self._data is not None and self._data[0] == key:
                return self._data[1]
            data = load(self.store, filters, self.home)
            self._data = (key, data)
            return data

    def after_first_screen(self) -> None:
        """Once the first screen is up: compute the Usage tab's default grouping on a worker thread,
        and mount the hidden tabs one by one (their data loads later, see DataTab's prefetch)."""
        filters = self.filters

        def warm() -> None:
            UsageTab.computed(self.data(filters), filters)

        if self.prefetch_tabs:
            self.run_worker(warm, thread=True, group="warm", exit_on_error=False)
            self.set_timer(0.05, self._mount_next_hidden)

    def _mount_next_hidden(self) -> None:
        """Mount the hidden tabs one per short pause, so a switch meets at most one mount under way."""
        main = self.main_screen
        for tab_id, _title, _cls in TABS:
            if not main.query(f"#{tab_id}-tab"):
                self.tab_widget(tab_id)
                self.set_timer(0.05, self._mount_next_hidden)
                return

    def compose(self) -> ComposeResult:
        yield Static(id="topbar")
        with TabbedContent(id="tabs", initial="overview"):
            for tab_id, title, cls in TABS:
                with TabPane(title, id=tab_id):
                    # only the first tab now: the others mount when switched to, or one per 50 ms
                    # after the first screen (after_first_screen); ~0.3 s off the first screen
                    if tab_id == "overview":
                        yield cls(id=f"{tab_id}-tab")
        yield Footer()

    def on_mount(self) -> None:
        freeze_heap(self)  # the modules and caches loaded so far live as long as the app
        self._update_topbar()
        if self.first is not None:
            self._first_figures()  # then _start_loading
        else:
            self._start_loading()

    def _start_loading(self) -> None:
        self.current_tab().ensure_loaded()
        self._check_live()
        if self.live_every > 0:
            self.set_interval(self.live_every, self._check_live)

    @work(thread=True, exclusive=True, group="first")
    def _first_figures(self) -> None:
        """Wait for the child's Spend figures (no CPU of this process is taken meanwhile, see tui/first.py)."""
        assert self.first is not None
        spend = self.first.take(self.filters)
        self.call_from_thread(self._first_figures_arrived, spend)

    def _first_figures_arrived(self, spend: dict[str, Any] | None) -> None:
        if self._topbar() is None:
            return  # the app is closing
        self.waiting_first = False
        tab = self.tab_widget("overview")
        if spend is not None and tab.generation == 0 and isinstance(tab, OverviewTab):  # nothing newer asked for
            tab.show_spend(spend)
        self._start_loading()

    def on_unmount(self) -> None:
        thaw_heap(self)
        if self.first is not None:
            self.first.close()  # quit before the first figures came: stop their child, end the wait

    def current_tab(self) -> DataTab:
        active = self.main_screen.query_one("#tabs", TabbedContent).active or "overview"
        return self.tab_widget(active)

    def tab_widget(self, tab_id: str) -> DataTab:
        """The tab's content widget, mounted now if it was not yet (it is in the DOM at once)."""
        main = self.main_screen
        found = main.query(f"#{tab_id}-tab")
        if found:
            return found.first(DataTab)
        cls = next(c for t, _title, c in TABS if t == tab_id)
        widget = cls(id=f"{tab_id}-tab")
        main.query_one(f"#{tab_id}", TabPane).mount(widget)
        return widget

    def all_tabs(self) -> Iterator[DataTab]:
        """Every tab in order, each mounted when reached."""
        for tab_id, _title, _cls in TABS:
            yield self.tab_widget(tab_id)

    @property
    def main_screen(self) -> Any:
        """The tabs' screen, also while a run view or dialog is on top of it."""
        return self.screen_stack[0]

    def _topbar(self) -> Static | None:
        """The top bar; None once the app is closing and its widgets are gone."""
        if not self.screen_stack:
            return None
        found = self.main_screen.query("#topbar")
        return found.first(Static) if found else None

    def _update_topbar(self) -> None:
        bar = self._topbar()
        if bar is None:
            return
        live = f"  [b $success]● live: {self.active_runs} active[/]" if self.active_runs else ""
        others = self.filters.describe().split("  ", 1)
        extra = f"  {others[1]}" if len(others) > 1 else ""
        bar.update(f"[b]loopmeter[/]  {RANGE_LABELS.get(self.range_name, 'custom range')}{extra}{live}")

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = self.current_tab()

        def focus_table() -> None:
            tables = tab.query(DataTable)
            if tables:  # keys of the tab (and Enter on rows) work straight away
                tables.first().focus()

        if tab.is_mounted:
            focus_table()
        else:  # mounted just now: its table exists once it has composed
            tab.call_after_refresh(focus_table)
        if not self.waiting_first:
            tab.ensure_loaded()

    # -- actions -------------------------------------------------------------------
    def set_filters(self, filters: Filters, range_name: str | None = None) -> None:
        if range_name is not None:
            self.range_name = range_name
            filters = range_filters(range_name, self._clock(), filters) if range_name in RANGES else filters
        self.filters = filters
        self._update_topbar()
        self.current_tab().reload()

    def action_cycle_range(self) -> None:
        names = list(RANGES)
        nxt = names[(names.index(self.range_name) + 1) % len(names)] if self.range_name in names else "30d"
        self.set_filters(self.filters, nxt)

    def action_refresh(self) -> None:
        self.refresh_count += 1
        if self.range_name in RANGES:  # a named range moves with the clock
            self.filters = range_filters(self.range_name, self._clock(), self.filters)
        self._update_topbar()
        self.current_tab().reload()
        reload_view = getattr(self.screen, "reload", None)
        if self.screen is not self.main_screen and callable(reload_view):
            reload_view()  # the run view on top follows its run too

    def action_tab(self, tab_id: str) -> None:
        if self.screen is not self.main_screen:
            self.pop_screen()
        self.tab_widget(tab_id)  # mounted now if it never showed
        self.main_screen.query_one("#tabs", TabbedContent).active = tab_id

    def action_help(self) -> None:
        from loopmeter.tui.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_filters(self) -> None:
        from loopmeter.tui.filters import FilterScreen

        def apply(result: tuple[Filters, str] | None) -> None:
            if result is not None:
                self.set_filters(result[0], result[1])

        self.push_screen(FilterScreen(self.filters, self.range_name, self.known_values()), apply)

    def known_values(self) -> dict[str, list[str]]:
        """Values seen in the loaded usage cube, to offer in the filter selects."""
        if self._data is None:
            return {}
        cube = self._data[1].cube
        return {d: sorted(v for v in cube[d].dropna().unique()) for d in
                ("agent", "model", "provider", "source", "project", "user")}

    # -- live refresh --------------------------------------------------------------
    def _check_live(self) -> None:
        """Count active runs on a worker, unless the last count is still under way: a slow count
        (the store's first open on a busy machine) is let finish rather than cancelled each tick."""
        if not any(w.group == "live" and not w.is_finished for w in self.workers):
            self._count_live()

    @work(thread=True, group="live")
    def _count_live(self) -> None:
        from loopmeter.analytics.runs import active_runs

        n = active_runs(self.store)
        self.call_from_thread(self._live_result, n)

    def _live_result(self, n: int) -> None:
        if self._topbar() is None:
            return  # the check finished while the app was closing: nothing left to update
        was = self.active_runs
        self.active_runs = n
        self._update_topbar()
        loading = any(w.group == "load" and not w.is_finished for w in self.workers)
        if self._live_checked and (n or was) and not loading:  # runs are moving: what is on screen is out of date
            self.action_refresh()  # (a load under way is let finish: the next tick refreshes after it)
        self._live_checked = True
