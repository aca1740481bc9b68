"""`?`: the keys, in one small dialog."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = """[b]keys[/]
  1-7 / tab      Overview Usage Runs Evals Policy Outcomes Vendors
  d              next date range (24h, 7d, 30d, 90d, all)
  f              filters: range, agent, model, provider, source, project, user, repo
  r              refresh now (runs in progress refresh by themselves)
  enter          open a run, an attempt, or a PR's sessions (Outcomes)
  escape         back / close
  g  s  /        Usage: group by next dimension, sort by next column, filter rows
  ?              this help          q  quit
[dim]every figure is defined in docs/metrics.md[/]"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "close"), Binding("question_mark", "app.pop_screen", "close"),
                Binding("q", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Static(KEYS)
