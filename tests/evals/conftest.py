"""Fixtures for eval tests: a private LOOPMETER_HOME shared by the slow CLI runs of one module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import loopmeter_cmd

GOLD = Path(__file__).resolve().parents[2] / "loopmeter" / "evals" / "gold"


def cli(home: Path, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOOPMETER_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("LOOPMETER_DB_URL", None)
    out = subprocess.run(loopmeter_cmd(*args), capture_output=True, text=True, env=env, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"loopmeter {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def cli_json(home: Path, *args: str, **kw: Any) -> Any:
    return json.loads(cli(home, *args, "--json", **kw).stdout)


def small_suite(dest: Path, task_ids: list[str]) -> Path:
    """A suite directory holding copies of some gold tasks."""
    dest.mkdir(parents=True, exist_ok=True)
    for task_id in task_ids:
        shutil.copytree(GOLD / task_id, dest / task_id)
    return dest
