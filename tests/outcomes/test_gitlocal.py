"""Local git: a real repository made here, with a merge commit, a squash merge, a rebased
commit and a revert; when each commit reached main, its trailers, and which PR was reverted."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from loopmeter.outcomes.sync import sync_git
from loopmeter.store.models import PullRequest, RepoCommit

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
CLAUDE = "Co-Authored-By: Claude <noreply@anthropic.com>"


def git(repo: Path, *args: str, when: str = "2026-11-01T10:00:00Z") -> str:
    env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when, "GIT_AUTHOR_NAME": "Alice",
           "GIT_AUTHOR_EMAIL": "a@example.com", "GIT_COMMITTER_NAME": "Alice", "GIT_COMMITTER_EMAIL": "a@example.com",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def commit_file(repo: Path, name: str, message: str, when: str) -> str:
    (repo / name).write_text(message)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message, when=when)
    return git(repo, "rev-parse", "HEAD")


def make_repo(root: Path) -> dict[str, str]:
    repo = root / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "https://github.com/o/app.git")
    shas = {"base": commit_file(repo, "README", "start", "2026-11-01T09:00:00Z")}
    # a merge commit brings two branch commits (one with a Claude trailer) in at 12:00
    git(repo, "checkout", "-q", "-b", "feat-a")
    shas["a1"] = commit_file(repo, "a.txt", f"add a\n\n{CLAUDE}\n", "2026-11-01T10:00:00Z")
    shas["a2"] = commit_file(repo, "a2.txt", "more a\n\nLoopmeter-Run: r-1\n", "2026-11-01T11:00:00Z")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #7 from o/feat-a", "feat-a",
        when="2026-11-01T12:00:00Z")
    shas["merge"] = git(repo, "rev-parse", "HEAD")
    # a squash merge: one commit on main naming its PR
    shas["squash"] = commit_file(repo, "b.txt", "Add b (#8)\n\nGenerated with [Claude Code](https://claude.com/claude-code)\n",
                                 "2026-11-02T10:00:00Z")
    # a rebased commit: on main as it is, no PR named
    shas["rebased"] = commit_file(repo, "c.txt", "tidy c\n\nCo-authored-by: Cursor <cursoragent@cursor.com>\n",
                                  "2026-11-03T10:00:00Z")
    git(repo, "revert", "--no-edit", shas["squash"], when="2026-11-04T10:00:00Z")
    shas["revert"] = git(repo, "rev-parse", "HEAD")
    shas["path"] = str(repo)
    return shas


def _rows(store, model) -> list:
    with store.session() as s:
        return list(s.exec(select(model)).scalars())  # type: ignore[call-overload]


def test_commits_land_by_merge_squash_and_rebase_with_trailers_and_reverts(store, tmp_path, any_db):
    shas = make_repo(tmp_path)
    out = sync_git(any_db, Path(shas["path"]), lambda u: "github.com/o/app", since=None, now=NOW)
    assert out["repo"] == "github.com/o/app"
    commits = {c.sha: c for c in _rows(store, RepoCommit)}
    assert len(commits) == 7 == out["commits"]
    landed = {k: commits[shas[k]].landed_at.replace(tzinfo=UTC) for k in ("a1", "a2", "merge", "squash", "rebased")}
    assert landed["a1"] == landed["a2"] == landed["merge"] == datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert landed["squash"] == datetime(2026, 11, 2, 10, tzinfo=UTC)
    assert landed["rebased"] == datetime(2026, 11, 3, 10, tzinfo=UTC)
    assert json.loads(commits[shas["a1"]].agents) == ["claude-code"]
    assert commits[shas["a2"]].run_id == "r-1"
    assert json.loads(commits[shas["squash"]].agents) == ["claude-code"]
    assert json.loads(commits[shas["rebased"]].agents) == ["cursor"]
    assert commits[shas["revert"]].reverts == shas["squash"]
    assert commits[shas["a1"]].pr_number == 7 and commits[shas["squash"]].pr_number == 8
    prs = {p.number: p for p in _rows(store, PullRequest)}
    assert sorted(prs) == [7, 8]
    assert (prs[7].host, prs[7].state, prs[7].branch) == ("git", "merged", "feat-a")
    assert json.loads(prs[7].agents) == ["claude-code"] and json.loads(prs[7].runs) == ["r-1"]
    assert prs[8].reverted_at.replace(tzinfo=UTC) == datetime(2026, 11, 4, 10, tzinfo=UTC)
    assert prs[8].reverted_by == shas["revert"][:12] and prs[7].reverted_at is None


def test_a_second_sync_reads_only_new_commits_and_keeps_code_host_rows(store, tmp_path, db):
    shas = make_repo(tmp_path)
    path = Path(shas["path"])
    sync_git(db, path, lambda u: "github.com/o/app", since=None, now=NOW)
    store.save(PullRequest(repo="github.com/o/app", number=8, host="github", title="from GitHub", state="merged"))
    commit_file(path, "d.txt", "Add d (#8)", "2026-11-05T10:00:00Z")  # names #8 again
    out = sync_git(db, path, lambda u: "github.com/o/app", since=None, now=NOW)
    assert out["commits"] == 1
    assert store.get(PullRequest, ("github.com/o/app", 8)).title == "from GitHub"
    assert len(_rows(store, RepoCommit)) == 8
