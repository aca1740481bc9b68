"""Remove what finished runs left on disk: their worktrees, and on request their branches
and the repositories loopmeter made from task directories.

A run keeps every record in the store (attempts, iterations, usage, diffstat, audit log);
only checkouts go. The attempts' commits stay on their branches, so `apply` still works
after a clean unless `--branches` or `--repos` removed them. Runs that may still go on
(pending, running, waiting: a crashed run stays `running` until resumed) are skipped.
Nothing outside loopmeter's own worktrees and repos folders is ever deleted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.records import utcnow

if TYPE_CHECKING:
    from loopmeter.config import Settings
    from loopmeter.store import Store

LIVE = ("pending", "running", "waiting")  # run statuses that `resume` / `approve` may continue


@dataclass
class Cleaned:
    """What cleaning one run removed (or, on a dry run, would remove)."""

    run_id: str
    status: str
    worktrees: list[str] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    repo: str | None = None  # a repository loopmeter made from a task directory
    bytes: int = 0
    skipped: str | None = None  # why nothing was removed
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, names in os.walk(path):
        for name in names + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _repo(path: str | None) -> Any:
    """The git repository at `path`, or None when it is gone or is not one."""
    if not path or not Path(path).is_dir():
        return None
    import git

    try:
        return git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def _candidates(store: Store, run_ids: list[str] | None, older_than_days: float | None) -> list[Any]:
    from sqlmodel import select

    from loopmeter.agents.runs import find_run
    from loopmeter.store import Run, as_utc

    if run_ids:
        runs = [find_run(store, r) for r in run_ids]
    else:
        with store.session() as s:
            runs = list(s.exec(select(Run).order_by(Run.id)))  # type: ignore[arg-type]
    if older_than_days is not None:
        cutoff = utcnow() - timedelta(days=older_than_days)
        runs = [r for r in runs if (r.ended_at or r.started_at) is not None
                and as_utc(r.ended_at or r.started_at) < cutoff]
    return runs


def clean_runs(store: Store, settings: Settings, run_ids: list[str] | None = None, *,
               older_than_days: float | None = None, branches: bool = False, repos: bool = False,
               dry_run: bool = False) -> list[Cleaned]:
    """Clean the given runs (ids or unique prefixes), else every finished run; see the module doc."""
    from loopmeter.agents.runs import attempts_of
    from loopmeter.agents.worktree import _WORKTREE_LOCK

    out = []
    for run in _candidates(store, run_ids, older_than_days):
        done = Cleaned(run.id, run.status)
        out.append(done)
        if run.status in LIVE:
            done.skipped = f"run is {run.status}: resume, approve or deny it first"
            continue
        repo = _repo(run.repo)
        attempts = attempts_of(store, run.id)
        for a in attempts:
            path = Path(a.worktree) if a.worktree else None
            if path is None or not path.exists() or not _inside(path, settings.worktrees_dir):
                continue
            done.worktrees.append(str(path))
            done.bytes += _size(path)
            if dry_run:
                continue
            removed = False
            if repo is not None:
                import git

                with _WORKTREE_LOCK:
                    try:
                        repo.git.worktree("remove", "--force", "--force", str(path))
                        removed = True
                    except git.GitCommandError:
                        pass  # not registered there (moved repo, broken link): removed by hand below
            if not removed:
                shutil.rmtree(path, ignore_errors=True)
        if repo is not None and not dry_run:
            with _WORKTREE_LOCK:
                repo.git.worktree("prune")
        run_dir = settings.worktrees_dir / run.id
        if not dry_run and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        if branches and repo is not None:
            existing = {h.name for h in repo.branches}  # type: ignore[attr-defined]
            for a in attempts:
                if a.branch and a.branch in existing:
                    done.branches.append(a.branch)
                    if not dry_run:
                        import git

                        try:
                            repo.git.branch("-D", a.branch)
                        except git.GitCommandError as exc:
                            done.errors.append(f"branch {a.branch}: {exc.stderr.strip() or exc}")
        made = settings.home / "repos" / run.id
        if repos and run.repo and Path(run.repo).is_dir() and _inside(Path(run.repo), made):
            done.repo = run.repo
            done.bytes += _size(Path(run.repo))
            if not dry_run:
                shutil.rmtree(made, ignore_errors=True)
    return out
