"""Budgets (iterations, USD, tokens, wall time) and what is left of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from loopmeter.vocab import StopKind


@dataclass
class Budgets:
    """Limits for one attempt (or, as `run_budgets`, for all attempts of a run together). None = no limit."""

    max_iters: int | None = 5
    max_usd: float | None = 2.0
    max_tokens: int | None = None
    max_minutes: float | None = 20.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Budgets | None:
        return None if data is None else cls(**data)


@dataclass
class Spent:
    iterations: int = 0
    usd: float = 0.0
    tokens: int = 0
    wall_s: float = 0.0


@dataclass(frozen=True)
class Stop:
    """Why an attempt stops: the kind decides its status, the reason is for people."""

    kind: StopKind
    reason: str  # "budget: usd 2.01 >= 2.00 (attempt)"


def exceeded(budgets: Budgets | None, spent: Spent, scope: str = "attempt") -> Stop | None:
    """The first budget that is spent, else None."""
    if budgets is None:
        return None
    if budgets.max_usd is not None and spent.usd >= budgets.max_usd:
        return Stop(StopKind.USD, f"budget: usd {spent.usd:.4f} >= {budgets.max_usd:.4f} ({scope})")
    if budgets.max_tokens is not None and spent.tokens >= budgets.max_tokens:
        return Stop(StopKind.TOKENS, f"budget: tokens {spent.tokens} >= {budgets.max_tokens} ({scope})")
    if budgets.max_minutes is not None and spent.wall_s >= budgets.max_minutes * 60:
        return Stop(StopKind.WALL_TIME,
                    f"budget: wall time {spent.wall_s:.1f}s >= {budgets.max_minutes * 60:.1f}s ({scope})")
    if budgets.max_iters is not None and spent.iterations >= budgets.max_iters:
        return Stop(StopKind.ITERATIONS, f"budget: iterations {spent.iterations} >= {budgets.max_iters} ({scope})")
    return None


# A backend's StepResult.stopped_by code -> the limit it names, for a backend that does not give
# the kind itself. Codes not listed (max_turns, max_minutes, cancelled, memory, output...) are the
# agent's own limits: status "budget". The "budget: ..." codes are the builtin agent's, as a
# checkpoint written before it gave the kind still holds them.
_BACKEND_STOPS = {
    "timeout": StopKind.WALL_TIME, "budget: wall time": StopKind.WALL_TIME,
    "max_usd": StopKind.USD, "budget: usd": StopKind.USD,
    "max_tokens": StopKind.TOKENS, "budget: tokens": StopKind.TOKENS,
}


def backend_stop(stopped_by: str, kind: StopKind | None = None) -> Stop:
    """The stop a backend reported when it ended its step at a limit: the kind it gave, else
    the kind its code names."""
    reason = stopped_by if stopped_by.startswith("budget") else f"budget: {stopped_by}"
    return Stop(kind or _BACKEND_STOPS.get(stopped_by, StopKind.AGENT_LIMIT), reason)


def remaining(budgets: Budgets | None, spent: Spent) -> tuple[float | None, float | None, int | None]:
    """(seconds, usd, tokens) left; None where there is no limit."""
    if budgets is None:
        return None, None, None
    secs = None if budgets.max_minutes is None else max(budgets.max_minutes * 60 - spent.wall_s, 0.0)
    usd = None if budgets.max_usd is None else max(budgets.max_usd - spent.usd, 0.0)
    toks = None if budgets.max_tokens is None else max(budgets.max_tokens - spent.tokens, 0)
    return secs, usd, toks


def tighter(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
