"""`loopmeter runs show` and `runs list` in a subprocess: an attempt that made no model call costs $0,
an unpriced one reads unpriced, and a cancelled attempt counts the iterations it lists."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta

from loopmeter.records import UsageRow
from loopmeter.vocab import CostSource
from tests.conftest import loopmeter_cmd

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _show(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "200"}  # the list table keeps one line per run
    out = subprocess.run(loopmeter_cmd("runs", *args), capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _attempt_lines(text: str) -> dict[str, str]:
    """Attempt id -> its header and detail lines."""
    blocks = text.split("\n== ")[1:]
    return {b.split()[0]: b for b in blocks}


def test_no_model_call_is_zero_dollars_unpriced_stays_unpriced_and_cancelled_counts_its_iterations(store):
    from loopmeter.store import Attempt, Iteration, Run

    with store.session() as s:
        s.add(Run(id="01RUNSHOW", kind="loop", task="t", status="cancelled", started_at=T0))
        # what the loop leaves when a run is cancelled mid-attempt: the counter still 0, two iterations stored
        s.add(Attempt(id="01RUNSHOW-0", run_id="01RUNSHOW", agent="nop", status="cancelled", iterations=0,
                      cost_usd=None, unpriced_calls=0, started_at=T0))
        s.add(Attempt(id="01RUNSHOW-1", run_id="01RUNSHOW", agent="codex", status="failed", iterations=1,
                      cost_usd=None, unpriced_calls=1, input_tokens=10, started_at=T0))
        for n in (1, 2):
            s.add(Iteration(attempt_id="01RUNSHOW-0", n=n, started_at=T0 + timedelta(seconds=n), act_exit=0,
                            check_exit=1, check_passed=False))
        s.add(Iteration(attempt_id="01RUNSHOW-1", n=1, started_at=T0, act_exit=0, check_exit=1, check_passed=False))
        s.commit()
    store.add_usage([UsageRow(key="runshow:1", source="codex-json", ts=T0, model="no-such-model", agent="codex",
                              input_tokens=10, cost_source=CostSource.UNPRICED, run_id="01RUNSHOW",
                              attempt_id="01RUNSHOW-1")])

    attempts = _attempt_lines(_show("show", "01RUNSHOW"))
    nop, codex = attempts["01RUNSHOW-0"], attempts["01RUNSHOW-1"]
    assert "iterations 2 " in nop and "#2:" in nop
    assert "cost $0.00 (no model calls)" in nop and "unpriced" not in nop
    assert "iterations 1 " in codex and "cost unpriced " in codex and "model calls: 1" in codex

    listed = next(line for line in _show("list").splitlines() if "01RUNSHOW" in line)
    assert "unpriced" in listed and "$" not in listed  # one unpriced call, nothing priced


def test_a_run_without_any_model_call_lists_at_zero_dollars(store):
    from loopmeter.store import Attempt, Run

    with store.session() as s:
        s.add(Run(id="01RUNNOCALL", kind="loop", task="t", status="passed", started_at=T0))
        s.add(Attempt(id="01RUNNOCALL-0", run_id="01RUNNOCALL", agent="oracle", status="passed", iterations=1,
                      started_at=T0))
        s.commit()
    listed = next(line for line in _show("list").splitlines() if "01RUNNOCALL" in line)
    assert "$0.00" in listed and "unpriced" not in listed
