"""Fixtures for the agent tests: task directories, git worktrees, a policy with extra rules, a sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TASKS = Path(__file__).resolve().parent.parent / "fixtures" / "agents" / "tasks"


def sandbox_kind() -> str:
    """Real bubblewrap where it can start; the audited `none` runner otherwise."""
    from loopmeter.sandbox import SandboxUnavailable, make_runner

    try:
        make_runner("bwrap")
        return "bwrap"
    except SandboxUnavailable:
        return "none"


@pytest.fixture(scope="session")
def sandbox() -> str:
    return sandbox_kind()


@pytest.fixture
def runner(store):
    """The bubblewrap runner, auditing into `store`."""
    from loopmeter.sandbox import make_runner

    return make_runner("bwrap", store=store)


def git_repo(path: Path, readme: str) -> Path:
    """A new git repo at `path` with one commit: README.md holding `readme`."""
    path.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    (path / "README.md").write_text(readme)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=path, check=True, env=env)
    return path


@pytest.fixture
def fix_add_task(tmp_path: Path):
    from loopmeter.tasks import load_task

    dest = tmp_path / "fix-add"
    shutil.copytree(TASKS / "fix-add", dest)
    return load_task(dest)


@pytest.fixture
def slow_task(tmp_path: Path):
    from loopmeter.tasks import load_task

    dest = tmp_path / "slow-solve"
    shutil.copytree(TASKS / "slow-solve", dest)
    return load_task(dest)


def policy_with(tmp_path: Path, rules: str) -> Path:
    """The default preset plus `rules` (YAML list items) ahead of its own rules."""
    from loopmeter.policies import preset_path

    text = preset_path("default").read_text()
    text = text.replace("name: default", "name: test-policy", 1).replace("rules:\n", "rules:\n" + rules, 1)
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path
