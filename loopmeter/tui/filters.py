"""The filter dialog: date range plus agent, model, provider, source, project, user and repo."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from loopmeter.analytics.filters import RANGE_LABELS, Filters

FIELDS = ("agent", "model", "provider", "source", "project", "user")


class FilterScreen(ModalScreen[tuple[Filters, str] | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, filters: Filters, range_name: str, known: dict[str, list[str]]):
        super().__init__()
        self.filters = filters
        self.range_name = range_name
        self.known = known

    def compose(self) -> ComposeResult:
        with Vertical(id="filter-dialog"):
            with Grid(id="filter-grid"):
                yield Label("range")
                yield Select([(label, name) for name, label in RANGE_LABELS.items()], value=self.range_name,
                             allow_blank=False, id="f-range")
                for name in FIELDS:
                    yield Label(name)
                    current = getattr(self.filters, name)
                    options = list(dict.fromkeys([*self.known.get(name, []), *([current] if current else [])]))
                    yield Select([(o[-40:], o) for o in options], prompt=f"all {name}s",
                                 value=current if current else Select.NULL, id=f"f-{name}")
                yield Label("repo")
                yield Input(value=self.filters.repo or "", placeholder="repo path (runs)", id="f-repo")
            with Horizontal(id="filter-buttons"):
                yield Button("apply", variant="primary", id="apply")
                yield Button("clear", id="clear")
                yield Button("cancel", id="cancel")

    def _value(self, name: str) -> Any:
        v = self.query_one(f"#f-{name}", Select).value
        return None if v is Select.NULL else v

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            changes = {name: self._value(name) for name in FIELDS}
            changes["repo"] = self.query_one("#f-repo", Input).value.strip() or None
            self.dismiss((self.filters.replace(**changes), str(self._value("range"))))
        elif event.button.id == "clear":
            self.dismiss((Filters(timezone=self.filters.timezone), str(self._value("range"))))
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
