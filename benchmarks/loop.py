"""Orchestration overhead of the agent loop per iteration, beyond the sandboxed check itself.

Runs the oracle backend on a tiny task whose check always fails (`false`), once with
--short iterations and once with --long iterations, in a fresh LOOPMETER_HOME. The
per-iteration overhead is the slope between the two runs after subtracting the time
spent inside the sandboxed check commands (their `sandbox.exec` spans):

    overhead/iter = ((T_long - C_long) - (T_short - C_short)) / (long - short)

It covers LangGraph steps and SQLite checkpoints, store writes (iteration rows, usage
sums), the oracle's file copy, tests copied in and out, and span export. Target: <= 50 ms.

    python benchmarks/loop.py [--sandbox bwrap|none] [--short 2] [--long 22] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_task(base: Path) -> Path:
    task = base / "task"
    (task / "repo").mkdir(parents=True)
    (task / "tests").mkdir()
    (task / "solution").mkdir()
    (task / "task.toml").write_text('id = "bench"\ninstruction = "bench"\ncheck = "false"\n')
    (task / "repo" / "a.txt").write_text("old\n")
    (task / "tests" / "t.txt").write_text("test\n")
    (task / "solution" / "a.txt").write_text("new\n")
    return task


def one_run(iters: int, sandbox: str, task_dir: Path) -> tuple[float, float]:
    """(total seconds of start_run, seconds inside check commands)."""
    from sqlmodel import select

    from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, start_run
    from loopmeter.store import Span, default_store
    from loopmeter.tasks import load_task

    store = default_store()
    task = load_task(task_dir)
    t0 = time.perf_counter()
    result = start_run(RunRequest(instruction=task.instruction, check="false", repo=None, task=task,
                                  agents=[AgentSpec("oracle")], sandbox=sandbox,
                                  budgets=Budgets(max_iters=iters, max_usd=None, max_minutes=None)), store=store)
    total = time.perf_counter() - t0
    assert result.attempts[0].iterations == iters, result
    with store.session() as s:
        spans = list(s.exec(select(Span).where(Span.run_id == result.run_id, Span.name == "sandbox.exec")))
    checks = [sp for sp in spans if json.loads(sp.attributes or "{}").get("loopmeter.sandbox.role") == "check"]
    assert len(checks) == iters, (len(checks), iters)
    return total, sum(sp.end_ns - sp.start_ns for sp in checks) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox", default="bwrap")
    ap.add_argument("--short", type=int, default=2)
    ap.add_argument("--long", type=int, default=22)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="loopmeter-bench-"))
    os.environ["LOOPMETER_HOME"] = str(home)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    sys.path.insert(0, str(ROOT))
    task_dir = make_task(home)
    one_run(1, args.sandbox, task_dir)  # warm-up: imports, sandbox probe
    slopes, per_check, setups = [], [], []
    for _ in range(args.repeat):
        t_s, c_s = one_run(args.short, args.sandbox, task_dir)
        t_l, c_l = one_run(args.long, args.sandbox, task_dir)
        slope = ((t_l - c_l) - (t_s - c_s)) / (args.long - args.short)
        slopes.append(slope)
        per_check.append(c_l / args.long)
        setups.append((t_s - c_s) - slope * args.short)
    print(f"sandbox={args.sandbox}  iterations {args.short} vs {args.long}, {args.repeat} repeats")
    print(f"orchestration overhead per iteration  median {statistics.median(slopes) * 1000:7.1f} ms"
          f"  (min {min(slopes) * 1000:.1f}, max {max(slopes) * 1000:.1f})   target <= 50 ms")
    print(f"sandboxed check (`false`) per iteration median {statistics.median(per_check) * 1000:7.1f} ms")
    print(f"per-run setup (run record, worktree, graphs) median {statistics.median(setups) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
