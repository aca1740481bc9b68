"""Time `outcomes.attribution.attribute` (the cost of every PR and the unattributed spend: the
Overview's and the report's PR figures) on a synthetic SQLite store.

    .venv/bin/python benchmarks/attribution.py [--rows 1000000] [--sessions 20000] [--prs 2000]
        [--compare OLD_ATTRIBUTION.py]

--compare loads another version of loopmeter/outcomes/attribution.py (e.g. from
`git show REV:loopmeter/outcomes/attribution.py > /tmp/old.py`) and times it on the same store.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def build(path: Path, rows: int, sessions: int, prs: int) -> None:
    from loopmeter.store import open_store

    open_store(f"sqlite:///{path}").dispose()
    rng = random.Random(1)
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO pull_request (repo, number, host, branch, state, author, author_is_bot, created_at, merged_at,"
        " closed_at, changes_requested, commits_after_review, agents, runs) VALUES"
        " ('github.com/o/r', ?, 'github', ?, 'merged', 'dev', 0, ?, ?, ?, 0, 0, '[]', '[]')",
        [(n, f"b{n}", str(T0), str(T0 + timedelta(days=40)), str(T0 + timedelta(days=40))) for n in range(prs)])
    conn.executemany(
        "INSERT INTO session (source, session_id, agent, repo, branch, first_ts) VALUES"
        " ('claude-code-log', ?, 'claude-code', 'github.com/o/r', ?, ?)",
        [(f"s{i}", f"b{rng.randrange(prs * 2)}", str(T0 + timedelta(days=1))) for i in range(sessions)])
    batch = []
    for i in range(rows):
        cost = None if i % 50 == 0 else 0.001 * (i % 7 + 1)
        batch.append((f"k{i}", f"s{rng.randrange(sessions)}", str(T0 + timedelta(seconds=i)), 1000, 200, cost,
                      "unpriced" if cost is None else "calculated"))
        if len(batch) == 100_000:
            _insert(conn, batch)
            batch = []
    _insert(conn, batch)
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def _insert(conn: sqlite3.Connection, batch: list[tuple]) -> None:
    conn.executemany(
        "INSERT INTO usage (key, source, agent, model, session_id, ts, input_tokens, output_tokens, cost_usd,"
        " cost_source) VALUES (?, 'claude-code-log', 'claude-code', 'claude-sonnet-4-5', ?, ?, ?, ?, ?, ?)", batch)


def timed(module, store) -> tuple[float, dict]:
    t0 = time.perf_counter()
    att = module.attribute(store)
    took = time.perf_counter() - t0
    costed = [p for p in att.prs if p.costed]
    return took, {"prs": len(att.prs), "costed": len(costed),
                  "attributed_usd": round(sum(p.spend.cost_usd for p in costed), 4),
                  "unattributed_usd": round(att.unattributed.cost_usd, 4),
                  "unattributed_sessions": att.unattributed_sessions}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--prs", type=int, default=2_000)
    ap.add_argument("--compare")
    args = ap.parse_args()
    from loopmeter.outcomes import attribution
    from loopmeter.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        build(path, args.rows, args.sessions, args.prs)
        print(f"store: {args.rows:,} usage rows, {args.sessions:,} sessions, {args.prs:,} PRs "
              f"(built in {time.perf_counter() - t0:.1f} s)")
        store = open_store(f"sqlite:///{path}")
        versions = [("current", attribution)]
        if args.compare:
            spec = importlib.util.spec_from_file_location("old_attribution", args.compare)
            assert spec and spec.loader
            old = importlib.util.module_from_spec(spec)
            sys.modules["old_attribution"] = old  # dataclasses look their module up
            spec.loader.exec_module(old)
            versions.append(("compare", old))
        best: dict[str, float] = {}
        for _ in range(3):  # alternating, best of three: the first pass also warms the file cache
            for name, module in versions:
                took, out = timed(module, store)
                best[name] = min(took, best.get(name, took))
        for name, module in versions:
            print(f"{name:<8} attribute: best of 3 {best[name]:.2f} s  {json.dumps(timed(module, store)[1])}")
        store.dispose()


if __name__ == "__main__":
    main()
