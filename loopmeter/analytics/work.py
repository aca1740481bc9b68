"""An attempt's (or a run's, or an eval cell's) figures that must read the same on every face:
its cost when some or all of its calls have no price, and its iteration count.

Light on purpose (no pandas): `runs show` and the eval runner use it too.
"""

from __future__ import annotations


def work_cost(cost_usd: float | None, unpriced_calls: int | None) -> float | None:
    """The cost of a piece of work from the sum of its priced calls (None when it has none) and
    its count of unpriced calls: $0 when it made no model call at all (nothing was spent, so the
    cost is known), None (unpriced, never $0) when every call it made is unpriced."""
    if cost_usd is None and not unpriced_calls:
        return 0.0
    return cost_usd


def iterations_done(counter: int | None, recorded: int) -> int:
    """An attempt's iterations: the iterations recorded for it. Its own counter is only written
    when it finishes, so a cancelled attempt keeps 0 beside the iterations it ran."""
    return max(counter or 0, recorded)
