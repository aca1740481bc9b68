"""`db`: the store's file opened the way `outcomes sync` writes it (stdlib sqlite3 on a current
SQLite store); `any_db`: that, and a SQLAlchemy connection (PostgreSQL's path). The `store`
fixture reads back what they wrote."""

from __future__ import annotations

import pytest

from loopmeter.outcomes.sync import Db


@pytest.fixture
def db(store, sqlite_url):
    with Db.open(sqlite_url) as d:
        assert d.raw
        yield d


@pytest.fixture(params=["sqlite3", "sqlalchemy"])
def any_db(request, store, sqlite_url):
    if request.param == "sqlite3":
        with Db.open(sqlite_url) as d:
            yield d
    else:
        with Db.of(store) as d:
            assert not d.raw
            yield d
