"""Outcomes: verified and applied attempts, and merged commits found in git by their trailer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from loopmeter.analytics.attempts import FINISHED
from loopmeter.outcomes.gitlocal import default_branch
from loopmeter.outcomes.trailers import ATTEMPT_TRAILER, TRAILER
from loopmeter.vocab import AttemptStatus


def outcomes(attempts: pd.DataFrame) -> dict[str, Any]:
    finished = attempts[attempts["status"].isin(FINISHED)]
    verified = finished[finished["status"] == AttemptStatus.PASSED]
    applied = attempts[attempts["applied_at"].notna()]
    merged_runs = attempts.drop_duplicates("run_id")
    merged_runs = merged_runs[merged_runs["merged_at"].notna()]
    lead = (merged_runs["merged_at"] - merged_runs["run_started_at"]).dt.total_seconds().dropna()
    return {
        "verified": int(len(verified)),
        "applied": int(len(applied)),
        "merged": int(len(merged_runs)),
        "finished": int(len(finished)),
        "lead_time_to_merge_p50_s": float(lead.quantile(0.5)) if len(lead) else None,
        "lead_time_to_merge_p90_s": float(lead.quantile(0.9)) if len(lead) else None,
    }


def scan_repo(path: Path) -> list[dict[str, Any]]:
    """Commits with a `Loopmeter-Run:` trailer reachable from the default branch, with their merge time.

    A commit reached the default branch when the first-parent commit that brought it in
    was made: itself when committed on the branch, else the merge commit.
    """
    import git

    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return []
    branch = default_branch(repo)
    if branch is None:
        return []
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for mainline in repo.iter_commits(branch, first_parent=True):
        merged_at = mainline.committed_datetime.astimezone(UTC)
        if len(mainline.parents) > 1:
            brought = list(repo.iter_commits(f"{mainline.parents[0].hexsha}..{mainline.hexsha}"))
        else:
            brought = [mainline]
        for commit in brought:
            if commit.hexsha in seen:
                continue
            seen.add(commit.hexsha)
            message = commit.message if isinstance(commit.message, str) else commit.message.decode()
            run = TRAILER.search(message)
            if not run:
                continue
            attempt = ATTEMPT_TRAILER.search(message)
            found.append({
                "sha": commit.hexsha, "run_id": run.group(1), "attempt_id": attempt.group(1) if attempt else None,
                "repo": str(Path(path).resolve()), "branch": branch,
                "committed_at": commit.committed_datetime.astimezone(UTC), "merged_at": merged_at,
            })
    return found


def refresh_outcomes(store: Any, repos: list[Path] | None = None) -> dict[str, Any]:
    """Scan `repos` (default: every run's repo that exists on disk) and save outcome rows through the store."""
    from sqlalchemy import select

    from loopmeter.store.models import Outcome, Run

    _R: Any = Run.__table__.c  # type: ignore[attr-defined]

    if repos is None:
        with store.engine.connect() as conn:
            paths = [r[0] for r in conn.execute(select(_R.repo).distinct()) if r[0]]
        repos = [Path(p) for p in paths if Path(p).is_dir()]
    found: list[dict[str, Any]] = []
    for repo in repos:
        found.extend(scan_repo(repo))
    if found:
        store.save(*[Outcome(**row) for row in found])
    return {"repos": [str(r) for r in repos], "outcomes": len(found), "scanned_at": datetime.now(UTC).isoformat()}
