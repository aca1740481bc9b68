"""Remove what finished runs left on disk: their worktrees, and on request their branches
and the repositories loopmeter made from task directories.

A run keeps every record in the store (attempts, iterations, usage, diffstat, audit log);
only checkouts go. The attempts' commits stay on their branches, so `apply` still works
after a clean unless `--branches` or `--repos` removed them.

What is never touched: runs that may still go on (running, waiting, and cancelled
ones, which `resume` continues; a crashed run stays `running`); a worktree
with changes of its own (edits, new files; a check's caches do not count) or locked
with `git worktree lock`, unless forced; any path that is not exactly
`<worktrees>/<run id>/<name>` or `<home>/repos/<run id>`; a worktree holding another
run's repository; branches not named `loopmeter/<run id>/...`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopmeter.records import utcnow
from loopmeter.vocab import RunStatus

if TYPE_CHECKING:
    from loopmeter.config import Settings
    from loopmeter.store import Store

LIVE = (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.CANCELLED)  # run statuses `resume` / `approve` may continue
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class Cleaned:
    """What cleaning one run removed (or, on a dry run, would remove)."""

    run_id: str
    status: str
    worktrees: list[str] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    repo: str | None = None  # a repository loopmeter made from a task directory
    bytes: int = 0
    skipped: str | None = None  # why the run was left alone
    kept: list[str] = field(default_factory=list)  # worktrees left in place, with why
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    """host git for the repository at `path` (see loopmeter.hostgit), or None when it is gone or is not one."""
    if not path or not Path(path).is_dir():
        return None
    from loopmeter.errors import LoopmeterError
    from loopmeter.hostgit import HostGit, repo_layout

    try:
        return HostGit(repo_layout(Path(path)))
    except LoopmeterError:
        return None


def _candidates(store: Store, settings: Settings, run_ids: list[str] | None,
                older_than_days: float | None) -> list[Any]:
    from sqlmodel import select

    from loopmeter.agents.runs import find_run
    from loopmeter.store import Run, as_utc

    if run_ids:
        runs = [find_run(store, r) for r in run_ids]
    else:  # a shared store also holds other people's runs: only this user's
        with store.session() as s:
            runs = [r for r in s.exec(select(Run).order_by(Run.id))  # type: ignore[arg-type]
                    if r.user in (None, settings.user)]
    if older_than_days is not None:
        cutoff = utcnow() - timedelta(days=older_than_days)
        runs = [r for r in runs if (r.ended_at or r.started_at) is not None
                and as_utc(r.ended_at or r.started_at) < cutoff]
    return runs


def _changes(repo: Any, worktree: Path) -> str | None:
    """What the worktree holds beyond its last commit (a check's caches aside), or None."""
    from loopmeter.agents.worktree import CACHE_EXCLUDES
    from loopmeter.errors import LoopmeterError
    from loopmeter.hostgit import HostGit, worktree_layout

    if repo is None:
        return "its repository is gone"
    try:
        git = HostGit(worktree_layout(repo.layout.work_tree, worktree))
        out = git("status", "--porcelain", "--untracked-files=all", "--ignore-submodules=all", "--", ".",
                  *CACHE_EXCLUDES)
    except LoopmeterError as exc:
        return f"cannot read its status ({exc.message})"
    lines = out.splitlines()
    return None if not lines else f"{len(lines)} changed file{'s' if len(lines) != 1 else ''}"


def _remove_worktree(repo: Any, path: Path, force: bool) -> str | None:
    """Remove one worktree; why it stays (a lock), else None (check that it is gone)."""
    from loopmeter.agents.worktree import _WORKTREE_LOCK
    from loopmeter.hostgit import GitError, remove_path

    if repo is not None:
        with _WORKTREE_LOCK:
            try:
                # one --force: the check's caches go; two: a `git worktree lock` is overridden
                repo("worktree", "remove", *(["--force", "--force"] if force else ["--force"]), str(path))
            except GitError as exc:
                if "locked" in exc.stderr and not force:
                    return "locked (git worktree lock); --force removes it"
                # else: not a worktree of that repository (moved, broken link): removed by hand
    if os.path.lexists(path):
        remove_path(path)
        if repo is not None:
            _forget(repo, path)
    return None


def _forget(repo: Any, path: Path) -> None:
    """Drop the repository's record of the worktree at `path` (and no other: `git worktree
    prune` would also drop the user's own worktrees that are only out of reach)."""
    admin = repo.layout.common_dir / "worktrees"
    for entry in admin.glob("*/gitdir") if admin.is_dir() else []:
        try:
            if Path(entry.read_text().strip()).resolve().parent == path:
                shutil.rmtree(entry.parent, ignore_errors=True)
        except OSError:
            continue


def _why_not(repo: Any, path: Path, run_dir: Path, other_repos: list[Path], force: bool) -> str | None:
    """Why a worktree must stay (None: it may go)."""
    if path.parent != run_dir:
        return f"not in {run_dir}"
    if any(r == path or path in r.parents for r in other_repos):
        return "holds a run's repository"
    changes = _changes(repo, path)
    if changes is not None and not force:
        return f"{changes}; --force removes it"
    return None


def clean_runs(store: Store, settings: Settings, run_ids: list[str] | None = None, *,
               older_than_days: float | None = None, branches: bool = False, repos: bool = False,
               force: bool = False, dry_run: bool = False) -> list[Cleaned]:
    """Clean the given runs (ids or unique prefixes), else every finished run of this user;
    see the module doc."""
    from sqlmodel import select

    from loopmeter.store import Run

    runs = _candidates(store, settings, run_ids, older_than_days)
    with store.session() as s:
        other_repos = [Path(r).resolve() for r in s.exec(select(Run.repo)) if r]  # type: ignore[call-overload]
    out = []
    for run in runs:
        current = store.get(Run, run.id)  # read again: a `resume` may have started meanwhile
        done = Cleaned(run.id, current.status if current is not None else run.status)
        if done.status in LIVE:
            done.skipped = f"run is {done.status}: resume, approve or deny it first"
        elif not _SAFE_ID.fullmatch(run.id):
            done.skipped = f"run id {run.id!r} cannot name a folder"
        else:
            _clean_run(store, settings, run, done, other_repos, branches=branches, repos=repos, force=force,
                       dry_run=dry_run)
        out.append(done)
    return out


def _clean_run(store: Store, settings: Settings, run: Any, done: Cleaned, other_repos: list[Path], *,
               branches: bool, repos: bool, force: bool, dry_run: bool) -> None:
    from loopmeter.agents.runs import attempts_of

    run_dir = settings.worktrees_dir.resolve() / run.id
    repo = _repo(run.repo)
    attempts = attempts_of(store, run.id)
    staying: set[str] = set()  # attempts whose worktree stays: their branches stay too
    for a in attempts:
        if not a.worktree or not Path(a.worktree).exists():
            continue
        path = Path(a.worktree).resolve()
        why = _why_not(repo, path, run_dir, other_repos, force)
        size = 0 if why else _size(path)
        if why is None and not dry_run:
            why = _remove_worktree(repo, path, force)
            if why is None and path.exists():
                done.errors.append(f"{a.worktree}: could not be removed")
                staying.add(a.id)
                continue
        if why is not None:
            done.kept.append(f"{a.worktree}: {why}")
            staying.add(a.id)
            continue
        done.worktrees.append(str(path))
        done.bytes += size
    if not dry_run and run_dir.is_dir():
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when it is empty
    if branches and repo is not None:
        _drop_branches(repo, run.id, [a for a in attempts if a.id not in staying], done, dry_run)
    made = (settings.home / "repos" / run.id).resolve()
    if repos and run.repo and Path(run.repo).resolve() == made and made.is_dir():
        if staying:
            done.kept.append(f"{made}: stays with the worktrees that stay")
        elif any(path != made and made in path.parents for path in other_repos):
            done.kept.append(f"{made}: holds another run's repository")
        else:
            size = _size(made)
            if not dry_run:
                shutil.rmtree(made, ignore_errors=True)
            if made.exists() and not dry_run:
                done.errors.append(f"{made}: could not be removed")
            else:
                done.repo, done.bytes = str(made), done.bytes + size


def _drop_branches(repo: Any, run_id: str, attempts: list[Any], done: Cleaned, dry_run: bool) -> None:
    """Delete the attempts' branches, only those named `loopmeter/<run id>/...`."""
    from loopmeter.hostgit import GitError

    existing = set(repo("for-each-ref", "--format=%(refname:short)", "refs/heads/").split())
    for a in attempts:
        if not (a.branch and a.branch.startswith(f"loopmeter/{run_id}/") and a.branch in existing):
            continue
        if not dry_run:
            try:
                repo("branch", "-D", a.branch)
            except GitError as exc:
                done.errors.append(f"branch {a.branch}: {exc.stderr or exc.message}")
                continue
        done.branches.append(a.branch)
