"""A PostgreSQL store read with psycopg alone, without SQLAlchemy.

A warm `loopmeter usage` on PostgreSQL reads the ingest cursors and the usage sums and writes
nothing; importing SQLAlchemy, SQLModel and the models to do so took more than half of it.
`PgReader` is one psycopg connection for those reads: the caller checks `schema_current()`
first and opens the Store (which migrates) when the schema is not the current one.
The SQL is the same text the Store runs (named `:name` parameters, as SQLAlchemy's `text()`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from loopmeter.errors import StoreError

if TYPE_CHECKING:
    import psycopg

_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")  # :name, not a ::type cast


def is_postgres(url: str) -> bool:
    return url.startswith(_SCHEMES)


def libpq_url(url: str) -> str:
    """The store's URL as libpq takes it (without SQLAlchemy's +driver)."""
    return "postgresql://" + url.split("://", 1)[1]


def pyformat(sql: str) -> str:
    """`:name` parameters as psycopg's `%(name)s` (a literal % doubled)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


class PgReader:
    """One autocommit psycopg connection to the PostgreSQL store at `url`."""

    dialect = "postgresql"

    def __init__(self, url: str):
        from loopmeter.config import mask_url

        try:
            import psycopg
        except ModuleNotFoundError as exc:
            raise StoreError(f"no driver for postgresql: {exc.name} is not installed",
                             hint="pip install 'loopmeter[postgres]'") from exc
        try:
            self.conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(libpq_url(url), autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot open the store at {mask_url(url)}: {exc}", hint="check LOOPMETER_DB_URL") from exc

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(pyformat(sql) if params else sql, params or None)  # type: ignore[arg-type]
            return cur.fetchall()

    def schema_current(self) -> bool:
        """Whether every migration this loopmeter knows, and no other, has been applied."""
        import psycopg

        from loopmeter.store.sqlite_schema import MIGRATION_NAMES  # the same names on every database

        try:
            names = sorted(r[0] for r in self.rows("SELECT name FROM loopmeter_migrations"))
        except psycopg.errors.UndefinedTable:
            return False
        return tuple(names) == MIGRATION_NAMES

    def is_new(self) -> bool:
        """Whether no loopmeter store was ever made in this database (so it holds no cursors)."""
        return self.rows("SELECT to_regclass('loopmeter_migrations') IS NULL")[0][0] is True

    def close(self) -> None:
        self.conn.close()
