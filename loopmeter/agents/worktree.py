"""Git worktrees per attempt: one branch `loopmeter/<run>/<agent>[-n]` each.

Commits made here (an attempt's changes, `apply`) come from the host, never from
inside the sandbox, where the repository's git directory is read-only; they go
through `hostgit`, which takes the git dir from the repository's records, never
from the worktree.
"""

from __future__ import annotations

import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.errors import LoopmeterError
from loopmeter.hostgit import GIT_IDENTITY

if TYPE_CHECKING:
    import git

    from loopmeter.hostgit import HostGit

__all__ = ["GIT_IDENTITY", "CACHE_EXCLUDES", "attempt_git", "commit_all", "create_worktree", "diffstat",
           "open_repo", "repo_from_dir"]

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
    """Copy `source` (a task's repo/) to a fresh git repository with one commit.

    Links in it are copied as links, never followed; a `.git` in it is refused (tasks.copy_task_repo)."""
    import subprocess

    from loopmeter.hostgit import HostGit, clean_env, repo_layout
    from loopmeter.tasks import copy_task_repo

    dest = Path(tempfile.mkdtemp(prefix="loopmeter-task-")) / "repo" if dest is None else dest
    dest.mkdir(parents=True, exist_ok=True)
    copy_task_repo(source, dest)
    # the task's files are somebody else's input: its .gitattributes may name drivers, so host git as always
    subprocess.run(["git", "init", "-q", "-b", "main", str(dest)], env=clean_env(), check=True,
                   capture_output=True)
    git = HostGit(repo_layout(dest))
    git("add", "-A", "--force")
    git("commit", "-q", "--allow-empty", "-m", "task repository", env=GIT_IDENTITY)
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
    """A worktree at `dest` on a new branch from `base_commit`; reused when it already exists
    as a worktree of `repo_path` (by the repository's own list, not by what `dest` says)."""
    from loopmeter.hostgit import HostGit, repo_layout, restore_dotgit, worktree_layout

    if dest.exists():
        layout = worktree_layout(repo_path, dest)  # raises when the folder is not one of its worktrees
        restore_dotgit(layout)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    git = HostGit(repo_layout(repo_path))
    with _WORKTREE_LOCK:
        if git("branch", "--list", branch).strip():
            git("worktree", "add", "--force", str(dest), branch)
        else:
            git("worktree", "add", "-b", branch, str(dest), base_commit)
    return dest


def attempt_git(repo_path: Path, worktree: Path) -> HostGit:
    """git for an attempt's worktree, its git dir from the repository's records."""
    from loopmeter.hostgit import HostGit, worktree_layout

    return HostGit(worktree_layout(repo_path, worktree))


def commit_all(repo_path: Path, worktree: Path, message: str) -> str:
    """Commit everything changed in the worktree (if anything); return the head sha."""
    git = attempt_git(repo_path, worktree)
    git("add", "-A", "--", ".", *CACHE_EXCLUDES)
    if git("diff-index", "--cached", "--name-only", "HEAD", "--").strip():
        git("commit", "-q", "--no-verify", "-m", message, env=GIT_IDENTITY)
    return git("rev-parse", "HEAD").strip()


def diffstat(repo_path: Path, worktree: Path, base_commit: str) -> dict[str, Any]:
    """{files, insertions, deletions} of the worktree's HEAD against base (call after commit_all)."""
    out = attempt_git(repo_path, worktree)("diff-tree", "-r", "--numstat", base_commit, "HEAD")
    files = insertions = deletions = 0
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        files += 1
        insertions += int(parts[0]) if parts[0].isdigit() else 0
        deletions += int(parts[1]) if parts[1].isdigit() else 0
    return {"files": files, "insertions": insertions, "deletions": deletions}
