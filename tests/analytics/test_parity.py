"""One seeded SQLite store, every face: `loopmeter usage`, `loopmeter report` (json, csv, md), the
dashboard's data functions and `loopmeter eval report --json` show the same figures, and the right
ones, in UTC, Asia/Kolkata (+05:30), Asia/Kathmandu (+05:45) and America/New_York across its
daylight-saving change.

Calls sit a minute or ten from each zone's local midnights (2026-03-09 is a Monday: a week begins
there too); one model is always unpriced, one partly; one day has only unpriced calls, one a cost
below a cent. The expected figures are computed here from the seeded calls with zoneinfo.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from loopmeter.records import UsageRow
from loopmeter.vocab import CostSource
from tests.conftest import loopmeter_cmd

ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York"]
SINCE, UNTIL = "2026-03-05", "2026-03-15"
MIDNIGHTS = [date(2026, 3, 7) + timedelta(days=i) for i in range(3)]  # NY moves to -04:00 on 03-08 at 07:00 UTC
# model -> (agent, source); "priced" always has a price, "free-local" never, "mixed" every other call
MODELS = {"priced": ("claude-code", "claude-code-log"), "free-local": ("codex", "codex-log"),
          "mixed": ("gemini", "gemini-log")}
AGENT_MODEL = {agent: model for model, (agent, _) in MODELS.items()}
EVAL_RUN = "01PARITYEVAL0000000000000A"


def _calls() -> list[UsageRow]:
    rows: list[UsageRow] = []

    def add(ts: datetime, model: str, cost: float | None) -> None:
        agent, source = MODELS[model]
        n = len(rows)
        rows.append(UsageRow(key=f"parity:{n}", source=source, ts=ts, model=model, agent=agent, provider="p",
                             input_tokens=1000 + n, output_tokens=10 + n, cache_read_tokens=n, cache_write_tokens=1,
                             reasoning_tokens=n % 3, cost_usd=cost,
                             cost_source=CostSource.CALCULATED if cost is not None else CostSource.UNPRICED))

    i = 0
    for zone in ZONES:
        for day in MIDNIGHTS:
            midnight = datetime.combine(day, time(0), ZoneInfo(zone)).astimezone(UTC)
            for offset in (-10, -1, 0, 1, 10):  # minutes from the zone's local midnight
                model = ("priced", "free-local", "mixed")[i % 3]
                cost = None if model == "free-local" or (model == "mixed" and i % 2) else round(0.25 + i / 100, 6)
                add(midnight + timedelta(minutes=offset), model, cost)
                i += 1
    add(datetime(2026, 3, 12, 12, tzinfo=UTC), "free-local", None)  # a day with only unpriced calls
    add(datetime(2026, 3, 12, 12, 30, tzinfo=UTC), "free-local", None)
    add(datetime(2026, 3, 14, 12, tzinfo=UTC), "priced", 0.0004)  # a day whose cost is below a cent
    return rows


CALLS = _calls()


def _eval_rows() -> list[dict[str, Any]]:
    """Two configurations, 3 tasks x 2 epochs: alpha all priced with an errored cell that made no call
    ($0), beta with one unpriced cell."""
    out = []
    for config, agent in (("alpha", "alpha-agent"), ("beta", "beta-agent")):
        for t in range(3):
            for epoch in range(2):
                passed = (t + epoch + (config == "beta")) % 3 != 0
                error = "infra" if (config, t, epoch) == ("alpha", 2, 1) else None
                cost = 0.0 if error else None if (config, t, epoch) == ("beta", 1, 0) else 0.1 * (t + 1) + 0.01 * epoch
                out.append({"run_id": EVAL_RUN, "suite": "parity", "config": config, "agent": agent, "model": None,
                            "task_id": f"task-{t}", "epoch": epoch, "passed": passed and not error,
                            "score": 1.0 if passed and not error else 0.0, "wall_s": 10.0 + t + epoch,
                            "cost_usd": cost, "error_kind": error, "input_tokens": 0 if error else 100,
                            "created_at": datetime(2026, 3, 7, 12, tzinfo=UTC)})
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from loopmeter.store import EvalResult, Run, open_store

    home = tmp_path_factory.mktemp("parity-home")
    store = open_store(f"sqlite:///{home / 'loopmeter.db'}")
    store.add_usage(CALLS)
    with store.session() as s:
        s.add(Run(id=EVAL_RUN, kind="eval", suite="parity", status="completed",
                  config=json.dumps({"configs": ["alpha", "beta"], "cells_total": 12}),
                  started_at=datetime(2026, 3, 7, 11, tzinfo=UTC), ended_at=datetime(2026, 3, 7, 13, tzinfo=UTC)))
        s.add_all([EvalResult(**r) for r in _eval_rows()])
        s.commit()
    store.dispose()
    return home


def _cli(home: Path, *args: str) -> str:
    env = {**os.environ, "LOOPMETER_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("LOOPMETER_DB_URL", None)
    out = subprocess.run(loopmeter_cmd(*args), capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, f"loopmeter {' '.join(args)}: {out.stderr}"
    return out.stdout


def _expected(zone: str, period: str = "day") -> dict[str, dict[str, Any]]:
    """Per local day (or ISO week by its Monday) of `zone`: calls, unpriced, priced cost (None when
    none is priced) and input tokens, from the seeded calls."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "unpriced": 0, "cost": None, "input": 0})
    for c in CALLS:
        day = c.ts.astimezone(ZoneInfo(zone)).date()
        if period == "week":
            day -= timedelta(days=day.weekday())
        e = out[day.isoformat()]
        e["calls"] += 1
        e["input"] += c.input_tokens or 0
        if c.cost_usd is None:
            e["unpriced"] += 1
        else:
            e["cost"] = (e["cost"] or 0.0) + c.cost_usd
    return {k: {**v, "cost": None if v["cost"] is None else round(v["cost"], 6)} for k, v in out.items()}


