"""Session rows: where one agent session worked, stored once per session (table `session`).

A session's calls may be read in several batches (a long log, incremental ingest, a loop
attempt's iterations): each batch upserts what it saw, and the stored row keeps the
earliest first call, the latest last call, and the place (cwd, branch, commit,
repository) of the batch with the latest call; a batch that does not know a value keeps
the stored one. Used by log ingest (`sqlite_writer`, `Store.add_sessions`) and loop runs
(`Store.add_attempt_sessions`). SQLAlchemy-free: ingest workers import it.
"""

from __future__ import annotations

SESSION_FIELDS = ("source", "session_id", "agent", "user", "cwd", "branch", "commit", "repo", "repo_url",
                  "first_ts", "last_ts")
_PLACE = ("agent", "user", "cwd", "branch", "commit", "repo", "repo_url")


def _q(name: str) -> str:
    return f'"{name}"'  # "user" and "commit" are reserved words


def merge_sql() -> str:
    """The ON CONFLICT clause merging a new batch (`excluded`) into the stored row."""
    newer = "(session.last_ts IS NULL OR excluded.last_ts >= session.last_ts)"
    sets = [
        "first_ts = CASE WHEN session.first_ts IS NULL OR excluded.first_ts < session.first_ts "
        "THEN excluded.first_ts ELSE session.first_ts END",
        f"last_ts = CASE WHEN {newer} THEN excluded.last_ts ELSE session.last_ts END",
        *(f"{_q(c)} = CASE WHEN {newer} THEN coalesce(excluded.{_q(c)}, session.{_q(c)}) "
          f"ELSE coalesce(session.{_q(c)}, excluded.{_q(c)}) END" for c in _PLACE),
    ]
    return f"ON CONFLICT (source, session_id) DO UPDATE SET {', '.join(sets)}"


def upsert_sql(placeholder: str) -> str:
    """Upsert of rows in SESSION_FIELDS order, `placeholder` being the driver's ("?" or "%s")."""
    return (f"INSERT INTO session ({', '.join(_q(c) for c in SESSION_FIELDS)}) "
            f"VALUES ({', '.join([placeholder] * len(SESSION_FIELDS))}) {merge_sql()}")


def attempt_sql() -> str:
    """Upsert of the sessions of one loop attempt's usage rows, at the attempt's place: named
    parameters attempt_id, cwd, branch, commit, repo, repo_url (SQLAlchemy `text`)."""
    return (f"INSERT INTO session ({', '.join(_q(c) for c in SESSION_FIELDS)}) "
            "SELECT source, session_id, max(agent), max(\"user\"), :cwd, :branch, :commit, :repo, :repo_url, "
            "min(ts), max(ts) FROM usage WHERE attempt_id = :attempt_id AND session_id IS NOT NULL "
            f"GROUP BY source, session_id ORDER BY source, session_id {merge_sql()}")
