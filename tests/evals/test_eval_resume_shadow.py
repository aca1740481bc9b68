"""An interrupted eval resumes without re-running stored cells; shadow attempts compare against primaries."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from loopmeter.sandbox.probe import probe_bwrap
from tests.conftest import loopmeter_cmd
from tests.evals.conftest import GOLD, cli, cli_json, small_suite

pytestmark = pytest.mark.skipif(not probe_bwrap().usable, reason="bubblewrap is not usable here")
TASKS = ["fix-pagination", "fix-roman-numerals", "data-log-levels", "fix-lru-cache"]


def _cells(db_path: Path) -> list[tuple]:
    if not db_path.exists():
        return []
    db = sqlite3.connect(db_path, timeout=0.5)
    try:
        return db.execute("select id, config, task_id, epoch from eval_result order by id").fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or the store is being created
        return []
    finally:
        db.close()


def test_interrupted_eval_resumes_and_keeps_what_it_had(tmp_path: Path) -> None:
    suite = small_suite(tmp_path / "suite", TASKS)
    home = tmp_path / "home"
    env = {**os.environ, "LOOPMETER_HOME": str(home)}
    env.pop("LOOPMETER_DB_URL", None)
    proc = subprocess.Popen(loopmeter_cmd("eval", "run", str(suite), "--agent", "nop", "--agent", "oracle",
                                          "--concurrency", "1", "--epochs", "3"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(_cells(home / "loopmeter.db")) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    before = _cells(home / "loopmeter.db")
    total = len(TASKS) * 2 * 3
    assert proc.returncode == 130, f"the eval finished before it could be interrupted ({len(before)} cells)"
    assert 2 <= len(before) < total
    with sqlite3.connect(home / "loopmeter.db") as db:
        (run_id, status), = db.execute("select id, status from run where kind = 'eval' and task_id is null")
    assert status == "cancelled"

    listed = cli_json(home, "eval", "list")
    assert listed[0]["run_id"] == run_id and listed[0]["cells_done"] == len(before)

    summary = cli_json(home, "eval", "resume", run_id)
    after = _cells(home / "loopmeter.db")
    assert len(after) == total
    assert len({(c, t, e) for _, c, t, e in after}) == total  # no cell twice
    assert after[: len(before)] == before  # earlier results kept, not re-run
    assert summary["status"] == "completed" and summary["cells_done"] == summary["cells_expected"] == total
    configs = {c["agent"]: c for c in summary["configs"]}
    assert configs["oracle"]["pass_rate"] == 1.0 and configs["oracle"]["epochs"] == 3
    assert configs["oracle"]["pass_at_k"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert configs["nop"]["pass_rate"] == 0.0
    assert configs["oracle"]["ci_method"] == "clustered-se"
    assert summary["comparisons"][0]["p_method"] == "paired-sign-flip"


def test_eval_compare_shadow_pairs_primary_and_shadow_attempts(tmp_path: Path) -> None:
    for task in ("fix-pagination", "fix-roman-numerals"):
        cli(tmp_path, "run", "--task", str(GOLD / task), "--agent", "oracle", "--shadow", "nop",
            "--max-iters", "1", "--json")
    summary = cli_json(tmp_path, "eval", "compare", "--shadow")
    assert len(summary["runs"]) == 2
    primary, shadow = summary["configs"]
    assert (primary["config"], shadow["config"]) == ("primary", "shadow")
    assert primary["agents"] == ["oracle"] and shadow["agents"] == ["nop"]
    assert primary["pass_rate"] == 1.0 and shadow["pass_rate"] == 0.0
    assert primary["n_tasks"] == shadow["n_tasks"] == 2
    (cmp,) = summary["comparisons"]
    assert cmp["paired"] is True and cmp["diff"] == -1.0