def _money_text(cost: float | None) -> str:
    """docs/metrics.md: unpriced, never $0; <$0.01 for a tiny positive cost."""
    if cost is None:
        return "unpriced"
    return "<$0.01" if 0 < cost < 0.005 else f"${cost:,.2f}"


def _rounded(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {**v, "cost": None if v["cost"] is None else round(v["cost"], 6)} for k, v in rows.items()}


_DASH: dict[tuple[Path, str], dict[str, Any]] = {}


def _dashboard(home: Path, zone: str) -> dict[str, Any]:
    """What the dashboard's tabs fetch, through the functions they call (once per zone)."""
    if (home, zone) not in _DASH:
        _DASH[(home, zone)] = _fetch(home, zone)
    return _DASH[(home, zone)]


def _fetch(home: Path, zone: str) -> dict[str, Any]:
    from loopmeter.analytics import kpis, spend
    from loopmeter.analytics.evals import eval_summary, load_results
    from loopmeter.analytics.periods import usage_periods
    from loopmeter.cli.report import build_filters
    from loopmeter.config import ValueModel
    from loopmeter.store import open_store
    from loopmeter.tui.usage import UsageTab

    store = open_store(f"sqlite:///{home / 'loopmeter.db'}")
    try:
        filters = build_filters(SINCE, UNTIL, None, zone, datetime(2026, 3, 20, tzinfo=UTC))
        data = kpis.load(store, filters, home)
        return {
            "head": kpis.headline(data, ValueModel()),
            "daily_by_agent": spend.records(spend.over_time(data.cube, "day", by="agent", tz=filters.tz)),
            "weekly": spend.records(spend.over_time(data.cube, "week", tz=filters.tz)),
            "by_model": spend.records(spend.by_dimension(data.cube, "model")),
            "usage_tab": UsageTab.computed(data, filters, "model"),
            "usage_days": usage_periods(store, filters, "daily")["rows"],
            "evals": eval_summary(load_results(store, filters)),
        }
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def faces(home: Path) -> dict[str, dict[str, Any]]:
    """Every CLI face in every zone, two subprocesses at a time."""
    rng = ["--since", SINCE, "--until", UNTIL]
    jobs = {}
    for zone in ZONES:
        z = ["--timezone", zone]
        jobs[(zone, "usage daily")] = ("usage", "daily", "--json", "--no-ingest", *z, *rng)
        jobs[(zone, "usage weekly")] = ("usage", "weekly", "--json", "--no-ingest", *z, *rng)
        for fmt in ("json", "csv", "md"):
            jobs[(zone, fmt)] = ("report", "--format", fmt, "--no-scan", "--no-verify", *z, *rng)
    jobs[("UTC", "usage table")] = ("usage", "daily", "--no-ingest", "--timezone", "UTC", *rng)
    jobs[("UTC", "eval report")] = ("eval", "report", EVAL_RUN, "--json")
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = {key: pool.submit(_cli, home, *args) for key, args in jobs.items()}
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for (zone, face), fut in done.items():
        out[zone][face] = fut.result()
    return out


