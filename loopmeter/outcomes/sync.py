"""`loopmeter outcomes sync`: read local clones and GitHub into pull_request / repo_commit,
incrementally per repository (sync_cursor), then mark which PRs were reverted.

Writes go through `Db`: the same SQL text on a current SQLite store through the stdlib
driver (no SQLAlchemy import: most of an incremental sync's time was that import), or on a
SQLAlchemy connection (PostgreSQL, or a store that needs migrating).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopmeter.outcomes import github, gitlocal

PR_COLUMNS = ("repo", "number", "host", "title", "branch", "base", "state", "author", "author_is_bot",
              "created_at", "merged_at", "closed_at", "merge_sha", "first_review_at", "changes_requested",
              "commits_after_review", "agents", "runs", "updated_at", "reverts", "shas")
PR_DEFAULTS = {"host": "github", "state": "open", "author_is_bot": False, "changes_requested": 0,
               "commits_after_review": 0}
COMMIT_COLUMNS = ("repo", "sha", "landed_at", "authored_at", "author", "agents", "run_id", "reverts", "pr_number")
CURSOR_COLUMNS = ("source", "scope", "cursor", "synced_at", "rows", "last_error", "last_error_at")


class Db:
    """SQL text with `:name` parameters on a sqlite3 connection or a SQLAlchemy connection."""

    def __init__(self, conn: Any, *, sqlite3_conn: bool) -> None:
        self.conn = conn
        self.raw = sqlite3_conn

    @classmethod
    @contextmanager
    def open(cls, db_url: str) -> Iterator[Db]:
        """The store at `db_url`: a current SQLite file without SQLAlchemy, anything else through open_store."""
        if db_url.startswith("sqlite:///") and ":memory:" not in db_url:
            import sqlite3

            from loopmeter.store import sqlite_schema
            from loopmeter.store.sqlite_writer import BUSY_TIMEOUT_MS

            path = Path(db_url.removeprefix("sqlite:///"))
            if sqlite_schema.ready(path):
                conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
                try:
                    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                    yield cls(conn, sqlite3_conn=True)
                finally:
                    conn.close()
                return
        from loopmeter.store import open_store

        store = open_store(db_url)
        try:
            with cls.of(store) as db:
                yield db
        finally:
            store.dispose()

    @classmethod
    @contextmanager
    def of(cls, store: Any) -> Iterator[Db]:
        with store.engine.connect() as conn:
            yield cls(conn, sqlite3_conn=False)

    def _param(self, value: Any) -> Any:
        if self.raw and isinstance(value, datetime):
            from loopmeter.store.sqlite_writer import sqlite_time

            return sqlite_time(value)
        return value

    def ts(self, value: Any) -> datetime | None:
        """A stored time back as aware UTC."""
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        params = {k: self._param(v) for k, v in (params or {}).items()}
        if self.raw:
            return self.conn.execute(sql, params).fetchall()
        from sqlalchemy import text

        found = list(self.conn.execute(text(sql), params).all())
        self.conn.commit()  # end the read's transaction: writes begin their own
        return found

    def write(self, sql: str, params: Sequence[dict[str, Any]]) -> None:
        """One statement for every parameter set, in one transaction."""
        if not params:
            return
        payload = [{k: self._param(v) for k, v in p.items()} for p in params]
        if self.raw:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(sql, payload)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            return
        from sqlalchemy import text

        with self.conn.begin():
            self.conn.execute(text(sql), payload)

    def upsert(self, table: str, columns: Sequence[str], keys: Sequence[str], rows: Sequence[dict[str, Any]],
               defaults: dict[str, Any] | None = None, only_where: str | None = None) -> None:
        """Insert rows, replacing the stored row with the same key (unless `only_where` is false for it)."""
        defaults = defaults or {}
        sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
        where = f" WHERE {only_where}" if only_where else ""
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)}) "
               f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}{where}")
        self.write(sql, [{c: r.get(c, defaults.get(c)) for c in columns} for r in rows])


def _cursor(db: Db, source: str, scope: str) -> dict[str, Any]:
    found = db.rows("SELECT cursor FROM sync_cursor WHERE source = :source AND scope = :scope",
                    {"source": source, "scope": scope})
    try:
        return json.loads(found[0][0]) if found and found[0][0] else {}
    except ValueError:
        return {}


def _save_cursor(db: Db, source: str, scope: str, cursor: dict[str, Any], rows: int, now: datetime,
                 error: str | None = None) -> None:
    row: dict[str, Any] = {"source": source, "scope": scope, "cursor": json.dumps(cursor), "synced_at": now,
                           "rows": rows, "last_error": None, "last_error_at": None}
    columns: tuple[str, ...] = CURSOR_COLUMNS
    if error:
        row.update(last_error=error[:2000], last_error_at=now)
    else:  # a good sync keeps the last error on record
        columns = tuple(c for c in CURSOR_COLUMNS if not c.startswith("last_error"))
    db.upsert("sync_cursor", columns, ("source", "scope"), [row])


def sync_git(db: Db, path: Path, identity_of: Callable[[str], str], *, since: datetime | None,
             now: datetime) -> dict[str, Any]:
    repo = gitlocal.open_repo(path)
    top = Path(repo.working_tree_dir or path).resolve()
    identity = identity_of(gitlocal.remote_url(repo) or str(top))
    scope = str(top)
    cur = _cursor(db, "git", scope)
    rows, tip = gitlocal.scan(top, identity, since=since, stop_at=cur.get("tip"))
    db.upsert("repo_commit", COMMIT_COLUMNS, ("repo", "sha"), rows)
    prs = gitlocal.landed_prs(rows)
    db.upsert("pull_request", PR_COLUMNS, ("repo", "number"), prs, PR_DEFAULTS,
              only_where="pull_request.host = 'git'")
    _save_cursor(db, "git", scope, {"tip": tip, "repo": identity}, len(rows), now)
    link_reverts(db, identity)
    return {"source": "git", "path": scope, "repo": identity, "commits": len(rows), "prs": len(prs)}


def sync_github(db: Db, client: github.Client, name: str, identity_of: Callable[[str], str], *,
                since: datetime | None, now: datetime) -> dict[str, Any]:
    cur = _cursor(db, "github", name)
    after = github.parse_ts(cur.get("updated_at")) or since
    try:
        result, rows = github.fetch_repo(client, name, identity_of, since=after)
    except github.GitHubError as exc:  # keep the PRs read in full; the next sync reads from the old cursor
        db.upsert("pull_request", PR_COLUMNS, ("repo", "number"), exc.rows, PR_DEFAULTS)
        _save_cursor(db, "github", name, cur, len(exc.rows), now, error=exc.message)
        raise
    db.upsert("pull_request", PR_COLUMNS, ("repo", "number"), rows, PR_DEFAULTS)
    _save_cursor(db, "github", name, {"updated_at": result.cursor or cur.get("updated_at"),
                                      "repo": result.identity}, len(rows), now)
    link_reverts(db, result.identity)
    return {"source": "github", **asdict(result)}


def link_reverts(db: Db, identity: str) -> int:
    """Set reverted_at / reverted_by on the repository's PRs from merged revert PRs
    ("Reverts owner/repo#N") and from default-branch commits ("This reverts commit <sha>")."""
    prs = db.rows("SELECT number, state, merged_at, merge_sha, shas, reverts, reverted_at, reverted_by "
                  "FROM pull_request WHERE repo = :repo", {"repo": identity})
    commits = db.rows("SELECT sha, landed_at, reverts FROM repo_commit WHERE repo = :repo AND reverts IS NOT NULL",
                      {"repo": identity})
    by_sha: dict[str, int] = {}
    for number, _state, _merged, merge_sha, shas, *_ in prs:
        for sha in json.loads(shas or "[]"):
            by_sha.setdefault(sha, number)
        if merge_sha:
            by_sha[merge_sha] = number
    found: dict[int, tuple[datetime, str]] = {}

    def mark(number: int, when: datetime | None, by: str) -> None:
        if when is not None and (number not in found or when < found[number][0]):
            found[number] = (when, by)

    for number, state, merged_at, _sha, _shas, reverts, *_ in prs:
        if reverts is not None and state == "merged":
            mark(reverts, db.ts(merged_at), f"#{number}")
    for sha, landed_at, reverts in commits:
        target = by_sha.get(reverts) or next((n for s, n in by_sha.items() if s.startswith(reverts)), None)
        if target is not None:
            mark(target, db.ts(landed_at), sha[:12])
    stored = {p[0]: (db.ts(p[6]), p[7]) for p in prs}
    changed = [{"repo": identity, "number": n, "at": w, "by": b} for n, (w, b) in found.items()
               if n in stored and stored[n] != (w, b)]
    db.write("UPDATE pull_request SET reverted_at = :at, reverted_by = :by WHERE repo = :repo AND number = :number",
             changed)
    return len(changed)
