"""Incremental ingest: new bytes only, truncated lines, replaced and deleted files, kills."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from loopmeter.telemetry.ingest import discover, ingest, load_cursors, plan, run
from tests.conftest import loopmeter_cmd
from tests.fixtures.logs.corpus import generate
from tests.telemetry.ingest.conftest import (
    CLAUDE_FILE,
    CODEX_FILE,
    GEMINI_JSON,
    LOGS,
    by_model,
    tokens,
    usage_json,
)

SONNET = "claude-sonnet-4-5-20250929"


def _totals(report: dict) -> tuple[int, ...]:
    t = report["totals"]
    return (t["input_tokens"], t["output_tokens"], t["cache_write_tokens"], t["cache_read_tokens"],
            t["reasoning_tokens"], t["calls"])


def test_ingesting_twice_never_double_counts(logs, agent_env):
    first = usage_json(agent_env, "--path", str(logs))
    second = usage_json(agent_env, "--path", str(logs))
    assert _totals(first) == _totals(second)
    assert second["ingest"]["files_read"] == 0  # nothing changed: nothing read
    assert second["ingest"]["bytes_read"] == 0


def test_truncated_last_line_is_counted_once_complete(logs, agent_env):
    path = logs / CLAUDE_FILE
    before = usage_json(agent_env, "daily", "-z", "UTC", "--path", str(path))
    with path.open("a") as fh:
        fh.write((LOGS / "claude_truncated_rest.txt").read_text())
    after = usage_json(agent_env, "daily", "-z", "UTC", "--path", str(path))
    was = by_model(before)[("2026-11-10", SONNET)]
    now = by_model(after)[("2026-11-10", SONNET)]
    assert tokens(now) == tuple(a + b for a, b in zip(tokens(was), (1, 2, 0, 0, 0), strict=True))
    assert after["totals"]["calls"] == before["totals"]["calls"] + 1
    # the malformed line earlier in the file is not counted again
    assert after["ingest"]["malformed"] == []


def test_appended_codex_events_add_exactly_their_delta(logs, agent_env):
    # The next event's totals are cumulative: its call is the difference from the last
    # totals seen in the previous ingest (kept in the cursor's state), under the model
    # of the latest turn_context read back then.
    path = logs / CODEX_FILE
    before = usage_json(agent_env, "daily", "-z", "UTC", "--path", str(path))
    with path.open("a") as fh:
        fh.write((LOGS / "codex_append.txt").read_text())
    after = usage_json(agent_env, "daily", "-z", "UTC", "--path", str(path))
    was = by_model(before)[("2026-11-09", "gpt-5")]
    now = by_model(after)[("2026-11-09", "gpt-5")]
    assert tuple(b - a for a, b in zip(tokens(was), tokens(now), strict=True)) == (1000 - 250, 100, 0, 250, 50)
    assert after["ingest"]["bytes_read"] == len((LOGS / "codex_append.txt").read_bytes())


def test_replaced_or_shrunk_file_is_read_again_and_old_rows_stay(logs, agent_env):
    path = logs / CLAUDE_FILE
    usage_json(agent_env, "--path", str(path))
    # A new file at the same path (new inode), shorter than the old offset, with one new call.
    new_call = ('{"type":"assistant","sessionId":"s2","timestamp":"2026-11-12T09:00:00.000Z","requestId":"req_N",'
                '"message":{"id":"msg_N","model":"claude-sonnet-4-5-20250929","content":[],'
                '"usage":{"input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
                '"output_tokens":9}}}\n')
    tmp = path.with_suffix(".new")
    tmp.write_text(new_call)
    os.replace(tmp, path)
    after = usage_json(agent_env, "daily", "-z", "UTC", "--path", str(path))
    rows = by_model(after)
    assert tokens(rows[("2026-11-12", SONNET)]) == (9, 9, 0, 0, 0)
    assert ("2026-11-09", SONNET) in rows  # history survives the rewrite
    assert after["totals"]["calls"] == 6


def test_file_rewritten_in_place_with_more_bytes_is_read_again(logs, agent_env, loopmeter_home):
    # Same inode, larger size, different first bytes: not an append, so read from the start.
    path = logs / CODEX_FILE
    usage_json(agent_env, "--path", str(path))
    text = path.read_text().replace("0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "0299a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
    with path.open("r+") as fh:
        fh.write(text + "\n")
    report = usage_json(agent_env, "--path", str(path))
    assert report["ingest"]["rows_added"] == 3
    assert report["totals"]["calls"] == 6


def test_deleted_files_keep_their_rows(logs, agent_env):
    first = usage_json(agent_env, "--path", str(logs))
    shutil.rmtree(logs / "claude")
    (logs / GEMINI_JSON).unlink()
    later = usage_json(agent_env, "--path", str(logs))
    assert _totals(later) == _totals(first)


def test_default_places_and_environment_variables(tmp_path, agent_env):
    home = Path(agent_env["HOME"])
    # ~/.claude/projects and ~/.config/claude/projects are both read by default
    shutil.copytree(LOGS / "claude", home / ".claude")
    other = home / ".config" / "claude" / "projects" / "-home-dev-web"
    other.mkdir(parents=True)
    (other / "s9.jsonl").write_text((LOGS / CLAUDE_FILE).read_text().replace("req_", "rq9_"))
    # CODEX_HOME: sessions/ and archived_sessions/
    codex_home = tmp_path / "codexhome"
    shutil.copytree(LOGS / "codex", codex_home)
    archived = codex_home / "archived_sessions" / "rollout-2026-11-09T12-00-00-0399a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.jsonl"
    archived.parent.mkdir()
    archived.write_text((LOGS / CODEX_FILE).read_text().replace("0199a1b2", "0399a1b2"))
    gemini_dir = tmp_path / "geminidata"
    shutil.copytree(LOGS / "gemini", gemini_dir)
    env = {**agent_env, "CODEX_HOME": str(codex_home), "GEMINI_DATA_DIR": str(gemini_dir)}
    report = usage_json(env, "--timezone", "UTC")
    calls = {(b["source"]): 0 for row in report["daily"] for b in row["breakdown"]}
    for row in report["daily"]:
        for b in row["breakdown"]:
            calls[b["source"]] += b["calls"]
    assert calls == {"claude-code-log": 10, "codex-log": 6, "gemini-log": 3}

    # CLAUDE_CONFIG_DIR (a comma list) replaces the default places
    dir_a, dir_b = tmp_path / "cfg_a", tmp_path / "cfg_b"
    shutil.copytree(LOGS / "claude", dir_a)
    (dir_b / "projects" / "p").mkdir(parents=True)
    (dir_b / "projects" / "p" / "s.jsonl").write_text((LOGS / CLAUDE_FILE).read_text().replace("req_", "rqb_"))
    files = discover(["claude-code"], env={"HOME": str(home), "CLAUDE_CONFIG_DIR": f"{dir_a}, {dir_b}"})
    assert sorted(p.name for _, p in files) == ["11111111-aaaa-bbbb-cccc-000000000001.jsonl", "s.jsonl"]


def rollup_and_rows(db_path) -> tuple[list, list]:
    """usage_hour as stored, and the same sums grouped afresh from the usage rows."""
    conn = sqlite3.connect(db_path)
    try:
        kept = conn.execute(
            'SELECT hour, agent, model, provider, source, project, "user", cost_source, calls, unpriced, '
            "round(cost, 9), input, cache_read, cache_write, output, reasoning FROM usage_hour ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
        ).fetchall()
        fresh = conn.execute(
            "SELECT substr(ts, 1, 13), coalesce(agent, ''), coalesce(model, ''), coalesce(provider, ''), "
            "coalesce(source, ''), coalesce(project, ''), coalesce(\"user\", ''), coalesce(cost_source, ''), count(*), "
            "sum(cost_usd IS NULL), round(coalesce(sum(cost_usd), 0), 9), coalesce(sum(input_tokens), 0), "
            "coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_write_tokens), 0), "
            "coalesce(sum(output_tokens), 0), coalesce(sum(reasoning_tokens), 0) FROM usage "
            "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
        ).fetchall()
    finally:
        conn.close()
    return kept, fresh


def test_a_big_transcript_read_in_byte_ranges_gives_the_generated_totals(tmp_path, store, sqlite_url):
    # One Claude Code file read as several ranges on two processes adds up exactly.
    expected = generate(tmp_path / "corpus", mb=6, claude_share=1.0, file_mb=6)
    files = discover(paths=[tmp_path / "corpus"])
    assert len(files) == 1
    work = plan(files, load_cursors(sqlite_url, store))
    report = run(store, sqlite_url, work, workers=2, split_bytes=1 << 20, pool_min_bytes=0)
    assert report.rows_added == sum(t.calls for t in expected.claude.values())
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    got = {(d, m): (i, o, w, r) for d, m, i, o, w, r in conn.execute(
        "SELECT substr(ts, 1, 10), model, SUM(input_tokens), SUM(output_tokens), SUM(cache_write_tokens), "
        "SUM(cache_read_tokens) FROM usage GROUP BY 1, 2")}
    conn.close()
    assert got == {k: (t.input, t.output, t.cache_write, t.cache_read) for k, t in expected.claude.items()}
    # and the cursor ends at the end of the file: nothing left to read
    assert plan(files, load_cursors(sqlite_url, store)) == []
    # the hourly rollup the workers summed equals the rows' own sums
    kept, fresh = rollup_and_rows(sqlite_url.removeprefix("sqlite:///"))
    assert kept == fresh and sum(r[8] for r in kept) == report.rows_added
    # the same transcript under another name: every key is stored already, nothing is added twice
    copy = tmp_path / "copy" / "projects" / "p" / "again.jsonl"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(files[0][1].read_bytes())
    again = run(store, sqlite_url, plan(discover(paths=[copy]), load_cursors(sqlite_url, store)), workers=2,
                split_bytes=1 << 20, pool_min_bytes=0)
    assert again.rows_added == 0
    assert rollup_and_rows(sqlite_url.removeprefix("sqlite:///")) == (kept, fresh)


@pytest.mark.parametrize("layout", ["many files", "one big codex file"])
def test_kill_during_ingest_then_rerun_gives_the_same_totals(tmp_path, agent_env, loopmeter_home, layout):
    # "one big codex file" holds several write batches: the kill lands after a mid-file
    # cursor (offset + cumulative totals + model), which the re-run resumes from.
    if layout == "many files":
        expected = generate(tmp_path / "corpus", mb=48, file_mb=12)
    else:
        expected = generate(tmp_path / "corpus", mb=60, claude_share=0.0, file_mb=60)
    env = {**agent_env, "CLAUDE_CONFIG_DIR": str(tmp_path / "corpus" / "claude"),
           "CODEX_HOME": str(tmp_path / "corpus" / "codex")}
    db = loopmeter_home / "loopmeter.db"
    proc = subprocess.Popen(loopmeter_cmd("usage", "--json"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    killed_mid_way = False
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            n = conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0]
            conn.close()
        except sqlite3.Error:
            n = 0
        if n > 0:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its reader processes
            killed_mid_way = True
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    if not killed_mid_way:
        pytest.skip("the ingest finished before any row could be seen; nothing was interrupted")
    report = usage_json(env, "daily", "-z", "UTC")
    want_calls = sum(t.calls for t in expected.claude.values()) + sum(t.calls for t in expected.codex.values())
    assert report["totals"]["calls"] == want_calls
    rows = by_model(report)
    for (day, model), t in {**expected.claude, **expected.codex}.items():
        assert tokens(rows[(day, model)])[:4] == (t.input, t.output, t.cache_write, t.cache_read)
    kept, fresh = rollup_and_rows(db)
    assert kept == fresh


def test_ingest_api_reports_files_and_rows(logs, store):
    report = ingest(store, paths=[logs])
    assert report.files_seen == 4
    assert report.rows_added == 11
    assert ingest(store, paths=[logs]).rows_added == 0


@pytest.mark.timeout(90)
def test_a_store_that_refuses_the_rows_stops_the_ingest_cleanly(tmp_path, store, sqlite_url):
    # The parent is the one writer; when its write fails, the workers (blocked on a full
    # queue of batches) must be stopped, not waited for forever. Nothing is half-stored,
    # and once the store takes rows again the same ingest loses nothing.
    expected = generate(tmp_path / "corpus", mb=2, file_mb=0.25)
    db = sqlite_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(db)
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON usage BEGIN SELECT RAISE(ABORT, 'store refuses'); END")
    conn.commit()
    conn.close()
    files = discover(paths=[tmp_path / "corpus"])
    work = plan(files, load_cursors(sqlite_url, store))
    with pytest.raises(sqlite3.IntegrityError, match="store refuses"):
        run(store, sqlite_url, work, workers=2, split_bytes=64 << 10, pool_min_bytes=0, batch_rows=2)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM usage").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM ingest_cursor").fetchone()[0] == 0
    conn.execute("DROP TRIGGER refuse")
    conn.commit()
    conn.close()
    report = run(store, sqlite_url, plan(files, load_cursors(sqlite_url, store)), workers=2,
                 split_bytes=64 << 10, pool_min_bytes=0, batch_rows=2)
    calls = sum(t.calls for t in expected.claude.values()) + sum(t.calls for t in expected.codex.values())
    assert report.rows_added == calls
