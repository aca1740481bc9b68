"""Analytics on a real SQLite store: the usage cube is exact, unpriced is never $0, ROI needs a value model."""

from __future__ import annotations

import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loopmeter.analytics import kpis, roi, spend
from loopmeter.analytics.cube import load_cube
from loopmeter.analytics.filters import Filters, range_filters
from loopmeter.analytics.outcomes import refresh_outcomes, scan_repo
from loopmeter.config import ValueModel
from loopmeter.records import UsageRow
from loopmeter.store.models import Outcome, Usage


def _raw(db: Path, since: datetime, until: datetime, agent: str | None = None) -> tuple[int, float, int]:
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    sql = "SELECT count(*), total(cost_usd), sum(cost_usd IS NULL) FROM usage WHERE ts >= ? AND ts < ?"
    args: list[str] = [since.strftime(fmt), until.strftime(fmt)]
    if agent:
        sql += " AND agent = ?"
        args.append(agent)
    n, cost, unpriced = sqlite3.connect(db).execute(sql, args).fetchone()
    return n, round(cost, 6), unpriced or 0


def test_cube_totals_equal_raw_rows_for_ranges_off_the_hour(seeded, now, loopmeter_home):
    db = loopmeter_home / "loopmeter.db"
    for since, until, agent in [
        (now - timedelta(days=9, minutes=17), now - timedelta(days=2, minutes=41), None),
        (now - timedelta(days=3, minutes=5), now - timedelta(days=3, minutes=-20), None),  # inside one hour
        (now - timedelta(days=20), now, "codex"),
    ]:
        f = Filters(since=since, until=until, agent=agent)
        s = spend.summary(load_cube(seeded, f, loopmeter_home))
        n, cost, unpriced = _raw(db, since, until, agent)
        assert (s["calls"], round(s["cost_usd"], 6), s["unpriced_calls"]) == (n, cost, unpriced)


def test_cube_follows_new_and_changed_rows(seeded, now, loopmeter_home):
    f = Filters()
    before = spend.summary(load_cube(seeded, f, loopmeter_home))
    seeded.add_usage([UsageRow(key="new:1", source="codex-log", ts=now - timedelta(hours=1), model="gpt-5-codex",
                               agent="codex", input_tokens=10, output_tokens=5, cost_usd=2.5,
                               cost_source="calculated")])
    after = spend.summary(load_cube(seeded, f, loopmeter_home))
    assert after["calls"] == before["calls"] + 1
    assert round(after["cost_usd"] - before["cost_usd"], 6) == 2.5
    with seeded.engine.begin() as conn:  # a repriced row below the watermark forces a rebuild
        conn.exec_driver_sql("UPDATE usage SET cost_usd = cost_usd + 1 WHERE key = 'seed:1'")
    again = spend.summary(load_cube(seeded, f, loopmeter_home, deep=True))
    assert round(again["cost_usd"] - after["cost_usd"], 6) == 1.0


def test_unpriced_agent_reads_unpriced_not_zero(seeded, now, loopmeter_home):
    data = kpis.load(seeded, range_filters("all", now), loopmeter_home)
    table = kpis.agent_table(data).set_index("agent")
    assert table.loc["builtin", "cost_usd"] is None or table.loc["builtin", "cost_usd"] != table.loc["builtin", "cost_usd"]
    assert table.loc["builtin", "unpriced_calls"] > 0
    by_model = spend.by_dimension(data.cube, "model").set_index("model")
    assert by_model.loc["qwen3-coder-local", "unpriced"] == by_model.loc["qwen3-coder-local", "calls"]


def test_roi_not_shown_without_value_model_and_shown_with_assumptions(seeded, now, loopmeter_home):
    data = kpis.load(seeded, range_filters("all", now), loopmeter_home)
    hidden = roi.roi(data.attempts, ValueModel())
    assert hidden["shown"] is False and hidden["roi"] is None
    shown = roi.roi(data.attempts, ValueModel(value_per_merged_outcome=100.0))
    merged = shown["merged_outcomes"]
    assert merged == 2  # the seed merges two runs
    cost = roi.attempt_cost(data.attempts)["cost_usd"]
    assert shown["value_usd"] == 200.0
    assert abs(shown["roi"] - (200.0 - cost) / cost) < 1e-9
    assert any("$100.00" in a for a in shown["assumptions"])
    hourly = roi.roi(data.attempts, ValueModel(hourly_rate=80.0))
    assert hourly["value_usd"] == 0 and any("no human_hours" in a for a in hourly["assumptions"])


