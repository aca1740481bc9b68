"""What every tab shares: load in a thread worker, drop results that arrived for old filters."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from textual import work
from textual.containers import Container
from textual.coordinate import Coordinate
from textual.timer import Timer
from textual.widgets import DataTable
from textual.worker import get_current_worker

if TYPE_CHECKING:
    from loopmeter.tui.app import LoopmeterApp

_frozen_for: weakref.WeakSet[Any] = weakref.WeakSet()  # apps whose start-up heap is frozen (normally one)
_prefetch_timers: weakref.WeakKeyDictionary[Any, Timer] = weakref.WeakKeyDictionary()
READ_PAUSE_S = 0.5  # prefetch once the screen has been drawn and read this long without a switch
NEXT_PREFETCH_S = 0.02  # then one hidden tab after another, so a switch meets at most one load


def freeze_heap(app: Any) -> None:
    """Move what exists now (modules, widgets, caches) out of the garbage collector's sight, until
    `thaw_heap(app)`. The app calls it when it mounts and once more when its first screen is up.

    With pandas, SQLAlchemy and Textual loaded, a full collection walks ~150k objects and stalls the
    UI thread for ~100 ms (measured: 0.2 s of the first screen, and tab switches); frozen objects
    are not walked again.
    """
    _frozen_for.add(app)
    gc.freeze()


def thaw_heap(app: Any) -> None:
    """Undo freeze_heap when its app exits, so a process that runs several apps collects them."""
    _frozen_for.discard(app)
    if not _frozen_for:
        gc.unfreeze()


class PagedTable(DataTable[Any]):
    """A DataTable handed all its rows at once that adds them a page at a time.

    Measuring and laying out 200 rows took the UI thread ~20 ms of a tab's first draw; the first page
    fills the screen and the next is added as the cursor or the scroll position nears the last one.
    """

    PAGE = 60

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending_rows: list[Any] = []
        self._adding = False  # add_rows moves the cursor row by row; those moves must not add more

    def set_rows(self, rows: Iterable[Any]) -> None:
        self.clear()
        self.pending_rows = list(rows)
        self._add_page()

    def _add_page(self, everything: bool = False) -> None:
        n = len(self.pending_rows) if everything else self.PAGE
        page, self.pending_rows = self.pending_rows[:n], self.pending_rows[n:]
        if page:
            self._adding = True
            try:
                self.add_rows(page)
            finally:
                self._adding = False

    def _add_if_near_end(self) -> None:
        if self.pending_rows and not self._adding:
            seen = max(self.cursor_row, int(self.scroll_y) + self.size.height)
            if seen >= self.row_count - max(self.size.height, 20):
                self._add_page()

    def watch_cursor_coordinate(self, old_coordinate: Coordinate, new_coordinate: Coordinate) -> None:
        super().watch_cursor_coordinate(old_coordinate, new_coordinate)
        self._add_if_near_end()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._add_if_near_end()

    def action_scroll_bottom(self) -> None:
        self._add_page(everything=True)
        super().action_scroll_bottom()


class DataTab(Container):
    """A tab whose content comes from one `fetch(filters)` call run off the UI thread."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.generation = 0  # bumped per request; a result for an older generation is dropped
        self.shown_generation = -1
        self.loaded_key: Any = None

    @property
    def lm(self) -> LoopmeterApp:
        return self.app  # type: ignore[return-value]

    def ensure_loaded(self) -> None:
        if self.loaded_key != self.lm.load_key:
            self.reload()
        elif self._on_screen():  # a switch to a loaded tab: the person reads again before more loading
            self._prefetch_later(READ_PAUSE_S, only_if_pending=True)

    def reload(self) -> None:
        if self._on_screen():  # someone waits for this tab: hold prefetching until it has shown
            self._cancel_prefetch()
        self.generation += 1
        self.loaded_key = self.lm.load_key
        if self.shown_generation >= 0:  # dim what is shown until its update arrives (restyles the whole tab)
            self.add_class("-loading")
        self._load(self.generation, self.lm.filters)

    @work(thread=True, exclusive=True, group="load")
    def _load(self, generation: int, filters: Any) -> None:
        try:
            result = self.fetch(filters)
        except Exception as exc:  # noqa: BLE001 - shown in the tab, the app keeps running
            result = exc
        if get_current_worker().is_cancelled:
            return
        self.app.call_from_thread(self._deliver, generation, result)

    def _deliver(self, generation: int, result: Any) -> None:
        if generation != self.generation:
            return  # stale: the filters changed while this was loading
        if not self.is_mounted:  # a tab mounted on its first visit: show once its widgets exist
            self.call_after_refresh(self._deliver, generation, result)
            return
        self.remove_class("-loading")
        if isinstance(result, Exception):
            self.app.notify(f"{type(self).__name__}: {result}", severity="error", timeout=8)
        else:
            self.show(result)
            if not self.lm.first_screen_frozen:  # the first screen is up: what exists now lives as long as the app
                self.lm.first_screen_frozen = True
                freeze_heap(self.app)
                self.lm.after_first_screen()
        self.shown_generation = generation
        if self.lm.prefetch_tabs:
            self._prefetch_later(READ_PAUSE_S if self._on_screen() else NEXT_PREFETCH_S)

    # -- prefetching hidden tabs, one at a time, while nobody is switching ------------
    def _on_screen(self) -> bool:
        try:
            return self.lm.current_tab() is self
        except Exception:  # noqa: BLE001 - during mount or shutdown there is no current tab
            return False

    def _cancel_prefetch(self) -> None:
        timer = _prefetch_timers.pop(self.app, None)
        if timer is not None:
            timer.stop()

    def _prefetch_later(self, delay: float, *, only_if_pending: bool = False) -> None:
        if only_if_pending and self.app not in _prefetch_timers:
            return
        self._cancel_prefetch()
        if self.lm.prefetch_tabs:
            _prefetch_timers[self.app] = self.app.set_timer(delay, self._prefetch_next)

    def _prefetch_next(self) -> None:
        """Load the first hidden tab that is out of date (mounting it if it never showed); its
        delivery schedules the next."""
        _prefetch_timers.pop(self.app, None)
        for tab in self.lm.all_tabs():
            if tab.loaded_key != self.lm.load_key:
                tab.reload()
                return

    @property
    def ready(self) -> bool:
        return self.shown_generation == self.generation and self.generation > 0

    def fetch(self, filters: Any) -> Any:  # runs in a worker thread
        raise NotImplementedError

    def show(self, result: Any) -> None:  # runs on the UI thread
        raise NotImplementedError
