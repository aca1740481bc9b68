"""Apply an attempt: squash its branch onto the repository's current branch as one commit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from loopmeter.errors import LoopmeterError
from loopmeter.records import utcnow

if TYPE_CHECKING:
    from loopmeter.store import Store


def apply_attempt(store: Store, run_id: str, attempt_id: str | None = None, cwd: Path | None = None
                  ) -> tuple[str, str]:
    """(commit sha, branch applied). Records applied_at on the attempt and an outcome row."""
    from loopmeter.agents.runs import attempts_of, find_run
    from loopmeter.agents.worktree import open_repo
    from loopmeter.hostgit import GitError, HostGit, repo_layout
    from loopmeter.store import Outcome

    run = find_run(store, run_id)
    attempts = attempts_of(store, run.id)
    if attempt_id is not None:
        chosen = [a for a in attempts if a.id == attempt_id or a.id.endswith(f"-{attempt_id}")]
        if not chosen:
            raise LoopmeterError(f"run {run.id} has no attempt {attempt_id}",
                                 hint="attempts: " + ", ".join(a.id for a in attempts))
        target = chosen[0]
        if target.role == "shadow":
            raise LoopmeterError(f"{target.id} is a shadow attempt", hint="shadow attempts are never applied")
    else:
        if run.winner_attempt_id is None:
            raise LoopmeterError(f"run {run.id} has no winner (no attempt passed its check)",
                                 hint="pass --attempt ID to apply a failed attempt anyway")
        target = next(a for a in attempts if a.id == run.winner_attempt_id)
    if target.applied_at is not None:
        raise LoopmeterError(f"{target.id} was already applied at {target.applied_at}")
    if not target.head_commit or not target.branch:
        raise LoopmeterError(f"{target.id} has no commit to apply", hint="its attempt did not finish")
    repo = open_repo(Path(run.repo or cwd or "."))
    git = HostGit(repo_layout(Path(repo.working_tree_dir or ".")))
    if git("status", "--porcelain", "--untracked-files=no", "--ignore-submodules=all").strip():
        raise LoopmeterError(f"{repo.working_tree_dir} has uncommitted changes",
                             hint="commit or stash them first, then apply again")
    title = (run.task or "").strip().splitlines()[0][:72] if run.task else "loopmeter run"
    agent = target.agent + (f":{target.model}" if target.model else "")
    message = (f"{title}\n\nBy {agent} in loopmeter run {run.id}, attempt {target.id} "
               f"({target.iterations} iteration(s)).\n\nLoopmeter-Run: {run.id}\nLoopmeter-Attempt: {target.id}\n")
    try:
        # the attempt's files came out of a sandbox: merge drivers and filters they name run nothing
        git("merge", "--squash", "--no-verify", target.head_commit)
        if not git("diff-index", "--cached", "--name-only", "HEAD", "--").strip():
            git("reset", "-q", "--merge")
            raise LoopmeterError(f"{target.id} changes nothing against the current branch")
        git("commit", "-q", "--no-verify", "-m", message, env=git.identity())
    except GitError as exc:
        git("reset", "-q", "--merge", check=False)
        raise LoopmeterError(f"cannot merge {target.branch}: {exc.stderr or exc.message}",
                             hint="resolve the conflict by hand: git merge --squash " + target.branch) from exc
    sha = git("rev-parse", "HEAD").strip()
    now = utcnow()
    target.applied_at = now
    branch = git("symbolic-ref", "-q", "--short", "HEAD", check=False).strip() or None
    store.save(target, Outcome(sha=sha, run_id=run.id, attempt_id=target.id, repo=run.repo, branch=branch,
                               committed_at=now, merged_at=now))
    return sha, target.branch

