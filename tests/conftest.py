"""Shared fixtures. Every test gets its own LOOPMETER_HOME, so none touches a real home."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Tests press Ctrl-C on the CLI (SIGINT to a child). A shell without job control starts a
# background command with SIGINT ignored, children inherit that, and Python then installs no
# KeyboardInterrupt handler: those tests failed when the suite was started as `(cmd &)`. Undo it
# here, so every child starts with SIGINT at its default and turns it into KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def loopmeter_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("lmhome")
    monkeypatch.setenv("LOOPMETER_HOME", str(home))
    monkeypatch.delenv("LOOPMETER_DB_URL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return home


@pytest.fixture
def sqlite_url(loopmeter_home: Path) -> str:
    return f"sqlite:///{loopmeter_home / 'loopmeter.db'}"


@pytest.fixture
def store(sqlite_url: str):
    from loopmeter.store import open_store

    s = open_store(sqlite_url)
    yield s
    s.dispose()


@pytest.fixture
def seeded(store):
    """`store` with tests/analytics/seed.py's deterministic rows (analytics, report and dashboard tests)."""
    from tests.analytics.seed import seed

    store.seed_counts = seed(store)
    return store


@pytest.fixture
def now():
    """The fixed clock the seeded rows were made against."""
    from tests.analytics.seed import FIXED_NOW

    return FIXED_NOW


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopmeter_cmd(*args: str) -> list[str]:
    """argv for the CLI in a subprocess (works in a venv without PATH changes)."""
    return [sys.executable, "-m", "loopmeter", *args]


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server on a free loopback port, for the length of the session."""
    if os.environ.get("LOOPMETER_TEST_PG_URL"):
        yield os.environ["LOOPMETER_TEST_PG_URL"]
        return
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binary (initdb/pg_ctl) on this machine; install the postgresql package")
    # Not under pytest's basetemp: a concurrent pytest run prunes old basetemps, data dir included.
    base = Path(tempfile.mkdtemp(prefix="loopmeter-pg-"))
    data = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
        os.chmod(base, 0o777)
        for parent in base.parents:
            if parent == Path("/"):
                break
            try:
                os.chmod(parent, os.stat(parent).st_mode | 0o011)
            except PermissionError:
                pass
    port = free_port()
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    log = base / "pg.log"
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
         f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"],
        check=True,
        capture_output=True,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield url
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_empty_url(pg_url: str) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database per test (no store made in it yet)."""
    import uuid

    import sqlalchemy

    name = "t_" + uuid.uuid4().hex[:12]
    admin = sqlalchemy.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"),
                                     isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield pg_url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_store(pg_empty_url: str):
    """A fresh PostgreSQL database per test, with the store made in it."""
    from loopmeter.store import open_store

    s = open_store(pg_empty_url)
    yield s
    s.dispose()
