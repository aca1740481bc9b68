"""The Spend box: what was spent in a filter's range, summed in SQL, under the tier rule.

    from loopmeter.analytics import spend_box
    box = spend_box.compute(Db(store), filters).box

One definition read by every face: the dashboard's first figure (in a child process while the
screen starts, loopmeter/tui/first.py), every dashboard refresh and `loopmeter report` (both
through `kpis.load`). It needs the stdlib alone on a SQLite store (no pandas, no SQLAlchemy),
so a fresh process gets the figure in a fraction of a second: the usage sums per UTC day come
from `sums.day_sums`, a vendor's own figures from `tiers.vendor_figures`, and `tiers.decide`
picks per day and vendor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from loopmeter.analytics import tiers
from loopmeter.analytics.filters import Filters
from loopmeter.analytics.sums import Db, cache_hit_ratio, day_sums
from loopmeter.vocab import CostSource

TOKEN_KINDS = ("input", "cache_read", "cache_write", "output", "reasoning")  # rollup.MEASURES' token sums, in order


def summary(by_source: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """Usage sums as the Spend box shows them: total cost (priced calls only; None when every call
    is unpriced), unpriced calls beside it, tokens by kind, cache hit ratio, cost by provenance.
    `by_source`: rows (cost source, *rollup.MEASURES), any number per source."""
    calls = unpriced = 0
    cost = 0.0
    tokens = dict.fromkeys(TOKEN_KINDS, 0)
    by_cost_source: dict[str, float] = {}
    for source, n, n_unpriced, dollars, *counts in by_source:
        calls, unpriced, cost = calls + n, unpriced + n_unpriced, cost + dollars
        for kind, count in zip(TOKEN_KINDS, counts, strict=True):
            tokens[kind] += count
        by_cost_source[source] = by_cost_source.get(source, 0.0) + dollars
    priced = calls - unpriced
    return {
        "cost_usd": round(cost, 6) if priced or not calls else None,
        "calls": calls,
        "unpriced_calls": unpriced,
        "priced_calls": priced,
        "tokens": tokens,
        "cache_hit_ratio": cache_hit_ratio(tokens["input"], tokens["cache_read"], tokens["cache_write"]),
        "cost_by_provenance": {k: round(v, 6) for k, v in sorted(by_cost_source.items())
                               if k != CostSource.UNPRICED},
    }


@dataclass
class Spend:
    """The Spend box and what it was decided from."""

    box: dict[str, Any]  # summary() of what was measured, with the tier rule's total in `cost_usd`
    decided: list[dict[str, Any]]  # tiers.decide's rows per UTC day and vendor
    vendor: list[tiers.Figure]  # the vendors' own figures in range


def compute(db: Db, filters: Filters) -> Spend:
    """The Spend box for `filters`: what was measured (`summary`, kept as `measured_usd`), with a
    vendor's own figure in place of what was measured on the days it covers (`tiers`)."""
    rows = day_sums(db, filters)
    box = summary((r[3], *r[6:]) for r in rows)
    vendor = tiers.vendor_figures(db, filters)
    decided, tiered = tiers.spend(tiers.measured_figures(rows), vendor)
    box["measured_usd"] = box["cost_usd"]
    box["tiers"] = tiered
    if tiered["vendor_days"]:  # a vendor's figure replaced what was measured on some days
        box["cost_usd"] = tiered["cost_usd"]
    return Spend(box, decided, vendor)
