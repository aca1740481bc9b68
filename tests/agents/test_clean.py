"""`loopmeter runs clean`: finished runs' worktrees go, records and branches stay; live runs are skipped."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from loopmeter.agents.loop import AgentSpec, Budgets, RunRequest, start_run
from loopmeter.records import utcnow
from loopmeter.store import Attempt, Run
from tests.agents.conftest import git_repo
from tests.conftest import loopmeter_cmd


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(loopmeter_cmd(*args), cwd=cwd, capture_output=True, text=True)


def _user_repo(tmp_path: Path, task) -> Path:
    repo = tmp_path / "user-repo"
    repo.mkdir()
    (repo / "calc.py").write_text((task.path / "repo" / "calc.py").read_text())
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "-c", "user.name=Dev", "-c", "user.email=dev@example.com", "add", "-A")
    _git(repo, "-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "start")
    return repo


def test_clean_removes_worktrees_keeps_records_and_apply_still_works(store, fix_add_task, sandbox,
                                                                      tmp_path) -> None:
    repo = _user_repo(tmp_path, fix_add_task)
    result = start_run(RunRequest(
        instruction="Fix add", check=fix_add_task.check, repo=repo, task=fix_add_task,
        agents=[AgentSpec("nop"), AgentSpec("oracle")], sandbox=sandbox, budgets=Budgets(max_iters=1)),
        store=store)
    assert result.status == "passed"
    attempts = [store.get(Attempt, a) for a in (f"{result.run_id}-1", f"{result.run_id}-2")]
    worktrees = [Path(a.worktree) for a in attempts]
    assert all(w.is_dir() for w in worktrees)
    assert _git(repo, "worktree", "list").count("\n") == 3

    dry = _cli("runs", "clean", "--dry-run", result.run_id)
    assert dry.returncode == 0, dry.stderr
    assert f"{result.run_id}: would remove 2 worktrees" in dry.stdout
    assert all(w.is_dir() for w in worktrees)

    out = _cli("runs", "clean", result.run_id[:10], "--json")  # a unique prefix
    assert out.returncode == 0, out.stderr
    (done,) = json.loads(out.stdout)
    assert done["run_id"] == result.run_id and sorted(done["worktrees"]) == sorted(map(str, worktrees))
    assert done["bytes"] > 0 and done["branches"] == [] and done["skipped"] is None
    assert not any(w.exists() for w in worktrees)
    assert _git(repo, "worktree", "list").count("\n") == 1  # git forgot them too
    branches = _git(repo, "branch", "--list", "loopmeter/*").split()
    assert sorted(branches) == sorted(a.branch for a in attempts)
    # every record is still there
    assert store.get(Run, result.run_id).status == "passed"
    assert [store.get(Attempt, a.id).head_commit for a in attempts] == [a.head_commit for a in attempts]

    applied = _cli("apply", result.run_id, cwd=repo)  # the winner's commit lives on its branch
    assert applied.returncode == 0, applied.stderr
    assert "a + b" in (repo / "calc.py").read_text()

    again = _cli("runs", "clean", result.run_id)
    assert again.returncode == 0 and "nothing to clean" in again.stdout
    with_branches = _cli("runs", "clean", result.run_id, "--branches")
    assert with_branches.returncode == 0, with_branches.stderr
    assert "2 branches" in with_branches.stdout
    assert _git(repo, "branch", "--list", "loopmeter/*").strip() == ""


def test_live_runs_and_paths_outside_loopmeter_are_left_alone(store, tmp_path, loopmeter_home) -> None:
    from loopmeter.agents.worktree import create_worktree

    repo = git_repo(tmp_path / "repo", "hello\n")
    base = _git(repo, "rev-parse", "HEAD").strip()
    worktrees = loopmeter_home / "worktrees"
    live = create_worktree(repo, base, "loopmeter/LIVE/nop", worktrees / "LIVE" / "nop")
    elsewhere = create_worktree(repo, base, "loopmeter/DONE/nop", tmp_path / "not-ours")
    finished = create_worktree(repo, base, "loopmeter/DONE/oracle", worktrees / "DONE" / "oracle")
    store.save(
        Run(id="LIVE", task="t", repo=str(repo), base_commit=base, status="running", started_at=utcnow()),
        Attempt(id="LIVE-1", run_id="LIVE", agent="nop", worktree=str(live), branch="loopmeter/LIVE/nop",
                status="running"),
        Run(id="DONE", task="t", repo=str(repo), base_commit=base, status="failed", started_at=utcnow(),
            ended_at=utcnow()),
        Attempt(id="DONE-1", run_id="DONE", agent="nop", worktree=str(elsewhere), branch="loopmeter/DONE/nop",
                status="failed"),
        Attempt(id="DONE-2", run_id="DONE", agent="oracle", worktree=str(finished),
                branch="loopmeter/DONE/oracle", status="failed"),
    )

    named = _cli("runs", "clean", "LIVE")
    assert named.returncode == 0 and "LIVE: skipped (run is running" in named.stdout
    assert live.is_dir()

    recent = _cli("runs", "clean", "--older-than", "1")  # both runs ended just now
    assert recent.returncode == 0 and "nothing to clean" in recent.stdout
    assert finished.is_dir()

    out = _cli("runs", "clean", "--json")  # every run
    assert out.returncode == 0, out.stderr
    by_id = {d["run_id"]: d for d in json.loads(out.stdout)}
    assert by_id["LIVE"]["skipped"] and by_id["LIVE"]["worktrees"] == []
    assert by_id["DONE"]["worktrees"] == [str(finished.resolve())]
    assert by_id["DONE"]["kept"] == [f"{elsewhere}: not in {(worktrees / 'DONE').resolve()}"]
    assert live.is_dir() and elsewhere.is_dir() and not finished.exists()
    assert not (worktrees / "DONE").exists()  # the run's emptied folder goes too
    assert _git(repo, "worktree", "list").count("\n") == 3  # the main one, LIVE's and the one not ours


def test_a_folder_git_does_not_know_goes_only_when_forced(store, tmp_path, loopmeter_home) -> None:
    repo = git_repo(tmp_path / "repo", "hello\n")
    stray = loopmeter_home / "worktrees" / "OLD" / "nop"
    stray.mkdir(parents=True)
    (stray / "left.txt").write_text("x")
    store.save(Run(id="OLD", task="t", repo=str(repo), status="failed", started_at=utcnow()),
               Attempt(id="OLD-1", run_id="OLD", agent="nop", worktree=str(stray), branch="loopmeter/OLD/nop"))
    kept = _cli("runs", "clean", "OLD")
    assert kept.returncode == 0 and "cannot read its status" in kept.stdout and stray.is_dir()
    forced = _cli("runs", "clean", "OLD", "--force")
    assert forced.returncode == 0, forced.stderr
    assert not stray.exists() and "OLD: removed 1 worktree" in forced.stdout


def test_work_of_its_own_a_lock_cancelled_runs_and_foreign_branches_stay(store, tmp_path,
                                                                          loopmeter_home) -> None:
    from loopmeter.agents.worktree import create_worktree

    repo = git_repo(tmp_path / "repo", "hello\n")
    base = _git(repo, "rev-parse", "HEAD").strip()
    worktrees = loopmeter_home / "worktrees" / "R1"
    dirty = create_worktree(repo, base, "loopmeter/R1/dirty", worktrees / "dirty")
    locked = create_worktree(repo, base, "loopmeter/R1/locked", worktrees / "locked")
    cached = create_worktree(repo, base, "main-feature", worktrees / "cached")  # a branch loopmeter did not name
    (dirty / "notes.txt").write_text("mine, not committed\n")
    _git(repo, "worktree", "lock", str(locked))
    (cached / "__pycache__").mkdir()
    (cached / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"cache")  # a check's byproduct
    cancelled = create_worktree(repo, base, "loopmeter/R2/nop", loopmeter_home / "worktrees" / "R2" / "nop")
    store.save(
        Run(id="R1", task="t", repo=str(repo), base_commit=base, status="failed", started_at=utcnow()),
        Attempt(id="R1-1", run_id="R1", agent="a", worktree=str(dirty), branch="loopmeter/R1/dirty"),
        Attempt(id="R1-2", run_id="R1", agent="b", worktree=str(locked), branch="loopmeter/R1/locked"),
        Attempt(id="R1-3", run_id="R1", agent="c", worktree=str(cached), branch="main-feature"),
        Run(id="R2", task="t", repo=str(repo), base_commit=base, status="cancelled", started_at=utcnow()),
        Attempt(id="R2-1", run_id="R2", agent="nop", worktree=str(cancelled), branch="loopmeter/R2/nop"),
    )

    out = _cli("runs", "clean", "R1", "R2", "--branches")
    assert out.returncode == 0, out.stderr
    assert "R2: skipped (run is cancelled" in out.stdout and cancelled.is_dir()  # `resume` continues it
    assert dirty.is_dir() and (dirty / "notes.txt").read_text() == "mine, not committed\n"
    assert "1 changed file; --force removes it" in out.stdout
    assert locked.is_dir() and "locked (git worktree lock)" in out.stdout
    assert not cached.exists()  # only caches: removed
    kept_branches = _git(repo, "branch", "--list").split()
    assert "main-feature" in kept_branches  # not named by loopmeter for this run
    assert {"loopmeter/R1/dirty", "loopmeter/R1/locked"} <= set(kept_branches)  # their worktrees stay

    forced = _cli("runs", "clean", "R1", "--force", "--branches")
    assert forced.returncode == 0, forced.stderr
    assert not dirty.exists() and not locked.exists()
    assert _git(repo, "branch", "--list", "loopmeter/R1/*").strip() == ""
    assert _git(repo, "worktree", "list").count("\n") == 2  # the main one and R2's


def test_repos_removes_the_repository_made_from_a_task_directory(store, fix_add_task, sandbox,
                                                                  loopmeter_home) -> None:
    result = start_run(RunRequest(
        instruction="Fix add", check=fix_add_task.check, repo=None, task=fix_add_task, agents=[AgentSpec("oracle")],
        sandbox=sandbox, budgets=Budgets(max_iters=1)), store=store)
    run = store.get(Run, result.run_id)
    made = Path(run.repo)
    assert made.is_dir() and made.resolve() == (loopmeter_home / "repos" / result.run_id).resolve()

    kept = _cli("runs", "clean", result.run_id)
    assert kept.returncode == 0 and made.is_dir()  # without --repos the repository stays
    out = _cli("runs", "clean", result.run_id, "--repos")
    assert out.returncode == 0, out.stderr
    assert "its task repository" in out.stdout
    assert not made.exists()
