"""Executors without a cluster: the choice of executor, Ray missing, task files by content."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from loopmeter.errors import LoopmeterError
from loopmeter.sandbox.probe import probe_bwrap

GOLD = Path(__file__).resolve().parents[2] / "loopmeter" / "evals" / "gold"


def test_asking_for_ray_without_the_extra_is_one_clear_error(tmp_path: Path) -> None:
    code = ("import sys\nsys.modules['ray'] = None  # as if `loopmeter[ray]` were not installed\n"
            "from loopmeter.cli import main\n"
            "sys.argv = ['loopmeter', 'eval', 'run', 'gold', '--agent', 'nop', '--executor', 'ray']\nmain()\n")
    env = {**os.environ, "LOOPMETER_HOME": str(tmp_path), "RAY_ADDRESS": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "needs Ray" in errors[0]
    assert "loopmeter[ray]" in out.stderr


def test_an_unknown_executor_is_bad_input(store) -> None:
    from loopmeter.evals.runner import EvalOptions, start_eval
    from loopmeter.store import Run

    with pytest.raises(LoopmeterError) as info:
        start_eval(GOLD, ["nop"], EvalOptions(), store=store, executor="dask")
    assert "dask" in info.value.message and "--executor local" in (info.value.hint or "")
    assert store.count(Run) == 0


def test_local_evals_check_the_agents_here(store) -> None:
    import shutil

    from loopmeter.evals.runner import EvalOptions, start_eval

    if shutil.which("aider"):
        pytest.skip("aider is installed here")
    with pytest.raises(LoopmeterError, match="agent aider is not available"):
        start_eval(GOLD, ["oracle", "aider"], EvalOptions(), store=store)
    with pytest.raises(LoopmeterError, match="no-such-agent"):
        start_eval(GOLD, ["no-such-agent"], EvalOptions(), store=store, executor="ray")  # names: before Ray


def test_ray_without_an_address_says_how_to_give_one(store, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    from loopmeter.executors.ray_executor import RayExecutor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(LoopmeterError) as info:
        RayExecutor(store)
    assert "--ray-address" in (info.value.hint or "") and "auto" in (info.value.hint or "")


def test_task_files_pack_by_content_not_by_time(tmp_path: Path) -> None:
    import shutil

    from loopmeter.executors.ray_executor import pack_task

    a = shutil.copytree(GOLD / "fix-pagination", tmp_path / "a" / "fix-pagination")
    sha1, data = pack_task(a)
    os.utime(a / "task.toml", (1, 1))
    sha2, _ = pack_task(a)
    assert sha1 == sha2
    (a / "repo" / "extra.txt").write_text("x")
    sha3, _ = pack_task(a)
    assert sha3 != sha1
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert names[0] == "fix-pagination" and "fix-pagination/solution" in names


def test_unpacked_task_loads_again_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    from loopmeter.executors.ray_executor import pack_task, unpack_task
    from loopmeter.tasks import load_task

    sha, data = pack_task(GOLD / "fix-roman-numerals")
    top = unpack_task(sha, data, tmp_path / "cache")
    assert top == tmp_path / "cache" / sha / "fix-roman-numerals"
    assert load_task(top).id == "fix-roman-numerals"
    assert unpack_task(sha, data, tmp_path / "cache") == top  # once per node: the second is a cache hit
    with pytest.raises(LoopmeterError, match="damaged"):
        unpack_task(sha, data[:-10] + b"0" * 10, tmp_path / "cache2")
    assert not (tmp_path / "cache2").exists()


def test_a_policy_file_travels_by_content_and_a_preset_by_name(tmp_path: Path) -> None:
    import hashlib
    import pickle
    from dataclasses import replace

    from loopmeter.policies import load_policy, policy_content, preset_path

    path = tmp_path / "team.yaml"
    path.write_bytes(preset_path("default").read_bytes().replace(b"name: default", b"name: team", 1))
    sent = pickle.loads(pickle.dumps(policy_content(str(path))))  # as a cell spec carries it to a node
    path.unlink()
    arrived = sent.load()
    assert (arrived.name, arrived.sha256) == ("team", sent.sha256)
    assert sent.sha256 == hashlib.sha256(sent.text.encode()).hexdigest()
    assert policy_content("default") is None and policy_content("strict", load_policy("strict")) is None
    with pytest.raises(LoopmeterError, match="damaged"):
        replace(sent, text=sent.text + "# more\n").load()


def test_task_files_cannot_write_outside_the_cache(tmp_path: Path) -> None:
    import hashlib

    from loopmeter.executors.ray_executor import unpack_task

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("evil/escape")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path / "outside")
        tar.addfile(link)
        body = b"owned"
        file = tarfile.TarInfo("evil/escape/pwned")
        file.size = len(body)
        tar.addfile(file, io.BytesIO(body))
    data = buf.getvalue()
    (tmp_path / "outside").mkdir()
    with pytest.raises(tarfile.TarError):
        unpack_task(hashlib.sha256(data).hexdigest(), data, tmp_path / "cache")
    assert list((tmp_path / "outside").iterdir()) == []


@pytest.mark.skipif(not probe_bwrap().usable, reason="bubblewrap is not usable here")
def test_eval_status_counts_the_cells_of_a_local_eval(tmp_path: Path) -> None:
    import shutil

    from tests.evals.conftest import cli, cli_json

    suite = tmp_path / "suite"
    for task_id in ("fix-pagination", "fix-roman-numerals"):
        shutil.copytree(GOLD / task_id, suite / task_id)
    home = tmp_path / "home"
    run = cli_json(home, "eval", "run", str(suite), "--agent", "oracle", "--agent", "nop", "--max-iters", "1")
    status = cli_json(home, "eval", "status", run["run_id"][:12])
    assert status["run_id"] == run["run_id"] and status["status"] == "completed"
    assert (status["total"], status["pending"], status["running"], status["done"]) == (4, 0, [], 4)
    assert (status["passed"], status["failed"], status["errors"]) == (2, 2, 0)
    assert status["executor"] == "local"
    text = cli(home, "eval", "status", run["run_id"]).stdout
    assert "4 cells: 0 pending, 0 running, 4 done (2 passed), 2 failed" in text


@pytest.mark.skipif(not probe_bwrap().usable, reason="bubblewrap is not usable here")
def test_a_stored_cell_is_returned_not_run_again(store, tmp_path: Path) -> None:
    import shutil

    from loopmeter.evals.runner import EvalOptions, cell_specs, plan, start_eval
    from loopmeter.evals.suite import load_suite
    from loopmeter.executors.base import stored_result

    suite_dir = tmp_path / "suite"
    shutil.copytree(GOLD / "fix-pagination", suite_dir / "fix-pagination")
    outcome = start_eval(suite_dir, ["oracle"], EvalOptions(), store=store)
    suite = load_suite(suite_dir)
    stored, fresh = cell_specs(outcome.run_id, suite, plan(suite, parse(["oracle"]), 2), EvalOptions(), store)
    res = stored_result(store, stored)
    assert res is not None and res.passed and res.error_kind is None and res.attempt_id
    assert stored_result(store, fresh) is None  # epoch 1 was never run


def parse(specs: list[str]):
    from loopmeter.evals.runner import parse_configs

    return parse_configs(specs, "repo")
