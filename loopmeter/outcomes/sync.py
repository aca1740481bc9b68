"""`loopmeter outcomes sync`: read local clones and GitHub into pull_request / repo_commit,
incrementally per repository (sync_cursor), then mark which PRs were reverted."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from loopmeter.outcomes import github, gitlocal


@dataclass
class SyncReport:
    repos: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"repos": self.repos}


def upsert(store: Any, model: type, rows: list[dict[str, Any]], keys: list[str],
           only_where: Any = None) -> None:
    """Insert rows, replacing the stored row with the same key (unless `only_where` says not)."""
    if not rows:
        return
    table = model.__table__  # type: ignore[attr-defined]
    cols = [c.name for c in table.columns]
    defaults = {c.name: c.default.arg for c in table.columns
                if c.default is not None and not callable(c.default.arg)}
    payload = [{c: r.get(c, defaults.get(c)) for c in cols} for r in rows]
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(index_elements=keys, where=only_where,
                                      set_={c: stmt.excluded[c] for c in cols if c not in keys})
    with store.engine.begin() as conn:
        for start in range(0, len(payload), 500):
            conn.execute(stmt, payload[start:start + 500])


def _cursor(store: Any, source: str, scope: str) -> dict[str, Any]:
    from loopmeter.store.models import SyncCursor

    row = store.get(SyncCursor, (source, scope))
    try:
        return json.loads(row.cursor) if row and row.cursor else {}
    except ValueError:
        return {}


def _save_cursor(store: Any, source: str, scope: str, cursor: dict[str, Any], rows: int, now: datetime,
                 error: str | None = None) -> None:
    from loopmeter.store.models import SyncCursor

    row = {"source": source, "scope": scope, "cursor": json.dumps(cursor), "synced_at": now, "rows": rows}
    if error:
        row.update(last_error=error[:2000], last_error_at=now)
    upsert(store, SyncCursor, [row], ["source", "scope"])


def sync_git(store: Any, path: Path, identity_of: Callable[[str], str], *, since: datetime | None,
             now: datetime) -> dict[str, Any]:
    from loopmeter.store.models import PullRequest, RepoCommit

    repo = gitlocal.open_repo(path)
    top = Path(repo.working_tree_dir or path).resolve()
    identity = identity_of(gitlocal.remote_url(repo) or str(top))
    scope = str(top)
    cur = _cursor(store, "git", scope)
    rows, tip = gitlocal.scan(top, identity, since=since, stop_at=cur.get("tip"))
    upsert(store, RepoCommit, [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
           ["repo", "sha"])
    prs = gitlocal.landed_prs(rows)
    table: Any = PullRequest.__table__  # type: ignore[attr-defined]
    upsert(store, PullRequest, prs, ["repo", "number"], only_where=table.c.host == "git")
    _save_cursor(store, "git", scope, {"tip": tip, "repo": identity}, len(rows), now)
    link_reverts(store, identity)
    return {"source": "git", "path": scope, "repo": identity, "commits": len(rows), "prs": len(prs)}


def sync_github(store: Any, client: github.Client, name: str, identity_of: Callable[[str], str], *,
                since: datetime | None, now: datetime) -> dict[str, Any]:
    from loopmeter.store.models import PullRequest

    cur = _cursor(store, "github", name)
    after = github.parse_ts(cur.get("updated_at")) or since
    try:
        result, rows = github.fetch_repo(client, name, identity_of, since=after)
    except github.GitHubError as exc:
        _save_cursor(store, "github", name, cur, 0, now, error=exc.message)
        raise
    upsert(store, PullRequest, rows, ["repo", "number"])
    _save_cursor(store, "github", name, {"updated_at": result.cursor or cur.get("updated_at"),
                                         "repo": result.identity}, len(rows), now)
    link_reverts(store, result.identity)
    return {"source": "github", **asdict(result)}


def link_reverts(store: Any, identity: str) -> int:
    """Set reverted_at / reverted_by on the repository's PRs from merged revert PRs
    ("Reverts owner/repo#N") and from default-branch commits ("This reverts commit <sha>")."""
    from sqlalchemy import select, update

    from loopmeter.store.models import PullRequest, RepoCommit

    P: Any = PullRequest.__table__.c  # type: ignore[attr-defined]
    C: Any = RepoCommit.__table__.c  # type: ignore[attr-defined]
    with store.engine.connect() as conn:
        prs = conn.execute(select(P.number, P.state, P.merged_at, P.merge_sha, P.shas, P.reverts,
                                  P.reverted_at, P.reverted_by).where(P.repo == identity)).all()
        commits = conn.execute(select(C.sha, C.landed_at, C.reverts)
                               .where(C.repo == identity, C.reverts.is_not(None))).all()
    by_sha: dict[str, int] = {}
    for p in prs:
        for sha in json.loads(p.shas or "[]"):
            by_sha.setdefault(sha, p.number)
        if p.merge_sha:
            by_sha[p.merge_sha] = p.number
    found: dict[int, tuple[datetime, str]] = {}

    def mark(number: int, when: datetime | None, by: str) -> None:
        if when is not None and (number not in found or when < found[number][0]):
            found[number] = (when, by)

    for p in prs:
        if p.reverts is not None and p.state == "merged":
            mark(p.reverts, p.merged_at, f"#{p.number}")
    for c in commits:
        target = by_sha.get(c.reverts) or next((n for s, n in by_sha.items() if s.startswith(c.reverts)), None)
        if target is not None:
            mark(target, c.landed_at, c.sha[:12])
    changed = [(n, w, b) for n, (w, b) in found.items()
               if any(p.number == n and (p.reverted_at != w or p.reverted_by != b) for p in prs)]
    if changed:
        with store.engine.begin() as conn:
            for n, w, b in changed:
                conn.execute(update(PullRequest.__table__).where(P.repo == identity, P.number == n)  # type: ignore[attr-defined]
                             .values(reverted_at=w, reverted_by=b))
    return len(changed)