def test_success_rate_and_waste_match_the_rows(seeded, now, loopmeter_home):
    report = kpis.compute(seeded, range_filters("all", now), value=ValueModel(), home=loopmeter_home, now=now,
                          include_audit=False, include_evals=False)
    con = sqlite3.connect(loopmeter_home / "loopmeter.db")
    passed, finished = con.execute(
        "SELECT sum(status='passed'), sum(status IN ('passed','failed','error','budget','timeout','cancelled')) "
        "FROM attempt").fetchone()
    assert report["velocity"]["success_rate"] == passed / finished
    failed_cost = con.execute("SELECT total(cost_usd) FROM attempt WHERE status IN ('failed','error','budget')").fetchone()[0]
    assert report["wasted"]["cost_usd"] >= round(failed_cost, 6) - 1e-6


def _git(repo: Path, *args: str, when: str | None = None) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}
    if when:
        env |= {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def test_merged_outcomes_come_from_trailers_reachable_from_main(tmp_path, store):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("a")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init", when="2026-02-01T10:00:00+00:00")
    _git(repo, "checkout", "-q", "-b", "feature")
    (repo / "b.txt").write_text("b")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "fix cart\n\nLoopmeter-Run: 01RUNMERGED", when="2026-02-02T10:00:00+00:00")
    _git(repo, "checkout", "-q", "main")
    _git(repo, "merge", "-q", "--no-ff", "feature", "-m", "merge feature", when="2026-02-03T12:00:00+00:00")
    (repo / "c.txt").write_text("c")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "direct\n\nLoopmeter-Run: 01RUNDIRECT", when="2026-02-04T09:00:00+00:00")
    _git(repo, "checkout", "-q", "-b", "unmerged")
    (repo / "d.txt").write_text("d")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "wip\n\nLoopmeter-Run: 01RUNNOTMERGED", when="2026-02-05T09:00:00+00:00")
    found = {o["run_id"]: o for o in scan_repo(repo)}
    assert set(found) == {"01RUNMERGED", "01RUNDIRECT"}
    assert found["01RUNMERGED"]["merged_at"] == datetime(2026, 2, 3, 12, tzinfo=UTC)
    assert found["01RUNMERGED"]["committed_at"] == datetime(2026, 2, 2, 10, tzinfo=UTC)
    assert found["01RUNDIRECT"]["merged_at"] == datetime(2026, 2, 4, 9, tzinfo=UTC)
    result = refresh_outcomes(store, [repo])
    assert result["outcomes"] == 2 and store.count(Outcome) == 2


def test_same_figures_on_postgresql(pg_store, loopmeter_home, now):
    from tests.analytics.seed import seed

    seed(pg_store)
    report = kpis.compute(pg_store, range_filters("all", now), value=ValueModel(value_per_merged_outcome=10.0),
                          home=loopmeter_home, now=now, include_audit=False)
    assert report["spend"]["calls"] == 400
    assert report["outcomes"]["merged"] == 2 and report["roi"]["shown"]
    assert sum(d["calls"] for d in report["spend_by_day"]) == 400
    assert report["evals"]["configs"] and report["evals"]["comparisons"]


def _rollup_vs_rows(store) -> tuple[list, list]:
    """The stored rollup and the same sums grouped afresh from the usage rows (cost to 1e-9:
    floats summed in another order differ in the last bits)."""
    from loopmeter.store import rollup

    def rows(conn) -> list:
        return sorted((*r[:10], round(float(r[10]), 9), *r[11:]) for r in rollup.fetch(conn))

    with store.engine.connect() as conn:
        kept = rows(conn)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE usage_hour_copy AS SELECT * FROM usage_hour")
        rollup.rebuild(conn, store.dialect)
        fresh = rows(conn)
        conn.exec_driver_sql("DELETE FROM usage_hour")
        conn.exec_driver_sql("INSERT INTO usage_hour SELECT * FROM usage_hour_copy")
        conn.exec_driver_sql("DROP TABLE usage_hour_copy")
    return kept, fresh


