"""What one model call cost: the one function every source prices its calls with (agent output,
agent logs, OTLP, the built-in agent, model eval tasks).

Light on purpose (records only): log ingest workers price ~150k calls per GB through it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loopmeter.records import UsageRow
from loopmeter.vocab import CostSource


def price_call(table: Any, model: str | None, provider: str | None, at: str | datetime,
               input_tokens: int | None, output_tokens: int | None, cache_read_tokens: int | None,
               cache_write_tokens: int | None, cache_write_1h_tokens: int | None,
               reported: float | None = None) -> tuple[float | None, CostSource, str | None]:
    """(cost_usd, cost_source, price_table_sha256) of one call made at `at` (the store's UTC text,
    or a datetime): the source's own figure when it `reported` one; else its tokens at the price
    of the call's UTC date in `table` (telemetry/pricing.py), whose sha256 is kept; else unpriced —
    no price for the model then, no table, or no token count at all — with cost None, never 0."""
    if reported is not None:
        return float(reported), CostSource.REPORTED, None
    if table is None or (input_tokens is None and output_tokens is None):
        return None, CostSource.UNPRICED, None
    day = at if isinstance(at, str) else (at.astimezone(UTC) if at.tzinfo else at).strftime("%Y-%m-%d")
    cost = table.cost_of(model, provider, input_tokens or 0, output_tokens or 0, cache_read_tokens or 0,
                         cache_write_tokens or 0, cache_write_1h_tokens or 0, day)
    if cost is None:
        return None, CostSource.UNPRICED, None
    return cost, CostSource.CALCULATED, table.sha256


def price_row(row: UsageRow, table: Any, reported: float | None = None) -> UsageRow:
    """`price_call` on a UsageRow, in place (and returned). `table` is a PriceTable
    (`pricing.default_price_table()` for the configured one) or None (unpriced unless reported)."""
    row.cost_usd, row.cost_source, row.price_table_sha256 = price_call(
        table, row.model, row.provider, row.ts, row.input_tokens, row.output_tokens, row.cache_read_tokens,
        row.cache_write_tokens, row.cache_write_1h_tokens, reported)
    return row
