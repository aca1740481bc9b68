"""What travels to a node in a cell's spec: no store password and no key (issue 18: secrets do
not travel); a node brings its own credentials for the shared store, or refuses in one line."""

from __future__ import annotations

import pickle
import shutil
import uuid
from pathlib import Path

import pytest

from loopmeter.errors import LoopmeterError

GOLD = Path(__file__).resolve().parents[2] / "loopmeter" / "evals" / "gold"


@pytest.fixture
def pg_store_with_password(pg_url: str):
    """A PostgreSQL store opened through a URL that holds a password (the role's own)."""
    import psycopg

    from loopmeter.store import open_store

    name, role, password = "t_" + uuid.uuid4().hex[:12], "r_" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER {role}')
    url = f"postgresql://{role}:{password}@{pg_url.split('@', 1)[1].rsplit('/', 1)[0]}/{name}"
    store = open_store(url)
    yield store, url, password
    store.dispose()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f"DROP ROLE {role}")


def test_a_cells_spec_carries_neither_the_store_password_nor_a_key(pg_store_with_password, tmp_path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from loopmeter.evals.runner import EvalOptions, cell_specs, parse_configs, plan
    from loopmeter.evals.suite import load_suite
    from loopmeter.executors.base import open_store_url

    store, url, password = pg_store_with_password
    key = "sk-ant-api03-" + uuid.uuid4().hex
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    shutil.copytree(GOLD / "fix-pagination", tmp_path / "suite" / "fix-pagination")
    suite = load_suite(tmp_path / "suite")
    specs = cell_specs("R-SECRETS", suite, plan(suite, parse_configs(["oracle", "claude-code"], "repo"), 2),
                       EvalOptions(), store)
    shipped = pickle.dumps(specs)  # what Ray sends to a node
    assert len(specs) == 4 and password.encode() not in shipped and key.encode() not in shipped
    assert all("***" in s.store_url for s in specs)

    monkeypatch.delenv("LOOPMETER_DB_URL", raising=False)  # a node without the store's credentials
    with pytest.raises(LoopmeterError, match="no credentials for the store"):
        open_store_url(specs[0].store_url)
    monkeypatch.setenv("LOOPMETER_DB_URL", url)  # a node configured for the same database writes to it
    on_node = open_store_url(specs[0].store_url)
    try:
        assert on_node.engine.url.database == store.engine.url.database
    finally:
        on_node.dispose()
