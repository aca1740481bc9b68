"""A local clone's default branch: when each commit reached it, what its trailers say, and
which commits revert which.

A commit reached the default branch when the first-parent commit that brought it in was
made: itself when committed there (a squash or a rebase), else the merge commit. Git runs
with `hostgit.clean_env()` (no system or global config, no pager, editor or prompt).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopmeter.errors import LoopmeterError
from loopmeter.outcomes import trailers

MAX_COMMITS = 200_000
_SEP = "\x1e"  # between commits in `git log` output
_FIELD = "\x1f"


def default_branch(repo: Any) -> str | None:
    """origin/HEAD's target if there is a remote, else main, master, or the checked-out branch."""
    try:
        ref = repo.git.symbolic_ref("refs/remotes/origin/HEAD")
        return str(ref).removeprefix("refs/remotes/")
    except Exception:  # noqa: BLE001 - no remote HEAD is the common local case
        pass
    names = {h.name for h in repo.heads}
    for name in ("main", "master"):
        if name in names:
            return name
    try:
        return str(repo.active_branch.name)
    except TypeError:  # detached HEAD
        return None


def open_repo(path: Path) -> Any:
    import git

    from loopmeter.hostgit import clean_env

    try:
        repo = git.Repo(path, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise LoopmeterError(f"--repo {path}: not a git repository", hint="give the clone's top folder") from None
    repo.git.update_environment(**clean_env())
    return repo


def remote_url(repo: Any) -> str | None:
    try:
        return str(repo.remotes.origin.url)
    except (AttributeError, IndexError, ValueError):
        return None


def _log(repo: Any, rev: str, *extra: str) -> list[list[str]]:
    out = repo.git.log(rev, *extra, f"--max-count={MAX_COMMITS}",
                       f"--format={_SEP}%H{_FIELD}%P{_FIELD}%ct{_FIELD}%at{_FIELD}%an{_FIELD}%B")
    return [c.split(_FIELD, 5) for c in out.split(_SEP)[1:]]


def scan(path: Path, identity: str, *, since: datetime | None = None,
         stop_at: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """repo_commit rows for the default branch (newest first), down to `stop_at` (the last sha
    seen by the previous sync) or `since`; and the branch tip to remember."""
    repo = open_repo(path)
    branch = default_branch(repo)
    if branch is None:
        return [], None
    tip = repo.git.rev_parse(branch)
    extra = [f"--since={since.isoformat()}"] if since else []
    rev = f"{stop_at}..{branch}" if stop_at and _has(repo, stop_at) else branch
    rows: list[dict[str, Any]] = []
    for mainline in _log(repo, rev, "--first-parent", *extra):
        sha, parents, ct = mainline[0], mainline[1].split(), mainline[2]
        landed = datetime.fromtimestamp(int(ct), UTC)
        brought = _log(repo, f"{parents[0]}..{sha}") if len(parents) > 1 else [mainline]
        merge_pr, merge_branch = None, None
        for c in brought:
            if c[0] == sha:
                merge_pr, merge_branch = trailers.pr_of_commit(c[5])
        for c_sha, _p, _ct, at, author, message in brought:
            pr_number, _branch = trailers.pr_of_commit(message) if c_sha == sha else (merge_pr, merge_branch)
            rows.append({
                "repo": identity, "sha": c_sha.lower(), "landed_at": landed,
                "authored_at": datetime.fromtimestamp(int(at), UTC), "author": author[:256] or None,
                "agents": json.dumps(trailers.agents_in_message(message)),
                "run_id": next(iter(trailers.run_ids(message)), None),
                "reverts": trailers.reverted_sha(message), "pr_number": pr_number,
                "_branch": merge_branch if c_sha == sha else None, "_mainline": c_sha == sha,
                "_subject": message.split("\n", 1)[0][:1000],
            })
    return rows, str(tip)


def _has(repo: Any, sha: str) -> bool:
    try:
        repo.git.cat_file("-e", f"{sha}^{{commit}}")
        return True
    except Exception:  # noqa: BLE001 - gone after a force-push: rescan everything
        return False


def landed_prs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pull_request rows (host `git`) for merge and squash commits that name their PR number,
    for repositories not synced from a code host: merged when they landed."""
    by_number: dict[int, dict[str, Any]] = {}
    for r in rows:
        n = r["pr_number"]
        if n is None:
            continue
        pr = by_number.setdefault(n, {
            "repo": r["repo"], "number": n, "host": "git", "title": None, "branch": None,
            "state": "merged", "author": r["author"], "created_at": None, "merged_at": r["landed_at"],
            "closed_at": r["landed_at"], "merge_sha": None, "agents": set(), "runs": [], "shas": []})
        if r["_mainline"]:
            pr.update(merge_sha=r["sha"], title=r["_subject"], branch=r["_branch"])
        pr["agents"].update(json.loads(r["agents"]))
        if r["run_id"] and r["run_id"] not in pr["runs"]:
            pr["runs"].append(r["run_id"])
        pr["shas"].append(r["sha"])
    return [{**p, "agents": json.dumps(sorted(p["agents"])), "runs": json.dumps(p["runs"]),
             "shas": json.dumps(p["shas"])} for p in by_number.values()]