def test_processes_writing_usage_at_once_keep_the_rollup_exact(seeded, now, loopmeter_home):
    import sys

    # each process adds 60 rows in batches of 20, half of them keys another process adds too
    script = ("import sys; from datetime import datetime, timedelta, UTC; from loopmeter.store import open_store; "
              "from loopmeter.records import UsageRow; s = open_store(sys.argv[1]); p = int(sys.argv[2]); "
              "now = datetime(2026, 3, 2, tzinfo=UTC)\n"
              "for b in range(3):\n"
              "    s.add_usage([UsageRow(key=f'race:{(p * 30 + b * 20 + i) % 90}', source='otlp', agent='codex', "
              "model='gpt-5', ts=now - timedelta(minutes=7 * i), input_tokens=i, cost_usd=0.5 if i % 3 else None, "
              "cost_source='calculated' if i % 3 else 'unpriced') for i in range(20)])")
    url = f"sqlite:///{loopmeter_home / 'loopmeter.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", script, url, str(p)]) for p in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    added = seeded.count(Usage) - 400
    assert added > 0
    kept, fresh = _rollup_vs_rows(seeded)
    assert kept == fresh
    assert spend.summary(load_cube(seeded, Filters(), loopmeter_home))["calls"] == 400 + added


def test_rows_written_around_the_store_are_found_and_the_rollup_rebuilt(seeded, now, loopmeter_home):
    with seeded.engine.begin() as conn:  # a row deleted by hand: the rollup counts one call too many
        conn.exec_driver_sql("DELETE FROM usage WHERE key = 'seed:7'")
    assert spend.summary(load_cube(seeded, Filters(), loopmeter_home))["calls"] == 399
    kept, fresh = _rollup_vs_rows(seeded)
    assert kept == fresh


def test_rollup_is_exact_on_postgresql(pg_store, now):
    from tests.analytics.seed import seed

    seed(pg_store)
    pg_store.add_usage([UsageRow(key="seed:1", source="x", ts=now),  # already there: not counted again
                        UsageRow(key="pg:new", source="codex-log", ts=now, model="gpt-5", cost_usd=1.25,
                                 cost_source="calculated", input_tokens=7)])
    kept, fresh = _rollup_vs_rows(pg_store)
    assert kept == fresh and sum(r[8] for r in kept) == 401


def test_odd_dimension_values_survive_the_rollup_load(store, now, loopmeter_home):
    odd = ["a\x1fb", "", "x,y", None]  # the packed load's separators, an empty name, a missing one
    store.add_usage([UsageRow(key=f"odd:{i}", source="otlp", ts=now - timedelta(hours=i), project=p,
                              input_tokens=i + 1) for i, p in enumerate(odd)])
    cube = load_cube(store, Filters(), loopmeter_home)
    assert sorted(cube["project"].fillna("(none)")) == sorted(["a\x1fb", "x,y", "(none)", "(none)"])
    assert int(cube["input"].sum()) == 10


def test_cube_ranges_hold_when_later_hours_were_written_first(store, loopmeter_home):
    # Logs are not ingested in time order: the rollup's rows come in the order their hours
    # were first written, and a range must still select by time, not by that order.
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for day in (5, 1, 3):  # three batches, the latest day first
        store.add_usage([UsageRow(key=f"k{day}-{h}", source="codex-log", ts=base + timedelta(days=day, hours=h),
                                  agent="codex", model="gpt-5", input_tokens=1, cost_usd=1.0,
                                  cost_source="calculated") for h in (9, 3)])
    db = loopmeter_home / "loopmeter.db"
    for since, until in [(base + timedelta(days=2), base + timedelta(days=4)),
                         (base + timedelta(days=1, hours=5), base + timedelta(days=5, hours=4)),
                         (base, base + timedelta(days=2))]:
        s = spend.summary(load_cube(store, Filters(since=since, until=until), loopmeter_home))
        n, cost, _ = _raw(db, since, until)
        assert (s["calls"], round(s["cost_usd"], 6)) == (n, cost) and n > 0
