"""Git worktrees per attempt (GitPython): one branch `loopmeter/<run>/<agent>[-n]` each.

Commits made here (an attempt's changes, `apply`) come from the host, never from
inside the sandbox, where the repository's git directory is read-only.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.errors import LoopmeterError

if TYPE_CHECKING:
    import git

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "loopmeter",
    "GIT_AUTHOR_EMAIL": "loopmeter@localhost",
    "GIT_COMMITTER_NAME": "loopmeter",
    "GIT_COMMITTER_EMAIL": "loopmeter@localhost",
}
# byproducts of running a check, not the agent's work
CACHE_EXCLUDES = (":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/.pytest_cache/**", ":(exclude,glob)**/*.pyc")
# `git worktree add/remove` on one repository from two threads at once races on
# .git/worktrees/ ("failed to read .git/worktrees/x/commondir"): serialise them.
_WORKTREE_LOCK = threading.Lock()


def open_repo(path: Path) -> git.Repo:
    """The git repository at or above `path`; a LoopmeterError with a hint when there is none."""
    import git

    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise LoopmeterError(
            f"{path} is not a git repository",
            hint="run inside a git repository (or pass --repo DIR), or `git init && git commit` first;"
            " `--task DIR` makes a repository from a task directory",
        ) from exc
    if repo.bare:
        raise LoopmeterError(f"{path} is a bare repository", hint="point --repo at a checkout")
    try:
        repo.head.commit  # noqa: B018 - raises on a repository without commits
    except ValueError as exc:
        raise LoopmeterError(f"{path} has no commits yet", hint="commit something first") from exc
    return repo


def repo_from_dir(source: Path, dest: Path | None = None) -> Path:
    """Copy `source` (a task's repo/) to a fresh git repository with one commit."""
    import git

    dest = Path(tempfile.mkdtemp(prefix="loopmeter-task-")) / "repo" if dest is None else dest
    shutil.copytree(source, dest, dirs_exist_ok=True)
    repo = git.Repo.init(dest, initial_branch="main")
    with repo.git.custom_environment(**GIT_IDENTITY):
        repo.git.add("-A", "--force")
        repo.git.commit("-q", "--allow-empty", "-m", "task repository")
    return dest


def branch_name(run_id: str, agent: str, used: set[str]) -> str:
    """`loopmeter/<run>/<agent>`, with `-2`, `-3` ... when the same agent runs twice."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", agent).strip("-.") or "agent"
    name = f"loopmeter/{run_id}/{safe}"
    n = 2
    candidate = name
    while candidate in used:
        candidate = f"{name}-{n}"
        n += 1
    used.add(candidate)
    return candidate


def create_worktree(repo_path: Path, base_commit: str, branch: str, dest: Path) -> Path:
    """A worktree at `dest` on a new branch from `base_commit`; reused when it already exists."""
    import git

    repo = git.Repo(repo_path)
    if dest.exists() and (dest / ".git").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _WORKTREE_LOCK:
        existing = {h.name for h in repo.branches}  # type: ignore[attr-defined]
        if branch in existing:
            repo.git.worktree("add", "--force", str(dest), branch)
        else:
            repo.git.worktree("add", "-b", branch, str(dest), base_commit)
    return dest


def commit_all(worktree: Path, message: str) -> str:
    """Commit everything changed in the worktree (if anything); return the head sha."""
    import git

    repo = git.Repo(worktree)
    with repo.git.custom_environment(**GIT_IDENTITY):
        repo.git.add("-A", "--", ".", *CACHE_EXCLUDES)
        if repo.git.diff("--cached", "--name-only"):
            repo.git.commit("-q", "--no-verify", "-m", message)
    return str(repo.head.commit.hexsha)


def diffstat(worktree: Path, base_commit: str) -> dict[str, Any]:
    """{files, insertions, deletions} of the worktree's HEAD against base (call after commit_all)."""
    import git

    out = git.Repo(worktree).git.diff("--numstat", base_commit, "HEAD")
    files = insertions = deletions = 0
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        files += 1
        insertions += int(parts[0]) if parts[0].isdigit() else 0
        deletions += int(parts[1]) if parts[1].isdigit() else 0
    return {"files": files, "insertions": insertions, "deletions": deletions}


def remove_worktree(repo_path: Path, worktree: Path) -> None:
    import git

    try:
        with _WORKTREE_LOCK:
            git.Repo(repo_path).git.worktree("remove", "--force", str(worktree))
    except git.GitCommandError:
        shutil.rmtree(worktree, ignore_errors=True)
