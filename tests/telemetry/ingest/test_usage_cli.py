"""`loopmeter usage` as people run it: tables, flags, errors, and the warm path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.telemetry.ingest.conftest import CLAUDE_FILE, CODEX_FILE, run_usage, usage_json


@pytest.fixture
def env_with_logs(logs, agent_env):
    return {**agent_env, "CLAUDE_CONFIG_DIR": str(logs / "claude"), "CODEX_HOME": str(logs / "codex"),
            "GEMINI_DATA_DIR": str(logs / "gemini")}


def test_table_fits_80_columns_and_shows_unpriced_calls_beside_the_cost(env_with_logs, logs):
    proc = run_usage(env_with_logs, "daily", "--timezone", "UTC")
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), proc.stdout
    assert any(line.strip().startswith("2026-11-09") for line in lines)
    i = next(n for n, line in enumerate(lines) if line.strip().startswith("Total"))
    assert "+ 1" in lines[i] and "unpriced" in lines[i + 1]  # the cost cell wraps at 80 columns
    assert "$0.00" not in proc.stdout
    # malformed lines are reported per file on stderr; no progress bar on a pipe
    assert f"1 malformed line skipped in {logs / CLAUDE_FILE}" in proc.stderr
    assert f"1 malformed line skipped in {logs / CODEX_FILE}" in proc.stderr
    assert "reading agent logs" not in proc.stderr


@pytest.mark.parametrize("period", ["weekly", "monthly", "session", "blocks"])
def test_every_period_prints_a_table(env_with_logs, period):
    proc = run_usage(env_with_logs, period, "--breakdown", "-z", "UTC")
    assert "Total" in proc.stdout
    assert "sonnet-4-5" in proc.stdout  # breakdown lines name the model
    assert all(len(line) <= 80 for line in proc.stdout.splitlines())


def test_session_json_names_the_project(env_with_logs):
    out = usage_json(env_with_logs, "session")
    projects = {r["session"]: r["project"] for r in out["session"]}
    assert projects["11111111-aaaa-bbbb-cccc-000000000001"] == "/home/dev/api"
    assert projects["0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"] == "/home/dev/svc"


def test_source_limits_what_is_read_and_shown(env_with_logs):
    codex = usage_json(env_with_logs, "--source", "codex")
    assert {b["source"] for r in codex["daily"] for b in r["breakdown"]} == {"codex-log"}
    # Claude Code logs were not read by that call
    claude = usage_json(env_with_logs, "--source", "claude-code", "--no-ingest")
    assert claude["daily"] == []
    claude = usage_json(env_with_logs, "--source", "claude-code")
    assert claude["totals"]["calls"] == 5


def test_no_ingest_reports_only_what_is_stored(env_with_logs):
    out = usage_json(env_with_logs, "--no-ingest")
    assert out["daily"] == [] and "ingest" not in out
    assert out["totals"]["calls"] == 0


@pytest.mark.parametrize("args, message", [
    (["yearly"], "unknown period"),
    (["--timezone", "Mars/Olympus"], "unknown time zone"),
    (["--since", "last tuesday"], "is not a date"),
    (["--source", "windsurf"], "unknown source"),
    (["--path", "/nonexistent/logs"], "no such file or folder"),
])
def test_bad_input_is_one_line_and_exit_2(agent_env, args, message):
    proc = run_usage(agent_env, *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_time_zone_fails_before_any_log_is_read(env_with_logs):
    proc = run_usage(env_with_logs, "--timezone", "Mars/Olympus", check=False)
    assert proc.returncode == 2 and "unknown time zone" in proc.stderr
    assert usage_json(env_with_logs, "--no-ingest")["totals"]["calls"] == 0  # nothing was ingested


def _usage_telling_if_sqlalchemy_loaded(env) -> tuple[str, dict]:
    """`loopmeter usage daily --json` in a fresh process: (last stderr line, the JSON)."""
    code = ("import sys\n"
            "from loopmeter.cli import app\n"
            "from loopmeter.cli._errors import run_app\n"
            "sys.argv = ['loopmeter', 'usage', 'daily', '--json']\n"
            "rc = run_app(app)\n"
            "print('loaded' if 'sqlalchemy' in sys.modules else 'not loaded', rc, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return proc.stderr.strip().splitlines()[-1], json.loads(proc.stdout)


def test_warm_call_only_stats_files_and_never_loads_sqlalchemy(env_with_logs):
    usage_json(env_with_logs)  # the cold call stores everything
    loaded, out = _usage_telling_if_sqlalchemy_loaded(env_with_logs)
    assert loaded == "not loaded 0"
    assert out["ingest"]["files_read"] == 0
    assert out["totals"]["calls"] == 11


def test_postgres_store_ingests_once_and_reports(env_with_logs, pg_store):
    url = pg_store.engine.url.render_as_string(hide_password=False)
    env = {**env_with_logs, "LOOPMETER_DB_URL": url}
    first = usage_json(env, "daily", "-z", "UTC")
    again = usage_json(env, "daily", "-z", "UTC")
    assert first["totals"]["calls"] == again["totals"]["calls"] == 11
    assert again["ingest"]["files_read"] == 0
    assert [r["date"] for r in again["daily"]] == ["2026-11-09", "2026-11-10"]


def test_warm_call_on_postgres_reads_cursors_and_sums_without_sqlalchemy(env_with_logs, pg_store):
    url = pg_store.engine.url.render_as_string(hide_password=False)
    env = {**env_with_logs, "LOOPMETER_DB_URL": url}
    cold = usage_json(env, "daily", "-z", "UTC")
    loaded, warm = _usage_telling_if_sqlalchemy_loaded({**env, "TZ": "UTC"})
    assert loaded == "not loaded 0"
    assert cold["ingest"]["rows_added"] == 11 and warm["ingest"]["files_read"] == 0
    assert {k: v for k, v in warm.items() if k != "ingest"} == {k: v for k, v in cold.items() if k != "ingest"}
    from loopmeter.analytics.usage import Query, usage_report

    for period in ("daily", "weekly", "session", "blocks"):  # the same as read through the Store (SQLAlchemy)
        through_store = usage_report(pg_store, Query(period=period, tz="UTC")).as_json()
        assert usage_json(env, period, "-z", "UTC", "--no-ingest") == through_store


def test_new_logs_into_a_current_postgres_store_are_stored_without_sqlalchemy(env_with_logs, pg_store):
    url = pg_store.engine.url.render_as_string(hide_password=False)  # the fixture made the schema current
    loaded, out = _usage_telling_if_sqlalchemy_loaded({**env_with_logs, "LOOPMETER_DB_URL": url, "TZ": "UTC"})
    assert loaded == "not loaded 0"
    assert out["ingest"]["rows_added"] == 11 and out["totals"]["calls"] == 11
    from loopmeter.store import IngestCursor, Usage

    assert pg_store.count(Usage) == 11 and pg_store.count(IngestCursor) == out["ingest"]["files_read"]


def test_usage_on_an_empty_postgres_database_makes_the_store_and_fills_it(env_with_logs, pg_empty_url):
    env = {**env_with_logs, "LOOPMETER_DB_URL": pg_empty_url, "TZ": "UTC"}
    first = usage_json(env, "daily", "-z", "UTC")
    assert first["ingest"]["rows_added"] == first["totals"]["calls"] == 11
    again = usage_json(env, "daily", "-z", "UTC")
    assert again["ingest"]["files_read"] == 0 and again["totals"] == first["totals"]


def test_postgres_store_with_an_older_schema_is_migrated_by_a_warm_call(env_with_logs, pg_store):
    url = pg_store.engine.url.render_as_string(hide_password=False)
    env = {**env_with_logs, "LOOPMETER_DB_URL": url}
    assert usage_json(env, "daily", "-z", "UTC")["totals"]["calls"] == 11
    with pg_store.engine.begin() as conn:  # as a loopmeter from before the last migration left it
        newest = conn.exec_driver_sql("SELECT max(name) FROM loopmeter_migrations").scalar_one()
        conn.exec_driver_sql("DELETE FROM loopmeter_migrations WHERE name = %s", (newest,))
    again = usage_json(env, "daily", "-z", "UTC")
    assert again["totals"]["calls"] == 11 and again["ingest"]["files_read"] == 0
    from loopmeter.store import SCHEMA_VERSION

    assert pg_store.schema_version() == SCHEMA_VERSION


def test_first_call_on_a_new_store_creates_it_without_sqlalchemy(env_with_logs, loopmeter_home):
    loaded, out = _usage_telling_if_sqlalchemy_loaded(env_with_logs)
    assert loaded == "not loaded 0"
    assert out["ingest"]["rows_added"] == 11 and out["totals"]["calls"] == 11
    # the store it made is the one open_store makes, and open_store finds nothing to migrate
    from loopmeter.store import SCHEMA_VERSION, Usage, open_store

    store = open_store(f"sqlite:///{loopmeter_home / 'loopmeter.db'}")
    assert store.schema_version() == SCHEMA_VERSION and store.count(Usage) == 11
    store.dispose()
