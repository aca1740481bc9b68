"""`eval status`: where the cells of an eval stand, read from the shared store (any executor, any node).

done      a stored result row (passed or not); `failed` = done and not passed, `errors` = an error_kind
running   a child run of a coding cell still running, with the node its eval_meta names
pending   neither (not started yet, or cancelled and waiting for `eval resume`)
"""

from __future__ import annotations

import json
from typing import Any

from loopmeter.vocab import RunStatus


def eval_status(store: Any, run_id: str) -> dict[str, Any]:
    from sqlmodel import select

    from loopmeter.evals.report import find_eval_run
    from loopmeter.executors.base import child_runs, eval_meta
    from loopmeter.store import EvalResult

    run = find_eval_run(store, run_id)
    config = json.loads(run.config or "{}")
    with store.session() as s:
        rows = [(r.config, r.task_id, r.epoch, r.passed, r.error_kind)
                for r in s.exec(select(EvalResult).where(EvalResult.run_id == run.id))]
    stored = {(c, t, e) for c, t, e, _, _ in rows}
    running = []
    for child in child_runs(store, run.id):
        meta = eval_meta(child)
        key = (meta.get("config"), meta.get("task_id"), meta.get("epoch"))
        if child.status in (RunStatus.RUNNING, RunStatus.WAITING) and key not in stored:
            running.append({"config": key[0], "task_id": key[1], "epoch": key[2], "node": meta.get("node"),
                            "child_run": child.id, "started_at": child.started_at.isoformat()
                            if child.started_at else None})
    running.sort(key=lambda r: (str(r["config"]), str(r["task_id"]), r["epoch"] or 0))
    total = int(config.get("cells_total") or 0)
    done = len(rows)
    return {
        "run_id": run.id, "suite": run.suite, "status": run.status, "executor": config.get("executor", "local"),
        "total": total, "pending": max(total - done - len(running), 0), "running": running, "done": done,
        "passed": sum(1 for r in rows if r[3]), "failed": sum(1 for r in rows if not r[3]),
        "errors": sum(1 for r in rows if r[4]),
    }
