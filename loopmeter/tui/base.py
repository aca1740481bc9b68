"""What every tab shares: load in a thread worker, drop results that arrived for old filters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import work
from textual.containers import Container
from textual.worker import get_current_worker

if TYPE_CHECKING:
    from loopmeter.tui.app import LoopmeterApp


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

    def reload(self) -> None:
        self.generation += 1
        self.loaded_key = self.lm.load_key
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
        if self.lm.prefetch_tabs:  # once the screen has been drawn and read for a moment
            self.lm.set_timer(0.5, self.lm.prefetch)

    @property
    def ready(self) -> bool:
        return self.shown_generation == self.generation and self.generation > 0

    def fetch(self, filters: Any) -> Any:  # runs in a worker thread
        raise NotImplementedError

    def show(self, result: Any) -> None:  # runs on the UI thread
        raise NotImplementedError
