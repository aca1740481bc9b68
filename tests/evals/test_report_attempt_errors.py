"""`eval report` on a `loopmeter run` reads each attempt's stored error kind, as an eval cell's is.

Real SQLite store, attempts seeded as a finished run leaves them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from loopmeter.records import utcnow


def test_a_runs_errored_attempts_are_counted_by_the_kind_they_stored(store: Any) -> None:
    from loopmeter.evals.report import summarize_run
    from loopmeter.store import Attempt, Run

    start = utcnow()

    def attempt(n: int, agent: str, status: str, error_kind: str | None = None, **kw: Any) -> Attempt:
        return Attempt(id=f"R-{n}", run_id="R", agent=agent, status=status, error_kind=error_kind,
                       stop_reason=f"{status}: ended", started_at=start + timedelta(seconds=n), **kw)

    store.save(
        Run(id="R", task="fix it", status="failed", started_at=start),
        attempt(1, "builtin", "error", "auth", model="openai/gpt-4o-mini"),
        attempt(2, "claude", "error"),  # stored before attempts kept their kind: infra
        attempt(3, "codex", "cancelled"),
        attempt(4, "nop", "failed"),  # a failed check is a failure, not an error
    )

    configs = {c["config"]: c for c in summarize_run(store, "R")["configs"]}
    kinds = {name: (c["errors"], c["error_kinds"]) for name, c in configs.items()}
    assert kinds == {"builtin:openai/gpt-4o-mini": (1, {"auth": 1}), "claude": (1, {"infra": 1}),
                     "codex": (1, {"cancelled": 1}), "nop": (0, {})}
    assert all(c["n_cells"] == 1 and c["passed"] == 0 for c in configs.values())  # errors stay in the denominator