@pytest.mark.parametrize("zone", ZONES)
def test_spend_by_local_day_is_the_same_on_every_face(home, faces, zone):
    expected = _expected(zone)
    assert len(expected) >= 6 and any(v["cost"] is None for v in expected.values())

    usage = json.loads(faces[zone]["usage daily"])
    assert {r["date"]: {"calls": r["calls"], "unpriced": r["unpriced_calls"], "cost": r["cost_usd"],
                        "input": r["input_tokens"]} for r in usage["daily"]} == expected

    report = json.loads(faces[zone]["json"])
    assert {r["period"]: {"calls": r["calls"], "unpriced": r["unpriced"], "cost": r["cost"], "input": r["input"]}
            for r in report["spend_by_day"]} == expected

    dash = _dashboard(home, zone)
    days: dict[str, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "unpriced": 0, "cost": None, "input": 0})
    for r in dash["daily_by_agent"]:
        d = days[r["period"]]
        d["calls"] += r["calls"]
        d["unpriced"] += r["unpriced"]
        d["input"] += r["input"]
        if r["cost"] is not None:
            d["cost"] = (d["cost"] or 0.0) + r["cost"]
    assert _rounded(days) == expected
    assert {r["label"]: r["cost_usd"] for r in dash["usage_days"]} == {k: v["cost"] for k, v in expected.items()}

    rows = list(csv.DictReader(io.StringIO(faces[zone]["csv"])))
    by_day = {(r["name"], r["metric"]): r["value"] for r in rows if r["section"] == "spend_by_day"}
    for day, e in expected.items():
        assert by_day[(day, "calls")] == str(e["calls"])
        assert by_day[(day, "cost")] == ("" if e["cost"] is None else str(e["cost"]))  # null, never 0

    md = faces[zone]["md"]
    section = md.split("## Spend by day", 1)[1].split("\n## ", 1)[0]
    md_rows = {cells[0]: cells for cells in
               ([c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| 2"))}
    assert set(md_rows) == set(expected)
    for day, e in expected.items():
        assert md_rows[day][1] == str(e["calls"])
        assert md_rows[day][2] == _money_text(e["cost"])
        assert md_rows[day][3] == str(e["unpriced"])


@pytest.mark.parametrize("zone", ZONES)
def test_iso_weeks_are_the_same_on_every_face(home, faces, zone):
    expected = _expected(zone, "week")
    assert set(expected) >= {"2026-03-02", "2026-03-09"}
    usage = json.loads(faces[zone]["usage weekly"])
    assert {r["week"]: r["calls"] for r in usage["weekly"]} == {k: v["calls"] for k, v in expected.items()}
    report = json.loads(faces[zone]["json"])
    assert {r["period"]: (r["calls"], r["cost"]) for r in report["spend_by_week"]} == \
        {k: (v["calls"], v["cost"]) for k, v in expected.items()}
    dash = _dashboard(home, zone)
    assert {r["period"]: (r["calls"], r["cost"]) for r in dash["weekly"]} == \
        {k: (v["calls"], v["cost"]) for k, v in expected.items()}


@pytest.mark.parametrize("zone", ZONES)
def test_unpriced_and_partly_unpriced_groups_read_the_same_everywhere(home, faces, zone):
    priced = {m: round(sum(c.cost_usd for c in CALLS if c.model == m and c.cost_usd is not None), 6) for m in MODELS}
    unpriced = {m: sum(1 for c in CALLS if c.model == m and c.cost_usd is None) for m in MODELS}
    assert unpriced["priced"] == 0 and unpriced["mixed"] > 0 and priced["mixed"] > 0
    want = {m: (None if unpriced[m] == len([c for c in CALLS if c.model == m]) else priced[m], unpriced[m])
            for m in MODELS}
    assert want["free-local"][0] is None

    report = json.loads(faces[zone]["json"])
    assert {r["model"]: (r["cost"], r["unpriced"]) for r in report["by"]["model"]} == want
    dash = _dashboard(home, zone)
    assert {r["model"]: (None if r["cost"] is None else round(r["cost"], 6), r["unpriced"])
            for r in dash["by_model"]} == want
    total = round(sum(c.cost_usd for c in CALLS if c.cost_usd is not None), 6)
    n_unpriced = sum(unpriced.values())
    assert (report["spend"]["cost_usd"], report["spend"]["unpriced_calls"]) == (total, n_unpriced)
    assert (dash["head"]["spend"]["cost_usd"], dash["head"]["spend"]["unpriced_calls"]) == (total, n_unpriced)
    usage = json.loads(faces[zone]["usage daily"])
    assert (usage["totals"]["cost_usd"], usage["totals"]["unpriced_calls"]) == (total, n_unpriced)

    md = faces[zone]["md"]
    assert f"| spend | cost | ${total:,.2f} + {n_unpriced} unpriced calls |" in md
    by_model = md.split("## By model", 1)[1].split("\n## ", 1)[0]
    n_free, n_mixed = (sum(1 for c in CALLS if c.model == m) for m in ("free-local", "mixed"))
    assert f"| free-local | {n_free} | unpriced | {n_free} |" in by_model
    assert f"| mixed | {n_mixed} | ${priced['mixed']:,.2f} | {unpriced['mixed']} |" in by_model
    for title in ("## Spend by day", "## By model", "## By source", "## By provider"):
        section = md.split(title, 1)[1].split("\n## ", 1)[0]
        assert "| $0.00 |" not in section and "$0.0000" not in section  # no unknown or tiny cost reads $0
    # the Usage tab's table reads the same
    cells = {row[0]: row for row in dash["usage_tab"]["view"][2]}
    assert cells["free-local"][2] == "unpriced" and cells["mixed"][2] == f"${priced['mixed']:,.2f}"


def test_usage_table_prints_unpriced_and_tiny_costs_like_the_report(faces):
    table = faces["UTC"]["usage table"]
    line = {ln.split()[0]: ln for ln in table.splitlines() if ln.strip().startswith("2026-")}
    assert "unpriced" in line["2026-03-12"] and "$" not in line["2026-03-12"]
    assert "<$0.01" in line["2026-03-14"]


@pytest.mark.parametrize("zone", ZONES)
def test_a_one_day_report_shows_only_that_day(home, zone):
    for day in ("2026-03-08", "2026-03-09"):
        report = json.loads(_cli(home, "report", "--format", "json", "--no-scan", "--no-verify", "--timezone", zone,
                                 "--since", day, "--until", day))
        e = _expected(zone)[day]
        assert [r["period"] for r in report["spend_by_day"]] == [day]
        assert (report["spend"]["calls"], report["spend"]["unpriced_calls"]) == (e["calls"], e["unpriced"])


def test_eval_summary_is_the_same_in_eval_report_the_report_and_the_dashboard(home, faces):
    own = json.loads(faces["UTC"]["eval report"])
    alpha, beta = own["configs"]
    # cost per task divides by cells (3 tasks x 2 epochs), per solved by passes; the errored cell cost $0
    cells = [r for r in _eval_rows() if r["config"] == "alpha"]
    cost = sum(r["cost_usd"] for r in cells)
    passes = sum(r["passed"] for r in cells)
    assert (alpha["n_cells"], alpha["passed"], alpha["errors"], alpha["unpriced_cells"]) == (6, passes, 1, 0)
    assert alpha["cost_per_task_usd"] == pytest.approx(cost / 6)
    assert alpha["cost_per_solved_usd"] == pytest.approx(cost / passes)
    # partly unpriced: the priced sum is shown, per-task figures are unpriced
    beta_priced = sum(r["cost_usd"] for r in _eval_rows() if r["config"] == "beta" and r["cost_usd"] is not None)
    assert (beta["cost_usd"], beta["unpriced_cells"]) == (pytest.approx(beta_priced), 1)
    assert beta["cost_per_task_usd"] is None and beta["cost_per_solved_usd"] is None

    figures = ("config", "n_tasks", "n_cells", "passed", "pass_rate", "pass_rate_ci", "cost_usd", "unpriced_cells",
               "cost_per_task_usd", "cost_per_task_ci", "cost_per_solved_usd", "cost_per_solved_ci", "errors",
               "p50_wall_s")
    for zone in ZONES:
        report = json.loads(faces[zone]["json"])["evals"]
        dash = _dashboard(home, zone)["evals"]
        for face in (report, dash):
            assert [{k: c[k] for k in figures} for c in face["configs"]] == [{k: c[k] for k in figures} for c in own["configs"]]
            assert [c["diff"] for c in face["comparisons"]] == [c["diff"] for c in own["comparisons"]]
    md = faces["UTC"]["md"].split("## Evals", 1)[1]
    assert "unpriced" in md and f"${cost / 6:,.2f}" in md
