"""Deterministic seed data for analytics, dashboard and report tests and for benchmarks/dash.py.

Same `seed` and `now` give the same rows, byte for byte. Bulk inserts go through the
DB-API `executemany` with tuples (SQLite) so a million usage rows take seconds.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from loopmeter.records import UsageRow
from loopmeter.store import Store, insert_rows
from loopmeter.store import models as m

FIXED_NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

AGENTS = [  # agent, models, provider, log source, price per 1k output tokens (None = unpriced model)
    ("claude-code", ["claude-sonnet-4-5", "claude-opus-4-1"], "anthropic", "claude-code-log"),
    ("codex", ["gpt-5-codex", "gpt-5-mini"], "openai", "codex-log"),
    ("gemini", ["gemini-2.5-pro"], "google", "gemini-log"),
    ("builtin", ["qwen3-coder-local"], "ollama", "loop"),
]
UNPRICED_MODELS = {"qwen3-coder-local"}
USERS = ["ana", "bo", "chen", "dee"]
PROJECTS = ["/src/shop", "/src/api", "/src/infra"]
ATTEMPT_STATUS = ["passed"] * 6 + ["failed"] * 2 + ["budget", "error"]


@dataclass
class SeedSizes:
    usage: int = 400
    attempts: int = 24
    audit: int = 60
    eval_tasks: int = 12
    eval_epochs: int = 2
    days: int = 28
    spans: bool = True


SMALL = SeedSizes()
BENCH = SeedSizes(usage=1_000_000, attempts=10_000, audit=100_000, eval_tasks=40, eval_epochs=3, days=30,
                  spans=False)


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _bulk(store: Store, model: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if store.dialect != "sqlite":
        insert_rows(store, model, rows)
        return
    cols = list(rows[0])
    sql = f'INSERT INTO "{model.__tablename__}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) ' \
          f'VALUES ({", ".join("?" for _ in cols)})'

    def conv(v: Any) -> Any:
        return _ts(v) if isinstance(v, datetime) else v

    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.executemany(sql, [tuple(conv(r[c]) for c in cols) for r in rows])
        raw.commit()
    finally:
        raw.close()


def _cost(rng: random.Random, model: str, inp: int, out: int, cr: int) -> float | None:
    if model in UNPRICED_MODELS:
        return None
    per_m = 15.0 if "opus" in model else 3.0 if ("sonnet" in model or "pro" in model) else 1.25
    return round((inp * per_m + out * per_m * 5 + cr * per_m * 0.1) / 1_000_000, 6)


def seed(store: Store, sizes: SeedSizes = SMALL, *, now: datetime = FIXED_NOW, seed: int = 7) -> dict[str, int]:
    """Fill `store` with runs, attempts, iterations, spans, usage, audit, eval results and outcomes."""
    rng = random.Random(seed)
    start = now - timedelta(days=sizes.days)
    span_s = sizes.days * 86400

    runs: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    iterations: list[dict[str, Any]] = []
    spans: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    usage: list[dict[str, Any]] = []
    n_runs = max(1, sizes.attempts // 2)
    made = 0
    for r in range(n_runs):
        run_id = f"01RUN{r:08d}"
        # the last two runs are still active, for the live-refresh indicator
        active = r >= n_runs - 2
        started = start + timedelta(seconds=rng.randrange(span_s - 3600)) if not active \
            else now - timedelta(minutes=5 + r % 7)
        user = USERS[r % len(USERS)]
        project = PROJECTS[r % len(PROJECTS)]
        n_att = 2 if made + 2 <= sizes.attempts else sizes.attempts - made
        if n_att <= 0:
            break
        run_attempts = []
        for k in range(n_att):
            agent, models, provider, _src = AGENTS[(r + k) % len(AGENTS)]
            model = models[rng.randrange(len(models))]
            status = "running" if active else ATTEMPT_STATUS[rng.randrange(len(ATTEMPT_STATUS))]
            iters = 1 + rng.randrange(4)
            a_id = f"{run_id}-{k}"
            wall = 40.0 + rng.random() * 900
            passed = status == "passed"
            inp, out, cr = 2000 * iters + rng.randrange(5000), 800 * iters + rng.randrange(2000), 6000 * iters
            cost = _cost(rng, model, inp, out, cr)
            ttg = round(wall * (0.5 + rng.random() / 2), 1) if passed else None
            att = {
                "id": a_id, "run_id": run_id, "agent": agent, "model": model, "role": "primary",
                "task_id": f"task-{r % 9}", "epoch": None, "user": user, "project": project,
                "worktree": None, "branch": f"loopmeter/{run_id}/{agent}", "base_commit": "a" * 40,
                "head_commit": None, "status": status,
                "stop_reason": {"passed": "check passed", "failed": "max iterations", "budget": "max_usd reached",
                                "error": "agent exited 1", "running": None}[status],
                "iterations": iters, "wall_s": None if active else round(wall, 1),
                "time_to_signal_s": round(wall / iters / 2, 1), "time_to_green_s": ttg,
                "iterations_to_green": iters if passed else None,
                "diffstat": json.dumps({"files": 1 + k, "insertions": 10 * iters, "deletions": 3}),
                "input_tokens": inp, "cache_read_tokens": cr, "cache_write_tokens": 500, "output_tokens": out,
                "reasoning_tokens": out // 4, "cost_usd": cost, "unpriced_calls": iters if cost is None else 0,
                "started_at": started, "ended_at": None if active else started + timedelta(seconds=wall),
                "applied_at": None,
            }
            run_attempts.append(att)
            for n in range(1, iters + 1):
                t0 = started + timedelta(seconds=(n - 1) * wall / iters)
                t1 = started + timedelta(seconds=n * wall / iters)
                ok = passed and n == iters
                iterations.append({
                    "attempt_id": a_id, "n": n, "started_at": t0, "ended_at": None if active else t1,
                    "act_exit": 0, "act_summary": f"edited {1 + k} file(s)",
                    "check_exit": None if active else (0 if ok else 1),
                    "check_passed": None if active else ok,
                    "check_output_tail": None if active else (
                        "===== 4 passed in 0.12s =====" if ok else
                        f"FAILED tests/test_cart.py::test_total - assert {n} == 3\n===== 1 failed, 3 passed ====="),
                    "cost_usd": None if cost is None else round(cost / iters, 6), "tokens": (inp + out) // iters,
                })
                if sizes.spans:
                    base_ns = int(t0.timestamp() * 1e9)
                    mid_ns = base_ns + int((t1 - t0).total_seconds() * 0.7e9)
                    end_ns = int(t1.timestamp() * 1e9)
                    for name, s0, s1 in (("act", base_ns, mid_ns), ("verify", mid_ns, end_ns)):
                        spans.append({
                            "trace_id": hashlib.md5(run_id.encode()).hexdigest(),
                            "span_id": hashlib.md5(f"{a_id}{n}{name}".encode()).hexdigest()[:16],
                            "parent_span_id": None, "name": f"{name} {agent} #{n}", "kind": "internal",
                            "start_ns": s0, "end_ns": s1, "status": "ok", "attributes": "{}",
                            "service": "loopmeter", "run_id": run_id, "attempt_id": a_id,
                        })
            made += 1
        winner = next((a for a in run_attempts if a["status"] == "passed"), None)
        if winner is not None and r % 3 != 0:
            winner["applied_at"] = winner["ended_at"] + timedelta(minutes=10)
            if r % 3 == 1:
                outcomes.append({
                    "sha": hashlib.sha1(run_id.encode()).hexdigest(), "run_id": run_id,
                    "attempt_id": winner["id"], "repo": project, "branch": "main",
                    "committed_at": winner["applied_at"], "merged_at": winner["applied_at"] + timedelta(hours=3),
                })
        attempts.extend(run_attempts)
        runs.append({
            "id": run_id, "kind": "loop", "task": f"fix the cart total ({r % 9})", "task_id": f"task-{r % 9}",
            "suite": None, "repo": project, "base_commit": "a" * 40, "user": user, "policy": "default",
            "policy_sha256": "c" * 64,
            "status": "running" if active else ("passed" if winner else "failed"),
            "winner_attempt_id": winner["id"] if winner else None, "config": None,
            "started_at": started,
            "ended_at": None if active else max(a["ended_at"] for a in run_attempts),
        })

    # usage: loop rows tied to attempts, the rest from agent logs
    for i in range(sizes.usage):
        if attempts and i % 4 == 0:
            att = attempts[(i // 4) % len(attempts)]
            agent, model, user, project = att["agent"], att["model"], att["user"], att["project"]
            provider = next(a[2] for a in AGENTS if a[0] == agent)
            source, run_id, attempt_id = "loop", att["run_id"], att["id"]
            ts = att["started_at"] + timedelta(seconds=rng.randrange(60))
        else:
            agent, models, provider, source = AGENTS[rng.randrange(len(AGENTS))]
            model = models[rng.randrange(len(models))]
            user, project = USERS[rng.randrange(len(USERS))], PROJECTS[rng.randrange(len(PROJECTS))]
            run_id = attempt_id = None
            ts = start + timedelta(seconds=rng.randrange(span_s))
        inp, out = 100 + rng.randrange(4000), 50 + rng.randrange(1500)
        cr, cw = rng.randrange(20000), rng.randrange(2000)
        cost = _cost(rng, model, inp, out, cr)
        usage.append({
            "key": f"seed:{i}", "source": source, "agent": agent, "provider": provider, "model": model, "ts": ts,
            "session_id": f"s{i // 50}", "project": project, "user": user, "input_tokens": inp,
            "cache_read_tokens": cr, "cache_write_tokens": cw, "cache_write_1h_tokens": 0, "output_tokens": out,
            "reasoning_tokens": out // 5, "cost_usd": cost,
            "cost_source": "unpriced" if cost is None else ("reported" if source != "loop" and i % 2 else "calculated"),
            "latency_ms": 500.0 + rng.randrange(3000), "request_id": None, "run_id": run_id,
            "attempt_id": attempt_id, "price_table_sha256": None,
        })

    audit = _audit_rows(rng, sizes.audit, runs, start, span_s)
    evals = _eval_rows(rng, sizes, now)

    _bulk(store, m.Run, runs)
    _bulk(store, m.Attempt, attempts)
    _bulk(store, m.Iteration, iterations)
    _bulk(store, m.Span, spans)
    _bulk(store, m.Outcome, outcomes)
    _bulk(store, m.Audit, audit)
    _bulk(store, m.EvalResult, evals)
    # usage through the store's own write path (which keeps the hourly rollup), in chunks
    for lo in range(0, len(usage), 50_000):
        store.add_usage([UsageRow(**row) for row in usage[lo:lo + 50_000]])
    return {"runs": len(runs), "attempts": len(attempts), "iterations": len(iterations), "spans": len(spans),
            "usage": len(usage), "audit": len(audit), "eval_results": len(evals), "outcomes": len(outcomes)}


def _audit_rows(rng: random.Random, n: int, runs: list[dict[str, Any]], start: datetime,
                span_s: int) -> list[dict[str, Any]]:
    try:  # the audit part's own hash, so verify_chain accepts the seeded chain
        from loopmeter.policies.audit import record_hash
    except ImportError:  # pragma: no cover - before the audit part landed
        def record_hash(record: dict[str, Any]) -> str:
            return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
    rows = []
    prev = "0" * 64
    actions = [("policy", "exec", "pytest -q", "allow", "exec.tests"),
               ("proxy", "connect", "api.anthropic.com:443", "allow", "net.model"),
               ("proxy", "connect", "evil.example.com:443", "deny", "net.default-deny"),
               ("kernel", "write", "/etc/passwd", "deny", "fs.readonly"),
               ("policy", "exec", "curl http://x", "ask", "exec.network-tools"),
               ("limit", "memory", "2048MB", "deny", "limit.memory")]
    times = sorted(rng.randrange(span_s) for _ in range(n))
    for seq in range(1, n + 1):
        layer, action, target, decision, rule = actions[rng.randrange(len(actions))]
        run = runs[rng.randrange(len(runs))] if runs else None
        row = {
            "seq": seq, "ts": start + timedelta(seconds=times[seq - 1]), "sandbox_id": f"sb{seq // 20}",
            "run_id": run["id"] if run else None, "attempt_id": None, "actor": "agent:claude-code",
            "layer": layer, "action": action, "target": target, "decision": decision, "rule_id": rule,
            "policy_sha256": "c" * 64, "detail": None, "prev": prev,
        }
        row["hash"] = record_hash(row)
        rows.append(row)
        prev = row["hash"]
    return rows


def _eval_rows(rng: random.Random, sizes: SeedSizes, now: datetime) -> list[dict[str, Any]]:
    rows = []
    configs = [("claude-code:claude-sonnet-4-5", "claude-code", "claude-sonnet-4-5", 0.75),
               ("builtin:qwen3-coder-local", "builtin", "qwen3-coder-local", 0.5)]
    for config, agent, model, p in configs:
        for t in range(sizes.eval_tasks):
            difficulty = (t % 4) * 0.15
            for e in range(sizes.eval_epochs):
                ok = rng.random() < max(0.05, p - difficulty + 0.2)
                cost = None if model in UNPRICED_MODELS else round(0.05 + rng.random() * 0.2, 4)
                rows.append({
                    "run_id": "01EVAL0000001", "suite": "gold-python", "config": config, "agent": agent,
                    "model": model, "task_id": f"gold/{t:03d}", "epoch": e, "attempt_id": None, "passed": ok,
                    "score": 1.0 if ok else 0.0, "wall_s": 30 + rng.random() * 200, "latency_ms": None,
                    "input_tokens": 3000, "cache_read_tokens": 1000, "cache_write_tokens": 0,
                    "output_tokens": 900, "reasoning_tokens": 0, "cost_usd": cost,
                    "error_kind": None, "detail": None, "created_at": now - timedelta(days=2),
                })
    return rows
