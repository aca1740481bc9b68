"""`loopmeter eval` end to end on the shipped gold suite, through the real loop and bubblewrap sandbox."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from loopmeter.sandbox.probe import probe_bwrap
from tests.evals.conftest import cli, cli_json, small_suite

pytestmark = pytest.mark.skipif(not probe_bwrap().usable, reason="bubblewrap is not usable here")
N_GOLD = 13 if shutil.which("node") else 12


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evalhome")


@pytest.fixture(scope="module")
def gold_run(home: Path) -> dict:
    started = time.monotonic()
    summary = cli_json(home, "eval", "run", "gold", "--agent", "oracle", "--agent", "nop")
    summary["_test_wall_s"] = time.monotonic() - started
    print(f"\neval run gold --agent oracle --agent nop: {summary['_test_wall_s']:.1f}s wall")
    return summary


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "loopmeter.db")


def test_oracle_passes_everything_nop_nothing_and_the_paired_ci_excludes_zero(gold_run: dict, home: Path) -> None:
    configs = {c["agent"]: c for c in gold_run["configs"]}
    assert configs["oracle"]["pass_rate"] == 1.0
    assert configs["nop"]["pass_rate"] == 0.0
    assert configs["oracle"]["n_tasks"] == configs["nop"]["n_tasks"] == N_GOLD
    (cmp,) = gold_run["comparisons"]
    assert (cmp["a"], cmp["b"], cmp["diff"]) == ("oracle", "nop", -1.0)
    lo, hi = cmp["ci"]
    assert hi < 0  # excludes 0
    assert cmp["verdict"] == "oracle better"
    assert cmp["p_value"] == pytest.approx(2 / 2**N_GOLD)
    with _db(home) as db:
        rows = db.execute("select config, count(*), sum(passed), sum(error_kind is not null) from eval_result "
                          "where run_id = ? group by config", (gold_run["run_id"],)).fetchall()
        assert sorted(rows) == [("nop", N_GOLD, 0, 0), ("oracle", N_GOLD, N_GOLD, 0)]
        # every cell went through the loop: one child run of kind eval with one attempt each
        children = db.execute("select count(*) from run where kind = 'eval' and task_id is not null").fetchone()[0]
        assert children == 2 * N_GOLD
        linked = db.execute("select count(*) from eval_result e join attempt a on a.id = e.attempt_id "
                            "where e.run_id = ?", (gold_run["run_id"],)).fetchone()[0]
        assert linked == 2 * N_GOLD


def test_json_shape_matches_the_documented_keys(gold_run: dict) -> None:
    assert {"run_id", "suite", "configs", "comparisons"} <= set(gold_run)
    for cfg in gold_run["configs"]:
        assert {"agent", "model", "n_tasks", "epochs", "pass_rate", "pass_rate_ci", "pass_at_k", "p50_wall_s",
                "p95_wall_s", "cost_usd", "cost_per_solved_usd", "errors"} <= set(cfg)
        assert cfg["pass_at_k"] == {"1": cfg["pass_rate"]}
    assert {"a", "b", "diff", "ci", "p_value", "mde", "verdict"} <= set(gold_run["comparisons"][0])


def test_report_formats_and_list(gold_run: dict, home: Path, tmp_path: Path) -> None:
    run_id = gold_run["run_id"]
    md = cli(home, "eval", "report", run_id, "--format", "md").stdout
    assert f"| oracle | {N_GOLD}/{N_GOLD} | 100.0%" in md
    assert "oracle better" in md
    out = tmp_path / "r.html"
    cli(home, "eval", "report", run_id, "--format", "html", "-o", str(out))
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "<script" not in page
    again = cli_json(home, "eval", "report", run_id)
    assert again["comparisons"] == gold_run["comparisons"]  # same seed, same interval
    listed = cli_json(home, "eval", "list")
    row = next(r for r in listed if r["run_id"] == run_id)
    assert row["cells_done"] == 2 * N_GOLD and row["configs"] == ["oracle", "nop"]


def test_compare_paired_when_tasks_match_and_unpaired_otherwise(gold_run: dict, home: Path, tmp_path: Path) -> None:
    suite = small_suite(tmp_path / "mini", ["fix-pagination", "fix-roman-numerals", "data-log-levels"])
    other = cli_json(home, "eval", "run", str(suite), "--agent", "nop", "--max-iters", "1")
    assert other["configs"][0]["n_tasks"] == 3
    unpaired = cli_json(home, "eval", "compare", gold_run["run_id"], other["run_id"])
    assert unpaired["paired"] is False
    (cmp,) = unpaired["comparisons"]
    assert cmp["paired"] is False and "unpaired" in cmp["note"]
    assert cmp["verdict"] == "no detectable difference"
    text = cli(home, "eval", "compare", gold_run["run_id"], other["run_id"]).stdout
    assert "unpaired" in text

    paired = cli_json(home, "eval", "compare", gold_run["run_id"], gold_run["run_id"])
    assert paired["paired"] is True
    assert {c["diff"] for c in paired["comparisons"]} == {0.0}
    assert {c["verdict"] for c in paired["comparisons"]} == {"no detectable difference"}


def test_unknown_suite_exits_2_with_a_hint(home: Path) -> None:
    out = cli(home, "eval", "run", "no-such-suite", "--agent", "oracle", check=False)
    assert out.returncode == 2
    assert "hint:" in out.stderr and "gold" in out.stderr


def test_unknown_agent_exits_2_before_any_cell(home: Path) -> None:
    out = cli(home, "eval", "run", "gold", "--agent", "oracle", "--agent", "no-such-agent", check=False)
    assert out.returncode == 2
    assert "no-such-agent" in out.stderr and "oracle" in out.stderr  # the hint names the known agents


def test_validate_runs_every_gold_check_in_the_sandbox(home: Path) -> None:
    rows = cli_json(home, "eval", "validate", "gold", "--sandbox", "bwrap")
    assert len(rows) == N_GOLD
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
