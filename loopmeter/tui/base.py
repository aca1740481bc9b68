"""What every tab shares: load in a thread worker, drop results that arrived for old filters."""

from __future__ import annotations

import gc
import weakref
from typing import TYPE_CHECKING, Any

from textual import work
from textual.containers import Container
from textual.worker import get_current_worker

if TYPE_CHECKING:
    from loopmeter.tui.app import LoopmeterApp

_frozen_for: weakref.WeakSet[Any] = weakref.WeakSet()  # apps whose start-up heap is frozen (normally one)


def freeze_startup_heap(app: Any) -> bool:
    """Move what start-up built (modules, widgets, caches) out of the garbage collector's sight.

    With pandas, SQLAlchemy and Textual loaded, a full collection walks ~150k objects and stalls the
    UI thread for ~100 ms, often in the middle of a tab switch; frozen objects are not walked again.
    """
    if app in _frozen_for:
        return False
    _frozen_for.add(app)
    gc.freeze()
    return True


def thaw_startup_heap(app: Any) -> None:
    """Undo freeze_startup_heap when its app exits, so a process that runs several apps collects them."""
    _frozen_for.discard(app)
    if not _frozen_for:
        gc.unfreeze()


class DataTab(Container):
    """A tab whose content comes from one `fetch(filters)` call run off the UI thread."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.generation = 0  # bumped per request; a result for an older generation is dropped
        self.shown_generation = -1
        self.loaded_key: Any = None
        self.froze_heap = False

    @property
    def lm(self) -> LoopmeterApp:
        return self.app  # type: ignore[return-value]

    def ensure_loaded(self) -> None:
        if self.loaded_key != self.lm.load_key:
            self.reload()

    def reload(self) -> None:
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
        self.remove_class("-loading")
        if isinstance(result, Exception):
            self.app.notify(f"{type(self).__name__}: {result}", severity="error", timeout=8)
            self.shown_generation = generation
            return
        self.show(result)
        self.shown_generation = generation
        if not self.froze_heap:  # the first screen is up: what exists now lives as long as the app
            self.froze_heap = freeze_startup_heap(self.app)
        if self.lm.prefetch_tabs:  # once the screen has been drawn and read for a moment
            self.lm.set_timer(0.5, self.lm.prefetch)

    def on_unmount(self) -> None:
        if self.froze_heap:
            thaw_startup_heap(self.app)

    @property
    def ready(self) -> bool:
        return self.shown_generation == self.generation and self.generation > 0

    def fetch(self, filters: Any) -> Any:  # runs in a worker thread
        raise NotImplementedError

    def show(self, result: Any) -> None:  # runs on the UI thread
        raise NotImplementedError
