"""Eval summaries: per-configuration statistics and pairwise comparisons, as dicts.

`summarize_run` gives the `--json` shape documented in docs/evals.md:
{"run_id", "suite", "configs": [...], "comparisons": [...]} (plus a few extra keys).
Rendering to markdown and HTML lives in `evals/render.py`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from loopmeter.analytics.work import work_cost
from loopmeter.errors import LoopmeterError
from loopmeter.evals import stats
from loopmeter.vocab import AttemptStatus, ErrorKind

TOKEN_KINDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


@dataclass
class CellRow:
    """One (configuration, task, epoch) result, from eval_result or from a run's attempts."""

    config: str
    agent: str
    model: str | None
    task_id: str
    epoch: int
    passed: bool
    score: float | None
    wall_s: float | None
    latency_ms: float | None
    tokens: dict[str, int | None]
    cost_usd: float | None
    error_kind: str | None


def _round(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(x, nd)


def _ci(pair: tuple[float, float] | None, nd: int = 6) -> list[float] | None:
    return None if pair is None else [round(pair[0], nd), round(pair[1], nd)]


def by_task(rows: list[CellRow]) -> dict[str, list[float]]:
    """task -> pass scores (1.0 / 0.0) in epoch order: the clusters the statistics use."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        out[r.task_id].append((r.epoch, 1.0 if r.passed else 0.0))
    return {t: [s for _, s in sorted(v)] for t, v in out.items()}


def config_summary(name: str, rows: list[CellRow], n_boot: int = stats.N_BOOT,
                   seed: int = stats.DEFAULT_SEED) -> dict[str, Any]:
    """The summary of one configuration's cells (docs/evals.md): what `eval report`, `eval compare`,
    `loopmeter report` and the dashboard's Evals tab all show. Costs: `cost_usd` is the priced cells'
    sum (None when none is priced); per task it is divided by cells, per solved by passes; both are
    None (unpriced) when any cell is unpriced, and `unpriced_cells` says how many."""
    clusters = by_task(rows)
    tasks = sorted(clusters)
    n_cells = len(rows)
    n_pass = sum(r.passed for r in rows)
    counts = [(len(clusters[t]), int(sum(clusters[t]))) for t in tasks]
    walls = [r.wall_s for r in rows if r.wall_s is not None]
    lats = [r.latency_ms for r in rows if r.latency_ms is not None]
    scores = [r.score for r in rows if r.score is not None]
    unpriced = sum(1 for r in rows if r.cost_usd is None)
    priced_total = sum(r.cost_usd or 0.0 for r in rows)
    cost_by_task: dict[str, float] = defaultdict(float)
    cells_by_task: dict[str, int] = defaultdict(int)
    for r in rows:
        cost_by_task[r.task_id] += r.cost_usd or 0.0
        cells_by_task[r.task_id] += 1
    costs_known = unpriced == 0 and n_cells > 0
    cost_num = [cost_by_task[t] for t in tasks]
    per_task = priced_total / n_cells if costs_known else None
    per_solved = priced_total / n_pass if costs_known and n_pass else None
    errors: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.error_kind:
            errors[r.error_kind] += 1
    tokens_mean = {}
    for kind in TOKEN_KINDS:
        vals = [r.tokens.get(kind) for r in rows if r.tokens.get(kind) is not None]
        tokens_mean[kind.removesuffix("_tokens")] = _round(sum(vals) / len(vals), 2) if vals else None  # type: ignore[arg-type]
    first = rows[0] if rows else None
    return {
        "config": name,
        "agent": first.agent if first else None,
        "model": first.model if first else None,
        "n_tasks": len(tasks),
        "epochs": max((n for n, _ in counts), default=0),
        "n_cells": n_cells,
        "passed": n_pass,
        "pass_rate": _round(n_pass / n_cells if n_cells else 0.0),
        "pass_rate_ci": _ci(stats.pass_rate_ci([clusters[t] for t in tasks]) if tasks else None),
        "ci_method": "wilson" if all(n == 1 for n, _ in counts) else "clustered-se",
        "mean_score": _round(sum(scores) / len(scores)) if scores else None,
        "pass_at_k": {k: _round(v) for k, v in stats.suite_pass_at_k(counts).items()},
        "pass_hat_k": {k: _round(v) for k, v in stats.suite_pass_at_k(counts, hat=True).items()},
        "p50_wall_s": _round(stats.percentile(walls, 50), 3),
        "p95_wall_s": _round(stats.percentile(walls, 95), 3),
        "p50_latency_ms": _round(stats.percentile(lats, 50), 1),
        "p95_latency_ms": _round(stats.percentile(lats, 95), 1),
        "tokens_mean": tokens_mean,
        "cost_usd": _round(priced_total, 10) if n_cells and unpriced < n_cells else None,
        "unpriced_cells": unpriced,
        "cost_per_task_usd": _round(per_task, 10),
        "cost_per_task_ci": _ci(stats.ratio_bootstrap(cost_num, [float(cells_by_task[t]) for t in tasks],
                                                      n_boot, seed), 10) if costs_known else None,
        "cost_per_request_usd": _round(per_task, 10) if lats else None,  # model suites: one request per cell
        "cost_per_solved_usd": _round(per_solved, 10),
        "cost_per_solved_ci": _ci(stats.ratio_bootstrap(cost_num, [sum(clusters[t]) for t in tasks],
                                                        n_boot, seed), 10) if per_solved is not None else None,
        "errors": sum(errors.values()),
        "error_kinds": dict(sorted(errors.items())),
    }


def _comparison(a: str, b: str, rows_a: list[CellRow], rows_b: list[CellRow], n_boot: int, seed: int
                ) -> dict[str, Any]:
    ca, cb = by_task(rows_a), by_task(rows_b)
    if set(ca) == set(cb):
        cmp = stats.paired_difference(a, b, ca, cb, n_boot, seed)
    else:
        cmp = stats.unpaired_difference(a, b, ca, cb, n_boot, seed)
    out = cmp.as_dict()
    out["diff"], out["ci"] = _round(cmp.diff), _ci(cmp.ci)
    out["se"], out["mde"] = _round(cmp.se), _round(cmp.mde)
    if not cmp.paired:
        common = len(set(ca) & set(cb))
        out["note"] = (f"unpaired: the task sets differ ({len(ca)} vs {len(cb)} tasks, {common} in common); "
                       "each side is resampled over its own tasks")
    return out


# -- loading ------------------------------------------------------------------

def cell_row(r: Any) -> CellRow:
    """One stored eval_result as a cell."""
    return CellRow(r.config, r.agent, r.model, r.task_id, r.epoch, bool(r.passed), r.score, r.wall_s,
                   r.latency_ms, {k: getattr(r, k) for k in TOKEN_KINDS}, r.cost_usd, r.error_kind)


def _eval_rows(store: Any, run_id: str) -> list[CellRow]:
    from sqlmodel import select

    from loopmeter.store import EvalResult

    with store.session() as s:
        results = list(s.exec(select(EvalResult).where(EvalResult.run_id == run_id)))
    return [cell_row(r) for r in results]


def _attempt_rows(store: Any, run_ids: list[str], role: str | None = None) -> list[CellRow]:
    """Attempts of loop/shadow runs as cells: task = the run's task id (or the run), config = agent[:model];
    an attempt's error kind is the one it stored, as an eval cell's is (`ErrorKind.of_attempt`)."""
    from sqlmodel import col, select

    from loopmeter.store import Attempt, Run

    with store.session() as s:
        runs = {r.id: r for r in s.exec(select(Run).where(col(Run.id).in_(run_ids)))}
        query = select(Attempt).where(col(Attempt.run_id).in_(run_ids))
        attempts = list(s.exec(query))
    rows = []
    epochs: dict[tuple[str, str], int] = defaultdict(int)
    for a in sorted(attempts, key=lambda a: (a.started_at is None, a.started_at, a.id)):
        if role is not None and a.role != role:
            continue
        if not AttemptStatus(a.status).finished:
            continue
        run = runs.get(a.run_id)
        task = (run.task_id if run and run.task_id else None) or a.task_id or a.run_id
        config = f"{a.agent}:{a.model}" if a.model else a.agent
        epoch = epochs[(config, task)]
        epochs[(config, task)] += 1
        passed = a.status == AttemptStatus.PASSED
        rows.append(CellRow(config, a.agent, a.model, task, epoch, passed, 1.0 if passed else 0.0, a.wall_s, None,
                            {k: getattr(a, k) for k in TOKEN_KINDS}, work_cost(a.cost_usd, a.unpriced_calls),
                            ErrorKind.of_attempt(a.status, a.error_kind)))
    return rows


def _run(store: Any, run_id: str) -> Any:
    """The run with this id, or the only one whose id starts with it."""
    from loopmeter.agents.runs import find_run

    try:
        return find_run(store, run_id)
    except LoopmeterError as exc:
        raise LoopmeterError(exc.message, hint="`loopmeter eval list` shows eval runs") from exc


def find_eval_run(store: Any, run_id: str) -> Any:
    run = _run(store, run_id)
    if run.kind != "eval" or run.task_id is not None:
        raise LoopmeterError(f"run {run.id} is not an eval run", hint="`loopmeter eval list` shows eval runs")
    return run


def run_rows(store: Any, run_id: str) -> tuple[Any, list[CellRow]]:
    run = _run(store, run_id)
    rows = _eval_rows(store, run_id) if run.kind == "eval" else _attempt_rows(store, [run_id])
    return run, rows


def group_by_config(rows: list[CellRow]) -> dict[str, list[CellRow]]:
    groups: dict[str, list[CellRow]] = {}
    for r in rows:
        groups.setdefault(r.config, []).append(r)
    return groups


def _config_order(run: Any, groups: dict[str, list[CellRow]]) -> list[str]:
    try:
        named = json.loads(run.config or "{}").get("configs") or []
    except json.JSONDecodeError:
        named = []
    return [c for c in named if c in groups] + sorted(c for c in groups if c not in named)


def summarize_rows(run_id: str | None, suite: str | None, order: list[str], groups: dict[str, list[CellRow]],
                   n_boot: int = stats.N_BOOT, seed: int = stats.DEFAULT_SEED) -> dict[str, Any]:
    configs = [config_summary(name, groups[name], n_boot, seed) for name in order]
    comparisons = [_comparison(a, b, groups[a], groups[b], n_boot, seed) for a, b in combinations(order, 2)]
    return {"run_id": run_id, "suite": suite, "configs": configs, "comparisons": comparisons,
            "seed": seed, "n_boot": n_boot}


def summarize_run(store: Any, run_id: str, n_boot: int = stats.N_BOOT, seed: int = stats.DEFAULT_SEED
                  ) -> dict[str, Any]:
    """The report of one eval run (or of any run's attempts): configurations and every pair."""
    run, rows = run_rows(store, run_id)
    groups = group_by_config(rows)
    out = summarize_rows(run.id, run.suite, _config_order(run, groups), groups, n_boot, seed)
    config = json.loads(run.config or "{}") if run.config else {}
    total = config.get("cells_total")
    out.update({
        "kind": run.kind, "status": run.status,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
        "cells_done": len(rows), "cells_expected": total,
        "skipped_tasks": [list(x) for x in config.get("skipped_tasks", [])],
    })
    return out


def compare_runs(store: Any, run_a: str, run_b: str, n_boot: int = stats.N_BOOT,
                 seed: int = stats.DEFAULT_SEED) -> dict[str, Any]:
    """Compare the configurations of two runs: paired when their task sets match, else unpaired."""
    ra, rows_a = run_rows(store, run_a)
    rb, rows_b = run_rows(store, run_b)
    ga, gb = group_by_config(rows_a), group_by_config(rows_b)
    if not ga or not gb:
        raise LoopmeterError("a run has no results to compare", hint="`loopmeter eval report RUN` shows what it has")
    same = set(ga) & set(gb)
    if len(ga) == 1 and len(gb) == 1:
        pairs = [(next(iter(ga)), next(iter(gb)))]
    elif same:
        pairs = [(c, c) for c in sorted(same)]
    else:
        pairs = [(a, b) for a in ga for b in gb]
    configs, comparisons = [], []
    labels: dict[tuple[str, str], str] = {}
    for side, run, groups in (("a", ra, ga), ("b", rb, gb)):
        for name in groups:
            label = f"{name}@{run.id}" if name in ga and name in gb else name
            labels[(side, name)] = label
            configs.append({**config_summary(label, groups[name], n_boot, seed), "run_id": run.id})
    for a, b in pairs:
        comparisons.append(_comparison(labels[("a", a)], labels[("b", b)], ga[a], gb[b], n_boot, seed))
    paired = all(c["paired"] for c in comparisons)
    return {"run_a": ra.id, "run_b": rb.id, "suite": ra.suite if ra.suite == rb.suite else None,
            "paired": paired, "configs": configs, "comparisons": comparisons, "seed": seed, "n_boot": n_boot}


def compare_shadow(store: Any, run_ids: list[str] | None = None, n_boot: int = stats.N_BOOT,
                   seed: int = stats.DEFAULT_SEED) -> dict[str, Any]:
    """Primary vs shadow attempts across runs that had a shadow: each run's task is one paired cluster."""
    from sqlmodel import col, select

    from loopmeter.store import Attempt

    with store.session() as s:
        query = select(Attempt.run_id).where(Attempt.role == "shadow")
        if run_ids:
            query = query.where(col(Attempt.run_id).in_(run_ids))
        ids = sorted(set(s.exec(query).all()))
    if not ids:
        raise LoopmeterError("no runs with a shadow attempt", hint="run `loopmeter run ... --shadow AGENT` first")
    primary, shadow = _attempt_rows(store, ids, "primary"), _attempt_rows(store, ids, "shadow")
    # one cluster per run: a run's primaries vs its shadows, whatever the agents were
    for rows, label in ((primary, "primary"), (shadow, "shadow")):
        for r in rows:
            r.config = label
    order = ["primary", "shadow"]
    groups = {"primary": primary, "shadow": shadow}
    out = summarize_rows(None, None, order, groups, n_boot, seed)
    out["runs"] = ids
    for cfg in out["configs"]:
        agents = sorted({f"{r.agent}:{r.model}" if r.model else r.agent for r in groups[cfg["config"]]})
        cfg["agents"] = agents
    return out


def list_evals(store: Any, limit: int = 50) -> list[dict[str, Any]]:
    from sqlalchemy import func
    from sqlmodel import col, select

    from loopmeter.store import EvalResult, Run

    with store.session() as s:
        # child runs (one per coding cell) are kind "eval" too, but carry the task id
        query = select(Run).where(Run.kind == "eval", col(Run.task_id).is_(None))
        runs = list(s.exec(query.order_by(col(Run.started_at).desc()).limit(limit)))
        counts = dict(s.exec(select(EvalResult.run_id, func.count()).where(
            col(EvalResult.run_id).in_([r.id for r in runs])).group_by(EvalResult.run_id)).all())
    out = []
    for r in runs:
        config = json.loads(r.config or "{}")
        out.append({"run_id": r.id, "suite": r.suite, "status": r.status, "configs": config.get("configs", []),
                    "epochs": (config.get("options") or {}).get("epochs"), "cells_done": counts.get(r.id, 0),
                    "started_at": r.started_at.isoformat() if r.started_at else None,
                    "ended_at": r.ended_at.isoformat() if r.ended_at else None})
    return out
