"""Fixtures for log ingest: copies of the hand-written logs in a temp dir, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, loopmeter_cmd

LOGS = FIXTURES / "logs"
CLAUDE_FILE = "claude/projects/-home-dev-api/11111111-aaaa-bbbb-cccc-000000000001.jsonl"
CODEX_FILE = "codex/sessions/2026/11/09/rollout-2026-11-09T10-00-00-0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.jsonl"
GEMINI_JSON = "gemini/tmp/abc123/chats/session-2026-11-09T10-00-a1b2c3d4.json"
GEMINI_JSONL = "gemini/tmp/def456/chats/session-2026-11-09T11-00-b2c3d4e5.jsonl"


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """A private copy of tests/fixtures/logs (tests append to and replace these files)."""
    dest = tmp_path / "logs"
    shutil.copytree(LOGS, dest, ignore=shutil.ignore_patterns("*.py", "*.txt", "__pycache__"))
    return dest


@pytest.fixture
def agent_env(tmp_path: Path, loopmeter_home: Path) -> dict[str, str]:
    """Environment for the CLI with an empty HOME and no agent variables from the outside."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_DATA_DIR", "TZ")}
    env.update(HOME=str(home), LOOPMETER_HOME=str(loopmeter_home), NO_COLOR="1", COLUMNS="80")
    return env


def run_usage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(loopmeter_cmd("usage", *args), env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def usage_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = run_usage(env, *args, "--json")
    return json.loads(proc.stdout)


def by_model(report: dict[str, Any], period: str = "daily") -> dict[tuple[str, str], dict[str, Any]]:
    """{(period label, model): breakdown entry} over the whole report."""
    key = {"daily": "date", "weekly": "week", "monthly": "month", "session": "session"}[period]
    return {(row[key], b["model"]): b for row in report[period] for b in row["breakdown"]}


TOKENS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens", "reasoning_tokens")


def tokens(entry: dict[str, Any]) -> tuple[int, ...]:
    return tuple(entry[k] for k in TOKENS)
