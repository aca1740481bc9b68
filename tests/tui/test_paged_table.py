"""PagedTable: the first page at once, the rest as the cursor or scroll nears the end; same rows, same order."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from loopmeter.tui.base import PagedTable

ROWS = [(f"r{i:03d}", str(i)) for i in range(200)]


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield PagedTable(id="t", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one(PagedTable)
        table.add_columns("name", "n")
        table.set_rows(ROWS)
        table.focus()


def shown(table: PagedTable) -> list[str]:
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


@pytest.mark.anyio
async def test_rows_arrive_a_page_at_a_time_as_the_cursor_moves_down():
    app = TableApp()
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(PagedTable)
        assert table.row_count == PagedTable.PAGE
        for _ in range(3):
            await pilot.press("pagedown")
            await pilot.pause()
        assert PagedTable.PAGE < table.row_count <= len(ROWS)
        assert shown(table) == [r[0] for r in ROWS[:table.row_count]]


@pytest.mark.anyio
async def test_bottom_loads_every_row_and_a_new_set_starts_over():
    app = TableApp()
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(PagedTable)
        await pilot.press("ctrl+end")
        await pilot.pause()
        assert table.row_count == len(ROWS) and table.cursor_row == len(ROWS) - 1
        table.set_rows(ROWS[:10])
        await pilot.pause()
        assert shown(table) == [r[0] for r in ROWS[:10]] and table.pending_rows == []
