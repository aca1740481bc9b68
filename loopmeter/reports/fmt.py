"""How figures read, the same on screen and in reports: money, durations, ratios, unpriced counts."""

from __future__ import annotations

from typing import Any

DASH = "—"


def missing(v: Any) -> bool:
    """None or NaN (pandas turns None into NaN in float columns)."""
    return v is None or (isinstance(v, float) and v != v)


def money(v: float | None, unpriced: int = 0, *, note: bool = True, what: str = "call") -> str:
    """A dollar amount as every face prints it: $1,284.10, $12,841 from $10,000 up, <$0.01 for a
    positive amount that would round to $0.00. No amount (None) reads 'unpriced' when `unpriced`
    calls had no price, else '—' (nothing to show). A partly unpriced amount is the priced part and
    says how many calls are not in it: '$3.20 + 2 unpriced calls' (`note=False` where a column of
    its own says it; `what` names the unit: call, cell, attempt). Never $0 for unknown."""
    if missing(v):
        return "unpriced" if unpriced else DASH
    assert v is not None
    if 0 < v < 0.005:
        text = "<$0.01"
    else:
        sign, a = ("-" if v < 0 else ""), abs(v)
        text = f"{sign}${a:,.0f}" if a >= 10_000 else f"{sign}${a:,.2f}"
    return f"{text} {unpriced_note(unpriced, what)}" if note and unpriced else text


def money_per(v: float | None, cost: float | None, unpriced: int) -> str:
    """A cost divided by a count (per verified outcome, per merged outcome): 'unpriced' when the
    cost is (`unpriced` calls and no priced one), '—' when the count is 0, else `money`."""
    return money(v, unpriced if missing(cost) else 0, note=False)


def unpriced_note(n: int, what: str = "call") -> str:
    """'+ 3 unpriced calls': what an amount beside it leaves out."""
    return f"+ {n:,} unpriced {what}{'s' if n != 1 else ''}" if n else ""


def duration(seconds: float | None) -> str:
    if seconds is None or missing(seconds):
        return DASH
    if seconds < 9.95:  # a check that went green in 0.3s should not read "0s"
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def pct(v: float | None, digits: int = 0) -> str:
    return DASH if v is None or missing(v) else f"{v * 100:.{digits}f}%"


def num(v: float | int | None, digits: int = 0) -> str:
    if v is None or missing(v):
        return DASH
    return f"{v:,.{digits}f}" if digits else f"{int(round(v)):,}"


def tokens(v: int | None) -> str:
    if v is None or missing(v):
        return DASH
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.1f}{unit}"
    return str(int(v))


def roi_text(roi: dict[str, Any]) -> str:
    if not roi.get("shown"):
        return "not shown"
    return DASH if roi.get("roi") is None else f"{roi['roi']:.1f}×"


def ci(low: float | None, high: float | None) -> str:
    return DASH if low is None or high is None or missing(low) or missing(high) else f"[{low * 100:.0f}%, {high * 100:.0f}%]"
